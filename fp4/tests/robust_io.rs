//! Corrupted M0E4 safetensors files: reading returns an error (or the tensors, when the corruption is harmless)
//! and never panics. Each case runs under `catch_unwind`; the test lists every case that panicked.
#![allow(clippy::unwrap_used)]

use fp4::io::{parse, read_tensors, to_bytes};
use fp4::{quantize_m0e4, GroupSize, MatrixShape};
use half::f16;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A valid file: two matrices (group 32) and one dense tensor, from seeded random weights.
fn good_file() -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xf4f4);
    let mut m = |rows: usize, cols: usize| {
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        quantize_m0e4(&w, MatrixShape::new(rows, cols), GroupSize::G32).unwrap()
    };
    let (a, b) = (m(8, 64), m(4, 32));
    let dense: Vec<f16> = (0..12).map(|i| f16::from_f32(i as f32 * 0.25)).collect();
    to_bytes(&[("a", &a), ("b", &b)], &[("norm", &[3, 4], &dense)]).unwrap()
}

/// Parses and converts everything, as `read_tensors` does; results are ignored, only panics count.
fn read_all(bytes: &[u8]) {
    if let Ok(t) = parse(bytes, "case.safetensors") {
        for m in t.matrices.values() {
            let _ = m.to_matrix();
        }
        for d in t.dense.values() {
            let _ = d.to_dense();
        }
    }
}

/// Rewrites the JSON header, keeping the data bytes.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = header.to_string().into_bytes();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    out
}

#[test]
fn corrupted_m0e4_files_never_panic() {
    let good = good_file();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in (0..64).chain((64..good.len()).step_by(7)) {
        cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    for v in [0u64, 1, 7, n as u64 - 1, n as u64 + 1, 1 << 40, u64::MAX] {
        let mut b = good.clone();
        b[..8].copy_from_slice(&v.to_le_bytes());
        cases.push((format!("header length {v}"), b));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xbad);
    for i in 0..300 {
        let mut b = good.clone();
        let at = rng.random_range(8..8 + n);
        b[at] = rng.random();
        cases.push((format!("header byte {at} replaced ({i})"), b));
    }
    let tensors = [
        "a.m0e4_codes",
        "a.m0e4_scales",
        "a.m0e4_offsets",
        "b.m0e4_codes",
        "norm",
    ];
    let values = [
        ("shape", json!([0, u64::MAX])),
        ("shape", json!([u64::MAX, 0])),
        ("shape", json!([0, 1u64 << 62])),
        ("shape", json!([1u64 << 62, 0])),
        ("shape", json!([0, 0])),
        ("shape", json!([256])),
        ("shape", json!([2, 2, 64])),
        ("shape", json!([])),
        ("shape", json!([u64::MAX, u64::MAX])),
        ("shape", json!([-1, 32])),
        ("data_offsets", json!([0, u64::MAX])),
        ("data_offsets", json!([u64::MAX, 0])),
        ("data_offsets", json!([0, 0])),
        ("dtype", json!("F16")),
        ("dtype", json!("U8")),
        ("dtype", json!("F32")),
        ("dtype", json!("BOOL")),
        ("dtype", json!("F4")),
    ];
    for t in tensors {
        for (key, v) in &values {
            cases.push((
                format!("`{t}`.{key} = {v}"),
                with_header(&good, |h| h[t][*key] = v.clone()),
            ));
        }
        cases.push((
            format!("`{t}` removed"),
            with_header(&good, |h| {
                h.as_object_mut().unwrap().remove(t);
            }),
        ));
    }
    for key in ["format", "format_version", "group_size"] {
        for v in [
            json!("0"),
            json!("-1"),
            json!("18446744073709551616"),
            json!("4294967297"),
            json!(""),
            json!(32),
            Value::Null,
        ] {
            cases.push((
                format!("__metadata__.{key} = {v}"),
                with_header(&good, |h| h["__metadata__"][key] = v.clone()),
            ));
        }
    }
    // Empty tensors pass safetensors' byte-count check whatever their other dimension claims.
    for (rows, half_cols) in [
        (0usize, 1usize << 63),
        (1 << 63, 0),
        (0, usize::MAX),
        (0, 16),
    ] {
        let meta = HashMap::from([
            ("format".to_string(), "m0e4".to_string()),
            ("format_version".to_string(), "1".to_string()),
            ("group_size".to_string(), "32".to_string()),
        ]);
        let groups = half_cols.saturating_mul(2) / 32;
        let views = vec![
            (
                "m.m0e4_codes",
                TensorView::new(Dtype::U8, vec![rows, half_cols], &[]).unwrap(),
            ),
            (
                "m.m0e4_scales",
                TensorView::new(Dtype::F16, vec![rows, groups], &[]).unwrap(),
            ),
            (
                "m.m0e4_offsets",
                TensorView::new(Dtype::F16, vec![rows, groups], &[]).unwrap(),
            ),
        ];
        cases.push((
            format!("empty codes shaped [{rows}, {half_cols}]"),
            safetensors::serialize(views, Some(meta)).unwrap(),
        ));
    }
    let mut panicked = Vec::new();
    for (name, bytes) in &cases {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| read_all(bytes))) {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            panicked.push(format!("{name}: {msg}"));
        }
    }
    // The file path of read_tensors too, for a few of the cases.
    let path = std::env::temp_dir().join(format!("fp4_robust_{}.safetensors", std::process::id()));
    for (name, bytes) in cases.iter().step_by(25) {
        std::fs::write(&path, bytes).unwrap();
        if catch_unwind(|| read_tensors(&path)).is_err() {
            panicked.push(format!("read_tensors, {name}"));
        }
    }
    let _ = std::fs::remove_file(&path);
    assert!(
        parse(&good, "good").is_ok(),
        "the uncorrupted file must parse"
    );
    assert!(
        panicked.is_empty(),
        "{} of {} cases panicked:\n{}",
        panicked.len(),
        cases.len(),
        panicked.join("\n")
    );
}

#[test]
fn a_dense_shape_whose_element_count_overflows_is_refused() {
    // usize::MAX / 2 * 4 wraps to a small number in release builds; unchecked it could match the data length.
    let shape = [usize::MAX / 2 + 1, 2, 1];
    let data = [half::f16::ZERO; 0];
    let err = fp4::io::to_bytes(&[], &[("t", &shape, &data)]).unwrap_err();
    assert!(err.to_string().contains("overflows"), "{err}");
}
