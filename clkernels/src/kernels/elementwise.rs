//! Small elementwise kernels (`elementwise.cl`): residual add, gated activations, bias add, row copy, soft-cap.

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
    copy: LockedKernel,
    softcap: LockedKernel,
}

/// Which rows [`Elementwise::copy_rows`] copies: `rows` rows of `cols` values, from row `src_row` of a row-major
/// source to row `dst_row` of a row-major destination with the same row length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCopy {
    /// Rows copied.
    pub rows: usize,
    /// Values per row, in both buffers.
    pub cols: usize,
    /// First source row.
    pub src_row: usize,
    /// First destination row.
    pub dst_row: usize,
}

impl Elementwise {
    /// Builds the kernels.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Ok(Elementwise {
            gpu: gpu.clone(),
            add: LockedKernel::build(gpu, &SOURCE, &[], "add")?,
            gated: LockedKernel::build(gpu, &SOURCE, &[], "gated_act")?,
            bias: LockedKernel::build(gpu, &SOURCE, &[], "add_bias_rows")?,
            copy: LockedKernel::build(gpu, &SOURCE, &[], "copy_rows")?,
            softcap: LockedKernel::build(gpu, &SOURCE, &[], "softcap")?,
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

    /// `x[..n] = cap * tanh(x[..n] / cap)` (Gemma 2's final-logit soft-capping); `cap` must be positive.
    pub fn softcap_in_place(
        &self,
        x: &mut DeviceBuffer<f32>,
        n: usize,
        cap: f32,
    ) -> Result<(), KernelError> {
        check_len("softcap", "x", x, n)?;
        if !(cap.is_finite() && cap > 0.0) {
            return Err(super::shape_error(
                "softcap",
                format!("cap {cap} must be positive and finite"),
            ));
        }
        self.softcap
            .launch(&self.gpu, &[(&*x).into(), cap.into()], &[n], None)
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

    /// Copies the rows `copy` names from `src` into `dst`, exactly (the prefill's last position, say, into a
    /// buffer of its own for the output head). Both row ranges must lie inside their buffers.
    pub fn copy_rows(
        &self,
        src: &DeviceBuffer<f32>,
        dst: &mut DeviceBuffer<f32>,
        copy: RowCopy,
    ) -> Result<(), KernelError> {
        const K: &str = "copy_rows";
        let RowCopy {
            rows,
            cols,
            src_row,
            dst_row,
        } = copy;
        // Element offsets of the first row and one past the last, refused rather than wrapped when they overflow.
        let span = |first: usize, what: &str| {
            let start = first.checked_mul(cols);
            let end = first
                .checked_add(rows)
                .and_then(|last| last.checked_mul(cols));
            start.zip(end).ok_or_else(|| {
                super::shape_error(
                    K,
                    format!("{what} rows {first}..+{rows} of {cols} overflow"),
                )
            })
        };
        let (src_start, src_end) = span(src_row, "source")?;
        let (dst_start, dst_end) = span(dst_row, "destination")?;
        check_len(K, "src", src, src_end)?;
        check_len(K, "dst", dst, dst_end)?;
        let args = [
            src.into(),
            to_u32(K, "source offset", src_start)?.into(),
            (&*dst).into(),
            to_u32(K, "destination offset", dst_start)?.into(),
        ];
        self.copy.launch(&self.gpu, &args, &[rows * cols], None)
    }
}
