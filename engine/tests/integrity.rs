//! Nothing silently wrong (issue 17, items 3 and 4): a damaged byte of a tlite folder is an error naming the tensor,
//! and NaN or infinity in any kept tensor of any format is an error naming tensor, row and column.

#![allow(clippy::unwrap_used)]

use engine::model::{load, tlite_format, LoadOptions, Model, TensorData, WeightFormat};
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::{generate, write_llama2c, write_tiny_hf_model, TinySpec};
use half::f16;
use std::path::Path;

fn m0e4(group: fp4::GroupSize) -> LoadOptions {
    LoadOptions {
        quantize: WeightFormat::M0e4 { group },
        keep_embeddings_f16: true,
    }
}

fn err(path: &Path) -> String {
    load(path, &LoadOptions::default()).unwrap_err().to_string()
}

/// A quantised tiny model and the folder it was saved to.
fn saved(group: fp4::GroupSize) -> (tempfile::TempDir, Model) {
    let src = tempfile::tempdir().unwrap();
    write_tiny_hf_model(RefArch::Llama, src.path()).unwrap();
    let m = load(src.path(), &m0e4(group)).unwrap();
    let out = tempfile::tempdir().unwrap();
    tlite_format::save(&m, src.path(), out.path()).unwrap();
    (out, m)
}

/// Byte range of tensor `name` in a safetensors file.
fn byte_range(file: &Path, name: &str) -> std::ops::Range<usize> {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let off = &header[name]["data_offsets"];
    let (a, b) = (off[0].as_u64().unwrap(), off[1].as_u64().unwrap());
    8 + n + a as usize..8 + n + b as usize
}

fn flip_byte(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(file, bytes).unwrap();
}

fn edit_config(folder: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = folder.join("config.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut j);
    std::fs::write(&p, serde_json::to_string_pretty(&j).unwrap()).unwrap();
}

#[test]
fn an_intact_folder_loads() {
    let (out, m) = saved(fp4::GroupSize::G32);
    assert_eq!(load(out.path(), &LoadOptions::default()).unwrap(), m);
}

#[test]
fn a_flipped_code_byte_names_its_tensor() {
    let (out, _) = saved(fp4::GroupSize::G32);
    let st = out.path().join("model.safetensors");
    let r = byte_range(&st, "layers.1.w_up.m0e4_codes");
    flip_byte(&st, r.start + r.len() / 2);
    let e = err(out.path());
    assert!(
        e.contains("tensor `layers.1.w_up` fails its SHA-256 checksum"),
        "{e}"
    );
}

#[test]
fn a_flipped_f16_byte_names_its_tensor() {
    let (out, _) = saved(fp4::GroupSize::G32);
    let st = out.path().join("model.safetensors");
    for (stored, tensor) in [
        ("embedding", "embedding"),
        ("layers.0.wk.m0e4_scales", "layers.0.wk"),
        ("final_norm", "final_norm"),
    ] {
        let r = byte_range(&st, stored);
        flip_byte(&st, r.start + 1);
        let e = err(out.path());
        assert!(e.contains(&format!("tensor `{tensor}` fails")), "{e}");
        flip_byte(&st, r.start + 1);
        load(out.path(), &LoadOptions::default()).unwrap();
    }
}

#[test]
fn an_edited_configuration_is_caught() {
    let (out, _) = saved(fp4::GroupSize::G32);
    edit_config(out.path(), |j| {
        j["tlite_config"]["rope_theta"] = serde_json::json!(500000.0)
    });
    let e = err(out.path());
    assert!(
        e.contains("`tlite_config` does not match its checksum"),
        "{e}"
    );
}

#[test]
fn checksums_cannot_be_dropped_or_mixed() {
    let (out, _) = saved(fp4::GroupSize::G32);
    let cfg = std::fs::read(out.path().join("config.json")).unwrap();
    edit_config(out.path(), |j| {
        j.as_object_mut().unwrap().remove("sha256");
    });
    assert!(err(out.path()).contains("missing the `sha256`"));
    // A crash between writes in the old layout left a new config beside old weights: now that cannot load.
    let (other, _) = saved(fp4::GroupSize::G64);
    std::fs::write(other.path().join("config.json"), cfg).unwrap();
    assert!(
        err(other.path()).contains("checksum"),
        "{}",
        err(other.path())
    );
    edit_config(out.path(), |j| j["tlite_format"] = serde_json::json!(1));
    assert!(err(out.path()).contains("older tlite"));
}

#[test]
fn an_unknown_version_is_named_without_debug_text() {
    let (out, _) = saved(fp4::GroupSize::G32);
    edit_config(out.path(), |j| j["tlite_format"] = serde_json::json!(7));
    let e = err(out.path());
    // It used to read "tlite_format Some(Number(7))".
    assert!(
        e.contains("tlite_format is 7, not the supported version 2"),
        "{e}"
    );
    assert!(!e.contains("Some(") && !e.contains("Number("), "{e}");
}

#[test]
fn nan_in_a_hugging_face_tensor_names_row_and_column() {
    let src = tempfile::tempdir().unwrap();
    write_tiny_hf_model(RefArch::Llama, src.path()).unwrap();
    let st = src.path().join("model.safetensors");
    let r = byte_range(&st, "model.layers.1.self_attn.v_proj.weight");
    let hidden = 64; // the tiny Llama's input width
    let at = r.start + 4 * (3 * hidden + 5);
    let mut bytes = std::fs::read(&st).unwrap();
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&st, bytes).unwrap();
    for opts in [
        LoadOptions::default(),
        LoadOptions {
            quantize: WeightFormat::F32,
            keep_embeddings_f16: false,
        },
    ] {
        let e = load(src.path(), &opts).unwrap_err().to_string();
        assert!(
            e.contains("tensor `layers.1.wv` holds NaN at row 3, column 5"),
            "{e}"
        );
    }
    // M0E4 refuses it too, whether the quantiser or the check finds it first.
    assert!(load(src.path(), &m0e4(fp4::GroupSize::G32)).is_err());
}

