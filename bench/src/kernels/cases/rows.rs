//! Cases of the kernels that work row by row: the launch floor (the smallest kernel), RMSNorm and the rotary.

use clkernels::kernels::elementwise::Elementwise;
use clkernels::kernels::norm::{Norm, RmsNormParams, RowsShape};
use clkernels::kernels::rope::{HeadsLayout, Rope, RopeConfig, RopeStyle};
use clkernels::kernels::KernelError;
use clkernels::runtime::{DeviceBuffer, Gpu};

use super::Dims;
use crate::kernels::data::Xorshift;
use crate::kernels::{Case, SuiteOptions};

/// The add of 32 floats: the per-launch floor every other case pays.
pub(super) fn launch_floor(
    gpu: &Gpu,
    opts: &SuiteOptions,
    rng: &mut Xorshift,
    out: &mut Vec<Case>,
) -> Result<(), KernelError> {
    if !opts.wants("launch_floor") {
        return Ok(());
    }
    let ew = Elementwise::new(gpu)?;
    let a = DeviceBuffer::from_slice(gpu, &rng.floats(32))?;
    let mut o = DeviceBuffer::<f32>::new(gpu, 32)?;
    out.push(Case {
        name: "launch_floor".into(),
        shape: "add of 32 floats".into(),
        config: "the smallest kernel: per-launch floor".into(),
        bytes: 384.0,
        flops: 0.0,
        run: Box::new(move || ew.add(&a, &a, &mut o, 32)),
    });
    Ok(())
}

/// RMSNorm over the prefill rows.
pub(super) fn rmsnorm(
    gpu: &Gpu,
    opts: &SuiteOptions,
    dims: Dims,
    rng: &mut Xorshift,
    out: &mut Vec<Case>,
) -> Result<(), KernelError> {
    if !opts.wants("rmsnorm") {
        return Ok(());
    }
    let Dims { hidden, seq, .. } = dims;
    let norm = Norm::new(gpu)?;
    let x = DeviceBuffer::from_slice(gpu, &rng.floats(seq * hidden))?;
    let w = DeviceBuffer::from_slice(gpu, &rng.floats(hidden))?;
    let mut y = DeviceBuffer::<f32>::new(gpu, seq * hidden)?;
    let shape = RowsShape {
        rows: seq,
        dim: hidden,
    };
    let p = RmsNormParams {
        eps: 1e-5,
        weight_offset: 0.0,
    };
    out.push(Case {
        name: "rmsnorm".into(),
        shape: format!("{seq}x{hidden}"),
        config: String::new(),
        bytes: (seq * hidden * 8) as f64,
        flops: 0.0,
        run: Box::new(move || norm.rms(&x, &w, &mut y, shape, p)),
    });
    Ok(())
}

/// The rotary over the prefill rows, in heads of 128.
pub(super) fn rope(
    gpu: &Gpu,
    opts: &SuiteOptions,
    dims: Dims,
    rng: &mut Xorshift,
    out: &mut Vec<Case>,
) -> Result<(), KernelError> {
    if !opts.wants("rope") {
        return Ok(());
    }
    let Dims { hidden, seq, .. } = dims;
    let (heads, head_dim) = (hidden / 128, 128);
    let rope = Rope::new(gpu)?;
    let mut x = DeviceBuffer::from_slice(gpu, &rng.floats(seq * hidden))?;
    let layout = HeadsLayout {
        offset: 0,
        token_stride: hidden,
        heads,
        seq,
    };
    let cfg = RopeConfig {
        head_dim,
        rotary_dim: head_dim,
        theta: 10000.0,
        style: RopeStyle::HalfSplit,
    };
    out.push(Case {
        name: "rope".into(),
        shape: format!("{seq} tok x {heads} heads x {head_dim}"),
        config: String::new(),
        bytes: (seq * hidden * 8) as f64,
        flops: 0.0,
        run: Box::new(move || rope.enqueue(&mut x, layout, cfg, 0)),
    });
    Ok(())
}
