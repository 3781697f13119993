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

    /// Allocates `len` elements that may exceed the device's largest allocation, through `cl_qcom_large_buffer`
    /// (`clCreateBufferWithProperties` with `CL_LARGE_BUFFER_QCOM` set) where the device has that extension; anywhere
    /// else this is [`DeviceBuffer::new`], with its limit. Written from Qualcomm's header and the way llama.cpp's
    /// Adreno backend calls it: it has never run here (no development machine has the extension, and a device
    /// profile never adds an extension the host lacks), only compiled.
    pub fn new_large(gpu: &Gpu, len: usize) -> Result<Self, ClError> {
        let element_bytes = std::mem::size_of::<T>();
        let within = len
            .checked_mul(element_bytes)
            .is_some_and(|b| gpu.check_allocation(b as u64).is_ok());
        if !gpu.caps().qcom_large_buffer || within || len == 0 {
            return Self::new(gpu, len);
        }
        let properties: [u64; 3] = [crate::runtime::cl_consts::CL_LARGE_BUFFER_QCOM, 1, 0];
        // SAFETY: the property list is zero-terminated and outlives the call; no host pointer is passed.
        let buffer = unsafe {
            Buffer::<T>::create_with_properties(
                gpu.context(),
                properties.as_ptr(),
                CL_MEM_READ_WRITE,
                len,
                std::ptr::null_mut(),
            )
        }
        .cl_call("clCreateBufferWithProperties(CL_LARGE_BUFFER_QCOM)")?;
        Ok(DeviceBuffer {
            buffer,
            len,
            _marker: PhantomData,
        })
    }

    /// [`DeviceBuffer::new_large`] holding a copy of `data`.
    pub fn from_slice_large(gpu: &Gpu, data: &[T]) -> Result<Self, ClError> {
        let mut buffer = Self::new_large(gpu, data.len())?;
        buffer.write(gpu, data)?;
        Ok(buffer)
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
    /// hold several activations that kernels take as whole buffers, and a kernel that writes from element 0 writes
    /// into the middle of this buffer (one part of a split output head fills its slice of the logits;
    /// [`crate::runtime::RowSplit`] plans part boundaries on the alignment). The origin must be a multiple of the device's
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
        // OpenCL cannot cut a sub-buffer out of a sub-buffer (an activation of the arena, say, holding a split
        // head's slice of the logits): a view of a view is made from the root allocation at the offsets added.
        let (root, base) = self.root_and_offset()?;
        let absolute = base.saturating_add(origin);
        if absolute % align != 0 {
            return Err(bad(format!(
                "the origin (byte {absolute} of its allocation) is not a multiple of the device's base-address \
                 alignment, {align} bytes"
            )));
        }
        let region = cl3::types::cl_buffer_region {
            origin: usize::try_from(absolute).map_err(|_| bad("the origin overflows".into()))?,
            size: usize::try_from(bytes).map_err(|_| bad("the size overflows".into()))?,
        };
        // SAFETY: the region lies inside the parent (checked above), so inside the root at `base + origin`, and
        // its origin meets the device's alignment; the root outlives the call (the parent keeps it alive).
        let mem = unsafe {
            cl3::memory::create_sub_buffer(
                root,
                CL_MEM_READ_WRITE,
                cl3::memory::CL_BUFFER_CREATE_TYPE_REGION,
                std::ptr::from_ref(&region).cast(),
            )
        }
        .cl_call("clCreateSubBuffer")?;
        let buffer = Buffer::new(mem);
        Ok(DeviceBuffer {
            buffer,
            len,
            _marker: PhantomData,
        })
    }

    /// A second handle to the same memory (`clRetainMemObject`): several names for one allocation, as a memory
    /// plan that reuses one buffer for activations never live together needs. The memory lives while any handle
    /// does.
    pub fn share(&self) -> Result<Self, ClError> {
        let mem = self.buffer.get();
        // SAFETY: `mem` is a live buffer object owned by `self`; retaining it gives the new handle its own
        // reference, which the new `Buffer` releases when dropped.
        unsafe { cl3::memory::retain_mem_object(mem) }.cl_call("clRetainMemObject")?;
        Ok(DeviceBuffer {
            buffer: Buffer::new(mem),
            len: self.len,
            _marker: PhantomData,
        })
    }

    /// The allocation this buffer is part of (itself unless it is a sub-buffer) and its byte offset there.
    fn root_and_offset(&self) -> Result<(cl3::types::cl_mem, u64), ClError> {
        use cl3::info_type::InfoType;
        use cl3::memory::{get_mem_object_info, CL_MEM_ASSOCIATED_MEMOBJECT, CL_MEM_OFFSET};
        let this = self.buffer.get();
        let parent = match get_mem_object_info(this, CL_MEM_ASSOCIATED_MEMOBJECT)
            .cl_call("clGetMemObjectInfo")?
        {
            InfoType::Ptr(p) => p,
            _ => 0,
        };
        if parent == 0 {
            return Ok((this, 0));
        }
        let offset = match get_mem_object_info(this, CL_MEM_OFFSET).cl_call("clGetMemObjectInfo")? {
            InfoType::Size(o) => o as u64,
            _ => 0,
        };
        Ok((parent as cl3::types::cl_mem, offset))
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
