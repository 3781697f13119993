//! Decode matrix-vector products (`matvec.cl`): `y = W·x (+ r)` on M0E4 weights with fused dequantisation,
//! the gate+up pair with its activation in one launch, and f16-weight heads.
//!
//! QKV in one launch: upload the concatenated `[q; k; v]` weight ([`DeviceM0e4::concat_rows`]) and run one
//! [`MatvecM0e4::enqueue`]; the rotary and K/V-append kernels read the parts of its output by offset.

use fp4::{GroupSize, M0e4Matrix, MatrixShape};
use half::f16;

use super::matvec_cpu::{CpuMatvecF16, CpuMatvecGeometry, CpuMatvecM0e4, M0e4Product};
use super::norm::RmsNormParams;
use super::{
    check_len, program_source, shape_error, to_u32, Arg, GatedActivation, KernelError,
    LockedKernel, Residual,
};
use crate::runtime::{DeviceBuffer, Gpu, VendorFamily};

const SOURCE: crate::runtime::ProgramSource = program_source!("matvec", "matvec.cl");

/// An M0E4 matrix on the device, in exactly the layout of [`fp4::M0e4Matrix`].
#[derive(Debug)]
pub struct DeviceM0e4 {
    /// Packed codes, `rows * cols / 2` bytes.
    pub codes: DeviceBuffer<u8>,
    /// Scales, `[rows][cols / G]`.
    pub scales: DeviceBuffer<f16>,
    /// Offsets, `[rows][cols / G]`.
    pub offsets: DeviceBuffer<f16>,
    /// Rows (output features) and columns (input features).
    pub shape: MatrixShape,
    /// Group size along the columns.
    pub group: GroupSize,
}

impl DeviceM0e4 {
    /// Uploads `matrix`.
    pub fn upload(gpu: &Gpu, matrix: &M0e4Matrix) -> Result<Self, KernelError> {
        Ok(DeviceM0e4 {
            codes: DeviceBuffer::from_slice(gpu, matrix.codes())?,
            scales: DeviceBuffer::from_slice(gpu, matrix.scales())?,
            offsets: DeviceBuffer::from_slice(gpu, matrix.offsets())?,
            shape: matrix.shape(),
            group: matrix.group(),
        })
    }

