//! Safetensors round trips and every rejection of a file that is not a loadable M0E4 model.
#![allow(clippy::unwrap_used)]

use fp4::io::{parse, read_tensors, to_bytes, write_tensors, DenseF16};
use fp4::{quantize_m0e4, Fp4Error, GroupSize, M0e4Matrix, MatrixShape};
use half::f16;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;

fn random_matrix(rows: usize, cols: usize, group: GroupSize, seed: u64) -> M0e4Matrix {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-0.5f32..0.5))
        .collect();
    quantize_m0e4(&w, MatrixShape::new(rows, cols), group).unwrap()
}

fn message(e: Fp4Error) -> String {
    e.to_string()
}

/// A hand-made safetensors file with the given metadata and `(name, dtype, shape, bytes)` tensors.
fn custom(meta: &[(&str, &str)], tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

const GOOD_META: [(&str, &str); 3] = [
    ("format", "m0e4"),
    ("format_version", "1"),
    ("group_size", "32"),
];

fn matrix_tensors(
    name: &str,
    rows: usize,
    cols: usize,
    gpr: usize,
) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut bytes = |n: usize| {
        (0..n)
            .map(|_| rng.random::<u8>() & 0x3B)
            .collect::<Vec<u8>>()
    };
    vec![
        (
            format!("{name}.m0e4_codes"),
            Dtype::U8,
            vec![rows, cols / 2],
            bytes(rows * cols / 2),
        ),
        (
            format!("{name}.m0e4_scales"),
            Dtype::F16,
            vec![rows, gpr],
            bytes(rows * gpr * 2),
        ),
        (
            format!("{name}.m0e4_offsets"),
            Dtype::F16,
            vec![rows, gpr],
            bytes(rows * gpr * 2),
        ),
    ]
}

fn as_refs(t: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> {
    t.iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect()
}

#[test]
fn whole_model_round_trips_through_a_file() {
    for group in GroupSize::ALL {
        let wq = random_matrix(5, 256, group, 1);
        let w1 = random_matrix(17, 128, group, 2);
        let norm: Vec<f16> = (0..64)
            .map(|i| f16::from_f32(1.0 + i as f32 / 100.0))
            .collect();
        let path = std::env::temp_dir().join(format!(
            "fp4-io-test-{}-{group}.safetensors",
            std::process::id()
        ));
        write_tensors(
            &path,
            &[("layers.0.wq", &wq), ("layers.0.w1", &w1)],
            &[("norm", &[64], &norm)],
        )
        .unwrap();
        let file = read_tensors(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.group, group);
        assert_eq!(file.matrices.len(), 2);
        assert_eq!(file.matrices["layers.0.wq"], wq);
        assert_eq!(file.matrices["layers.0.w1"], w1);
        assert_eq!(
            file.dense["norm"],
            DenseF16 {
                shape: vec![64],
                data: norm.clone()
            }
        );
    }
}

#[test]
fn borrowed_view_holds_the_exact_bytes() {
    let m = random_matrix(3, 64, GroupSize::G32, 3);
    let bytes = to_bytes(&[("w", &m)], &[]).unwrap();
    let t = parse(&bytes, "mem").unwrap();
    let r = &t.matrices["w"];
    assert_eq!(r.codes, m.codes());
    let scales: Vec<u8> = m.scales().iter().flat_map(|s| s.to_le_bytes()).collect();
    assert_eq!(r.scales_le, scales.as_slice());
    assert_eq!(r.to_matrix().unwrap(), m);
}

#[test]
fn writer_rejects_mixed_group_sizes_and_bad_names() {
    let a = random_matrix(2, 128, GroupSize::G32, 5);
    let b = random_matrix(2, 128, GroupSize::G64, 6);
    assert!(message(to_bytes(&[("a", &a), ("b", &b)], &[]).unwrap_err()).contains("group size 64"));
    let d = [f16::ONE; 4];
    assert!(
        message(to_bytes(&[("a", &a)], &[("x.m0e4_codes", &[4], &d)]).unwrap_err())
            .contains("reserved")
    );
    assert!(message(to_bytes(&[], &[("x", &[5], &d)]).unwrap_err()).contains("needs 5"));
    assert!(
        message(to_bytes(&[("a", &a)], &[("a.m0e4_codes", &[4], &d)]).unwrap_err())
            .contains("reserved")
    );
}

#[test]
fn loader_accepts_a_hand_made_good_file() {
    let t = matrix_tensors("w", 4, 64, 2);
    let bytes = custom(&GOOD_META, &as_refs(&t));
    let parsed = parse(&bytes, "good").unwrap();
    assert_eq!(parsed.matrices["w"].shape, MatrixShape::new(4, 64));
}

#[test]
fn loader_rejects_wrong_format_or_version() {
    let t = matrix_tensors("w", 4, 64, 2);
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[
                ("format", "m0e4"),
                ("format_version", "2"),
                ("group_size", "32"),
            ],
            "unsupported M0E4 format version `2`",
        ),
        (
            &[
                ("format", "gguf"),
                ("format_version", "1"),
                ("group_size", "32"),
            ],
            "format is `gguf`",
        ),
        (
            &[("format", "m0e4"), ("group_size", "32")],
            "no `format_version`",
        ),
        (
            &[("format_version", "1"), ("group_size", "32")],
            "no `format`",
        ),
        (
            &[
                ("format", "m0e4"),
                ("format_version", "1"),
                ("group_size", "48"),
            ],
            "unsupported group size `48`",
        ),
    ];
    for (meta, expect) in cases {
        let err = message(parse(&custom(meta, &as_refs(&t)), "f.safetensors").unwrap_err());
        assert!(
            err.contains(expect) && err.contains("f.safetensors"),
            "{err}"
        );
    }
    let plain = safetensors::serialize(
        vec![(
            "x",
            TensorView::new(Dtype::F16, vec![2], &[0, 60, 0, 60]).unwrap(),
        )],
        None::<HashMap<String, String>>,
    )
    .unwrap();
    assert!(message(parse(&plain, "p").unwrap_err()).contains("no __metadata__"));
}

