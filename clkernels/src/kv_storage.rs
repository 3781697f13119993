//! The OpenCL storage backend for the `kvcache` crate.
//!
//! Each per-layer K or V cache is one `cl_mem` buffer. A view whose origin is a multiple of the device's
//! `CL_DEVICE_MEM_BASE_ADDR_ALIGN` becomes a sub-buffer (`clCreateSubBuffer`), which a kernel can take as its own
//! argument; any other origin is refused here (`Ok(None)`), and `kvcache` then binds the whole buffer with the
//! view's element offset, which every kernel in [`crate::kernels::attention`] applies itself. Either way no cache
//! contents are copied; the only copy is [`KvStorage::copy_within`] for a context shift.

use kvcache::{ByteRange, KvBinding, KvStorage, KvView, StorageLimits};
use opencl3::memory::{Buffer, ClMem, CL_MEM_READ_WRITE};
use opencl3::types::CL_BLOCKING;

use crate::kernels::attention::KvOperand;
use crate::runtime::{ClError, ClResultExt, Gpu};

/// One per-layer K or V buffer.
#[derive(Debug)]
pub struct ClKvBuffer {
    buffer: Buffer<u8>,
    bytes: u64,
}

impl ClKvBuffer {
    /// The `opencl3` buffer.
    pub fn raw(&self) -> &Buffer<u8> {
        &self.buffer
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The kernel operand for `view` of this buffer, sized from what was allocated (no driver query).
    pub fn operand(&self, view: KvView) -> KvOperand<'_> {
        KvOperand::from_sized_mem(self.buffer.get(), saturating_usize(self.bytes), view)
    }
}

/// A sub-buffer of a [`ClKvBuffer`].
#[derive(Debug)]
pub struct ClKvRegion {
    buffer: Buffer<u8>,
    range: ByteRange,
}

impl ClKvRegion {
    /// The `opencl3` sub-buffer.
    pub fn raw(&self) -> &Buffer<u8> {
        &self.buffer
    }

    /// Where in its parent buffer it lies.
    pub fn range(&self) -> ByteRange {
        self.range
    }

    /// The kernel operand for `view` of this sub-buffer, sized from its range (no driver query).
    pub fn operand(&self, view: KvView) -> KvOperand<'_> {
        KvOperand::from_sized_mem(self.buffer.get(), saturating_usize(self.range.len), view)
    }
}

