//! Which build of `matvec.cl` a launch runs (pure: a function of the geometry, the device's compute units, the
//! product and the matrix shape, unit-tested without a device).
//!
//! A geometry asks for up to nine builds: the four products at the base geometry, the plain and normed products
//! again for tall matrices (more rows per group) and for long rows (a larger activation tile), and the plain
//! product once more unrolled less, for short launches such as the attention output projection.

use fp4::MatrixShape;

use super::config::{MatvecConfig, MatvecDevice, TALL_GROUPS_PER_UNIT};
use crate::runtime::{DeviceKind, VendorFamily};

/// Which kernels a GPU mat-vec launches: the portable ones of `matvec.cl`, or a variant made for one vendor's
/// hardware. Chosen by [`MatvecConfig::vendor_choice`] from the device, or from the phone a device profile names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MatvecVendorKernel {
    /// `matvec.cl`, weights read from buffers.
    Portable,
    /// `vendor/mali.cl`: whole rows per work-item, no local memory, no barriers, loads of the device's preferred
    /// vector width (128 bits where it does not say).
    Mali,
    /// `matvec.cl` with the weights read through `image1d_buffer_t` (the texture path), and from buffers for a
    /// tensor larger than `CL_DEVICE_IMAGE_MAX_BUFFER_SIZE`.
    AdrenoImage,
}

/// The vendor kernel for `device` and why: the family is the profile's phone under a device profile, else the
/// device's own (a CPU device without a profile keeps the CPU kernels, which `MatvecConfig::cpu` selects).
pub(super) fn choose_vendor_kernel(device: &MatvecDevice) -> (MatvecVendorKernel, String) {
    let family = device.profile_family.unwrap_or(device.vendor_family);
    let whose = match device.profile_family {
        Some(_) => "the profile's phone is",
        None => "the device is",
    };
    if device.profile_family.is_none() && device.kind == DeviceKind::Cpu {
        return (
            MatvecVendorKernel::Portable,
            "a CPU device: the CPU kernels (cpu.cl)".to_string(),
        );
    }
    match family {
        VendorFamily::Mali => (
            MatvecVendorKernel::Mali,
            format!(
                "{whose} a Mali, whose local memory is ordinary memory behind the same caches: whole rows per \
                 work-item, no local memory or barriers, {} loads{}",
                device.vector_width,
                if device.half_vector_ok() {
                    ", half products where asked"
                } else {
                    ""
                }
            ),
        ),
        VendorFamily::Adreno if device.image_max_buffer_pixels > 0 => (
            MatvecVendorKernel::AdrenoImage,
            format!(
                "{whose} an Adreno with images: weights read through image1d_buffer_t (the texture path), \
                 from buffers for a tensor over {} pixels (CL_DEVICE_IMAGE_MAX_BUFFER_SIZE)",
                device.image_max_buffer_pixels
            ),
        ),
        VendorFamily::Adreno => (
            MatvecVendorKernel::Portable,
            format!("{whose} an Adreno without image support: the portable kernels, weights from buffers"),
        ),
        _ => (
            MatvecVendorKernel::Portable,
            "the portable kernels (matvec.cl)".to_string(),
        ),
    }
}

/// Whether a launch on a matrix of `code_pixels` 16-byte chunks reads it through images: the Adreno image build,
/// and a tensor within the device's image limit (image coordinates are also `int`).
pub(super) fn reads_through_images(config: &MatvecConfig, code_pixels: usize) -> bool {
    config.vendor_kernel == MatvecVendorKernel::AdrenoImage
        && code_pixels as u64 <= config.image_max_pixels
        && code_pixels <= i32::MAX as usize
}

/// Which M0E4 product a launch computes; each has its kernel in `matvec.cl` and in `cpu.cl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum M0e4Product {
    /// `y = W·x (+ r)`.
    Plain,
    /// `y = W·rmsnorm(x) (+ r)`.
    Normed,
    /// `out = act(Wg·x) * (Wu·x)`.
    GateUp,
    /// `out = act(Wg·n) * (Wu·n)`, `n = rmsnorm(x)`.
    GateUpNormed,
}

impl M0e4Product {
    /// All four.
    pub(crate) const ALL: [M0e4Product; 4] = [
        M0e4Product::Plain,
        M0e4Product::Normed,
        M0e4Product::GateUp,
        M0e4Product::GateUpNormed,
    ];

