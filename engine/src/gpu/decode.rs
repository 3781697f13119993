//! One token through the decoder (`seq == 1`): mat-vec kernels, with as much as possible fused into each launch.
//!
//! Decode is launch-bound on desktop drivers (each kernel launch has a fixed cost that one token's work does not
//! hide), so with M0E4 weights a layer is five launches: QKV mat-vec with the attention RMSNorm (and Qwen2's bias)
//! folded in; attention, which also rotates q and the new key and writes the new K and V into the cache;
//! o-projection with the residual; gate+up with the MLP RMSNorm folded in; down with the residual. f16 weights keep
//! their norms separate, and rope-scaled models (frequency table) keep separate rotary launches.

use clkernels::kernels::norm::RowsShape;
use clkernels::kernels::Residual;

use super::buffers::Activations;
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
    let fresh = step.append.enqueue(k, &mut s.qkv, kv, step)?;
    k.attention.enqueue_with_fresh(
        &s.qkv,
        step.q,
        fresh,
        kv.k_read,
        kv.v_read,
        step.attention,
        step.params.attn_scale,
        &mut s.attn,
    )?;
    k.linear(&w.wo, &s.attn, 1, &mut s.x, Residual::Accumulate)?;
    // MLP block.
    normed_gate_up(k, s, w, step)?;
    k.linear(&w.down, &s.gate, 1, &mut s.x, Residual::Accumulate)
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

/// The final RMSNorm and the output head over the step's token, into `s.logits` (one launch with an M0E4 head).
pub(super) fn head(
    k: &Kernels,
    s: &mut Activations,
    weights: &DeviceWeights,
    params: &LayerParams,
    rows: RowsShape,
) -> Result<(), EngineError> {
    if let DeviceMatrix::M0e4(head) = weights.head() {
        k.matvec.enqueue_normed(
            head,
            &s.x,
            &weights.final_norm,
            params.norm,
            &mut s.logits,
            Residual::None,
        )?;
        return Ok(());
    }
    k.norm.rms(
        &s.x,
        &weights.final_norm,
        &mut s.last_normed,
        rows,
        params.norm,
    )?;
    k.linear(
        weights.head(),
        &s.last_normed,
        1,
        &mut s.logits,
        Residual::None,
    )
}
