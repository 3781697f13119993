//! How a profile combines with a device: limits are the stricter of the two, extensions those both have.
//!
//! A profile only ever narrows what the host device offers. A limit the host exceeds is lowered to the profile's;
//! one the host is already below stays the host's, since code that runs must fit the host too. An extension the
//! profile shows but the host lacks stays absent: the kernels that run here are built for the host, so the vendor
//! built-ins of the phone are never called on it (tests compile those paths with `TLITE_COMPILE_CHECK` stand-ins
//! instead). The vendor family stays the host's for the same reason. [`DeviceProfile::as_device`] is the other
//! view: the phone on its own, for showing what tlite would choose there.

use super::{DeviceProfile, ProfileError, ProfileLimits};
use crate::runtime::{Capabilities, ClVersion, DeviceKind, VendorFamily};

/// The smaller of two limits where the host's is known (drivers that do not say report 0).
fn lower<T: Ord + Copy + Default + PartialEq>(host: T, profile: Option<T>) -> T {
    match profile {
        Some(p) if host == T::default() => p,
        Some(p) => host.min(p),
        None => host,
    }
}

/// Both limits in effect at once: every value at most the host's and the profile's (the alignment at least both).
fn merge_limits(caps: &mut Capabilities, limits: &ProfileLimits) {
    caps.max_alloc_bytes = lower(caps.max_alloc_bytes, limits.max_alloc_bytes);
    caps.global_mem_bytes = lower(caps.global_mem_bytes, limits.global_mem_bytes);
    caps.max_alloc_bytes = lower(
        caps.max_alloc_bytes,
        Some(caps.global_mem_bytes).filter(|&g| g > 0),
    );
    caps.local_mem_bytes = lower(caps.local_mem_bytes, limits.local_mem_bytes);
    caps.max_work_group_size = lower(caps.max_work_group_size, limits.max_work_group_size);
    if let Some(sizes) = &limits.max_work_item_sizes {
        if caps.max_work_item_sizes.is_empty() {
            caps.max_work_item_sizes = sizes.clone();
        } else {
            for (i, host) in caps.max_work_item_sizes.iter_mut().enumerate() {
                // A dimension the profile does not list is limited like its last one.
                let p = sizes.get(i).or(sizes.last()).copied();
                *host = lower(*host, p);
            }
        }
    }
    // Coarser alignment is the stricter limit: sub-buffer origins must satisfy both devices.
    if let Some(bits) = limits.base_addr_align_bits {
        caps.base_addr_align_bits = caps.base_addr_align_bits.max(bits);
    }
}

impl DeviceProfile {
    /// `host` limited to this profile: each limit the stricter of the two (unknown profile limits taken from
    /// `phone-min`), only the extensions both show, and the flags, sub-group counts and vendor queries that rest
    /// on a removed extension cleared. The vector widths are the phone's (0 where the profile does not show them).
    pub fn apply(&self, host: &Capabilities) -> Result<Capabilities, ProfileError> {
        let (limits, _) = self.limits_in_effect()?;
        let mut caps = host.clone();
        merge_limits(&mut caps, &limits);
        caps.extensions.retain(|e| self.has_extension(e));
        let (images, pixels) = self.images_in_effect();
        caps.image_support &= images;
        caps.image_max_buffer_pixels = if caps.image_support {
            lower(caps.image_max_buffer_pixels, Some(pixels))
        } else {
            0
        };
        let subgroups = ["cl_khr_subgroups", "cl_intel_subgroups"]
            .iter()
            .any(|e| caps.has_extension(e));
        if !subgroups {
            // Core sub-groups of OpenCL 2.1+ count as cl_khr_subgroups: a phone without it has none.
            caps.max_num_subgroups = 0;
        }
        if !subgroups && !caps.has_extension("cl_qcom_subgroup_shuffle") {
            caps.subgroup_sizes.clear();
        }
        caps.derive_extension_flags();
        // Vector widths are no limit but the phone's preference, which the phone's kernel variants are built for:
        // the profile's, 0 (unknown, the kernels' stated default) where it does not show them, never the host's.
        caps.preferred_vector_width_float = self.preferred_vector_width_float.unwrap_or(0);
        caps.preferred_vector_width_half = self.preferred_vector_width_half.unwrap_or(0);
        caps.native_vector_width_float = self.native_vector_width_float.unwrap_or(0);
        caps.native_vector_width_half = self.native_vector_width_half.unwrap_or(0);
        caps.profile = Some(self.name.clone());
        caps.profile_family = Some(self.family());
        Ok(caps)
    }

