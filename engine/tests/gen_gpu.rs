//! The OpenCL forward pass against the plain-Rust reference (fixtures::reference_model), on every architecture's
//! tiny model, with f16 and M0E4 weights, and the step protocol (prefill-then-decode, chunking, bad input); and
//! context shifts (a shifted cache against a fresh prefill of the kept tokens, generation past the context).
//!
//! The reference runs on exactly the weights the device holds (f16-rounded, or M0E4-dequantised), so the
//! tolerances measure the forward pass, not quantisation: logits agree within `2e-3 * (1 + max|ref|)` with an f32
//! KV cache and `2e-2 * (1 + max|ref|)` with an f16 one.
#![allow(clippy::unwrap_used)]

mod load_common;

use std::path::Path;

use clkernels::runtime::Gpu;
use engine::generate::{GenerateOptions, Generator, LanguageModel, StepOutput, TextCodec, Want};
use engine::gpu::{GpuModel, GpuOptions};
use engine::model::{self, LoadOptions, Model, ModelShape, RopeStyle, Tensor, WeightFormat};
use engine::EngineError;
use fixtures::reference_model::{RefArch, RefModel};
use fixtures::tiny_models::{write_hf_folder, StoreDtype, TinySpec};
use kvcache::KvDtype;
use rand::{Rng, SeedableRng};

mod logit_checks;
use logit_checks::logits;

fn gpu() -> Gpu {
    Gpu::open_default().expect("an OpenCL device (PoCL on the dev box)")
}

/// The reference model on the engine model's own weights (f32 values of f16 or dequantised M0E4 tensors), with a
/// KV cache of `max_ctx` positions.
fn reference_of(m: &Model, max_ctx: usize) -> RefModel {
    let mut reference = load_common::to_ref(m);
    reference.config.shape.max_ctx = max_ctx;
    // Longrope's table depends on the context the model is placed with.
    reference.config.rope_inv_freqs = m.config.rope_inv_freqs_for(max_ctx);
    reference
}

/// The tiny model of `arch` (Llama's carries Llama 3 rope scaling, so the frequency-table rotary is checked too).
fn tiny(arch: RefArch, dir: &Path, format: WeightFormat) -> Model {
    let spec = TinySpec::for_arch(arch);
    write_hf_folder(&spec, dir, StoreDtype::F32, 1).unwrap();
    model::load(
        dir,
        &LoadOptions {
            quantize: format,
            keep_embeddings_f16: true,
        },
    )
    .unwrap()
}

fn random_tokens(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// Checks `got` against `want` within `rel * (1 + max|want|)`; returns the error as a fraction of that scale.
fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = 1.0 + want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold((0, 0.0f32), |best, (i, e)| {
            if e > best.1 || e.is_nan() {
                (i, e)
            } else {
                best
            }
        });
    assert!(
        err <= rel * scale,
        "{what}: max |diff| {err} at {i} (got {}, want {}) > {rel} * {scale}",
        got[i],
        want[i]
    );
    err / scale
}

/// f32 products everywhere, so the tolerances measure the forward pass (the f16-product mat-vecs some devices
/// use by default have a test of their own).
fn options(kv: KvDtype, max_chunk: usize) -> GpuOptions {
    GpuOptions {
        max_chunk,
        kv_dtype: kv,
        max_ctx: Some(64),
        half_products: false,
        ..GpuOptions::default()
    }
}

/// Prefill a prompt, then decode a few tokens one by one; every step's logits against the reference. Returns the
/// largest error as a fraction of `1 + max|ref|`.
fn check_against_reference(arch: RefArch, format: WeightFormat, kv: KvDtype, rel: f32) -> f32 {
    check_with_options(arch, format, &options(kv, 16), rel)
}

