//! What every layer of one step is given besides its weights: the model's constants, the shapes the kernels take
//! for this step's `(seq, past)`, and the layer's views of the KV cache. The plan's evaluated dims ([`StepDims`])
//! become clkernels' layouts ([`Step::new`]), and the model's shape ([`ModelShape`]) kvcache's cache shape
//! ([`kv_shape`]), here and nowhere else; symshape converts the model's shape into its planner's dimensions itself
//! (`FusedDecoderDims::for_shape`, called by `plan.rs`).

use clkernels::kernels::attention::{AttentionScores, AttentionShape, KvOperand};
use clkernels::kernels::norm::{RmsNormParams, RowsShape};
use clkernels::kernels::rope::{HeadsLayout, RopeConfig, RopeStyle as KernelRopeStyle, RopeTable};
use clkernels::kernels::GatedActivation;
use clkernels::kv_storage::ClKvStorage;
use kvcache::{KvDtype, KvModelShape, KvPart, KvSequence, KvView};

use super::kv_append::KvAppend;
use super::plan::StepDims;
use crate::model::{Activation, ModelConfig, ModelShape, RopeStyle};
use crate::EngineError;

/// A layer's constants as the kernels take them, derived once at load. Layers differ only where a model mixes
/// local (sliding-window) and global layers: in the window, and in Gemma 3's rotary base; and on SmolLM3's layers
/// without rotary, whose `rope.rotary_dim` is 0 (every rotary kernel then passes q and k through).
#[derive(Debug, Clone, Copy)]
pub(super) struct LayerParams {
    /// RMSNorm epsilon and Gemma's `1 + w`.
    pub norm: RmsNormParams,
    /// The gated MLP's activation.
    pub act: GatedActivation,
    /// Scale (`1 / sqrt(head_dim)`, or Gemma's `query_pre_attn_scalar`), soft-cap and window of the scores.
    pub scores: AttentionScores,
    /// Rotary embedding of q and k.
    pub rope: RopeConfig,
    /// q and k rotate from the model's frequency table (a scaled rotary), not from `rope.theta`.
    pub scaled_rope: bool,
    /// The MLP width on the device (padded, as the plan says).
    pub ffn: usize,
    /// Width of the fused q|k|v output.
    pub qkv_dim: usize,
    /// Soft-cap of the output logits (Gemma 2): the same in every layer's parameters, used by the head.
    pub final_softcap: Option<f32>,
}

impl LayerParams {
    /// The parameters of every layer, in order, with the widths the kernels take from the plan's `dims`.
    pub fn for_layers(c: &ModelConfig, dims: &StepDims) -> Vec<Self> {
        (0..c.shape.layers).map(|i| Self::new(c, i, dims)).collect()
    }

    /// The constants of `layer` of `c`, with the widths the kernels take from the plan's `dims`.
    pub fn new(c: &ModelConfig, layer: usize, dims: &StepDims) -> Self {
        let (theta, scaling) = c.layer_rope(layer);
        let rotary_dim = c.layer_rotary_dim(layer);
        let window = c
            .sliding_window
            .as_ref()
            .filter(|w| w.is_local(layer))
            .map(|w| w.window);
        Self {
            norm: RmsNormParams {
                eps: c.norm_eps,
                weight_offset: if c.norm_plus_one { 1.0 } else { 0.0 },
            },
            act: match c.activation {
                Activation::Silu => GatedActivation::Silu,
                Activation::GeluTanh => GatedActivation::GeluTanh,
            },
            scores: AttentionScores {
                scale: c.attn_scale(),
                softcap: c.attn_softcap,
                window,
            },
            rope: RopeConfig {
                head_dim: dims.head_dim,
                rotary_dim,
                theta,
                style: match c.rope_style {
                    RopeStyle::HalfSplit => KernelRopeStyle::HalfSplit,
                    RopeStyle::Interleaved => KernelRopeStyle::Interleaved,
                },
            },
            // A layer without rotary has no table to read, whatever the model's scaling.
            scaled_rope: scaling.is_some() && rotary_dim > 0,
            ffn: dims.ffn,
            qkv_dim: dims.qkv_dim,
            final_softcap: c.final_softcap,
        }
    }

    /// The frequency table this layer rotates from, if its rotary is scaled.
    pub fn table<'a>(&self, model_table: Option<&'a RopeTable>) -> Option<&'a RopeTable> {
        model_table.filter(|_| self.scaled_rope)
    }
}

/// One step of `seq` new tokens after `past` cached ones, as every layer sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step<'a> {
    /// New tokens.
    pub seq: usize,
    /// Tokens already in the cache.
    pub past: usize,
    /// The residual stream, `[seq][hidden]`.
    pub rows: RowsShape,
    /// The q, k and v parts of the fused QKV output.
    pub q: HeadsLayout,
    pub k: HeadsLayout,
    pub v: HeadsLayout,
    /// Attention over `past + seq` positions.
    pub attention: AttentionShape,
    /// The model's constants.
    pub params: &'a LayerParams,
    /// How q and k are rotated and the new K and V appended to the cache.
    pub append: KvAppend<'a>,
}

impl<'a> Step<'a> {
    /// The kernels' shapes for a step as the plan evaluated it: the one place the plan's dims become clkernels'
    /// layouts.
    pub fn new(
        dims: &StepDims,
        params: &'a LayerParams,
        rope_table: Option<&'a RopeTable>,
    ) -> Self {
        let (seq, past) = (dims.seq, dims.past);
        let (q_dim, kv_dim) = (dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim);
        let q = HeadsLayout {
            offset: 0,
            token_stride: dims.qkv_dim,
            heads: dims.heads,
            seq,
        };
        let k = HeadsLayout {
            offset: q_dim,
            token_stride: dims.qkv_dim,
            heads: dims.kv_heads,
            seq,
        };
        let v = HeadsLayout {
            offset: q_dim + kv_dim,
            ..k
        };
        Self {
            seq,
            past,
            rows: RowsShape {
                rows: seq,
                dim: dims.hidden,
            },
            q,
            k,
            v,
            attention: AttentionShape {
                seq,
                past,
                heads: dims.heads,
                kv_heads: dims.kv_heads,
                head_dim: dims.head_dim,
            },
            params,
            append: KvAppend::for_step(seq, rope_table),
        }
    }
}

/// The per-layer shape of the KV cache of a model of this shape: the one place the model's shape becomes
/// kvcache's.
pub(super) fn kv_shape(shape: &ModelShape, dtype: KvDtype) -> KvModelShape {
    KvModelShape {
        layers: shape.layers,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
        dtype,
    }
}

/// One layer's K and V cache operands for a step: the write views of the new positions, and the read views of
/// every position so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct LayerKv<'a> {
    pub k_write: KvOperand<'a>,
    pub v_write: KvOperand<'a>,
    pub k_read: KvOperand<'a>,
    pub v_read: KvOperand<'a>,
}

impl<'a> LayerKv<'a> {
    /// Operands are sized from the storage's own record: no driver query per layer.
    pub fn new(
        kv: &'a KvSequence<ClKvStorage>,
        layer: usize,
        write: KvView,
        read: KvView,
    ) -> Result<Self, EngineError> {
        let k_buf = kv.buffer(layer, KvPart::Key)?;
        let v_buf = kv.buffer(layer, KvPart::Value)?;
        Ok(Self {
            k_write: k_buf.operand(write),
            v_write: v_buf.operand(write),
            k_read: k_buf.operand(read),
            v_read: v_buf.operand(read),
        })
    }
}
