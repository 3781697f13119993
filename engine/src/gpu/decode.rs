//! One token through the decoder (`seq == 1`): mat-vec kernels, with as much as possible fused into each launch.
//!
//! Decode is launch-bound on desktop drivers (each kernel launch has a fixed cost that one token's work does not
//! hide), so with M0E4 weights a layer is five launches: QKV mat-vec with the attention RMSNorm (and Qwen2's bias)
//! folded in; attention, which also rotates q and the new key and writes the new K and V into the cache;
//! o-projection with the residual; gate+up with the MLP RMSNorm folded in; down with the residual. f16 weights keep
//! their norms separate, and rope-scaled models (frequency table) keep separate rotary launches. The optional steps
//! of Qwen3 and Gemma 2/3 (`extra_steps.rs`: q/k norms, post norms, logit soft-cap) add launches of their own.

use clkernels::kernels::norm::RowsShape;
use clkernels::kernels::Residual;

use super::buffers::Activations;
use super::extra_steps::{into_residual, qk_norms, softcap_logits};
use super::kernels::Kernels;
use super::step::{LayerKv, LayerParams, Step};
use super::weights::{DeviceLayer, DeviceMatrix, DeviceWeights};
use crate::EngineError;

/// One decoder layer over the step's one token, reading and updating the residual stream `s.x`.
pub(super) fn layer(
    k: &Kernels,
    s: &mut Activations,
    w: &DeviceLayer,
    kv: &LayerKv<'_>,
    step: &Step<'_>,
) -> Result<(), EngineError> {
    // Attention block.
    normed_qkv(k, s, w, step)?;
    if let Some(norms) = &w.qk_norm {
        qk_norms(k, &mut s.qkv, norms, step)?;
    }
    let fresh = step.append.enqueue(k, &mut s.qkv, kv, step)?;
    k.attention.enqueue_with_fresh(
        &s.qkv,
        step.q,
        fresh,
        kv.k_read,
        kv.v_read,
        step.attention,
        step.params.scores,
        &mut s.attn,
    )?;
    let post = w.post_attn_norm.as_ref().map(|n| (n, &mut s.attn_out));
    into_residual(k, &w.wo, &s.attn, post, &mut s.x, step)?;
    // MLP block.
    normed_gate_up(k, s, w, step)?;
    let post = w.post_ffn_norm.as_ref().map(|n| (n, &mut s.mlp_out));
    into_residual(k, &w.down, &s.gate, post, &mut s.x, step)
}

/// `s.qkv = W_qkv · rmsnorm(s.x) (+ bias)`: one launch with M0E4 weights, norm, mat-vec and bias otherwise.
fn normed_qkv(
    k: &Kernels,
    s: &mut Activations,
    w: &DeviceLayer,
    step: &Step<'_>,
) -> Result<(), EngineError> {
    let norm = step.params.norm;
    if let DeviceMatrix::M0e4(m) = &w.qkv {
        let bias = w.qkv_bias.as_ref().map_or(Residual::None, Residual::Add);
        k.matvec
            .enqueue_normed(m, &s.x, &w.attn_norm, norm, &mut s.qkv, bias)?;
        return Ok(());
    }
    k.norm.rms(&s.x, &w.attn_norm, &mut s.xn, step.rows, norm)?;
    k.linear(&w.qkv, &s.xn, 1, &mut s.qkv, Residual::None)?;
    if let Some(bias) = &w.qkv_bias {
        k.elementwise
            .add_bias_rows(&mut s.qkv, bias, 1, step.params.qkv_dim)?;
    }
    Ok(())
}

/// `s.gate = act(W_gate · rmsnorm(s.x)) * (W_up · rmsnorm(s.x))`: one launch with M0E4 weights, four otherwise.
fn normed_gate_up(
    k: &Kernels,
    s: &mut Activations,
    w: &DeviceLayer,
    step: &Step<'_>,
) -> Result<(), EngineError> {
    let (norm, act) = (step.params.norm, step.params.act);
    if let (DeviceMatrix::M0e4(g), DeviceMatrix::M0e4(u)) = (&w.gate, &w.up) {
        k.matvec
            .enqueue_gate_up_normed(g, u, &s.x, &w.ffn_norm, norm, &mut s.gate, act)?;
        return Ok(());
    }
    k.norm
        .rms(&s.x, &w.ffn_norm, &mut s.mlp_xn, step.rows, norm)?;
    k.linear(&w.gate, &s.mlp_xn, 1, &mut s.gate, Residual::None)?;
    k.linear(&w.up, &s.mlp_xn, 1, &mut s.up, Residual::None)?;
    k.elementwise
        .gated_in_place(&mut s.gate, &s.up, step.params.ffn, act)?;
    Ok(())
}

/// The final RMSNorm and the output head over the step's token, into `s.logits` (one launch with an M0E4 head; one
/// per part of a head split across buffers).
pub(super) fn head(
    k: &Kernels,
    s: &mut Activations,
    weights: &DeviceWeights,
    params: &LayerParams,
    rows: RowsShape,
) -> Result<(), EngineError> {
    let head = weights.head();
    if head.is_m0e4() {
        head.for_each_part(&mut s.logits, &mut s.logits_parts, |m, logits| match m {
            DeviceMatrix::M0e4(m) => Ok(k.matvec.enqueue_normed(
                m,
                &s.x,
                &weights.final_norm,
                params.norm,
                logits,
                Residual::None,
            )?),
            // Every part of one tensor has its format; a mix would be an upload bug, not bad input.
            DeviceMatrix::F16(_) => Err(EngineError::Model(
                "the output head mixes M0E4 and f16 parts".into(),
            )),
        })?;
        return softcap_logits(k, &mut s.logits, head.shape().rows, params);
    }
    k.norm.rms(
        &s.x,
        &weights.final_norm,
        &mut s.last_normed,
        rows,
        params.norm,
    )?;
    head.for_each_part(&mut s.logits, &mut s.logits_parts, |m, logits| {
        k.linear(m, &s.last_normed, 1, logits, Residual::None)
    })?;
    softcap_logits(k, &mut s.logits, head.shape().rows, params)
}
