//! Decode mat-vec kernels for CPU devices (`cpu.cl`): the M0E4 and f16 products of `matvec.cl`, with the same
//! arguments and results, shaped for a CPU (one work-item per block of rows walking all of K with 16-wide vectors;
//! no local memory, no barriers).
//!
//! [`super::MatvecM0e4`] and [`super::MatvecF16`] launch these instead of their GPU kernels when
//! [`super::MatvecConfig::cpu`] is set, which [`super::MatvecConfig::for_gpu`] does for a device of type
//! `CL_DEVICE_TYPE_CPU`; callers need not know which kernels run.

use super::super::{program_source, shape_error, Arg, KernelError, LockedKernel};
use super::choose::M0e4Product;
use crate::runtime::{Capabilities, DeviceKind, Gpu};

const SOURCE: crate::runtime::ProgramSource =
    program_source!("matvec_cpu", "matvec/params.cl", "matvec/cpu.cl");

/// Launch geometry of the CPU-device mat-vec kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMatvecGeometry {
    /// Rows each work-item computes; each chunk of activations is loaded once for all of them.
    pub rows_per_item: usize,
    /// Work-items per work-group (the driver hands whole groups to its threads).
    pub work_group: usize,
}

impl CpuMatvecGeometry {
    /// The geometry `for_device` gives a CPU: four rows per work-item keep the accumulators in vector registers
    /// (AVX-512 or NEON) while sharing each chunk of x; one work-item per group gives the driver's threads many
    /// small groups to balance.
    pub const DEFAULT: CpuMatvecGeometry = CpuMatvecGeometry {
        rows_per_item: 4,
        work_group: 1,
    };

    /// The CPU geometry for a device of type CPU, `None` for any other (its GPU kernels suit it).
    pub fn for_device(caps: &Capabilities) -> Option<Self> {
        Self::for_kind(caps.kind)
    }

    /// As [`CpuMatvecGeometry::for_device`], from the device type alone.
    pub(super) fn for_kind(kind: DeviceKind) -> Option<Self> {
        (kind == DeviceKind::Cpu).then_some(Self::DEFAULT)
    }

    fn check(&self, caps: &Capabilities) -> Result<(), KernelError> {
        let limit = caps.max_work_group_size.max(1);
        if !(1..=64).contains(&self.rows_per_item)
            || self.work_group == 0
            || self.work_group > limit
        {
            return Err(shape_error(
                "CpuMatvecGeometry",
                format!(
                    "rows_per_item {} must be 1..=64 and work_group {} 1..={limit}",
                    self.rows_per_item, self.work_group
                ),
            ));
        }
        Ok(())
    }

    fn defines(&self) -> [(&'static str, String); 2] {
        [
            ("MVC_ROWS", self.rows_per_item.to_string()),
            ("MVC_WG", self.work_group.to_string()),
        ]
    }

    /// The NDRange of a product with `rows` rows: one work-item per `rows_per_item` rows, in whole groups.
    fn global(&self, rows: usize) -> [usize; 1] {
        [rows.div_ceil(self.rows_per_item)]
    }
}

/// Builds kernel `name` of the CPU mat-vec program with `geometry` and `extra` defines.
fn build(
    gpu: &Gpu,
    geometry: &CpuMatvecGeometry,
    extra: &[(&str, &str)],
    name: &'static str,
) -> Result<LockedKernel, KernelError> {
    geometry.check(gpu.caps())?;
    let owned = geometry.defines();
    let mut defines: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    defines.extend_from_slice(extra);
    LockedKernel::build(gpu, &SOURCE, &defines, name)
}

/// The four M0E4 kernels of the CPU program.
#[derive(Debug)]
pub(crate) struct CpuMatvecM0e4 {
    geometry: CpuMatvecGeometry,
    plain: LockedKernel,
    normed: LockedKernel,
    gate_up: LockedKernel,
    gate_up_normed: LockedKernel,
}

impl CpuMatvecM0e4 {
    /// Builds the kernels (one program) with `geometry` and `extra` defines.
    pub(crate) fn new(
        gpu: &Gpu,
        geometry: CpuMatvecGeometry,
        extra: &[(&str, &str)],
    ) -> Result<Self, KernelError> {
        Ok(CpuMatvecM0e4 {
            geometry,
            plain: build(gpu, &geometry, extra, "matvec_m0e4_cpu")?,
            normed: build(gpu, &geometry, extra, "matvec_m0e4_normed_cpu")?,
            gate_up: build(gpu, &geometry, extra, "matvec_m0e4_gate_up_cpu")?,
            gate_up_normed: build(gpu, &geometry, extra, "matvec_m0e4_gate_up_normed_cpu")?,
        })
    }

    /// Enqueues `product` over `rows` rows with `args` (already checked against the shapes by the caller).
    pub(crate) fn launch(
        &self,
        gpu: &Gpu,
        product: M0e4Product,
        args: &[Arg<'_>],
        rows: usize,
    ) -> Result<(), KernelError> {
        let kernel = match product {
            M0e4Product::Plain => &self.plain,
            M0e4Product::Normed => &self.normed,
            M0e4Product::GateUp => &self.gate_up,
            M0e4Product::GateUpNormed => &self.gate_up_normed,
        };
        let wg = self.geometry.work_group;
        kernel.launch(gpu, args, &self.geometry.global(rows), Some(&[wg]))
    }
}

/// The f16-weight kernel of the CPU program.
#[derive(Debug)]
pub(crate) struct CpuMatvecF16 {
    geometry: CpuMatvecGeometry,
    kernel: LockedKernel,
}

impl CpuMatvecF16 {
    /// Builds the kernel with `geometry`.
    pub(crate) fn new(gpu: &Gpu, geometry: CpuMatvecGeometry) -> Result<Self, KernelError> {
        Ok(CpuMatvecF16 {
            geometry,
            kernel: build(gpu, &geometry, &[], "matvec_f16_cpu")?,
        })
    }

    /// Enqueues `y = W·x (+ r)` over `rows` rows with the arguments of `matvec_f16` (checked by the caller).
    pub(crate) fn launch(
        &self,
        gpu: &Gpu,
        args: &[Arg<'_>],
        rows: usize,
    ) -> Result<(), KernelError> {
        let wg = self.geometry.work_group;
        self.kernel
            .launch(gpu, args, &self.geometry.global(rows), Some(&[wg]))
    }
}
