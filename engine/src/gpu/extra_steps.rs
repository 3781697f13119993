//! The steps some architectures add to the Llama layer, each named where the layer functions call it
//! (`prefill::layer`, `decode::layer`, the heads), as `fixtures/src/reference_model.rs` names them.

use clkernels::kernels::Residual;
use clkernels::runtime::DeviceBuffer;

use super::kernels::Kernels;
use super::step::{LayerParams, Step};
use super::weights::{DeviceMatrix, QkNorms};
use crate::EngineError;

/// Qwen3 and Gemma 3: RMSNorm of every q and k head of the fused QKV output, in place, before rotary.
pub(super) fn qk_norms(
    k: &Kernels,
    qkv: &mut DeviceBuffer<f32>,
    norms: &QkNorms,
    step: &Step<'_>,
) -> Result<(), EngineError> {
    let (head_dim, norm) = (step.attention.head_dim, step.params.norm);
    k.norm
        .rms_heads_in_place(qkv, step.q, head_dim, &norms.q, norm)?;
    k.norm
        .rms_heads_in_place(qkv, step.k, head_dim, &norms.k, norm)?;
    Ok(())
}

/// A block's output projection into the residual stream: `x += W·input`, added inside the mat-vec or mat-mat;
/// with a post norm (Gemma 2 and 3) `x += rmsnorm(W·input)`, the product going through `out` first (the buffer
/// the shape plan gives that projection's output).
pub(super) fn into_residual(
    k: &Kernels,
    w: &DeviceMatrix,
    input: &DeviceBuffer<f32>,
    post_norm: Option<(&DeviceBuffer<f32>, &mut Option<DeviceBuffer<f32>>)>,
    x: &mut DeviceBuffer<f32>,
    step: &Step<'_>,
) -> Result<(), EngineError> {
    let Some((post, out)) = post_norm else {
        return k.linear(w, input, step.seq, x, Residual::Accumulate);
    };
    let Some(tmp) = out.as_mut() else {
        return Err(EngineError::Model(
            "a post norm without its buffer in the shape plan".into(),
        ));
    };
    k.linear(w, input, step.seq, tmp, Residual::None)?;
    k.norm.rms_add(tmp, post, x, step.rows, step.params.norm)?;
    Ok(())
}

/// Gemma 2: the output logits soft-capped, `cap * tanh(logit / cap)`.
pub(super) fn softcap_logits(
    k: &Kernels,
    logits: &mut DeviceBuffer<f32>,
    vocab: usize,
    params: &LayerParams,
) -> Result<(), EngineError> {
    if let Some(cap) = params.final_softcap {
        k.elementwise.softcap_in_place(logits, vocab, cap)?;
    }
    Ok(())
}
