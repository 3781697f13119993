//! Small elementwise kernels (`elementwise.cl`): residual add, gated activations, bias add.

use super::{check_len, program_source, to_u32, GatedActivation, KernelError, LockedKernel};
use crate::runtime::{DeviceBuffer, Gpu};

const SOURCE: crate::runtime::ProgramSource = program_source!("elementwise", "elementwise.cl");

/// Elementwise launcher.
#[derive(Debug)]
pub struct Elementwise {
    gpu: Gpu,
    add: LockedKernel,
    gated: LockedKernel,
    bias: LockedKernel,
}

impl Elementwise {
    /// Builds the kernels.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Ok(Elementwise {
            gpu: gpu.clone(),
            add: LockedKernel::build(gpu, &SOURCE, &[], "add")?,
            gated: LockedKernel::build(gpu, &SOURCE, &[], "gated_act")?,
            bias: LockedKernel::build(gpu, &SOURCE, &[], "add_bias_rows")?,
        })
    }

    /// `out[..n] = a[..n] + b[..n]`.
    pub fn add(
        &self,
        a: &DeviceBuffer<f32>,
        b: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        n: usize,
    ) -> Result<(), KernelError> {
        check_len("add", "a", a, n)?;
        check_len("add", "b", b, n)?;
        check_len("add", "out", out, n)?;
        self.add
            .launch(&self.gpu, &[a.into(), b.into(), (&*out).into()], &[n], None)
    }

    /// `acc[..n] += b[..n]` (the residual stream update).
    pub fn add_in_place(
        &self,
        acc: &mut DeviceBuffer<f32>,
        b: &DeviceBuffer<f32>,
        n: usize,
    ) -> Result<(), KernelError> {
        check_len("add", "acc", acc, n)?;
        check_len("add", "b", b, n)?;
        self.add.launch(
            &self.gpu,
            &[(&*acc).into(), b.into(), (&*acc).into()],
            &[n],
            None,
        )
    }

    /// `gate[..n] = act(gate[..n]) * up[..n]` (SwiGLU / GeGLU combine after separate prefill projections).
    pub fn gated_in_place(
        &self,
        gate: &mut DeviceBuffer<f32>,
        up: &DeviceBuffer<f32>,
        n: usize,
        act: GatedActivation,
    ) -> Result<(), KernelError> {
        check_len("gated_act", "gate", gate, n)?;
        check_len("gated_act", "up", up, n)?;
        let args = [
            (&*gate).into(),
            up.into(),
            (&*gate).into(),
            act.code().into(),
        ];
        self.gated.launch(&self.gpu, &args, &[n], None)
    }

    /// `y[r][c] += bias[c]` for `rows` rows of `cols` (Qwen2's QKV bias).
    pub fn add_bias_rows(
        &self,
        y: &mut DeviceBuffer<f32>,
        bias: &DeviceBuffer<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), KernelError> {
        check_len("add_bias_rows", "y", y, rows * cols)?;
        check_len("add_bias_rows", "bias", bias, cols)?;
        let args = [
            (&*y).into(),
            bias.into(),
            to_u32("add_bias_rows", "cols", cols)?.into(),
        ];
        self.bias.launch(&self.gpu, &args, &[cols, rows], None)
    }
}
