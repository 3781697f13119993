//! Rotary position embedding (`rope.cl`), in place on a strided activation buffer.

use super::{check_len, program_source, shape_error, to_u32, Arg, KernelError, LockedKernel};
use crate::runtime::{DeviceBuffer, Gpu};

const SOURCE: crate::runtime::ProgramSource = program_source!("rope", "rope.cl");

/// Which dimensions rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)` (GPT-J, llama.cpp's default, llama2.c).
    Interleaved,
    /// Pairs `(i, i + rotary_dim/2)` (Hugging Face Llama, NeoX, Qwen2, Gemma).
    HalfSplit,
}

impl RopeStyle {
    pub(crate) fn code(self) -> u32 {
        match self {
            RopeStyle::Interleaved => 0,
            RopeStyle::HalfSplit => 1,
        }
    }
}

/// Rotary parameters of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    /// Dimension of one head.
    pub head_dim: usize,
    /// Leading dimensions rotated (even, at most `head_dim`); the rest pass through.
    pub rotary_dim: usize,
    /// Frequency base.
    pub theta: f32,
    /// Pairing.
    pub style: RopeStyle,
}

impl RopeConfig {
    pub(crate) fn validate(&self, kernel: &'static str) -> Result<(), KernelError> {
        if self.head_dim == 0
            || !self.rotary_dim.is_multiple_of(2)
            || self.rotary_dim > self.head_dim
        {
            return Err(shape_error(
                kernel,
                format!(
                    "rotary_dim {} must be even and <= head_dim {}",
                    self.rotary_dim, self.head_dim
                ),
            ));
        }
        if !(self.theta.is_finite() && self.theta > 1.0) {
            return Err(shape_error(
                kernel,
                format!("rope_theta {} must be finite and > 1", self.theta),
            ));
        }
        Ok(())
    }

    pub(crate) fn log2_theta(&self) -> f32 {
        self.theta.log2()
    }
}

/// Where the heads to rotate live: element `d` of head `h` of token `t` is at
/// `offset + t * token_stride + h * head_dim + d` (e.g. the q part of a fused QKV output has offset 0 and
/// token_stride `(heads + 2 * kv_heads) * head_dim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadsLayout {
    /// Element offset of token 0, head 0.
    pub offset: usize,
    /// Elements between tokens.
    pub token_stride: usize,
    /// Heads per token.
    pub heads: usize,
    /// Tokens.
    pub seq: usize,
}

impl HeadsLayout {
    /// One past the last element touched.
    pub(crate) fn end(&self, head_dim: usize) -> usize {
        if self.seq == 0 {
            return self.offset;
        }
        self.offset + (self.seq - 1) * self.token_stride + self.heads * head_dim
    }
}

/// Per-pair inverse frequencies on the device, for rotaries a plain theta cannot describe (linear or Llama 3
/// scaling): the host computes them once per model, the kernel only reads them.
#[derive(Debug)]
pub struct RopeTable {
    inv_freqs: DeviceBuffer<f32>,
}

impl RopeTable {
    /// Uploads `rotary_dim / 2` inverse frequencies; each must be finite and positive.
    pub fn upload(gpu: &Gpu, inv_freqs: &[f32]) -> Result<Self, KernelError> {
        const K: &str = "rope_table";
        if inv_freqs.is_empty() {
            return Err(shape_error(K, "the frequency table is empty"));
        }
        if let Some((i, f)) = inv_freqs
            .iter()
            .enumerate()
            .find(|(_, f)| !(f.is_finite() && **f > 0.0))
        {
            return Err(shape_error(
                K,
                format!("inverse frequency {i} is {f}; it must be finite and positive"),
            ));
        }
        Ok(RopeTable {
            inv_freqs: DeviceBuffer::from_slice(gpu, inv_freqs)?,
        })
    }

    /// The rotary dimension the table describes.
    pub fn rotary_dim(&self) -> usize {
        2 * self.inv_freqs.len()
    }
}

/// Rotary launcher.
#[derive(Debug)]
pub struct Rope {
    gpu: Gpu,
    kernel: LockedKernel,
    table_kernel: LockedKernel,
}

impl Rope {
    /// Builds the kernel.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Ok(Rope {
            gpu: gpu.clone(),
            kernel: LockedKernel::build(gpu, &SOURCE, &[], "rope")?,
            table_kernel: LockedKernel::build(gpu, &SOURCE, &[], "rope_table")?,
        })
    }

    /// Rotates `x` in place; token `t` of the layout sits at position `past + t`.
    pub fn enqueue(
        &self,
        x: &mut DeviceBuffer<f32>,
        layout: HeadsLayout,
        config: RopeConfig,
        past: usize,
    ) -> Result<(), KernelError> {
        const K: &str = "rope";
        config.validate(K)?;
        if config.rotary_dim == 0 {
            return Ok(());
        }
        let theta = Arg::from(config.log2_theta());
        self.launch_rotation(&self.kernel, K, x, layout, config, theta, past)
    }

    /// Rotates `x` in place with the frequencies of `table` (whose length fixes the rotary dimension;
    /// `config.theta` is not used); token `t` of the layout sits at position `past + t`.
    pub fn enqueue_with_table(
        &self,
        x: &mut DeviceBuffer<f32>,
        layout: HeadsLayout,
        config: RopeConfig,
        table: &RopeTable,
        past: usize,
    ) -> Result<(), KernelError> {
        const K: &str = "rope_table";
        if table.rotary_dim() != config.rotary_dim {
            return Err(shape_error(
                K,
                format!(
                    "the table has {} frequencies but rotary_dim is {}",
                    table.inv_freqs.len(),
                    config.rotary_dim
                ),
            ));
        }
        if config.rotary_dim > config.head_dim {
            return Err(shape_error(
                K,
                format!(
                    "rotary_dim {} must be <= head_dim {}",
                    config.rotary_dim, config.head_dim
                ),
            ));
        }
        let freqs = Arg::from(&table.inv_freqs);
        self.launch_rotation(&self.table_kernel, K, x, layout, config, freqs, past)
    }

    /// The checks and launch both rotary kernels share; `frequencies` is the one argument where they differ
    /// (log2 of theta, or the frequency table).
    #[allow(clippy::too_many_arguments)]
    fn launch_rotation(
        &self,
        kernel: &LockedKernel,
        name: &'static str,
        x: &mut DeviceBuffer<f32>,
        layout: HeadsLayout,
        config: RopeConfig,
        frequencies: Arg,
        past: usize,
    ) -> Result<(), KernelError> {
        if layout.token_stride < layout.heads * config.head_dim && layout.seq > 1 {
            return Err(shape_error(
                name,
                "token_stride is smaller than heads * head_dim",
            ));
        }
        check_len(name, "x", x, layout.end(config.head_dim))?;
        if layout.seq == 0 || layout.heads == 0 {
            return Ok(());
        }
        let args = [
            (&*x).into(),
            to_u32(name, "offset", layout.offset)?.into(),
            to_u32(name, "token_stride", layout.token_stride)?.into(),
            to_u32(name, "head_dim", config.head_dim)?.into(),
            to_u32(name, "rotary_dim", config.rotary_dim)?.into(),
            frequencies,
            to_u32(name, "past", past)?.into(),
            config.style.code().into(),
        ];
        kernel.launch(
            &self.gpu,
            &args,
            &[config.rotary_dim / 2, layout.heads, layout.seq],
            None,
        )
    }
}
