//! Row normalisation (`norm.cl`): RMSNorm, one work-group per row.

use super::{check_len, program_source, shape_error, to_u32, Arg, KernelError, LockedKernel};
use crate::runtime::{DeviceBuffer, Gpu};

const SOURCE: crate::runtime::ProgramSource = program_source!("norm", "norm.cl");

/// `rows` rows of `dim` contiguous values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowsShape {
    /// Number of rows (tokens).
    pub rows: usize,
    /// Values per row.
    pub dim: usize,
}

impl RowsShape {
    /// Total values.
    pub fn len(&self) -> usize {
        self.rows * self.dim
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// RMSNorm parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsNormParams {
    /// Added to the mean square.
    pub eps: f32,
    /// Added to each weight: 0 for Llama, 1 for Gemma (whose checkpoints store `w - 1`).
    pub weight_offset: f32,
}

/// RMSNorm launcher.
#[derive(Debug)]
pub struct Norm {
    gpu: Gpu,
    wg: usize,
    rms: LockedKernel,
}

impl Norm {
    /// Builds the kernels.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        let wg = super::pow2_at_most(256, gpu.caps().max_work_group_size);
        let wg_s = wg.to_string();
        let defines = [("NORM_WG", wg_s.as_str())];
        Ok(Norm {
            gpu: gpu.clone(),
            wg,
            rms: LockedKernel::build(gpu, &SOURCE, &defines, "rmsnorm")?,
        })
    }

    fn check(
        kernel: &'static str,
        x: &DeviceBuffer<f32>,
        weight: &DeviceBuffer<f32>,
        out_len: usize,
        shape: RowsShape,
    ) -> Result<u32, KernelError> {
        if shape.is_empty() {
            return Err(shape_error(kernel, "empty shape"));
        }
        check_len(kernel, "x", x, shape.len())?;
        check_len(kernel, "weight", weight, shape.dim)?;
        if out_len < shape.len() {
            return Err(shape_error(
                kernel,
                format!("output has {out_len} elements, needs {}", shape.len()),
            ));
        }
        to_u32(kernel, "dim", shape.dim)
    }

    fn rms_args(
        &self,
        x: Arg<'static>,
        weight: &DeviceBuffer<f32>,
        y: Arg<'static>,
        dim: u32,
        p: RmsNormParams,
    ) -> [Arg<'static>; 6] {
        [
            x,
            weight.into(),
            y,
            dim.into(),
            p.eps.into(),
            p.weight_offset.into(),
        ]
    }

    /// `y = rmsnorm(x)` row by row.
    pub fn rms(
        &self,
        x: &DeviceBuffer<f32>,
        weight: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
        shape: RowsShape,
        params: RmsNormParams,
    ) -> Result<(), KernelError> {
        let dim = Self::check("rmsnorm", x, weight, y.len(), shape)?;
        let args = self.rms_args(x.into(), weight, (&*y).into(), dim, params);
        self.rms
            .launch(&self.gpu, &args, &[shape.rows * self.wg], Some(&[self.wg]))
    }

    /// RMSNorm in place.
    pub fn rms_in_place(
        &self,
        x: &mut DeviceBuffer<f32>,
        weight: &DeviceBuffer<f32>,
        shape: RowsShape,
        params: RmsNormParams,
    ) -> Result<(), KernelError> {
        let dim = Self::check("rmsnorm", x, weight, x.len(), shape)?;
        let args = self.rms_args((&*x).into(), weight, (&*x).into(), dim, params);
        self.rms
            .launch(&self.gpu, &args, &[shape.rows * self.wg], Some(&[self.wg]))
    }
}
