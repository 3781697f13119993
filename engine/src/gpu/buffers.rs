//! The activation buffers of the forward pass, placed by the shape plan: one arena holding the plan's buffers at
//! fixed offsets ([`super::arena`]), and for every layer a set of sub-buffers naming where that layer's activations
//! are.
//!
//! The plan may put one layer's `xn` where another layer's `attn` was, so each layer gets its own [`Activations`]
//! (sub-buffers are cheap handles; the memory is the arena's). Two fields of one set may share memory only when the
//! plan proved they are never live together, so no kernel is ever given two overlapping fields.

use clkernels::runtime::{DeviceBuffer, Gpu};
use symshape::TensorId;

use super::arena::{ArenaSlot, ARENA_ALIGN_BYTES};
use super::plan::StepPlan;
use crate::EngineError;

/// Where one layer's activations (and the output head's) live for every step.
#[derive(Debug)]
pub(super) struct Activations {
    /// Residual stream `[seq][hidden]` (the same memory in every layer).
    pub x: DeviceBuffer<f32>,
    /// The attention RMSNorm's output `[seq][hidden]`.
    pub xn: DeviceBuffer<f32>,
    /// Fused q|k|v `[seq][q_dim + 2 kv_dim]`.
    pub qkv: DeviceBuffer<f32>,
    /// Attention output `[seq][q_dim]`.
    pub attn: DeviceBuffer<f32>,
    /// The MLP RMSNorm's output `[seq][hidden]`.
    pub mlp_xn: DeviceBuffer<f32>,
    /// Gate (then gated activation) `[seq][ffn]`.
    pub gate: DeviceBuffer<f32>,
    /// Up `[seq][ffn]`.
    pub up: DeviceBuffer<f32>,
    /// With post norms (Gemma 2 and 3): the o and down projections' outputs `[seq][hidden]`, normed into `x`.
    pub attn_out: Option<DeviceBuffer<f32>>,
    pub mlp_out: Option<DeviceBuffer<f32>>,
    /// The last position's residual and its norm, `[hidden]` each.
    pub last: DeviceBuffer<f32>,
    pub last_normed: DeviceBuffer<f32>,
    /// Logits of the last position.
    pub logits: DeviceBuffer<f32>,
}

/// Everything a step reads and writes besides weights and the KV cache.
#[derive(Debug)]
pub(super) struct StepBuffers {
    /// Token ids of a prefill chunk (the plan's `token_ids` input at the largest step).
    pub ids: DeviceBuffer<u32>,
    /// Token id of a decode step chosen on the host.
    pub id1: DeviceBuffer<u32>,
    /// The arg-max the device chose last (also the next decode step's input when greedy), kept across steps and so
    /// outside the arena.
    pub chosen: DeviceBuffer<u32>,
    /// Per layer, where its activations are; the last set also serves the output head.
    pub layers: Vec<Activations>,
    /// Host staging for `ids`.
    pub host_ids: Vec<u32>,
    /// Bytes allocated (arena and ids).
    pub bytes: u64,
    /// The one allocation every set's sub-buffers view.
    _arena: DeviceBuffer<f32>,
}

impl StepBuffers {
    /// Allocates the arena for steps of at most `max_chunk` tokens in a cache of `max_ctx` positions, and names
    /// every layer's activations in it.
    pub fn new(
        gpu: &Gpu,
        plan: &StepPlan,
        max_chunk: usize,
        max_ctx: usize,
    ) -> Result<Self, EngineError> {
        let align = u64::from(gpu.caps().base_addr_align_bits / 8);
        if align > ARENA_ALIGN_BYTES || (align > 0 && !ARENA_ALIGN_BYTES.is_multiple_of(align)) {
            return Err(EngineError::InvalidConfig(format!(
                "{} asks sub-buffers to start at multiples of {align} bytes (CL_DEVICE_MEM_BASE_ADDR_ALIGN); the \
                 activation arena aligns to {ARENA_ALIGN_BYTES}",
                gpu.caps().display_name()
            )));
        }
        let sizes = plan.sizes()?;
        let slots = sizes.layout(max_chunk, max_ctx);
        let arena_bytes = sizes.arena_bytes(max_chunk, max_ctx);
        let ids_len = usize::try_from(sizes.token_id_bytes(max_chunk, max_ctx) / 4)
            .map_err(|e| EngineError::InvalidConfig(format!("token ids: {e}")))?;
        let arena = DeviceBuffer::<f32>::new(gpu, elems(arena_bytes)?.max(1))?;
        let d = plan.decoder();
        let view = |t: TensorId| -> Result<DeviceBuffer<f32>, EngineError> {
            let slot = d
                .plan
                .buffer_of(t)
                .and_then(|b| slots.get(b))
                .ok_or_else(|| {
                    EngineError::InvalidConfig(format!(
                        "shape plan: activation {} has no buffer",
                        t.index()
                    ))
                })?;
            sub(gpu, &arena, *slot)
        };
        let layers = d
            .layers
            .iter()
            .map(|l| {
                Ok(Activations {
                    x: view(d.x)?,
                    xn: view(l.xn)?,
                    qkv: view(l.qkv)?,
                    attn: view(l.attn)?,
                    mlp_xn: view(l.mlp_xn)?,
                    gate: view(l.gate)?,
                    up: view(l.up)?,
                    attn_out: l.attn_out.map(&view).transpose()?,
                    mlp_out: l.mlp_out.map(&view).transpose()?,
                    last: view(d.last)?,
                    last_normed: view(d.last_normed)?,
                    logits: view(d.logits)?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(Self {
            ids: DeviceBuffer::new(gpu, ids_len.max(1))?,
            id1: DeviceBuffer::new(gpu, 1)?,
            chosen: DeviceBuffer::new(gpu, 1)?,
            layers,
            host_ids: vec![0; ids_len.max(1)],
            bytes: sizes.bytes(max_chunk, max_ctx),
            _arena: arena,
        })
    }

    /// The last layer's set, which the output head uses.
    pub fn head(&mut self) -> Result<&mut Activations, EngineError> {
        self.layers
            .last_mut()
            .ok_or_else(|| EngineError::InvalidConfig("the model has no layers".into()))
    }
}

fn elems(bytes: u64) -> Result<usize, EngineError> {
    usize::try_from(bytes / 4)
        .map_err(|e| EngineError::InvalidConfig(format!("activation arena of {bytes} bytes: {e}")))
}

/// The slot's region of the arena as a buffer of its own.
fn sub(
    gpu: &Gpu,
    arena: &DeviceBuffer<f32>,
    slot: ArenaSlot,
) -> Result<DeviceBuffer<f32>, EngineError> {
    Ok(arena.sub_buffer(gpu, elems(slot.offset)?, elems(slot.bytes)?.max(1))?)
}
