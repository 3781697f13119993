//! Decode mat-vec kernels against `fp4::reference::matvec` / dense references, on awkward shapes.
//!
//! Tolerance: |err| <= 1e-5 · Σ|w·x| per row (f32 accumulation in a different order than the reference).
#![allow(clippy::unwrap_used)]

mod common;

use clkernels::kernels::matvec::{
    DeviceF16Matrix, DeviceM0e4, MatvecConfig, MatvecF16, MatvecM0e4, MatvecVendorKernel,
};
use clkernels::kernels::norm::RmsNormParams;
use clkernels::kernels::vector_width::VectorWidth;
use clkernels::kernels::{GatedActivation, Residual};
use clkernels::runtime::Gpu;
use common::*;
use fp4::{GroupSize, MatrixShape};
use half::f16;

const REL: f32 = 1e-5;

/// Runs plain, residual-add and accumulate mat-vecs for each group size on awkward row counts.
fn check_matvec(gpu: &Gpu, mv: &MatvecM0e4, label: &str) {
    check_matvec_within(gpu, mv, label, REL);
}

/// [`check_matvec`] with relative tolerance `rel` (of Σ|w·x| per row).
fn check_matvec_within(gpu: &Gpu, mv: &MatvecM0e4, label: &str, rel: f32) {
    let gpu = gpu.clone();
    let mut rng = rng(label);
    for (group, rows, cols) in [
        (GroupSize::G32, 37, 96),
        (GroupSize::G64, 13, 320),
        (GroupSize::G128, 70, 256),
    ] {
        let m = random_m0e4(&mut rng, rows, cols, group);
        let x = normal(&mut rng, cols, 1.0);
        let r = normal(&mut rng, rows, 1.0);
        let dense = fp4::reference::dequantize(&m);
        let l1 = row_l1(&dense, cols, &x);
        let want = fp4::reference::matvec(&m, &x).unwrap();
        let w = DeviceM0e4::upload(&gpu, &m).unwrap();
        let xd = upload(&gpu, &x);
        let what = format!("{label} G{} {rows}x{cols}", group.len());

        let mut y = poisoned(&gpu, rows);
        mv.enqueue(&w, &xd, &mut y, Residual::None).unwrap();
        assert_dot_close(&what, &y.read(&gpu).unwrap(), &want, &l1, rel);

        let rd = upload(&gpu, &r);
        let mut y = poisoned(&gpu, rows);
        mv.enqueue(&w, &xd, &mut y, Residual::Add(&rd)).unwrap();
        let want_r: Vec<f32> = want.iter().zip(&r).map(|(a, b)| a + b).collect();
        assert_dot_close(
            &format!("{what} +r"),
            &y.read(&gpu).unwrap(),
            &want_r,
            &l1,
            rel,
        );

        let mut y = upload(&gpu, &r);
        mv.enqueue(&w, &xd, &mut y, Residual::Accumulate).unwrap();
        assert_dot_close(
            &format!("{what} +=y"),
            &y.read(&gpu).unwrap(),
            &want_r,
            &l1,
            rel,
        );
    }
    check_normed(&gpu, mv, label, rel);
}

