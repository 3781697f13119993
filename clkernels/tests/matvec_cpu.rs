//! The CPU-device mat-vec kernels (`matvec/cpu.cl`) against `fp4::reference::matvec` and dense references, on
//! awkward shapes, for several geometries; they are plain OpenCL C, so they run on any device.
//!
//! Tolerance: |err| <= 1e-5 · Σ|w·x| per row, the f32 mat-vec's (f32 products summed in a different order than
//! the reference); the fused RMSNorm adds 1e-5 for the norm's own rounding, as in `tests/matvec.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use clkernels::kernels::matvec::{
    DeviceF16Matrix, DeviceM0e4, MatvecConfig, MatvecF16, MatvecM0e4,
};
use clkernels::kernels::matvec_cpu::CpuMatvecGeometry;
use clkernels::kernels::norm::RmsNormParams;
use clkernels::kernels::{GatedActivation, Residual};
use clkernels::runtime::{DeviceKind, Gpu};
use common::*;
use fp4::{GroupSize, MatrixShape};
use half::f16;

const REL: f32 = 1e-5;

/// Geometries that leave partial row blocks and partial work-groups on the shapes below.
const GEOMETRIES: [CpuMatvecGeometry; 4] = [
    CpuMatvecGeometry::DEFAULT,
    CpuMatvecGeometry {
        rows_per_item: 1,
        work_group: 1,
    },
    CpuMatvecGeometry {
        rows_per_item: 3,
        work_group: 4,
    },
    CpuMatvecGeometry {
        rows_per_item: 8,
        work_group: 2,
    },
];

/// The device's default mat-vec configuration with the CPU kernels forced on, whatever the device.
fn cpu_config(gpu: &Gpu, geometry: CpuMatvecGeometry) -> MatvecConfig {
    MatvecConfig {
        cpu: Some(geometry),
        ..MatvecConfig::for_gpu(gpu)
    }
}

/// Row counts that are not multiples of any geometry's block, column counts of odd chunk counts.
const M0E4_SHAPES: [(GroupSize, usize, usize); 4] = [
    (GroupSize::G32, 37, 96),
    (GroupSize::G32, 1, 32),
    (GroupSize::G64, 13, 320),
    (GroupSize::G128, 70, 384),
];

#[test]
fn cpu_m0e4_matvec_matches_reference_with_every_residual_mode() {
    let gpu = gpu();
    for geometry in GEOMETRIES {
        let mv = MatvecM0e4::with_config(&gpu, cpu_config(&gpu, geometry)).unwrap();
        assert!(mv.uses_cpu_kernels() && !mv.uses_half_products());
        let mut rng = rng(&format!("cpu matvec {geometry:?}"));
        for (group, rows, cols) in M0E4_SHAPES {
            let m = random_m0e4(&mut rng, rows, cols, group);
            let x = normal(&mut rng, cols, 1.0);
            let r = normal(&mut rng, rows, 1.0);
            let l1 = row_l1(&fp4::reference::dequantize(&m), cols, &x);
            let want = fp4::reference::matvec(&m, &x).unwrap();
            let want_r: Vec<f32> = want.iter().zip(&r).map(|(a, b)| a + b).collect();
            let (w, xd, rd) = (
                DeviceM0e4::upload(&gpu, &m).unwrap(),
                upload(&gpu, &x),
                upload(&gpu, &r),
            );
            let what = format!("{geometry:?} G{} {rows}x{cols}", group.len());

            let mut y = poisoned(&gpu, rows);
            mv.enqueue(&w, &xd, &mut y, Residual::None).unwrap();
            assert_dot_close(&what, &y.read(&gpu).unwrap(), &want, &l1, REL);

            let mut y = poisoned(&gpu, rows);
            mv.enqueue(&w, &xd, &mut y, Residual::Add(&rd)).unwrap();
            let got = y.read(&gpu).unwrap();
            assert_dot_close(&format!("{what} +r"), &got, &want_r, &l1, REL);

            let mut y = upload(&gpu, &r);
            mv.enqueue(&w, &xd, &mut y, Residual::Accumulate).unwrap();
            let got = y.read(&gpu).unwrap();
            assert_dot_close(&format!("{what} +=y"), &got, &want_r, &l1, REL);
        }
    }
}

