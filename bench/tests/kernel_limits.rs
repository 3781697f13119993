//! Every kernel the engine chooses stays within each bundled phone profile's per-launch limits (issue 22): local
//! memory (`CL_KERNEL_LOCAL_MEM_SIZE`, as the driver reports it for the build) and the widest work-group launched,
//! read from [`Gpu::kernel_usage`] after real steps. Two models: a small one (SmolLM2-135M's layer shapes) and a
//! Gemma-2B-shaped one (hidden 2048, ffn 16384, 8 heads of 256, one KV head), one layer each and a 2048-token
//! vocabulary (the vocabulary sets the head's rows, no kernel's geometry).
//!
//! On PoCL the engine runs the CPU mat-vec (`cpu.cl`); the GPU mat-vec a phone would run is built here too, at the
//! geometry tlite picks for the phone on its own ([`MatvecConfig::for_caps`] of [`DeviceProfile::as_device`]) and
//! with PoCL's defines: no sub-groups, so the local-memory reduction, the most local memory that kernel takes.
//! The Mali attention build (`attn_mali`, `attn_mali_stage`: no local memory) runs in the engine under the Mali
//! profiles; under every other profile it is built at the phone's vector width and launched on the Gemma-2B decode
//! shape (a fresh token, a split context) beside the phone's mat-vec, so its usage is held against every profile too.
//! The check can fail: the same usage held against a deliberately too-small profile reports the breaches, and
//! building the phone's mat-vec under that profile is refused.
#![allow(clippy::unwrap_used)]

use bench::end_to_end::{synthetic_model, BenchArch};
use clkernels::kernels::attention::{
    Attention, AttentionKernel, AttentionScores, AttentionShape, AttentionWalk, FreshToken,
    KvOperand,
};
use clkernels::kernels::matvec::{
    DeviceF16Matrix, DeviceM0e4, MatvecConfig, MatvecF16, MatvecM0e4,
};
use clkernels::kernels::norm::RmsNormParams;
use clkernels::kernels::rope::{HeadsLayout, RopeConfig, RopeStyle};
use clkernels::kernels::vector_width::VectorWidth;
use clkernels::kernels::{GatedActivation, Residual};
use clkernels::runtime::{
    DeviceBuffer, DeviceProfile, Gpu, GpuOptions, KernelUsage, ProfileChoice,
};
use engine::generate::{LanguageModel, Want};
use engine::gpu::{GpuModel, GpuOptions as ModelOptions};
use engine::model::ModelConfig;
use fp4::{GroupSize, M0e4Matrix, MatrixShape};
use half::f16;
use kvcache::{KvDtype, KvLayout};

fn open(profile: DeviceProfile) -> Gpu {
    Gpu::open_with(&GpuOptions {
        profile: ProfileChoice::Use(Box::new(profile)),
        ..GpuOptions::default()
    })
    .expect("an OpenCL device (PoCL on the dev box)")
}