/// The RMSNorm-fused launches against rmsnorm-then-matvec on the host, with and without Gemma's `+1` weight
/// offset, on dims that are not multiples of the work-group or the local-memory tile. The norm's own rounding is
/// far below the dot tolerance, so the bound is the mat-vec's (rel · Σ|w·n|) plus the relative error of a
/// sum of squares in f32 (~1e-6 of each output).
fn check_normed(gpu: &Gpu, mv: &MatvecM0e4, label: &str, rel: f32) {
    let mut rng = rng(&format!("{label} normed"));
    for (group, rows, cols, offset, act) in [
        (GroupSize::G32, 37, 96, 0.0, GatedActivation::Silu),
        (GroupSize::G64, 13, 320, 1.0, GatedActivation::GeluTanh),
        (GroupSize::G128, 70, 384, 0.0, GatedActivation::Silu),
    ] {
        let params = RmsNormParams {
            eps: 1e-5,
            weight_offset: offset,
        };
        // Large-ish activations (scale 3) so a missing or wrong norm is far outside the tolerance.
        let x = normal(&mut rng, cols, 3.0);
        let nw = normal(&mut rng, cols, 0.5);
        let normed = fixtures::ops::rmsnorm(&x, &nw, params.eps, offset);
        let (xd, nwd) = (upload(gpu, &x), upload(gpu, &nw));
        let what = format!("{label} normed G{} {rows}x{cols} +{offset}", group.len());

        let m = random_m0e4(&mut rng, rows, cols, group);
        let dense = fp4::reference::dequantize(&m);
        let l1 = row_l1(&dense, cols, &normed);
        let want = fp4::reference::matvec(&m, &normed).unwrap();
        let w = DeviceM0e4::upload(gpu, &m).unwrap();
        let mut y = poisoned(gpu, rows);
        mv.enqueue_normed(&w, &xd, &nwd, params, &mut y, Residual::None)
            .unwrap();
        assert_dot_close(&what, &y.read(gpu).unwrap(), &want, &l1, 1e-5 + rel);

        // A bias added in the same launch (Qwen's QKV bias), and accumulation into y.
        let bias = normal(&mut rng, rows, 1.0);
        let biased: Vec<f32> = want.iter().zip(&bias).map(|(a, b)| a + b).collect();
        let bd = upload(gpu, &bias);
        let mut y = poisoned(gpu, rows);
        mv.enqueue_normed(&w, &xd, &nwd, params, &mut y, Residual::Add(&bd))
            .unwrap();
        let what_b = format!("{what} +bias");
        assert_dot_close(&what_b, &y.read(gpu).unwrap(), &biased, &l1, 1e-5 + rel);
        let mut y = upload(gpu, &bias);
        mv.enqueue_normed(&w, &xd, &nwd, params, &mut y, Residual::Accumulate)
            .unwrap();
        let what_a = format!("{what} +=y");
        assert_dot_close(&what_a, &y.read(gpu).unwrap(), &biased, &l1, 1e-5 + rel);

        let u = random_m0e4(&mut rng, rows, cols, group);
        let l1u = row_l1(&fp4::reference::dequantize(&u), cols, &normed);
        let gv = want;
        let uv = fp4::reference::matvec(&u, &normed).unwrap();
        let want = match act {
            GatedActivation::Silu => fixtures::ops::silu_mul(&gv, &uv),
            GatedActivation::GeluTanh => fixtures::ops::gelu_mul(&gv, &uv),
        };
        let ud = DeviceM0e4::upload(gpu, &u).unwrap();
        let mut out = poisoned(gpu, rows);
        mv.enqueue_gate_up_normed(&w, &ud, &xd, &nwd, params, &mut out, act)
            .unwrap();
        assert_gated_close(
            &format!("{what} gate_up {act:?}"),
            &out.read(gpu).unwrap(),
            &want,
            &gv,
            &uv,
            &l1,
            &l1u,
            1e-5 + rel,
        );
    }
}

#[test]
fn m0e4_matvec_matches_reference_for_every_group_size() {
    let gpu = gpu();
    let mv = MatvecM0e4::new(&gpu).unwrap();
    check_matvec_within(&gpu, &mv, "default", default_rel(&mv));
}

/// The tolerance of the vendor-default mat-vec: f32 products, or half products where it uses them (NVIDIA's
/// packed-f16 path, `cl_khr_fp16` half math): 2e-3 of Σ|w·x|, as in their own tests.
fn default_rel(mv: &MatvecM0e4) -> f32 {
    if mv.uses_half_products() {
        2e-3
    } else {
        REL
    }
}

#[test]
fn m0e4_matvec_geometries_agree() {
    let gpu = gpu();
    // (1, 3): 70 rows are more than TALL_GROUPS_PER_UNIT groups per unit on a small device, so the tall
    // geometry (3 rows per group) takes over those launches.
    for (wg, rows, tall) in [(64, 1, 3), (128, 8, 0), (16, 3, 0)] {
        let config = MatvecConfig {
            work_group: wg,
            rows_per_group: rows,
            tall_rows_per_group: tall,
            long_x_local_chunks: 0,
            half_math: false,
            warp_shuffle: true,
            x_local_chunks: 0,
            unroll: 1,
            short_unroll: 0,
            nv_half2: false,
            cpu: None,
            vendor_kernel: MatvecVendorKernel::Portable,
            image_max_pixels: 0,
            vector_width: VectorWidth::DEFAULT,
        };
        let mv = MatvecM0e4::with_config(&gpu, config).unwrap();
        let label = format!("wg{wg} rows{rows} tall{tall}");
        check_matvec(&gpu, &mv, &label);
        check_normed(&gpu, &mv, &label, REL);
    }
}

