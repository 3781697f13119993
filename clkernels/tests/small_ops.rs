//! Norms, rotary, embedding, sampling and elementwise kernels against `fixtures::ops`.
//!
//! Tolerances: norms 1e-5 absolute + 1e-5 relative (f32 on both sides; soft-cap too, with the device's tanh); rotary 5e-5 absolute + 1e-5 relative (angles
//! are formed in f32 with the device's sin/cos, f64 in the reference, positions up to ~255 here; the H100 showed
//! 2.4e-5); softmax 1e-6 absolute; embedding exact
//! up to one f32 rounding of the scale; argmax exact.
#![allow(clippy::unwrap_used)]

mod common;

use clkernels::kernels::elementwise::{Elementwise, RowCopy};
use clkernels::kernels::embedding::{check_ids, Embedding};
use clkernels::kernels::matvec::{DeviceF16Matrix, DeviceM0e4};
use clkernels::kernels::norm::{Norm, RmsNormParams, RowsShape};
use clkernels::kernels::rope::{HeadsLayout, Rope, RopeConfig, RopeStyle, RopeTable};
use clkernels::kernels::sampling::Sampling;
use clkernels::kernels::GatedActivation;
use clkernels::runtime::DeviceBuffer;
use common::*;
use fixtures::ops;
use fp4::{GroupSize, MatrixShape};
use half::f16;
use rand::Rng;

#[test]
fn rmsnorm_matches_reference() {
    let gpu = gpu();
    let mut rng = rng("norms");
    let norm = Norm::new(&gpu).unwrap();
    for (rows, dim) in [(3, 288), (5, 1000), (1, 17)] {
        let shape = RowsShape { rows, dim };
        let x = normal(&mut rng, rows * dim, 2.0);
        let w = normal(&mut rng, dim, 1.0);
        let (xd, wd) = (upload(&gpu, &x), upload(&gpu, &w));
        for offset in [0.0, 1.0] {
            let mut y = poisoned(&gpu, rows * dim);
            let p = RmsNormParams {
                eps: 1e-5,
                weight_offset: offset,
            };
            norm.rms(&xd, &wd, &mut y, shape, p).unwrap();
            let want = ops::rmsnorm(&x, &w, 1e-5, offset);
            assert_close(
                &format!("rmsnorm {rows}x{dim} +{offset}"),
                &y.read(&gpu).unwrap(),
                &want,
                1e-5,
                1e-5,
            );
        }
        let mut inplace = upload(&gpu, &x);
        norm.rms_in_place(
            &mut inplace,
            &wd,
            shape,
            RmsNormParams {
                eps: 1e-6,
                weight_offset: 0.0,
            },
        )
        .unwrap();
        assert_close(
            "rmsnorm in place",
            &inplace.read(&gpu).unwrap(),
            &ops::rmsnorm(&x, &w, 1e-6, 0.0),
            1e-5,
            1e-5,
        );
    }
}