#[test]
fn loader_rejects_group_size_that_disagrees_with_the_shapes() {
    // Scales shaped for G=32 (2 groups per 64-wide row) in a file that says G=64.
    let t = matrix_tensors("w", 4, 64, 2);
    let meta = [
        ("format", "m0e4"),
        ("format_version", "1"),
        ("group_size", "64"),
    ];
    let err = message(parse(&custom(&meta, &as_refs(&t)), "f").unwrap_err());
    assert!(err.contains("group size 64 needs [4, 1]"), "{err}");
    // Columns not a multiple of the group size.
    let t = matrix_tensors("w", 4, 48, 1);
    let err = message(parse(&custom(&GOOD_META, &as_refs(&t)), "f").unwrap_err());
    assert!(err.contains("not a multiple of the group size 32"), "{err}");
}

#[test]
fn loader_rejects_wrong_sizes_dtypes_and_missing_parts() {
    // Scales with one row too few.
    let mut t = matrix_tensors("w", 4, 64, 2);
    t[1] = ("w.m0e4_scales".into(), Dtype::F16, vec![3, 2], vec![0; 12]);
    let err = message(parse(&custom(&GOOD_META, &as_refs(&t)), "f").unwrap_err());
    assert!(
        err.contains("w.m0e4_scales") && err.contains("[3, 2]"),
        "{err}"
    );
    // Offsets missing.
    let t = matrix_tensors("w", 4, 64, 2);
    let err = message(parse(&custom(&GOOD_META, &as_refs(&t[..2])), "f").unwrap_err());
    assert!(err.contains("no `w.m0e4_offsets`"), "{err}");
    // Codes stored as F16.
    let mut t = matrix_tensors("w", 4, 64, 2);
    t[0] = ("w.m0e4_codes".into(), Dtype::F16, vec![4, 32], vec![0; 256]);
    let err = message(parse(&custom(&GOOD_META, &as_refs(&t)), "f").unwrap_err());
    assert!(err.contains("dtype F16, expected U8"), "{err}");
    // Scales without codes.
    let t = matrix_tensors("w", 4, 64, 2);
    let err = message(parse(&custom(&GOOD_META, &as_refs(&t[1..])), "f").unwrap_err());
    assert!(err.contains("no matching `w.m0e4_codes`"), "{err}");
    // A dense tensor in F32.
    let mut t = matrix_tensors("w", 4, 64, 2);
    t.push(("norm".into(), Dtype::F32, vec![2], vec![0; 8]));
    let err = message(parse(&custom(&GOOD_META, &as_refs(&t)), "f").unwrap_err());
    assert!(err.contains("`norm` has dtype F32"), "{err}");
    // Truncated file.
    let good = custom(&GOOD_META, &as_refs(&matrix_tensors("w", 4, 64, 2)));
    assert!(matches!(
        parse(&good[..good.len() - 3], "f"),
        Err(Fp4Error::Safetensors { .. })
    ));
    // Missing file.
    assert!(matches!(
        read_tensors(std::path::Path::new("/nonexistent/x.safetensors")),
        Err(Fp4Error::Io { .. })
    ));
}
