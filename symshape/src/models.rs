//! Ready-made graphs: a Llama-family decoder over symbols `seq` and `past`, as written ([`llama_decoder`]) and as a
//! fused-kernel runtime runs it ([`fused_decoder`]).

mod fused;

pub use fused::{fused_decoder, FusedDecoder, FusedDecoderDims, FusedLayerTensors};

use crate::domain::Domain;
use crate::error::SymShapeError;
use crate::expr::Expr;
use crate::graph::{DType, Graph, TensorId};
use crate::plan::{MemoryPlan, PlanOptions, PlanValues};
use crate::rules::ReshapeDim;

/// The sizes of a Llama-family decoder as its configuration states them: the one description of a model's shape
/// that tlite's engine and its reference model share. [`DecoderDims::for_shape`] turns it into this module's
/// planner input for a context length and an activation type.
///
/// With the `serde` feature it (de)serialises as a flat object of its eight fields, so a configuration can
/// `#[serde(flatten)]` it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ModelShape {
    /// Residual stream width (Hugging Face `hidden_size`, llama2.c `dim`).
    pub hidden: usize,
    /// MLP inner width (`intermediate_size`, llama2.c `hidden_dim`).
    pub ffn: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Width of one head (usually `hidden / heads`; Gemma's differs).
    pub head_dim: usize,
    /// Vocabulary size: rows of the embedding and of the output head.
    pub vocab: usize,
    /// Longest context the model supports (`max_position_embeddings`, llama2.c `seq_len`).
    pub max_ctx: usize,
}

impl ModelShape {
    /// `heads * head_dim`: rows of the q projection, columns of the o projection.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// `kv_heads * head_dim`: rows of the k and v projections.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// `q_dim + 2 kv_dim`: rows of the q, k and v projections stacked into one.
    pub fn qkv_dim(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }
}

/// Dimensions of a Llama-family decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderDims {
    /// Decoder layers.
    pub layers: usize,
    /// Model width.
    pub hidden: i64,
    /// Query heads.
    pub heads: i64,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: i64,
    /// Per-head width.
    pub head_dim: i64,
    /// Feed-forward width.
    pub ffn: i64,
    /// Vocabulary size.
    pub vocab: i64,
    /// Longest context (`seq + past ≤ max_ctx`).
    pub max_ctx: i64,
    /// Bytes per activation element: 2 (f16) or 4 (f32). Attention scores are always f32.
    pub dtype_bytes: i64,
}

impl DecoderDims {
    /// The planner's dimensions of `shape` for a context of `max_ctx` tokens (what the runtime allocates, which
    /// may be less than `shape.max_ctx`) and activations of `dtype_bytes` bytes. Fails, naming the field, when a
    /// size does not fit in `i64`; [`llama_decoder`] checks the rest.
    pub fn for_shape(
        shape: &ModelShape,
        max_ctx: usize,
        dtype_bytes: i64,
    ) -> Result<Self, SymShapeError> {
        let i = |name: &str, v: usize| {
            i64::try_from(v).map_err(|_| {
                SymShapeError::InvalidDims(format!("{name} = {v} does not fit in i64"))
            })
        };
        Ok(DecoderDims {
            layers: shape.layers,
            hidden: i("hidden", shape.hidden)?,
            heads: i("heads", shape.heads)?,
            kv_heads: i("kv_heads", shape.kv_heads)?,
            head_dim: i("head_dim", shape.head_dim)?,
            ffn: i("ffn", shape.ffn)?,
            vocab: i("vocab", shape.vocab)?,
            max_ctx: i("max_ctx", max_ctx)?,
            dtype_bytes,
        })
    }
}

/// Tensors of one decoder layer that a runtime needs to address.
#[derive(Debug, Clone, Copy)]
pub struct LayerTensors {
    /// Residual stream entering the layer `[seq, hidden]`.
    pub input: TensorId,
    /// Queries after rotary `[seq, heads, head_dim]`.
    pub q: TensorId,
    /// New keys after rotary `[seq, kv_heads, head_dim]`, written into the cache at row `past`.
    pub k_new: TensorId,
    /// New values `[seq, kv_heads, head_dim]`.
    pub v_new: TensorId,
    /// External key cache `[max_ctx, kv_heads, head_dim]` of this layer.
    pub k_cache: TensorId,
    /// External value cache of this layer.
    pub v_cache: TensorId,
    /// Attention scores `[heads, seq, past + seq]` (f32).
    pub scores: TensorId,
    /// Residual stream leaving the layer.
    pub output: TensorId,
}

