//! The storage backend: where the per-layer buffers live.
//!
//! The trait speaks only of bytes, so a backend for OpenCL (`clCreateBuffer` / `clCreateSubBuffer` /
//! `clEnqueueCopyBuffer`), Vulkan or host memory implements it without this crate knowing any of them.

/// A byte range inside one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// First byte.
    pub origin: u64,
    /// Length in bytes.
    pub len: u64,
}

impl ByteRange {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.origin + self.len
    }
}

/// Equal-length, equally spaced copies inside one buffer: row `r` copies `row_bytes` from `src + r * row_stride` to
/// `dst + r * row_stride`. A context shift moves the same positions of every head this way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyRows {
    /// Source byte of row 0.
    pub src: u64,
    /// Destination byte of row 0.
    pub dst: u64,
    /// Bytes per row.
    pub row_bytes: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes between consecutive rows (same for source and destination).
    pub row_stride: u64,
}

/// Backend properties the cache plans with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StorageLimits {
    /// Largest single allocation (`CL_DEVICE_MAX_MEM_ALLOC_SIZE`).
    pub max_alloc_bytes: u64,
    /// Required alignment of a sub-region's origin, in bytes (`CL_DEVICE_MEM_BASE_ADDR_ALIGN / 8` for OpenCL).
    ///
    /// The cache asks for a sub-region only at origins that are a multiple of this; elsewhere it hands the kernel
    /// the whole buffer and an element offset. 0 or 1 means any origin.
    pub sub_region_align_bytes: u64,
}

impl StorageLimits {
    /// Whether `origin` may start a sub-region.
    pub fn is_aligned(&self, origin: u64) -> bool {
        self.sub_region_align_bytes <= 1 || origin.is_multiple_of(self.sub_region_align_bytes)
    }
}

/// Memory in which KV buffers are allocated.
///
/// Methods take `&self`: a device context and queue are shared handles, and the cache keeps the backend behind an
/// `Arc` shared by every sequence of a pool.
///
/// # Contract
/// * [`allocate`](KvStorage::allocate) returns a buffer of at least `bytes` bytes; its contents are unspecified.
/// * [`sub_region`](KvStorage::sub_region) is called only with ranges inside the buffer and origins that
///   [`StorageLimits::is_aligned`] accepts; a backend may still answer `Ok(None)` ("cannot make a sub-region here"),
///   and the cache then binds the whole buffer with an element offset instead.
/// * [`copy_within`](KvStorage::copy_within) is called with non-overlapping ranges inside one buffer (as
///   `clEnqueueCopyBuffer` requires). It is the only data movement the cache ever asks for, and only for a context
///   shift.
pub trait KvStorage {
    /// One allocation (OpenCL: a `cl_mem` buffer).
    type Buffer;
    /// A sub-region of a buffer that a kernel can take as its own argument (OpenCL: a sub-buffer).
    type Region;
    /// Backend failure.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Limits the cache must respect.
    fn limits(&self) -> StorageLimits;

    /// Allocates one buffer of `bytes` bytes.
    fn allocate(&self, bytes: u64) -> Result<Self::Buffer, Self::Error>;

    /// Makes a sub-region of `buffer`, or `Ok(None)` if this backend cannot make one at that range.
    fn sub_region(
        &self,
        buffer: &Self::Buffer,
        range: ByteRange,
    ) -> Result<Option<Self::Region>, Self::Error>;

    /// Copies `len` bytes from `src` to `dst` inside `buffer`; the ranges never overlap.
    fn copy_within(
        &self,
        buffer: &Self::Buffer,
        src: u64,
        dst: u64,
        len: u64,
    ) -> Result<(), Self::Error>;

    /// Copies `rows` inside `buffer`; no row's source overlaps any row's destination.
    ///
    /// The default issues one [`copy_within`](KvStorage::copy_within) per row; a backend may override it with one
    /// strided copy (e.g. `clEnqueueCopyBufferRect`) where its device allows that.
    fn copy_rows_within(&self, buffer: &Self::Buffer, rows: CopyRows) -> Result<(), Self::Error> {
        for r in 0..rows.rows {
            let at = r * rows.row_stride;
            self.copy_within(buffer, rows.src + at, rows.dst + at, rows.row_bytes)?;
        }
        Ok(())
    }
}
