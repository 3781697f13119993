//! What a device can do, read once when it is opened, so kernels pick their path without querying the driver again.

use opencl3::device::{Device, CL_DEVICE_TYPE_ACCELERATOR, CL_DEVICE_TYPE_CPU, CL_DEVICE_TYPE_GPU};
use serde::Serialize;

use crate::runtime::cl_consts::{
    CL_DEVICE_SCHEDULING_CONTROLS_CAPABILITIES_ARM, CL_DEVICE_SUB_GROUP_SIZES_INTEL,
    CL_DEVICE_WARP_SIZE_NV,
};
use crate::runtime::{ClError, ClResultExt};

/// The GPU family, which decides vendor-specific kernel paths and priority mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum VendorFamily {
    /// Qualcomm Adreno.
    Adreno,
    /// Arm Mali (MediaTek, Samsung Exynos, Google Tensor).
    Mali,
    /// NVIDIA.
    Nvidia,
    /// Intel GPUs.
    Intel,
    /// The Portable Computing Language implementation (here: the CPU).
    Pocl,
    /// Anything else.
    Other,
}

impl VendorFamily {
    /// The preprocessor define that tells kernels which vendor path to take.
    pub fn define(self) -> &'static str {
        match self {
            VendorFamily::Adreno => "TLITE_VENDOR_ADRENO",
            VendorFamily::Mali => "TLITE_VENDOR_MALI",
            VendorFamily::Nvidia => "TLITE_VENDOR_NVIDIA",
            VendorFamily::Intel => "TLITE_VENDOR_INTEL",
            VendorFamily::Pocl => "TLITE_VENDOR_POCL",
            VendorFamily::Other => "TLITE_VENDOR_OTHER",
        }
    }

    /// Classifies a device from its platform name, vendor and name strings.
    pub fn detect(platform_name: &str, vendor: &str, name: &str) -> Self {
        let all = format!("{platform_name} {vendor} {name}").to_ascii_lowercase();
        if all.contains("adreno") || all.contains("qualcomm") {
            VendorFamily::Adreno
        } else if all.contains("mali") || vendor.to_ascii_lowercase().starts_with("arm") {
            VendorFamily::Mali
        } else if platform_name.contains("Portable Computing Language") || all.contains("pocl") {
            VendorFamily::Pocl
        } else if all.contains("nvidia") {
            VendorFamily::Nvidia
        } else if all.contains("intel") {
            VendorFamily::Intel
        } else {
            VendorFamily::Other
        }
    }
}

/// The OpenCL device type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeviceKind {
    /// A GPU.
    Gpu,
    /// A CPU.
    Cpu,
    /// An accelerator.
    Accelerator,
    /// Anything else.
    Other,
}

/// A `major.minor` OpenCL version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ClVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl ClVersion {
    /// Parses the version out of strings such as `OpenCL 3.0 PoCL …` or `OpenCL C 1.2 Adreno(TM) 740`.
    pub fn parse(text: &str) -> Option<Self> {
        let token = text
            .split_whitespace()
            .find(|t| t.contains('.') && t.starts_with(|c: char| c.is_ascii_digit()))?;
        let mut parts = token.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()?;
        Some(ClVersion { major, minor })
    }
}

impl std::fmt::Display for ClVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The extensions tlite's decisions read (kernel paths, queue priority, buffers); the others a device lists do
/// not change what it does.
pub const EXTENSIONS_USED: [&str; 13] = [
    "cl_khr_fp16",
    "cl_khr_subgroups",
    "cl_intel_subgroups",
    "cl_qcom_reqd_sub_group_size",
    "cl_qcom_subgroup_shuffle",
    "cl_khr_priority_hints",
    "cl_khr_throttle_hints",
    "cl_qcom_priority_hint",
    "cl_qcom_perf_hint",
    "cl_qcom_large_buffer",
    "cl_arm_scheduling_controls",
    "cl_khr_integer_dot_product",
    "cl_qcom_dot_product8",
];

