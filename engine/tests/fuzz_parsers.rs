//! Property tests over bytes for the parsers of model sources (issue 17): whatever the bytes, loading returns an
//! error or a model and never panics or hangs. Case counts are bounded so they run in the normal test suite.

#![allow(clippy::unwrap_used)]

use engine::model::{load, load_config, tlite_format, Llama2cHeader, LoadOptions, WeightFormat};
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::write_tiny_hf_model;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

/// Keys a Hugging Face config.json is read for.
const HF_KEYS: [&str; 20] = [
    "model_type",
    "hidden_size",
    "num_attention_heads",
    "head_dim",
    "hidden_activation",
    "hidden_act",
    "intermediate_size",
    "num_hidden_layers",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "partial_rotary_factor",
    "tie_word_embeddings",
    "attention_bias",
    "bos_token_id",
    "eos_token_id",
    "sliding_window",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|x| json!(x)),
        (0u64..300).prop_map(|x| json!(x)),
        any::<f64>().prop_map(|x| json!(x)),
        "[a-z0-9_]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("llama"),
            Just("qwen2"),
            Just("gemma"),
            Just("mistral"),
            Just("silu"),
            Just("linear"),
            Just("llama3")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}|factor|rope_type|type", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Loads `path` both ways; only panics fail the property.
fn exercise(path: &Path) {
    let _ = load_config(path);
    let _ = load(path, &LoadOptions::default());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn llama2c_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let p = Path::new("fuzz.bin");
        if let Ok(h) = Llama2cHeader::parse(p, &bytes) {
            let _ = h.config(p);
            let _ = h.expected_floats();
        }
    }

    #[test]
    fn llama2c_files_with_small_headers_never_panic(
        fields in proptest::array::uniform7(-3i32..40),
        payload in 0usize..20_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes: Vec<u8> = fields.iter().flat_map(|f| f.to_le_bytes()).collect();
        bytes.extend((0..payload).map(|i| (i * 31 % 251) as u8));
        let p = dir.path().join("model.bin");
        std::fs::write(&p, bytes).unwrap();
        exercise(&p);
    }

    #[test]
    fn config_json_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), bytes).unwrap();
        exercise(dir.path());
    }

    #[test]
    fn config_json_values_never_panic(
        edits in proptest::collection::vec((0..HF_KEYS.len(), json_value()), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_hf_model(RefArch::Qwen2, dir.path()).unwrap();
        let p = dir.path().join("config.json");
        let mut j: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        for (k, v) in edits {
            j[HF_KEYS[k]] = v;
        }
        std::fs::write(&p, j.to_string()).unwrap();
        exercise(dir.path());
    }
}

/// A valid tlite folder's files, written once.
fn tlite_files() -> &'static (Vec<u8>, Vec<u8>) {
    static FILES: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let src = tempfile::tempdir().unwrap();
        write_tiny_hf_model(RefArch::Qwen2, src.path()).unwrap();
        let opts = LoadOptions {
            quantize: WeightFormat::M0e4 {
                group: fp4::GroupSize::G32,
            },
            keep_embeddings_f16: false,
        };
        let m = load(src.path(), &opts).unwrap();
        let out = tempfile::tempdir().unwrap();
        tlite_format::save(&m, src.path(), out.path()).unwrap();
        (
            std::fs::read(out.path().join("config.json")).unwrap(),
            std::fs::read(out.path().join("model.safetensors")).unwrap(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn tlite_config_edits_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let (cfg, st) = tlite_files();
        let mut cfg = cfg.clone();
        for (i, b) in edits {
            let at = i.index(cfg.len());
            cfg[at] = b;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), &cfg).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), st).unwrap();
        exercise(dir.path());
    }

    #[test]
    fn tlite_weight_file_edits_never_panic_and_never_load_changed(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        in_header in any::<bool>(),
    ) {
        let (cfg, st) = tlite_files();
        let mut st = st.clone();
        let header_end = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
        for (i, flip) in edits {
            let at = if in_header { i.index(header_end) } else { header_end + i.index(st.len() - header_end) };
            st[at] ^= flip;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), cfg).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), &st).unwrap();
        exercise(dir.path());
        // Any changed data byte is caught by a checksum (a header edit may still happen to be harmless padding).
        if !in_header {
            prop_assert!(load(dir.path(), &LoadOptions::default()).is_err());
        }
    }
}
