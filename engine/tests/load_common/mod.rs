//! Helpers shared by the `load_*` tests: copying an engine model into the fixtures reference, comparing logits.

#![allow(dead_code, clippy::unwrap_used)]

use engine::model::{Activation, Architecture, Model, RopeStyle, Tensor};
use fixtures::reference_model::{RefArch, RefConfig, RefLayer, RefModel, RefWeights};
use std::path::PathBuf;

/// The real models bundled under `fixtures/models` (stories260K, the Llama 2 tokenizer), so a fresh clone with no
/// `../shared` beside it runs every test.
pub fn bundled_models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models")
}

/// A bundled file; panics naming it if the checkout lacks it (a test must fail, not skip, without its data).
fn bundled(relative: &str) -> PathBuf {
    let p = bundled_models().join(relative);
    assert!(
        p.is_file(),
        "bundled test model missing: {} (fixtures/models is part of the repository)",
        p.display()
    );
    p
}

/// stories260K (llama2.c checkpoint).
pub fn stories260k() -> PathBuf {
    bundled("stories260K/stories260K.bin")
}

/// The Llama 2 tokenizer: llama2.c's `tokenizer.bin` and Meta's SentencePiece `tokenizer.model`.
pub fn llama2_tokenizer() -> (PathBuf, PathBuf) {
    (
        bundled("llama2-tokenizer/tokenizer.bin"),
        bundled("llama2-tokenizer/tokenizer.model"),
    )
}

/// The engine model's weights (dequantised to f32 where needed) as a reference model.
pub fn to_ref(m: &Model) -> RefModel {
    let c = &m.config;
    let v = |t: &Tensor| t.to_f32();
    let local_layers: Vec<bool> = c
        .sliding_window
        .as_ref()
        .map_or_else(Vec::new, |w| w.local_layers.clone());
    // The frequencies of the first local layer, where they differ from the global layers' (Gemma 3).
    let local_rope_inv_freqs = local_layers
        .iter()
        .position(|&l| l)
        .filter(|_| c.rope_local_theta.is_some())
        .map(|i| c.layer_rope_inv_freqs(i, c.shape.max_ctx));
    let config = RefConfig {
        rope_attn_factor: c.rope_attn_factor(),
        query_pre_attn_scalar: c.query_pre_attn_scalar,
        attn_softcap: c.attn_softcap,
        final_softcap: c.final_softcap,
        window: c.sliding_window.as_ref().map(|w| w.window),
        local_layers,
        local_rope_inv_freqs,
        nope_layers: c.nope_layers.clone(),
        ..RefConfig::plain(
            match c.arch {
                Architecture::Llama => RefArch::Llama,
                Architecture::Mistral => RefArch::Mistral,
                Architecture::Qwen2 => RefArch::Qwen2,
                Architecture::Gemma => RefArch::Gemma,
                Architecture::Qwen3 => RefArch::Qwen3,
                Architecture::Gemma2 => RefArch::Gemma2,
                Architecture::Gemma3 => RefArch::Gemma3,
                Architecture::SmolLm3 => RefArch::SmolLm3,
                // After the loader cuts their fused tensors, these run Llama's forward pass (partial rotary and
                // longrope are carried by the config fields below).
                Architecture::Phi3 | Architecture::ChatGlm => RefArch::Llama,
            },
            // The engine and the reference share symshape's shape type: nothing to convert.
            c.shape,
            c.norm_eps,
            c.rope_inv_freqs(),
            match c.rope_style {
                RopeStyle::HalfSplit => fixtures::ops::RopeStyle::HalfSplit,
                RopeStyle::Interleaved => fixtures::ops::RopeStyle::Interleaved,
            },
            c.norm_plus_one,
            c.embed_scale.unwrap_or(1.0),
            c.activation == Activation::GeluTanh,
        )
    };
    let w = &m.weights;
    let layers = w
        .layers
        .iter()
        .map(|l| RefLayer {
            attn_norm: v(&l.attn_norm),
            wq: v(&l.wq),
            wk: v(&l.wk),
            wv: v(&l.wv),
            wo: v(&l.wo),
            bq: l.bq.as_ref().map(v),
            bk: l.bk.as_ref().map(v),
            bv: l.bv.as_ref().map(v),
            ffn_norm: v(&l.ffn_norm),
            w_gate: v(&l.w_gate),
            w_up: v(&l.w_up),
            w_down: v(&l.w_down),
            q_norm: l.q_norm.as_ref().map(v),
            k_norm: l.k_norm.as_ref().map(v),
            post_attn_norm: l.post_attn_norm.as_ref().map(v),
            post_ffn_norm: l.post_ffn_norm.as_ref().map(v),
        })
        .collect();
    RefModel {
        config,
        weights: RefWeights {
            embedding: v(&w.embedding),
            layers,
            final_norm: v(&w.final_norm),
            lm_head: w.lm_head.as_ref().map(v),
        },
    }
}

/// Largest |a - b| over two logit tables, relative to the largest |a|.
pub fn rel_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a
        .iter()
        .flatten()
        .fold(0.0f32, |m, x| m.max(x.abs()))
        .max(1e-6);
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

/// A fresh temporary folder.
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Relative RMS error ‖a − b‖ / ‖a‖ over two logit tables.
pub fn rel_rms(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum();
    let den: f64 = a.iter().flatten().map(|x| f64::from(*x).powi(2)).sum();
    (num / den.max(1e-30)).sqrt() as f32
}