fn check_with_options(arch: RefArch, format: WeightFormat, opts: &GpuOptions, rel: f32) -> f32 {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(arch, dir.path(), format);
    let reference = reference_of(&m, 64);
    let mut cache = reference.new_cache();
    let mut gpu_model = GpuModel::with_gpu(gpu(), &m, opts).unwrap();
    let tokens = random_tokens(arch as u64 + 11, 14, m.config.shape.vocab);
    let (prompt, rest) = tokens.split_at(10);
    let want = reference.prefill(&mut cache, prompt);
    let got = logits(gpu_model.step(prompt, Want::Logits).unwrap());
    let mut worst = assert_close(
        &format!("{arch:?} {format:?} prefill"),
        &got,
        want.last().unwrap(),
        rel,
    );
    for (i, &t) in rest.iter().enumerate() {
        let want = reference.prefill(&mut cache, &[t]);
        let got = logits(gpu_model.step(&[t], Want::Logits).unwrap());
        worst = worst.max(assert_close(
            &format!("{arch:?} {format:?} decode {i}"),
            &got,
            &want[0],
            rel,
        ));
    }
    assert_eq!(gpu_model.cached_len(), 14);
    worst
}

const ARCHS: [RefArch; 8] = [
    RefArch::Llama,
    RefArch::Mistral,
    RefArch::Qwen2,
    RefArch::Gemma,
    RefArch::Qwen3,
    RefArch::Gemma2,
    RefArch::Gemma3,
    RefArch::SmolLm3,
];
const M0E4: WeightFormat = WeightFormat::M0e4 {
    group: fp4::GroupSize::G32,
};

#[test]
fn f16_weights_match_the_reference_on_every_architecture() {
    for arch in ARCHS {
        check_against_reference(arch, WeightFormat::F16, KvDtype::F32, 2e-3);
    }
}

#[test]
fn m0e4_weights_match_the_dequantised_reference_on_every_architecture() {
    for arch in ARCHS {
        check_against_reference(arch, M0E4, KvDtype::F32, 2e-3);
    }
}

/// The default options: where the device has an f16-product mat-vec (NVIDIA's packed f16, cl_khr_fp16), decode
/// uses it; each mat-vec is then exact to ~2e-3 of sum|w·x|, and through a few layers the logits stay within
/// 2e-2 of the reference's scale. (On a device without one this repeats the f32 check at the looser bound.)
#[test]
fn half_product_matvecs_stay_close() {
    let opts = GpuOptions {
        half_products: true,
        ..options(KvDtype::F32, 16)
    };
    for arch in ARCHS {
        let worst = check_with_options(arch, M0E4, &opts, 2e-2);
        eprintln!("{arch:?}: largest logit error {worst:.2e} of 1 + max|ref|");
    }
}

/// Mistral's sliding window (every layer local, 5 positions) over a 14-token run: the context is no longer capped
/// at the window, and positions beyond it are masked as the reference masks them.
#[test]
fn mistral_sliding_window_matches_the_reference() {
    let spec = TinySpec {
        window: Some(5),
        local_layers: vec![true; 2],
        ..TinySpec::for_arch(RefArch::Mistral)
    };
    let dir = tempfile::tempdir().unwrap();
    let written = write_hf_folder(&spec, dir.path(), StoreDtype::F32, 1).unwrap();
    for (format, kv, rel) in [
        (WeightFormat::F16, KvDtype::F32, 2e-3),
        (M0E4, KvDtype::F16, 2e-2),
    ] {
        let opts = LoadOptions {
            quantize: format,
            keep_embeddings_f16: true,
        };
        let m = model::load(dir.path(), &opts).unwrap();
        assert_eq!(m.config.shape.max_ctx, spec.shape.max_ctx, "not capped");
        let reference = reference_of(&m, 64);
        assert_eq!(
            (&reference.config.window, &reference.config.local_layers),
            (&written.config.window, &written.config.local_layers)
        );
        let tokens = random_tokens(31, 14, m.config.shape.vocab);
        let want = reference.forward(&tokens);
        let mut g = GpuModel::with_gpu(gpu(), &m, &options(kv, 16)).unwrap();
        let got = logits(g.step(&tokens[..9], Want::Logits).unwrap());
        assert_close("mistral window prefill", &got, &want[8], rel);
        for (i, &t) in tokens.iter().enumerate().skip(9) {
            let got = logits(g.step(&[t], Want::Logits).unwrap());
            assert_close(&format!("mistral window decode {i}"), &got, &want[i], rel);
        }
    }
}

