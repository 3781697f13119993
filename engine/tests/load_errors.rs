//! Bad input gets a clear error naming the file and the problem, never a panic.

#![allow(clippy::unwrap_used)]

mod load_common;

use engine::model::{load, LoadOptions};
use engine::EngineError;
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::{generate, write_llama2c, write_tiny_hf_model, TinySpec};
use load_common::tmp;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::Path;

fn tiny(dir: &Path) {
    write_tiny_hf_model(RefArch::Mistral, dir).unwrap();
}

fn err_of(path: &Path) -> EngineError {
    load(path, &LoadOptions::default()).unwrap_err()
}

/// Rewrites `model.safetensors` in `dir`, letting `edit` drop (None) or replace a tensor's (dtype, shape, bytes).
fn rewrite(
    dir: &Path,
    edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| {
            edit(&n, v.dtype(), v.shape().to_vec(), v.data().to_vec()).map(|(d, s, b)| (n, d, s, b))
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = kept
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

fn edit_config(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut j);
    std::fs::write(p, j.to_string()).unwrap();
}

#[test]
fn truncated_and_malformed_safetensors() {
    let dir = tmp();
    tiny(dir.path());
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() - 100]).unwrap();
    let e = err_of(dir.path());
    assert!(matches!(e, EngineError::Safetensors { .. }), "{e:?}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");

    std::fs::write(&st, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let e = err_of(dir.path());
    assert!(matches!(e, EngineError::Safetensors { .. }), "{e:?}");
    std::fs::write(&st, b"abc").unwrap();
    assert!(matches!(
        err_of(dir.path()),
        EngineError::Safetensors { .. }
    ));
    std::fs::remove_file(&st).unwrap();
    assert!(err_of(dir.path()).to_string().contains("no *.safetensors"));
}

#[test]
fn inconsistent_config() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 5] = [
        ("does not divide hidden_size", |j| {
            j["num_attention_heads"] = 5.into();
            j.as_object_mut().unwrap().remove("head_dim");
        }),
        ("not a multiple of kv_heads", |j| {
            j["num_key_value_heads"] = 3.into()
        }),
        ("missing `hidden_size`", |j| {
            j.as_object_mut().unwrap().remove("hidden_size");
        }),
        ("must be a non-negative integer", |j| {
            j["num_hidden_layers"] = "two".into()
        }),
        ("outside the vocabulary", |j| {
            j["eos_token_id"] = 5000.into()
        }),
    ];
    for (want, edit) in cases {
        let dir = tmp();
        tiny(dir.path());
        std::fs::remove_file(dir.path().join("generation_config.json")).unwrap();
        edit_config(dir.path(), edit);
        let e = err_of(dir.path());
        assert!(matches!(e, EngineError::InvalidConfig(_)), "{want}: {e:?}");
        assert!(
            e.to_string().contains(want) && e.to_string().contains("config.json"),
            "{want}: {e}"
        );
    }
    // A config whose sizes disagree with the tensors: the tensor is named with both shapes.
    let dir = tmp();
    tiny(dir.path());
    edit_config(dir.path(), |j| j["intermediate_size"] = 96.into());
    let e = err_of(dir.path());
    assert!(matches!(e, EngineError::TensorShape { .. }), "{e:?}");
    assert!(
        e.to_string().contains("mlp.gate_proj.weight") && e.to_string().contains("[96, 64]"),
        "{e}"
    );
}

#[test]
fn missing_tensor_and_wrong_dtype() {
    let dir = tmp();
    tiny(dir.path());
    rewrite(dir.path(), |n, d, s, b| {
        (n != "model.layers.1.mlp.up_proj.weight").then_some((d, s, b))
    });
    let e = err_of(dir.path());
    assert!(matches!(e, EngineError::MissingTensor { .. }), "{e:?}");
    assert!(
        e.to_string().contains("model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );

    let dir = tmp();
    tiny(dir.path());
    rewrite(dir.path(), |n, d, s, b| {
        Some(if n == "model.norm.weight" {
            (Dtype::I32, s, b)
        } else {
            (d, s, b)
        })
    });
    let e = err_of(dir.path());
    assert!(matches!(e, EngineError::UnsupportedDtype { .. }), "{e:?}");
    assert!(
        e.to_string().contains("model.norm.weight") && e.to_string().contains("I32"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_and_missing_files() {
    let dir = tmp();
    tiny(dir.path());
    edit_config(dir.path(), |j| j["model_type"] = "gpt2".into());
    assert_eq!(
        err_of(dir.path()).to_string(),
        "unsupported architecture: gpt2"
    );

    let e = err_of(&dir.path().join("model.safetensors")).to_string();
    assert!(e.contains("pass the model folder"), "{e}");

    let empty = tmp();
    assert!(err_of(empty.path()).to_string().contains("config.json"));
    assert!(matches!(
        err_of(&empty.path().join("nope")),
        EngineError::Io { .. }
    ));
    std::fs::write(empty.path().join("config.json"), "{\"model_type\": ").unwrap();
    assert!(matches!(err_of(empty.path()), EngineError::Json { .. }));
}

#[test]
fn truncated_and_malformed_llama2c() {
    let dir = tmp();
    let path = dir.path().join("model.bin");
    write_llama2c(
        &generate(&TinySpec::llama2c(), fixtures::ops::RopeStyle::Interleaved),
        &path,
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [bytes.len() - 4, bytes.len() / 2, 40, 27, 0] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = err_of(&path);
        assert!(
            matches!(e, EngineError::Truncated { .. }),
            "cut {cut}: {e:?}"
        );
        assert!(e.to_string().contains("model.bin"), "{e}");
    }
    let mut extra = bytes.clone();
    extra.extend([0u8; 8]);
    std::fs::write(&path, &extra).unwrap();
    assert!(err_of(&path).to_string().contains("trailing bytes"));
    let mut bad = bytes.clone();
    bad[12..16].copy_from_slice(&(-3i32).to_le_bytes()); // n_heads
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(err_of(&path), EngineError::InvalidConfig(_)));
    let mut bad = bytes;
    bad[12..16].copy_from_slice(&5i32.to_le_bytes()); // 5 heads do not divide dim 64
    std::fs::write(&path, &bad).unwrap();
    let e = err_of(&path);
    assert!(e.to_string().contains("does not divide"), "{e}");
}