/// Gemma 2/3's post norms (`acc += rmsnorm(x)`) and Qwen3/Gemma 3's per-head q/k norms over one part of a
/// fused QKV buffer, which must leave every other value of the buffer as it was.
#[test]
fn residual_and_per_head_rmsnorms_match_reference() {
    let gpu = gpu();
    let mut rng = rng("norms add heads");
    let norm = Norm::new(&gpu).unwrap();
    for (rows, dim, offset) in [(3, 288, 0.0), (1, 17, 1.0)] {
        let shape = RowsShape { rows, dim };
        let x = normal(&mut rng, rows * dim, 2.0);
        let w = normal(&mut rng, dim, 1.0);
        let acc = normal(&mut rng, rows * dim, 1.0);
        let p = RmsNormParams {
            eps: 1e-6,
            weight_offset: offset,
        };
        let mut accd = upload(&gpu, &acc);
        norm.rms_add(&upload(&gpu, &x), &upload(&gpu, &w), &mut accd, shape, p)
            .unwrap();
        let normed = ops::rmsnorm(&x, &w, 1e-6, offset);
        let want: Vec<f32> = acc.iter().zip(&normed).map(|(a, n)| a + n).collect();
        assert_close(
            &format!("rmsnorm_add {rows}x{dim}"),
            &accd.read(&gpu).unwrap(),
            &want,
            1e-5,
            1e-5,
        );
    }
    // Tokens of [q: 4 heads | k: 2 heads | v: 2 heads] of 24; the k heads are normed, q and v stay.
    let (seq, heads, kv_heads, hd) = (5, 4, 2, 24);
    let stride = (heads + 2 * kv_heads) * hd;
    let qkv = normal(&mut rng, seq * stride, 2.0);
    let w = normal(&mut rng, hd, 1.0);
    for offset in [0.0, 1.0] {
        let mut d = upload(&gpu, &qkv);
        let k = HeadsLayout {
            offset: heads * hd,
            token_stride: stride,
            heads: kv_heads,
            seq,
        };
        let p = RmsNormParams {
            eps: 1e-6,
            weight_offset: offset,
        };
        norm.rms_heads_in_place(&mut d, k, hd, &upload(&gpu, &w), p)
            .unwrap();
        let mut want = qkv.clone();
        for t in 0..seq {
            let at = t * stride + heads * hd;
            let part = &mut want[at..at + kv_heads * hd];
            let normed = ops::rmsnorm(part, &w, 1e-6, offset);
            part.copy_from_slice(&normed);
        }
        assert_close(
            &format!("rmsnorm_heads +{offset}"),
            &d.read(&gpu).unwrap(),
            &want,
            1e-5,
            1e-5,
        );
        // A layout reaching past the buffer is refused.
        let over = HeadsLayout { seq: seq + 1, ..k };
        assert!(norm
            .rms_heads_in_place(&mut d, over, hd, &upload(&gpu, &w), p)
            .is_err());
    }
}

#[test]
fn rope_matches_reference_for_both_styles_partial_dims_and_strided_layouts() {
    let gpu = gpu();
    let mut rng = rng("rope");
    let rope = Rope::new(&gpu).unwrap();
    for (style, head_dim, rotary_dim, theta) in [
        (RopeStyle::Interleaved, 64, 64, 10000.0),
        (RopeStyle::HalfSplit, 64, 64, 500000.0),
        (RopeStyle::HalfSplit, 80, 40, 10000.0),
        (RopeStyle::Interleaved, 48, 16, 1e6),
    ] {
        let (seq, heads, kv_heads, past) = (5, 4, 2, 250);
        // A fused [q; k; v] row per token: rotate the q part (offset 0) and the k part (offset heads*head_dim).
        let stride = (heads + 2 * kv_heads) * head_dim;
        let qkv = normal(&mut rng, seq * stride, 1.0);
        let mut xd = upload(&gpu, &qkv);
        let cfg = RopeConfig {
            head_dim,
            rotary_dim,
            theta,
            style,
        };
        rope.enqueue(
            &mut xd,
            HeadsLayout {
                offset: 0,
                token_stride: stride,
                heads,
                seq,
            },
            cfg,
            past,
        )
        .unwrap();
        let k_layout = HeadsLayout {
            offset: heads * head_dim,
            token_stride: stride,
            heads: kv_heads,
            seq,
        };
        rope.enqueue(&mut xd, k_layout, cfg, past).unwrap();
        let got = xd.read(&gpu).unwrap();
        let ref_style = match style {
            RopeStyle::Interleaved => ops::RopeStyle::Interleaved,
            RopeStyle::HalfSplit => ops::RopeStyle::HalfSplit,
        };
        let params = ops::RopeParams {
            head_dim,
            rotary_dim,
            rope_theta: theta,
            style: ref_style,
        };
        let mut want = qkv.clone();
        for t in 0..seq {
            let row = &mut want[t * stride..(t + 1) * stride];
            ops::rope(&mut row[..heads * head_dim], heads, params, past + t);
            ops::rope(
                &mut row[heads * head_dim..(heads + kv_heads) * head_dim],
                kv_heads,
                params,
                past + t,
            );
        }
        // At positions ~250 the angle is up to ~250 rad: a few f32 ulps of error in the device's exp2 (NVIDIA's
        // is not correctly rounded) move it by up to ~5e-5 rad, and each output by that times its pair's
        // magnitude (up to ~4 here). The reference works in f64. A wrong rotation errs by O(1).
        assert_close(
            &format!("rope {style:?} hd{head_dim} rd{rotary_dim}"),
            &got,
            &want,
            3e-4,
            1e-5,
        );
    }
}