#[test]
fn f16_kv_cache_stays_close() {
    check_against_reference(RefArch::Qwen2, M0E4, KvDtype::F16, 2e-2);
    check_against_reference(RefArch::Gemma, WeightFormat::F16, KvDtype::F16, 2e-2);
    check_against_reference(RefArch::Gemma2, M0E4, KvDtype::F16, 2e-2);
    check_against_reference(RefArch::Gemma3, WeightFormat::F16, KvDtype::F16, 2e-2);
}

#[test]
fn prefill_then_decode_equals_one_long_prefill_and_chunking_changes_nothing() {
    // Qwen2 too: its decode adds the QKV bias inside the mat-vec, its prefill in a launch of its own.
    for arch in [RefArch::Mistral, RefArch::Qwen2] {
        let dir = tempfile::tempdir().unwrap();
        let m = tiny(arch, dir.path(), M0E4);
        let g = gpu();
        let tokens = random_tokens(5, 13, m.config.shape.vocab);
        let mut whole = GpuModel::with_gpu(g.clone(), &m, &options(KvDtype::F32, 16)).unwrap();
        let one = logits(whole.step(&tokens, Want::Logits).unwrap());

        let mut stepped = GpuModel::with_gpu(g.clone(), &m, &options(KvDtype::F32, 16)).unwrap();
        stepped.step(&tokens[..9], Want::Nothing).unwrap();
        for &t in &tokens[9..12] {
            stepped.step(&[t], Want::Nothing).unwrap();
        }
        let decoded = logits(stepped.step(&tokens[12..], Want::Logits).unwrap());
        assert_close(
            &format!("{arch:?} prefill then decode"),
            &decoded,
            &one,
            1e-3,
        );

        let mut chunked = GpuModel::with_gpu(g, &m, &options(KvDtype::F32, 4)).unwrap();
        let mut last = Vec::new();
        for part in tokens.chunks(4) {
            last = logits(chunked.step(part, Want::Logits).unwrap());
        }
        assert_close(&format!("{arch:?} chunks of 4"), &last, &one, 1e-3);

        // Arg-max on the device agrees with the host arg-max of the same logits.
        let mut again = GpuModel::with_gpu(gpu(), &m, &options(KvDtype::F32, 16)).unwrap();
        let StepOutput::Token(t) = again.step(&tokens, Want::Argmax).unwrap() else {
            panic!("expected a token")
        };
        let host = one
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > one[b] { i } else { b });
        assert_eq!(t as usize, host);
    }
}

/// The tiny models' tokenizer as a codec (byte-level BPE from the tokenizers crate).
struct Tok(tokenizers::Tokenizer);

impl TextCodec for Tok {
    fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        Ok(self
            .0
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }
    fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.0
            .decode(ids, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.0.token_to_id(token)
    }
}

#[test]
fn greedy_generation_matches_the_reference_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(RefArch::Qwen2, dir.path(), M0E4);
    let reference = reference_of(&m, 64);
    let gpu_model = GpuModel::with_gpu(gpu(), &m, &options(KvDtype::F32, 8)).unwrap();
    let mut g = Generator::new(
        gpu_model,
        Tok(fixtures::tiny_models::tiny_tokenizer().unwrap()),
    )
    .unwrap();
    let prompt = random_tokens(9, 12, m.config.shape.vocab);
    let opts = GenerateOptions {
        max_tokens: 6,
        prefill_chunk: 5,
        ..GenerateOptions::default()
    };
    let out = g.generate_from_tokens(&prompt, &opts, |_| {}).unwrap();
    let want = reference.greedy(&prompt, out.tokens.len());
    assert_eq!(out.tokens, want);

    assert!(matches!(
        g.generate_from_tokens(&[1, m.config.shape.vocab as u32], &opts, |_| {}),
        Err(EngineError::TokenOutOfRange { .. })
    ));
    assert!(matches!(
        g.generate_from_tokens(&random_tokens(1, 65, m.config.shape.vocab), &opts, |_| {}),
        Err(EngineError::PromptTooLong { context: 64, .. })
    ));
    let zero = GenerateOptions {
        max_tokens: 0,
        ..opts.clone()
    };
    assert!(matches!(
        g.generate_from_tokens(&prompt, &zero, |_| {}),
        Err(EngineError::InvalidOption(_))
    ));
    // A refused step leaves the model usable: the same generation again gives the same tokens.
    let again = g.generate_from_tokens(&prompt, &opts, |_| {}).unwrap();
    assert_eq!(again.tokens, want);
    // Steps outside what the device was sized for are refused, not run.
    let model = g.model_mut();
    assert!(matches!(
        model.step(&[], Want::Logits),
        Err(EngineError::InvalidOption(_))
    ));
    assert!(matches!(
        model.step(&[0; 9], Want::Logits),
        Err(EngineError::InvalidOption(_))
    ));
}

