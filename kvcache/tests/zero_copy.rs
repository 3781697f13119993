//! A whole simulated generation (prompt, decode, speculative steps, regeneration) moves no cache bytes, and the
//! bindings hand out sub-regions exactly where the backend's alignment allows.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{check_view, random_tokens, write_step, Dims, TokenKv};
use kvcache::{
    FullPolicy, HostStorage, KvBinding, KvConfig, KvDtype, KvError, KvModelShape, KvPart,
    KvSequence, StorageLimits,
};

fn shape(dims: &Dims) -> KvModelShape {
    KvModelShape {
        layers: dims.layers,
        kv_heads: dims.kv_heads,
        head_dim: dims.head_dim,
        dtype: dims.dtype,
    }
}

#[test]
fn whole_generation_copies_zero_bytes() {
    let dims = Dims {
        layers: 4,
        kv_heads: 2,
        head_dim: 32,
        dtype: KvDtype::F16,
    };
    let storage = Arc::new(HostStorage::new(StorageLimits {
        max_alloc_bytes: 1 << 20,
        sub_region_align_bytes: 256,
    }));
    let config = KvConfig::new(shape(&dims), 192).unwrap();
    let mut seq = KvSequence::new(Arc::clone(&storage), config.clone(), FullPolicy::Error).unwrap();
    let mut model: Vec<TokenKv> = Vec::new();
    let mut written_positions = 0u64;
    let mut seed = 7u64;
    let mut step_no = 0;

    // Prompt of 29 tokens, then decode; every 10th step a speculative draft of 4 of which some are accepted (the
    // rest rolled back by a truncate); once, a regeneration rolls back 5 tokens.
    let mut n = 29;
    while model.len() + n <= 180 {
        let step = seq.begin_step(n).unwrap();
        seed += 1;
        let tokens = random_tokens(&dims, n, seed);
        write_step(&storage, &seq, &dims, &step, &tokens);
        written_positions += n as u64;
        let mut with_new = model.clone();
        with_new.extend(tokens.iter().cloned());
        check_view(&storage, &seq, &dims, &step.read_view(), &with_new);
        let accept = if n == 4 { (step_no % 5).min(4) } else { n };
        let start = step.start();
        seq.commit(step).unwrap();
        seq.truncate(start + accept).unwrap();
        model.extend(tokens.into_iter().take(accept));
        if step_no == 50 {
            seq.truncate(model.len() - 5).unwrap();
            model.truncate(model.len() - 5);
        }
        step_no += 1;
        n = if step_no % 10 == 0 { 4 } else { 1 };
    }
    check_view(&storage, &seq, &dims, &seq.committed_view(), &model);

    let counters = storage.counters();
    let pos_bytes = shape(&dims).position_bytes_total().unwrap();
    println!(
        "simulated generation: {step_no} steps, {} positions kept, {} bytes written by the model, {} bytes copied",
        model.len(),
        counters.bytes_written,
        counters.bytes_copied
    );
    assert!(
        step_no > 100,
        "the simulation must be long: {step_no} steps"
    );
    assert_eq!(counters.bytes_copied, 0);
    assert_eq!(counters.copy_calls, 0);
    assert_eq!(seq.stats().bytes_copied, 0);
    // Every new position is written exactly once, in place.
    assert_eq!(counters.bytes_written, written_positions * pos_bytes);
    // One preallocated copy of the cache, nothing more.
    assert_eq!(counters.bytes_allocated, config.total_bytes().unwrap());
}

#[test]
fn sub_regions_only_at_aligned_origins() {
    // f16, head_dim 8: 16 bytes per position; 64-byte alignment allows a sub-region every 4 positions.
    let dims = Dims {
        layers: 1,
        kv_heads: 3,
        head_dim: 8,
        dtype: KvDtype::F16,
    };
    let storage = Arc::new(HostStorage::new(StorageLimits {
        max_alloc_bytes: u64::MAX,
        sub_region_align_bytes: 64,
    }));
    let config = KvConfig::new(shape(&dims), 32).unwrap();
    let mut seq = KvSequence::new(Arc::clone(&storage), config, FullPolicy::Error).unwrap();
    let mut model = Vec::new();
    for p in 0..32usize {
        let step = seq.begin_step(1).unwrap();
        let binding = seq.bind(0, KvPart::Key, &step.write_view()).unwrap();
        match &binding {
            KvBinding::SubRegion { region, view } => {
                assert!(p > 0 && p % 4 == 0, "sub-region at unaligned position {p}");
                assert_eq!(view.offset_elems, 0);
                assert_eq!(region.range.origin, (p * 8 * 2) as u64);
                // Spans from head 0 to the last head's new position.
                assert_eq!(region.range.len, ((2 * 32 + 1) * 8 * 2) as u64);
            }
            KvBinding::Offset { view, .. } => {
                assert!(
                    p == 0 || p % 4 != 0,
                    "no sub-region at aligned position {p}"
                );
                assert_eq!(view.offset_elems, (p * 8) as u64);
            }
        }
        drop(binding);
        let tokens = random_tokens(&dims, 1, 100 + p as u64);
        write_step(&storage, &seq, &dims, &step, &tokens);
        seq.commit(step).unwrap();
        model.extend(tokens);
    }
    check_view(&storage, &seq, &dims, &seq.committed_view(), &model);
    // 7 aligned positions (4, 8, .., 28), each bound three times: the check above, then K and V in write_step.
    assert_eq!(storage.counters().sub_regions, 7 * 3);
    assert!(matches!(seq.begin_step(1), Err(KvError::Full { .. })));
    assert!(matches!(
        seq.bind(1, KvPart::Key, &seq.committed_view()),
        Err(KvError::LayerOutOfRange {
            layer: 1,
            layers: 1
        })
    ));
}

#[test]
fn step_protocol_refuses_misuse() {
    let storage = Arc::new(HostStorage::unlimited());
    let shape = KvModelShape {
        layers: 1,
        kv_heads: 1,
        head_dim: 4,
        dtype: KvDtype::F32,
    };
    let mut a = KvSequence::new(
        Arc::clone(&storage),
        KvConfig::new(shape, 8).unwrap(),
        FullPolicy::Error,
    )
    .unwrap();
    assert!(matches!(a.begin_step(0), Err(KvError::EmptyStep)));
    assert!(matches!(
        a.begin_step(9),
        Err(KvError::Full {
            len: 0,
            requested: 9,
            max_ctx: 8
        })
    ));
    let step = a.begin_step(2).unwrap();
    assert!(matches!(a.truncate(0), Err(KvError::StepOpen)));
    a.commit(step.clone()).unwrap();
    assert!(matches!(a.commit(step), Err(KvError::StaleStep { .. })));
    assert_eq!(a.len(), 2);
    assert!(matches!(
        a.set_policy(FullPolicy::Shift(kvcache::ContextShift {
            keep_first: 8,
            drop_at_least: 1
        })),
        Err(KvError::ShiftKeepsEverything { .. })
    ));
}
