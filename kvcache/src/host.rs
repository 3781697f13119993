//! A host-memory backend for tests and CPU runs, which counts every byte it copies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use half::f16;

use crate::binding::KvBinding;
use crate::dtype::KvDtype;
use crate::layout::KvView;
use crate::storage::{ByteRange, KvStorage, StorageLimits};

/// Errors of the host backend.
#[derive(Debug, thiserror::Error)]
pub enum HostStorageError {
    /// Allocation above the configured limit.
    #[error(
        "allocation of {bytes} bytes exceeds the host backend's max allocation of {max} bytes"
    )]
    TooLarge {
        /// Requested.
        bytes: u64,
        /// Limit.
        max: u64,
    },
    /// A byte range outside its buffer.
    #[error("byte range {start}..{end} outside a buffer of {len} bytes")]
    OutOfRange {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// Buffer length.
        len: u64,
    },
    /// Copy source and destination overlap (the trait forbids it, as OpenCL does).
    #[error("copy ranges overlap: src {src}, dst {dst}, len {len}")]
    Overlap {
        /// Source byte.
        src: u64,
        /// Destination byte.
        dst: u64,
        /// Length.
        len: u64,
    },
    /// Data length does not match the view.
    #[error("data has {got} elements but the view holds {expected}")]
    DataLength {
        /// Elements given.
        got: usize,
        /// Elements the view holds.
        expected: u64,
    },
    /// The buffer's lock was poisoned by a panic elsewhere.
    #[error("host buffer lock poisoned")]
    Poisoned,
}

/// One host allocation; clones share the bytes.
#[derive(Debug, Clone)]
pub struct HostBuffer {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl HostBuffer {
    fn lock(&self) -> Result<MutexGuard<'_, Vec<u8>>, HostStorageError> {
        self.bytes.lock().map_err(|_| HostStorageError::Poisoned)
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.lock().map(|b| b.len() as u64).unwrap_or(0)
    }
}

/// A sub-region of a [`HostBuffer`].
#[derive(Debug, Clone)]
pub struct HostRegion {
    /// The buffer it belongs to.
    pub buffer: HostBuffer,
    /// Where in it.
    pub range: ByteRange,
}

/// Host-memory backend with configurable limits and counters of what it did.
#[derive(Debug)]
pub struct HostStorage {
    limits: StorageLimits,
    allocated: AtomicU64,
    copied: AtomicU64,
    copy_calls: AtomicU64,
    written: AtomicU64,
    regions: AtomicU64,
}

/// Snapshot of a [`HostStorage`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HostCounters {
    /// Bytes allocated over the backend's life.
    pub bytes_allocated: u64,
    /// Bytes copied from one place of device memory to another (the cost the sub-tensor design avoids).
    pub bytes_copied: u64,
    /// Copy calls.
    pub copy_calls: u64,
    /// Bytes written from outside (the model producing new keys and values; not a copy of cache contents).
    pub bytes_written: u64,
    /// Sub-regions made.
    pub sub_regions: u64,
}

impl HostStorage {
    /// A backend with the given limits.
    pub fn new(limits: StorageLimits) -> Self {
        HostStorage {
            limits,
            allocated: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            copy_calls: AtomicU64::new(0),
            written: AtomicU64::new(0),
            regions: AtomicU64::new(0),
        }
    }

    /// No allocation limit, sub-regions at any 128-byte boundary (a common OpenCL base alignment).
    pub fn unlimited() -> Self {
        Self::new(StorageLimits {
            max_alloc_bytes: u64::MAX,
            sub_region_align_bytes: 128,
        })
    }

    /// Counters so far.
    pub fn counters(&self) -> HostCounters {
        HostCounters {
            bytes_allocated: self.allocated.load(Ordering::Relaxed),
            bytes_copied: self.copied.load(Ordering::Relaxed),
            copy_calls: self.copy_calls.load(Ordering::Relaxed),
            bytes_written: self.written.load(Ordering::Relaxed),
            sub_regions: self.regions.load(Ordering::Relaxed),
        }
    }