fn shapes() -> [(&'static str, ModelConfig); 2] {
    let one_layer = |arch: BenchArch| {
        let mut c = arch.config(Some(1));
        c.shape.vocab = 2048;
        c
    };
    [
        ("small", one_layer(BenchArch::Smollm2_135m)),
        ("gemma-2b", one_layer(BenchArch::Gemma2b)),
    ]
}

/// Runs a prefill and two decode steps of each model on `gpu`.
fn run_models(gpu: &Gpu) {
    for (name, config) in shapes() {
        let model = synthetic_model(&config, GroupSize::G32, 5, false).unwrap();
        let opts = ModelOptions {
            max_chunk: 16,
            max_ctx: Some(64),
            kv_dtype: KvDtype::F16,
            ..ModelOptions::default()
        };
        let mut gm = GpuModel::with_gpu(gpu.clone(), &model, &opts)
            .unwrap_or_else(|e| panic!("{name} on {}: {e}", gpu.caps().display_name()));
        let prompt: Vec<u32> = (0..12).map(|i| (i * 97) % 2048).collect();
        gm.step(&prompt, Want::Logits).unwrap();
        gm.step(&[5], Want::Argmax).unwrap();
        gm.step(&[7], Want::Logits).unwrap();
    }
}

/// An M0E4 matrix of varied codes (the values do not matter here, only the shapes launched).
fn matrix(rows: usize, cols: usize) -> M0e4Matrix {
    let codes = (0..rows * cols / 2).map(|i| (i * 37) as u8).collect();
    let groups = rows * cols / 32;
    M0e4Matrix::from_parts(
        MatrixShape::new(rows, cols),
        GroupSize::G32,
        codes,
        vec![f16::from_f32(0.01); groups],
        vec![f16::from_f32(-0.015); groups],
    )
    .unwrap()
}

/// Builds the GPU mat-vec the phone would choose and launches it on the Gemma-2B shapes (QKV, o-projection,
/// gate+up, down and an f16 head slice); the builds' errors are returned, as a too-small profile refuses them.
fn run_phone_matvec(gpu: &Gpu, phone: &DeviceProfile) -> Result<(), String> {
    let mut config = MatvecConfig::for_caps(&phone.as_device().unwrap());
    // The host has no cl_khr_fp16: the f32 products, as a phone without it would run.
    (config.half_math, config.nv_half2, config.cpu) = (false, false, None);
    let mv = MatvecM0e4::with_config(gpu, config).map_err(|e| e.to_string())?;
    let mv16 = MatvecF16::with_config(gpu, config).map_err(|e| e.to_string())?;
    let (hidden, ffn, qkv) = (2048, 16384, 2048 + 2 * 256);
    let x = DeviceBuffer::from_slice(gpu, &vec![0.5f32; ffn]).unwrap();
    let norm = DeviceBuffer::from_slice(gpu, &vec![1.0f32; hidden]).unwrap();
    let p = RmsNormParams {
        eps: 1e-6,
        weight_offset: 1.0,
    };
    let mut out = DeviceBuffer::<f32>::new(gpu, ffn).unwrap();
    let up = |rows, cols| DeviceM0e4::upload(gpu, &matrix(rows, cols)).unwrap();
    let (w_qkv, w_o, w_gate, w_up, w_down) = (
        up(qkv, hidden),
        up(hidden, hidden),
        up(ffn, hidden),
        up(ffn, hidden),
        up(hidden, ffn),
    );
    let e = |e: clkernels::kernels::KernelError| e.to_string();
    mv.enqueue_normed(&w_qkv, &x, &norm, p, &mut out, Residual::None)
        .map_err(e)?;
    mv.enqueue(&w_o, &x, &mut out, Residual::None).map_err(e)?;
    mv.enqueue_gate_up_normed(
        &w_gate,
        &w_up,
        &x,
        &norm,
        p,
        &mut out,
        GatedActivation::GeluTanh,
    )
    .map_err(e)?;
    mv.enqueue(&w_down, &x, &mut out, Residual::None)
        .map_err(e)?;
    let head = vec![f16::from_f32(0.01); 1024 * hidden];
    let head = DeviceF16Matrix::upload(gpu, &head, MatrixShape::new(1024, hidden)).unwrap();
    mv16.enqueue(&head, &x, &mut out, Residual::None)
        .map_err(e)?;
    gpu.finish().unwrap();
    Ok(())
}

/// Builds the Mali attention at the phone's vector width and runs a Gemma-2B-shaped decode step through it (8 heads
/// of 256, one KV head, a fresh token at position 700 of an f16 cache, so the context is split and merged).
fn run_phone_attention(gpu: &Gpu, phone: &DeviceProfile) -> Result<(), String> {
    let width = VectorWidth::for_caps(&phone.as_device().unwrap()).0;
    let e = |e: clkernels::kernels::KernelError| e.to_string();
    let mut att = Attention::with_mali_width(gpu, width, &[]).map_err(e)?;
    att.set_walk(AttentionWalk::Mali);
    let (heads, head_dim, past) = (8, 256, 700);
    let layout = KvLayout {
        kv_heads: 1,
        max_ctx: past + 1,
        head_dim,
        dtype: KvDtype::F16,
    };
    let view = layout.positions_view(0, past + 1);
    let shape = AttentionShape {
        seq: 1,
        past,
        heads,
        kv_heads: 1,
        head_dim,
    };
    let plan = att.plan(&shape, &view, None);
    assert_eq!(plan.kernel, AttentionKernel::Mali);
    assert!(plan.splits > 1, "{plan:?}");
    let stride = (heads + 2) * head_dim;
    let qkv = DeviceBuffer::from_slice(gpu, &vec![0.25f32; stride]).unwrap();
    let cache = vec![f16::from_f32(0.5); (past + 1) * head_dim];
    let (k, v) = (
        DeviceBuffer::from_slice(gpu, &cache).unwrap(),
        DeviceBuffer::from_slice(gpu, &cache).unwrap(),
    );
    let heads_at = |offset, heads| HeadsLayout {
        offset,
        token_stride: stride,
        heads,
        seq: 1,
    };
    let fresh = FreshToken {
        k: heads_at(heads * head_dim, 1),
        v: heads_at((heads + 1) * head_dim, 1),
        rope: RopeConfig {
            head_dim,
            rotary_dim: head_dim,
            theta: 10000.0,
            style: RopeStyle::HalfSplit,
        },
    };
    let mut out = DeviceBuffer::<f32>::new(gpu, heads * head_dim).unwrap();
    att.enqueue_with_fresh(
        &qkv,
        heads_at(0, heads),
        Some(fresh),
        KvOperand::from_device_buffer(&k, view),
        KvOperand::from_device_buffer(&v, view),
        shape,
        AttentionScores::scaled(0.0625),
        &mut out,
    )
    .map_err(e)?;
    gpu.finish().unwrap();
    Ok(())
}

fn breaches(usage: &[KernelUsage], profile: &DeviceProfile) -> Vec<String> {
    let (limits, _) = profile.limits_in_effect().unwrap();
    usage.iter().flat_map(|u| u.breaches(&limits)).collect()
}

#[test]
fn every_chosen_kernel_fits_every_profiles_local_memory_and_work_groups() {
    let mut last_usage = Vec::new();
    for profile in DeviceProfile::bundled().unwrap() {
        let gpu = open(profile.clone());
        run_models(&gpu);
        run_phone_matvec(&gpu, &profile).unwrap_or_else(|e| panic!("{}: {e}", profile.name));
        run_phone_attention(&gpu, &profile).unwrap_or_else(|e| panic!("{}: {e}", profile.name));
        let usage = gpu.kernel_usage();
        // Something real was recorded: launches with explicit groups, and the phone's GPU mat-vec among them.
        assert!(
            usage.iter().any(|u| u.launches > 0 && u.widest_group > 1),
            "{}",
            profile.name
        );
        assert!(usage
            .iter()
            .any(|u| u.kernel == "matvec_m0e4_gate_up_normed" && u.launches > 0));
        for kernel in ["attn_mali", "attn_mali_stage"] {
            assert!(
                usage.iter().any(|u| u.kernel == kernel && u.launches > 0),
                "{}: {kernel} did not run",
                profile.name
            );
        }
        let found = breaches(&usage, &profile);
        assert!(found.is_empty(), "{}: {found:#?}", profile.name);
        let widest = usage.iter().map(|u| u.widest_group).max().unwrap();
        let local = usage.iter().map(|u| u.local_mem_bytes).max().unwrap();
        eprintln!(
            "{}: {} kernel builds, widest group {widest}, most local memory {local} bytes",
            profile.name,
            usage.len()
        );
        last_usage = usage;
    }

    // The same check fails where the limits are lower than what ran.
    let json = r#"{"short_name": "too-small", "local_mem_size": 64, "max_work_group_size": 8,
                   "max_work_item_sizes": [8, 8, 8]}"#;
    let too_small = DeviceProfile::from_json(json, "test").unwrap();
    let found = breaches(&last_usage, &too_small);
    assert!(
        found
            .iter()
            .any(|b| b.contains("work-items per group, more than 8")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|b| b.contains("bytes of local memory, more than 64")),
        "{found:#?}"
    );
    // And the phone-min mat-vec, whose reduction needs more local memory than that, is refused at build there.
    let gpu = open(too_small);
    let e = run_phone_matvec(&gpu, &DeviceProfile::phone_min().unwrap()).unwrap_err();
    assert!(e.contains("allows at most"), "{e}");
}