    /// Uploads several matrices of equal columns and group stacked along the rows (e.g. `[q; k; v]` so the QKV
    /// projection is one launch, or `[gate; up]`).
    pub fn concat_rows(gpu: &Gpu, parts: &[&M0e4Matrix]) -> Result<Self, KernelError> {
        let first = parts
            .first()
            .ok_or_else(|| shape_error("DeviceM0e4::concat_rows", "no matrices given"))?;
        let (cols, group) = (first.shape().cols, first.group());
        let mut rows = 0;
        let (mut codes, mut scales, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
        for (i, m) in parts.iter().enumerate() {
            if m.shape().cols != cols || m.group() != group {
                return Err(shape_error(
                    "DeviceM0e4::concat_rows",
                    format!(
                        "part {i} is {}x{} with group {}, but part 0 has {cols} columns and group {group}",
                        m.shape().rows,
                        m.shape().cols,
                        m.group()
                    ),
                ));
            }
            rows += m.shape().rows;
            codes.extend_from_slice(m.codes());
            scales.extend_from_slice(m.scales());
            offsets.extend_from_slice(m.offsets());
        }
        Ok(DeviceM0e4 {
            codes: DeviceBuffer::from_slice(gpu, &codes)?,
            scales: DeviceBuffer::from_slice(gpu, &scales)?,
            offsets: DeviceBuffer::from_slice(gpu, &offsets)?,
            shape: MatrixShape::new(rows, cols),
            group,
        })
    }

    /// Bytes a mat-vec reads from this matrix (codes, scales, offsets).
    pub fn bytes(&self) -> usize {
        self.codes.byte_len() + self.scales.byte_len() + self.offsets.byte_len()
    }

    /// `log2(G / 32)`: how many 32-code chunks share one scale, as the kernels take it.
    pub(crate) fn chunks_per_group_shift(&self) -> u32 {
        match self.group {
            GroupSize::G32 => 0,
            GroupSize::G64 => 1,
            GroupSize::G128 => 2,
        }
    }
}

/// An f16 matrix on the device, row-major `[rows][cols]` (e.g. an unquantised output head).
#[derive(Debug)]
pub struct DeviceF16Matrix {
    /// The weights.
    pub data: DeviceBuffer<f16>,
    /// Rows and columns.
    pub shape: MatrixShape,
}

impl DeviceF16Matrix {
    /// Uploads a row-major `[rows][cols]` f16 matrix.
    pub fn upload(gpu: &Gpu, data: &[f16], shape: MatrixShape) -> Result<Self, KernelError> {
        if data.len() != shape.len() || shape.is_empty() {
            return Err(shape_error(
                "DeviceF16Matrix::upload",
                format!(
                    "{} values for a {}x{} matrix",
                    data.len(),
                    shape.rows,
                    shape.cols
                ),
            ));
        }
        Ok(DeviceF16Matrix {
            data: DeviceBuffer::from_slice(gpu, data)?,
            shape,
        })
    }
}

/// Launch geometry of the mat-vec kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatvecConfig {
    /// Work-items per work-group (a power of two).
    pub work_group: usize,
    /// Rows per work-group; the activations of a chunk are loaded once for all of them.
    pub rows_per_group: usize,
    /// Rows per work-group for single-matrix launches of tall matrices, those that would need more than
    /// [`TALL_GROUPS_PER_UNIT`] work-groups per compute unit at `rows_per_group` (0: no separate geometry). Fewer,
    /// longer work-groups then fit the device in one wave instead of leaving a short second one.
    pub tall_rows_per_group: usize,
    /// Use half-precision products where the device has `cl_khr_fp16` (the M0E4 FP16 recipe).
    pub half_math: bool,
    /// On NVIDIA, reduce within warps by inline-PTX shuffles (its OpenCL has no sub-group extension); falls back
    /// to the local-memory tree if the driver refuses the inline assembly. Ignored on other vendors.
    pub warp_shuffle: bool,
    /// Dequantise on the FP32 pipe (one AND-OR and one FADD per code instead of a shift and an AND-OR).
    pub fp_dequant: bool,
    /// Stage the activations through local memory in tiles of this many 32-value chunks (0: read them from
    /// global memory in every work-item).
    pub x_local_chunks: usize,
    /// Local tile (in chunks) for single-matrix launches whose rows are longer than `x_local_chunks` (0: no
    /// separate build). A larger tile means fewer stage-barrier-compute rounds per work-group for a long row (the
    /// 11008-wide down projection: three rounds at 128, two at 256) at the price of local memory, which lowers
    /// occupancy, so shorter rows keep the small tile.
    pub long_x_local_chunks: usize,
    /// Unroll factor of the chunk loop (1: none), so several chunks' loads are in flight per work-item.
    pub unroll: usize,
    /// Unroll factor for plain (no norm, no gate) single-matrix launches that are neither tall nor long, such as
    /// the attention output projection (0: `unroll`; a third build of the plain kernel when it differs).
    pub short_unroll: usize,
    /// On NVIDIA, dequantise and multiply two codes at a time in packed f16 through inline PTX (the FP16
    /// recipe; products and 16-term sums in f16, tolerance 2e-3 of Σ|w·x| as for `half_math`). Needs the
    /// warp-shuffle build; ignored elsewhere.
    pub nv_half2: bool,
    /// Launch the CPU-device kernels (`matvec_cpu.cl`) with this geometry instead of the GPU kernels, whose
    /// other fields then do not apply. [`MatvecConfig::for_gpu`] sets it for a `CL_DEVICE_TYPE_CPU` device.
    pub cpu: Option<CpuMatvecGeometry>,
}

