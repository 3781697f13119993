//! Ring caches of sliding-window layers against a plain map of position -> values: random steps, truncations
//! (exact or refused), context shifts that renumber the ring in place, and the bytes a ring saves. Exact
//! comparison: values are small integers, exact in f16.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use kvcache::{
    FullPolicy, HostStorage, KvConfig, KvDtype, KvError, KvModelShape, KvPart, KvRings, KvSequence,
};
use rand::{Rng, SeedableRng};

const LAYERS: usize = 3;
const HEADS: usize = 2;
const DIM: usize = 4;

fn shape() -> KvModelShape {
    KvModelShape {
        layers: LAYERS,
        kv_heads: HEADS,
        head_dim: DIM,
        dtype: KvDtype::F16,
    }
}

/// The value a layer stores for element (head, dim) of the token whose id is `id`.
fn value(id: u32, layer: usize, part: KvPart, head: usize, dim: usize) -> f32 {
    let p = if part == KvPart::Key { 0 } else { 1 };
    ((id as usize * 7 + layer * 5 + p * 3 + head * 2 + dim) % 1000) as f32
}

fn data(ids: &[u32], layer: usize, part: KvPart) -> Vec<f32> {
    let mut out = Vec::new();
    for h in 0..HEADS {
        for &id in ids {
            for d in 0..DIM {
                out.push(value(id, layer, part, h, d));
            }
        }
    }
    out
}

/// Checks that every layer's read view holds the ids of `model` over the positions the step's window reads.
fn check(
    storage: &HostStorage,
    seq: &KvSequence<HostStorage>,
    model: &[u32],
    window: usize,
    n: usize,
) {
    let len = model.len();
    // The last step (n tokens) read from `len - n - window + 1`; after a truncation (n = 0) the next one will.
    let from = len.saturating_sub(window + n - 1);
    for layer in 0..LAYERS {
        let first = if seq.is_ring(layer) { from } else { 0 };
        assert!(seq.held_from(layer) <= first, "layer {layer} lost {first}");
        let view = seq.layer_view(layer, first, len - first);
        for part in KvPart::BOTH {
            let got = storage
                .read_view(seq.buffer(layer, part).unwrap(), &view)
                .unwrap();
            assert_eq!(
                got,
                data(&model[first..], layer, part),
                "layer {layer} {part:?}"
            );
        }
    }
}

fn rings(window: usize, max_chunk: usize) -> KvRings {
    KvRings {
        window,
        max_chunk,
        local_layers: vec![true, false, true],
    }
}

