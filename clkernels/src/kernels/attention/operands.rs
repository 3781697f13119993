//! What one attention or append call is given: its shape, the cache operands, and the fresh decode token.

use std::marker::PhantomData;

use kvcache::KvView;
use opencl3::memory::ClMem;
use opencl3::types::cl_mem;

use super::super::rope::{HeadsLayout, RopeConfig};
use super::super::{shape_error, KernelError};
use crate::runtime::DeviceBuffer;

/// Shape of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// New query tokens (1 in decode).
    pub seq: usize,
    /// Tokens already in the cache; query `t` attends positions `0..=past + t` (the last `window` of them with a
    /// sliding window, [`AttentionScores::window`]).
    pub past: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (a divisor of `heads`).
    pub kv_heads: usize,
    /// Head dimension (at most [`super::MAX_HEAD_DIM`]).
    pub head_dim: usize,
}

/// How an attention call forms and masks its scores beyond the causal mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionScores {
    /// Multiplies `q·k` (usually `1/sqrt(head_dim)`; Gemma 2 and 3 use `1/sqrt(query_pre_attn_scalar)`).
    pub scale: f32,
    /// Soft-capping (Gemma 2): a scaled score `s` becomes `cap * tanh(s / cap)` before the softmax.
    pub softcap: Option<f32>,
    /// Sliding window: the query at position `i` sees keys at positions `j <= i` with `i - j < window` (as
    /// llama.cpp and Hugging Face mask local layers). `None` sees every earlier position.
    pub window: Option<usize>,
}

impl AttentionScores {
    /// Plain causal attention with scores scaled by `scale`.
    pub fn scaled(scale: f32) -> Self {
        Self {
            scale,
            softcap: None,
            window: None,
        }
    }
}

/// The decode token [`super::Attention::enqueue_with_fresh`] takes from the fused QKV output: where its key and
/// value heads are, and the rotary embedding to apply to q and k.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreshToken {
    /// Its key heads in the QKV buffer.
    pub k: HeadsLayout,
    /// Its value heads in the QKV buffer.
    pub v: HeadsLayout,
    /// Rotary embedding of q and k (position `past`).
    pub rope: RopeConfig,
}

/// One cache buffer as a kernel operand: the `cl_mem` (whole buffer or sub-buffer) and the view into it.
#[derive(Debug, Clone, Copy)]
pub struct KvOperand<'a> {
    pub(super) mem: cl_mem,
    bytes: usize,
    pub(super) view: KvView,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> KvOperand<'a> {
    /// A view into an OpenCL buffer (a [`crate::kv_storage::ClKvBuffer`] or a sub-buffer region).
    pub fn new<T>(
        buffer: &'a opencl3::memory::Buffer<T>,
        view: KvView,
    ) -> Result<Self, KernelError> {
        let bytes = buffer
            .size()
            .map_err(|e| crate::runtime::ClError::from_code("clGetMemObjectInfo", e.0))?;
        Ok(KvOperand {
            mem: buffer.get(),
            bytes,
            view,
            _borrow: PhantomData,
        })
    }

    /// A view into a buffer whose size the caller already knows (the KV storage keeps it, so a step need not ask
    /// the driver with `clGetMemObjectInfo` for every layer).
    pub(crate) fn from_sized_mem(mem: cl_mem, bytes: usize, view: KvView) -> Self {
        KvOperand {
            mem,
            bytes,
            view,
            _borrow: PhantomData,
        }
    }

    /// A view into a typed device buffer (tests and tools that keep K/V outside a `kvcache` sequence).
    pub fn from_device_buffer<T: bytemuck::Pod>(buffer: &'a DeviceBuffer<T>, view: KvView) -> Self {
        KvOperand {
            mem: buffer.raw().get(),
            bytes: buffer.byte_len(),
            view,
            _borrow: PhantomData,
        }
    }

    /// The view.
    pub fn view(&self) -> &KvView {
        &self.view
    }

    /// Checks that the view ends inside its buffer.
    /// The buffer to pass as the kernel argument (other launchers of the crate take cache operands too).
    pub(crate) fn mem(&self) -> cl_mem {
        self.mem
    }

    pub(crate) fn check(&self, kernel: &'static str, what: &str) -> Result<(), KernelError> {
        check_view_in(kernel, what, &self.view, self.bytes)
    }
}

/// A view's ring as the kernels take it, `[ring, ring_first]` (`[0, 0]` for a linear view); refuses a ring view
/// whose positions do not fit its slots, or a slot outside them, so no kernel wraps twice.
pub(crate) fn kv_ring(
    kernel: &'static str,
    view: &KvView,
    positions: usize,
) -> Result<[u32; 2], KernelError> {
    let Some(w) = view.wrap else {
        return Ok([0, 0]);
    };
    if w.slots == 0 || w.first_slot >= w.slots || positions > w.slots {
        return Err(shape_error(
            kernel,
            format!(
                "a ring view of {} slots starting in slot {} cannot hold {positions} positions",
                w.slots, w.first_slot
            ),
        ));
    }
    Ok([
        super::super::to_u32(kernel, "ring slots", w.slots)?,
        super::super::to_u32(kernel, "ring first slot", w.first_slot)?,
    ])
}

/// Checks that `view` ends within a buffer of `bytes` bytes.
pub(super) fn check_view_in(
    kernel: &'static str,
    what: &str,
    view: &KvView,
    bytes: usize,
) -> Result<(), KernelError> {
    let end = view.end_elems() * view.dtype.bytes();
    if end > bytes as u64 {
        return Err(shape_error(
            kernel,
            format!("{what} view ends at byte {end} but its buffer has {bytes} bytes"),
        ));
    }
    Ok(())
}