impl MatvecConfig {
    /// A starting point per vendor: wide groups for desktop GPUs, 64-lane half waves on Adreno, small on CPUs.
    pub fn for_gpu(gpu: &Gpu) -> Self {
        let caps = gpu.caps();
        let nvidia = caps.vendor_family == VendorFamily::Nvidia;
        let (work_group, rows_per_group, x_local_chunks) = match caps.vendor_family {
            // H100 sweep: 8 rows per group and activations staged in local memory were fastest. A layout with
            // warps owning rows (no work-group reduction, activations staged once per many rows) measured
            // 10-20 % slower on the H200 and was dropped (bench/RESULTS.md).
            // 16 rows for tall matrices (warm-cache bench): QKV 12288x4096 16.1 -> 13.1 us, 11008x4096 12.7 -> 12.3 us;
            // shorter ones (4096 rows) are faster at 8 (bench/RESULTS.md).
            VendorFamily::Nvidia => (128, 8, 128),
            VendorFamily::Adreno => (64, 4, 0),
            VendorFamily::Mali => (64, 4, 0),
            VendorFamily::Pocl => (64, 8, 64),
            _ => (128, 4, 0),
        };
        let work_group = super::pow2_at_most(work_group, caps.max_work_group_size);
        MatvecConfig {
            work_group,
            rows_per_group,
            tall_rows_per_group: if nvidia { 16.min(work_group) } else { 0 },
            half_math: caps.fp16,
            warp_shuffle: true,
            fp_dequant: false,
            x_local_chunks,
            // H100, cold weights: 4096x11008 19.1 -> 16.6 us pipelined with 256 (bench/RESULTS.md).
            long_x_local_chunks: if nvidia { 256 } else { 0 },
            unroll: if nvidia { 2 } else { 1 },
            // H100, cold: 4096x4096 9.65 -> 8.94 us queued without unrolling, while the 11008-row and 11008-wide
            // shapes and gate+up are slower so (bench/RESULTS.md, geometry sweep).
            short_unroll: if nvidia { 1 } else { 0 },
            // Packed-f16 dequantisation measured 20-25 % faster on the H200 (bench/RESULTS.md).
            nv_half2: nvidia,
            cpu: CpuMatvecGeometry::for_device(caps),
        }
    }

    fn defines(&self) -> Vec<(&'static str, String)> {
        let mut d = vec![
            ("MV_WG", self.work_group.to_string()),
            ("MV_ROWS", self.rows_per_group.to_string()),
        ];
        if self.half_math {
            d.push(("TLITE_MV_HALF_MATH", "1".to_string()));
        }
        if self.fp_dequant {
            d.push(("MV_FPDQ", "1".to_string()));
        }
        if self.unroll > 1 {
            d.push(("MV_UNROLL", self.unroll.to_string()));
        }
        if self.nv_half2 {
            d.push(("MV_NVH2", "1".to_string()));
        }
        if self.x_local_chunks > 0 {
            d.push(("MV_XLOCAL", self.x_local_chunks.to_string()));
        }
        d
    }
}

/// Above this many work-groups per compute unit a single-matrix launch uses `tall_rows_per_group`.
pub const TALL_GROUPS_PER_UNIT: usize = 10;

/// Builds a kernel of the mat-vec program with `config` and `extra` defines.
fn build(
    gpu: &Gpu,
    config: &MatvecConfig,
    extra: &[(&str, &str)],
    name: &'static str,
) -> Result<(LockedKernel, bool), KernelError> {
    if !config.work_group.is_power_of_two()
        || config.rows_per_group == 0
        || config.rows_per_group > config.work_group
    {
        return Err(shape_error(
            "MatvecConfig",
            format!(
                "work_group {} must be a power of two >= rows_per_group {}",
                config.work_group, config.rows_per_group
            ),
        ));
    }
    let owned = config.defines();
    let mut defines: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    defines.extend_from_slice(extra);
    let want_shfl = config.warp_shuffle && config.work_group.is_multiple_of(32);
    LockedKernel::build_with_warp_shuffle(gpu, &SOURCE, &defines, name, want_shfl)
}

