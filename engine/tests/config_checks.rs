//! Configurations that contradict the weights or the request are errors, not silently different runs (issue 17,
//! item 6).

#![allow(clippy::unwrap_used)]

use engine::gpu::{GpuModel, GpuOptions};
use engine::model::{load, LoadOptions};
use engine::EngineError;
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::write_tiny_hf_model;

#[test]
fn a_config_with_fewer_layers_than_the_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_model(RefArch::Llama, dir.path()).unwrap();
    load(dir.path(), &LoadOptions::default()).unwrap();
    let p = dir.path().join("config.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let layers = j["num_hidden_layers"].as_u64().unwrap();
    j["num_hidden_layers"] = serde_json::json!(layers - 1);
    std::fs::write(&p, j.to_string()).unwrap();
    let e = load(dir.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "num_hidden_layers = {} but the safetensors also hold `model.layers.{}.",
            layers - 1,
            layers - 1
        )),
        "{e}"
    );
}

#[test]
fn a_zero_context_is_refused_not_rounded_up() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_model(RefArch::Llama, dir.path()).unwrap();
    let model = load(dir.path(), &LoadOptions::default()).unwrap();
    let options = GpuOptions {
        max_ctx: Some(0),
        ..GpuOptions::default()
    };
    // Refused before any device is opened, so this runs on machines without OpenCL too.
    match GpuModel::load(&model, &options) {
        Err(EngineError::InvalidOption(m)) => assert!(m.contains("--ctx"), "{m}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a zero context was accepted"),
    }
}

/// Needs an OpenCL device (PoCL here), as the other GPU tests do.
#[test]
fn a_model_larger_than_device_memory_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_model(RefArch::Llama, dir.path()).unwrap();
    let mut model = load(dir.path(), &LoadOptions::default()).unwrap();
    let gpu =
        clkernels::runtime::Gpu::open_default().expect("an OpenCL device (PoCL on the dev box)");
    let global = gpu.caps().global_mem_bytes;
    // A context whose f16 KV cache alone is twice the device's memory (PoCL used to abort inside the driver).
    let c = &model.config;
    let kv_per_token = (c.shape.layers * 2 * c.shape.kv_heads * c.shape.head_dim * 2) as u64;
    model.config.shape.max_ctx = usize::try_from(2 * global / kv_per_token).unwrap();
    let whole = GpuOptions {
        max_ctx: Some(model.config.shape.max_ctx),
        ..GpuOptions::default()
    };
    match GpuModel::with_gpu(gpu.clone(), &model, &whole) {
        Err(EngineError::DeviceMemory(m)) => {
            assert!(m.contains("KV cache") && m.contains("global memory"), "{m}");
            assert!(m.contains("lower --ctx to at most"), "{m}");
            assert!(global > 0);
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a {global} byte device took a cache twice its size"),
    }
    // Asked for nothing, the context is the largest that fits the budget (a small one here, so that the test
    // allocates little).
    let budgeted = GpuOptions {
        mem_budget: engine::gpu::MemBudget::Bytes(64 << 20),
        ..GpuOptions::default()
    };
    let gm = GpuModel::with_gpu(gpu, &model, &budgeted).unwrap();
    let choice = gm.context_choice();
    assert_eq!(choice.reason, engine::gpu::ContextReason::Budget);
    assert!(choice.ctx < model.config.shape.max_ctx && choice.needs.total() <= 64 << 20);
}

/// Phi-3's `longrope` as transformers reads it: the attention factor from `max_position_embeddings` over the
/// top-level `original_max_position_embeddings` unless one is given, `"su"` as its old name; a missing table is
/// refused naming it, a table of the wrong length naming the rotary dimension; a sliding window caps the context.
#[test]
fn phi3_longrope_configs_are_read_as_transformers_reads_them() {
    use engine::model::RopeScaling;
    use fixtures::tiny_models::TinySpec;
    let spec = TinySpec::for_arch(RefArch::Mistral);
    let dir = tempfile::tempdir().unwrap();
    let write = |extra: serde_json::Value| {
        fixtures::tiny_phi3::write_phi3_hf_folder(&spec, dir.path(), &extra).unwrap();
        load(dir.path(), &LoadOptions::default())
    };
    let table = serde_json::json!([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    let m = write(serde_json::json!({
        "original_max_position_embeddings": 16,
        "rope_scaling": {"type": "su", "short_factor": table, "long_factor": table},
    }))
    .unwrap();
    // 128 / 16 = 8: sqrt(1 + ln 8 / ln 16) = sqrt(1.75).
    assert!((m.config.rope_attn_factor() - 1.75f32.sqrt()).abs() < 1e-6);
    assert!(matches!(
        m.config.rope_scaling,
        Some(RopeScaling::LongRope {
            original_max_ctx: 16,
            ..
        })
    ));
    let m = write(serde_json::json!({
        "rope_scaling": {"rope_type": "longrope", "short_factor": table, "long_factor": table,
                         "attention_factor": 1.5, "original_max_position_embeddings": 64},
        "sliding_window": 100,
    }))
    .unwrap();
    assert_eq!(m.config.rope_attn_factor(), 1.5);
    assert_eq!(
        m.config.shape.max_ctx, 128,
        "the window masks, it does not cap the context"
    );
    assert_eq!(
        m.config.sliding_window.as_ref().map(|w| w.window),
        Some(100)
    );
    let e = write(serde_json::json!({"rope_scaling": {"type": "longrope", "short_factor": table}}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("long_factor"), "{e}");
    let e = write(serde_json::json!({
        "partial_rotary_factor": 0.5,
        "rope_scaling": {"type": "longrope", "short_factor": table, "long_factor": table},
    }))
    .unwrap_err()
    .to_string();
    assert!(e.contains("rotary dimension 8 has 4 pairs"), "{e}");
}
