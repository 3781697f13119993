//! A Llama-family decoder as a fused-kernel runtime runs it, for planning the memory that runtime allocates.
//!
//! [`super::llama_decoder`] records the textbook dataflow (separate q, k and v, materialised scores). A runtime
//! with fused kernels holds different activations: one stacked q|k|v output that is rotated and biased in place,
//! attention that reads q from it and never materialises scores, projections that add straight into the residual
//! stream, a gate buffer the activation is applied to in place, and an MLP width padded for its kernels. Planning
//! that graph gives the buffers such a runtime really needs, with reuse proven for every step.
//!
//! The domain is the box `1 ≤ seq ≤ max_chunk`, `0 ≤ past ≤ max_ctx - 1`, with no `seq + past` constraint: no
//! activation depends on `past` (the KV cache is external and attention's output is `[seq, ..]`), and without the
//! constraint no proof depends on the context, so one plan serves every context a runtime may choose (a memory
//! budget tries many). The runtime refuses `seq + past > max_ctx` itself.

use crate::domain::Domain;
use crate::error::SymShapeError;
use crate::expr::Expr;
use crate::graph::{DType, Graph, TensorId};
use crate::plan::{MemoryPlan, PlanOptions, PlanValues};
use crate::rules::ReshapeDim;

use super::ModelShape;

/// Dimensions of a decoder as a fused runtime runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FusedDecoderDims {
    /// Decoder layers.
    pub layers: usize,
    /// Model width.
    pub hidden: i64,
    /// Query heads.
    pub heads: i64,
    /// Key/value heads.
    pub kv_heads: i64,
    /// Per-head width.
    pub head_dim: i64,
    /// Feed-forward width as the runtime's kernels take it (the model's, padded to their tile).
    pub ffn: i64,
    /// Vocabulary size.
    pub vocab: i64,
    /// Positions the KV cache holds (`past ≤ max_ctx - 1`).
    pub max_ctx: i64,
    /// Most tokens one step runs (`seq ≤ max_chunk`).
    pub max_chunk: i64,
    /// Whether the stacked q|k|v projection adds a bias (in place).
    pub qkv_bias: bool,
    /// Bytes per activation element: 2 (f16) or 4 (f32).
    pub dtype_bytes: i64,
    /// Whether each block's output is normed before it joins the residual stream (Gemma 2 and 3's post norms):
    /// then the o and down projections write buffers of their own ([`FusedLayerTensors::attn_out`],
    /// [`FusedLayerTensors::mlp_out`]) instead of adding into it.
    pub post_norms: bool,
}

impl FusedDecoderDims {
    /// The dimensions of `shape` for a cache of `max_ctx` positions, steps of at most `max_chunk` tokens, an MLP
    /// padded to a multiple of `ffn_multiple` and activations of `dtype_bytes` bytes. Fails, naming the field,
    /// when a size does not fit in `i64` or a count is zero; [`fused_decoder`] checks the rest.
    pub fn for_shape(
        shape: &ModelShape,
        max_ctx: usize,
        max_chunk: usize,
        ffn_multiple: usize,
        qkv_bias: bool,
        dtype_bytes: i64,
    ) -> Result<Self, SymShapeError> {
        let i = |name: &str, v: usize| {
            i64::try_from(v).map_err(|_| {
                SymShapeError::InvalidDims(format!("{name} = {v} does not fit in i64"))
            })
        };
        if ffn_multiple == 0 {
            return Err(SymShapeError::InvalidDims(
                "ffn_multiple must be >= 1".into(),
            ));
        }
        let ffn = shape
            .ffn
            .checked_next_multiple_of(ffn_multiple)
            .ok_or_else(|| {
                SymShapeError::InvalidDims(format!(
                    "ffn = {} padded to a multiple of {ffn_multiple} overflows",
                    shape.ffn
                ))
            })?;
        Ok(FusedDecoderDims {
            layers: shape.layers,
            hidden: i("hidden", shape.hidden)?,
            heads: i("heads", shape.heads)?,
            kv_heads: i("kv_heads", shape.kv_heads)?,
            head_dim: i("head_dim", shape.head_dim)?,
            ffn: i("ffn", ffn)?,
            vocab: i("vocab", shape.vocab)?,
            max_ctx: i("max_ctx", max_ctx)?,
            max_chunk: i("max_chunk", max_chunk)?,
            qkv_bias,
            dtype_bytes,
            post_norms: false,
        })
    }

