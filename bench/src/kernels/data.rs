//! Synthetic inputs of the cases: deterministic random values and M0E4 weights, uploaded so that launches read
//! them from memory rather than from the cache.

use clkernels::kernels::matvec::DeviceM0e4;
use clkernels::kernels::KernelError;
use clkernels::runtime::Gpu;
use fp4::{GroupSize, M0e4Matrix, MatrixShape};
use half::f16;

/// A small deterministic generator (xorshift), so the suite builds the same data on every machine and run.
#[derive(Debug)]
pub(crate) struct Xorshift(pub(crate) u64);

impl Xorshift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    pub(crate) fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
}

/// A random M0E4 matrix built directly from random codes (quantising tens of millions of weights would dominate).
pub(crate) fn synthetic_m0e4(
    rng: &mut Xorshift,
    rows: usize,
    cols: usize,
    group: GroupSize,
) -> Result<M0e4Matrix, KernelError> {
    let codes: Vec<u8> = (0..rows * cols / 2).map(|_| rng.next() as u8).collect();
    let groups = rows * cols / group.len();
    let scales: Vec<f16> = (0..groups)
        .map(|_| f16::from_f32(0.01 + 0.005 * rng.unit()))
        .collect();
    let offsets: Vec<f16> = (0..groups)
        .map(|_| f16::from_f32(-0.015 + 0.005 * rng.unit()))
        .collect();
    M0e4Matrix::from_parts(MatrixShape::new(rows, cols), group, codes, scales, offsets).map_err(
        |e| KernelError::Shape {
            kernel: "synthetic_m0e4",
            problem: e.to_string(),
        },
    )
}

/// Bytes of weight copies a mat-vec case cycles through: more than any last-level cache (the H100's L2 is 50 MB),
/// so every launch reads its weights from memory, as a decode step does (each matrix is read once per token).
/// Without the copies, a matrix that fits the L2 is re-read from it by back-to-back launches and looks faster
/// than it is in a step.
pub(crate) const COLD_WORKING_SET: usize = 256 << 20;

/// `m` uploaded as many times as [`COLD_WORKING_SET`] asks (at least once, at most 32).
pub(crate) fn cold_copies(gpu: &Gpu, m: &M0e4Matrix) -> Result<Vec<DeviceM0e4>, KernelError> {
    let first = DeviceM0e4::upload(gpu, m)?;
    let n = (COLD_WORKING_SET / first.bytes().max(1)).clamp(1, 32);
    let mut copies = vec![first];
    for _ in 1..n {
        copies.push(DeviceM0e4::upload(gpu, m)?);
    }
    Ok(copies)
}

#[cfg(test)]
mod tests {
    use super::Xorshift;

    #[test]
    fn unit_values_stay_in_range_and_spread() {
        let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
        let v = rng.floats(10_000);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!(v.iter().any(|&x| x < -0.9) && v.iter().any(|&x| x > 0.9));
    }
}