#[test]
fn embedding_gathers_f16_and_m0e4_rows_with_scale() {
    let gpu = gpu();
    let mut rng = rng("embedding");
    let emb = Embedding::new(&gpu).unwrap();
    let (vocab, dim) = (50, 96);
    let ids: Vec<u32> = (0..7).map(|_| rng.random_range(0..vocab as u32)).collect();
    check_ids(&ids, vocab).unwrap();
    assert!(check_ids(&[3, vocab as u32], vocab).is_err());
    let idd = upload(&gpu, &ids);
    let scale = (dim as f32).sqrt();

    let table: Vec<f16> = normal(&mut rng, vocab * dim, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let tf: Vec<f32> = table.iter().map(|v| v.to_f32()).collect();
    let td = DeviceF16Matrix::upload(&gpu, &table, MatrixShape::new(vocab, dim)).unwrap();
    let mut out = poisoned(&gpu, ids.len() * dim);
    emb.enqueue_f16(&td, &idd, ids.len(), &mut out, scale)
        .unwrap();
    assert_close(
        "embed f16",
        &out.read(&gpu).unwrap(),
        &ops::embedding(&tf, dim, &ids, scale),
        0.0,
        1e-6,
    );

    for group in GroupSize::ALL {
        let m = random_m0e4(&mut rng, vocab, 128, group);
        let dense = fp4::reference::dequantize(&m);
        let md = DeviceM0e4::upload(&gpu, &m).unwrap();
        let mut out = poisoned(&gpu, ids.len() * 128);
        emb.enqueue_m0e4(&md, &idd, ids.len(), &mut out, 1.0)
            .unwrap();
        let want = ops::embedding(&dense, 128, &ids, 1.0);
        assert_close(
            &format!("embed m0e4 G{}", group.len()),
            &out.read(&gpu).unwrap(),
            &want,
            1e-7,
            1e-6,
        );
    }
}

#[test]
fn softmax_and_argmax_match_reference() {
    let gpu = gpu();
    let mut rng = rng("sampling");
    let s = Sampling::new(&gpu).unwrap();
    let (rows, n) = (3, 1037);
    let mut x = normal(&mut rng, rows * n, 3.0);
    // A tie for the maximum in row 0: the lower index must win.
    let top = x[..n].iter().copied().fold(f32::MIN, f32::max) + 1.0;
    x[100] = top;
    x[900] = top;
    let xd = upload(&gpu, &x);
    for temperature in [1.0, 0.7] {
        let mut y = poisoned(&gpu, rows * n);
        s.softmax(&xd, &mut y, RowsShape { rows, dim: n }, temperature)
            .unwrap();
        let scaled: Vec<f32> = x.iter().map(|v| v / temperature).collect();
        assert_close(
            &format!("softmax T{temperature}"),
            &y.read(&gpu).unwrap(),
            &ops::softmax(&scaled, n),
            1e-6,
            1e-4,
        );
    }
    let mut idx = DeviceBuffer::<u32>::new(&gpu, 1).unwrap();
    s.argmax(&xd, n, &mut idx).unwrap();
    assert_eq!(
        idx.read(&gpu).unwrap()[0] as usize,
        ops::argmax(&x[..n]).unwrap()
    );
    assert_eq!(idx.read(&gpu).unwrap()[0], 100);
}

#[test]
fn elementwise_add_gating_and_bias_match_reference() {
    let gpu = gpu();
    let mut rng = rng("elementwise");
    let e = Elementwise::new(&gpu).unwrap();
    let n = 1001;
    let a = normal(&mut rng, n, 2.0);
    let b = normal(&mut rng, n, 2.0);
    let (ad, bd) = (upload(&gpu, &a), upload(&gpu, &b));
    let mut out = poisoned(&gpu, n);
    e.add(&ad, &bd, &mut out, n).unwrap();
    let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_close("add", &out.read(&gpu).unwrap(), &sum, 0.0, 0.0);
    let mut acc = upload(&gpu, &a);
    e.add_in_place(&mut acc, &bd, n).unwrap();
    assert_close("add in place", &acc.read(&gpu).unwrap(), &sum, 0.0, 0.0);
    for (act, want) in [
        (GatedActivation::Silu, ops::silu_mul(&a, &b)),
        (GatedActivation::GeluTanh, ops::gelu_mul(&a, &b)),
    ] {
        let mut g = upload(&gpu, &a);
        e.gated_in_place(&mut g, &bd, n, act).unwrap();
        assert_close(
            &format!("{act:?}"),
            &g.read(&gpu).unwrap(),
            &want,
            1e-6,
            1e-5,
        );
    }
    let (rows, cols) = (7, 143);
    let y = normal(&mut rng, rows * cols, 1.0);
    let bias = normal(&mut rng, cols, 1.0);
    let mut yd = upload(&gpu, &y);
    e.add_bias_rows(&mut yd, &upload(&gpu, &bias), rows, cols)
        .unwrap();
    let want: Vec<f32> = y
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias[i % cols])
        .collect();
    assert_close("bias rows", &yd.read(&gpu).unwrap(), &want, 0.0, 0.0);
    // Soft-capping (Gemma 2's final logits): values well beyond the cap are squashed, small ones kept.
    let logits = normal(&mut rng, n, 10.0);
    let mut ld = upload(&gpu, &logits);
    e.softcap_in_place(&mut ld, n, 4.0).unwrap();
    let want: Vec<f32> = logits.iter().map(|&x| 4.0 * (x / 4.0).tanh()).collect();
    assert_close("softcap", &ld.read(&gpu).unwrap(), &want, 1e-6, 1e-5);
    assert!(e.softcap_in_place(&mut ld, n, 0.0).is_err());
}