#[test]
fn m0e4_matvec_local_x_variants_agree() {
    let gpu = gpu();
    // (3, 7): rows of more than 3 chunks take the long-row build, whose 7-chunk tile still leaves 320-wide rows
    // (10 chunks) two tiles; the plain launches of shorter rows take the build without unrolling.
    for (x_local_chunks, long) in [(0, 0), (3, 7), (4, 0)] {
        let config = MatvecConfig {
            work_group: 32,
            rows_per_group: 4,
            tall_rows_per_group: 0,
            long_x_local_chunks: long,
            half_math: false,
            warp_shuffle: true,
            x_local_chunks,
            unroll: 2,
            short_unroll: if long > 0 { 1 } else { 0 },
            nv_half2: false,
            cpu: None,
            vendor_kernel: MatvecVendorKernel::Portable,
            image_max_pixels: 0,
            vector_width: VectorWidth::DEFAULT,
        };
        let label = format!("xl {x_local_chunks} long {long}");
        let mv = MatvecM0e4::with_config(&gpu, config).unwrap();
        check_matvec(&gpu, &mv, &label);
        check_normed(&gpu, &mv, &label, REL);
    }
}

/// The sub-group paths (khr/intel built-ins, Adreno shuffles) built with TLITE_COMPILE_CHECK, whose stand-ins make
/// a sub-group of one work-item: this compiles the vendor code on PoCL and checks its reduction logic.
#[test]
fn m0e4_matvec_vendor_paths_compile_and_reduce_correctly() {
    let gpu = gpu();
    let config = MatvecConfig {
        work_group: 32,
        rows_per_group: 4,
        tall_rows_per_group: 0,
        long_x_local_chunks: 0,
        half_math: false,
        warp_shuffle: true,
        x_local_chunks: 0,
        unroll: 1,
        short_unroll: 0,
        nv_half2: false,
        cpu: None,
        vendor_kernel: MatvecVendorKernel::Portable,
        image_max_pixels: 0,
        vector_width: VectorWidth::DEFAULT,
    };
    for (label, defines) in [
        ("khr subgroups", KHR_SUBGROUP_STAND_INS.to_vec()),
        ("adreno", ADRENO_STAND_INS.to_vec()),
        (
            "mali",
            vec![
                ("TLITE_COMPILE_CHECK", ""),
                ("TLITE_HAS_SUBGROUPS", "1"),
                ("TLITE_VENDOR_MALI", "1"),
            ],
        ),
        (
            // The NVIDIA warp-shuffle path's indexing (its inline PTX is stubbed: PoCL cannot compile PTX).
            "nvidia shfl indexing",
            NVIDIA_STAND_INS.to_vec(),
        ),
    ] {
        let mv = MatvecM0e4::with_defines(&gpu, config, &defines).unwrap();
        if gpu.caps().vendor_family != clkernels::runtime::VendorFamily::Nvidia {
            assert!(
                !mv.uses_warp_shuffle(),
                "only NVIDIA gets the warp-shuffle path"
            );
        }
        check_matvec(&gpu, &mv, label);
    }
}

#[test]
fn m0e4_gate_up_matches_silu_and_gelu_of_two_references() {
    let gpu = gpu();
    let mv = MatvecM0e4::new(&gpu).unwrap();
    check_gate_up_within(&gpu, &mv, "default", default_rel(&mv));
}

