//! Every supported architecture's tiny model loads from a real Hugging Face folder, with the config the family
//! implies, weights identical to what was written, and the same reference logits as the generator's model.

#![allow(clippy::unwrap_used)]

mod load_common;

use engine::model::{
    load, Activation, LoadOptions, RopeScaling, RopeStyle, TensorData, WeightFormat,
};
use fixtures::reference_model::{RefArch, RefModel};
use fixtures::tiny_models::{
    generate, write_hf_folder, write_llama2c, StoreDtype, TinySpec, TINY_VOCAB,
};
use load_common::{rel_diff, rel_rms, tmp, to_ref};

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
const PROMPT: [u32; 6] = [1, 40, 310, 77, 5, 260];

fn f32_opts() -> LoadOptions {
    LoadOptions {
        quantize: WeightFormat::F32,
        keep_embeddings_f16: false,
    }
}

#[test]
fn every_arch_loads_with_family_config_and_exact_weights() {
    for arch in ARCHS {
        let dir = tmp();
        let spec = TinySpec::for_arch(arch);
        let reference = write_hf_folder(&spec, dir.path(), StoreDtype::F32, 1).unwrap();
        let m = load(dir.path(), &f32_opts()).unwrap();
        let c = &m.config;
        assert_eq!(c.arch.model_type(), arch.model_type());
        assert_eq!(
            (
                c.shape.hidden,
                c.shape.ffn,
                c.shape.layers,
                c.shape.heads,
                c.shape.kv_heads,
                c.shape.head_dim
            ),
            (
                spec.shape.hidden,
                spec.shape.ffn,
                spec.shape.layers,
                spec.shape.heads,
                spec.shape.kv_heads,
                spec.shape.head_dim
            )
        );
        assert_eq!(c.shape.vocab, TINY_VOCAB);
        assert_eq!(c.rope_style, RopeStyle::HalfSplit);
        assert_eq!(c.tied_embeddings, spec.tied);
        assert_eq!(m.weights.lm_head.is_none(), spec.tied);
        assert_eq!(c.qkv_bias, spec.qkv_bias);
        assert_eq!(m.weights.layers[0].bq.is_some(), spec.qkv_bias);
        let gemma = c.arch.is_gemma();
        assert_eq!(c.norm_plus_one, gemma);
        assert_eq!(c.activation == Activation::GeluTanh, gemma);
        assert_eq!(c.embed_scale, gemma.then_some(8.0));
        assert_eq!((c.bos, c.eos.clone()), (Some(1), vec![2]));
        assert_eq!(
            matches!(c.rope_scaling, Some(RopeScaling::Llama3 { .. })),
            spec.llama3_scaling.is_some()
        );
        assert_eq!(c.qk_norm, spec.qk_norm, "{arch:?}");
        assert_eq!(c.post_norms, spec.post_norms, "{arch:?}");
        // Loaded weights equal the written ones exactly, and so do the Gemma 2/3 features and the reference
        // forward (whose 6 tokens pass the 4-position window).
        let loaded = to_ref(&m);
        assert_eq!(loaded.config, reference.config, "{arch:?}");
        assert_eq!(loaded.weights, reference.weights, "{arch:?}");
        assert_eq!(
            loaded.config.rope_inv_freqs, reference.config.rope_inv_freqs,
            "{arch:?}"
        );
        assert_eq!(
            loaded.forward(&PROMPT),
            reference.forward(&PROMPT),
            "{arch:?}"
        );
    }
}

#[test]
fn f16_and_bf16_sharded_folders_load() {
    for (dtype, shards) in [(StoreDtype::F16, 3), (StoreDtype::BF16, 2)] {
        let dir = tmp();
        let spec = TinySpec::for_arch(RefArch::Qwen2);
        let reference = write_hf_folder(&spec, dir.path(), dtype, shards).unwrap();
        assert!(dir.path().join("model.safetensors.index.json").is_file());
        let m = load(dir.path(), &f32_opts()).unwrap();
        // The file's values were rounded before writing, so widening them back is exact.
        assert_eq!(to_ref(&m).weights, reference.weights, "{dtype:?}");
        let h = load(dir.path(), &LoadOptions::default()).unwrap();
        assert!(matches!(h.weights.layers[1].w_up.data, TensorData::F16(_)));
        assert!(matches!(
            h.weights.layers[1].attn_norm.data,
            TensorData::F32(_)
        ));
    }
}

