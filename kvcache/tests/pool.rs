//! Sessions: independent sequences from one pool, a capacity from a budget, buffers recycled on drop.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{check_view, random_tokens, write_step, Dims, TokenKv};
use kvcache::{
    FullPolicy, HostStorage, KvConfig, KvDtype, KvError, KvModelShape, KvPool, MemoryLimits,
};

const DIMS: Dims = Dims {
    layers: 2,
    kv_heads: 2,
    head_dim: 8,
    dtype: KvDtype::F32,
};

fn config() -> KvConfig {
    let shape = KvModelShape {
        layers: DIMS.layers,
        kv_heads: DIMS.kv_heads,
        head_dim: DIMS.head_dim,
        dtype: DIMS.dtype,
    };
    KvConfig::new(shape, 40).unwrap()
}

#[test]
fn interleaved_sessions_stay_independent() {
    let storage = Arc::new(HostStorage::unlimited());
    let total = config().total_bytes().unwrap();
    // Budget for three sequences and a bit.
    let pool = KvPool::with_budget(
        Arc::clone(&storage),
        config(),
        &MemoryLimits {
            max_alloc_bytes: 1 << 20,
            budget_bytes: 3 * total + total / 2,
        },
    )
    .unwrap();
    assert_eq!(pool.capacity(), 3);

    let mut seqs: Vec<_> = (0..3)
        .map(|_| pool.acquire(FullPolicy::Error).unwrap())
        .collect();
    assert!(matches!(
        pool.acquire(FullPolicy::Error),
        Err(KvError::PoolExhausted { capacity: 3 })
    ));
    let mut models: Vec<Vec<TokenKv>> = vec![Vec::new(); 3];
    for round in 0..12u64 {
        for (i, (seq, model)) in seqs.iter_mut().zip(models.iter_mut()).enumerate() {
            let n = 1 + (round as usize + i) % 3;
            let step = seq.begin_step(n).unwrap();
            let tokens = random_tokens(&DIMS, n, round * 10 + i as u64);
            write_step(&storage, seq, &DIMS, &step, &tokens);
            seq.commit(step).unwrap();
            model.extend(tokens);
        }
        // Session 1 regenerates its last reply now and then.
        if round % 4 == 3 {
            let to = models[1].len() - 2;
            seqs[1].truncate(to).unwrap();
            models[1].truncate(to);
        }
    }
    for (seq, model) in seqs.iter().zip(&models) {
        assert_eq!(seq.len(), model.len());
        check_view(&storage, seq, &DIMS, &seq.committed_view(), model);
    }
    let ids: std::collections::BTreeSet<_> = seqs.iter().map(|s| s.id()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(storage.counters().bytes_copied, 0);

    // Closing a session returns its buffers; the next one reuses them without allocating.
    let allocated = storage.counters().bytes_allocated;
    assert_eq!(allocated, 3 * total);
    drop(seqs.pop());
    assert_eq!(pool.in_use(), 2);
    let fresh = pool.acquire(FullPolicy::Error).unwrap();
    assert!(fresh.is_empty());
    assert_eq!(storage.counters().bytes_allocated, allocated);
    assert_eq!(pool.allocated_sequences(), 3);
}

#[test]
fn pool_refuses_what_cannot_fit() {
    let storage = Arc::new(HostStorage::unlimited());
    let total = config().total_bytes().unwrap();
    let under = KvPool::with_budget(
        Arc::clone(&storage),
        config(),
        &MemoryLimits {
            max_alloc_bytes: u64::MAX,
            budget_bytes: total - 1,
        },
    );
    assert!(
        matches!(under, Err(KvError::OverBudget { .. })),
        "{under:?}"
    );
    let zero = KvPool::with_capacity(Arc::clone(&storage), config(), 0);
    assert!(matches!(zero, Err(KvError::InvalidConfig { .. })));
    let small_alloc = KvPool::with_budget(
        storage,
        config(),
        &MemoryLimits {
            max_alloc_bytes: 1000,
            budget_bytes: u64::MAX,
        },
    );
    // One position of one buffer: 2 heads x 8 dims x 4 B = 64 B, so 2560 B for 40; a 1000 B cap fits 15.
    match small_alloc {
        Err(KvError::BufferTooLarge {
            buffer_bytes,
            largest_fitting_ctx,
            ..
        }) => {
            assert_eq!(buffer_bytes, 2560);
            assert_eq!(largest_fitting_ctx, 1000 / 64);
        }
        other => panic!("expected BufferTooLarge, got {other:?}"),
    }
}