/// NVIDIA's packed-f16 dequantisation (inline PTX): f16 products and 16-term sums, so the stated tolerance is
/// the half path's, 2e-3 of Σ|w·x| per row for each dot product. Elsewhere the define is
/// ignored and this reruns the f32 path.
#[test]
fn m0e4_matvec_nvidia_half2_path_matches_within_half_precision() {
    let gpu = gpu();
    let config = MatvecConfig {
        nv_half2: true,
        ..MatvecConfig::for_gpu(&gpu)
    };
    let mv = MatvecM0e4::with_config(&gpu, config).unwrap();
    check_matvec_within(&gpu, &mv, "nv half2", 2e-3);
    check_gate_up_within(&gpu, &mv, "nv half2", 2e-3);

    // Outlier activations of the size some models' FFN intermediates reach (|x| ~ 2e4, with codes up to 15):
    // f16 partial sums must not overflow, and the small activations beside them must still count.
    let mut rng = rng("nv half2 outliers");
    let (rows, cols) = (24, 512);
    let m = random_m0e4(&mut rng, rows, cols, GroupSize::G32);
    let mut x = normal(&mut rng, cols, 1.0);
    for i in [3, 77, 300, 301, 511] {
        x[i] = if i % 2 == 0 { 2.0e4 } else { -2.0e4 };
    }
    let l1 = row_l1(&fp4::reference::dequantize(&m), cols, &x);
    let want = fp4::reference::matvec(&m, &x).unwrap();
    let got = plain_product(&gpu, &mv, &m, &x);
    assert!(
        got.iter().all(|v| v.is_finite()),
        "non-finite output: {got:?}"
    );
    assert_dot_close("nv half2 outliers", &got, &want, &l1, 2e-3);
}

/// `W·x` on the device for a host matrix and vector (output poisoned first).
fn plain_product(gpu: &Gpu, mv: &MatvecM0e4, m: &fp4::M0e4Matrix, x: &[f32]) -> Vec<f32> {
    let mut y = poisoned(gpu, m.shape().rows);
    mv.enqueue(
        &DeviceM0e4::upload(gpu, m).unwrap(),
        &upload(gpu, x),
        &mut y,
        Residual::None,
    )
    .unwrap();
    y.read(gpu).unwrap()
}

/// The gate+up launch; `rel` is the tolerance of each dot product (of its Σ|w·x|), see `assert_gated_close`.
fn check_gate_up_within(gpu: &Gpu, mv: &MatvecM0e4, label: &str, rel: f32) {
    let gpu = gpu.clone();
    let mut rng = rng(&format!("gate_up {label}"));
    for (group, rows, cols, act) in [
        (GroupSize::G32, 45, 128, GatedActivation::Silu),
        (GroupSize::G128, 19, 384, GatedActivation::GeluTanh),
    ] {
        let g = random_m0e4(&mut rng, rows, cols, group);
        let u = random_m0e4(&mut rng, rows, cols, group);
        let x = normal(&mut rng, cols, 1.0);
        let gv = fp4::reference::matvec(&g, &x).unwrap();
        let uv = fp4::reference::matvec(&u, &x).unwrap();
        let want = match act {
            GatedActivation::Silu => fixtures::ops::silu_mul(&gv, &uv),
            GatedActivation::GeluTanh => fixtures::ops::gelu_mul(&gv, &uv),
        };
        let (gd, ud) = (
            DeviceM0e4::upload(&gpu, &g).unwrap(),
            DeviceM0e4::upload(&gpu, &u).unwrap(),
        );
        let l1g = row_l1(&fp4::reference::dequantize(&g), cols, &x);
        let l1u = row_l1(&fp4::reference::dequantize(&u), cols, &x);
        let mut out = poisoned(&gpu, rows);
        mv.enqueue_gate_up(&gd, &ud, &upload(&gpu, &x), &mut out, act)
            .unwrap();
        assert_gated_close(
            &format!("{label} gate_up {act:?}"),
            &out.read(&gpu).unwrap(),
            &want,
            &gv,
            &uv,
            &l1g,
            &l1u,
            rel,
        );
    }
}

#[test]
fn qkv_in_one_launch_equals_three_separate_products() {
    let gpu = gpu();
    let mut rng = rng("qkv");
    let mv = MatvecM0e4::new(&gpu).unwrap();
    let (q, k, v) = (
        random_m0e4(&mut rng, 64, 128, GroupSize::G32),
        random_m0e4(&mut rng, 16, 128, GroupSize::G32),
        random_m0e4(&mut rng, 16, 128, GroupSize::G32),
    );
    let x = normal(&mut rng, 128, 1.0);
    let qkv = DeviceM0e4::concat_rows(&gpu, &[&q, &k, &v]).unwrap();
    let mut y = poisoned(&gpu, 96);
    mv.enqueue(&qkv, &upload(&gpu, &x), &mut y, Residual::None)
        .unwrap();
    let mut want = fp4::reference::matvec(&q, &x).unwrap();
    want.extend(fp4::reference::matvec(&k, &x).unwrap());
    want.extend(fp4::reference::matvec(&v, &x).unwrap());
    let mut dense = fp4::reference::dequantize(&q);
    dense.extend(fp4::reference::dequantize(&k));
    dense.extend(fp4::reference::dequantize(&v));
    let l1 = row_l1(&dense, 128, &x);
    assert_dot_close("qkv", &y.read(&gpu).unwrap(), &want, &l1, default_rel(&mv));
}

