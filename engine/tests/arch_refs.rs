//! tlite against llama.cpp on tiny random-weight GGUF models of every architecture issue 19 lists
//! (`fixtures/refs/archs/`, made by `make_refs.py` there with the `gguf` package and llama-cpp-python; its README
//! says what each model exercises).
//!
//! Each model runs the recorded token sequence on the test device as llama.cpp did: a prefill, then one token per
//! step; and a second time one token per step from the start, so every position is also checked on the decode
//! path. Every step's logits (all of the vocabulary) are compared with llama.cpp's `f32` run: F32 weights holding
//! exactly the stored values and an F32 KV cache, so its only rounding is f32 arithmetic, except that ggml's CPU
//! backend evaluates GELU through an f16 table (the script measured llama.cpp 3.7e-3 from a float64 evaluation on
//! the gemma model, 2.2e-4 once the transcription uses the same table).
//!
//! The two stored files hold the same values (Q4_0 blocks whose dequantised weights are exact in f16), so both of
//! tlite's paths run exactly llama.cpp's weights: f16 (`model-f16.gguf`, `WeightFormat::F16`) and M0E4
//! (`model-q4_0.gguf`, imported into M0E4 G32 exactly: Q4_0's offset `-8d` is an f16). What is left is arithmetic.
//! Largest |tlite - llama.cpp| measured on any logit (logits up to 18, gemma's up to 26), and the bounds, 2.2-7
//! times that:
//! - f32 KV cache, SiLU models ([`TOL_EXACT`]): 7.6e-6 with f16 weights, 1.7e-5 with M0E4 (summation order, PoCL's
//!   `exp`); qwen3 5.3e-6 and 1.3e-5;
//! - f32 KV cache, GELU models ([`TOL_GELU`]): 3.7e-3 (gemma), 5.1e-3 (gemma2), 5.9e-3 (gemma3), all of it
//!   llama.cpp's GELU table (tlite evaluates tanh in f32, and lands exactly as far from llama.cpp as the script's
//!   float64 transcription does: 3.7e-3, 5.1e-3, 5.9e-3);
//! - tlite's default f16 KV cache ([`TOL_F16_KV`], added to the above): each cached key and value is rounded
//!   (relative 2^-11), which moves the logits by up to 5.2e-3 (llama, qwen2, gemma, phi3; GELU table included:
//!   7.5e-3 on gemma2), 9.0e-3 on chatglm, whose few large-biased KV heads carry the rounding into every query,
//!   and 1.2e-2 on gemma3, whose six layers and q/k norms carry it further (smollm3: 4.5e-3; with an f32 cache
//!   8.1e-6 with f16 weights and 1.5e-5 with M0E4, as the other SiLU models).
//!
//! gemma2 and gemma3 have local layers with a window of 4 positions, shorter than the 20 of the sequence, so both
//! the prefill and the decode steps run the sliding-window mask; gemma2's soft-caps (5 and 4) bite hard on its
//! logits (which stay within 4). Their local layers keep ring caches (`GpuOptions::kv_ring`, on by default); a
//! third schedule, chunks of 3 then decode, sizes the rings at 4 + 3 - 1 = 6 slots, so the 20 positions wrap them
//! three times.
//!
//! All bounds are far below what any architectural feature changes: the script refuses data where dropping or
//! flipping one feature (the rope pairing, the rope base, Llama 3's `rope_freqs`, the QKV bias, the embedding
//! scale, phi3's and chatglm's partial rotary, smollm3's layer without rotary...) moves no logit by 0.2.
//!
//! smollm3 has four layers, the last without rotary (llama.cpp's NoPE rule for the arch, which no GGUF key states):
//! the fused decode launch, the prefill's rotary-and-append launch and the reference all pass that layer's q and k
//! through unrotated.
//!
//! phi3 and chatglm store fused tensors (`attn_qkv`, gate|up in `ffn_up`), which the loader cuts at load; their
//! partial rotary (12 of 16 dims NEOX, 8 of 16 interleaved) runs through both the prefill and the decode rotary.
//! (An architecture tlite does not run is refused naming it: `load_gguf`'s `mamba` test.)
#![allow(clippy::unwrap_used)]