/// Everything tlite needs to know about one device.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    /// Platform name, e.g. `Portable Computing Language`.
    pub platform_name: String,
    /// Platform version string.
    pub platform_version: String,
    /// Device name.
    pub name: String,
    /// Device vendor string.
    pub vendor: String,
    /// The vendor family tlite recognises.
    pub vendor_family: VendorFamily,
    /// Device type.
    pub kind: DeviceKind,
    /// Driver version string (part of the program-cache key).
    pub driver_version: String,
    /// Device OpenCL version string.
    pub opencl_version: String,
    /// Parsed device OpenCL version.
    pub opencl_version_number: Option<ClVersion>,
    /// OpenCL C version string.
    pub opencl_c_version: String,
    /// `cl_khr_fp16`: half-precision arithmetic in kernels.
    pub fp16: bool,
    /// `cl_khr_subgroups` (or core sub-groups on OpenCL 2.1+/3.0 with a non-zero sub-group count).
    pub subgroups_khr: bool,
    /// `cl_intel_subgroups`.
    pub subgroups_intel: bool,
    /// Qualcomm sub-group extensions (`cl_qcom_reqd_sub_group_size`, `cl_qcom_subgroup_shuffle`).
    pub subgroups_qcom: bool,
    /// Known sub-group (warp/wave) sizes; empty when the device does not say.
    pub subgroup_sizes: Vec<u32>,
    /// `CL_DEVICE_MAX_NUM_SUB_GROUPS`, 0 when unknown.
    pub max_num_subgroups: u32,
    /// `cl_khr_priority_hints`.
    pub khr_priority_hints: bool,
    /// `cl_khr_throttle_hints`.
    pub khr_throttle_hints: bool,
    /// `cl_qcom_priority_hint`.
    pub qcom_priority_hint: bool,
    /// `cl_qcom_perf_hint`.
    pub qcom_perf_hint: bool,
    /// `cl_qcom_recordable_queues`.
    pub qcom_recordable_queues: bool,
    /// `cl_qcom_large_buffer`.
    pub qcom_large_buffer: bool,
    /// `cl_arm_scheduling_controls`.
    pub arm_scheduling_controls: bool,
    /// `CL_DEVICE_SCHEDULING_CONTROLS_CAPABILITIES_ARM` bits, 0 when absent.
    pub arm_scheduling_capabilities: u64,
    /// `cl_khr_integer_dot_product`.
    pub khr_integer_dot_product: bool,
    /// `cl_qcom_dot_product8`.
    pub qcom_dot_product8: bool,
    /// The `cl_arm_integer_dot_product_*` extensions present.
    pub arm_integer_dot_product: Vec<String>,
    /// Image support.
    pub image_support: bool,
    /// `CL_DEVICE_IMAGE_MAX_BUFFER_SIZE`: the most pixels an `image1d_buffer_t` may have (0: no images or unknown).
    pub image_max_buffer_pixels: u64,
    /// `CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT` (0: unknown).
    pub preferred_vector_width_float: u32,
    /// `CL_DEVICE_PREFERRED_VECTOR_WIDTH_HALF` (0: unknown or no `cl_khr_fp16`).
    pub preferred_vector_width_half: u32,
    /// `CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT` (0: unknown).
    pub native_vector_width_float: u32,
    /// `CL_DEVICE_NATIVE_VECTOR_WIDTH_HALF` (0: unknown or no `cl_khr_fp16`).
    pub native_vector_width_half: u32,
    /// `CL_DEVICE_MAX_MEM_ALLOC_SIZE` in bytes.
    pub max_alloc_bytes: u64,
    /// `CL_DEVICE_GLOBAL_MEM_SIZE` in bytes.
    pub global_mem_bytes: u64,
    /// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` in bits (sub-buffer origins must be multiples of it).
    pub base_addr_align_bits: u32,
    /// `CL_DEVICE_LOCAL_MEM_SIZE` in bytes.
    pub local_mem_bytes: u64,
    /// Compute units.
    pub compute_units: u32,
    /// Largest work-group size.
    pub max_work_group_size: usize,
    /// Largest work-item sizes per dimension.
    pub max_work_item_sizes: Vec<usize>,
    /// Clock in MHz.
    pub max_clock_mhz: u32,
    /// The full extension list.
    pub extensions: Vec<String>,
    /// The device profile these capabilities are limited to (`TLITE_DEVICE_PROFILE`, `--device-profile`), if any.
    pub profile: Option<String>,
    /// The vendor family of that profile's phone. `vendor_family` stays the host's (its built-ins are what
    /// compiles here); the choice of portable kernel variants that suit the phone's hardware follows this one.
    pub profile_family: Option<VendorFamily>,
}