#[test]
fn f16_matvec_matches_dense_reference() {
    let gpu = gpu();
    check_f16(
        &gpu,
        &MatvecF16::new(&gpu).unwrap(),
        "f16 matvec",
        (101, 200),
    );
}

/// `mv` on a `shape` f16 matrix with a residual, against the dense reference (tolerance 1e-5 of Σ|w·x|).
fn check_f16(gpu: &Gpu, mv: &MatvecF16, label: &str, (rows, cols): (usize, usize)) {
    let mut rng = rng(label);
    let w: Vec<f16> = normal(&mut rng, rows * cols, 0.1)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    let x = normal(&mut rng, cols, 1.0);
    let r = normal(&mut rng, rows, 1.0);
    let want = fixtures::ops::matvec(&wf, cols, &x, Some(&r));
    let wd = DeviceF16Matrix::upload(gpu, &w, MatrixShape::new(rows, cols)).unwrap();
    let mut y = poisoned(gpu, rows);
    mv.enqueue(
        &wd,
        &upload(gpu, &x),
        &mut y,
        Residual::Add(&upload(gpu, &r)),
    )
    .unwrap();
    let l1 = row_l1(&wf, cols, &x);
    assert_dot_close(label, &y.read(gpu).unwrap(), &want, &l1, REL);
}

#[test]
fn shape_errors_are_refused_before_launch() {
    let gpu = gpu();
    let mut rng = rng("matvec errors");
    let mv = MatvecM0e4::new(&gpu).unwrap();
    let m = random_m0e4(&mut rng, 8, 64, GroupSize::G32);
    let w = DeviceM0e4::upload(&gpu, &m).unwrap();
    let short_x = upload(&gpu, &normal(&mut rng, 32, 1.0));
    let mut y = poisoned(&gpu, 8);
    let err = mv
        .enqueue(&w, &short_x, &mut y, Residual::None)
        .unwrap_err();
    assert!(
        err.to_string().contains("x buffer has 32 elements"),
        "{err}"
    );
    let x = upload(&gpu, &normal(&mut rng, 64, 1.0));
    let mut short_y = poisoned(&gpu, 7);
    assert!(mv.enqueue(&w, &x, &mut short_y, Residual::None).is_err());
    let params = RmsNormParams {
        eps: 1e-6,
        weight_offset: 0.0,
    };
    let short_nw = upload(&gpu, &normal(&mut rng, 63, 1.0));
    let err = mv
        .enqueue_normed(&w, &x, &short_nw, params, &mut y, Residual::None)
        .unwrap_err();
    assert!(err.to_string().contains("norm weight"), "{err}");
    let err = mv
        .enqueue_gate_up_normed(&w, &w, &x, &short_nw, params, &mut y, GatedActivation::Silu)
        .unwrap_err();
    assert!(err.to_string().contains("norm weight"), "{err}");
    let bad = MatvecConfig {
        work_group: 48,
        rows_per_group: 4,
        tall_rows_per_group: 0,
        long_x_local_chunks: 0,
        half_math: false,
        warp_shuffle: true,
        x_local_chunks: 0,
        unroll: 1,
        short_unroll: 0,
        nv_half2: false,
        cpu: None,
        vendor_kernel: MatvecVendorKernel::Portable,
        image_max_pixels: 0,
        vector_width: VectorWidth::DEFAULT,
    };
    assert!(MatvecM0e4::with_config(&gpu, bad).is_err());
}