/// A planned Llama decoder: the graph, its memory plan and the tensors of interest.
#[derive(Debug, Clone)]
pub struct LlamaDecoder {
    /// The model dims it was built from.
    pub dims: DecoderDims,
    /// The op list with symbolic shapes.
    pub graph: Graph,
    /// The memory plan with its compiled evaluator.
    pub plan: MemoryPlan,
    /// Token ids `[seq]` (external, i32).
    pub token_ids: TensorId,
    /// Per-layer tensors.
    pub layers: Vec<LayerTensors>,
    /// Logits of the last position `[1, vocab]`.
    pub logits: TensorId,
}

fn check(dims: &DecoderDims) -> Result<DType, SymShapeError> {
    check_decoder(
        &[
            ("hidden", dims.hidden),
            ("heads", dims.heads),
            ("kv_heads", dims.kv_heads),
            ("head_dim", dims.head_dim),
            ("ffn", dims.ffn),
            ("vocab", dims.vocab),
            ("max_ctx", dims.max_ctx),
        ],
        dims.layers,
        (dims.heads, dims.kv_heads),
        dims.dtype_bytes,
    )
}

/// The checks every decoder builder shares: each size in `positive` at least 1, at least one layer, query heads a
/// multiple of key/value heads, and 2- or 4-byte activations (whose dtype it returns).
fn check_decoder(
    positive: &[(&str, i64)],
    layers: usize,
    (heads, kv_heads): (i64, i64),
    dtype_bytes: i64,
) -> Result<DType, SymShapeError> {
    for &(name, v) in positive {
        if v < 1 {
            return Err(SymShapeError::InvalidDims(format!(
                "{name} = {v} must be >= 1"
            )));
        }
    }
    if layers == 0 {
        return Err(SymShapeError::InvalidDims("layers must be >= 1".into()));
    }
    if heads % kv_heads != 0 {
        return Err(SymShapeError::InvalidDims(format!(
            "heads {heads} is not a multiple of kv_heads {kv_heads}"
        )));
    }
    match dtype_bytes {
        2 => Ok(DType::F16),
        4 => Ok(DType::F32),
        b => Err(SymShapeError::InvalidDims(format!(
            "dtype_bytes {b} must be 2 or 4"
        ))),
    }
}