#[test]
fn scaled_rope_differs_from_plain_theta_so_the_table_is_really_used() {
    // The Llama tiny model's Llama 3 scaling (factor 4, original context 32) changes the low frequencies; its
    // logits at positions past a few tokens must differ from the same model with the scaling removed, or the
    // table path would be indistinguishable from the theta path in the reference comparison above.
    let dir = tempfile::tempdir().unwrap();
    let scaled = tiny(RefArch::Llama, dir.path(), WeightFormat::F32);
    assert!(scaled.config.rope_scaling.is_some());
    let mut plain = scaled.clone();
    plain.config.rope_scaling = None;
    let tokens = random_tokens(7, 24, scaled.config.shape.vocab);
    let run = |m: &Model| {
        let mut g = GpuModel::with_gpu(gpu(), m, &options(KvDtype::F32, 32)).unwrap();
        logits(g.step(&tokens, Want::Logits).unwrap())
    };
    let (a, b) = (run(&scaled), run(&plain));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff > 1e-3,
        "scaling made no difference (max |diff| {diff})"
    );
}

#[test]
fn stories260k_matches_the_reference() {
    let path = load_common::stories260k();
    for (format, rel) in [(WeightFormat::F16, 2e-3), (M0E4, 2e-3)] {
        let m = model::load(
            &path,
            &LoadOptions {
                quantize: format,
                keep_embeddings_f16: true,
            },
        )
        .unwrap();
        let reference = reference_of(&m, 64);
        let mut cache = reference.new_cache();
        let mut gm = GpuModel::with_gpu(gpu(), &m, &options(KvDtype::F32, 16)).unwrap();
        let tokens = random_tokens(260, 20, m.config.shape.vocab);
        let want = reference.prefill(&mut cache, &tokens[..16]);
        assert_close(
            "stories260K prefill",
            &logits(gm.step(&tokens[..16], Want::Logits).unwrap()),
            &want[15],
            rel,
        );
        for &t in &tokens[16..] {
            let want = reference.prefill(&mut cache, &[t]);
            assert_close(
                "stories260K decode",
                &logits(gm.step(&[t], Want::Logits).unwrap()),
                &want[0],
                rel,
            );
        }
    }
}

// ---- Context shift ----

/// The tiny model of `arch` with `layers` layers, `style` pairing and `partial` of each head rotated, f16 weights.
fn shift_model(arch: RefArch, layers: usize, style: RopeStyle, partial: f32, dir: &Path) -> Model {
    let base = TinySpec::for_arch(arch);
    let spec = TinySpec {
        shape: ModelShape {
            layers,
            ..base.shape
        },
        ..base
    };
    write_hf_folder(&spec, dir, StoreDtype::F32, 1).unwrap();
    let mut m = model::load(
        dir,
        &LoadOptions {
            quantize: WeightFormat::F16,
            keep_embeddings_f16: true,
        },
    )
    .unwrap();
    m.config.rope_style = style;
    m.config.partial_rotary = partial;
    m.config.validate().unwrap();
    m
}