#[test]
fn rings_hold_every_window_a_step_reads() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    for case in 0..300 {
        let window = rng.random_range(1..9);
        let max_chunk = rng.random_range(1..6);
        let max_ctx = rng.random_range(1..40);
        let config = KvConfig::new(shape(), max_ctx)
            .unwrap()
            .with_rings(rings(window, max_chunk))
            .unwrap();
        let ring = window + max_chunk - 1 < max_ctx;
        assert_eq!(config.is_ring(0), ring, "case {case}");
        let storage = Arc::new(HostStorage::unlimited());
        let mut seq = KvSequence::new(Arc::clone(&storage), config, FullPolicy::Error).unwrap();
        let mut model: Vec<u32> = Vec::new();
        let mut next_id = 1u32;
        for _ in 0..60 {
            match rng.random_range(0..10) {
                0..=6 => {
                    let n = rng.random_range(1..=max_chunk);
                    if model.len() + n > max_ctx {
                        continue;
                    }
                    let step = seq.begin_step(n).unwrap();
                    let ids: Vec<u32> = (0..n as u32).map(|i| next_id + i).collect();
                    next_id += n as u32;
                    for layer in 0..LAYERS {
                        let view = step.layer_write_view(layer);
                        assert_eq!(view.wrap.is_some(), seq.is_ring(layer));
                        for part in KvPart::BOTH {
                            let b = seq.bind(layer, part, &view).unwrap();
                            storage.write_binding(&b, &data(&ids, layer, part)).unwrap();
                        }
                        // Before commit, the step's read view already holds its own keys and the window's.
                        let read = step.layer_read_view(layer);
                        assert_eq!(read.positions, model.len() + n);
                    }
                    seq.commit(step).unwrap();
                    model.extend(ids);
                    check(&storage, &seq, &model, window, n);
                }
                7 | 8 => {
                    let to = rng.random_range(0..=model.len());
                    let exact = seq.can_truncate(to);
                    match seq.truncate(to) {
                        Ok(()) => {
                            assert!(exact);
                            model.truncate(to);
                            check(&storage, &seq, &model, window, 0);
                        }
                        Err(KvError::RingOverwritten {
                            needed_from,
                            held_from,
                            ..
                        }) => {
                            assert!(!exact && held_from > needed_from);
                            assert_eq!(
                                seq.len(),
                                model.len(),
                                "a refused truncation changes nothing"
                            );
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                _ => {
                    if model.is_empty() {
                        continue;
                    }
                    let keep = rng.random_range(0..model.len());
                    let max_drop = seq.max_shift_drop(keep);
                    let drop = rng.random_range(1..=model.len() - keep);
                    let copied_before = storage.counters().bytes_copied;
                    match seq.shift(keep, drop) {
                        Ok(report) => {
                            assert!(drop <= max_drop);
                            model.drain(keep..keep + drop);
                            assert_eq!(seq.len(), model.len());
                            // Only full layers copy: one full layer of two parts here, none if all are full.
                            let moved = (model.len() - keep) as u64 * (HEADS * DIM * 2) as u64;
                            let full_layers =
                                (0..LAYERS).filter(|&l| !seq.is_ring(l)).count() as u64;
                            assert_eq!(report.bytes_copied, 2 * full_layers * moved);
                            assert_eq!(
                                storage.counters().bytes_copied - copied_before,
                                report.bytes_copied
                            );
                            // The kept start is not in a ring; the window after the shift reads the tail.
                            if ring {
                                assert!(report.ring_rerotate.start >= keep);
                                assert_eq!(report.ring_rerotate.end, model.len());
                            }
                            let from = model.len().saturating_sub(window - 1).max(keep);
                            for layer in 0..LAYERS {
                                let first = if seq.is_ring(layer) { from } else { 0 };
                                let view = seq.layer_view(layer, first, model.len() - first);
                                for part in KvPart::BOTH {
                                    let got = storage
                                        .read_view(seq.buffer(layer, part).unwrap(), &view)
                                        .unwrap();
                                    assert_eq!(got, data(&model[first..], layer, part));
                                }
                            }
                        }
                        Err(KvError::ShiftBreaksWindow { .. }) => {
                            assert!(ring && drop > max_drop);
                            assert_eq!(seq.len(), model.len());
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
    }
}

#[test]
fn steps_longer_than_the_ring_was_sized_for_are_refused() {
    let config = KvConfig::new(shape(), 64)
        .unwrap()
        .with_rings(rings(4, 3))
        .unwrap();
    let mut seq = KvSequence::new(
        Arc::new(HostStorage::unlimited()),
        config,
        FullPolicy::Error,
    )
    .unwrap();
    let err = seq.begin_step(4).unwrap_err();
    assert!(matches!(
        err,
        KvError::StepLongerThanRing {
            requested: 4,
            max_chunk: 3,
            window: 4
        }
    ));
    assert!(err.to_string().contains("longer than the 3"), "{err}");
    assert!(seq.begin_step(3).is_ok());
}

#[test]
fn ring_layers_count_at_their_capacity() {
    let shape = shape();
    let full = KvConfig::new(shape, 1000).unwrap();
    let ringed = full.clone().with_rings(rings(100, 28)).unwrap();
    let per_position = (HEADS * DIM * 2) as u64;
    assert_eq!(full.total_bytes().unwrap(), 2 * 3 * 1000 * per_position);
    assert_eq!(
        ringed.total_bytes().unwrap(),
        2 * (1000 + 2 * 127) * per_position
    );
    // A ring as large as the context is not used.
    let no_gain = KvConfig::new(shape, 127)
        .unwrap()
        .with_rings(rings(100, 28))
        .unwrap();
    assert!(!no_gain.is_ring(0) && no_gain.active_rings().is_none());
    assert_eq!(no_gain.total_bytes().unwrap(), 2 * 3 * 127 * per_position);
    // Bad ring configs are refused.
    for bad in [
        rings(0, 4),
        rings(4, 0),
        KvRings {
            local_layers: vec![true],
            ..rings(4, 4)
        },
    ] {
        assert!(full.clone().with_rings(bad).is_err());
    }
}

/// Gemma 3 1B's KV shape (26 layers, 1 KV head of 256, window 512, 5 local : 1 global) at a 32768 context, with
/// steps of up to 256 tokens: printed for the record, checked against the count of layers and slots.
#[test]
fn gemma3_1b_cache_bytes_with_and_without_rings() {
    let shape = KvModelShape {
        layers: 26,
        kv_heads: 1,
        head_dim: 256,
        dtype: KvDtype::F16,
    };
    let full = KvConfig::new(shape, 32768).unwrap();
    let local: Vec<bool> = (0..26).map(|i| (i + 1) % 6 != 0).collect();
    let globals = local.iter().filter(|l| !**l).count() as u64;
    let ringed = full
        .clone()
        .with_rings(KvRings {
            window: 512,
            max_chunk: 256,
            local_layers: local,
        })
        .unwrap();
    let (a, b) = (full.total_bytes().unwrap(), ringed.total_bytes().unwrap());
    println!(
        "gemma3-1b KV at 32768, f16: full caches {a} bytes, rings {b} bytes ({:.1} %)",
        100.0 * b as f64 / a as f64
    );
    let per_position = 256 * 2 * 2;
    assert_eq!(a, 26 * 32768 * per_position);
    assert_eq!(b, (globals * 32768 + (26 - globals) * 767) * per_position);
}
