//! Compiling `matvec.cl`: one build per (product, variant geometry) that `choose.rs` lists for a configuration.

use super::super::{program_source, KernelError, LockedKernel};
use super::choose::{m0e4_builds, M0e4Build, M0e4Product, MatvecVendorKernel};
use super::config::MatvecConfig;
use crate::runtime::{Gpu, ProgramSource};

/// The program the engine runs.
pub(super) const SOURCE: ProgramSource =
    program_source!("matvec", "matvec/params.cl", "matvec/matvec.cl");
/// The same with `diag.cl`'s diagnostics available (benchmarks only).
pub(super) const DIAG_SOURCE: ProgramSource = program_source!(
    "matvec_diag",
    "matvec/params.cl",
    "diag.cl",
    "matvec/matvec.cl"
);

/// The Mali build (`vendor/mali.cl`), with the same kernel names and arguments as `matvec.cl`.
pub(super) const MALI_SOURCE: ProgramSource =
    program_source!("matvec_mali", "matvec/params.cl", "vendor/mali.cl");

/// The define that makes `matvec.cl` read its weights through images (vendor/adreno.cl).
pub(super) const IMAGE_DEFINE: (&str, &str) = ("TL_WEIGHTS_IMAGE", "1");

/// Builds kernel `name` of `source` at `config` with `extra` defines; returns it and whether it is the NVIDIA
/// inline-PTX build.
pub(super) fn build(
    gpu: &Gpu,
    source: &ProgramSource,
    config: &MatvecConfig,
    extra: &[(&str, &str)],
    name: &'static str,
) -> Result<(LockedKernel, bool), KernelError> {
    config.validate()?;
    let owned = config.defines();
    let mut defines: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    defines.extend_from_slice(extra);
    LockedKernel::build_with_nv_ptx(gpu, source, &defines, name, config.wants_warp_shuffle())
}

/// The M0E4 builds of one GPU geometry.
#[derive(Debug)]
pub(super) struct GpuM0e4Builds {
    kernels: Vec<(M0e4Build, LockedKernel)>,
    /// The same builds reading their weights through images (the Adreno image build; empty otherwise).
    image_kernels: Vec<(M0e4Build, LockedKernel)>,
    /// Whether every build took NVIDIA's warp shuffles.
    warp_shuffle: bool,
}

impl GpuM0e4Builds {
    pub(super) fn new(
        gpu: &Gpu,
        source: &ProgramSource,
        config: &MatvecConfig,
        extra: &[(&str, &str)],
    ) -> Result<Self, KernelError> {
        let mut kernels = Vec::new();
        let mut image_kernels = Vec::new();
        let mut warp_shuffle = true;
        let mut with_image = extra.to_vec();
        with_image.push(IMAGE_DEFINE);
        for (which, geometry) in m0e4_builds(config) {
            let (kernel, shuffled) =
                build(gpu, source, &geometry, extra, which.product.gpu_kernel())?;
            warp_shuffle &= shuffled;
            kernels.push((which, kernel));
            if config.vendor_kernel == MatvecVendorKernel::AdrenoImage {
                let name = which.product.gpu_kernel();
                image_kernels.push((which, build(gpu, source, &geometry, &with_image, name)?.0));
            }
        }
        Ok(GpuM0e4Builds {
            kernels,
            image_kernels,
            warp_shuffle,
        })
    }

    /// The image-reading kernel of `which`, `None` if there is none.
    pub(super) fn get_image(&self, which: M0e4Build) -> Option<&LockedKernel> {
        self.image_kernels
            .iter()
            .find(|(b, _)| *b == which)
            .map(|(_, k)| k)
    }

    /// The kernel of `which`, `None` if the geometry does not build it.
    pub(super) fn get(&self, which: M0e4Build) -> Option<&LockedKernel> {
        self.kernels
            .iter()
            .find(|(b, _)| *b == which)
            .map(|(_, k)| k)
    }

    /// Whether the NVIDIA warp-shuffle reduction is in use in every build.
    pub(super) fn warp_shuffle(&self) -> bool {
        self.warp_shuffle
    }
}

/// The four kernels of the Mali build (`vendor/mali.cl`): each work-item owns `config.rows_per_group` rows.
#[derive(Debug)]
pub(super) struct MaliM0e4Builds {
    kernels: Vec<(M0e4Product, LockedKernel)>,
}

impl MaliM0e4Builds {
    pub(super) fn new(
        gpu: &Gpu,
        config: &MatvecConfig,
        extra: &[(&str, &str)],
    ) -> Result<Self, KernelError> {
        let kernels = M0e4Product::ALL
            .into_iter()
            .map(|p| {
                let built = build(gpu, &MALI_SOURCE, config, extra, p.gpu_kernel())?;
                Ok((p, built.0))
            })
            .collect::<Result<_, KernelError>>()?;
        Ok(MaliM0e4Builds { kernels })
    }

    /// The kernel of `product`.
    pub(super) fn get(&self, product: M0e4Product) -> Option<&LockedKernel> {
        self.kernels
            .iter()
            .find(|(p, _)| *p == product)
            .map(|(_, k)| k)
    }
}
