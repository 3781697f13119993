//! The benchmark's pieces: the published shapes are consistent, a synthetic model of small shapes runs end to end
//! on the device, and its figures are finite and positive (speeds are printed by `tlite bench`, never asserted).
#![allow(clippy::unwrap_used)]

use bench::copy_bandwidth;
use bench::end_to_end::{run_bench, synthetic_model, BenchArch, StepProfile};
use clkernels::runtime::{DeviceSelector, Gpu, GpuOptions};
use engine::generate::{LanguageModel, StepOutput, Want};
use engine::gpu::GpuModel;
use engine::model::Architecture;

#[test]
fn published_shapes_are_valid_and_shrink() {
    for name in BenchArch::NAMES {
        let arch: BenchArch = name.parse().unwrap();
        let c = arch.config(None);
        c.validate().unwrap();
        assert_eq!(arch.config(Some(2)).shape.layers, 2, "{name}");
    }
    assert_eq!(BenchArch::Llama2_7b.config(None).shape.q_dim(), 4096);
    assert_eq!(BenchArch::Gemma2b.config(None).shape.kv_heads, 1);
    let phi4 = BenchArch::Phi4Mini.config(None);
    assert_eq!((phi4.rotary_dim(), phi4.shape.q_dim()), (96, 3072));
    assert!((phi4.rope_attn_factor() - 1.19).abs() < 0.01);
    assert!("gpt2".parse::<BenchArch>().unwrap_err().contains("gpt2"));
}

#[test]
fn the_shapes_carry_their_architectures_features() {
    let qwen3 = BenchArch::Qwen3_1_7b.config(None);
    assert_eq!(qwen3.arch, Architecture::Qwen3);
    assert!(qwen3.qk_norm && !qwen3.qkv_bias);
    let gemma2 = BenchArch::Gemma2_2b.config(None);
    assert_eq!(gemma2.arch, Architecture::Gemma2);
    assert!(gemma2.post_norms && !gemma2.qk_norm);
    assert_eq!(
        (gemma2.attn_softcap, gemma2.final_softcap),
        (Some(50.0), Some(30.0))
    );
    let w = gemma2.sliding_window.as_ref().unwrap();
    assert_eq!(w.window, 4096);
    assert_eq!(w.local_layers.iter().filter(|&&l| l).count(), 13);
    assert!(w.is_local(0) && !w.is_local(1));
    let gemma3 = BenchArch::Gemma3_1b.config(None);
    assert_eq!(gemma3.arch, Architecture::Gemma3);
    assert!(gemma3.qk_norm && gemma3.post_norms && gemma3.rope_scaling.is_none());
    let w = gemma3.sliding_window.as_ref().unwrap();
    assert_eq!(w.window, 512);
    // Layers 6, 12, 18 and 24 (counting from 1) are global: 22 of 26 local.
    assert_eq!(w.local_layers.iter().filter(|&&l| l).count(), 22);
    assert!(!w.is_local(5) && w.is_local(6));
    assert_eq!(gemma3.layer_rope(0).0, 10_000.0);
    assert_eq!(gemma3.layer_rope(5).0, 1_000_000.0);
    // A shortened run keeps a pattern naming each of its layers.
    for arch in [BenchArch::Gemma2_2b, BenchArch::Gemma3_1b] {
        let c = arch.config(Some(3));
        assert_eq!(c.sliding_window.unwrap().local_layers.len(), 3, "{arch:?}");
    }
    for arch in [
        BenchArch::Llama2_7b,
        BenchArch::Phi4Mini,
        BenchArch::Gemma2b,
    ] {
        assert!(arch.config(None).sliding_window.is_none(), "{arch:?}");
    }
}

