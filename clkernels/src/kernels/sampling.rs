//! Softmax, argmax and top-k on the device (`sampling.cl`).

use super::norm::RowsShape;
use super::{check_len, program_source, shape_error, to_u32, KernelError, LockedKernel};
use crate::runtime::{DeviceBuffer, Gpu};

const SOURCE: crate::runtime::ProgramSource = program_source!("sampling", "sampling.cl");

/// Softmax / argmax / top-k launcher.
#[derive(Debug)]
pub struct Sampling {
    gpu: Gpu,
    wg: usize,
    softmax: LockedKernel,
    argmax: LockedKernel,
    top_k: LockedKernel,
}

impl Sampling {
    /// Builds the kernels.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        // One work-group scans a whole vocabulary row: as wide as the device allows (up to 1024) so each
        // work-item has fewer serial loads (argmax of 32000 took 31 us with 256 on the H100). A driver may refuse
        // that width for these kernels (registers, local memory; phones especially), so narrower builds are
        // tried before giving up.
        let mut wg = super::pow2_at_most(1024, gpu.caps().max_work_group_size);
        loop {
            match Self::with_work_group(gpu, wg) {
                Ok(s) => return Ok(s),
                Err(e) if wg > 64 => {
                    tracing::debug!(error = %e, wg, "sampling kernels refused this work-group size; trying narrower");
                    wg /= 4;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Builds the kernels for work-groups of `wg` work-items (a power of two), checking that the driver can
    /// run each of them that wide.
    fn with_work_group(gpu: &Gpu, wg: usize) -> Result<Self, KernelError> {
        let wg_s = wg.to_string();
        let d = [("SAMPLE_WG", wg_s.as_str())];
        let s = Sampling {
            gpu: gpu.clone(),
            wg,
            softmax: LockedKernel::build(gpu, &SOURCE, &d, "softmax")?,
            argmax: LockedKernel::build(gpu, &SOURCE, &d, "argmax")?,
            top_k: LockedKernel::build(gpu, &SOURCE, &d, "top_k")?,
        };
        for k in [&s.softmax, &s.argmax, &s.top_k] {
            let limit = k.max_work_group_size(gpu);
            if limit != 0 && limit < wg {
                return Err(shape_error(
                    "sampling",
                    format!(
                        "the driver runs these kernels with at most {limit} work-items, not {wg}"
                    ),
                ));
            }
        }
        Ok(s)
    }

    /// `y[row] = softmax(x[row] / temperature)` for each of `shape.rows` rows.
    pub fn softmax(
        &self,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
        shape: RowsShape,
        temperature: f32,
    ) -> Result<(), KernelError> {
        const K: &str = "softmax";
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(shape_error(
                K,
                format!("temperature {temperature} must be finite and > 0"),
            ));
        }
        if shape.is_empty() {
            return Err(shape_error(K, "empty shape"));
        }
        check_len(K, "x", x, shape.len())?;
        check_len(K, "y", y, shape.len())?;
        let args = [
            x.into(),
            (&*y).into(),
            to_u32(K, "dim", shape.dim)?.into(),
            (1.0 / temperature).into(),
        ];
        self.softmax
            .launch(&self.gpu, &args, &[shape.rows * self.wg], Some(&[self.wg]))
    }

    /// `out[0] = argmax(x[0..n])` (lowest index on ties).
    pub fn argmax(
        &self,
        x: &DeviceBuffer<f32>,
        n: usize,
        out: &mut DeviceBuffer<u32>,
    ) -> Result<(), KernelError> {
        const K: &str = "argmax";
        if n == 0 {
            return Err(shape_error(K, "n is 0"));
        }
        check_len(K, "x", x, n)?;
        let args = [x.into(), (&*out).into(), to_u32(K, "n", n)?.into()];
        self.argmax
            .launch(&self.gpu, &args, &[self.wg], Some(&[self.wg]))
    }

    /// The `k` largest of `x[0..n]` into `idx[0..k]` and `val[0..k]`, largest first (lowest index on ties).
    pub fn top_k(
        &self,
        x: &DeviceBuffer<f32>,
        n: usize,
        k: usize,
        idx: &mut DeviceBuffer<u32>,
        val: &mut DeviceBuffer<f32>,
    ) -> Result<(), KernelError> {
        const K: &str = "top_k";
        if k == 0 || k > n {
            return Err(shape_error(K, format!("k = {k} must be in 1..={n}")));
        }
        check_len(K, "x", x, n)?;
        check_len(K, "idx", idx, k)?;
        check_len(K, "val", val, k)?;
        let args = [
            x.into(),
            (&*idx).into(),
            (&*val).into(),
            to_u32(K, "n", n)?.into(),
            to_u32(K, "k", k)?.into(),
        ];
        self.top_k
            .launch(&self.gpu, &args, &[self.wg], Some(&[self.wg]))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The narrowest build `Sampling::new` falls back to on drivers that refuse wide groups gives the same
    /// argmax and top-k as the host, on random scores with planted ties.
    #[test]
    fn narrow_work_groups_give_the_same_picks() {
        let gpu = Gpu::open_default().unwrap();
        let s = Sampling::with_work_group(&gpu, 64).unwrap();
        let seed: u64 = rand::rng().random();
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut x: Vec<f32> = (0..5000).map(|_| rng.random_range(-4.0..4.0)).collect();
        x[4321] = 9.0;
        x[17] = 9.0; // a tie: the lower index wins
        let xd = DeviceBuffer::from_slice(&gpu, &x).unwrap();
        let mut best = DeviceBuffer::<u32>::new(&gpu, 1).unwrap();
        s.argmax(&xd, x.len(), &mut best).unwrap();
        assert_eq!(best.read(&gpu).unwrap()[0], 17);

        let k = 5;
        let mut idx = DeviceBuffer::<u32>::new(&gpu, k).unwrap();
        let mut val = DeviceBuffer::<f32>::new(&gpu, k).unwrap();
        s.top_k(&xd, x.len(), k, &mut idx, &mut val).unwrap();
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
        let want: Vec<u32> = order[..k].iter().map(|&i| i as u32).collect();
        assert_eq!(idx.read(&gpu).unwrap(), want);
    }
}
