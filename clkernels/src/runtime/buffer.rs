//! [`DeviceBuffer`]: a typed device allocation that knows its length, with blocking transfers.

use std::marker::PhantomData;

use opencl3::memory::{Buffer, ClMem, CL_MEM_READ_WRITE};
use opencl3::types::CL_BLOCKING;

use crate::runtime::{ClError, ClResultExt, Gpu};

/// A device buffer of `len` elements of `T`.
#[derive(Debug)]
pub struct DeviceBuffer<T> {
    buffer: Buffer<T>,
    len: usize,
    _marker: PhantomData<T>,
}

impl<T: bytemuck::Pod> DeviceBuffer<T> {
    /// Allocates `len` uninitialised elements.
    pub fn new(gpu: &Gpu, len: usize) -> Result<Self, ClError> {
        let element_bytes = std::mem::size_of::<T>();
        let bytes = len.checked_mul(element_bytes);
        let reason = match bytes {
            _ if len == 0 || element_bytes == 0 => Some("OpenCL buffers cannot be empty"),
            None => Some("byte size overflows"),
            Some(b) => {
                gpu.check_allocation(b as u64)?;
                None
            }
        };
        if let Some(reason) = reason {
            return Err(ClError::InvalidBufferSize {
                elements: len,
                element_bytes,
                reason,
            });
        }
        // SAFETY: no host pointer is passed.
        let buffer = unsafe {
            Buffer::<T>::create(gpu.context(), CL_MEM_READ_WRITE, len, std::ptr::null_mut())
        }
        .cl_call("clCreateBuffer")?;
        Ok(DeviceBuffer {
            buffer,
            len,
            _marker: PhantomData,
        })
    }

    /// Allocates a buffer holding a copy of `data`.
    pub fn from_slice(gpu: &Gpu, data: &[T]) -> Result<Self, ClError> {
        let mut buffer = Self::new(gpu, data.len())?;
        buffer.write(gpu, data)?;
        Ok(buffer)
    }

    /// Reads the whole buffer back (blocking; waits for earlier work on the queue).
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<T>, ClError> {
        let mut out = vec![T::zeroed(); self.len];
        // SAFETY: `out` has exactly the buffer's length and lives until the blocking read returns.
        unsafe {
            gpu.queue()
                .enqueue_read_buffer(&self.buffer, CL_BLOCKING, 0, &mut out, &[])
        }
        .cl_call("clEnqueueReadBuffer")?;
        Ok(out)
    }

    /// Overwrites the whole buffer with `data` (blocking).
    pub fn write(&mut self, gpu: &Gpu, data: &[T]) -> Result<(), ClError> {
        if data.len() != self.len {
            return Err(ClError::LengthMismatch {
                call: "DeviceBuffer::write",
                expected: self.len,
                got: data.len(),
            });
        }
        // SAFETY: `data` has the buffer's length and outlives the blocking write.
        unsafe {
            gpu.queue()
                .enqueue_write_buffer(&mut self.buffer, CL_BLOCKING, 0, data, &[])
        }
        .cl_call("clEnqueueWriteBuffer")?;
        Ok(())
    }

    /// Sets every byte to `byte` (blocking); used to poison outputs in tests.
    pub fn fill_bytes(&mut self, gpu: &Gpu, byte: u8) -> Result<(), ClError> {
        let pattern = [byte];
        // SAFETY: the pattern outlives the call (the driver copies it), the range is the whole buffer.
        let event = unsafe {
            cl3::command_queue::enqueue_fill_buffer(
                gpu.queue().get(),
                self.buffer.get_mut(),
                pattern.as_ptr().cast(),
                1,
                0,
                self.byte_len(),
                0,
                std::ptr::null(),
            )
        }
        .cl_call("clEnqueueFillBuffer")?;
        opencl3::event::Event::new(event)
            .wait()
            .cl_call("clWaitForEvents")
    }

    /// Enqueues a device-side copy of the whole buffer into the start of `dst` (does not wait; ordered with the
    /// kernels on `gpu`'s in-order queue).
    pub fn copy_to(&self, gpu: &Gpu, dst: &mut DeviceBuffer<T>) -> Result<(), ClError> {
        if dst.len < self.len {
            return Err(ClError::LengthMismatch {
                call: "DeviceBuffer::copy_to",
                expected: self.len,
                got: dst.len,
            });
        }
        // SAFETY: two live buffers of `gpu`'s context; the destination holds at least the copied bytes.
        let event = unsafe {
            gpu.queue().enqueue_copy_buffer(
                &self.buffer,
                &mut dst.buffer,
                0,
                0,
                self.byte_len(),
                &[],
            )
        }
        .cl_call("clEnqueueCopyBuffer")?;
        // Releasing the event does not wait for the copy.
        drop(event);
        Ok(())
    }

    /// A view of elements `offset .. offset + len` as a buffer of its own (`clCreateSubBuffer`): one allocation can
    /// hold several activations that kernels take as whole buffers. The origin must be a multiple of the device's
    /// `CL_DEVICE_MEM_BASE_ADDR_ALIGN`. The view keeps the parent's memory alive; writes through overlapping views
    /// are ordered only by the queue, so a caller must never pass overlapping views to one kernel.
    pub fn sub_buffer(&self, gpu: &Gpu, offset: usize, len: usize) -> Result<Self, ClError> {
        let size = std::mem::size_of::<T>() as u64;
        let (origin, bytes) = (
            (offset as u64).saturating_mul(size),
            (len as u64).saturating_mul(size),
        );
        let align = u64::from(gpu.caps().base_addr_align_bits / 8).max(1);
        let bad = |reason: String| ClError::InvalidSubBuffer {
            origin,
            bytes,
            parent_bytes: self.byte_len() as u64,
            reason,
        };
        if len == 0 {
            return Err(bad("OpenCL buffers cannot be empty".into()));
        }
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(bad("it does not lie inside the buffer".into()));
        }
        if origin % align != 0 {
            return Err(bad(format!(
                "the origin is not a multiple of the device's base-address alignment, {align} bytes"
            )));
        }
        // SAFETY: the region lies inside the parent and its origin meets the device's alignment (checked above).
        let buffer = unsafe {
            self.buffer
                .create_sub_buffer(CL_MEM_READ_WRITE, offset, len)
        }
        .cl_call("clCreateSubBuffer")?;
        Ok(DeviceBuffer {
            buffer,
            len,
            _marker: PhantomData,
        })
    }

    /// Length in elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: OpenCL buffers cannot be empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    /// The underlying `opencl3` buffer (for kernel arguments).
    pub fn raw(&self) -> &Buffer<T> {
        &self.buffer
    }

    /// The underlying `opencl3` buffer, mutably.
    pub fn raw_mut(&mut self) -> &mut Buffer<T> {
        &mut self.buffer
    }
}