/// A byte count as `usize`; a buffer that exists has a size that fits, so saturating changes nothing.
fn saturating_usize(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// KV storage in OpenCL buffers of one device.
#[derive(Debug, Clone)]
pub struct ClKvStorage {
    gpu: Gpu,
}

impl ClKvStorage {
    /// Storage on `gpu`'s context and queue.
    pub fn new(gpu: &Gpu) -> Self {
        ClKvStorage { gpu: gpu.clone() }
    }

    /// Reads a whole buffer back (blocking; for tests and debugging).
    pub fn read_bytes(&self, buffer: &ClKvBuffer) -> Result<Vec<u8>, ClError> {
        let mut out = vec![0u8; buffer.bytes as usize];
        // SAFETY: `out` has the buffer's size and outlives the blocking read.
        unsafe {
            self.gpu
                .queue()
                .enqueue_read_buffer(&buffer.buffer, CL_BLOCKING, 0, &mut out, &[])
        }
        .cl_call("clEnqueueReadBuffer")?;
        Ok(out)
    }

    /// Overwrites a whole buffer (blocking; for tests and tools that load a cache).
    pub fn write_bytes(&self, buffer: &mut ClKvBuffer, data: &[u8]) -> Result<(), ClError> {
        if data.len() as u64 != buffer.bytes {
            return Err(ClError::LengthMismatch {
                call: "ClKvStorage::write_bytes",
                expected: buffer.bytes as usize,
                got: data.len(),
            });
        }
        // SAFETY: `data` has the buffer's size and outlives the blocking write.
        unsafe {
            self.gpu
                .queue()
                .enqueue_write_buffer(&mut buffer.buffer, CL_BLOCKING, 0, data, &[])
        }
        .cl_call("clEnqueueWriteBuffer")?;
        Ok(())
    }
}

/// A view as one rectangular copy: `heads` rows of `positions * head_dim` contiguous elements, one head slab apart.
#[derive(Debug, Clone, Copy)]
struct ViewRows {
    origin: usize,
    row_bytes: usize,
    rows: usize,
    row_pitch: usize,
}

impl ViewRows {
    /// The rows of `view` in `buffer`, checked against the buffer.
    fn of(buffer: &ClKvBuffer, view: &KvView) -> Result<Self, ClError> {
        let invalid = |reason| ClError::InvalidBufferSize {
            elements: saturating_usize(view.elems()),
            element_bytes: view.dtype.bytes() as usize,
            reason,
        };
        if view.position_stride_elems != view.head_dim as u64 {
            return Err(invalid("the view's positions are not contiguous"));
        }
        if view.wrap.is_some() {
            return Err(invalid(
                "the view wraps around a ring (copy its KvView::linear_parts instead)",
            ));
        }
        if view.heads > 1 && view.head_stride_elems < view.positions as u64 * view.head_dim as u64 {
            return Err(invalid("the view's heads overlap"));
        }
        if view.end_elems().saturating_mul(view.dtype.bytes()) > buffer.bytes {
            return Err(invalid("the view reaches past the end of the buffer"));
        }
        // Every figure is at most the buffer's size, which fits in usize.
        Ok(Self {
            origin: saturating_usize(view.offset_bytes()),
            row_bytes: view.positions * view.head_dim * view.dtype.bytes() as usize,
            rows: view.heads,
            row_pitch: saturating_usize(view.head_stride_elems * view.dtype.bytes()),
        })
    }

    /// The rows of every part, checked against its buffer and, all together, against a host slice of `host_len`
    /// bytes.
    fn plan(
        call: &'static str,
        parts: &[(&ClKvBuffer, KvView)],
        host_len: usize,
    ) -> Result<Vec<Self>, ClError> {
        let rows = parts
            .iter()
            .map(|(buffer, view)| Self::of(buffer, view))
            .collect::<Result<Vec<_>, _>>()?;
        let total = rows.iter().try_fold(0usize, |sum, r| {
            sum.checked_add(r.row_bytes.checked_mul(r.rows)?)
        });
        if total != Some(host_len) {
            return Err(ClError::LengthMismatch {
                call,
                expected: total.unwrap_or(usize::MAX),
                got: host_len,
            });
        }
        Ok(rows)
    }
}

/// One rectangular copy between a buffer and host memory.
#[derive(Debug, Clone, Copy)]
enum Rect {
    Read(*mut u8),
    Write(*const u8),
}

impl ClKvStorage {
    /// Reads the elements of each view of `parts` into `out`, one after the other, each packed
    /// `[head][position][dim]`: one rectangular read per buffer (a row per head), so a cache saved to disk carries
    /// only its used positions, not the preallocated context. The reads are enqueued together and waited for
    /// once.
    pub fn read_views(
        &self,
        parts: &[(&ClKvBuffer, KvView)],
        out: &mut [u8],
    ) -> Result<(), ClError> {
        let rows = ViewRows::plan("ClKvStorage::read_views", parts, out.len())?;
        let base = out.as_mut_ptr();
        // SAFETY: every part's host range lies inside `out` (checked by `plan`), and `copy_all` waits for the
        // queue before it returns, so `out` outlives every read.
        unsafe { self.copy_all(parts, &rows, |at| Rect::Read(base.add(at))) }
    }

    /// Writes `data`, the packed `[head][position][dim]` elements of each view of `parts` one after the other,
    /// into the views: how a cache read from disk goes back in place, whatever context the buffers were
    /// allocated for. Enqueued together, waited for once; ordered before any later kernel on the in-order queue.
    pub fn write_views(&self, parts: &[(&ClKvBuffer, KvView)], data: &[u8]) -> Result<(), ClError> {
        let rows = ViewRows::plan("ClKvStorage::write_views", parts, data.len())?;
        let base = data.as_ptr();
        // SAFETY: as for `read_views`: the host ranges lie inside `data`, which outlives the waited-for writes.
        unsafe { self.copy_all(parts, &rows, |at| Rect::Write(base.add(at))) }
    }

    /// Enqueues one non-blocking rectangular copy per part (host range `i` starting at `host(offset)`), then
    /// waits for the queue, also when an enqueue failed, so no copy can outlive the caller's host memory.
    ///
    /// # Safety
    /// `rows` must be `ViewRows::plan`'s answer for `parts`, and `host(at)` must point at byte `at` of a host
    /// slice at least as long as the sum of the parts, valid until this returns.
    unsafe fn copy_all(
        &self,
        parts: &[(&ClKvBuffer, KvView)],
        rows: &[ViewRows],
        host: impl Fn(usize) -> Rect,
    ) -> Result<(), ClError> {
        let mut enqueued = Ok(());
        let mut at = 0;
        for ((buffer, _), r) in parts.iter().zip(rows) {
            let bytes = r.row_bytes * r.rows;
            if bytes > 0 {
                // SAFETY: the caller's contract; the rows lie inside the buffer (checked by `plan`).
                enqueued = unsafe { self.enqueue_rect(buffer, r, host(at)) };
                if enqueued.is_err() {
                    break;
                }
            }
            at += bytes;
        }
        let finished = self.gpu.finish();
        enqueued.and(finished)
    }

    /// Enqueues one non-blocking rectangular copy of `rows` between `buffer` and host memory.
    ///
    /// # Safety
    /// The rows must lie inside the buffer, the host memory must hold `rows.rows * rows.row_bytes` bytes and stay
    /// valid until the queue has finished the copy.
    unsafe fn enqueue_rect(
        &self,
        buffer: &ClKvBuffer,
        rows: &ViewRows,
        host: Rect,
    ) -> Result<(), ClError> {
        let (origin, host_origin, region) = (
            [rows.origin, 0, 0],
            [0usize; 3],
            [rows.row_bytes, rows.rows, 1],
        );
        let (queue, mem) = (self.gpu.queue().get(), buffer.buffer.get());
        let non_blocking = opencl3::types::CL_NON_BLOCKING;
        // SAFETY: the caller's contract.
        let event = unsafe {
            match host {
                Rect::Read(ptr) => cl3::command_queue::enqueue_read_buffer_rect(
                    queue,
                    mem,
                    non_blocking,
                    origin.as_ptr(),
                    host_origin.as_ptr(),
                    region.as_ptr(),
                    rows.row_pitch,
                    0,
                    rows.row_bytes,
                    0,
                    ptr.cast(),
                    0,
                    std::ptr::null(),
                )
                .cl_call("clEnqueueReadBufferRect")?,
                Rect::Write(ptr) => cl3::command_queue::enqueue_write_buffer_rect(
                    queue,
                    mem,
                    non_blocking,
                    origin.as_ptr(),
                    host_origin.as_ptr(),
                    region.as_ptr(),
                    rows.row_pitch,
                    0,
                    rows.row_bytes,
                    0,
                    ptr.cast(),
                    0,
                    std::ptr::null(),
                )
                .cl_call("clEnqueueWriteBufferRect")?,
            }
        };
        drop(opencl3::event::Event::new(event));
        Ok(())
    }
}

/// The kernel operand for a binding made by `kvcache::KvSequence::bind` on this storage.
pub fn operand<'a>(
    binding: &'a KvBinding<'a, ClKvStorage>,
) -> Result<KvOperand<'a>, crate::kernels::KernelError> {
    Ok(match binding {
        KvBinding::SubRegion { region, view } => region.operand(*view),
        KvBinding::Offset { buffer, view } => buffer.operand(*view),
    })
}