    /// The product with or without the up matrix and the fused norm.
    pub(crate) fn of(gate_up: bool, normed: bool) -> Self {
        match (gate_up, normed) {
            (false, false) => M0e4Product::Plain,
            (false, true) => M0e4Product::Normed,
            (true, false) => M0e4Product::GateUp,
            (true, true) => M0e4Product::GateUpNormed,
        }
    }

    /// Whether one matrix is read (not the gate+up pair).
    fn single(self) -> bool {
        matches!(self, M0e4Product::Plain | M0e4Product::Normed)
    }

    /// The kernel's name in `matvec.cl`.
    pub(super) fn gpu_kernel(self) -> &'static str {
        match self {
            M0e4Product::Plain => "matvec_m0e4",
            M0e4Product::Normed => "matvec_m0e4_normed",
            M0e4Product::GateUp => "matvec_m0e4_gate_up",
            M0e4Product::GateUpNormed => "matvec_m0e4_gate_up_normed",
        }
    }
}

/// A geometry the GPU kernels are built at beside the base one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum M0e4Variant {
    /// The configuration as given.
    Base,
    /// `tall_rows_per_group` rows per group.
    Tall,
    /// `long_x_local_chunks` activation tiles.
    Long,
    /// `short_unroll` unrolling.
    Short,
}

/// One build: a product at a variant geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct M0e4Build {
    pub product: M0e4Product,
    pub variant: M0e4Variant,
}

/// The geometry of `variant`, or `None` where `config` does not build it (its field is 0 or equals the base).
pub(super) fn variant_config(config: &MatvecConfig, variant: M0e4Variant) -> Option<MatvecConfig> {
    let changed = match variant {
        M0e4Variant::Base => return Some(*config),
        M0e4Variant::Tall if config.tall_rows_per_group > 0 => MatvecConfig {
            rows_per_group: config.tall_rows_per_group,
            ..*config
        },
        M0e4Variant::Long
            if config.x_local_chunks > 0 && config.long_x_local_chunks > config.x_local_chunks =>
        {
            MatvecConfig {
                x_local_chunks: config.long_x_local_chunks,
                ..*config
            }
        }
        M0e4Variant::Short if config.short_unroll > 0 => MatvecConfig {
            unroll: config.short_unroll,
            ..*config
        },
        _ => return None,
    };
    (changed != *config).then_some(changed)
}

/// The builds `config` needs, each with the geometry it is built at.
pub(super) fn m0e4_builds(config: &MatvecConfig) -> Vec<(M0e4Build, MatvecConfig)> {
    let products = |variant| -> &'static [M0e4Product] {
        match variant {
            M0e4Variant::Base => &M0e4Product::ALL,
            M0e4Variant::Tall | M0e4Variant::Long => &[M0e4Product::Plain, M0e4Product::Normed],
            M0e4Variant::Short => &[M0e4Product::Plain],
        }
    };
    let mut builds = Vec::new();
    for variant in [
        M0e4Variant::Base,
        M0e4Variant::Tall,
        M0e4Variant::Long,
        M0e4Variant::Short,
    ] {
        if let Some(geometry) = variant_config(config, variant) {
            for &product in products(variant) {
                builds.push((M0e4Build { product, variant }, geometry));
            }
        }
    }
    builds
}

/// The build a launch runs and the rows each of its work-groups owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct M0e4Launch {
    pub build: M0e4Build,
    pub rows_per_group: usize,
}

/// Chooses the build for `product` over a `shape` matrix on a device of `compute_units` units: long rows take the
/// larger tile, then tall matrices the taller groups (single-matrix products only), and a plain product that is
/// neither takes the short unrolling; everything else runs the base build.
pub(super) fn choose_m0e4_build(
    config: &MatvecConfig,
    compute_units: usize,
    product: M0e4Product,
    shape: MatrixShape,
) -> M0e4Launch {
    let has = |variant| variant_config(config, variant).is_some();
    let single = product.single();
    let is_long = shape.cols > 32 * config.x_local_chunks;
    let is_tall =
        shape.rows.div_ceil(config.rows_per_group) > TALL_GROUPS_PER_UNIT * compute_units.max(1);
    let variant = if single && is_long && has(M0e4Variant::Long) {
        M0e4Variant::Long
    } else if single && is_tall && has(M0e4Variant::Tall) {
        M0e4Variant::Tall
    } else if product == M0e4Product::Plain && has(M0e4Variant::Short) {
        M0e4Variant::Short
    } else {
        M0e4Variant::Base
    };
    let rows_per_group =
        variant_config(config, variant).map_or(config.rows_per_group, |c| c.rows_per_group);
    M0e4Launch {
        build: M0e4Build { product, variant },
        rows_per_group,
    }
}

