//! Prefill matrix-matrix products (`matmul.cl`): `Y[seq][N] = X[seq][K] · Wᵀ (+ R)` with W in M0E4 or f16.

use fp4::MatrixShape;

use super::matvec::{DeviceF16Matrix, DeviceM0e4};
use super::{
    check_len, program_source, shape_error, to_u32, Arg, KernelError, LockedKernel, Residual,
};
use crate::runtime::{DeviceBuffer, Gpu, VendorFamily};

const SOURCE: crate::runtime::ProgramSource = program_source!("matmul", "matmul.cl");

/// Tile geometry of the prefill kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulConfig {
    /// Tokens per work-group tile.
    pub tile_m: usize,
    /// Output features per work-group tile.
    pub tile_n: usize,
    /// Tokens per work-item (register block).
    pub work_m: usize,
    /// Output features per work-item (register block).
    pub work_n: usize,
    /// Each work-item owns a contiguous block and reads local memory as float4 (needs work_m, work_n multiples of
    /// 4); otherwise blocks are strided across work-items (scalar, conflict-free reads, coalesced stores).
    pub vec: bool,
}

impl MatmulConfig {
    /// A starting point per vendor: 64×64 tiles of 4×4 (256 work-items); on NVIDIA 128×64 tiles of contiguous 8×4
    /// float4 blocks (the fastest of the H100 sweep, ≈ 30 TFLOP/s at 4096×4096×512); CPUs get 32×32 tiles so tests
    /// with few tokens waste less.
    pub fn for_gpu(gpu: &Gpu) -> Self {
        let caps = gpu.caps();
        let c = match caps.vendor_family {
            VendorFamily::Nvidia => MatmulConfig {
                tile_m: 128,
                tile_n: 64,
                work_m: 8,
                work_n: 4,
                vec: true,
            },
            VendorFamily::Pocl => MatmulConfig {
                tile_m: 32,
                tile_n: 32,
                work_m: 4,
                work_n: 4,
                vec: false,
            },
            _ => MatmulConfig {
                tile_m: 64,
                tile_n: 64,
                work_m: 4,
                work_n: 4,
                vec: false,
            },
        };
        if c.threads() <= caps.max_work_group_size {
            c
        } else {
            MatmulConfig {
                tile_m: 32,
                tile_n: 32,
                work_m: 4,
                work_n: 4,
                vec: false,
            }
        }
    }

    /// Work-items per work-group.
    pub fn threads(&self) -> usize {
        (self.tile_m / self.work_m.max(1)) * (self.tile_n / self.work_n.max(1))
    }

    fn validate(&self) -> Result<(), KernelError> {
        let ok = self.work_m > 0
            && self.work_n > 0
            && self.tile_m.is_multiple_of(self.work_m)
            && self.tile_n.is_multiple_of(self.work_n)
            && self.tile_m.is_multiple_of(8)
            && self.tile_n > 0
            && (!self.vec || (self.work_m.is_multiple_of(4) && self.work_n.is_multiple_of(4)));
        if ok {
            Ok(())
        } else {
            Err(shape_error(
                "MatmulConfig",
                format!("{self:?} is not a valid tiling"),
            ))
        }
    }

    fn defines(&self) -> Vec<(&'static str, String)> {
        let mut d = vec![
            ("MM_TM", self.tile_m.to_string()),
            ("MM_TN", self.tile_n.to_string()),
            ("MM_WM", self.work_m.to_string()),
            ("MM_WN", self.work_n.to_string()),
        ];
        if self.vec {
            d.push(("MM_VEC", "1".to_string()));
        }
        d
    }

    fn geometry(&self, seq: usize, n: usize) -> ([usize; 2], [usize; 2]) {
        let local = [self.tile_n / self.work_n, self.tile_m / self.work_m];
        let global = [
            n.div_ceil(self.tile_n) * local[0],
            seq.div_ceil(self.tile_m) * local[1],
        ];
        (global, local)
    }
}

fn build(
    gpu: &Gpu,
    config: &MatmulConfig,
    f16_weights: bool,
    name: &'static str,
) -> Result<LockedKernel, KernelError> {
    config.validate()?;
    let owned = config.defines();
    let mut defines: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if f16_weights {
        defines.push(("MM_W_F16", "1"));
    }
    LockedKernel::build(gpu, &SOURCE, &defines, name)
}

