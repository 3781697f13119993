//! The shapes of the forward pass, from `symshape`'s decoder plan.
//!
//! The plan is derived once at load; each step evaluates it for `(seq, past)` on the CPU (a compiled polynomial
//! evaluation, no GPU round trip), which also refuses any step outside the domain `seq + past ≤ max_ctx`. The
//! activations are not placed by the plan's arena but by `buffers.rs` ([`super::ScratchSizes`]).

use symshape::models::{llama_decoder, DecoderDims, LlamaDecoder};
use symshape::PlanValues;

use crate::model::ModelConfig;
use crate::EngineError;

/// The symbolic plan of one model and a reusable evaluation buffer.
#[derive(Debug)]
pub struct StepPlan {
    decoder: LlamaDecoder,
    values: PlanValues,
}

impl StepPlan {
    /// Derives the plan (once per model).
    pub fn new(config: &ModelConfig, max_ctx: usize) -> Result<Self, EngineError> {
        let plan_error = |e| EngineError::InvalidConfig(format!("shape plan: {e}"));
        // The kernels' activations are f32.
        let dims = DecoderDims::for_shape(&config.shape, max_ctx, 4).map_err(plan_error)?;
        let decoder = llama_decoder(&dims).map_err(plan_error)?;
        Ok(Self {
            decoder,
            values: PlanValues::default(),
        })
    }

    /// Evaluates the plan for a step and checks the shapes the kernels will be given against it.
    pub fn evaluate(
        &mut self,
        seq: usize,
        past: usize,
        config: &ModelConfig,
    ) -> Result<(), EngineError> {
        let bad = |e: String| {
            EngineError::InvalidOption(format!("step of {seq} tokens after {past}: {e}"))
        };
        self.decoder
            .evaluate_into(seq as i64, past as i64, &mut self.values)
            .map_err(|e| bad(e.to_string()))?;
        let layer = self
            .decoder
            .layers
            .first()
            .ok_or_else(|| bad("model has no layers".into()))?;
        let plan = &self.decoder.plan;
        let q = plan.dims(&self.values, layer.q);
        let k = plan.dims(&self.values, layer.k_new);
        let shape = &config.shape;
        let want_q = vec![seq as i64, shape.heads as i64, shape.head_dim as i64];
        let want_k = vec![seq as i64, shape.kv_heads as i64, shape.head_dim as i64];
        if q.as_ref() != Some(&want_q) || k.as_ref() != Some(&want_k) {
            return Err(bad(format!(
                "plan gives q {q:?} and k {k:?}, kernels expect {want_q:?} and {want_k:?}"
            )));
        }
        Ok(())
    }

    /// Bytes of the plan's activation arena for the last evaluated step (what a single-arena runtime would use).
    pub fn arena_bytes(&self) -> u64 {
        self.values.arena_bytes
    }
}