/// Whether the products are computed in half precision: NVIDIA's packed-f16 path (it needs the warp-shuffle
/// build, whose inline PTX it shares), or `half_math` on a `cl_khr_fp16` device. Never on the CPU kernels.
pub(super) fn half_products(
    config: &MatvecConfig,
    vendor: VendorFamily,
    fp16: bool,
    warp_shuffle_in_use: bool,
) -> bool {
    if config.cpu.is_some() {
        return false;
    }
    (config.nv_half2 && warp_shuffle_in_use && vendor == VendorFamily::Nvidia)
        || (config.half_math && fp16)
}

#[cfg(test)]
mod tests {
    use super::super::config::MatvecDevice;
    use super::super::cpu::CpuMatvecGeometry;
    use super::*;
    use crate::runtime::DeviceKind;

    fn config(vendor_family: VendorFamily) -> MatvecConfig {
        MatvecConfig::for_device(&MatvecDevice {
            vendor_family,
            kind: DeviceKind::Gpu,
            max_work_group_size: 1024,
            fp16: false,
            profile_family: None,
            image_max_buffer_pixels: 0,
            preferred_vector_width_half: 0,
            local_mem_bytes: 48 << 10,
            vector_width: crate::kernels::vector_width::VectorWidth::DEFAULT,
        })
    }

    fn pick(
        c: &MatvecConfig,
        units: usize,
        product: M0e4Product,
        rows: usize,
        cols: usize,
    ) -> M0e4Launch {
        choose_m0e4_build(c, units, product, MatrixShape::new(rows, cols))
    }

    #[test]
    fn nvidia_builds_all_nine_and_plain_devices_four() {
        let nv = m0e4_builds(&config(VendorFamily::Nvidia));
        assert_eq!(nv.len(), 9);
        let count = |v| nv.iter().filter(|(b, _)| b.variant == v).count();
        assert_eq!(
            [
                count(M0e4Variant::Base),
                count(M0e4Variant::Tall),
                count(M0e4Variant::Long),
                count(M0e4Variant::Short)
            ],
            [4, 2, 2, 1]
        );
        for (build, geometry) in &nv {
            let c = config(VendorFamily::Nvidia);
            let want = match build.variant {
                M0e4Variant::Base => c,
                M0e4Variant::Tall => MatvecConfig {
                    rows_per_group: 16,
                    ..c
                },
                M0e4Variant::Long => MatvecConfig {
                    x_local_chunks: 256,
                    ..c
                },
                M0e4Variant::Short => MatvecConfig { unroll: 1, ..c },
            };
            assert_eq!(*geometry, want, "{build:?}");
        }
        for vendor in [
            VendorFamily::Adreno,
            VendorFamily::Mali,
            VendorFamily::Pocl,
            VendorFamily::Other,
        ] {
            let builds = m0e4_builds(&config(vendor));
            assert_eq!(builds.len(), 4, "{vendor:?}");
            assert!(builds.iter().all(|(b, _)| b.variant == M0e4Variant::Base));
        }
    }

    #[test]
    fn variants_equal_to_the_base_are_not_built() {
        let c = MatvecConfig {
            tall_rows_per_group: 8,
            long_x_local_chunks: 128,
            short_unroll: 2,
            ..config(VendorFamily::Nvidia)
        };
        assert_eq!(m0e4_builds(&c).len(), 4);
        // A long tile is only a variant when activations are staged and the tile grows.
        let unstaged = MatvecConfig {
            x_local_chunks: 0,
            ..config(VendorFamily::Nvidia)
        };
        assert_eq!(variant_config(&unstaged, M0e4Variant::Long), None);
    }