/// Checks the operands of a mat-mat and returns the kernel's `residual` argument.
fn check_common(
    kernel: &'static str,
    shape: MatrixShape,
    x: &DeviceBuffer<f32>,
    seq: usize,
    y: &DeviceBuffer<f32>,
    residual: &Residual<'_>,
) -> Result<Arg<'static>, KernelError> {
    if seq == 0 {
        return Err(shape_error(kernel, "seq is 0"));
    }
    if !shape.cols.is_multiple_of(32) {
        return Err(shape_error(
            kernel,
            format!("K = {} is not a multiple of 32", shape.cols),
        ));
    }
    check_len(kernel, "x", x, seq * shape.cols)?;
    check_len(kernel, "y", y, seq * shape.rows)?;
    residual.arg(kernel, y, seq * shape.rows)
}

/// Prefill mat-mat on M0E4 weights.
#[derive(Debug)]
pub struct MatmulM0e4 {
    gpu: Gpu,
    config: MatmulConfig,
    kernel: LockedKernel,
}

impl MatmulM0e4 {
    /// Builds the kernel with the vendor's default tiling.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Self::with_config(gpu, MatmulConfig::for_gpu(gpu))
    }

    /// Builds the kernel with an explicit tiling (benchmarks tune it).
    pub fn with_config(gpu: &Gpu, config: MatmulConfig) -> Result<Self, KernelError> {
        Ok(MatmulM0e4 {
            gpu: gpu.clone(),
            config,
            kernel: build(gpu, &config, false, "matmul_m0e4")?,
        })
    }

    /// The tiling in use.
    pub fn config(&self) -> MatmulConfig {
        self.config
    }

    /// Enqueues `Y = X·Wᵀ (+ R)`: `x` is `[seq][cols]`, `y` (and a separate residual) `[seq][rows]`.
    pub fn enqueue(
        &self,
        w: &DeviceM0e4,
        x: &DeviceBuffer<f32>,
        seq: usize,
        y: &mut DeviceBuffer<f32>,
        residual: Residual<'_>,
    ) -> Result<(), KernelError> {
        const K: &str = "matmul_m0e4";
        let res_arg = check_common(K, w.shape, x, seq, y, &residual)?;
        let args = [
            (&w.codes).into(),
            (&w.scales).into(),
            (&w.offsets).into(),
            x.into(),
            (&*y).into(),
            res_arg,
            to_u32(K, "seq", seq)?.into(),
            to_u32(K, "rows", w.shape.rows)?.into(),
            to_u32(K, "cols", w.shape.cols)?.into(),
            w.chunks_per_group_shift().into(),
            residual.mode().into(),
        ];
        let (global, local) = self.config.geometry(seq, w.shape.rows);
        self.kernel.launch(&self.gpu, &args, &global, Some(&local))
    }
}

/// Prefill mat-mat on f16 weights (K a multiple of 32).
#[derive(Debug)]
pub struct MatmulF16 {
    gpu: Gpu,
    config: MatmulConfig,
    kernel: LockedKernel,
}

impl MatmulF16 {
    /// Builds the kernel with the vendor's default tiling.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        let config = MatmulConfig::for_gpu(gpu);
        Ok(MatmulF16 {
            gpu: gpu.clone(),
            config,
            kernel: build(gpu, &config, true, "matmul_f16")?,
        })
    }

    /// Enqueues `Y = X·Wᵀ (+ R)`.
    pub fn enqueue(
        &self,
        w: &DeviceF16Matrix,
        x: &DeviceBuffer<f32>,
        seq: usize,
        y: &mut DeviceBuffer<f32>,
        residual: Residual<'_>,
    ) -> Result<(), KernelError> {
        const K: &str = "matmul_f16";
        let res_arg = check_common(K, w.shape, x, seq, y, &residual)?;
        check_len(K, "w", &w.data, w.shape.len())?;
        let args = [
            (&w.data).into(),
            x.into(),
            (&*y).into(),
            res_arg,
            to_u32(K, "seq", seq)?.into(),
            to_u32(K, "rows", w.shape.rows)?.into(),
            to_u32(K, "cols", w.shape.cols)?.into(),
            residual.mode().into(),
        ];
        let (global, local) = self.config.geometry(seq, w.shape.rows);
        self.kernel.launch(&self.gpu, &args, &global, Some(&local))
    }
}
