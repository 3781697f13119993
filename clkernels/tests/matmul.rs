//! Prefill mat-mat kernels against dense references on sizes that are not multiples of the tiles.
//!
//! Tolerance: |err| <= 1e-5 · Σ|w·x| per output (f32 accumulation order differs from the f64 reference).
#![allow(clippy::unwrap_used)]

mod common;

use clkernels::kernels::matmul::{MatmulConfig, MatmulF16, MatmulM0e4};
use clkernels::kernels::matvec::{DeviceF16Matrix, DeviceM0e4};
use clkernels::kernels::Residual;
use clkernels::runtime::Gpu;
use common::*;
use fp4::{GroupSize, MatrixShape};
use half::f16;

fn l1_matmul(w: &[f32], cols: usize, x: &[f32]) -> Vec<f32> {
    x.chunks(cols).flat_map(|xs| row_l1(w, cols, xs)).collect()
}

fn check(gpu: &Gpu, mm: &MatmulM0e4, label: &str) {
    let mut rng = rng(label);
    // Partial tiles in both directions, several work-groups, every group size; small_shapes() keeps all three on
    // fewer K steps and fewer tiles (one 2 x 2 grid of partial tiles).
    let cases: &[(GroupSize, usize, usize, usize)] = if small_shapes() {
        &[
            (GroupSize::G32, 7, 37, 96),
            (GroupSize::G64, 70, 65, 64),
            (GroupSize::G128, 5, 20, 128),
        ]
    } else {
        &[
            (GroupSize::G32, 7, 37, 96),
            (GroupSize::G64, 70, 65, 128),
            (GroupSize::G128, 33, 130, 256),
        ]
    };
    for &(group, seq, rows, cols) in cases {
        let m = random_m0e4(&mut rng, rows, cols, group);
        let dense = fp4::reference::dequantize(&m);
        let x = normal(&mut rng, seq * cols, 1.0);
        let r = normal(&mut rng, seq * rows, 1.0);
        let l1 = l1_matmul(&dense, cols, &x);
        let w = DeviceM0e4::upload(gpu, &m).unwrap();
        let xd = upload(gpu, &x);
        let what = format!("{label} G{} seq{seq} {rows}x{cols}", group.len());

        let mut y = poisoned(gpu, seq * rows);
        mm.enqueue(&w, &xd, seq, &mut y, Residual::None).unwrap();
        let want = fixtures::ops::matmul_wt(&dense, rows, cols, &x, None);
        assert_dot_close(&what, &y.read(gpu).unwrap(), &want, &l1, 1e-5);

        let want_r = fixtures::ops::matmul_wt(&dense, rows, cols, &x, Some(&r));
        let mut y = poisoned(gpu, seq * rows);
        mm.enqueue(&w, &xd, seq, &mut y, Residual::Add(&upload(gpu, &r)))
            .unwrap();
        assert_dot_close(
            &format!("{what} +r"),
            &y.read(gpu).unwrap(),
            &want_r,
            &l1,
            1e-5,
        );

        let mut y = upload(gpu, &r);
        mm.enqueue(&w, &xd, seq, &mut y, Residual::Accumulate)
            .unwrap();
        assert_dot_close(
            &format!("{what} +=y"),
            &y.read(gpu).unwrap(),
            &want_r,
            &l1,
            1e-5,
        );
    }
}

#[test]
fn m0e4_matmul_matches_dequantised_reference() {
    let gpu = gpu();
    check(&gpu, &MatmulM0e4::new(&gpu).unwrap(), "default tiles");
}

#[test]
fn m0e4_matmul_other_tilings_agree() {
    let gpu = gpu();
    for config in [
        MatmulConfig {
            tile_m: 64,
            tile_n: 64,
            work_m: 4,
            work_n: 4,
            vec: false,
        },
        MatmulConfig {
            tile_m: 16,
            tile_n: 32,
            work_m: 2,
            work_n: 4,
            vec: false,
        },
        MatmulConfig {
            tile_m: 32,
            tile_n: 64,
            work_m: 4,
            work_n: 8,
            vec: true,
        },
    ] {
        check(
            &gpu,
            &MatmulM0e4::with_config(&gpu, config).unwrap(),
            &format!("{config:?}"),
        );
    }
}

#[test]
fn f16_matmul_matches_dense_reference() {
    let gpu = gpu();
    let mut rng = rng("f16 matmul");
    let (seq, rows, cols) = (19, 45, 160);
    let w: Vec<f16> = normal(&mut rng, rows * cols, 0.1)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    let x = normal(&mut rng, seq * cols, 1.0);
    let wd = DeviceF16Matrix::upload(&gpu, &w, MatrixShape::new(rows, cols)).unwrap();
    let mut y = poisoned(&gpu, seq * rows);
    MatmulF16::new(&gpu)
        .unwrap()
        .enqueue(&wd, &upload(&gpu, &x), seq, &mut y, Residual::None)
        .unwrap();
    let want = fixtures::ops::matmul_wt(&wf, rows, cols, &x, None);
    assert_dot_close(
        "f16 matmul",
        &y.read(&gpu).unwrap(),
        &want,
        &l1_matmul(&wf, cols, &x),
        1e-5,
    );
}

#[test]
fn matmul_refuses_bad_shapes() {
    let gpu = gpu();
    let mut rng = rng("matmul errors");
    let mm = MatmulM0e4::new(&gpu).unwrap();
    let w = DeviceM0e4::upload(&gpu, &random_m0e4(&mut rng, 8, 64, GroupSize::G32)).unwrap();
    let x = upload(&gpu, &normal(&mut rng, 3 * 64, 1.0));
    let mut y = poisoned(&gpu, 3 * 8);
    assert!(
        mm.enqueue(&w, &x, 4, &mut y, Residual::None).is_err(),
        "x too short for seq 4"
    );
    assert!(
        mm.enqueue(&w, &x, 0, &mut y, Residual::None).is_err(),
        "seq 0"
    );
    let bad = MatmulConfig {
        tile_m: 30,
        tile_n: 32,
        work_m: 4,
        work_n: 4,
        vec: false,
    };
    assert!(MatmulM0e4::with_config(&gpu, bad).is_err());
}
