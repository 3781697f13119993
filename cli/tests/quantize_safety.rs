//! `tlite quantize` loses nothing and leaves nothing half-written (issue 17, items 1 and 2), run as a user would:
//! through the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use engine::model::{load, tlite_format, LoadOptions, SourceKind, TensorData};
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::{generate, write_llama2c, write_tiny_hf_model, TinySpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tlite(args: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tlite"))
        .arg("quantize")
        .args(args)
        .output()
        .expect("run tlite")
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// Every file under `dir` (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            out.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tiny llama2.c checkpoint with a `tokenizer.bin` beside it, in `dir`.
fn llama2c_dir(dir: &Path) -> PathBuf {
    let model = generate(&TinySpec::llama2c(), fixtures::ops::RopeStyle::Interleaved);
    let bin = dir.join("model.bin");
    write_llama2c(&model, &bin).unwrap();
    std::fs::write(dir.join("tokenizer.bin"), b"vocabulary bytes").unwrap();
    bin
}

#[test]
fn output_equal_to_the_input_folder_is_refused_and_nothing_changes() {
    let t = tempfile::tempdir().unwrap();
    let hf = t.path().join("hf");
    write_tiny_hf_model(RefArch::Llama, &hf).unwrap();
    let before = snapshot(t.path());
    for out in [
        hf.clone(),
        hf.join("."),
        hf.join("sub"),
        t.path().to_path_buf(),
    ] {
        let o = tlite(&[&hf, &out]);
        assert!(!o.status.success(), "{}", out.display());
        let e = stderr(&o);
        assert!(
            e.contains("choose an output folder apart from the model"),
            "{e}"
        );
        assert_eq!(snapshot(t.path()), before, "{}", out.display());
    }
}

#[test]
fn output_equal_to_the_folder_of_a_llama2c_checkpoint_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let bin = llama2c_dir(t.path());
    let before = snapshot(t.path());
    let o = tlite(&[&bin, t.path()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is the input"), "{}", stderr(&o));
    assert_eq!(snapshot(t.path()), before);
    // The same folder through another spelling (a relative path with `..`).
    let o = Command::new(env!("CARGO_BIN_EXE_tlite"))
        .current_dir(t.path())
        .args(["quantize", "model.bin", "missing/../."])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", stderr(&o));
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn a_folder_that_is_not_a_tlite_output_is_never_replaced() {
    let t = tempfile::tempdir().unwrap();
    let hf = t.path().join("hf");
    write_tiny_hf_model(RefArch::Llama, &hf).unwrap();
    let other = t.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let second_hf = t.path().join("hf2");
    write_tiny_hf_model(RefArch::Qwen2, &second_hf).unwrap();
    let before = snapshot(t.path());
    for out in [&other, &second_hf] {
        let o = tlite(&[&hf, out]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("refusing to replace"), "{}", stderr(&o));
    }
    // A file is not replaced either.
    let file = t.path().join("hf/config.json");
    let o = tlite(&[&second_hf, &file]);
    assert!(!o.status.success());
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn quantising_again_replaces_the_whole_previous_output() {
    let t = tempfile::tempdir().unwrap();
    let hf = t.path().join("hf");
    write_tiny_hf_model(RefArch::Llama, &hf).unwrap();
    let l2c = t.path().join("l2c");
    std::fs::create_dir(&l2c).unwrap();
    let bin = llama2c_dir(&l2c);
    let out = t.path().join("q");
    assert!(tlite(&[&hf, &out]).status.success());
    assert!(names(&out).contains(&"tokenizer.json".to_string()));
    let o = tlite(&[&bin, &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The HF tokenizer.json of the first run would be preferred by the loader: it must be gone.
    assert_eq!(
        names(&out),
        ["config.json", "model.safetensors", "tokenizer.bin"]
    );
    assert_eq!(
        std::fs::read(out.join("tokenizer.bin")).unwrap(),
        b"vocabulary bytes"
    );
    // No temporary or previous folder is left beside it.
    assert_eq!(names(t.path()), ["hf", "l2c", "q"]);
    assert_eq!(engine::model::source_kind(&out).unwrap(), SourceKind::Tlite);
    load(&out, &LoadOptions::default()).unwrap();
}

#[test]
fn a_failed_quantize_leaves_no_folder_and_keeps_the_previous_output() {
    let t = tempfile::tempdir().unwrap();
    let hf = t.path().join("hf");
    write_tiny_hf_model(RefArch::Llama, &hf).unwrap();
    let out = t.path().join("q");
    let fresh = t.path().join("fresh");
    assert!(tlite(&[&hf, &out]).status.success());
    let previous = snapshot(&out);
    // Damage the source: loading it fails after the output checks passed.
    let st = hf.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    for target in [&out, &fresh] {
        let o = tlite(&[&hf, target]);
        assert!(!o.status.success());
    }
    assert_eq!(snapshot(&out), previous);
    assert_eq!(names(t.path()), ["hf", "q"]);
}

#[test]
fn embeddings_stay_f16_unless_asked() {
    let t = tempfile::tempdir().unwrap();
    let hf = t.path().join("hf");
    write_tiny_hf_model(RefArch::Llama, &hf).unwrap();
    let (plain, quant) = (t.path().join("a"), t.path().join("b"));
    assert!(tlite(&[&hf, &plain]).status.success());
    let o = tlite(&[&hf, &quant, &p("--quantize-embeddings")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = load(&plain, &LoadOptions::default()).unwrap();
    let b = load(&quant, &LoadOptions::default()).unwrap();
    assert!(matches!(a.weights.embedding.data, TensorData::F16(_)));
    assert!(matches!(a.weights.layers[0].wq.data, TensorData::M0e4(_)));
    assert!(matches!(b.weights.embedding.data, TensorData::M0e4(_)));
}

#[test]
fn output_without_a_vocabulary_gets_a_note() {
    let t = tempfile::tempdir().unwrap();
    let hf = t.path().join("hf");
    write_tiny_hf_model(RefArch::Llama, &hf).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::remove_file(hf.join(f)).unwrap();
    }
    let o = tlite(&[&hf, &t.path().join("q")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("has no tokenizer"), "{}", stderr(&o));
}

#[test]
fn the_library_refuses_the_same_outputs() {
    let t = tempfile::tempdir().unwrap();
    let hf = t.path().join("hf");
    write_tiny_hf_model(RefArch::Llama, &hf).unwrap();
    let e = tlite_format::check_output(&[&hf], &hf).unwrap_err();
    assert!(e.to_string().contains("is the input"), "{e}");
    tlite_format::check_output(&[&hf], &t.path().join("new/q")).unwrap();
}

#[test]
fn a_gguf_file_is_quantised_and_its_folder_is_not_taken_for_the_output() {
    let t = tempfile::tempdir().unwrap();
    let gguf = t.path().join("model.gguf");
    fixtures::gguf_models::write_gguf_model(
        &TinySpec::for_arch(RefArch::Llama),
        &gguf,
        fixtures::gguf_models::MatrixType::F16,
    )
    .unwrap();
    let before = snapshot(t.path());
    let o = tlite(&[&gguf, t.path()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("contains the input"), "{}", stderr(&o));
    assert_eq!(snapshot(t.path()), before);

    let out = t.path().join("q");
    let o = tlite(&[&gguf, &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The vocabulary lives inside the GGUF; the note says the folder has none of its own.
    assert!(stderr(&o).contains("has no tokenizer"), "{}", stderr(&o));
    assert_eq!(names(&out), ["config.json", "model.safetensors"]);
    let m = load(&out, &LoadOptions::default()).unwrap();
    assert!(matches!(m.weights.layers[0].wq.data, TensorData::M0e4(_)));
    assert!(matches!(m.weights.embedding.data, TensorData::F16(_)));
}