impl KvStorage for ClKvStorage {
    type Buffer = ClKvBuffer;
    type Region = ClKvRegion;
    type Error = ClError;

    fn limits(&self) -> StorageLimits {
        let caps = self.gpu.caps();
        StorageLimits {
            max_alloc_bytes: caps.max_alloc_bytes,
            sub_region_align_bytes: u64::from(caps.base_addr_align_bits / 8).max(1),
        }
    }

    fn allocate(&self, bytes: u64) -> Result<ClKvBuffer, ClError> {
        let len = usize::try_from(bytes).map_err(|_| ClError::InvalidBufferSize {
            elements: usize::MAX,
            element_bytes: 1,
            reason: "byte size does not fit in usize",
        })?;
        if len == 0 {
            return Err(ClError::InvalidBufferSize {
                elements: 0,
                element_bytes: 1,
                reason: "OpenCL buffers cannot be empty",
            });
        }
        // SAFETY: no host pointer is passed.
        let buffer = unsafe {
            Buffer::<u8>::create(
                self.gpu.context(),
                CL_MEM_READ_WRITE,
                len,
                std::ptr::null_mut(),
            )
        }
        .cl_call("clCreateBuffer")?;
        Ok(ClKvBuffer { buffer, bytes })
    }

    fn sub_region(
        &self,
        buffer: &ClKvBuffer,
        range: ByteRange,
    ) -> Result<Option<ClKvRegion>, ClError> {
        let limits = self.limits();
        if range.len == 0 || range.end() > buffer.bytes || !limits.is_aligned(range.origin) {
            return Ok(None);
        }
        // SAFETY: the range lies inside the parent buffer and its origin meets the device's alignment.
        let sub = unsafe {
            buffer.buffer.create_sub_buffer(
                CL_MEM_READ_WRITE,
                range.origin as usize,
                range.len as usize,
            )
        };
        match sub {
            Ok(sub) => Ok(Some(ClKvRegion { buffer: sub, range })),
            // A driver may still refuse (e.g. a stricter alignment than reported): fall back to an offset.
            Err(e) if e.0 == opencl3::error_codes::CL_MISALIGNED_SUB_BUFFER_OFFSET => Ok(None),
            Err(e) => Err(ClError::from_code("clCreateSubBuffer", e.0)),
        }
    }

