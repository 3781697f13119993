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
        // work-item has fewer serial loads (argmax of 32000 took 31 us with 256 on the H100).
        let wg = super::pow2_at_most(1024, gpu.caps().max_work_group_size);
        let wg_s = wg.to_string();
        let d = [("SAMPLE_WG", wg_s.as_str())];
        Ok(Sampling {
            gpu: gpu.clone(),
            wg,
            softmax: LockedKernel::build(gpu, &SOURCE, &d, "softmax")?,
            argmax: LockedKernel::build(gpu, &SOURCE, &d, "argmax")?,
            top_k: LockedKernel::build(gpu, &SOURCE, &d, "top_k")?,
        })
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
