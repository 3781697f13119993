//! The activation buffers of the forward pass: sized once for the largest step, reused by every step and layer.
//!
//! The kernels take whole buffers, so the activations live in a few scratch buffers sized for the largest step
//! (`max_chunk` tokens) rather than in the shape plan's single arena; [`ScratchSizes`] is the one place that sizes
//! them.

use clkernels::runtime::{DeviceBuffer, Gpu};

use crate::model::ModelConfig;
use crate::EngineError;

/// Element counts of the scratch buffers for steps of up to `max_chunk` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScratchSizes {
    /// Residual stream and normed copy, `[max_chunk][hidden]`.
    pub hidden: usize,
    /// Fused q|k|v output, `[max_chunk][q_dim + 2 kv_dim]`.
    pub qkv: usize,
    /// Attention output, `[max_chunk][q_dim]`.
    pub attn: usize,
    /// Gate and up outputs, `[max_chunk][padded ffn]` each.
    pub ffn: usize,
    /// Logits of one position.
    pub vocab: usize,
}

impl ScratchSizes {
    /// Sizes for `config` and steps of at most `max_chunk` tokens.
    pub fn new(config: &ModelConfig, max_chunk: usize) -> Self {
        let shape = &config.shape;
        Self {
            hidden: max_chunk * shape.hidden,
            qkv: max_chunk * shape.qkv_dim(),
            attn: max_chunk * shape.q_dim(),
            ffn: max_chunk * super::weights::padded_ffn(shape.ffn),
            vocab: shape.vocab,
        }
    }

    /// Bytes of all scratch buffers (f32), including the last-row copies.
    pub fn bytes(&self, hidden: usize) -> usize {
        4 * (2 * self.hidden + self.qkv + self.attn + 2 * self.ffn + self.vocab + 2 * hidden)
    }
}

/// Activations of the largest step, reused by every step and layer.
#[derive(Debug)]
pub(super) struct Scratch {
    /// Token ids of a prefill chunk.
    pub ids: DeviceBuffer<u32>,
    /// Token id of a decode step chosen on the host.
    pub id1: DeviceBuffer<u32>,
    /// The arg-max the device chose last (also the next decode step's input when greedy).
    pub chosen: DeviceBuffer<u32>,
    /// Residual stream `[seq][hidden]`.
    pub x: DeviceBuffer<f32>,
    /// Normed residual `[seq][hidden]`.
    pub xn: DeviceBuffer<f32>,
    /// Fused q|k|v `[seq][q_dim + 2 kv_dim]`.
    pub qkv: DeviceBuffer<f32>,
    /// Attention output `[seq][q_dim]`.
    pub attn: DeviceBuffer<f32>,
    /// Gate (then gated activation) `[seq][ffn]`.
    pub gate: DeviceBuffer<f32>,
    /// Up `[seq][ffn]`.
    pub up: DeviceBuffer<f32>,
    /// The last position's residual and its norm, `[hidden]` each.
    pub last: DeviceBuffer<f32>,
    pub last_normed: DeviceBuffer<f32>,
    /// Logits of the last position.
    pub logits: DeviceBuffer<f32>,
    /// Host staging for `ids`.
    pub host_ids: Vec<u32>,
}

impl Scratch {
    pub fn new(
        gpu: &Gpu,
        sizes: &ScratchSizes,
        max_chunk: usize,
        hidden: usize,
    ) -> Result<Self, EngineError> {
        let f = |n: usize| DeviceBuffer::<f32>::new(gpu, n.max(1));
        Ok(Self {
            ids: DeviceBuffer::new(gpu, max_chunk)?,
            id1: DeviceBuffer::new(gpu, 1)?,
            chosen: DeviceBuffer::new(gpu, 1)?,
            x: f(sizes.hidden)?,
            xn: f(sizes.hidden)?,
            qkv: f(sizes.qkv)?,
            attn: f(sizes.attn)?,
            gate: f(sizes.ffn)?,
            up: f(sizes.ffn)?,
            last: f(hidden)?,
            last_normed: f(hidden)?,
            logits: f(sizes.vocab)?,
            host_ids: vec![0; max_chunk],
        })
    }
}