/// Builds and plans a Llama-family decoder for one forward step of `seq` new tokens after
/// `past` cached ones, with `1 ≤ seq ≤ max_ctx`, `0 ≤ past ≤ max_ctx - 1`, `seq + past ≤ max_ctx`.
///
/// Weights, the rotary table and the per-layer KV caches are external. New keys and values are
/// written into the caches in place (`write_into`) and attention reads the first `past + seq`
/// rows through a view (`narrow`), so no KV copy is planned. All layers are in the graph, but
/// their activations reuse the same few buffers, so the plan's buffer count does not grow with
/// `layers`. Only the last position's logits are computed.
pub fn llama_decoder(dims: &DecoderDims) -> Result<LlamaDecoder, SymShapeError> {
    let act = check(dims)?;
    let mut domain = Domain::new();
    let seq = domain.symbol("seq", 1, dims.max_ctx)?;
    let past = domain.symbol("past", 0, dims.max_ctx - 1)?;
    domain.constrain_sum_at_most(&["seq", "past"], dims.max_ctx)?;
    let c = Expr::constant;
    let (hidden, hd, heads, kvh) = (
        c(dims.hidden),
        c(dims.head_dim),
        c(dims.heads),
        c(dims.kv_heads),
    );

    let mut g = Graph::new(domain);
    let token_ids = g.input("token_ids", std::slice::from_ref(&seq), DType::I32)?;
    let embed = g.input("embed_tokens", &[c(dims.vocab), hidden.clone()], act)?;
    let rope = g.input("rope_table", &[c(dims.max_ctx), hd.clone()], act)?;
    let mut x = g.embedding("embed", embed, token_ids)?;
    let mut layers = Vec::with_capacity(dims.layers);
    for l in 0..dims.layers {
        let n = |s: &str| format!("l{l}.{s}");
        let w = |g: &mut Graph, s: &str, d: &[Expr]| g.input(&n(s), d, act);
        let attn_norm = w(&mut g, "attn_norm", std::slice::from_ref(&hidden))?;
        let wq = w(&mut g, "wq", &[&heads * &hd, hidden.clone()])?;
        let wk = w(&mut g, "wk", &[&kvh * &hd, hidden.clone()])?;
        let wv = w(&mut g, "wv", &[&kvh * &hd, hidden.clone()])?;
        let wo = w(&mut g, "wo", &[hidden.clone(), &heads * &hd])?;
        let ffn_norm = w(&mut g, "ffn_norm", std::slice::from_ref(&hidden))?;
        let w_gate = w(&mut g, "w_gate", &[c(dims.ffn), hidden.clone()])?;
        let w_up = w(&mut g, "w_up", &[c(dims.ffn), hidden.clone()])?;
        let w_down = w(&mut g, "w_down", &[hidden.clone(), c(dims.ffn)])?;
        let cache_dims = [c(dims.max_ctx), kvh.clone(), hd.clone()];
        let k_cache = w(&mut g, "k_cache", &cache_dims)?;
        let v_cache = w(&mut g, "v_cache", &cache_dims)?;

        let input = x;
        let h = g.rms_norm(&n("attn_norm_out"), x, attn_norm)?;
        let heads3 = |e: &Expr| {
            [
                ReshapeDim::Size(seq.clone()),
                ReshapeDim::Size(e.clone()),
                ReshapeDim::Size(hd.clone()),
            ]
        };
        let q = g.linear(&n("q_proj"), h, wq)?;
        let q = g.reshape(&n("q_heads"), q, &heads3(&heads))?;
        let q = g.rotary(&n("q_rot"), q, rope, &past)?;
        let k = g.linear(&n("k_proj"), h, wk)?;
        let k = g.reshape(&n("k_heads"), k, &heads3(&kvh))?;
        let k_new = g.rotary(&n("k_rot"), k, rope, &past)?;
        let v = g.linear(&n("v_proj"), h, wv)?;
        let v_new = g.reshape(&n("v_heads"), v, &heads3(&kvh))?;
        let kc = g.write_into(&n("k_store"), k_cache, k_new, 0, &past)?;
        let vc = g.write_into(&n("v_store"), v_cache, v_new, 0, &past)?;
        let kv_len = &past + &seq;
        let keys = g.narrow(&n("keys"), kc, 0, &c(0), &kv_len)?;
        let values = g.narrow(&n("values"), vc, 0, &c(0), &kv_len)?;
        let scores = g.attention_scores(&n("scores"), q, keys, DType::F32)?;
        let probs = g.softmax(&n("probs"), scores, -1)?;
        let ctx = g.attention_values(&n("attn"), probs, values)?;
        let ctx = g.reshape(
            &n("attn_flat"),
            ctx,
            &[ReshapeDim::Size(seq.clone()), ReshapeDim::Infer],
        )?;
        let o = g.linear(&n("o_proj"), ctx, wo)?;
        let x1 = g.add(&n("resid_attn"), input, o)?;
        let h2 = g.rms_norm(&n("ffn_norm_out"), x1, ffn_norm)?;
        let gate = g.linear(&n("gate_proj"), h2, w_gate)?;
        let up = g.linear(&n("up_proj"), h2, w_up)?;
        let act_gate = g.unary("silu", &n("silu"), gate)?;
        let prod = g.mul(&n("gated"), act_gate, up)?;
        let down = g.linear(&n("down_proj"), prod, w_down)?;
        x = g.add(&n("resid_ffn"), x1, down)?;
        layers.push(LayerTensors {
            input,
            q,
            k_new,
            v_new,
            k_cache,
            v_cache,
            scores,
            output: x,
        });
    }
    let final_norm = g.input("final_norm", std::slice::from_ref(&hidden), act)?;
    let lm_head = g.input("lm_head", &[c(dims.vocab), hidden.clone()], act)?;
    let last = g.slice("last_position", x, 0, &(&seq - 1), &c(1))?;
    let hn = g.rms_norm("final_norm_out", last, final_norm)?;
    let logits = g.linear("logits", hn, lm_head)?;
    g.mark_output(logits)?;
    let plan = g.plan(PlanOptions::default())?;
    Ok(LlamaDecoder {
        dims: *dims,
        graph: g,
        plan,
        token_ids,
        layers,
        logits,
    })
}

impl LlamaDecoder {
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

    /// The largest arena (with padding) over the domain, and the `(seq, past)` where it occurs.
    ///
    /// When every buffer size is proven non-decreasing in `seq` and `past` (non-negative
    /// coefficients after shifting to the lower bounds, checked here), the maximum lies on the
    /// line `seq + past = max_ctx`, which is scanned; otherwise the whole domain is scanned.
    pub fn arena_bytes_at_max_context(&self) -> Result<(u64, i64, i64), SymShapeError> {
        let d = self.plan.domain();
        let monotone = self
            .plan
            .buffers()
            .iter()
            .all(|b| d.coefficients_nonnegative(&b.size));
        let mut v = PlanValues::default();
        let mut best = (0u64, 0i64, 0i64);
        let max = self.dims.max_ctx;
        for seq in 1..=max {
            let pasts = if monotone {
                (max - seq)..=(max - seq)
            } else {
                0..=(max - seq)
            };
            for past in pasts {
                self.evaluate_into(seq, past, &mut v)?;
                if v.arena_bytes > best.0 {
                    best = (v.arena_bytes, seq, past);
                }
            }
        }
        Ok(best)
    }
}