/// Decode mat-vec on M0E4 weights: `y = W·x (+ r)` and `out = act(Wg·x) * (Wu·x)`.
#[derive(Debug)]
pub struct MatvecM0e4 {
    gpu: Gpu,
    config: MatvecConfig,
    warp_shuffle: bool,
    kernels: M0e4Kernels,
}

/// The kernels a [`MatvecM0e4`] launches: the GPU family of `matvec.cl` or the CPU one of `matvec_cpu.cl`.
#[derive(Debug)]
enum M0e4Kernels {
    Gpu(GpuM0e4Kernels),
    Cpu(CpuMatvecM0e4),
}

/// The builds of `matvec.cl` a GPU geometry needs.
#[derive(Debug)]
struct GpuM0e4Kernels {
    plain: LockedKernel,
    gate_up: LockedKernel,
    normed: LockedKernel,
    gate_up_normed: LockedKernel,
    /// The plain and normed kernels built with `tall_rows_per_group`, when that differs.
    tall: Option<(LockedKernel, LockedKernel)>,
    /// The plain and normed kernels built with `long_x_local_chunks`, when that is larger than the base tile.
    long: Option<(LockedKernel, LockedKernel)>,
    /// The plain kernel built with `short_unroll`, when that differs from `unroll`.
    short: Option<LockedKernel>,
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

impl MatvecM0e4 {
    /// Builds the kernels with the vendor's default geometry.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Self::with_config(gpu, MatvecConfig::for_gpu(gpu))
    }

    /// Builds the kernels with an explicit geometry (benchmarks tune it).
    pub fn with_config(gpu: &Gpu, config: MatvecConfig) -> Result<Self, KernelError> {
        Self::with_defines(gpu, config, &[])
    }

    /// As [`MatvecM0e4::with_config`], adding compiler defines (tests use `TLITE_COMPILE_CHECK` and vendor flags).
    pub fn with_defines(
        gpu: &Gpu,
        config: MatvecConfig,
        extra: &[(&str, &str)],
    ) -> Result<Self, KernelError> {
        if let Some(geometry) = config.cpu {
            return Ok(MatvecM0e4 {
                gpu: gpu.clone(),
                config,
                warp_shuffle: false,
                kernels: M0e4Kernels::Cpu(CpuMatvecM0e4::new(gpu, geometry, extra)?),
            });
        }
        let (plain, shfl) = build(gpu, &config, extra, "matvec_m0e4")?;
        let (gate_up, shfl_gu) = build(gpu, &config, extra, "matvec_m0e4_gate_up")?;
        let (normed, shfl_n) = build(gpu, &config, extra, "matvec_m0e4_normed")?;
        let (gate_up_normed, shfl_gun) = build(gpu, &config, extra, "matvec_m0e4_gate_up_normed")?;
        let mut warp_shuffle = shfl && shfl_gu && shfl_n && shfl_gun;
        // A second build of the single-matrix kernels with `variant` (None when it equals the base config).
        let mut build_pair = |variant: MatvecConfig| -> Result<_, KernelError> {
            if variant == config {
                return Ok(None);
            }
            let (plain, s1) = build(gpu, &variant, extra, "matvec_m0e4")?;
            let (normed, s2) = build(gpu, &variant, extra, "matvec_m0e4_normed")?;
            warp_shuffle &= s1 && s2;
            Ok(Some((plain, normed)))
        };
        let tall = match config.tall_rows_per_group {
            0 => None,
            rows_per_group => build_pair(MatvecConfig {
                rows_per_group,
                ..config
            })?,
        };
        let long = match config.long_x_local_chunks {
            n if n <= config.x_local_chunks || config.x_local_chunks == 0 => None,
            x_local_chunks => build_pair(MatvecConfig {
                x_local_chunks,
                ..config
            })?,
        };
        let short = match config.short_unroll {
            0 => None,
            unroll if unroll == config.unroll => None,
            unroll => {
                let (plain, s) = build(
                    gpu,
                    &MatvecConfig { unroll, ..config },
                    extra,
                    "matvec_m0e4",
                )?;
                warp_shuffle &= s;
                Some(plain)
            }
        };
        Ok(MatvecM0e4 {
            gpu: gpu.clone(),
            config,
            warp_shuffle,
            kernels: M0e4Kernels::Gpu(GpuM0e4Kernels {
                tall,
                long,
                short,
                plain,
                gate_up,
                normed,
                gate_up_normed,
            }),
        })
    }

