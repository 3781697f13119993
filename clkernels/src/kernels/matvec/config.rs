//! Launch geometry of the mat-vec kernels, and the starting point per vendor (pure: chosen from plain device
//! figures, unit-tested without a device).

use super::super::{pow2_at_most, shape_error, KernelError};
use super::choose::{choose_vendor_kernel, MatvecVendorKernel};
use super::cpu::CpuMatvecGeometry;
use crate::kernels::vector_width::VectorWidth;
use crate::runtime::{Capabilities, DeviceKind, VendorFamily};

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
    /// Launch the CPU-device kernels (`cpu.cl`) with this geometry instead of the GPU kernels, whose other
    /// fields then do not apply. [`MatvecConfig::for_gpu`] sets it for a `CL_DEVICE_TYPE_CPU` device.
    pub cpu: Option<CpuMatvecGeometry>,
    /// Which GPU kernels run: the portable ones or a vendor variant (see [`MatvecVendorKernel`]). With
    /// [`MatvecVendorKernel::Mali`], `rows_per_group` is the rows each work-item owns and only `work_group` and
    /// `half_math` apply besides. A `cpu` geometry overrides it: the CPU kernels run.
    pub vendor_kernel: MatvecVendorKernel,
    /// The most 16-byte pixels a tensor's codes may have to be read through images
    /// (`CL_DEVICE_IMAGE_MAX_BUFFER_SIZE`); larger ones are read from buffers. Only the Adreno image build reads it.
    pub image_max_pixels: u64,
    /// Words per load of the Mali build (`MV_VW`), from the device's preferred vector width
    /// ([`VectorWidth::for_caps`]); the other kernels ignore it.
    pub vector_width: VectorWidth,
}

/// Rows each work-item owns in the Mali build: two rows share every activation load while a 576-row matrix still
/// spreads over 288 work-items (a starting point; nothing has been measured on a Mali).
pub const MALI_ROWS_PER_ITEM: usize = 2;

/// Above this many work-groups per compute unit a single-matrix launch uses `tall_rows_per_group`.
pub const TALL_GROUPS_PER_UNIT: usize = 10;

/// The device figures the starting geometry depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MatvecDevice {
    pub vendor_family: VendorFamily,
    pub kind: DeviceKind,
    pub max_work_group_size: usize,
    /// `cl_khr_fp16`.
    pub fp16: bool,
    /// The vendor family of the phone a device profile emulates, if any.
    pub profile_family: Option<VendorFamily>,
    /// `CL_DEVICE_IMAGE_MAX_BUFFER_SIZE`, 0 without image support.
    pub image_max_buffer_pixels: u64,
    /// `CL_DEVICE_PREFERRED_VECTOR_WIDTH_HALF` (0: unknown).
    pub preferred_vector_width_half: u32,
    /// `CL_DEVICE_LOCAL_MEM_SIZE`, or the profile's lower limit (0: unknown, no staging).
    pub local_mem_bytes: u64,
    /// The Mali build's vector width, from the reported float widths.
    pub vector_width: VectorWidth,
}

/// Local bytes one chunk of a staged x tile takes (`matvec.cl`'s `xl`: 9 float4 per chunk).
const X_TILE_CHUNK_BYTES: u64 = 9 * 16;
/// Local bytes kept free beside the tile and the reduction (a compiler's own use).
const LOCAL_SLACK_BYTES: u64 = 256;
/// Tiles smaller than this stage too little to pay for their barriers: no staging instead.
const MIN_TILE_CHUNKS: usize = 16;

impl MatvecDevice {
    pub(super) fn from_caps(caps: &Capabilities) -> Self {
        MatvecDevice {
            vendor_family: caps.vendor_family,
            kind: caps.kind,
            max_work_group_size: caps.max_work_group_size,
            fp16: caps.fp16,
            profile_family: caps.profile_family,
            image_max_buffer_pixels: if caps.image_support {
                caps.image_max_buffer_pixels
            } else {
                0
            },
            preferred_vector_width_half: caps.preferred_vector_width_half,
            local_mem_bytes: caps.local_mem_bytes,
            vector_width: VectorWidth::for_caps(caps).0,
        }
    }