#[test]
fn f16_and_m0e4_loads_stay_close_to_f32_logits() {
    for arch in ARCHS {
        let dir = tmp();
        let reference =
            write_hf_folder(&TinySpec::for_arch(arch), dir.path(), StoreDtype::F32, 1).unwrap();
        let want = reference.forward(&PROMPT);
        let f16 = load(dir.path(), &LoadOptions::default()).unwrap();
        let d16 = rel_diff(&want, &to_ref(&f16).forward(&PROMPT));
        // f16 keeps 11 significant bits: logits move by well under 1% of their range.
        assert!(d16 < 5e-3, "{arch:?} f16: {d16}");
        let opts = LoadOptions {
            quantize: WeightFormat::M0e4 {
                group: fp4::GroupSize::G32,
            },
            keep_embeddings_f16: false,
        };
        let q = load(dir.path(), &opts).unwrap();
        assert!(matches!(q.weights.layers[0].wq.data, TensorData::M0e4(_)));
        assert!(matches!(q.weights.embedding.data, TensorData::M0e4(_)));
        let got = to_ref(&q).forward(&PROMPT);
        let dq = rel_rms(&want, &got);
        eprintln!(
            "{arch:?}: f16 max rel {d16:.2e}, m0e4 rel rms {dq:.3}, max rel {:.3}",
            rel_diff(&want, &got)
        );
        // 4-bit weights (16 levels per group of 32) on random Gaussian weights, embedding and head included:
        // each weight is off by ~5% of its group's spread, compounding over 2 layers to ~10-20% of the logits.
        assert!(
            dq < 0.3 && dq > rel_rms(&want, &to_ref(&f16).forward(&PROMPT)),
            "{arch:?} m0e4: {dq}"
        );
    }
}

#[test]
fn m0e4_keeps_unpackable_and_requested_matrices_f16() {
    let dir = tmp();
    // Llama's tiny ffn is 160: w_down (160 inputs) packs with groups of 32 but not of 64.
    write_hf_folder(
        &TinySpec::for_arch(RefArch::Llama),
        dir.path(),
        StoreDtype::F32,
        1,
    )
    .unwrap();
    let g64 = LoadOptions {
        quantize: WeightFormat::M0e4 {
            group: fp4::GroupSize::G64,
        },
        keep_embeddings_f16: true,
    };
    let m = load(dir.path(), &g64).unwrap();
    let l = &m.weights.layers[0];
    assert!(matches!(l.w_down.data, TensorData::F16(_)));
    assert!(matches!(l.w_up.data, TensorData::M0e4(_)));
    assert!(matches!(m.weights.embedding.data, TensorData::F16(_)));
    assert!(matches!(
        m.weights.lm_head.as_ref().unwrap().data,
        TensorData::F16(_)
    ));
    let g32 = LoadOptions {
        quantize: WeightFormat::M0e4 {
            group: fp4::GroupSize::G32,
        },
        keep_embeddings_f16: false,
    };
    assert!(matches!(
        load(dir.path(), &g32).unwrap().weights.layers[0]
            .w_down
            .data,
        TensorData::M0e4(_)
    ));
}

#[test]
fn llama2c_checkpoint_written_by_fixtures_loads_interleaved() {
    let dir = tmp();
    for untied in [false, true] {
        let spec = TinySpec {
            tied: !untied,
            ..TinySpec::llama2c()
        };
        let reference: RefModel = generate(&spec, fixtures::ops::RopeStyle::Interleaved);
        let path = dir.path().join(format!("model{untied}.bin"));
        write_llama2c(&reference, &path).unwrap();
        let m = load(&path, &f32_opts()).unwrap();
        assert_eq!(m.config.rope_style, RopeStyle::Interleaved);
        assert_eq!(m.config.tied_embeddings, !untied);
        assert_eq!((m.config.norm_eps, m.config.rope_theta), (1e-5, 10000.0));
        let loaded = to_ref(&m);
        assert_eq!(loaded.weights, reference.weights);
        assert_eq!(loaded.forward(&PROMPT), reference.forward(&PROMPT));
    }
}

#[test]
fn mistral_sliding_window_masks_every_layer_without_capping_the_context() {
    let dir = tmp();
    fixtures::tiny_models::write_tiny_hf_model(RefArch::Mistral, dir.path()).unwrap();
    assert_eq!(
        engine::model::load_config(dir.path())
            .unwrap()
            .shape
            .max_ctx,
        128
    );
    let p = dir.path().join("config.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    j["sliding_window"] = 64.into();
    std::fs::write(&p, j.to_string()).unwrap();
    let c = engine::model::load_config(dir.path()).unwrap();
    assert_eq!(c.shape.max_ctx, 128);
    let w = c.sliding_window.unwrap();
    assert_eq!((w.window, w.local_layers), (64, vec![true, true]));
    // Qwen's window (only some layers, by rules of its own) still caps the context instead.
    let dir = tmp();
    fixtures::tiny_models::write_tiny_hf_model(RefArch::Qwen2, dir.path()).unwrap();
    let p = dir.path().join("config.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    j["sliding_window"] = 64.into();
    j["use_sliding_window"] = true.into();
    std::fs::write(&p, j.to_string()).unwrap();
    let c = engine::model::load_config(dir.path()).unwrap();
    assert_eq!((c.shape.max_ctx, c.sliding_window), (64, None));
}