    #[test]
    fn nvidia_launches_pick_long_then_tall_then_short() {
        let c = config(VendorFamily::Nvidia);
        let units = 132;
        // 11008-wide down projection: rows longer than 128 chunks take the long tile.
        let down = pick(&c, units, M0e4Product::Plain, 4096, 11008);
        assert_eq!(down.build.variant, M0e4Variant::Long);
        assert_eq!(down.rows_per_group, 8);
        // A long normed row too, but never the gate+up pair.
        assert_eq!(
            pick(&c, units, M0e4Product::Normed, 4096, 11008)
                .build
                .variant,
            M0e4Variant::Long
        );
        assert_eq!(
            pick(&c, units, M0e4Product::GateUp, 4096, 11008)
                .build
                .variant,
            M0e4Variant::Base
        );
        // QKV 12288 x 4096: 1536 groups of 8 rows > 10 per unit on 132 units -> tall, 16 rows per group.
        let qkv = pick(&c, units, M0e4Product::Normed, 12288, 4096);
        assert_eq!(
            (qkv.build.variant, qkv.rows_per_group),
            (M0e4Variant::Tall, 16)
        );
        // 4096 x 4096: 512 groups, not tall; a plain one is short, a normed one base.
        let o = pick(&c, units, M0e4Product::Plain, 4096, 4096);
        assert_eq!((o.build.variant, o.rows_per_group), (M0e4Variant::Short, 8));
        assert_eq!(
            pick(&c, units, M0e4Product::Normed, 4096, 4096)
                .build
                .variant,
            M0e4Variant::Base
        );
        // Gate+up is always the base build.
        let gu = pick(&c, units, M0e4Product::GateUpNormed, 22016, 4096);
        assert_eq!(
            (gu.build.variant, gu.rows_per_group),
            (M0e4Variant::Base, 8)
        );
        // Fewer units make the same matrix tall.
        assert_eq!(
            pick(&c, 8, M0e4Product::Plain, 4096, 4096).build.variant,
            M0e4Variant::Tall
        );
    }

    #[test]
    fn every_choice_is_a_built_kernel() {
        let mut configs: Vec<MatvecConfig> = [
            VendorFamily::Nvidia,
            VendorFamily::Adreno,
            VendorFamily::Pocl,
            VendorFamily::Other,
        ]
        .map(config)
        .to_vec();
        configs.push(MatvecConfig {
            short_unroll: 0,
            ..config(VendorFamily::Nvidia)
        });
        configs.push(MatvecConfig {
            long_x_local_chunks: 0,
            ..config(VendorFamily::Nvidia)
        });
        for c in &configs {
            let builds = m0e4_builds(c);
            for units in [1, 8, 132] {
                for product in M0e4Product::ALL {
                    for (rows, cols) in [
                        (7, 32),
                        (4096, 4096),
                        (12288, 4096),
                        (4096, 11008),
                        (32000, 2048),
                    ] {
                        let l = pick(c, units, product, rows, cols);
                        let built = builds.iter().find(|(b, _)| *b == l.build);
                        let (_, geometry) =
                            built.unwrap_or_else(|| panic!("{l:?} not built for {c:?}"));
                        assert_eq!(geometry.rows_per_group, l.rows_per_group);
                    }
                }
            }
        }
    }

    fn phone(family: VendorFamily, kind: DeviceKind, profile: bool) -> MatvecDevice {
        MatvecDevice {
            vendor_family: if profile { VendorFamily::Pocl } else { family },
            kind,
            max_work_group_size: 256,
            fp16: false,
            profile_family: profile.then_some(family),
            image_max_buffer_pixels: 0,
            preferred_vector_width_half: 0,
            local_mem_bytes: 32 << 10,
            vector_width: crate::kernels::vector_width::VectorWidth::DEFAULT,
        }
    }

