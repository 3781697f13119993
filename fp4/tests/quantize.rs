//! Properties of the M0E4 quantiser, the bit recipe and the reference kernels, checked on fresh
//! random weights.
#![allow(clippy::unwrap_used)]

use fp4::recipe::{h_bits_f16, h_bits_f32, h_f16, h_f32};
use fp4::reference::{dequantize, matvec};
use fp4::{
    quantize_m0e4, quantize_m0e4_with, Fp4Error, GroupSize, M0e4Matrix, MatrixShape, SearchEffort,
};
use half::{bf16, f16};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, StudentT};

fn gaussian(n: usize, sigma: f32, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let d = Normal::new(0.0f32, sigma).unwrap();
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

/// Bound on |w - x| for one element of group `gi`: half a step (s/32) plus what rounding `s`
/// and `b` to f16 can move the grid (2^-11 relative each, doubled for f32 evaluation), plus
/// the f16 subnormal spacing.
fn bound(m: &M0e4Matrix, gi: usize) -> f32 {
    let (s, b) = (m.scales()[gi].to_f32(), m.offsets()[gi].to_f32());
    s / 32.0 + (s.abs() + b.abs()) * 2f32.powi(-10) + 2f32.powi(-20)
}

#[test]
fn bit_recipe_matches_formula_for_all_codes() {
    for q in 0u8..16 {
        let exact = 1.0 + f32::from(q) / 16.0;
        assert_eq!(
            h_bits_f16(q),
            f16::from_f32(exact).to_bits(),
            "f16 bits, q={q}"
        );
        assert_eq!(h_bits_f32(q), exact.to_bits(), "f32 bits, q={q}");
        assert_eq!(h_f16(q).to_f32(), exact, "f16 value, q={q}");
        assert_eq!(h_f32(q), exact, "f32 value, q={q}");
        assert_eq!(u32::from(h_bits_f16(q)), 0x3C00 | (u32::from(q) << 6));
        assert_eq!(h_bits_f32(q), 0x3F80_0000 | (u32::from(q) << 19));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every weight ends within half a quantisation step (s/16 / 2) of its original, for any
    /// scale, offset and group size, and its code is the nearest of the 16 levels.
    #[test]
    fn round_trip_within_half_step(
        rows in 1usize..4,
        groups in 1usize..4,
        gsel in 0usize..3,
        log_scale in -3.0f32..3.0,
        centre in -4.0f32..4.0,
        unit in prop::collection::vec(-1.0f32..1.0, 3 * 128 * 3),
    ) {
        let group = GroupSize::ALL[gsel];
        let shape = MatrixShape::new(rows, groups * group.len());
        let a = 10f32.powf(log_scale);
        let w: Vec<f32> = unit[..shape.len()].iter().map(|u| a * (centre + u)).collect();
        let m = quantize_m0e4(&w, shape, group).unwrap();
        let back = dequantize(&m);
        for (i, (&x, &y)) in w.iter().zip(&back).enumerate() {
            let (r, c) = (i / shape.cols, i % shape.cols);
            let gi = r * m.groups_per_row() + c / group.len();
            prop_assert!((x - y).abs() <= bound(&m, gi), "elem {i}: {x} -> {y}, bound {}", bound(&m, gi));
            // The chosen code is (up to f32 ties) the nearest level.
            let (s, b) = (m.scales()[gi], m.offsets()[gi]);
            let best = (0u8..16).map(|q| (fp4::recipe::dequant_one(q, s, b) - x).abs()).fold(f32::INFINITY, f32::min);
            prop_assert!((y - x).abs() <= best + 1e-6 * (x.abs() + b.to_f32().abs() + s.to_f32()), "elem {i} not nearest");
        }
    }

    /// f16 and bf16 inputs quantise exactly as their f32 values do.
    #[test]
    fn half_inputs_match_f32(unit in prop::collection::vec(-3.0f32..3.0, 64)) {
        let shape = MatrixShape::new(2, 32);
        let h: Vec<f16> = unit.iter().map(|&v| f16::from_f32(v)).collect();
        let hb: Vec<bf16> = unit.iter().map(|&v| bf16::from_f32(v)).collect();
        let hf: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        let bf: Vec<f32> = hb.iter().map(|v| v.to_f32()).collect();
        prop_assert_eq!(quantize_m0e4(&h, shape, GroupSize::G32).unwrap(), quantize_m0e4(&hf, shape, GroupSize::G32).unwrap());
        prop_assert_eq!(quantize_m0e4(&hb, shape, GroupSize::G32).unwrap(), quantize_m0e4(&bf, shape, GroupSize::G32).unwrap());
    }
}

#[test]
fn packed_layout_matches_the_documented_nibble_and_word_order() {
    let shape = MatrixShape::new(3, 64);
    let w = gaussian(shape.len(), 1.0, 11);
    let m = quantize_m0e4(&w, shape, GroupSize::G32).unwrap();
    let deq = dequantize(&m);
    let mut distinct = std::collections::HashSet::new();
    for r in 0..shape.rows {
        let row = m.row_codes(r);
        assert_eq!(row.len(), shape.cols / 2);
        for (t, word) in row.chunks_exact(4).enumerate() {
            let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            for i in 0..8 {
                let q = ((word >> (4 * i)) & 0xF) as u8;
                let c = 8 * t + i;
                assert_eq!(q, m.code(r, c));
                assert_eq!(
                    q,
                    (m.codes()[r * shape.cols / 2 + c / 2] >> (4 * (c % 2))) & 0xF
                );
                let gi = r * m.groups_per_row() + c / 32;
                let expect = m.scales()[gi].to_f32() * h_f32(q) + m.offsets()[gi].to_f32();
                assert_eq!(deq[r * shape.cols + c].to_bits(), expect.to_bits());
                assert_eq!(m.value(r, c).to_bits(), expect.to_bits());
                distinct.insert(q);
            }
        }
    }
    assert!(
        distinct.len() >= 14,
        "Gaussian data should use nearly all codes, got {distinct:?}"
    );
}

#[test]
fn matvec_matches_dequantise_then_dense() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for (rows, cols, group) in [
        (7, 96, GroupSize::G32),
        (33, 128, GroupSize::G64),
        (5, 256, GroupSize::G128),
    ] {
        let shape = MatrixShape::new(rows, cols);
        let w = gaussian(shape.len(), 0.05, rng.random());
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let m = quantize_m0e4(&w, shape, group).unwrap();
        let deq = dequantize(&m);
        let y = matvec(&m, &x).unwrap();
        assert_eq!(y.len(), rows);
        for r in 0..rows {
            let row = &deq[r * cols..(r + 1) * cols];
            let dense: f64 = row
                .iter()
                .zip(&x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let mag: f64 = row
                .iter()
                .zip(&x)
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum();
            assert!(
                (f64::from(y[r]) - dense).abs() <= 1e-6 * mag + 1e-12,
                "row {r}: {} vs {dense}",
                y[r]
            );
        }
    }
}

#[test]
fn search_beats_min_max_on_gaussian_weights() {
    let shape = MatrixShape::new(64, 512);
    let w = gaussian(shape.len(), 0.02, 3);
    let err = |e: SearchEffort| {
        let m = quantize_m0e4_with(&w, shape, GroupSize::G32, e).unwrap();
        fp4::stats::error_stats(&w, &dequantize(&m)).rms
    };
    let minmax = err(SearchEffort {
        steps: 1,
        refits: 0,
    });
    let searched = err(SearchEffort::default());
    assert!(
        searched < 0.97 * minmax,
        "search rms {searched} vs min/max {minmax}"
    );
}

#[test]
fn constant_groups_are_exact_up_to_f16() {
    let shape = MatrixShape::new(1, 64);
    let mut w = vec![0.3f32; 32];
    w.extend(gaussian(32, 1.0, 9));
    let m = quantize_m0e4(&w, shape, GroupSize::G32).unwrap();
    assert_eq!(m.scales()[0], f16::ZERO);
    assert!(dequantize(&m)[..32]
        .iter()
        .all(|&v| v == f16::from_f32(0.3).to_f32()));
}

#[test]
fn bad_input_gets_named_errors() {
    let w = gaussian(2 * 64, 1.0, 1);
    let shape = MatrixShape::new(2, 64);
    assert!(matches!(
        quantize_m0e4(&w[..2 * 48], MatrixShape::new(2, 48), GroupSize::G32),
        Err(Fp4Error::ColsNotMultipleOfGroup {
            cols: 48,
            group: 32
        })
    ));
    assert!(matches!(
        quantize_m0e4(&w, MatrixShape::new(1, 64), GroupSize::G128),
        Err(Fp4Error::ColsNotMultipleOfGroup {
            cols: 64,
            group: 128
        })
    ));
    assert!(matches!(
        quantize_m0e4(&w[1..], shape, GroupSize::G32),
        Err(Fp4Error::LengthMismatch {
            expected: 128,
            actual: 127,
            ..
        })
    ));
    assert!(matches!(
        quantize_m0e4(&w[..0], MatrixShape::new(0, 64), GroupSize::G32),
        Err(Fp4Error::EmptyShape { .. })
    ));
    // rows * cols overflows usize: refused by name, never wrapped into a small length.
    let huge = MatrixShape::new(usize::MAX / 32 + 1, 64);
    assert_eq!(huge.checked_len(), None);
    assert!(!huge.is_empty());
    assert!(matches!(
        quantize_m0e4(&w, huge, GroupSize::G32),
        Err(Fp4Error::ShapeOverflow { cols: 64, .. })
    ));
    assert!(matches!(
        M0e4Matrix::from_parts(huge, GroupSize::G32, vec![], vec![], vec![]),
        Err(Fp4Error::ShapeOverflow { cols: 64, .. })
    ));
    let mut bad = w.clone();
    bad[64 + 37] = f32::NAN;
    assert!(matches!(
        quantize_m0e4(&bad, shape, GroupSize::G32),
        Err(Fp4Error::NonFinite {
            row: 1,
            col: 37,
            ..
        })
    ));
    bad[64 + 37] = 1.0;
    bad[5] = f32::NEG_INFINITY;
    assert!(matches!(
        quantize_m0e4(&bad, shape, GroupSize::G32),
        Err(Fp4Error::NonFinite { row: 0, col: 5, .. })
    ));
    bad[5] = 60000.0;
    bad[6] = -60000.0;
    assert!(matches!(
        quantize_m0e4(&bad, shape, GroupSize::G32),
        Err(Fp4Error::OutOfF16Range {
            row: 0,
            group_index: 0,
            ..
        })
    ));
    assert!(matches!(
        GroupSize::try_from(48),
        Err(Fp4Error::InvalidGroupSize(48))
    ));
    let m = quantize_m0e4(&w, shape, GroupSize::G32).unwrap();
    assert!(matches!(
        matvec(&m, &w[..63]),
        Err(Fp4Error::VectorLength {
            expected: 64,
            actual: 63
        })
    ));
    let (codes, scales, offsets) = m.into_parts();
    assert!(matches!(
        M0e4Matrix::from_parts(
            shape,
            GroupSize::G32,
            codes[1..].to_vec(),
            scales.clone(),
            offsets.clone()
        ),
        Err(Fp4Error::PartLength { part: "codes", .. })
    ));
    assert!(matches!(
        M0e4Matrix::from_parts(shape, GroupSize::G32, codes, scales, offsets[1..].to_vec()),
        Err(Fp4Error::PartLength {
            part: "offsets",
            ..
        })
    ));
}

#[test]
fn heavy_tailed_outliers_are_never_clipped() {
    let shape = MatrixShape::new(16, 256);
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let t = StudentT::new(3.0f32).unwrap();
    let w: Vec<f32> = (0..shape.len())
        .map(|_| 0.02 * t.sample(&mut rng))
        .collect();
    for group in GroupSize::ALL {
        let m = quantize_m0e4(&w, shape, group).unwrap();
        let back = dequantize(&m);
        for (i, (&x, &y)) in w.iter().zip(&back).enumerate() {
            let gi = i / group.len();
            assert!(
                (x - y).abs() <= bound(&m, gi),
                "G={group} elem {i}: {x} -> {y}"
            );
        }
    }
}