#[test]
fn infinity_in_a_llama2c_norm_names_its_element() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = generate(&TinySpec::llama2c(), fixtures::ops::RopeStyle::Interleaved);
    model.weights.final_norm[7] = f32::INFINITY;
    let bin = dir.path().join("model.bin");
    write_llama2c(&model, &bin).unwrap();
    let e = err(&bin);
    assert!(
        e.contains("tensor `final_norm` holds inf at element 7"),
        "{e}"
    );
}

#[test]
fn non_finite_values_in_a_tlite_folder_are_refused() {
    let src = tempfile::tempdir().unwrap();
    write_tiny_hf_model(RefArch::Llama, src.path()).unwrap();
    let good = load(src.path(), &m0e4(fp4::GroupSize::G32)).unwrap();

    // An f16 embedding value (written with valid checksums: only the value check can catch it).
    let mut m = good.clone();
    let cols = m.weights.embedding.cols();
    if let TensorData::F16(v) = &mut m.weights.embedding.data {
        v[10 * cols + 2] = f16::NAN;
    }
    let out = tempfile::tempdir().unwrap();
    tlite_format::save(&m, src.path(), out.path()).unwrap();
    let e = err(out.path());
    assert!(
        e.contains("tensor `embedding` holds NaN at row 10, column 2"),
        "{e}"
    );

    // An M0E4 scale.
    let mut m = good;
    let TensorData::M0e4(q) = &m.weights.layers[0].wo.data else {
        panic!("wo is not M0E4")
    };
    let (shape, group) = (q.shape(), q.group());
    let per_row = q.groups_per_row();
    let (codes, mut scales, offsets) = q.clone().into_parts();
    scales[per_row + 1] = f16::NEG_INFINITY;
    m.weights.layers[0].wo.data = TensorData::M0e4(
        fp4::M0e4Matrix::from_parts(shape, group, codes, scales, offsets).unwrap(),
    );
    tlite_format::save(&m, src.path(), out.path()).unwrap();
    let e = err(out.path());
    assert!(
        e.contains("tensor `layers.0.wo` has M0E4 scale -inf at row 1, columns 32..63"),
        "{e}"
    );
}