    fn check(&self) -> Result<DType, SymShapeError> {
        super::check_decoder(
            &[
                ("hidden", self.hidden),
                ("heads", self.heads),
                ("kv_heads", self.kv_heads),
                ("head_dim", self.head_dim),
                ("ffn", self.ffn),
                ("vocab", self.vocab),
                ("max_ctx", self.max_ctx),
                ("max_chunk", self.max_chunk),
            ],
            self.layers,
            (self.heads, self.kv_heads),
            self.dtype_bytes,
        )
    }
}

/// The activations of one layer a fused runtime addresses (the residual stream is [`FusedDecoder::x`]).
#[derive(Debug, Clone, Copy)]
pub struct FusedLayerTensors {
    /// The attention RMSNorm's output `[seq, hidden]`.
    pub xn: TensorId,
    /// The stacked q|k|v projection `[seq, (heads + 2 kv_heads) · head_dim]`, rotated (and biased) in place.
    pub qkv: TensorId,
    /// The attention output by head `[seq, heads, head_dim]`.
    pub attn_heads: TensorId,
    /// The attention output as the o-projection reads it `[seq, heads · head_dim]` (a view of `attn_heads`).
    pub attn: TensorId,
    /// The MLP RMSNorm's output `[seq, hidden]`.
    pub mlp_xn: TensorId,
    /// The gate projection `[seq, ffn]`, gated in place by `up`.
    pub gate: TensorId,
    /// The up projection `[seq, ffn]`.
    pub up: TensorId,
    /// The layer's key cache `[max_ctx, kv_heads, head_dim]` (external).
    pub k_cache: TensorId,
    /// With post norms: the o-projection's output `[seq, hidden]`, normed into the residual stream.
    pub attn_out: Option<TensorId>,
    /// With post norms: the down projection's output `[seq, hidden]`, normed into the residual stream.
    pub mlp_out: Option<TensorId>,
}

/// A planned fused decoder: the graph, its memory plan and the tensors a runtime binds.
#[derive(Debug, Clone)]
pub struct FusedDecoder {
    /// The dims it was built from.
    pub dims: FusedDecoderDims,
    /// The op list with symbolic shapes.
    pub graph: Graph,
    /// The memory plan with its compiled evaluator.
    pub plan: MemoryPlan,
    /// Token ids `[seq]` (external, i32).
    pub token_ids: TensorId,
    /// The residual stream `[seq, hidden]`: the embedding's output, updated in place by every layer.
    pub x: TensorId,
    /// Per-layer activations.
    pub layers: Vec<FusedLayerTensors>,
    /// The last position's residual `[1, hidden]` (a copy).
    pub last: TensorId,
    /// Its final RMSNorm `[1, hidden]`.
    pub last_normed: TensorId,
    /// Logits of the last position `[1, vocab]`.
    pub logits: TensorId,
}