/// Fills a context of 24 (prefill, then decode steps, so both write paths are shifted), shifts out positions
/// 4..12, and runs two more tokens; the same two after a fresh prefill of the 16 kept tokens at their new
/// positions must give the same logits. Returns the larger error as a fraction of `1 + max|logit|`.
fn shifted_against_fresh(m: &Model, kv: KvDtype, rel: f32, what: &str) -> f32 {
    let (ctx, keep, drop) = (24, 4, 8);
    let opts = GpuOptions {
        max_ctx: Some(ctx),
        ..options(kv, 16)
    };
    let tokens = random_tokens(ctx as u64, ctx + 2, m.config.shape.vocab);
    let mut shifted = GpuModel::with_gpu(gpu(), m, &opts).unwrap();
    shifted.step(&tokens[..16], Want::Nothing).unwrap();
    for &t in &tokens[16..ctx] {
        shifted.step(&[t], Want::Nothing).unwrap();
    }
    assert!(shifted.shift_context(keep, drop).unwrap());
    assert_eq!(shifted.cached_len(), ctx - drop);
    let kept: Vec<u32> = tokens[..keep]
        .iter()
        .chain(&tokens[keep + drop..ctx])
        .copied()
        .collect();
    let mut fresh = GpuModel::with_gpu(gpu(), m, &opts).unwrap();
    fresh.step(&kept, Want::Nothing).unwrap();
    let mut worst = 0.0f32;
    for (i, &t) in tokens[ctx..].iter().enumerate() {
        let got = logits(shifted.step(&[t], Want::Logits).unwrap());
        let want = logits(fresh.step(&[t], Want::Logits).unwrap());
        worst = worst.max(assert_close(&format!("{what} step {i}"), &got, &want, rel));
    }
    worst
}

/// After a context shift the cache is what a fresh prefill of the kept tokens at their new positions leaves,
/// for both pairings, partial rotary dims, theta and scaled (table) frequencies, f32 and f16 caches.
///
/// With one layer a token's keys and values depend on it and its position alone, so this is exact up to
/// rounding. With more layers the kept tokens' deeper keys still carry what they attended to before the shift
/// (as in llama.cpp), so the two-layer case zeroes the first layer's writes to the residual stream (o and down
/// projections): the second layer then sees embeddings only, and a shift that skipped its keys would fail.
/// Tolerances: `1e-4 * (1 + max|logit|)` with an f32 cache (the re-rotation's f32 angle, and the kept tail written
/// by decode steps against the fresh cache's one prefill), `2e-3 *` with an f16 one (each re-rotated key is rounded
/// to f16 once more); PoCL measured 1.3e-7 and 5.4e-5. Leaving the keys unturned, or turning only the first
/// layer's, errs by more than 0.1; so does turning the keys of a layer without rotary (SmolLM3's NoPE), which
/// the last case checks (0.68).
#[test]
fn a_shifted_cache_equals_a_fresh_prefill_of_the_kept_tokens() {
    let cases = [
        // Llama 3 rope scaling: the frequency table.
        (
            RefArch::Llama,
            RopeStyle::HalfSplit,
            1.0,
            KvDtype::F32,
            1e-4,
        ),
        (
            RefArch::Mistral,
            RopeStyle::Interleaved,
            1.0,
            KvDtype::F32,
            1e-4,
        ),
        (
            RefArch::Qwen2,
            RopeStyle::HalfSplit,
            0.5,
            KvDtype::F32,
            1e-4,
        ),
        (
            RefArch::Llama,
            RopeStyle::Interleaved,
            0.5,
            KvDtype::F16,
            2e-3,
        ),
        (
            RefArch::Gemma,
            RopeStyle::HalfSplit,
            1.0,
            KvDtype::F16,
            2e-3,
        ),
    ];
    for (arch, style, partial, kv, rel) in cases {
        let dir = tempfile::tempdir().unwrap();
        let m = shift_model(arch, 1, style, partial, dir.path());
        let what = format!("{arch:?} {style:?} partial {partial} {kv:?}");
        let worst = shifted_against_fresh(&m, kv, rel, &what);
        eprintln!("{what}: largest logit error {worst:.2e} of 1 + max|logit|");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut m = shift_model(RefArch::Mistral, 2, RopeStyle::HalfSplit, 1.0, dir.path());
    let zero =
        |t: &Tensor| Tensor::f32(t.shape.clone(), vec![0.0; t.shape.iter().product()]).unwrap();
    let first = &mut m.weights.layers[0];
    first.wo = zero(&first.wo);
    first.w_down = zero(&first.w_down);
    let worst = shifted_against_fresh(&m, KvDtype::F32, 1e-4, "Mistral two layers");
    eprintln!("Mistral two layers: largest logit error {worst:.2e} of 1 + max|logit|");
    // The same with the second layer without rotary (SmolLM3's NoPE): the shift must leave its keys as they are,
    // which the fresh prefill's unrotated keys check.
    m.config.nope_layers = vec![false, true];
    let what = "two layers, the second without rotary";
    let worst = shifted_against_fresh(&m, KvDtype::F32, 1e-4, what);
    eprintln!("{what}: largest logit error {worst:.2e} of 1 + max|logit|");
}

/// A greedy generation three times as long as the context runs to `max_tokens`: shifts, no re-prefill (the cache
/// committed each position once), no allocation (the device bytes stay those of the load, the cache never holds
/// more than its context).
#[test]
fn a_generation_three_times_the_context_runs_to_max_tokens_in_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = tiny(RefArch::Qwen2, dir.path(), M0E4);
    m.config.eos.clear();
    let ctx = 32;
    let opts = GpuOptions {
        max_ctx: Some(ctx),
        ..options(KvDtype::F16, 8)
    };
    let gpu_model = GpuModel::with_gpu(gpu(), &m, &opts).unwrap();
    let device_bytes = gpu_model.peak_device_bytes();
    let mut g = Generator::new(
        gpu_model,
        Tok(fixtures::tiny_models::tiny_tokenizer().unwrap()),
    )
    .unwrap();
    let prompt = random_tokens(3, 10, m.config.shape.vocab);
    let gen = GenerateOptions {
        max_tokens: 3 * ctx,
        ..GenerateOptions::default()
    };
    let out = g.generate_from_tokens(&prompt, &gen, |_| {}).unwrap();
    assert_eq!(out.stop, engine::generate::StopReason::MaxTokens);
    assert_eq!(out.tokens.len(), 3 * ctx);
    assert_eq!(out.timings.prefill_tokens, prompt.len());
    assert!(out.shifts.shifts >= 4, "{:?}", out.shifts);
    assert_eq!(out.shifts.kept, 4);
    let model = g.model();
    let stats = model.kv_stats();
    assert_eq!(stats.shifts, out.shifts.shifts as u64);
    assert!(stats.bytes_copied > 0);
    // Every prompt and generated token (the last one is chosen, never run) went through the cache exactly once.
    assert_eq!(
        stats.positions_committed,
        (prompt.len() + 3 * ctx - 1) as u64
    );
    assert_eq!(model.peak_device_bytes(), device_bytes);
    assert!(model.cached_len() <= ctx);
    assert_eq!(model.cached_len(), g.cached_tokens().len());
    assert_eq!(g.cached_tokens()[..4], prompt[..4]);
}