/// The row copy against a plain slice copy: exact, every other destination row left as it was, and ranges
/// outside either buffer refused before anything is written.
#[test]
fn row_copy_moves_exactly_the_rows_asked_for() {
    let gpu = gpu();
    let mut rng = rng("row copy");
    let e = Elementwise::new(&gpu).unwrap();
    for (src_rows, dst_rows, cols) in [(5, 3, 288), (1, 1, 17), (9, 9, 64)] {
        let src = normal(&mut rng, src_rows * cols, 3.0);
        let before = normal(&mut rng, dst_rows * cols, 3.0);
        let src_d = upload(&gpu, &src);
        // The engine's use first (the source's last row into row 0), then random ranges.
        let last = RowCopy {
            rows: 1,
            cols,
            src_row: src_rows - 1,
            dst_row: 0,
        };
        let random = |rng: &mut rand::rngs::StdRng| {
            let rows = rng.random_range(1..=src_rows.min(dst_rows));
            RowCopy {
                rows,
                cols,
                src_row: rng.random_range(0..=src_rows - rows),
                dst_row: rng.random_range(0..=dst_rows - rows),
            }
        };
        let copies = [last, random(&mut rng), random(&mut rng)];
        for copy in copies {
            let rows = copy.rows;
            let mut dst = upload(&gpu, &before);
            e.copy_rows(&src_d, &mut dst, copy).unwrap();
            let mut want = before.clone();
            let (s0, d0, n) = (copy.src_row * cols, copy.dst_row * cols, rows * cols);
            want[d0..d0 + n].copy_from_slice(&src[s0..s0 + n]);
            let got = dst.read(&gpu).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got),
                bits(&want),
                "{copy:?} of {src_rows}x{cols} into {dst_rows}"
            );
        }
    }
    let src = upload(&gpu, &normal(&mut rng, 4 * 8, 1.0));
    let mut dst = poisoned(&gpu, 2 * 8);
    for bad in [
        RowCopy {
            rows: 3,
            cols: 8,
            src_row: 0,
            dst_row: 0,
        },
        RowCopy {
            rows: 1,
            cols: 8,
            src_row: 4,
            dst_row: 0,
        },
        RowCopy {
            rows: 1,
            cols: 8,
            src_row: 0,
            dst_row: 2,
        },
        RowCopy {
            rows: 1,
            cols: usize::MAX,
            src_row: 2,
            dst_row: 0,
        },
    ] {
        assert!(
            e.copy_rows(&src, &mut dst, bad).is_err(),
            "{bad:?} was accepted"
        );
    }
    assert!(
        dst.read(&gpu).unwrap().iter().all(|x| x.is_nan()),
        "a refused copy wrote"
    );
}

