//! Decode matrix-vector products (`matvec.cl`): `y = W·x (+ r)` on M0E4 weights with fused dequantisation,
//! the gate+up pair with its activation in one launch, and f16-weight heads.
//!
//! QKV in one launch: upload the concatenated `[q; k; v]` weight ([`DeviceM0e4::concat_rows`]) and run one
//! [`MatvecM0e4::enqueue`]; the rotary and K/V-append kernels read the parts of its output by offset.
//!
//! The folder keeps each concern apart: `config.rs` holds the geometry and its per-vendor starting point,
//! `choose.rs` which build a launch runs, `params.rs` the checks that turn a call into the kernels' `#[repr(C)]`
//! parameter struct (all three pure, unit-tested without a device), `builds.rs` compiles `matvec.cl`, [`cpu`]
//! holds the CPU-device kernels, and the launchers here only tie them together and launch.

mod builds;
mod choose;
mod config;
pub mod cpu;
mod params;
mod weights;

use fp4::MatrixShape;

use self::builds::{GpuM0e4Builds, MaliM0e4Builds};
pub use self::choose::MatvecVendorKernel;
use self::choose::{choose_m0e4_build, half_products, reads_through_images, M0e4Product};
pub use self::config::{MatvecConfig, MALI_ROWS_PER_ITEM, TALL_GROUPS_PER_UNIT};
pub use self::cpu::CpuMatvecGeometry;
use self::cpu::{CpuMatvecF16, CpuMatvecM0e4};
use self::params::{check_f16, check_m0e4, M0e4Call};
pub use self::weights::{DeviceF16Matrix, DeviceM0e4};
use super::norm::RmsNormParams;
use super::{shape_error, Arg, GatedActivation, KernelError, LockedKernel, Residual};
use crate::runtime::{DeviceBuffer, Gpu, ProgramSource};

/// Decode mat-vec on M0E4 weights: `y = W·x (+ r)` and `out = act(Wg·x) * (Wu·x)`.
#[derive(Debug)]
pub struct MatvecM0e4 {
    gpu: Gpu,
    config: MatvecConfig,
    kernels: M0e4Kernels,
}

/// The kernels a [`MatvecM0e4`] launches: the GPU family of `matvec.cl` or the CPU one of `cpu.cl`.
#[derive(Debug)]
enum M0e4Kernels {
    Gpu(GpuM0e4Builds),
    Mali(MaliM0e4Builds),
    Cpu(CpuMatvecM0e4),
}

/// The codes, scales and offsets buffers of `w`, as the first three arguments of a weight in every kernel.
fn weight_args(w: &DeviceM0e4) -> [Arg<'static>; 3] {
    [(&w.codes).into(), (&w.scales).into(), (&w.offsets).into()]
}

/// One decode mat-vec, in the terms the four public entry points share.
struct MatvecOp<'a> {
    w: &'a DeviceM0e4,
    /// The up projection and the gate's activation, for `act(W·x) * (U·x)`.
    up: Option<(&'a DeviceM0e4, GatedActivation)>,
    x: &'a DeviceBuffer<f32>,
    /// RMSNorm of `x` fused in front: the norm weight and its parameters.
    norm: Option<(&'a DeviceBuffer<f32>, RmsNormParams)>,
    residual: Residual<'a>,
}

impl MatvecOp<'_> {
    /// The call as the checks see it, writing into `out_len` values.
    fn call(&self, out_len: usize) -> M0e4Call {
        M0e4Call {
            w: self.w.dims(),
            up: self.up.map(|(u, act)| (u.dims(), act)),
            x_len: self.x.len(),
            norm: self.norm.map(|(nw, p)| (nw.len(), p)),
            res_mode: self.residual.mode(),
            residual_len: match self.residual {
                Residual::Add(r) => Some(r.len()),
                _ => None,
            },
            out_len,
        }
    }
}