// ---- Phi-3: fused tensors, partial rotary, longrope ----

/// A tiny Phi-3 folder (fused `qkv_proj` and `gate_up_proj`, 12 of 16 dims rotated, longrope with pre-training
/// context 32 of 128) runs like the reference on the weights the folder was made from, at a context of 32 (short
/// factors) and 64 (long factors). The reference's frequencies and attention factor are computed here from
/// transformers' definition (`_compute_longrope_parameters`: `inv_freq = 1 / (ext_factors * base^(2i/dim))`, and
/// `sqrt(1 + ln(max_pos / orig) / ln(orig))`), not by the engine. Tolerance as for every model here:
/// `2e-3 * (1 + max|ref|)` with an f32 KV cache. Swapping the tables moves logits by far more (checked).
#[test]
fn phi3_fused_tensors_partial_rotary_and_longrope_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::for_arch(RefArch::Mistral);
    let (orig, pairs) = (32usize, 6usize);
    let short: Vec<f32> = (0..pairs).map(|i| 1.0 + 0.1 * i as f32).collect();
    let long: Vec<f32> = (0..pairs).map(|i| 2.0 + 1.5 * i as f32).collect();
    let written = fixtures::tiny_phi3::write_phi3_hf_folder(
        &spec,
        dir.path(),
        &serde_json::json!({
            "partial_rotary_factor": 0.75,
            "original_max_position_embeddings": orig,
            "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long},
        }),
    )
    .unwrap();
    let factor = spec.shape.max_ctx as f64 / orig as f64;
    let attn = (1.0 + factor.ln() / (orig as f64).ln()).sqrt() as f32;

    // The cut tensors are exactly the unfused model's.
    let exact = model::load(
        dir.path(),
        &LoadOptions {
            quantize: WeightFormat::F32,
            keep_embeddings_f16: false,
        },
    )
    .unwrap();
    assert_eq!(exact.config.arch, engine::model::Architecture::Phi3);
    assert_eq!(exact.config.rotary_dim(), 2 * pairs);
    assert!((exact.config.rope_attn_factor() - attn).abs() < 1e-6);
    for (got, want) in exact.weights.layers.iter().zip(&written.weights.layers) {
        for (g, w, what) in [
            (&got.wq, &want.wq, "q"),
            (&got.wk, &want.wk, "k"),
            (&got.wv, &want.wv, "v"),
            (&got.w_gate, &want.w_gate, "gate"),
            (&got.w_up, &want.w_up, "up"),
        ] {
            assert_eq!(&g.to_f32(), w, "{what} cut from the fused tensor");
        }
    }

    for format in [WeightFormat::F16, M0E4] {
        let m = model::load(
            dir.path(),
            &LoadOptions {
                quantize: format,
                keep_embeddings_f16: true,
            },
        )
        .unwrap();
        let mut runs = Vec::new();
        for (ctx, table) in [(32, &short), (64, &long)] {
            let mut reference = reference_of(&m, ctx);
            reference.config.rope_inv_freqs = (0..pairs)
                .map(|i| {
                    let base = f64::from(m.config.rope_theta).powf(2.0 * i as f64 / 12.0);
                    (1.0 / (f64::from(table[i]) * base)) as f32
                })
                .collect();
            reference.config.rope_attn_factor = attn;
            let opts = GpuOptions {
                max_ctx: Some(ctx),
                ..options(KvDtype::F32, 32)
            };
            let mut g = GpuModel::with_gpu(gpu(), &m, &opts).unwrap();
            let mut cache = reference.new_cache();
            let tokens = random_tokens(ctx as u64, 30, m.config.shape.vocab);
            let want = reference.prefill(&mut cache, &tokens[..24]);
            let got = logits(g.step(&tokens[..24], Want::Logits).unwrap());
            let what = format!("phi3 {format:?} ctx {ctx}");
            let mut worst = assert_close(&format!("{what} prefill"), &got, &want[23], 2e-3);
            let mut last = got;
            for &t in &tokens[24..] {
                let want = reference.prefill(&mut cache, &[t]);
                last = logits(g.step(&[t], Want::Logits).unwrap());
                worst = worst.max(assert_close(
                    &format!("{what} decode"),
                    &last,
                    &want[0],
                    2e-3,
                ));
            }
            eprintln!("{what}: largest error {worst:.2e} of 1 + max|ref|");
            runs.push(last);
        }
        // Same tokens at positions 24..30 under the two tables: they must differ, or the test proves nothing.
        let moved = runs[0]
            .iter()
            .zip(&runs[1])
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            moved > 0.1,
            "short and long tables give the same logits ({moved})"
        );
    }
}

