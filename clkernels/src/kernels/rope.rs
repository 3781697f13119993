//! Rotary position embedding (`rope.cl`), in place on a strided activation buffer; and [`RopeShift`], which turns
//! keys already in a KV cache by a position delta after a context shift.

use kvcache::KvDtype;

use super::attention::KvOperand;
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

/// Per-pair inverse frequencies on the device, for rotaries a plain theta cannot describe (linear, Llama 3 or
/// longrope scaling): the host computes them once per model, the kernel only reads them. Longrope also multiplies
/// the rotated dimensions by an attention factor (`mscale`), which the forward kernel applies with the rotation.
#[derive(Debug)]
pub struct RopeTable {
    inv_freqs: DeviceBuffer<f32>,
    mscale: f32,
}

impl RopeTable {
    /// Uploads `rotary_dim / 2` inverse frequencies; each must be finite and positive.
    pub fn upload(gpu: &Gpu, inv_freqs: &[f32]) -> Result<Self, KernelError> {
        Self::upload_scaled(gpu, inv_freqs, 1.0)
    }

    /// Uploads the frequencies of a rotary that also multiplies the rotated dimensions by `mscale` (Phi-3's
    /// longrope attention factor: applied to q and k, it scales their rotated part of every score by
    /// `mscale^2`). The context shift ([`RopeShift`]) turns keys that already carry it and adds none.
    pub fn upload_scaled(gpu: &Gpu, inv_freqs: &[f32], mscale: f32) -> Result<Self, KernelError> {
        const K: &str = "rope_table";
        if !(mscale.is_finite() && mscale > 0.0) {
            return Err(shape_error(
                K,
                format!("the rotary's attention factor {mscale} must be finite and positive"),
            ));
        }
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
            mscale,
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
        self.launch_rotation(&self.kernel, K, x, layout, config, theta, past, None)
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
        let mscale = Some(table.mscale);
        self.launch_rotation(
            &self.table_kernel,
            K,
            x,
            layout,
            config,
            freqs,
            past,
            mscale,
        )
    }

    /// The checks and launch both rotary kernels share; `frequencies` is the argument where they differ (log2 of
    /// theta, or the frequency table), and the table kernel also takes the attention factor `mscale`.
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
        mscale: Option<f32>,
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
        let all = [
            (&*x).into(),
            to_u32(name, "offset", layout.offset)?.into(),
            to_u32(name, "token_stride", layout.token_stride)?.into(),
            to_u32(name, "head_dim", config.head_dim)?.into(),
            to_u32(name, "rotary_dim", config.rotary_dim)?.into(),
            frequencies,
            to_u32(name, "past", past)?.into(),
            config.style.code().into(),
            mscale.unwrap_or(1.0).into(),
        ];
        // The theta kernel takes no attention factor.
        let args = if mscale.is_some() {
            &all[..]
        } else {
            &all[..8]
        };
        kernel.launch(
            &self.gpu,
            args,
            &[config.rotary_dim / 2, layout.heads, layout.seq],
            None,
        )
    }
}

/// The largest position delta [`RopeShift`] takes: the kernel gets it as a float, exact up to 2^24.
const MAX_SHIFT_DELTA: i64 = 1 << 24;

/// Re-rotates keys already in a KV cache by a position delta, in place: after a context shift moves kept keys
/// `dropped` slots down, turning them by `-dropped` positions makes them what rotating the raw keys at their new
/// slots makes (rotations compose), so nothing has to be prefilled again. The angle `delta * freq` is formed
/// directly in f32 from the forward rotary's own frequencies (theta, or the model's table), rather than undoing
/// the old rotation and applying the new one; f16 caches are read and written through `vload_half` /
/// `vstore_half_rte`, so each shift adds one f16 rounding.
#[derive(Debug)]
pub struct RopeShift {
    gpu: Gpu,
    dtype: KvDtype,
    theta_kernel: LockedKernel,
    table_kernel: LockedKernel,
}

impl RopeShift {
    /// Builds the kernels for a cache whose elements are `dtype`.
    pub fn new(gpu: &Gpu, dtype: KvDtype) -> Result<Self, KernelError> {
        let defines: &[(&str, &str)] = match dtype {
            KvDtype::F16 => &[("KV_F16", "1")],
            KvDtype::F32 => &[],
        };
        Ok(RopeShift {
            gpu: gpu.clone(),
            dtype,
            theta_kernel: LockedKernel::build(gpu, &SOURCE, defines, "rope_shift")?,
            table_kernel: LockedKernel::build(gpu, &SOURCE, defines, "rope_shift_table")?,
        })
    }

    /// Turns every key in `keys` (a view of one layer's K buffer: its heads and positions, a ring's included) by
    /// `delta` positions.
    /// The frequencies are the forward rotary's: `table`'s where the model rotates from one (a scaled rotary),
    /// else `config.theta`'s. Dimensions at or past `config.rotary_dim` are left alone, as the forward pass leaves
    /// them.
    pub fn enqueue(
        &self,
        keys: KvOperand<'_>,
        config: RopeConfig,
        table: Option<&RopeTable>,
        delta: i64,
    ) -> Result<(), KernelError> {
        const K: &str = "rope_shift";
        let view = *keys.view();
        keys.check(K, "keys")?;
        if view.dtype != self.dtype {
            return Err(shape_error(
                K,
                format!(
                    "the keys are {:?} but the kernel was built for {:?}",
                    view.dtype, self.dtype
                ),
            ));
        }
        if config.head_dim != view.head_dim {
            return Err(shape_error(
                K,
                format!(
                    "rope head_dim {} differs from the cache's {}",
                    config.head_dim, view.head_dim
                ),
            ));
        }
        if delta.abs() > MAX_SHIFT_DELTA {
            return Err(shape_error(
                K,
                format!("a delta of {delta} positions is beyond ±{MAX_SHIFT_DELTA}"),
            ));
        }
        let (kernel, frequencies) = match table {
            Some(table) => {
                if table.rotary_dim() != config.rotary_dim || config.rotary_dim > config.head_dim {
                    return Err(shape_error(
                        K,
                        format!(
                            "the table has {} frequencies for rotary_dim {} and head_dim {}",
                            table.inv_freqs.len(),
                            config.rotary_dim,
                            config.head_dim
                        ),
                    ));
                }
                (&self.table_kernel, Arg::from(&table.inv_freqs))
            }
            None => {
                config.validate(K)?;
                (&self.theta_kernel, Arg::from(config.log2_theta()))
            }
        };
        if delta == 0 || config.rotary_dim == 0 || view.positions == 0 || view.heads == 0 {
            return Ok(());
        }
        let [ring, ring_first] = super::attention::kv_ring(K, &view, view.positions)?;
        let args = [
            Arg::Mem(keys.mem()),
            to_u32(K, "offset", view.offset_elems as usize)?.into(),
            to_u32(K, "head stride", view.head_stride_elems as usize)?.into(),
            to_u32(K, "position stride", view.position_stride_elems as usize)?.into(),
            to_u32(K, "rotary_dim", config.rotary_dim)?.into(),
            frequencies,
            (delta as f32).into(),
            config.style.code().into(),
            ring.into(),
            ring_first.into(),
        ];
        kernel.launch(
            &self.gpu,
            &args,
            &[config.rotary_dim / 2, view.heads, view.positions],
            None,
        )
    }
}
