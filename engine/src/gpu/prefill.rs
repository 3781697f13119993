//! A chunk of prompt tokens through the decoder (`seq > 1`): mat-mat kernels, one launch per operation, as
//! `fixtures/src/reference_model.rs` writes them, except that the QKV projection is one stacked matrix and, with a
//! plain theta, the rotary embedding and the K/V append share a launch ([`super::kv_append::KvAppend`]).

use clkernels::kernels::elementwise::RowCopy;
use clkernels::kernels::norm::RowsShape;
use clkernels::kernels::Residual;

use super::buffers::Activations;
use super::extra_steps::{into_residual, qk_norms, softcap_logits};
use super::kernels::Kernels;
use super::step::{LayerKv, LayerParams, Step};
use super::weights::{DeviceLayer, DeviceWeights};
use crate::EngineError;

/// One decoder layer over the step's `seq` tokens, reading and updating the residual stream `s.x`.
pub(super) fn layer(
    k: &Kernels,
    s: &mut Activations,
    w: &DeviceLayer,
    kv: &LayerKv<'_>,
    step: &Step<'_>,
) -> Result<(), EngineError> {
    let (seq, norm) = (step.seq, step.params.norm);
    // Attention block.
    k.norm.rms(&s.x, &w.attn_norm, &mut s.xn, step.rows, norm)?;
    k.linear(&w.qkv, &s.xn, seq, &mut s.qkv, Residual::None)?;
    if let Some(bias) = &w.qkv_bias {
        k.elementwise
            .add_bias_rows(&mut s.qkv, bias, seq, step.params.qkv_dim)?;
    }
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
    k.norm
        .rms(&s.x, &w.ffn_norm, &mut s.mlp_xn, step.rows, norm)?;
    k.linear(&w.gate, &s.mlp_xn, seq, &mut s.gate, Residual::None)?;
    k.linear(&w.up, &s.mlp_xn, seq, &mut s.up, Residual::None)?;
    k.elementwise
        .gated_in_place(&mut s.gate, &s.up, seq * step.params.ffn, step.params.act)?;
    let post = w.post_ffn_norm.as_ref().map(|n| (n, &mut s.mlp_out));
    into_residual(k, &w.down, &s.gate, post, &mut s.x, step)
}

/// The final RMSNorm and the output head over the last of the `rows` positions, into `s.logits`.
pub(super) fn head(
    k: &Kernels,
    s: &mut Activations,
    weights: &DeviceWeights,
    params: &LayerParams,
    rows: RowsShape,
) -> Result<(), EngineError> {
    let (seq, hidden) = (rows.rows, rows.dim);
    let last = RowCopy {
        rows: 1,
        cols: hidden,
        src_row: seq.saturating_sub(1),
        dst_row: 0,
    };
    k.elementwise.copy_rows(&s.x, &mut s.last, last)?;
    let one = RowsShape {
        rows: 1,
        dim: hidden,
    };
    k.norm.rms(
        &s.last,
        &weights.final_norm,
        &mut s.last_normed,
        one,
        params.norm,
    )?;
    let head = weights.head();
    head.for_each_part(&mut s.logits, &mut s.logits_parts, |m, logits| {
        k.linear(m, &s.last_normed, 1, logits, Residual::None)
    })?;
    softcap_logits(k, &mut s.logits, head.shape().rows, params)
}