use clkernels::runtime::Gpu;
use engine::generate::{LanguageModel, Want};
use engine::gpu::{GpuModel, GpuOptions};
use engine::model::{self, LoadOptions, Model, WeightFormat};
use fixtures::arch_refs::{ArchModel, ArchRefs, StoredWeights};
use kvcache::KvDtype;

mod logit_checks;
use logit_checks::{logits, max_diff};

/// Largest |tlite - llama.cpp| on any logit with an f32 KV cache, SiLU models (see the module docs).
const TOL_EXACT: f32 = 1e-4;
/// The same for GELU models (llama.cpp's f16 GELU table).
const TOL_GELU: f32 = 1.5e-2;
/// Added to either with tlite's default f16 KV cache.
const TOL_F16_KV: f32 = 2e-2;

/// The models tlite runs today, by their folder in fixtures/refs/archs.
const SUPPORTED: [&str; 10] = [
    "llama2", "llama32", "qwen2", "gemma", "qwen3", "gemma2", "gemma3", "phi3", "chatglm",
    "smollm3",
];

const M0E4: WeightFormat = WeightFormat::M0e4 {
    group: fp4::GroupSize::G32,
};

fn load(reference: &ArchModel, stored: StoredWeights, format: WeightFormat) -> Model {
    let dir = tempfile::tempdir().unwrap();
    let path = reference.unpack(stored, dir.path()).unwrap();
    let m = model::load(
        &path,
        &LoadOptions {
            quantize: format,
            keep_embeddings_f16: true,
        },
    )
    .unwrap();
    check_config(reference, &m);
    m
}

/// The configuration tlite read is the one the generator wrote (a clearer message than a logit mismatch).
fn check_config(reference: &ArchModel, m: &Model) {
    let c = &m.config;
    let want = |k: &str| reference.config[k].as_u64().unwrap() as usize;
    let name = &reference.name;
    assert_eq!(c.shape.layers, want("layers"), "{name}: layers");
    assert_eq!(c.shape.hidden, want("hidden"), "{name}: hidden");
    assert_eq!(c.shape.ffn, want("ffn"), "{name}: ffn");
    assert_eq!(c.shape.heads, want("heads"), "{name}: heads");
    assert_eq!(c.shape.kv_heads, want("kv_heads"), "{name}: kv_heads");
    assert_eq!(c.shape.head_dim, want("head_dim"), "{name}: head_dim");
    assert_eq!(c.shape.vocab, reference.vocab, "{name}: vocab");
    let tied = reference.config["tied"].as_bool().unwrap_or(false);
    assert_eq!(c.tied_embeddings, tied, "{name}: tied embeddings");
    // Every `nope_step`-th layer (counting from 1) without rotary, as the generator's `has_rope` says.
    let step = reference.config["nope_step"].as_u64().map(|s| s as usize);
    let rotating: Vec<bool> = (0..c.shape.layers)
        .map(|i| step.is_none_or(|s| (i + 1) % s != 0))
        .collect();
    let got: Vec<bool> = (0..c.shape.layers).map(|i| c.layer_has_rope(i)).collect();
    assert_eq!(got, rotating, "{name}: layers with rotary");
}

