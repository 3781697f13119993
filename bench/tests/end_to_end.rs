//! The benchmark's pieces: the published shapes are consistent, a synthetic model of small shapes runs end to end
//! on the device, and its figures are finite and positive (speeds are printed by `tlite bench`, never asserted).
#![allow(clippy::unwrap_used)]

use bench::copy_bandwidth;
use bench::end_to_end::{run_bench, synthetic_model, BenchArch, StepProfile};
use clkernels::runtime::{DeviceSelector, Gpu, GpuOptions};

#[test]
fn published_shapes_are_valid_and_shrink() {
    for name in [
        "llama2-7b",
        "gemma-2b",
        "gemma2-2b",
        "qwen1.5-4b",
        "chatglm2-6b",
        "smollm2-135m",
    ] {
        let arch: BenchArch = name.parse().unwrap();
        let c = arch.config(None);
        c.validate().unwrap();
        assert_eq!(arch.config(Some(2)).shape.layers, 2, "{name}");
    }
    assert_eq!(BenchArch::Llama2_7b.config(None).shape.q_dim(), 4096);
    assert_eq!(BenchArch::Gemma2b.config(None).shape.kv_heads, 1);
    assert!("gpt2".parse::<BenchArch>().unwrap_err().contains("gpt2"));
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