/// Builds and plans the decoder a fused runtime runs for one step of `seq` tokens after `past` (see the module
/// docs for the domain). The residual stream stays live to the end of the graph, because a one-token step norms it
/// straight into `last_normed`; everything else is reused as soon as it is dead.
pub fn fused_decoder(dims: &FusedDecoderDims) -> Result<FusedDecoder, SymShapeError> {
    let act = dims.check()?;
    let mut domain = Domain::new();
    let seq = domain.symbol("seq", 1, dims.max_chunk)?;
    domain.symbol("past", 0, dims.max_ctx - 1)?;
    let c = Expr::constant;
    let (hidden, hd, kvh) = (c(dims.hidden), c(dims.head_dim), c(dims.kv_heads));
    let qkv_dim = c((dims.heads + 2 * dims.kv_heads) * dims.head_dim);

    let mut g = Graph::new(domain);
    let token_ids = g.input("token_ids", std::slice::from_ref(&seq), DType::I32)?;
    let embed = g.input("embed_tokens", &[c(dims.vocab), hidden.clone()], act)?;
    let x0 = g.embedding("embed", embed, token_ids)?;
    let mut x = x0;
    let mut layers = Vec::with_capacity(dims.layers);
    for l in 0..dims.layers {
        let n = |s: &str| format!("l{l}.{s}");
        let w = |g: &mut Graph, s: &str, d: &[Expr]| g.input(&n(s), d, act);
        let attn_norm = w(&mut g, "attn_norm", std::slice::from_ref(&hidden))?;
        let w_qkv = w(&mut g, "w_qkv", &[qkv_dim.clone(), hidden.clone()])?;
        let wo = w(
            &mut g,
            "wo",
            &[hidden.clone(), c(dims.heads * dims.head_dim)],
        )?;
        let ffn_norm = w(&mut g, "ffn_norm", std::slice::from_ref(&hidden))?;
        let w_gate = w(&mut g, "w_gate", &[c(dims.ffn), hidden.clone()])?;
        let w_up = w(&mut g, "w_up", &[c(dims.ffn), hidden.clone()])?;
        let w_down = w(&mut g, "w_down", &[hidden.clone(), c(dims.ffn)])?;
        let cache_dims = [c(dims.max_ctx), kvh.clone(), hd.clone()];
        let k_cache = w(&mut g, "k_cache", &cache_dims)?;
        let v_cache = w(&mut g, "v_cache", &cache_dims)?;

        let xn = g.rms_norm(&n("attn_norm_out"), x, attn_norm)?;
        let mut qkv = g.linear(&n("qkv_proj"), xn, w_qkv)?;
        if dims.qkv_bias {
            let bias = w(&mut g, "qkv_bias", std::slice::from_ref(&qkv_dim))?;
            qkv = g.update_in_place("add_bias", &n("qkv_bias_add"), qkv, &[bias])?;
        }
        // Rotates q and the new k in place and writes the new k and v into the (external) caches.
        let qkv_rot =
            g.update_in_place("rotary_kv_append", &n("qkv_rot"), qkv, &[k_cache, v_cache])?;
        let attn_heads =
            g.attention_packed_qkv(&n("attn"), qkv_rot, k_cache, v_cache, dims.heads)?;
        let attn = g.reshape(
            &n("attn_flat"),
            attn_heads,
            &[ReshapeDim::Size(seq.clone()), ReshapeDim::Infer],
        )?;
        let mut attn_out = None;
        x = if dims.post_norms {
            let post = w(&mut g, "post_attn_norm", std::slice::from_ref(&hidden))?;
            let out = g.linear(&n("o_proj"), attn, wo)?;
            attn_out = Some(out);
            g.update_in_place("rms_norm_add", &n("post_attn_add"), x, &[out, post])?
        } else {
            g.linear_into(&n("o_proj"), attn, wo, x)?
        };
        let mlp_xn = g.rms_norm(&n("ffn_norm_out"), x, ffn_norm)?;
        let gate = g.linear(&n("gate_proj"), mlp_xn, w_gate)?;
        let up = g.linear(&n("up_proj"), mlp_xn, w_up)?;
        let gated = g.update_in_place("gated", &n("gated"), gate, &[up])?;
        let mut mlp_out = None;
        x = if dims.post_norms {
            let post = w(&mut g, "post_ffn_norm", std::slice::from_ref(&hidden))?;
            let out = g.linear(&n("down_proj"), gated, w_down)?;
            mlp_out = Some(out);
            g.update_in_place("rms_norm_add", &n("post_ffn_add"), x, &[out, post])?
        } else {
            g.linear_into(&n("down_proj"), gated, w_down, x)?
        };
        layers.push(FusedLayerTensors {
            xn,
            qkv,
            attn_heads,
            attn,
            mlp_xn,
            gate,
            up,
            k_cache,
            attn_out,
            mlp_out,
        });
    }
    let final_norm = g.input("final_norm", std::slice::from_ref(&hidden), act)?;
    let lm_head = g.input("lm_head", &[c(dims.vocab), hidden.clone()], act)?;
    let last = g.slice("last_position", x, 0, &(&seq - 1), &c(1))?;
    let last_normed = g.rms_norm("final_norm_out", last, final_norm)?;
    let logits = g.linear("logits", last_normed, lm_head)?;
    g.mark_output(x)?;
    g.mark_output(logits)?;
    let plan = g.plan(PlanOptions::default())?;
    Ok(FusedDecoder {
        dims: *dims,
        graph: g,
        plan,
        token_ids,
        x: x0,
        layers,
        last,
        last_normed,
        logits,
    })
}

impl FusedDecoder {
    /// Symbol values in the plan's slot order for a step of `seq` tokens after `past`.
    pub fn slots(&self, seq: i64, past: i64) -> [i64; 2] {
        // Slots are sorted by name: past, seq.
        [past, seq]
    }

    /// Evaluates the plan for `(seq, past)` into `out` (the per-step call).
    pub fn evaluate_into(
        &self,
        seq: i64,
        past: i64,
        out: &mut PlanValues,
    ) -> Result<(), SymShapeError> {
        self.plan.evaluate_into(&self.slots(seq, past), out)
    }
}
