//! The shapes and the memory of the forward pass, from `symshape`'s plan of the decoder as the kernels run it.
//!
//! The plan ([`symshape::models::fused_decoder`]) is derived once at load. It decides which activations share
//! memory, with the reuse proven for every step of 1 to `max_chunk` tokens after 0 to `max_ctx - 1` cached ones,
//! and `buffers.rs` allocates its buffers once ([`super::arena`]). Each step evaluates it for `(seq, past)` on the
//! CPU (a compiled polynomial evaluation, no GPU round trip), and every kernel's dims are read from that evaluation
//! ([`StepDims`]).

use symshape::models::{fused_decoder, FusedDecoder, FusedDecoderDims};
use symshape::{PlanValues, TensorId};

use super::arena::ActivationSizes;
use super::weights::FFN_MULTIPLE;
use crate::model::ModelConfig;
use crate::EngineError;

/// The dims of one step as the plan evaluates them: what every kernel launch of the step is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDims {
    /// New tokens.
    pub seq: usize,
    /// Tokens already in the cache.
    pub past: usize,
    /// Residual stream width.
    pub hidden: usize,
    /// Width of the stacked q|k|v output (its token stride).
    pub qkv_dim: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// MLP width on the device (padded).
    pub ffn: usize,
    /// Logits of one position.
    pub vocab: usize,
}

/// The symbolic plan of one model and a reusable evaluation buffer.
#[derive(Debug)]
pub struct StepPlan {
    decoder: FusedDecoder,
    values: PlanValues,
    /// The cache the plan was derived for, and the one steps are checked against now (at most the first).
    derived_ctx: usize,
    max_ctx: usize,
}

impl StepPlan {
    /// Derives the plan (once per model) for a cache of `max_ctx` positions and steps of at most `max_chunk`
    /// tokens.
    pub fn new(
        config: &ModelConfig,
        max_ctx: usize,
        max_chunk: usize,
    ) -> Result<Self, EngineError> {
        let plan_error = |e| EngineError::InvalidConfig(format!("shape plan: {e}"));
        // The kernels' activations are f32.
        let mut dims = FusedDecoderDims::for_shape(
            &config.shape,
            max_ctx,
            max_chunk,
            FFN_MULTIPLE,
            config.qkv_bias,
            4,
        )
        .map_err(plan_error)?;
        dims.post_norms = config.post_norms;
        let decoder = fused_decoder(&dims).map_err(plan_error)?;
        Ok(Self {
            decoder,
            values: PlanValues::default(),
            derived_ctx: max_ctx,
            max_ctx,
        })
    }

    /// Accepts steps only within a cache of `max_ctx` positions from now on, at most the cache it was derived for:
    /// what was proven for every step of the longer cache holds for the shorter one, so the plan the memory budget
    /// was computed from (before the context was chosen) also runs the steps, and loading derives it once.
    pub fn limit_ctx(&mut self, max_ctx: usize) -> Result<(), EngineError> {
        if max_ctx == 0 || max_ctx > self.derived_ctx {
            return Err(EngineError::InvalidConfig(format!(
                "shape plan: a cache of {max_ctx} positions is outside the {} it was derived for",
                self.derived_ctx
            )));
        }
        self.max_ctx = max_ctx;
        Ok(())
    }

    /// The planned decoder: its graph, its plan and the tensors the engine binds.
    pub fn decoder(&self) -> &FusedDecoder {
        &self.decoder
    }

    /// The sizes the arena and the budget are made of.
    pub fn sizes(&self) -> Result<ActivationSizes, EngineError> {
        let d = &self.decoder;
        let ids = d
            .graph
            .tensor(d.token_ids)
            .map_err(|e| EngineError::InvalidConfig(format!("shape plan: {e}")))?
            .bytes();
        ActivationSizes::of_plan(&d.plan, ids)
    }

    /// Evaluates the plan for a step, refusing one outside the domain (`seq + past ≤ max_ctx` included), and
    /// returns the dims its kernels are given.
    pub fn evaluate(&mut self, seq: usize, past: usize) -> Result<StepDims, EngineError> {
        let bad = |e: String| {
            EngineError::InvalidOption(format!("step of {seq} tokens after {past}: {e}"))
        };
        if seq.saturating_add(past) > self.max_ctx {
            return Err(bad(format!("the cache holds {} positions", self.max_ctx)));
        }
        let (s, p) = (
            i64::try_from(seq).map_err(|e| bad(e.to_string()))?,
            i64::try_from(past).map_err(|e| bad(e.to_string()))?,
        );
        self.decoder
            .evaluate_into(s, p, &mut self.values)
            .map_err(|e| bad(e.to_string()))?;
        let d = &self.decoder;
        let layer = d
            .layers
            .first()
            .ok_or_else(|| bad("model has no layers".into()))?;
        let dim = |t: TensorId, axis: usize| {
            d.plan
                .dim(&self.values, t, axis)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "the plan has no dim {axis} of tensor {}",
                        t.index()
                    ))
                })
        };
        Ok(StepDims {
            seq: dim(d.x, 0)?,
            past,
            hidden: dim(d.x, 1)?,
            qkv_dim: dim(layer.qkv, 1)?,
            heads: dim(layer.attn_heads, 1)?,
            kv_heads: dim(layer.k_cache, 1)?,
            head_dim: dim(layer.k_cache, 2)?,
            ffn: dim(layer.gate, 1)?,
            vocab: dim(d.logits, 1)?,
        })
    }
}

#[cfg(test)]
mod tests;
