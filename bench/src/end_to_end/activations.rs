//! [`ActivationFigures`]: the activation memory the shape plan allocates for a model shape, beside what the
//! hand-sized scratch buffers it replaced took.

use engine::gpu::{padded_ffn, StepPlan};
use engine::model::ModelConfig;
use engine::EngineError;

/// Activation bytes of one model shape for a context and a largest step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationFigures {
    /// The plan's arena and the token ids: what the engine allocates.
    pub plan_bytes: u64,
    /// Buffers in the plan's arena.
    pub plan_buffers: usize,
    /// What the hand-sized scratch buffers took before the plan placed the activations (tlite at commit 19eafc0,
    /// `engine/src/gpu/buffers.rs::ScratchSizes`, plus the token ids): x, xn, qkv, attn, gate and up for the
    /// largest step, logits and two last-row copies.
    pub scratch_bytes: u64,
}

impl ActivationFigures {
    /// The figures of `config` with a cache of `ctx` positions and steps of at most `chunk` tokens.
    pub fn of(config: &ModelConfig, ctx: usize, chunk: usize) -> Result<Self, EngineError> {
        let plan = StepPlan::new(config, ctx, chunk)?;
        let sizes = plan.sizes()?;
        let s = &config.shape;
        let per_token = 2 * s.hidden + s.qkv_dim() + s.q_dim() + 2 * padded_ffn(s.ffn);
        let floats = chunk * per_token + s.vocab + 2 * s.hidden;
        Ok(Self {
            plan_bytes: sizes.bytes(chunk, ctx),
            plan_buffers: plan.decoder().plan.buffers().len(),
            scratch_bytes: 4 * floats as u64 + 4 * chunk as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::end_to_end::BenchArch;

    /// On real shapes the plan's reuse takes less than the hand-sized buffers, and both grow with the step.
    #[test]
    fn the_plan_takes_less_than_the_scratch_it_replaced() {
        for arch in [
            "llama2-7b",
            "gemma-2b",
            "qwen1.5-4b",
            "chatglm2-6b",
            "smollm2-135m",
        ] {
            let config = arch.parse::<BenchArch>().unwrap().config(Some(2));
            let big = ActivationFigures::of(&config, 4096, 256).unwrap();
            let small = ActivationFigures::of(&config, 4096, 1).unwrap();
            assert!(big.plan_bytes < big.scratch_bytes, "{arch}: {big:?}");
            assert!(small.plan_bytes < big.plan_bytes && small.scratch_bytes < big.scratch_bytes);
        }
    }
}