    /// The geometry in use.
    pub fn config(&self) -> MatvecConfig {
        self.config
    }

    /// Whether the CPU-device kernels (`matvec_cpu.cl`) are the ones launched.
    pub fn uses_cpu_kernels(&self) -> bool {
        matches!(self.kernels, M0e4Kernels::Cpu(_))
    }

    /// Whether the NVIDIA warp-shuffle reduction is in use (it needs an NVIDIA driver that accepts inline PTX).
    pub fn uses_warp_shuffle(&self) -> bool {
        self.warp_shuffle
    }

    /// Whether the products are computed in half precision (NVIDIA's packed-f16 path, or `half_math` on a
    /// `cl_khr_fp16` device): results then agree with f32 to about 2e-3 of Σ|w·x| per row instead of 1e-5.
    pub fn uses_half_products(&self) -> bool {
        if self.uses_cpu_kernels() {
            return false;
        }
        let nvidia = self.gpu.caps().vendor_family == VendorFamily::Nvidia;
        (self.config.nv_half2 && self.warp_shuffle && nvidia)
            || (self.config.half_math && self.gpu.caps().fp16)
    }

    fn check(
        w: &DeviceM0e4,
        x: &DeviceBuffer<f32>,
        y_len: usize,
        y_name: &str,
    ) -> Result<(u32, u32), KernelError> {
        const K: &str = "matvec_m0e4";
        let MatrixShape { rows, cols } = w.shape;
        w.shape
            .check_groupable(w.group)
            .map_err(|e| shape_error(K, e.to_string()))?;
        if w.codes.len() < rows * cols / 2 || w.scales.len() < rows * (cols / w.group.len()) {
            return Err(shape_error(
                K,
                "weight buffers are shorter than the matrix shape",
            ));
        }
        if w.offsets.len() < w.scales.len().min(rows * (cols / w.group.len())) {
            return Err(shape_error(
                K,
                "offset buffer is shorter than the matrix shape",
            ));
        }
        check_len(K, "x", x, cols)?;
        if y_len < rows {
            return Err(shape_error(
                K,
                format!("{y_name} buffer has {y_len} elements but W has {rows} rows"),
            ));
        }
        Ok((to_u32(K, "rows", rows)?, to_u32(K, "cols / 32", cols / 32)?))
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

    /// Checks `op` against `out` and enqueues the kernel of its variant.
    fn run(&self, op: MatvecOp<'_>, out: &mut DeviceBuffer<f32>) -> Result<(), KernelError> {
        const K: &str = "matvec_m0e4";
        let w = op.w;
        if let Some((up, _)) = op.up {
            if w.shape != up.shape || w.group != up.group {
                return Err(shape_error(
                    "matvec_m0e4_gate_up",
                    format!(
                        "gate is {}x{} (group {}) but up is {}x{} (group {})",
                        w.shape.rows, w.shape.cols, w.group, up.shape.rows, up.shape.cols, up.group
                    ),
                ));
            }
        }
        let (rows, chunks) = Self::check(w, op.x, out.len(), "y")?;
        if let Some((up, _)) = op.up {
            Self::check(up, op.x, out.len(), "out")?;
        }
        if let Some((nw, _)) = op.norm {
            check_len(K, "norm weight", nw, w.shape.cols)?;
        }
        let res_arg = op.residual.arg(K, out, w.shape.rows)?;
        // The kernels' arguments: the weight (and the up weight), x (and the norm weight), the output, then
        // (residual, rows, chunks, cpg, res_mode) or (rows, chunks, cpg, act), then (eps, w_off) when normed.
        let mut args = weight_args(w).to_vec();
        if let Some((u, _)) = op.up {
            args.extend(weight_args(u));
        }
        args.push(op.x.into());
        if let Some((nw, _)) = op.norm {
            args.push(nw.into());
        }
        args.push((&*out).into());
        let cpg = w.chunks_per_group_shift();
        match op.up {
            None => args.extend::<[Arg; 5]>([
                res_arg,
                rows.into(),
                chunks.into(),
                cpg.into(),
                op.residual.mode().into(),
            ]),
            Some((_, act)) => {
                args.extend::<[Arg; 4]>([rows.into(), chunks.into(), cpg.into(), act.code().into()])
            }
        }
        if let Some((_, params)) = op.norm {
            args.extend::<[Arg; 2]>([params.eps.into(), params.weight_offset.into()]);
        }
        let product = match (op.up.is_some(), op.norm.is_some()) {
            (false, false) => M0e4Product::Plain,
            (false, true) => M0e4Product::Normed,
            (true, false) => M0e4Product::GateUp,
            (true, true) => M0e4Product::GateUpNormed,
        };
        match &self.kernels {
            M0e4Kernels::Cpu(k) => k.launch(&self.gpu, product, &args, w.shape.rows),
            M0e4Kernels::Gpu(k) => k.launch(&self.gpu, &self.config, product, w.shape, &args),
        }
    }
}

impl GpuM0e4Kernels {
    /// Enqueues `product` of a `shape` matrix with the build its shape calls for (long rows, tall matrix, short
    /// plain launch or the base one).
    fn launch(
        &self,
        gpu: &Gpu,
        config: &MatvecConfig,
        product: M0e4Product,
        shape: MatrixShape,
        args: &[Arg],
    ) -> Result<(), KernelError> {
        let wg = config.work_group;
        let units = gpu.caps().compute_units.max(1) as usize;
        let single = matches!(product, M0e4Product::Plain | M0e4Product::Normed);
        let is_long = shape.cols > 32 * config.x_local_chunks;
        let is_tall = shape.rows.div_ceil(config.rows_per_group) > TALL_GROUPS_PER_UNIT * units;
        let (variant, rows_per_group) = match (&self.long, &self.tall) {
            (Some(k), _) if single && is_long => (Some(k), config.rows_per_group),
            (_, Some(k)) if single && is_tall => (Some(k), config.tall_rows_per_group),
            _ => (None, config.rows_per_group),
        };
        let (plain, normed) = match (variant, &self.short) {
            (Some((p, n)), _) => (p, n),
            (None, Some(short)) if single => (short, &self.normed),
            (None, _) => (&self.plain, &self.normed),
        };
        let kernel = match product {
            M0e4Product::Plain => plain,
            M0e4Product::Normed => normed,
            M0e4Product::GateUp => &self.gate_up,
            M0e4Product::GateUpNormed => &self.gate_up_normed,
        };
        let global = [shape.rows.div_ceil(rows_per_group) * wg];
        kernel.launch(gpu, args, &global, Some(&[wg]))
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
    Gpu(LockedKernel),
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
                None => F16Kernel::Gpu(build(gpu, &config, &[], "matvec_f16")?.0),
            },
        })
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
        let MatrixShape { rows, cols } = w.shape;
        if !cols.is_multiple_of(8) {
            return Err(shape_error(
                K,
                format!("cols = {cols} is not a multiple of 8"),
            ));
        }
        check_len(K, "w", &w.data, rows * cols)?;
        check_len(K, "x", x, cols)?;
        check_len(K, "y", y, rows)?;
        let res_arg = residual.arg(K, y, rows)?;
        let args = [
            (&w.data).into(),
            x.into(),
            (&*y).into(),
            res_arg,
            to_u32(K, "rows", rows)?.into(),
            to_u32(K, "cols", cols)?.into(),
            residual.mode().into(),
        ];
        match &self.kernel {
            F16Kernel::Cpu(k) => k.launch(&self.gpu, &args, rows),
            F16Kernel::Gpu(k) => {
                let wg = self.config.work_group;
                let groups = rows.div_ceil(self.config.rows_per_group);
                k.launch(&self.gpu, &args, &[groups * wg], Some(&[wg]))
            }
        }
    }
}
