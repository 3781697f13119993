//! Helpers shared by the kernel tests: the device, random inputs, poisoned outputs and tolerance checks.
#![allow(dead_code, clippy::unwrap_used)]

use clkernels::runtime::{DeviceBuffer, Gpu};
use fp4::{GroupSize, M0e4Matrix, MatrixShape};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Defines that build a program's khr sub-group path with TLITE_COMPILE_CHECK's stand-ins (a sub-group of one
/// work-item), so PoCL compiles the vendor code and runs its reduction logic.
pub const KHR_SUBGROUP_STAND_INS: [(&str, &str); 3] = [
    ("TLITE_COMPILE_CHECK", ""),
    ("TLITE_HAS_SUBGROUPS", "1"),
    ("TLITE_HAS_SUBGROUPS_KHR", "1"),
];
/// The same for the Adreno path (qcom shuffles).
pub const ADRENO_STAND_INS: [(&str, &str); 3] = [
    ("TLITE_COMPILE_CHECK", ""),
    ("TLITE_HAS_SUBGROUPS_QCOM", "1"),
    ("TLITE_VENDOR_ADRENO", "1"),
];
/// The same for NVIDIA's inline-PTX build (vendor/nvidia.cl): PoCL cannot compile PTX, so only the warp
/// reduction's indexing is kept, over warps of one work-item; the other NVIDIA helpers fall back to the portable
/// ones.
pub const NVIDIA_STAND_INS: [(&str, &str); 2] =
    [("TLITE_COMPILE_CHECK", ""), ("TLITE_NV_PTX", "1")];

/// The test device (PoCL on the dev box and in CI; `TLITE_DEVICE` picks another).
pub fn gpu() -> Gpu {
    Gpu::open_default().expect("an OpenCL device is needed for the kernel tests (PoCL on CI)")
}

/// Whether `TLITE_SMALL_SHAPES` asks for the reduced cases a simulator can run in time (scripts/test-oclgrind runs
/// the kernel tests on Oclgrind, which interprets every work-item): tests that honour it keep every code path (partial
/// tiles, several work-groups, each group size) but on fewer and smaller shapes.
pub fn small_shapes() -> bool {
    std::env::var_os("TLITE_SMALL_SHAPES").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A seeded generator, printed so a failure can be replayed.
pub fn rng(test: &str) -> StdRng {
    let seed: u64 = std::env::var("TLITE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("{test}: seed {seed} (TLITE_TEST_SEED to replay)");
    StdRng::seed_from_u64(seed)
}

/// `n` standard-normal values times `scale` (never all zeros).
pub fn normal(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| StandardNormal.sample(rng))
        .map(|v: f32| v * scale)
        .collect()
}

/// A random M0E4 matrix quantised from normal weights.
pub fn random_m0e4(rng: &mut StdRng, rows: usize, cols: usize, group: GroupSize) -> M0e4Matrix {
    let w = normal(rng, rows * cols, 0.1);
    fp4::quantize_m0e4(&w, MatrixShape::new(rows, cols), group).unwrap()
}

/// A device buffer of `n` f32 filled with 0xFF bytes (NaN), so elements a kernel fails to write are caught.
pub fn poisoned(gpu: &Gpu, n: usize) -> DeviceBuffer<f32> {
    let mut b = DeviceBuffer::<f32>::new(gpu, n).unwrap();
    b.fill_bytes(gpu, 0xFF).unwrap();
    b
}

/// Uploads `data`.
pub fn upload<T: bytemuck::Pod>(gpu: &Gpu, data: &[T]) -> DeviceBuffer<T> {
    DeviceBuffer::from_slice(gpu, data).unwrap()
}

/// Asserts |got - want| <= atol + rtol * |want| elementwise (NaN fails), naming the first bad element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}: element {i} is {g}, reference {w} (|err| {err} > {atol} + {rtol}*|ref|)"
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: {} elements, max |err| {worst:e}", got.len());
}

/// Per-element bound for a dot product computed in f32: `rel * sum |a_k b_k|` plus a tiny floor.
pub fn assert_dot_close(what: &str, got: &[f32], want: &[f32], l1: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f32;
    for i in 0..got.len() {
        let err = (got[i] - want[i]).abs();
        let tol = rel * l1[i] + 1e-6;
        assert!(
            err <= tol,
            "{what}: element {i} is {}, reference {} (|err| {err} > {tol})",
            got[i],
            want[i]
        );
        worst = worst.max(err / l1[i].max(1e-12));
    }
    eprintln!("{what}: {} elements, max |err|/l1 {worst:e}", got.len());
}

/// Checks `act(g)·u` outputs where each dot product may be off by `rel` of its row's Σ|w·x| (`l1g`, `l1u`):
/// the product's error is then at most 1.2·Δg·|u| + |g|·Δu + Δg·Δu (|act'| <= 1.2 and |act(g)| <= |g| for
/// SiLU and GELU), plus a 1e-4 floor and 1e-4 relative for the f32 rounding of the activation itself.
#[allow(clippy::too_many_arguments)] // the two dot products' references and bounds are all needed
pub fn assert_gated_close(
    what: &str,
    got: &[f32],
    want: &[f32],
    gate: &[f32],
    up: &[f32],
    l1g: &[f32],
    l1u: &[f32],
    rel: f32,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f32;
    for i in 0..got.len() {
        let err = (got[i] - want[i]).abs();
        let (dg, du) = (rel * l1g[i], rel * l1u[i]);
        let tol =
            1e-4 + 1e-4 * want[i].abs() + 1.2 * dg * up[i].abs() + gate[i].abs() * du + dg * du;
        assert!(
            err <= tol,
            "{what}: element {i} is {}, reference {} (|err| {err} > {tol})",
            got[i],
            want[i]
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: {} elements, max |err| {worst:e}", got.len());
}

/// `sum_k |W[r][k] x[k]|` per row of a dense row-major matrix: the scale of a dot product's rounding error.
pub fn row_l1(w: &[f32], cols: usize, x: &[f32]) -> Vec<f32> {
    w.chunks(cols)
        .map(|row| row.iter().zip(x).map(|(a, b)| (a * b).abs()).sum())
        .collect()
}