    /// Whether half vectors suit the device: `cl_khr_fp16`, and a preferred half width other than 1 (Valhall
    /// prefers 128-bit vectors; 0 means the device does not say).
    pub(super) fn half_vector_ok(&self) -> bool {
        self.fp16 && self.preferred_vector_width_half != 1
    }
}

impl MatvecConfig {
    /// A starting point per vendor: wide groups for desktop GPUs, 64-lane half waves on Adreno, small on CPUs.
    pub fn for_gpu(gpu: &crate::runtime::Gpu) -> Self {
        Self::for_device(&MatvecDevice::from_caps(gpu.caps()))
    }

    /// The vendor kernel [`MatvecConfig::for_gpu`] picks for the device (or the phone its profile names), and why:
    /// what `tlite devices` shows.
    pub fn vendor_choice(caps: &Capabilities) -> (MatvecVendorKernel, String) {
        choose_vendor_kernel(&MatvecDevice::from_caps(caps))
    }

    /// [`MatvecConfig::for_gpu`] for capabilities alone (a profile's phone, seen through
    /// [`crate::runtime::DeviceProfile::as_device`]).
    pub fn for_caps(caps: &Capabilities) -> Self {
        Self::for_device(&MatvecDevice::from_caps(caps))
    }

    pub(super) fn for_device(device: &MatvecDevice) -> Self {
        let base = Self::portable_for_device(device);
        let (vendor_kernel, _) = choose_vendor_kernel(device);
        match vendor_kernel {
            MatvecVendorKernel::Portable => base,
            MatvecVendorKernel::Mali => MatvecConfig {
                work_group: pow2_at_most(64, device.max_work_group_size),
                rows_per_group: MALI_ROWS_PER_ITEM,
                tall_rows_per_group: 0,
                half_math: device.half_vector_ok(),
                x_local_chunks: 0,
                long_x_local_chunks: 0,
                unroll: 1,
                short_unroll: 0,
                nv_half2: false,
                cpu: None,
                vendor_kernel,
                vector_width: device.vector_width,
                ..base
            },
            MatvecVendorKernel::AdrenoImage => MatvecConfig {
                work_group: pow2_at_most(64, device.max_work_group_size),
                rows_per_group: 4,
                tall_rows_per_group: 0,
                x_local_chunks: 0,
                long_x_local_chunks: 0,
                unroll: 1,
                short_unroll: 0,
                nv_half2: false,
                cpu: None,
                vendor_kernel,
                image_max_pixels: device.image_max_buffer_pixels,
                ..base
            },
        }
    }

    /// The portable kernels' geometry for the device's own family.
    fn portable_for_device(device: &MatvecDevice) -> Self {
        let nvidia = device.vendor_family == VendorFamily::Nvidia;
        let (work_group, rows_per_group, x_local_chunks) = match device.vendor_family {
            // H100 sweep: 8 rows per group and activations staged in local memory were fastest. A layout with
            // warps owning rows (no work-group reduction, activations staged once per many rows) measured
            // slower on the H200 and was dropped (bench/RESULTS.md).
            VendorFamily::Nvidia => (128, 8, 128),
            VendorFamily::Adreno => (64, 4, 0),
            VendorFamily::Mali => (64, 4, 0),
            VendorFamily::Pocl => (64, 8, 64),
            _ => (128, 4, 0),
        };
        let work_group = pow2_at_most(work_group, device.max_work_group_size);
        let tall_rows_per_group = if nvidia { 16.min(work_group) } else { 0 };
        // The x tiles share local memory with the row reduction (`red`, one float per row and work-item): a tile
        // is cut to what the device (or the phone its profile emulates) has left, never assumed.
        let red_bytes = (rows_per_group.max(tall_rows_per_group) * work_group * 4) as u64;
        let tile_chunks = usize::try_from(
            device
                .local_mem_bytes
                .saturating_sub(red_bytes + LOCAL_SLACK_BYTES)
                / X_TILE_CHUNK_BYTES,
        )
        .unwrap_or(usize::MAX);
        let fit = |chunks: usize| {
            if chunks.min(tile_chunks) < MIN_TILE_CHUNKS {
                0
            } else {
                chunks.min(tile_chunks)
            }
        };
        MatvecConfig {
            work_group,
            rows_per_group,
            // 16 rows for tall matrices (QKV, 11008-row projections); 4096-row ones are faster at 8
            // (bench/RESULTS.md).
            tall_rows_per_group,
            half_math: device.fp16,
            warp_shuffle: true,
            x_local_chunks: fit(x_local_chunks),
            // H100, cold weights: the 11008-wide down projection is faster with a 256-chunk tile
            // (bench/RESULTS.md).
            long_x_local_chunks: fit(if nvidia { 256 } else { 0 }),
            unroll: if nvidia { 2 } else { 1 },
            // H100, cold: 4096x4096 is faster queued without unrolling, while the 11008-row and 11008-wide
            // shapes and gate+up are slower so (bench/RESULTS.md, geometry sweep).
            short_unroll: if nvidia { 1 } else { 0 },
            // Packed-f16 dequantisation measured faster on the H200 (bench/RESULTS.md).
            nv_half2: nvidia,
            cpu: CpuMatvecGeometry::for_kind(device.kind),
            vendor_kernel: MatvecVendorKernel::Portable,
            image_max_pixels: 0,
            vector_width: VectorWidth::DEFAULT,
        }
    }