/// The FP16 recipe path (half products, `cl_khr_fp16`). PoCL 3.1 has no `cl_khr_fp16`; if its compiler still
/// accepts half arithmetic the path runs and must match within half-precision error (2e-3 of Σ|w·x|), otherwise the
/// build error is printed and only the f32 path stands checked on this device.
#[test]
fn m0e4_matvec_half_math_path_matches_within_half_precision_where_it_builds() {
    let gpu = gpu();
    let config = MatvecConfig {
        work_group: 32,
        rows_per_group: 4,
        tall_rows_per_group: 0,
        long_x_local_chunks: 0,
        half_math: true,
        warp_shuffle: true,
        x_local_chunks: 0,
        unroll: 1,
        short_unroll: 0,
        nv_half2: false,
        cpu: None,
        vendor_kernel: MatvecVendorKernel::Portable,
        image_max_pixels: 0,
        vector_width: VectorWidth::DEFAULT,
    };
    let defines = [("TLITE_HAS_FP16", "1")];
    // The portable kernels, and the Mali build's half8 products (its normed launches normalise before converting).
    let mali = MatvecConfig {
        half_math: true,
        ..vendor_config(MatvecVendorKernel::Mali, 16, 2)
    };
    for (label, config) in [("half math", config), ("mali half math", mali)] {
        let mv = match MatvecM0e4::with_defines(&gpu, config, &defines) {
            Ok(mv) => mv,
            Err(err) => {
                eprintln!("{label}: not buildable on this device (expected on PoCL 3.1): {err}");
                assert!(
                    !gpu.caps().fp16,
                    "a device with cl_khr_fp16 must build the half path: {err}"
                );
                continue;
            }
        };
        let mut rng = rng(label);
        let m = random_m0e4(&mut rng, 29, 256, GroupSize::G64);
        let x = normal(&mut rng, 256, 1.0);
        let l1 = row_l1(&fp4::reference::dequantize(&m), 256, &x);
        let want = fp4::reference::matvec(&m, &x).unwrap();
        let got = plain_product(&gpu, &mv, &m, &x);
        assert_dot_close(label, &got, &want, &l1, 2e-3);
        check_matvec_within(&gpu, &mv, label, 2e-3);
    }
}

/// A small geometry of a vendor build, forced on whatever device runs the tests.
fn vendor_config(
    vendor_kernel: MatvecVendorKernel,
    work_group: usize,
    rows: usize,
) -> MatvecConfig {
    MatvecConfig {
        work_group,
        rows_per_group: rows,
        tall_rows_per_group: 0,
        long_x_local_chunks: 0,
        half_math: false,
        warp_shuffle: true,
        x_local_chunks: 0,
        unroll: 1,
        short_unroll: 0,
        nv_half2: false,
        cpu: None,
        vendor_kernel,
        image_max_pixels: u64::MAX,
        vector_width: VectorWidth::DEFAULT,
    }
}

/// The Mali build (vendor/mali.cl: whole rows per work-item, no local memory), forced here at each vector width
/// (1, 2 and 4 words per load): every product and residual mode at 1, 2 and 3 rows per work-item (37, 13, 70, 45 and 19 rows leave partly filled work-items and
/// work-groups), plain and with the Mali compile-check defines. Tolerance as the portable kernels' (1e-5 of Σ|w·x|;
/// f32 products in another order). Its normed products take the norm's scale after the dots, which the
/// normed checks' tolerance covers.
#[test]
fn m0e4_matvec_mali_build_matches_reference() {
    let gpu = gpu();
    let mali_defines = [
        ("TLITE_COMPILE_CHECK", ""),
        ("TLITE_HAS_SUBGROUPS", "1"),
        ("TLITE_HAS_SUBGROUPS_KHR", "1"),
        ("TLITE_VENDOR_MALI", "1"),
    ];
    let none: Vec<(&str, &str)> = Vec::new();
    let cases = [
        (16, 1, &none),
        (64, 2, &mali_defines.to_vec()),
        (8, 3, &none),
    ];
    // Every vector width the build takes (its loads of codes, activations and norm weights).
    for width in VectorWidth::ALL {
        for (wg, rows, defines) in cases {
            let config = MatvecConfig {
                vector_width: width,
                ..vendor_config(MatvecVendorKernel::Mali, wg, rows)
            };
            let mv = MatvecM0e4::with_defines(&gpu, config, defines).unwrap();
            assert_eq!(mv.vendor_kernel(), MatvecVendorKernel::Mali);
            assert!(!mv.uses_cpu_kernels() && !mv.uses_warp_shuffle());
            let label = format!("mali {width} wg{wg} rows{rows} defines{}", defines.len());
            check_matvec(&gpu, &mv, &label);
            check_gate_up_within(&gpu, &mv, &label, REL);
        }
    }
    // A CPU geometry overrides the vendor kernels, as it overrides every GPU field.
    let both = MatvecConfig {
        cpu: Some(clkernels::kernels::matvec::CpuMatvecGeometry::DEFAULT),
        ..vendor_config(MatvecVendorKernel::Mali, 16, 1)
    };
    assert!(MatvecM0e4::with_config(&gpu, both)
        .unwrap()
        .uses_cpu_kernels());
}