    /// The phone's vendor family, from its platform, vendor and device names and the profile's own name.
    pub fn family(&self) -> VendorFamily {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let name = self.device_name.clone().unwrap_or_default();
        VendorFamily::detect(
            &text(&self.platform_name),
            &text(&self.vendor),
            &format!("{name} {}", self.name),
        )
    }

    /// The phone on its own, as if it were the opened device: its names, limits (unknown ones from `phone-min`) and
    /// extensions. Nothing runs on these capabilities; they show what tlite would choose there.
    pub fn as_device(&self) -> Result<Capabilities, ProfileError> {
        let (limits, _) = self.limits_in_effect()?;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let name = self
            .device_name
            .clone()
            .unwrap_or_else(|| self.name.clone());
        let platform_name = text(&self.platform_name);
        let vendor = text(&self.vendor);
        let opencl_version = self.device_version.clone().unwrap_or_default();
        let opencl_version_number = ClVersion::parse(&opencl_version);
        let mut caps = Capabilities {
            vendor_family: self.family(),
            platform_name,
            platform_version: String::new(),
            name,
            vendor,
            kind: DeviceKind::Gpu,
            driver_version: text(&self.driver_version),
            opencl_version,
            opencl_version_number,
            opencl_c_version: text(&self.opencl_c_version),
            fp16: false,
            subgroups_khr: false,
            subgroups_intel: false,
            subgroups_qcom: false,
            subgroup_sizes: Vec::new(),
            // Not in any dump (0: unknown, as drivers that do not say report it).
            max_num_subgroups: 0,
            khr_priority_hints: false,
            khr_throttle_hints: false,
            qcom_priority_hint: false,
            qcom_perf_hint: false,
            qcom_recordable_queues: false,
            qcom_large_buffer: false,
            arm_scheduling_controls: false,
            // The Arm capability bits are not in the dumps; compute-unit limits are what tlite asks for.
            arm_scheduling_capabilities:
                crate::runtime::cl_consts::CL_DEVICE_SCHEDULING_COMPUTE_UNIT_LIMIT_ARM,
            khr_integer_dot_product: false,
            qcom_dot_product8: false,
            arm_integer_dot_product: Vec::new(),
            image_support: self.images_in_effect().0,
            image_max_buffer_pixels: self.images_in_effect().1,
            preferred_vector_width_float: self.preferred_vector_width_float.unwrap_or(0),
            preferred_vector_width_half: self.preferred_vector_width_half.unwrap_or(0),
            native_vector_width_float: self.native_vector_width_float.unwrap_or(0),
            native_vector_width_half: self.native_vector_width_half.unwrap_or(0),
            max_alloc_bytes: 0,
            global_mem_bytes: 0,
            base_addr_align_bits: 0,
            local_mem_bytes: 0,
            compute_units: self.compute_units.unwrap_or(0),
            max_work_group_size: 0,
            max_work_item_sizes: Vec::new(),
            max_clock_mhz: self.max_clock_mhz.unwrap_or(0),
            extensions: self.extensions.clone(),
            profile: Some(self.name.clone()),
            profile_family: Some(self.family()),
        };
        merge_limits(&mut caps, &limits);
        caps.derive_extension_flags();
        Ok(caps)
    }
}
