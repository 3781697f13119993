//! Images made over existing buffers (`CL_MEM_OBJECT_IMAGE1D_BUFFER`), so kernels can read weights through the
//! texture path (`read_imageui`) with no copy: the image shares the buffer's memory.
//!
//! Adreno reads through its texture units with their own cache, beside the load/store path the buffers take;
//! llama.cpp's Adreno kernels read their weights so. Whether an image fits is the launcher's decision
//! (`CL_DEVICE_IMAGE_MAX_BUFFER_SIZE`, [`crate::runtime::Capabilities::image_max_buffer_pixels`]); creating one
//! the device refuses is an error naming the call.

use opencl3::memory::{
    cl_image_desc, cl_image_format, ClMem, Image, CL_MEM_OBJECT_IMAGE1D_BUFFER, CL_MEM_READ_ONLY,
    CL_R, CL_RGBA, CL_UNSIGNED_INT16, CL_UNSIGNED_INT32,
};

use crate::runtime::{ClError, ClResultExt, DeviceBuffer, Gpu};

/// What one pixel of the image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Four `uint`s (16 bytes, one 32-code M0E4 chunk): `read_imageui` returns a `uint4`.
    U32x4,
    /// One 16-bit word (an M0E4 scale or offset, as the bits of a half): `read_imageui(..).x`. Not
    /// `CL_HALF_FLOAT`: PoCL 3.1 reads such an image1d_buffer_t wrongly (a constant, whatever the data), so a path
    /// built on it could not be tested here, and `CL_UNSIGNED_INT16` is in every OpenCL 2.0+ device's list.
    U16,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn bytes(self) -> usize {
        match self {
            PixelFormat::U32x4 => 16,
            PixelFormat::U16 => 2,
        }
    }

    fn cl_format(self) -> cl_image_format {
        let (order, ty) = match self {
            PixelFormat::U32x4 => (CL_RGBA, CL_UNSIGNED_INT32),
            PixelFormat::U16 => (CL_R, CL_UNSIGNED_INT16),
        };
        cl_image_format {
            image_channel_order: order,
            image_channel_data_type: ty,
        }
    }
}

/// A read-only `image1d_buffer_t` over a [`DeviceBuffer`].
#[derive(Debug)]
pub struct BufferImage {
    image: Image,
    pixels: usize,
}

// SAFETY: an OpenCL memory object may be used from any thread (the OpenCL specification makes every API call
// thread-safe except clSetKernelArg on one kernel, which `LockedKernel` serialises); opencl3 marks `Image` Send
// only because it marks nothing Sync by default.
unsafe impl Sync for BufferImage {}

impl BufferImage {
    /// Pixels of `format` in a buffer of `bytes`, if the bytes are a whole number of pixels.
    pub fn pixels_of(bytes: usize, format: PixelFormat) -> Option<usize> {
        (bytes.is_multiple_of(format.bytes()) && bytes > 0).then(|| bytes / format.bytes())
    }

    /// An image of `format` over all of `buffer`, which must be a whole number of pixels.
    pub fn over<T: bytemuck::Pod>(
        gpu: &Gpu,
        buffer: &DeviceBuffer<T>,
        format: PixelFormat,
    ) -> Result<Self, ClError> {
        let pixels =
            Self::pixels_of(buffer.byte_len(), format).ok_or(ClError::InvalidBufferSize {
                elements: buffer.len(),
                element_bytes: std::mem::size_of::<T>(),
                reason: "an image over a buffer needs a whole number of pixels",
            })?;
        let desc = cl_image_desc {
            image_type: CL_MEM_OBJECT_IMAGE1D_BUFFER,
            image_width: pixels,
            image_height: 1,
            image_depth: 1,
            image_array_size: 1,
            image_row_pitch: 0,
            image_slice_pitch: 0,
            num_mip_levels: 0,
            num_samples: 0,
            buffer: buffer.raw().get(),
        };
        let format = format.cl_format();
        // SAFETY: the descriptor and format outlive the call, no host pointer is passed, and the image keeps a
        // reference to the buffer's memory object for as long as it lives.
        let image = unsafe {
            Image::create(
                gpu.context(),
                CL_MEM_READ_ONLY,
                &format,
                &desc,
                std::ptr::null_mut(),
            )
        }
        .cl_call("clCreateImage(IMAGE1D_BUFFER)")?;
        Ok(BufferImage { image, pixels })
    }

    /// Pixels in the image.
    pub fn pixels(&self) -> usize {
        self.pixels
    }

    /// The memory object, as a kernel argument takes it.
    pub(crate) fn raw(&self) -> opencl3::types::cl_mem {
        self.image.get()
    }
}