impl MatvecM0e4 {
    /// Builds the kernels with the vendor's default geometry.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Self::with_config(gpu, MatvecConfig::for_gpu(gpu))
    }

    /// Builds the kernels with an explicit geometry (benchmarks tune it).
    pub fn with_config(gpu: &Gpu, config: MatvecConfig) -> Result<Self, KernelError> {
        Self::with_defines(gpu, config, &[])
    }

    /// As [`MatvecM0e4::with_config`], adding compiler defines (the vendor compile checks use
    /// `TLITE_COMPILE_CHECK` and stand-in capability defines).
    pub fn with_defines(
        gpu: &Gpu,
        config: MatvecConfig,
        extra: &[(&str, &str)],
    ) -> Result<Self, KernelError> {
        Self::build(gpu, &builds::SOURCE, config, extra)
    }

    /// As [`MatvecM0e4::with_defines`], with the benchmark diagnostics of `diag.cl` available to `extra`
    /// (`MV_DIAG_CHEAP_DOT`, `MV_DIAG_TIMES`; see that file). Without such a define the kernels are the engine's.
    /// The CPU kernels have no diagnostics.
    pub fn with_diagnostics(
        gpu: &Gpu,
        config: MatvecConfig,
        extra: &[(&str, &str)],
    ) -> Result<Self, KernelError> {
        Self::build(gpu, &builds::DIAG_SOURCE, config, extra)
    }

    fn build(
        gpu: &Gpu,
        source: &ProgramSource,
        config: MatvecConfig,
        extra: &[(&str, &str)],
    ) -> Result<Self, KernelError> {
        let kernels = match (config.cpu, config.vendor_kernel) {
            (Some(geometry), _) => M0e4Kernels::Cpu(CpuMatvecM0e4::new(gpu, geometry, extra)?),
            (None, MatvecVendorKernel::Mali) => {
                M0e4Kernels::Mali(MaliM0e4Builds::new(gpu, &config, extra)?)
            }
            (None, _) => M0e4Kernels::Gpu(GpuM0e4Builds::new(gpu, source, &config, extra)?),
        };
        Ok(MatvecM0e4 {
            gpu: gpu.clone(),
            config,
            kernels,
        })
    }

    /// The geometry in use.
    pub fn config(&self) -> MatvecConfig {
        self.config
    }

    /// Whether the CPU-device kernels (`cpu.cl`) are the ones launched.
    pub fn uses_cpu_kernels(&self) -> bool {
        matches!(self.kernels, M0e4Kernels::Cpu(_))
    }

    /// Which GPU kernels run (see [`MatvecConfig::vendor_kernel`]); meaningless when the CPU kernels do.
    pub fn vendor_kernel(&self) -> MatvecVendorKernel {
        self.config.vendor_kernel
    }

    /// Whether a launch on `w` reads its weights through images (the Adreno image build, within the image limit,
    /// on a device that accepted the images).
    pub fn reads_through_images(&self, w: &DeviceM0e4) -> bool {
        matches!(self.kernels, M0e4Kernels::Gpu(_))
            && reads_through_images(&self.config, w.code_pixels())
            && w.images(&self.gpu).is_some()
    }

    /// Whether the NVIDIA warp-shuffle reduction is in use (it needs an NVIDIA driver that accepts inline PTX).
    pub fn uses_warp_shuffle(&self) -> bool {
        match &self.kernels {
            M0e4Kernels::Gpu(builds) => builds.warp_shuffle(),
            M0e4Kernels::Mali(_) | M0e4Kernels::Cpu(_) => false,
        }
    }

    /// Whether the products are computed in half precision (NVIDIA's packed-f16 path, or `half_math` on a
    /// `cl_khr_fp16` device): results then agree with f32 to about 2e-3 of Σ|w·x| per row instead of 1e-5.
    pub fn uses_half_products(&self) -> bool {
        let caps = self.gpu.caps();
        half_products(
            &self.config,
            caps.vendor_family,
            caps.fp16,
            self.uses_warp_shuffle(),
        )
    }

    /// Enqueues `y = W·x` (+ `residual`). `x` holds at least `cols` values, `y` at least `rows`.
    pub fn enqueue(
        &self,
        w: &DeviceM0e4,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
        residual: Residual<'_>,
    ) -> Result<(), KernelError> {
        let op = MatvecOp {
            w,
            up: None,
            x,
            norm: None,
            residual,
        };
        self.run(op, y)
    }

    /// Enqueues `y = W·rmsnorm(x)` (+ `residual`): the RMSNorm (with weight `norm_weight` of `cols` values, plus
    /// `params.weight_offset`) fused into the mat-vec, so a decode step's norm costs no launch of its own. Every
    /// work-group recomputes the sum of squares of `x` (`cols` values), which is cheap beside the weights. A bias
    /// (Qwen's QKV bias) is added as `Residual::Add(bias)`, again with no launch of its own.
    pub fn enqueue_normed(
        &self,
        w: &DeviceM0e4,
        x: &DeviceBuffer<f32>,
        norm_weight: &DeviceBuffer<f32>,
        params: RmsNormParams,
        y: &mut DeviceBuffer<f32>,
        residual: Residual<'_>,
    ) -> Result<(), KernelError> {
        let op = MatvecOp {
            w,
            up: None,
            x,
            norm: Some((norm_weight, params)),
            residual,
        };
        self.run(op, y)
    }

    /// Enqueues `out = act(Wg·x) * (Wu·x)` (the gated feed-forward's first half). `gate` and `up` must have the
    /// same shape and group size.
    pub fn enqueue_gate_up(
        &self,
        gate: &DeviceM0e4,
        up: &DeviceM0e4,
        x: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        act: GatedActivation,
    ) -> Result<(), KernelError> {
        let op = MatvecOp {
            w: gate,
            up: Some((up, act)),
            x,
            norm: None,
            residual: Residual::None,
        };
        self.run(op, out)
    }

    /// Enqueues `out = act(Wg·n) * (Wu·n)` with `n = rmsnorm(x)` computed inside the launch, as
    /// [`MatvecM0e4::enqueue_normed`] does for one matrix.
    #[allow(clippy::too_many_arguments)] // each argument is a distinct typed operand; bundling them hides nothing
    pub fn enqueue_gate_up_normed(
        &self,
        gate: &DeviceM0e4,
        up: &DeviceM0e4,
        x: &DeviceBuffer<f32>,
        norm_weight: &DeviceBuffer<f32>,
        params: RmsNormParams,
        out: &mut DeviceBuffer<f32>,
        act: GatedActivation,
    ) -> Result<(), KernelError> {
        let op = MatvecOp {
            w: gate,
            up: Some((up, act)),
            x,
            norm: Some((norm_weight, params)),
            residual: Residual::None,
        };
        self.run(op, out)
    }

    /// Checks `op` against `out` and enqueues the kernel of its product.
    fn run(&self, op: MatvecOp<'_>, out: &mut DeviceBuffer<f32>) -> Result<(), KernelError> {
        const K: &str = "matvec_m0e4";
        let params = check_m0e4(&op.call(out.len()))?;
        let w = op.w;
        // Through images only when every matrix of the launch has them.
        let images = match (&self.kernels, op.up) {
            (M0e4Kernels::Gpu(_), up)
                if reads_through_images(&self.config, w.code_pixels())
                    && up.is_none_or(|(u, _)| {
                        reads_through_images(&self.config, u.code_pixels())
                    }) =>
            {
                match (w.images(&self.gpu), op.up.map(|(u, _)| u.images(&self.gpu))) {
                    (Some(wi), None) => Some((wi, None)),
                    (Some(wi), Some(Some(ui))) => Some((wi, Some(ui))),
                    _ => None,
                }
            }
            _ => None,
        };
        // The kernels' arguments: the weight (and the up weight), x (and the norm weight), the output, the
        // residual (single-matrix products), the parameters.
        let mut args = match images {
            Some((wi, _)) => wi.args().to_vec(),
            None => weight_args(w).to_vec(),
        };
        if let Some((u, _)) = op.up {
            match images {
                Some((_, Some(ui))) => args.extend(ui.args()),
                _ => args.extend(weight_args(u)),
            }
        }
        args.push(op.x.into());
        if let Some((nw, _)) = op.norm {
            args.push(nw.into());
        }
        args.push((&*out).into());
        if op.up.is_none() {
            args.push(op.residual.arg(K, out, w.shape.rows)?);
        }
        args.push(Arg::params(&params));
        let product = M0e4Product::of(op.up.is_some(), op.norm.is_some());
        match &self.kernels {
            M0e4Kernels::Cpu(k) => k.launch(&self.gpu, product, &args, w.shape.rows),
            M0e4Kernels::Mali(builds) => {
                let kernel = builds.get(product).ok_or_else(|| {
                    shape_error(K, format!("the Mali {product:?} kernel was not built"))
                })?;
                let wg = self.config.work_group;
                let items = w.shape.rows.div_ceil(self.config.rows_per_group);
                kernel.launch(&self.gpu, &args, &[items.div_ceil(wg) * wg], Some(&[wg]))
            }
            M0e4Kernels::Gpu(builds) => {
                let units = self.gpu.caps().compute_units as usize;
                let launch = choose_m0e4_build(&self.config, units, product, w.shape);
                let built = match images {
                    Some(_) => builds.get_image(launch.build),
                    None => builds.get(launch.build),
                };
                let kernel = built.ok_or_else(|| {
                    shape_error(K, format!("{:?} was chosen but not built", launch.build))
                })?;
                let wg = self.config.work_group;
                let global = [w.shape.rows.div_ceil(launch.rows_per_group) * wg];
                kernel.launch(&self.gpu, &args, &global, Some(&[wg]))
            }
        }
    }
}