/// Outputs past the matrix's rows are never written (the last row block is partial).
#[test]
fn cpu_m0e4_matvec_leaves_elements_past_the_rows_alone() {
    let gpu = gpu();
    let mut rng = rng("cpu matvec tail");
    let geometry = CpuMatvecGeometry {
        rows_per_item: 8,
        work_group: 4,
    };
    let mv = MatvecM0e4::with_config(&gpu, cpu_config(&gpu, geometry)).unwrap();
    let (rows, cols) = (11, 64);
    let m = random_m0e4(&mut rng, rows, cols, GroupSize::G32);
    let x = normal(&mut rng, cols, 1.0);
    let sentinel = vec![7.0f32; 40];
    let mut y = upload(&gpu, &sentinel);
    let w = DeviceM0e4::upload(&gpu, &m).unwrap();
    mv.enqueue(&w, &upload(&gpu, &x), &mut y, Residual::None)
        .unwrap();
    let got = y.read(&gpu).unwrap();
    let l1 = row_l1(&fp4::reference::dequantize(&m), cols, &x);
    let want = fp4::reference::matvec(&m, &x).unwrap();
    assert_dot_close("tail rows", &got[..rows], &want, &l1, REL);
    assert!(got[rows..].iter().all(|&v| v == 7.0), "{:?}", &got[rows..]);
}

/// The fused RMSNorm (with and without Gemma's weight offset), a bias as the residual, and the gate+up pair
/// with both activations, plain and normed.
#[test]
fn cpu_normed_and_gate_up_launches_match_host_references() {
    let gpu = gpu();
    for geometry in GEOMETRIES {
        let mv = MatvecM0e4::with_config(&gpu, cpu_config(&gpu, geometry)).unwrap();
        let mut rng = rng(&format!("cpu normed {geometry:?}"));
        for (group, rows, cols, offset, act) in [
            (GroupSize::G32, 37, 96, 0.0, GatedActivation::Silu),
            (GroupSize::G64, 13, 320, 1.0, GatedActivation::GeluTanh),
            (GroupSize::G128, 70, 384, 0.0, GatedActivation::Silu),
        ] {
            let params = RmsNormParams {
                eps: 1e-5,
                weight_offset: offset,
            };
            // Activations of scale 3 so a missing or wrong norm lies far outside the tolerance.
            let x = normal(&mut rng, cols, 3.0);
            let nw = normal(&mut rng, cols, 0.5);
            let normed = fixtures::ops::rmsnorm(&x, &nw, params.eps, offset);
            let (xd, nwd) = (upload(&gpu, &x), upload(&gpu, &nw));
            let what = format!(
                "{geometry:?} normed G{} {rows}x{cols} +{offset}",
                group.len()
            );

            let (g, u) = (
                random_m0e4(&mut rng, rows, cols, group),
                random_m0e4(&mut rng, rows, cols, group),
            );
            let (gd, ud) = (
                DeviceM0e4::upload(&gpu, &g).unwrap(),
                DeviceM0e4::upload(&gpu, &u).unwrap(),
            );
            let l1g = row_l1(&fp4::reference::dequantize(&g), cols, &normed);
            let l1u = row_l1(&fp4::reference::dequantize(&u), cols, &normed);
            let gv = fp4::reference::matvec(&g, &normed).unwrap();
            let uv = fp4::reference::matvec(&u, &normed).unwrap();

            let bias = normal(&mut rng, rows, 1.0);
            let biased: Vec<f32> = gv.iter().zip(&bias).map(|(a, b)| a + b).collect();
            let mut y = poisoned(&gpu, rows);
            mv.enqueue_normed(&gd, &xd, &nwd, params, &mut y, Residual::None)
                .unwrap();
            assert_dot_close(&what, &y.read(&gpu).unwrap(), &gv, &l1g, 2.0 * REL);
            let mut y = poisoned(&gpu, rows);
            let bd = upload(&gpu, &bias);
            mv.enqueue_normed(&gd, &xd, &nwd, params, &mut y, Residual::Add(&bd))
                .unwrap();
            let got = y.read(&gpu).unwrap();
            assert_dot_close(&format!("{what} +bias"), &got, &biased, &l1g, 2.0 * REL);

            let gated = |gv: &[f32], uv: &[f32]| match act {
                GatedActivation::Silu => fixtures::ops::silu_mul(gv, uv),
                GatedActivation::GeluTanh => fixtures::ops::gelu_mul(gv, uv),
            };
            let mut out = poisoned(&gpu, rows);
            mv.enqueue_gate_up_normed(&gd, &ud, &xd, &nwd, params, &mut out, act)
                .unwrap();
            let got = out.read(&gpu).unwrap();
            let label = format!("{what} gate_up {act:?}");
            assert_gated_close(
                &label,
                &got,
                &gated(&gv, &uv),
                &gv,
                &uv,
                &l1g,
                &l1u,
                2.0 * REL,
            );

            // Without the norm: the raw x.
            let gx = fp4::reference::matvec(&g, &x).unwrap();
            let ux = fp4::reference::matvec(&u, &x).unwrap();
            let l1gx = row_l1(&fp4::reference::dequantize(&g), cols, &x);
            let l1ux = row_l1(&fp4::reference::dequantize(&u), cols, &x);
            let mut out = poisoned(&gpu, rows);
            mv.enqueue_gate_up(&gd, &ud, &xd, &mut out, act).unwrap();
            let got = out.read(&gpu).unwrap();
            let label = format!(
                "{geometry:?} gate_up G{} {rows}x{cols} {act:?}",
                group.len()
            );
            assert_gated_close(&label, &got, &gated(&gx, &ux), &gx, &ux, &l1gx, &l1ux, REL);
        }
    }
}