/// Runs the token sequence as `schedule` splits it into steps (of at most `max_chunk`) and checks each step's
/// logits against llama.cpp's `f32` run; returns the largest error.
#[allow(clippy::too_many_arguments)] // the run's inputs, each distinct; a struct would only rename them
fn run(
    reference: &ArchModel,
    refs: &ArchRefs,
    m: &Model,
    kv: KvDtype,
    schedule: &[usize],
    max_chunk: usize,
    tol: f32,
    what: &str,
) -> f32 {
    let opts = GpuOptions {
        max_ctx: Some(64),
        max_chunk,
        kv_dtype: kv,
        half_products: false,
        ..GpuOptions::default()
    };
    let gpu = Gpu::open_default().expect("an OpenCL device (PoCL on the dev box)");
    let mut g = GpuModel::with_gpu(gpu, m, &opts).unwrap();
    if m.config.sliding_window.is_some() && max_chunk < 16 {
        assert!(
            g.kv_rings().0 > 0,
            "{} {what}: the local layers keep no ring",
            reference.name
        );
    }
    let mut worst = 0.0f32;
    let mut at = 0;
    for &len in schedule {
        let got = logits(g.step(&refs.tokens[at..at + len], Want::Logits).unwrap());
        at += len;
        let want = reference.logits("f32", at - 1).unwrap();
        let (err, i) = max_diff(&got, want);
        assert!(
            err <= tol,
            "{} {what}: position {}: logit {i} is {}, llama.cpp {} (|diff| {err} > {tol})",
            reference.name,
            at - 1,
            got[i],
            want[i]
        );
        worst = worst.max(err);
    }
    assert_eq!(g.cached_len(), refs.tokens.len());
    worst
}

/// Every supported model on one weight path, both KV-cache types, both schedules.
fn check(stored: StoredWeights, format: WeightFormat) {
    let refs = ArchRefs::load().unwrap();
    let n = refs.tokens.len();
    let prefill_then_decode: Vec<usize> = std::iter::once(refs.prefill)
        .chain(std::iter::repeat_n(1, n - refs.prefill))
        .collect();
    let all_decode = vec![1; n];
    for name in SUPPORTED {
        let reference = refs.model(name).unwrap();
        let m = load(&reference, stored, format);
        let base = if reference.config["gelu"].as_bool().unwrap_or(false) {
            TOL_GELU
        } else {
            TOL_EXACT
        };
        for (kv, tol) in [(KvDtype::F32, base), (KvDtype::F16, base + TOL_F16_KV)] {
            let a = run(
                &reference,
                &refs,
                &m,
                kv,
                &prefill_then_decode,
                32,
                tol,
                &format!("{format:?} {kv:?} prefill {} then decode", refs.prefill),
            );
            let b = run(
                &reference,
                &refs,
                &m,
                kv,
                &all_decode,
                32,
                tol,
                &format!("{format:?} {kv:?} decode only"),
            );
            eprintln!(
                "{name} {format:?} KV {kv:?}: max |tlite - llama.cpp| {a:.2e} (prefill + decode), {b:.2e} \
                 (decode only); logits up to {:.1}",
                reference.max_abs_logit
            );
            if m.config.sliding_window.is_some() {
                // Chunks of 3: rings of 6 slots, wrapped by the 20 positions.
                let chunks: Vec<usize> = std::iter::repeat_n(3, refs.prefill / 3)
                    .chain(std::iter::repeat_n(1, n - refs.prefill / 3 * 3))
                    .collect();
                let what = format!("{format:?} {kv:?} rings of 6");
                let c = run(&reference, &refs, &m, kv, &chunks, 3, tol, &what);
                eprintln!("{name} {format:?} KV {kv:?}: {c:.2e} with rings of 6 slots");
            }
        }
    }
}

#[test]
fn f16_weights_match_llama_cpp() {
    check(StoredWeights::F16, WeightFormat::F16);
}

#[test]
fn m0e4_weights_from_q4_0_match_llama_cpp() {
    check(StoredWeights::Q4_0, M0E4);
}

/// Every model the data holds is in the list above, so a new one cannot go unchecked.
#[test]
fn every_reference_model_is_covered() {
    let refs = ArchRefs::load().unwrap();
    let mut listed: Vec<String> = SUPPORTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(refs.names(), listed);
}
