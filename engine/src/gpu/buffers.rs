//! The activation buffers of the forward pass, placed by the shape plan: one device allocation per plan buffer,
//! sized for the largest step ([`super::arena`] sums them), and for every layer a set of handles naming which of
//! them holds that layer's activations.
//!
//! The plan may put one layer's `xn` where another layer's `attn` was, so each layer gets its own [`Activations`]
//! (handles are retained references to the same allocations). Two fields of one set may share memory only when the
//! plan proved they are never live together, so no kernel is ever given two overlapping fields.
//!
//! Separate allocations rather than sub-buffers of one arena: with sub-buffer arguments NVIDIA's OpenCL ran
//! llama2-7b decode at 255-258 tok/s against 360-362 (H100, alternated in one call; bench/RESULTS.md), and one
//! arena would also have to fit the device's largest allocation.

use clkernels::runtime::{DeviceBuffer, Gpu};
use symshape::TensorId;

use super::plan::StepPlan;
use super::weights::RowSplitMatrix;
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
    /// In the output head's set, where the head is split over buffers: the rows of `logits` each part writes
    /// (`RowSplitMatrix::part_outputs`); empty otherwise.
    pub logits_parts: Vec<DeviceBuffer<f32>>,
}

/// Everything a step reads and writes besides weights and the KV cache.
#[derive(Debug)]
pub(super) struct StepBuffers {
    /// Token ids of a prefill chunk (the plan's `token_ids` input at the largest step).
    pub ids: DeviceBuffer<u32>,
    /// Token id of a decode step chosen on the host.
    pub id1: DeviceBuffer<u32>,
    /// The arg-max the device chose last (also the next decode step's input when greedy), kept across steps and so
    /// outside the plan.
    pub chosen: DeviceBuffer<u32>,
    /// Per layer, where its activations are; the last set also serves the output head.
    pub layers: Vec<Activations>,
    /// Host staging for `ids`.
    pub host_ids: Vec<u32>,
    /// Bytes allocated (the plan's buffers and the ids).
    pub bytes: u64,
    /// The plan's buffers, one allocation each, which every set's handles name.
    _allocations: Vec<DeviceBuffer<f32>>,
}

impl StepBuffers {
    /// Allocates the plan's buffers for steps of at most `max_chunk` tokens in a cache of `max_ctx` positions, and
    /// names every layer's activations in them; the last set also gets the slices of the logits `head`'s parts
    /// write.
    pub fn new(
        gpu: &Gpu,
        plan: &StepPlan,
        head: &RowSplitMatrix,
        max_chunk: usize,
        max_ctx: usize,
    ) -> Result<Self, EngineError> {
        let sizes = plan.sizes()?;
        let slots = sizes.layout(max_chunk, max_ctx);
        let ids_len = usize::try_from(sizes.token_id_bytes(max_chunk, max_ctx) / 4)
            .map_err(|e| EngineError::InvalidConfig(format!("token ids: {e}")))?;
        let allocations = slots
            .iter()
            .map(|slot| Ok(DeviceBuffer::<f32>::new(gpu, elems(slot.bytes)?.max(1))?))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let d = plan.decoder();
        let view = |t: TensorId| -> Result<DeviceBuffer<f32>, EngineError> {
            let buffer = d
                .plan
                .buffer_of(t)
                .and_then(|b| allocations.get(b))
                .ok_or_else(|| {
                    EngineError::InvalidConfig(format!(
                        "shape plan: activation {} has no buffer",
                        t.index()
                    ))
                })?;
            Ok(buffer.share()?)
        };
        let mut layers = d
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
                    logits_parts: Vec::new(),
                })
            })
            .collect::<Result<Vec<Activations>, EngineError>>()?;
        if let Some(last) = layers.last_mut() {
            last.logits_parts = head.part_outputs(&last.logits)?;
        }
        Ok(Self {
            ids: DeviceBuffer::new(gpu, ids_len.max(1))?,
            id1: DeviceBuffer::new(gpu, 1)?,
            chosen: DeviceBuffer::new(gpu, 1)?,
            layers,
            host_ids: vec![0; ids_len.max(1)],
            bytes: sizes.bytes(max_chunk, max_ctx),
            _allocations: allocations,
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