/// f16 heads whose columns end in a half block of 8 (200, 72) or not (576), with a residual.
#[test]
fn cpu_f16_matvec_matches_dense_reference() {
    let gpu = gpu();
    for geometry in GEOMETRIES {
        let mv = MatvecF16::with_config(&gpu, cpu_config(&gpu, geometry)).unwrap();
        let mut rng = rng(&format!("cpu f16 {geometry:?}"));
        for (rows, cols) in [(101, 200), (5, 72), (67, 576), (1, 8)] {
            let w: Vec<f16> = normal(&mut rng, rows * cols, 0.1)
                .into_iter()
                .map(f16::from_f32)
                .collect();
            let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            let x = normal(&mut rng, cols, 1.0);
            let r = normal(&mut rng, rows, 1.0);
            let l1 = row_l1(&wf, cols, &x);
            let wd = DeviceF16Matrix::upload(&gpu, &w, MatrixShape::new(rows, cols)).unwrap();
            let what = format!("{geometry:?} f16 {rows}x{cols}");

            let mut y = poisoned(&gpu, rows);
            mv.enqueue(&wd, &upload(&gpu, &x), &mut y, Residual::None)
                .unwrap();
            let want = fixtures::ops::matvec(&wf, cols, &x, None);
            assert_dot_close(&what, &y.read(&gpu).unwrap(), &want, &l1, REL);

            let mut y = upload(&gpu, &r);
            mv.enqueue(&wd, &upload(&gpu, &x), &mut y, Residual::Accumulate)
                .unwrap();
            let want = fixtures::ops::matvec(&wf, cols, &x, Some(&r));
            let got = y.read(&gpu).unwrap();
            assert_dot_close(&format!("{what} +=y"), &got, &want, &l1, REL);
        }
    }
}

/// The choice of kernels is pure code on the device type: CPU devices get the CPU geometry, others none.
#[test]
fn cpu_kernels_are_chosen_by_device_type() {
    let gpu = gpu();
    let mut caps = gpu.caps().clone();
    caps.kind = DeviceKind::Cpu;
    assert_eq!(
        CpuMatvecGeometry::for_device(&caps),
        Some(CpuMatvecGeometry::DEFAULT)
    );
    for kind in [DeviceKind::Gpu, DeviceKind::Accelerator, DeviceKind::Other] {
        caps.kind = kind;
        assert_eq!(CpuMatvecGeometry::for_device(&caps), None, "{kind:?}");
    }
    let default = MatvecM0e4::new(&gpu).unwrap();
    assert_eq!(
        default.uses_cpu_kernels(),
        gpu.caps().kind == DeviceKind::Cpu
    );
}

#[test]
fn cpu_geometry_out_of_range_is_refused() {
    let gpu = gpu();
    for geometry in [
        CpuMatvecGeometry {
            rows_per_item: 0,
            work_group: 1,
        },
        CpuMatvecGeometry {
            rows_per_item: 4,
            work_group: 0,
        },
        CpuMatvecGeometry {
            rows_per_item: 65,
            work_group: 1,
        },
    ] {
        let err = MatvecM0e4::with_config(&gpu, cpu_config(&gpu, geometry)).unwrap_err();
        assert!(err.to_string().contains("rows_per_item"), "{err}");
        assert!(MatvecF16::with_config(&gpu, cpu_config(&gpu, geometry)).is_err());
    }
}