/// Mat-vec on f16 weights (`y = W·x (+ r)`), for output heads kept in f16. `cols` must be a multiple of 8.
#[derive(Debug)]
pub struct MatvecF16 {
    gpu: Gpu,
    config: MatvecConfig,
    kernel: F16Kernel,
}

/// The kernel a [`MatvecF16`] launches.
#[derive(Debug)]
enum F16Kernel {
    /// `matvec_f16`, and its image-reading build for the Adreno image configuration.
    Gpu(LockedKernel, Option<LockedKernel>),
    Cpu(CpuMatvecF16),
}

impl MatvecF16 {
    /// Builds the kernel with the vendor's default geometry.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Self::with_config(gpu, MatvecConfig::for_gpu(gpu))
    }

    /// Builds the kernel with an explicit geometry.
    pub fn with_config(gpu: &Gpu, config: MatvecConfig) -> Result<Self, KernelError> {
        Ok(MatvecF16 {
            gpu: gpu.clone(),
            config,
            kernel: match config.cpu {
                Some(geometry) => F16Kernel::Cpu(CpuMatvecF16::new(gpu, geometry)?),
                None => {
                    let build = |extra: &[(&str, &str)]| {
                        builds::build(gpu, &builds::SOURCE, &config, extra, "matvec_f16")
                    };
                    let image = match config.vendor_kernel {
                        MatvecVendorKernel::AdrenoImage => Some(build(&[builds::IMAGE_DEFINE])?.0),
                        _ => None,
                    };
                    F16Kernel::Gpu(build(&[])?.0, image)
                }
            },
        })
    }

    /// Whether a launch on `w` reads it through an image (the Adreno image build, within the image limit, on a
    /// device that accepted the image).
    pub fn reads_through_images(&self, w: &DeviceF16Matrix) -> bool {
        matches!(self.kernel, F16Kernel::Gpu(_, Some(_)))
            && reads_through_images(&self.config, w.pixels())
            && w.image(&self.gpu).is_some()
    }

    /// Enqueues `y = W·x` (+ `residual`).
    pub fn enqueue(
        &self,
        w: &DeviceF16Matrix,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
        residual: Residual<'_>,
    ) -> Result<(), KernelError> {
        const K: &str = "matvec_f16";
        let residual_len = match residual {
            Residual::Add(r) => Some(r.len()),
            _ => None,
        };
        let params = check_f16(
            w.shape,
            w.data.len(),
            x.len(),
            y.len(),
            residual.mode(),
            residual_len,
        )?;
        let MatrixShape { rows, .. } = w.shape;
        let image = match &self.kernel {
            F16Kernel::Gpu(_, Some(k)) if reads_through_images(&self.config, w.pixels()) => {
                w.image(&self.gpu).map(|i| (k, i))
            }
            _ => None,
        };
        let args = [
            match image {
                Some((_, i)) => Arg::Mem(i.raw()),
                None => (&w.data).into(),
            },
            x.into(),
            (&*y).into(),
            residual.arg(K, y, rows)?,
            Arg::params(&params),
        ];
        match &self.kernel {
            F16Kernel::Cpu(k) => k.launch(&self.gpu, &args, rows),
            F16Kernel::Gpu(buffers, _) => {
                let k = image.map_or(buffers, |(k, _)| k);
                let wg = self.config.work_group;
                let groups = rows.div_ceil(self.config.rows_per_group);
                k.launch(&self.gpu, &args, &[groups * wg], Some(&[wg]))
            }
        }
    }
}