    fn copy_within(
        &self,
        buffer: &ClKvBuffer,
        src: u64,
        dst: u64,
        len: u64,
    ) -> Result<(), ClError> {
        if len == 0 {
            return Ok(());
        }
        // SAFETY: kvcache guarantees both ranges lie inside the buffer and do not overlap; the copy is ordered on
        // the in-order queue before any later kernel that reads the cache.
        let event = unsafe {
            cl3::command_queue::enqueue_copy_buffer(
                self.gpu.queue().get(),
                buffer.buffer.get(),
                buffer.buffer.get(),
                src as usize,
                dst as usize,
                len as usize,
                0,
                std::ptr::null(),
            )
        }
        .cl_call("clEnqueueCopyBuffer")?;
        drop(opencl3::event::Event::new(event));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kvcache::KvDtype;
    use rand::Rng;

    use super::*;
    use crate::kernels::attention::Attention;
    use crate::kernels::rope::HeadsLayout;
    use crate::runtime::DeviceBuffer;

    /// `write_views` puts packed `[head][position][dim]` bytes exactly at the view's strided elements and nowhere
    /// else, and `read_views` packs them back, for random layouts, positions and both element types; a view that
    /// does not fit the buffer or the host slice is refused.
    #[test]
    fn views_round_trip_through_rectangular_copies() {
        use kvcache::KvLayout;
        let gpu = Gpu::open_default().unwrap();
        let storage = ClKvStorage::new(&gpu);
        let mut rng = rand::rng();
        for round in 0..12 {
            let layout = KvLayout {
                kv_heads: rng.random_range(1..5),
                max_ctx: rng.random_range(1..40),
                head_dim: rng.random_range(1..24),
                dtype: if round % 2 == 0 {
                    KvDtype::F16
                } else {
                    KvDtype::F32
                },
            };
            let mut buffer = storage.allocate(layout.buffer_bytes()).unwrap();
            let before: Vec<u8> = (0..layout.buffer_bytes()).map(|_| rng.random()).collect();
            storage.write_bytes(&mut buffer, &before).unwrap();
            let start = rng.random_range(0..layout.max_ctx);
            let len = rng.random_range(0..=layout.max_ctx - start);
            let view = layout.positions_view(start, len);
            let elem = layout.dtype.bytes() as usize;
            let packed: Vec<u8> = (0..view.elems() as usize * elem)
                .map(|_| rng.random())
                .collect();
            storage.write_views(&[(&buffer, view)], &packed).unwrap();
            // The host model: each head's run of positions lands one head slab apart.
            let mut want = before.clone();
            let run = len * layout.head_dim * elem;
            for h in 0..layout.kv_heads {
                let at = layout.element_index(h, start) as usize * elem;
                want[at..at + run].copy_from_slice(&packed[h * run..(h + 1) * run]);
            }
            assert_eq!(storage.read_bytes(&buffer).unwrap(), want, "round {round}");
            let mut back = vec![0u8; packed.len()];
            storage.read_views(&[(&buffer, view)], &mut back).unwrap();
            assert_eq!(back, packed, "round {round}");
            // Two parts, one after the other in host memory: the same view of two buffers.
            let mut twice = vec![0u8; 2 * packed.len()];
            storage
                .read_views(&[(&buffer, view), (&buffer, view)], &mut twice)
                .unwrap();
            assert_eq!(twice, [&packed[..], &packed[..]].concat(), "round {round}");
            // Refusals: a host slice of the wrong size, a view past the end.
            assert!(storage
                .read_views(&[(&buffer, view)], &mut vec![0u8; packed.len() + 1])
                .is_err());
            let past = KvView {
                offset_elems: layout.buffer_elems(),
                positions: 1,
                ..view
            };
            let one = vec![0u8; past.elems() as usize * elem];
            assert!(storage.write_views(&[(&buffer, past)], &one).is_err());
        }
    }

    /// Writes through a new sub-buffer at a new origin every round, dropping the last one: drivers hand a freed
    /// sub-buffer's handle to the next, and a launcher that skipped re-setting an argument it thought unchanged
    /// would write at the old origin. Each round's values must land exactly at its own origin.
    #[test]
    fn writes_through_successive_sub_buffers_land_at_their_own_origins() {
        let gpu = Gpu::open_default().unwrap();
        let storage = ClKvStorage::new(&gpu);
        let attention = Attention::new(&gpu).unwrap();
        let align = storage.limits().sub_region_align_bytes.max(4);
        let n = 64usize;
        let rounds = 6u64;
        let mut parent = storage.allocate(align * (rounds + 1)).unwrap();
        let zeros = vec![0u8; parent.bytes() as usize];
        storage.write_bytes(&mut parent, &zeros).unwrap();
        let mut want = vec![0f32; parent.bytes() as usize / 4];
        let mut rng = rand::rng();
        for round in 0..rounds {
            let origin = align * round;
            let range = ByteRange {
                origin,
                len: (n * 4) as u64,
            };
            let Some(region) = storage.sub_region(&parent, range).unwrap() else {
                eprintln!("the device refused a sub-buffer: nothing to check");
                return;
            };
            let values: Vec<f32> = (0..n).map(|_| rng.random_range(-4.0..4.0)).collect();
            let src = DeviceBuffer::from_slice(&gpu, &values).unwrap();
            let view = KvView {
                offset_elems: 0,
                first_position: 0,
                positions: 1,
                heads: 1,
                head_dim: n,
                head_stride_elems: n as u64,
                position_stride_elems: n as u64,
                dtype: KvDtype::F32,
                wrap: None,
            };
            let layout = HeadsLayout {
                offset: 0,
                token_stride: n,
                heads: 1,
                seq: 1,
            };
            attention
                .enqueue_kv_write(&src, layout, region.operand(view), None, 0)
                .unwrap();
            let at = origin as usize / 4;
            want[at..at + n].copy_from_slice(&values);
        }
        let got: Vec<f32> = storage
            .read_bytes(&parent)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got, want);
    }
}
