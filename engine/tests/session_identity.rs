//! The model identity that binds a saved KV cache to its model, for every kind of source (no device): the same
//! files give the same identity; other weights, another tokenizer setting or another placement on the device give
//! another; a tlite folder is identified as stored, whatever the load options.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use engine::model::{self, tlite_format, LoadOptions, WeightFormat};
use engine::session_file::{ModelIdentity, WeightsIdentity};
use engine::tokenizer::Tokenizer;
use fixtures::gguf_models::{write_gguf_model, MatrixType};
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::{write_hf_folder, StoreDtype, TinySpec};

const M0E4: LoadOptions = LoadOptions {
    quantize: WeightFormat::M0e4 {
        group: fp4::GroupSize::G32,
    },
    keep_embeddings_f16: true,
};

fn identity(path: &Path, options: LoadOptions) -> ModelIdentity {
    let config = model::load(path, &options).unwrap().config;
    // A GGUF file is its own tokenizer's source (these tiny ones carry no usable vocabulary).
    let tokenizer = match path.is_file() {
        true => path.to_path_buf(),
        false => Tokenizer::for_model(path).unwrap().source().to_path_buf(),
    };
    let weights = WeightsIdentity::for_source(path, options).unwrap();
    ModelIdentity::of(path, &config, &tokenizer, weights).unwrap()
}

fn spec(seed_offset: u64) -> TinySpec {
    let spec = TinySpec::for_arch(RefArch::Llama);
    TinySpec {
        seed: spec.seed + seed_offset,
        ..spec
    }
}

#[test]
fn hugging_face_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_hf_folder(&spec(0), &a, StoreDtype::F32, 2).unwrap();
    write_hf_folder(&spec(1), &b, StoreDtype::F32, 2).unwrap();
    let id = identity(&a, M0E4);
    assert_eq!(identity(&a, M0E4), id, "the identity is not deterministic");
    assert_ne!(identity(&b, M0E4), id, "other weights, same identity");
    let f16 = LoadOptions {
        quantize: WeightFormat::F16,
        ..M0E4
    };
    assert_ne!(identity(&a, f16), id, "another placement, same identity");
    // A tokenizer setting is part of the identity.
    let settings = a.join("tokenizer_config.json");
    let mut json: serde_json::Value = match std::fs::read(&settings) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(_) => serde_json::json!({}),
    };
    json["add_bos_token"] = serde_json::Value::Bool(false);
    std::fs::write(&settings, json.to_string()).unwrap();
    assert_ne!(
        identity(&a, M0E4),
        id,
        "another tokenizer setting, same identity"
    );
}

#[test]
fn gguf_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    write_gguf_model(&spec(0), &a, MatrixType::Q4_1).unwrap();
    write_gguf_model(&spec(1), &b, MatrixType::Q4_1).unwrap();
    let id = identity(&a, M0E4);
    assert_eq!(identity(&a, M0E4), id);
    assert_ne!(identity(&b, M0E4), id);
    // One byte of the last tensor's data (a tiny file is hashed whole).
    let mut bytes = std::fs::read(&a).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&a, &bytes).unwrap();
    assert_ne!(identity(&a, M0E4), id);
}

#[test]
fn tlite_folders_are_identified_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_hf_folder(&spec(0), &src, StoreDtype::F32, 1).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let quantized = model::load(&src, &M0E4).unwrap();
    tlite_format::save(&quantized, &src, &a).unwrap();
    let other = model::load(
        &src,
        &LoadOptions {
            keep_embeddings_f16: false,
            ..M0E4
        },
    )
    .unwrap();
    tlite_format::save(&other, &src, &b).unwrap();
    let id = identity(&a, M0E4);
    // The load options do not change a tlite folder, so they do not change its identity.
    let f16 = LoadOptions {
        quantize: WeightFormat::F16,
        keep_embeddings_f16: false,
    };
    assert_eq!(identity(&a, f16), id);
    assert_ne!(
        identity(&b, M0E4),
        id,
        "other stored weights, same identity"
    );
    assert_ne!(
        identity(&src, M0E4),
        id,
        "the source and its quantised folder agree"
    );
}
