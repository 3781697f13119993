//! `tlite_format::save_to` at the library level: a save that fails part-way leaves nothing behind, and one that
//! succeeds leaves exactly the folder (the CLI's end-to-end cases are in cli/tests/quantize_safety.rs).

#![allow(clippy::unwrap_used)]

use engine::model::{load, tlite_format, LoadOptions, WeightFormat};
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::write_tiny_hf_model;
use std::path::Path;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_save_that_fails_midway_leaves_no_partial_folder() {
    let src = tempfile::tempdir().unwrap();
    write_tiny_hf_model(RefArch::Llama, src.path()).unwrap();
    // f32 weights are refused after the temporary folder was made: it must be removed again.
    let f32_model = load(
        src.path(),
        &LoadOptions {
            quantize: WeightFormat::F32,
            keep_embeddings_f16: false,
        },
    )
    .unwrap();
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("q");
    assert!(tlite_format::save(&f32_model, src.path(), &out).is_err());
    assert!(
        entries(parent.path()).is_empty(),
        "{:?}",
        entries(parent.path())
    );

    // A failed replacement keeps the previous output byte for byte.
    let good = load(src.path(), &LoadOptions::default()).unwrap();
    tlite_format::save(&good, src.path(), &out).unwrap();
    let before: Vec<Vec<u8>> = entries(&out)
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    assert!(tlite_format::save(&f32_model, src.path(), &out).is_err());
    let after: Vec<Vec<u8>> = entries(&out)
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    assert_eq!(before, after);
    assert_eq!(entries(parent.path()), ["q"]);
}

#[test]
fn a_file_or_a_foreign_folder_is_never_a_target() {
    let src = tempfile::tempdir().unwrap();
    write_tiny_hf_model(RefArch::Llama, src.path()).unwrap();
    let m = load(src.path(), &LoadOptions::default()).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let e = tlite_format::save(&m, src.path(), &file).unwrap_err();
    assert!(e.to_string().contains("is not a folder"), "{e}");
    // The source folder itself: a Hugging Face folder, never replaced.
    let e = tlite_format::save(&m, src.path(), src.path()).unwrap_err();
    assert!(e.to_string().contains("refusing to replace"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    assert_eq!(entries(parent.path()), ["notes.txt"]);
    load(src.path(), &LoadOptions::default()).unwrap();
}