#[test]
fn rope_with_a_frequency_table_matches_reference_on_scaled_frequencies() {
    // Frequencies that no plain theta produces (a Llama-3-like piecewise scaling), so a kernel that ignored the
    // table and used theta would fail; tolerance as for the theta kernel (f32 sincos of angles up to ~1e3).
    let gpu = gpu();
    let mut rng = rng("rope_table");
    let rope = Rope::new(&gpu).unwrap();
    // The third case scales the rotated dimensions by an attention factor (longrope) and leaves the rest alone.
    for (style, head_dim, rotary_dim, mscale) in [
        (RopeStyle::HalfSplit, 64, 64, 1.0),
        (RopeStyle::Interleaved, 48, 32, 1.0),
        (RopeStyle::HalfSplit, 64, 48, 1.19),
    ] {
        let (seq, heads, past) = (6, 3, 700);
        let inv: Vec<f64> = (0..rotary_dim / 2)
            .map(|i| {
                let f = 10000f64.powf(-2.0 * i as f64 / rotary_dim as f64);
                if i % 3 == 0 {
                    f / 8.0
                } else {
                    f * rng.random_range(0.5..1.0)
                }
            })
            .collect();
        let inv32: Vec<f32> = inv.iter().map(|&f| f as f32).collect();
        let inv_rounded: Vec<f64> = inv32.iter().map(|&f| f64::from(f)).collect();
        let table = RopeTable::upload_scaled(&gpu, &inv32, mscale).unwrap();
        let stride = heads * head_dim + 5;
        let x = normal(&mut rng, seq * stride, 1.0);
        let mut xd = upload(&gpu, &x);
        let cfg = RopeConfig {
            head_dim,
            rotary_dim,
            theta: 10000.0,
            style,
        };
        let layout = HeadsLayout {
            offset: 2,
            token_stride: stride,
            heads,
            seq,
        };
        rope.enqueue_with_table(&mut xd, layout, cfg, &table, past)
            .unwrap();
        let got = xd.read(&gpu).unwrap();
        let ref_style = match style {
            RopeStyle::Interleaved => ops::RopeStyle::Interleaved,
            RopeStyle::HalfSplit => ops::RopeStyle::HalfSplit,
        };
        let mut want = x.clone();
        for t in 0..seq {
            let row = &mut want[t * stride + 2..t * stride + 2 + heads * head_dim];
            ops::rope_with_freqs(row, heads, head_dim, &inv_rounded, ref_style, past + t);
            for head in row.chunks_mut(head_dim) {
                head[..rotary_dim].iter_mut().for_each(|v| *v *= mscale);
            }
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 5e-4,
                "{style:?} element {i}: got {g}, want {w}"
            );
        }
    }
    // A table whose length disagrees with rotary_dim, and a bad frequency, are refused before launch.
    let table = RopeTable::upload(&gpu, &[1.0, 0.5]).unwrap();
    let mut xd = upload(&gpu, &[0.5f32; 64]);
    let cfg = RopeConfig {
        head_dim: 8,
        rotary_dim: 8,
        theta: 10000.0,
        style: RopeStyle::HalfSplit,
    };
    let layout = HeadsLayout {
        offset: 0,
        token_stride: 8,
        heads: 1,
        seq: 2,
    };
    assert!(rope
        .enqueue_with_table(&mut xd, layout, cfg, &table, 0)
        .is_err());
    assert!(RopeTable::upload(&gpu, &[1.0, f32::NAN]).is_err());
    assert!(RopeTable::upload_scaled(&gpu, &[1.0, 0.5], 0.0).is_err());
}