    #[test]
    fn mali_devices_and_mali_profiles_get_the_mali_kernels() {
        for device in [
            phone(VendorFamily::Mali, DeviceKind::Gpu, false),
            // A Mali profile on PoCL's CPU device runs the phone's kernels, not cpu.cl.
            phone(VendorFamily::Mali, DeviceKind::Cpu, true),
        ] {
            let (kernel, why) = choose_vendor_kernel(&device);
            assert_eq!(kernel, MatvecVendorKernel::Mali, "{device:?}");
            assert!(why.contains("no local memory"), "{why}");
            let c = MatvecConfig::for_device(&device);
            assert_eq!(c.vendor_kernel, MatvecVendorKernel::Mali);
            assert_eq!(c.cpu, None);
            assert_eq!(
                (c.work_group, c.rows_per_group, c.x_local_chunks),
                (64, 2, 0)
            );
            assert!(!c.half_math, "no cl_khr_fp16");
            assert!(c.validate().is_ok());
        }
        // Half products follow cl_khr_fp16 unless the device prefers scalar halves.
        let fp16 = MatvecDevice {
            fp16: true,
            ..phone(VendorFamily::Mali, DeviceKind::Gpu, false)
        };
        assert!(MatvecConfig::for_device(&fp16).half_math);
        let scalar = MatvecDevice {
            preferred_vector_width_half: 1,
            ..fp16
        };
        assert!(!MatvecConfig::for_device(&scalar).half_math);
        assert!(!choose_vendor_kernel(&scalar).1.contains("half products"));
    }

    #[test]
    fn adreno_reads_through_images_only_where_it_has_them() {
        let with_images = MatvecDevice {
            image_max_buffer_pixels: 65536,
            ..phone(VendorFamily::Adreno, DeviceKind::Gpu, false)
        };
        let (kernel, why) = choose_vendor_kernel(&with_images);
        assert_eq!(kernel, MatvecVendorKernel::AdrenoImage);
        assert!(why.contains("65536 pixels"), "{why}");
        let c = MatvecConfig::for_device(&with_images);
        assert_eq!((c.vendor_kernel, c.image_max_pixels), (kernel, 65536));
        assert_eq!((c.work_group, c.rows_per_group, c.cpu), (64, 4, None));
        // Within the limit through images, above it from buffers.
        assert!(reads_through_images(&c, 65536));
        assert!(!reads_through_images(&c, 65537));
        let without = phone(VendorFamily::Adreno, DeviceKind::Gpu, false);
        let (kernel, why) = choose_vendor_kernel(&without);
        assert_eq!(kernel, MatvecVendorKernel::Portable);
        assert!(why.contains("without image support"), "{why}");
        assert!(!reads_through_images(
            &MatvecConfig::for_device(&without),
            1
        ));
        // Under an Adreno profile on a CPU device with images, the image build runs there.
        let profiled = MatvecDevice {
            image_max_buffer_pixels: 1 << 20,
            ..phone(VendorFamily::Adreno, DeviceKind::Cpu, true)
        };
        assert_eq!(
            MatvecConfig::for_device(&profiled).vendor_kernel,
            MatvecVendorKernel::AdrenoImage
        );
    }

    #[test]
    fn other_devices_keep_the_portable_or_cpu_kernels() {
        for family in [
            VendorFamily::Nvidia,
            VendorFamily::Intel,
            VendorFamily::Pocl,
            VendorFamily::Other,
        ] {
            let d = MatvecDevice {
                image_max_buffer_pixels: 1 << 20,
                ..phone(family, DeviceKind::Gpu, false)
            };
            assert_eq!(choose_vendor_kernel(&d).0, MatvecVendorKernel::Portable);
        }
        // A Mali-named CPU device without a profile still gets cpu.cl.
        let cpu = phone(VendorFamily::Mali, DeviceKind::Cpu, false);
        let (kernel, why) = choose_vendor_kernel(&cpu);
        assert_eq!(kernel, MatvecVendorKernel::Portable);
        assert!(why.contains("cpu.cl"), "{why}");
        assert!(MatvecConfig::for_device(&cpu).cpu.is_some());
    }

    #[test]
    fn half_products_need_fp16_or_nvidia_shuffles() {
        let nv = config(VendorFamily::Nvidia);
        assert!(half_products(&nv, VendorFamily::Nvidia, false, true));
        assert!(!half_products(&nv, VendorFamily::Nvidia, false, false));
        assert!(!half_products(&nv, VendorFamily::Pocl, false, true));
        let adreno = MatvecConfig {
            half_math: true,
            ..config(VendorFamily::Adreno)
        };
        assert!(half_products(&adreno, VendorFamily::Adreno, true, false));
        assert!(!half_products(&adreno, VendorFamily::Adreno, false, false));
        let cpu = MatvecConfig {
            cpu: Some(CpuMatvecGeometry::DEFAULT),
            ..adreno
        };
        assert!(!half_products(&cpu, VendorFamily::Adreno, true, true));
    }
}