/// A context shift under longrope: the cached keys carry the attention factor, and the shift turns them by the
/// position delta from the same (long) table without adding it again, so the shifted cache equals a fresh prefill
/// of the kept tokens (tolerance and reasoning as in the shift test above; one layer, f32 cache).
#[test]
fn a_shifted_longrope_cache_equals_a_fresh_prefill() {
    let dir = tempfile::tempdir().unwrap();
    let base = TinySpec::for_arch(RefArch::Mistral);
    let spec = TinySpec {
        shape: ModelShape {
            layers: 1,
            ..base.shape
        },
        ..base
    };
    let long: Vec<f32> = (0..6).map(|i| 2.0 + 1.5 * i as f32).collect();
    fixtures::tiny_phi3::write_phi3_hf_folder(
        &spec,
        dir.path(),
        &serde_json::json!({
            "partial_rotary_factor": 0.75,
            "original_max_position_embeddings": 16,
            "rope_scaling": {"type": "longrope", "short_factor": vec![1.0f32; 6], "long_factor": long},
        }),
    )
    .unwrap();
    let m = model::load(
        dir.path(),
        &LoadOptions {
            quantize: WeightFormat::F16,
            keep_embeddings_f16: true,
        },
    )
    .unwrap();
    assert!(m.config.rope_attn_factor() > 1.1);
    let worst = shifted_against_fresh(&m, KvDtype::F32, 1e-4, "phi3 longrope");
    eprintln!("phi3 longrope shift: {worst:.2e} of 1 + max|logit|");
}