    /// Copies between two buffers (for baselines that copy; the cache itself never calls this), counted.
    pub fn copy_between(
        &self,
        src: &HostBuffer,
        src_byte: u64,
        dst: &HostBuffer,
        dst_byte: u64,
        len: u64,
    ) -> Result<(), HostStorageError> {
        if Arc::ptr_eq(&src.bytes, &dst.bytes) {
            return self.copy_within(src, src_byte, dst_byte, len);
        }
        let from = src.lock()?;
        let mut to = dst.lock()?;
        let s = range(&from, src_byte, len)?;
        let d = range(&to, dst_byte, len)?;
        to[d].copy_from_slice(&from[s]);
        self.copied.fetch_add(len, Ordering::Relaxed);
        self.copy_calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes `data` (in view order: head, position, dim) into `buffer` through `view`, converting to the view's
    /// dtype. This is the model producing keys or values; it is counted as written, not copied.
    pub fn write_view(
        &self,
        buffer: &HostBuffer,
        view: &KvView,
        data: &[f32],
    ) -> Result<(), HostStorageError> {
        self.write_at(buffer, 0, view, data)
    }

    /// Reads the elements of `view` in view order, as f32.
    pub fn read_view(
        &self,
        buffer: &HostBuffer,
        view: &KvView,
    ) -> Result<Vec<f32>, HostStorageError> {
        read_at(buffer, 0, view)
    }

    /// [`write_view`](Self::write_view) through a binding (sub-region or offset).
    pub fn write_binding(
        &self,
        binding: &KvBinding<'_, HostStorage>,
        data: &[f32],
    ) -> Result<(), HostStorageError> {
        match binding {
            KvBinding::SubRegion { region, view } => {
                check_in_region(region, view)?;
                self.write_at(&region.buffer, region.range.origin, view, data)
            }
            KvBinding::Offset { buffer, view } => self.write_at(buffer, 0, view, data),
        }
    }

    /// [`read_view`](Self::read_view) through a binding (sub-region or offset).
    pub fn read_binding(
        &self,
        binding: &KvBinding<'_, HostStorage>,
    ) -> Result<Vec<f32>, HostStorageError> {
        match binding {
            KvBinding::SubRegion { region, view } => {
                check_in_region(region, view)?;
                read_at(&region.buffer, region.range.origin, view)
            }
            KvBinding::Offset { buffer, view } => read_at(buffer, 0, view),
        }
    }

    fn write_at(
        &self,
        buffer: &HostBuffer,
        base: u64,
        view: &KvView,
        data: &[f32],
    ) -> Result<(), HostStorageError> {
        if data.len() as u64 != view.elems() {
            return Err(HostStorageError::DataLength {
                got: data.len(),
                expected: view.elems(),
            });
        }
        let mut bytes = buffer.lock()?;
        let elem = view.dtype.bytes();
        range(&bytes, base + view.offset_bytes(), view.span_bytes())?;
        let mut values = data.iter();
        for h in 0..view.heads {
            for i in 0..view.positions {
                let at = base + view.element_index(h, i, 0) * elem;
                for d in 0..view.head_dim {
                    let v = values.next().copied().unwrap_or_default();
                    let b = (at + d as u64 * elem) as usize;
                    match view.dtype {
                        KvDtype::F16 => {
                            bytes[b..b + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes())
                        }
                        KvDtype::F32 => bytes[b..b + 4].copy_from_slice(&v.to_le_bytes()),
                    }
                }
            }
        }
        self.written
            .fetch_add(view.elems() * elem, Ordering::Relaxed);
        Ok(())
    }
}

fn check_in_region(region: &HostRegion, view: &KvView) -> Result<(), HostStorageError> {
    let end = view.offset_bytes() + view.span_bytes();
    if end > region.range.len {
        return Err(HostStorageError::OutOfRange {
            start: view.offset_bytes(),
            end,
            len: region.range.len,
        });
    }
    Ok(())
}

fn range(bytes: &[u8], start: u64, len: u64) -> Result<std::ops::Range<usize>, HostStorageError> {
    let end = start.saturating_add(len);
    if end > bytes.len() as u64 {
        return Err(HostStorageError::OutOfRange {
            start,
            end,
            len: bytes.len() as u64,
        });
    }
    Ok(start as usize..end as usize)
}

fn read_at(buffer: &HostBuffer, base: u64, view: &KvView) -> Result<Vec<f32>, HostStorageError> {
    let bytes = buffer.lock()?;
    let elem = view.dtype.bytes();
    range(&bytes, base + view.offset_bytes(), view.span_bytes())?;
    let mut out = Vec::with_capacity(view.elems() as usize);
    for h in 0..view.heads {
        for i in 0..view.positions {
            let at = base + view.element_index(h, i, 0) * elem;
            for d in 0..view.head_dim {
                let b = (at + d as u64 * elem) as usize;
                out.push(match view.dtype {
                    KvDtype::F16 => f16::from_le_bytes([bytes[b], bytes[b + 1]]).to_f32(),
                    KvDtype::F32 => {
                        f32::from_le_bytes([bytes[b], bytes[b + 1], bytes[b + 2], bytes[b + 3]])
                    }
                });
            }
        }
    }
    Ok(out)
}

impl KvStorage for HostStorage {
    type Buffer = HostBuffer;
    type Region = HostRegion;
    type Error = HostStorageError;

    fn limits(&self) -> StorageLimits {
        self.limits
    }

    fn allocate(&self, bytes: u64) -> Result<HostBuffer, HostStorageError> {
        if bytes > self.limits.max_alloc_bytes || usize::try_from(bytes).is_err() {
            return Err(HostStorageError::TooLarge {
                bytes,
                max: self.limits.max_alloc_bytes,
            });
        }
        self.allocated.fetch_add(bytes, Ordering::Relaxed);
        Ok(HostBuffer {
            bytes: Arc::new(Mutex::new(vec![0u8; bytes as usize])),
        })
    }

    fn sub_region(
        &self,
        buffer: &HostBuffer,
        range_bytes: ByteRange,
    ) -> Result<Option<HostRegion>, HostStorageError> {
        range(&buffer.lock()?, range_bytes.origin, range_bytes.len)?;
        if !self.limits.is_aligned(range_bytes.origin) {
            return Ok(None);
        }
        self.regions.fetch_add(1, Ordering::Relaxed);
        Ok(Some(HostRegion {
            buffer: buffer.clone(),
            range: range_bytes,
        }))
    }

    fn copy_within(
        &self,
        buffer: &HostBuffer,
        src: u64,
        dst: u64,
        len: u64,
    ) -> Result<(), HostStorageError> {
        if src < dst.saturating_add(len) && dst < src.saturating_add(len) && len > 0 {
            return Err(HostStorageError::Overlap { src, dst, len });
        }
        let mut bytes = buffer.lock()?;
        let s = range(&bytes, src, len)?;
        range(&bytes, dst, len)?;
        bytes.copy_within(s, dst as usize);
        self.copied.fetch_add(len, Ordering::Relaxed);
        self.copy_calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