/// Small models of the shapes with extra features (q/k norms, post norms, soft-caps, windows of 4 positions so a
/// short run crosses them) have those weights and run end to end with finite figures.
#[test]
fn small_models_of_every_architecture_feature_run_end_to_end() {
    for arch in [
        BenchArch::Qwen3_1_7b,
        BenchArch::Gemma2_2b,
        BenchArch::Gemma3_1b,
    ] {
        let mut config = arch.config(Some(6));
        let s = &mut config.shape;
        (s.hidden, s.ffn, s.heads, s.kv_heads, s.head_dim, s.vocab) = (128, 256, 4, 2, 32, 300);
        if let Some(w) = config.sliding_window.as_mut() {
            w.window = 4;
        }
        let model = synthetic_model(&config, fp4::GroupSize::G32, 11, false).unwrap();
        let layer = &model.weights.layers[0];
        assert_eq!(layer.q_norm.is_some(), config.qk_norm, "{arch:?}");
        assert_eq!(layer.k_norm.is_some(), config.qk_norm, "{arch:?}");
        assert_eq!(
            layer.post_attn_norm.is_some(),
            config.post_norms,
            "{arch:?}"
        );
        assert_eq!(layer.post_ffn_norm.is_some(), config.post_norms, "{arch:?}");
        let options = engine::gpu::GpuOptions {
            max_ctx: Some(16),
            max_chunk: 4,
            ..Default::default()
        };
        let mut gm = GpuModel::with_gpu(Gpu::open_default().unwrap(), &model, &options).unwrap();
        // A 7-token prompt in chunks of 4, then 4 decode steps: every logit of every step finite.
        let mut steps: Vec<Vec<u32>> = vec![vec![1, 2, 3, 4], vec![5, 6, 7]];
        steps.extend((8..12).map(|t| vec![t]));
        for tokens in steps {
            let StepOutput::Logits(logits) = gm.step(&tokens, Want::Logits).unwrap() else {
                panic!("{arch:?}: no logits");
            };
            assert_eq!(logits.len(), 300);
            assert!(logits.iter().all(|v| v.is_finite()), "{arch:?}");
        }
    }
}

#[test]
fn a_small_synthetic_model_runs_end_to_end() {
    let mut config = BenchArch::Qwen15_4b.config(Some(2));
    (
        config.shape.hidden,
        config.shape.ffn,
        config.shape.heads,
        config.shape.kv_heads,
        config.shape.head_dim,
        config.shape.vocab,
    ) = (128, 352, 4, 2, 32, 500);
    let model = synthetic_model(&config, fp4::GroupSize::G32, 3, false).unwrap();
    // ffn 352 is a multiple of 32: every linear layer is M0E4; the embedding and head stay f16.
    assert_eq!(model.weights.layers[0].w_down.dtype_name(), "m0e4");
    assert_eq!(model.weights.embedding.dtype_name(), "f16");
    let gpu = Gpu::open_default().unwrap();
    let r = run_bench(gpu.clone(), &model, 9, 4, 4).unwrap();
    for v in [
        r.prefill_tok_s,
        r.decode_tok_s,
        r.copy_bytes_per_s,
        r.roofline_tok_s(),
        r.percent_of_roofline(),
    ] {
        assert!(v.is_finite() && v > 0.0, "{r:?}");
    }
    assert!(r.weight_bytes_per_token > 0 && r.device_bytes > r.weight_bytes_per_token);
    assert!(copy_bandwidth(&gpu, 1 << 20, 2).unwrap() > 0.0);
    assert!(run_bench(gpu, &model, 0, 4, 4).is_err());
    config.tied_embeddings = false;
    let untied = synthetic_model(&config, fp4::GroupSize::G32, 3, true).unwrap();
    assert_eq!(
        untied.weights.lm_head.as_ref().map(|t| t.dtype_name()),
        Some("m0e4")
    );
}

#[test]
fn a_device_opened_with_profiling_reports_every_launch_of_one_decode_step() {
    let mut config = BenchArch::Smollm2_135m.config(Some(2));
    (config.shape.hidden, config.shape.ffn, config.shape.vocab) = (192, 512, 300);
    (
        config.shape.heads,
        config.shape.kv_heads,
        config.shape.head_dim,
    ) = (3, 1, 64);
    let model = synthetic_model(&config, fp4::GroupSize::G32, 5, false).unwrap();
    let gpu = Gpu::open_with(&GpuOptions {
        selector: DeviceSelector::from_env(),
        profiling: true,
        ..GpuOptions::default()
    })
    .unwrap();
    let r = run_bench(gpu, &model, 5, 3, 8).unwrap();
    let p = StepProfile::of(&r.decode_profile).unwrap();
    // At least one launch per layer, all of them inside the span.
    assert!(p.launches >= config.shape.layers, "{p:?}");
    assert!(p.busy_ns <= p.span_ns, "{p:?}");
    assert_eq!(
        p.kernels.iter().map(|k| k.launches).sum::<usize>(),
        p.launches
    );
    // Without profiling there is no per-launch record.
    let r = run_bench(Gpu::open_default().unwrap(), &model, 5, 3, 8).unwrap();
    assert!(r.decode_profile.is_empty());
}
