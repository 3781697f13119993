//! A backend that fails copies, declines sub-regions and caps allocations: the cache reports each clearly and stays
//! consistent.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{check_view, random_tokens, view_data, Dims};
use kvcache::{
    ByteRange, ContextShift, FullPolicy, HostBuffer, HostStorage, HostStorageError, KvBinding,
    KvConfig, KvDtype, KvError, KvModelShape, KvPart, KvSequence, KvStorage, StorageLimits,
};

/// Wraps the host backend: copies fail after `copies_left` calls, sub-regions are always declined.
#[derive(Debug)]
struct Faulty {
    inner: HostStorage,
    copies_left: AtomicU64,
}

impl KvStorage for Faulty {
    type Buffer = HostBuffer;
    type Region = ();
    type Error = HostStorageError;

    fn limits(&self) -> StorageLimits {
        self.inner.limits()
    }

    fn allocate(&self, bytes: u64) -> Result<HostBuffer, HostStorageError> {
        self.inner.allocate(bytes)
    }

    fn sub_region(&self, _: &HostBuffer, _: ByteRange) -> Result<Option<()>, HostStorageError> {
        Ok(None)
    }

    fn copy_within(
        &self,
        buffer: &HostBuffer,
        src: u64,
        dst: u64,
        len: u64,
    ) -> Result<(), HostStorageError> {
        if self.copies_left.load(Ordering::Relaxed) == 0 {
            return Err(HostStorageError::Poisoned);
        }
        self.copies_left.fetch_sub(1, Ordering::Relaxed);
        self.inner.copy_within(buffer, src, dst, len)
    }
}

const DIMS: Dims = Dims {
    layers: 2,
    kv_heads: 3,
    head_dim: 4,
    dtype: KvDtype::F32,
};

fn shape() -> KvModelShape {
    KvModelShape {
        layers: DIMS.layers,
        kv_heads: DIMS.kv_heads,
        head_dim: DIMS.head_dim,
        dtype: DIMS.dtype,
    }
}

#[test]
fn failed_shift_keeps_the_prefix_and_names_the_backend() {
    let storage = Arc::new(Faulty {
        inner: HostStorage::new(StorageLimits {
            max_alloc_bytes: u64::MAX,
            sub_region_align_bytes: 1,
        }),
        copies_left: AtomicU64::new(5),
    });
    let policy = FullPolicy::Shift(ContextShift {
        keep_first: 3,
        drop_at_least: 2,
    });
    let mut seq = KvSequence::new(
        Arc::clone(&storage),
        KvConfig::new(shape(), 10).unwrap(),
        policy,
    )
    .unwrap();
    let tokens = random_tokens(&DIMS, 10, 3);
    let step = seq.begin_step(10).unwrap();
    for layer in 0..DIMS.layers {
        for part in KvPart::BOTH {
            // The backend declines every sub-region: the binding is the whole buffer plus the offset.
            let binding = seq.bind(layer, part, &step.write_view()).unwrap();
            assert!(matches!(binding, KvBinding::Offset { .. }));
            let buffer = seq.buffer(layer, part).unwrap();
            storage
                .inner
                .write_view(
                    buffer,
                    &step.write_view(),
                    &view_data(&DIMS, &tokens, layer, part),
                )
                .unwrap();
        }
    }
    seq.commit(step).unwrap();
    // The shift needs 2 layers x 2 parts x 3 heads x 3 chunks = 36 copies; the 6th fails.
    let err = seq.begin_step(1).unwrap_err();
    assert!(matches!(err, KvError::Storage(_)), "{err}");
    assert!(err.to_string().contains("poisoned"), "{err}");
    assert_eq!(seq.len(), 3);
    for layer in 0..DIMS.layers {
        for part in KvPart::BOTH {
            let buffer = seq.buffer(layer, part).unwrap();
            let got = storage
                .inner
                .read_view(buffer, &seq.committed_view())
                .unwrap();
            assert_eq!(got, view_data(&DIMS, &tokens[..3], layer, part));
        }
    }
    // The sequence stays usable.
    let step = seq.begin_step(7).unwrap();
    assert!(step.shift().is_none());
    seq.cancel(step).unwrap();
}

#[test]
fn allocation_cap_is_checked_before_allocating() {
    let storage = Arc::new(HostStorage::new(StorageLimits {
        max_alloc_bytes: 3 * 4 * 4 * 10 - 1,
        sub_region_align_bytes: 0,
    }));
    let err = KvSequence::new(
        Arc::clone(&storage),
        KvConfig::new(shape(), 10).unwrap(),
        FullPolicy::Error,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            KvError::BufferTooLarge {
                largest_fitting_ctx: 9,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(storage.counters().bytes_allocated, 0);
    // A context that fits works, and reads back what was written.
    let mut seq = KvSequence::new(
        Arc::clone(&storage),
        KvConfig::new(shape(), 9).unwrap(),
        FullPolicy::Error,
    )
    .unwrap();
    let tokens = random_tokens(&DIMS, 9, 4);
    let step = seq.begin_step(9).unwrap();
    common::write_step(&storage, &seq, &DIMS, &step, &tokens);
    seq.commit(step).unwrap();
    check_view(&storage, &seq, &DIMS, &seq.committed_view(), &tokens);
}