/// The Adreno image build (weights through image1d_buffer_t), forced here on a device with images; with the
/// Adreno compile-check stand-ins too. (scripts/test-oclgrind runs the image tests without the uninitialised-value
/// checker, which misreports image reads.) Then with a small image limit, so the larger matrices of the same checks
/// take the buffer build and the smaller ones the images. Tolerance as the portable kernels' (the same f32 recipe,
/// only the loads differ).
#[test]
fn m0e4_matvec_adreno_image_build_matches_reference() {
    let gpu = gpu();
    if !gpu.caps().image_support || gpu.caps().image_max_buffer_pixels == 0 {
        eprintln!(
            "skipped: {} reports no image support (CL_DEVICE_IMAGE_SUPPORT), so the image build cannot run here",
            gpu.caps().name
        );
        return;
    }
    let mut rng = rng("adreno image");
    let probe = DeviceM0e4::upload(&gpu, &random_m0e4(&mut rng, 37, 96, GroupSize::G32)).unwrap();
    let big = DeviceM0e4::upload(&gpu, &random_m0e4(&mut rng, 70, 256, GroupSize::G128)).unwrap();
    for (label, defines) in [
        ("adreno image", vec![]),
        ("adreno image stand-ins", ADRENO_STAND_INS.to_vec()),
    ] {
        let config = vendor_config(MatvecVendorKernel::AdrenoImage, 32, 4);
        let mv = MatvecM0e4::with_defines(&gpu, config, &defines).unwrap();
        assert!(
            mv.reads_through_images(&probe),
            "{label}: the images were not used"
        );
        check_matvec(&gpu, &mv, label);
        check_gate_up_within(&gpu, &mv, label, REL);
    }
    // 37x96 is 111 pixels of codes, 70x256 is 560: a 200-pixel limit reads the first through images and the
    // second from buffers, and both agree with the reference.
    let config = MatvecConfig {
        image_max_pixels: 200,
        ..vendor_config(MatvecVendorKernel::AdrenoImage, 32, 4)
    };
    let mv = MatvecM0e4::with_config(&gpu, config).unwrap();
    assert!(mv.reads_through_images(&probe));
    assert!(!mv.reads_through_images(&big));
    check_matvec(&gpu, &mv, "adreno image limit 200");
    check_gate_up_within(&gpu, &mv, "adreno image limit 200", REL);
}

/// The f16 head through an image (8 halves per pixel) in the Adreno image build, and from its buffer over the
/// image limit: 101x200 is 2525 pixels, within the first limit and over the second. Tolerance 1e-5 of Σ|w·x|.
#[test]
fn f16_matvec_adreno_image_build_matches_reference() {
    let gpu = gpu();
    if !gpu.caps().image_support || gpu.caps().image_max_buffer_pixels == 0 {
        eprintln!("skipped: {} reports no image support", gpu.caps().name);
        return;
    }
    let shape = MatrixShape::new(101, 200);
    let probe = DeviceF16Matrix::upload(&gpu, &vec![f16::ONE; shape.len()], shape).unwrap();
    for (limit, through_images) in [(u64::MAX, true), (200, false)] {
        let config = MatvecConfig {
            image_max_pixels: limit,
            ..vendor_config(MatvecVendorKernel::AdrenoImage, 32, 4)
        };
        let mv = MatvecF16::with_config(&gpu, config).unwrap();
        assert_eq!(
            mv.reads_through_images(&probe),
            through_images,
            "limit {limit}"
        );
        check_f16(
            &gpu,
            &mv,
            &format!("adreno image f16 limit {limit}"),
            (101, 200),
        );
    }
}