    /// Refuses a geometry the kernels cannot run: a work-group that is not a power of two, or rows per group
    /// outside `1..=work_group`.
    pub(super) fn validate(&self) -> Result<(), KernelError> {
        if !self.work_group.is_power_of_two()
            || self.rows_per_group == 0
            || self.rows_per_group > self.work_group
        {
            return Err(shape_error(
                "MatvecConfig",
                format!(
                    "work_group {} must be a power of two >= rows_per_group {}",
                    self.work_group, self.rows_per_group
                ),
            ));
        }
        Ok(())
    }

    /// The program defines of this geometry.
    pub(super) fn defines(&self) -> Vec<(&'static str, String)> {
        let mut d = vec![
            ("MV_WG", self.work_group.to_string()),
            ("MV_ROWS", self.rows_per_group.to_string()),
        ];
        if self.half_math {
            d.push(("TLITE_MV_HALF_MATH", "1".to_string()));
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
        if self.vendor_kernel == MatvecVendorKernel::Mali {
            d.push(("MV_VW", self.vector_width.define_value().to_string()));
        }
        d
    }

    /// Whether a build asks for NVIDIA's warp shuffles: wanted, and groups of whole warps.
    pub(super) fn wants_warp_shuffle(&self) -> bool {
        self.warp_shuffle && self.work_group.is_multiple_of(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(vendor_family: VendorFamily, kind: DeviceKind) -> MatvecDevice {
        MatvecDevice {
            vendor_family,
            kind,
            max_work_group_size: 1024,
            fp16: false,
            profile_family: None,
            image_max_buffer_pixels: 0,
            preferred_vector_width_half: 0,
            local_mem_bytes: 48 << 10,
            vector_width: VectorWidth::DEFAULT,
        }
    }

    /// Local bytes the portable kernel's x tile and row reduction take with `c`'s geometry.
    fn local_bytes(c: &MatvecConfig) -> u64 {
        let chunks = c.x_local_chunks.max(c.long_x_local_chunks) as u64;
        let rows = c.rows_per_group.max(c.tall_rows_per_group) as u64;
        chunks * X_TILE_CHUNK_BYTES + rows * c.work_group as u64 * 4
    }

    #[test]
    fn staged_tiles_fit_the_local_memory_the_device_or_its_profile_grants() {
        let nvidia = device(VendorFamily::Nvidia, DeviceKind::Gpu);
        let roomy = MatvecConfig::for_device(&nvidia);
        assert_eq!(
            (roomy.x_local_chunks, roomy.long_x_local_chunks),
            (128, 256)
        );
        assert!(local_bytes(&roomy) <= 48 << 10);
        // An NVIDIA host under a 32 KiB phone profile: the long tile shrinks to fit, the short one stays.
        let phone = MatvecConfig::for_device(&MatvecDevice {
            local_mem_bytes: 32 << 10,
            ..nvidia
        });
        assert_eq!(phone.x_local_chunks, 128);
        assert!(phone.long_x_local_chunks < 256 && phone.long_x_local_chunks >= 128);
        assert!(local_bytes(&phone) <= 32 << 10);
        // Too little for a useful tile: no staging at all.
        let tiny = MatvecConfig::for_device(&MatvecDevice {
            local_mem_bytes: 10 << 10,
            ..nvidia
        });
        assert_eq!((tiny.x_local_chunks, tiny.long_x_local_chunks), (0, 0));
    }

    #[test]
    fn nvidia_gets_its_measured_geometry_and_fast_paths() {
        let c = MatvecConfig::for_device(&device(VendorFamily::Nvidia, DeviceKind::Gpu));
        assert_eq!(
            (c.work_group, c.rows_per_group, c.x_local_chunks),
            (128, 8, 128)
        );
        assert_eq!((c.tall_rows_per_group, c.long_x_local_chunks), (16, 256));
        assert_eq!((c.unroll, c.short_unroll), (2, 1));
        assert!(c.nv_half2 && c.warp_shuffle && c.wants_warp_shuffle());
        assert_eq!(c.cpu, None);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn phones_and_others_get_plain_geometries() {
        for (vendor, want) in [
            (VendorFamily::Adreno, (64, 4, 0)),
            (VendorFamily::Mali, (64, MALI_ROWS_PER_ITEM, 0)),
            (VendorFamily::Intel, (128, 4, 0)),
            (VendorFamily::Other, (128, 4, 0)),
        ] {
            let c = MatvecConfig::for_device(&device(vendor, DeviceKind::Gpu));
            assert_eq!(
                (c.work_group, c.rows_per_group, c.x_local_chunks),
                want,
                "{vendor:?}"
            );
            assert_eq!(
                (c.tall_rows_per_group, c.long_x_local_chunks, c.short_unroll),
                (0, 0, 0)
            );
            assert_eq!(c.unroll, 1);
            assert!(!c.nv_half2, "{vendor:?}");
            assert!(c.validate().is_ok());
        }
    }

    #[test]
    fn half_math_follows_fp16_and_cpu_devices_get_the_cpu_kernels() {
        let fp16 = MatvecDevice {
            fp16: true,
            ..device(VendorFamily::Adreno, DeviceKind::Gpu)
        };
        assert!(MatvecConfig::for_device(&fp16).half_math);
        assert!(
            !MatvecConfig::for_device(&device(VendorFamily::Adreno, DeviceKind::Gpu)).half_math
        );
        let pocl = MatvecConfig::for_device(&device(VendorFamily::Pocl, DeviceKind::Cpu));
        assert_eq!(pocl.cpu, Some(CpuMatvecGeometry::DEFAULT));
        assert_eq!(
            (pocl.work_group, pocl.rows_per_group, pocl.x_local_chunks),
            (64, 8, 64)
        );
    }

    #[test]
    fn work_groups_shrink_to_the_device_limit() {
        let small = MatvecDevice {
            max_work_group_size: 96,
            ..device(VendorFamily::Nvidia, DeviceKind::Gpu)
        };
        let c = MatvecConfig::for_device(&small);
        assert_eq!(c.work_group, 64);
        assert_eq!(c.tall_rows_per_group, 16);
        let tiny = MatvecDevice {
            max_work_group_size: 8,
            ..small
        };
        let c = MatvecConfig::for_device(&tiny);
        assert_eq!((c.work_group, c.tall_rows_per_group), (8, 8));
        // 8 rows in a group of 8 work-items is still valid; warps of 32 are not whole there.
        assert!(c.validate().is_ok());
        assert!(!c.wants_warp_shuffle());
    }

    #[test]
    fn invalid_geometries_are_refused() {
        let base = MatvecConfig::for_device(&device(VendorFamily::Other, DeviceKind::Gpu));
        for (work_group, rows_per_group) in [(48, 4), (64, 0), (32, 64)] {
            let c = MatvecConfig {
                work_group,
                rows_per_group,
                ..base
            };
            assert!(c.validate().is_err(), "{work_group} {rows_per_group}");
        }
    }

    #[test]
    fn defines_name_each_option() {
        let c = MatvecConfig::for_device(&device(VendorFamily::Nvidia, DeviceKind::Gpu));
        let names: Vec<_> = c
            .defines()
            .into_iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        assert_eq!(
            names,
            [
                "MV_WG=128",
                "MV_ROWS=8",
                "MV_UNROLL=2",
                "MV_NVH2=1",
                "MV_XLOCAL=128"
            ]
        );
        let plain = MatvecConfig::for_device(&device(VendorFamily::Adreno, DeviceKind::Gpu));
        let names: Vec<_> = plain.defines().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["MV_WG", "MV_ROWS"]);
    }
}