impl Capabilities {
    /// Reads the capabilities of `device`. Required queries fail with a [`ClError`]; optional ones default.
    pub fn query(device: &Device) -> Result<Self, ClError> {
        let platform = opencl3::platform::Platform::new(
            device.platform().cl_call("clGetDeviceInfo(PLATFORM)")?,
        );
        let platform_name = platform.name().unwrap_or_default();
        let platform_version = platform.version().unwrap_or_default();
        let name = device.name().cl_call("clGetDeviceInfo(NAME)")?;
        let vendor = device.vendor().unwrap_or_default();
        let extensions: Vec<String> = device
            .extensions()
            .cl_call("clGetDeviceInfo(EXTENSIONS)")?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let has = |ext: &str| extensions.iter().any(|e| e == ext);
        let device_type = device.dev_type().cl_call("clGetDeviceInfo(TYPE)")?;
        let kind = if device_type & CL_DEVICE_TYPE_GPU != 0 {
            DeviceKind::Gpu
        } else if device_type & CL_DEVICE_TYPE_CPU != 0 {
            DeviceKind::Cpu
        } else if device_type & CL_DEVICE_TYPE_ACCELERATOR != 0 {
            DeviceKind::Accelerator
        } else {
            DeviceKind::Other
        };
        let opencl_version = device.version().unwrap_or_default();
        let opencl_version_number = ClVersion::parse(&opencl_version);
        let at_least_2_1 =
            opencl_version_number.is_some_and(|v| v >= ClVersion { major: 2, minor: 1 });
        let max_num_subgroups = if has("cl_khr_subgroups") || at_least_2_1 {
            device.max_num_sub_groups().unwrap_or(0)
        } else {
            0
        };
        let mut subgroup_sizes = Vec::new();
        if has("cl_intel_subgroups") {
            if let Ok(bytes) = device.get_data(CL_DEVICE_SUB_GROUP_SIZES_INTEL) {
                subgroup_sizes.extend(
                    bytes
                        .chunks_exact(std::mem::size_of::<usize>())
                        .filter_map(|c| c.try_into().ok().map(usize::from_ne_bytes))
                        .filter_map(|s| u32::try_from(s).ok()),
                );
            }
        }
        if subgroup_sizes.is_empty() && has("cl_nv_device_attribute_query") {
            if let Ok(bytes) = device.get_data(CL_DEVICE_WARP_SIZE_NV) {
                if let Some(Ok(four)) = bytes.get(..4).map(<[u8; 4]>::try_from) {
                    subgroup_sizes.push(u32::from_ne_bytes(four));
                }
            }
        }
        let arm_scheduling_capabilities = if has("cl_arm_scheduling_controls") {
            device
                .get_data(CL_DEVICE_SCHEDULING_CONTROLS_CAPABILITIES_ARM)
                .ok()
                .and_then(|b| b.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok()))
                .map(u64::from_ne_bytes)
                .unwrap_or(0)
        } else {
            0
        };
        let mut caps = Capabilities {
            vendor_family: VendorFamily::detect(&platform_name, &vendor, &name),
            platform_name,
            platform_version,
            kind,
            driver_version: device.driver_version().unwrap_or_default(),
            opencl_version,
            opencl_version_number,
            opencl_c_version: device.opencl_c_version().unwrap_or_default(),
            fp16: false,
            subgroups_khr: false,
            subgroups_intel: false,
            subgroups_qcom: false,
            subgroup_sizes,
            max_num_subgroups,
            khr_priority_hints: false,
            khr_throttle_hints: false,
            qcom_priority_hint: false,
            qcom_perf_hint: false,
            qcom_recordable_queues: false,
            qcom_large_buffer: false,
            arm_scheduling_controls: false,
            arm_scheduling_capabilities,
            khr_integer_dot_product: false,
            qcom_dot_product8: false,
            arm_integer_dot_product: Vec::new(),
            image_support: device.image_support().unwrap_or(false),
            image_max_buffer_pixels: device.image_max_buffer_size().map_or(0, |p| p as u64),
            preferred_vector_width_float: device.max_preferred_vector_width_float().unwrap_or(0),
            preferred_vector_width_half: device.preferred_vector_width_half().unwrap_or(0),
            native_vector_width_float: device.native_vector_width_float().unwrap_or(0),
            native_vector_width_half: device.native_vector_width_half().unwrap_or(0),
            max_alloc_bytes: device.max_mem_alloc_size().unwrap_or(0),
            global_mem_bytes: device.global_mem_size().unwrap_or(0),
            base_addr_align_bits: device.mem_base_addr_align().unwrap_or(0),
            local_mem_bytes: device.local_mem_size().unwrap_or(0),
            compute_units: device.max_compute_units().unwrap_or(0),
            max_work_group_size: device.max_work_group_size().unwrap_or(0),
            max_work_item_sizes: device.max_work_item_sizes().unwrap_or_default(),
            max_clock_mhz: device.max_clock_frequency().unwrap_or(0),
            name,
            vendor,
            extensions,
            profile: None,
            profile_family: None,
        };
        caps.derive_extension_flags();
        Ok(caps)
    }

    /// Sets every extension flag from [`Capabilities::extensions`] (and the sub-group count, for core sub-groups),
    /// so a device whose list is narrowed by a profile has no flag the list no longer backs.
    pub(crate) fn derive_extension_flags(&mut self) {
        let has = |ext: &str| self.extensions.iter().any(|e| e == ext);
        let at_least_2_1 = self
            .opencl_version_number
            .is_some_and(|v| v >= ClVersion { major: 2, minor: 1 });
        self.fp16 = has("cl_khr_fp16");
        self.subgroups_khr =
            has("cl_khr_subgroups") || (at_least_2_1 && self.max_num_subgroups > 0);
        self.subgroups_intel = has("cl_intel_subgroups");
        self.subgroups_qcom = has("cl_qcom_reqd_sub_group_size") || has("cl_qcom_subgroup_shuffle");
        self.khr_priority_hints = has("cl_khr_priority_hints");
        self.khr_throttle_hints = has("cl_khr_throttle_hints");
        self.qcom_priority_hint = has("cl_qcom_priority_hint");
        self.qcom_perf_hint = has("cl_qcom_perf_hint");
        self.qcom_recordable_queues = has("cl_qcom_recordable_queues");
        self.qcom_large_buffer = has("cl_qcom_large_buffer");
        self.arm_scheduling_controls = has("cl_arm_scheduling_controls");
        if !self.arm_scheduling_controls {
            self.arm_scheduling_capabilities = 0;
        }
        self.khr_integer_dot_product = has("cl_khr_integer_dot_product");
        self.qcom_dot_product8 = has("cl_qcom_dot_product8");
        self.arm_integer_dot_product = self
            .extensions
            .iter()
            .filter(|e| e.starts_with("cl_arm_integer_dot_product"))
            .cloned()
            .collect();
    }

    /// The device name for messages, with the profile it is limited to: `Adreno 750`, or
    /// `pthread-skylake (as phone-min)`.
    pub fn display_name(&self) -> String {
        match &self.profile {
            Some(profile) => format!("{} (as {profile})", self.name),
            None => self.name.clone(),
        }
    }

    /// The family whose hardware the kernel variants are chosen for: the profile's phone under a profile, else the
    /// device's own.
    pub fn target_family(&self) -> VendorFamily {
        self.profile_family.unwrap_or(self.vendor_family)
    }

    /// Whether the device has the named extension.
    pub fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| e == name)
    }

    /// Sub-groups usable through the `sub_group_*` built-ins (`cl_khr_subgroups` or `cl_intel_subgroups`).
    pub fn has_subgroups(&self) -> bool {
        self.subgroups_khr || self.subgroups_intel
    }

    /// Whether the driver keeps its own on-disk cache of compiled programs, so that tlite need not read binaries
    /// back. PoCL does (`~/.cache/pocl/kcache`, or `POCL_CACHE_DIR`), and there reading a binary back costs more
    /// than the build itself: PoCL then generates machine code for every kernel of the program for an unknown
    /// work-group size (55 s for the attention program on 2 cores), while a launch compiles only the kernel it
    /// runs, for its real work-group size, into the same cache.
    pub fn driver_caches_programs(&self) -> bool {
        self.vendor_family == VendorFamily::Pocl
    }

    /// The defines every program built for this device gets, so one source selects its vendor path: the vendor
    /// family (`TLITE_VENDOR_*`), `cl_khr_fp16` and the sub-group extensions. Only what a kernel reads is passed
    /// (every define is part of the program-cache key); the other capabilities stay in this struct for reports.
    pub fn defines(&self) -> Vec<(String, String)> {
        let mut defines = vec![(self.vendor_family.define().to_string(), "1".to_string())];
        let mut flag = |on: bool, name: &str| {
            if on {
                defines.push((name.to_string(), "1".to_string()));
            }
        };
        flag(self.fp16, "TLITE_HAS_FP16");
        flag(self.has_subgroups(), "TLITE_HAS_SUBGROUPS");
        flag(self.subgroups_khr, "TLITE_HAS_SUBGROUPS_KHR");
        flag(self.subgroups_intel, "TLITE_HAS_SUBGROUPS_INTEL");
        flag(self.subgroups_qcom, "TLITE_HAS_SUBGROUPS_QCOM");
        defines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device with every capability tlite knows of.
    fn everything() -> Capabilities {
        Capabilities {
            platform_name: "Test".into(),
            platform_version: "OpenCL 3.0".into(),
            name: "Test".into(),
            vendor: "Test".into(),
            vendor_family: VendorFamily::Adreno,
            kind: DeviceKind::Gpu,
            driver_version: "1".into(),
            opencl_version: "OpenCL 3.0".into(),
            opencl_version_number: Some(ClVersion { major: 3, minor: 0 }),
            opencl_c_version: "OpenCL C 3.0".into(),
            fp16: true,
            subgroups_khr: true,
            subgroups_intel: true,
            subgroups_qcom: true,
            subgroup_sizes: vec![64, 128],
            max_num_subgroups: 16,
            khr_priority_hints: true,
            khr_throttle_hints: true,
            qcom_priority_hint: true,
            qcom_perf_hint: true,
            qcom_recordable_queues: true,
            qcom_large_buffer: true,
            arm_scheduling_controls: true,
            arm_scheduling_capabilities: 7,
            khr_integer_dot_product: true,
            qcom_dot_product8: true,
            arm_integer_dot_product: vec!["cl_arm_integer_dot_product_int8".into()],
            image_support: true,
            image_max_buffer_pixels: 1 << 27,
            preferred_vector_width_float: 1,
            preferred_vector_width_half: 2,
            native_vector_width_float: 1,
            native_vector_width_half: 2,
            max_alloc_bytes: 1 << 30,
            global_mem_bytes: 1 << 32,
            base_addr_align_bits: 1024,
            local_mem_bytes: 32 << 10,
            compute_units: 6,
            max_work_group_size: 1024,
            max_work_item_sizes: vec![1024, 1024, 1024],
            max_clock_mhz: 900,
            extensions: Vec::new(),
            profile: None,
            profile_family: None,
        }
    }

    #[test]
    fn every_capability_define_is_read_by_a_kernel() {
        let kernels = [
            include_str!("../kernels/common.cl"),
            include_str!("../kernels/vendor/nvidia.cl"),
            include_str!("../kernels/vendor/khr_subgroups.cl"),
            include_str!("../kernels/vendor/adreno.cl"),
            include_str!("../kernels/vendor/portable.cl"),
        ]
        .concat();
        let caps = everything();
        let defines = caps.defines();
        assert_eq!(defines[0], ("TLITE_VENDOR_ADRENO".into(), "1".into()));
        for (name, _) in &defines[1..] {
            assert!(
                kernels.contains(&format!("defined({name})"))
                    || kernels.contains(&format!("def {name}\n")),
                "{name} is passed to every program but no kernel reads it"
            );
        }
        let names: Vec<&str> = defines[1..].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "TLITE_HAS_FP16",
                "TLITE_HAS_SUBGROUPS",
                "TLITE_HAS_SUBGROUPS_KHR",
                "TLITE_HAS_SUBGROUPS_INTEL",
                "TLITE_HAS_SUBGROUPS_QCOM"
            ]
        );
        let bare = Capabilities {
            fp16: false,
            subgroups_khr: false,
            subgroups_intel: false,
            subgroups_qcom: false,
            vendor_family: VendorFamily::Pocl,
            ..caps
        };
        assert_eq!(
            bare.defines(),
            [("TLITE_VENDOR_POCL".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn versions_parse_from_driver_strings() {
        assert_eq!(
            ClVersion::parse("OpenCL 3.0 PoCL 3.1+debian"),
            Some(ClVersion { major: 3, minor: 0 })
        );
        assert_eq!(
            ClVersion::parse("OpenCL C 1.2 Adreno(TM) 740"),
            Some(ClVersion { major: 1, minor: 2 })
        );
        assert_eq!(
            ClVersion::parse("OpenCL 2.1 v1.r38p1-01eac0"),
            Some(ClVersion { major: 2, minor: 1 })
        );
        assert_eq!(ClVersion::parse("garbage"), None);
    }

    #[test]
    fn vendor_families_are_recognised() {
        assert_eq!(
            VendorFamily::detect(
                "QUALCOMM Snapdragon(TM)",
                "QUALCOMM",
                "QUALCOMM Adreno(TM) 740"
            ),
            VendorFamily::Adreno
        );
        assert_eq!(
            VendorFamily::detect("ARM Platform", "ARM", "Mali-G710 r0p0"),
            VendorFamily::Mali
        );
        assert_eq!(
            VendorFamily::detect("NVIDIA CUDA", "NVIDIA Corporation", "NVIDIA H100 80GB HBM3"),
            VendorFamily::Nvidia
        );
        assert_eq!(
            VendorFamily::detect(
                "Portable Computing Language",
                "GenuineIntel",
                "pthread-skylake-avx512"
            ),
            VendorFamily::Pocl
        );
        assert_eq!(
            VendorFamily::detect(
                "Intel(R) OpenCL Graphics",
                "Intel(R) Corporation",
                "Intel(R) Arc(TM)"
            ),
            VendorFamily::Intel
        );
        assert_eq!(
            VendorFamily::detect("Clover", "AMD", "Radeon"),
            VendorFamily::Other
        );
    }
}
