//! Reading a profile file: the typed fields through serde, the extension set from the list and every `cl_*` flag.

use serde::Deserialize;
use serde_json::Value;

use super::{DeviceProfile, ProfileError, ProfileLimits};

/// The fields tlite reads; the files hold more (cache sizes, image limits, notes), which are ignored.
#[derive(Deserialize)]
struct Raw {
    short_name: Option<String>,
    source: Option<String>,
    vendor: Option<String>,
    platform_name: Option<String>,
    device_name: Option<String>,
    device_version: Option<String>,
    driver_version: Option<String>,
    opencl_c_version: Option<String>,
    max_compute_units: Option<u32>,
    max_clock_mhz: Option<u32>,
    max_mem_alloc_size: Option<u64>,
    global_mem_size: Option<u64>,
    local_mem_size: Option<u64>,
    max_work_group_size: Option<usize>,
    max_work_item_sizes: Option<Vec<usize>>,
    mem_base_addr_align_bits: Option<u32>,
    extensions: Option<Vec<String>>,
    #[serde(default)]
    extensions_complete: bool,
    image_support: Option<bool>,
    image_max_buffer_size_pixels: Option<u64>,
    vector_widths_preferred_native: Option<VectorWidths>,
}

/// `[preferred, native]` widths per type; only the two the Mali kernels' vector width is chosen from.
#[derive(Deserialize)]
struct VectorWidths {
    float: Option<Vec<Option<u32>>>,
    half: Option<Vec<Option<u32>>>,
}

/// Parses profile JSON; `origin` (a file or a bundled name) names it in errors.
pub(super) fn parse(text: &str, origin: &str) -> Result<DeviceProfile, ProfileError> {
    let json = |source| ProfileError::Json {
        origin: origin.to_string(),
        source,
    };
    let value: Value = serde_json::from_str(text).map_err(json)?;
    if !value.is_object() {
        return Err(invalid(origin, "(top level)", "must be a JSON object"));
    }
    let raw: Raw = serde_json::from_value(value.clone()).map_err(json)?;
    let name = raw
        .short_name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid(origin, "short_name", "is missing or empty"))?;
    let limits = ProfileLimits {
        max_alloc_bytes: raw.max_mem_alloc_size,
        global_mem_bytes: raw.global_mem_size,
        local_mem_bytes: raw.local_mem_size,
        max_work_group_size: raw.max_work_group_size,
        max_work_item_sizes: raw.max_work_item_sizes,
        base_addr_align_bits: raw.mem_base_addr_align_bits,
    };
    check_limits(&limits, origin)?;
    let mut extensions = raw.extensions.unwrap_or_default();
    if let Some(bad) = extensions
        .iter()
        .find(|e| !e.starts_with("cl_") || e.contains(char::is_whitespace))
    {
        return Err(invalid(
            origin,
            "extensions",
            &format!("holds `{bad}`, which is no OpenCL extension name"),
        ));
    }
    collect_flags(&value, &mut extensions);
    if let Some(versions) = value.get("extension_versions").and_then(Value::as_object) {
        extensions.extend(versions.keys().filter(|k| k.starts_with("cl_")).cloned());
    }
    extensions.sort();
    extensions.dedup();
    // A pair's null (or missing) member is unknown, like a null pair.
    let preferred = |w: Option<&Vec<Option<u32>>>| w.and_then(|v| v.first().copied().flatten());
    let native = |w: Option<&Vec<Option<u32>>>| w.and_then(|v| v.get(1).copied().flatten());
    let widths = raw.vector_widths_preferred_native.as_ref();
    let (float, half) = (
        widths.and_then(|w| w.float.as_ref()),
        widths.and_then(|w| w.half.as_ref()),
    );
    Ok(DeviceProfile {
        image_support: raw.image_support,
        image_max_buffer_pixels: raw.image_max_buffer_size_pixels,
        preferred_vector_width_float: preferred(float),
        preferred_vector_width_half: preferred(half),
        native_vector_width_float: native(float),
        native_vector_width_half: native(half),
        name,
        source: raw.source,
        vendor: raw.vendor,
        platform_name: raw.platform_name,
        device_name: raw.device_name,
        device_version: raw.device_version,
        driver_version: raw.driver_version,
        opencl_c_version: raw.opencl_c_version,
        compute_units: raw.max_compute_units,
        max_clock_mhz: raw.max_clock_mhz,
        limits,
        extensions,
        extensions_complete: raw.extensions_complete,
    })
}

/// Adds every `"cl_…": true` found anywhere in the file (`fp16.cl_khr_fp16`, `subgroups.cl_khr_subgroups`,
/// `cl_qcom_large_buffer`, …): some sources show a flag without a full extension list.
fn collect_flags(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key.starts_with("cl_") && *v == Value::Bool(true) {
                    into.push(key.clone());
                }
                collect_flags(v, into);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_flags(v, into)),
        _ => {}
    }
}

/// Refuses limits no device has: zero sizes, more than three work-item dimensions, an alignment that is not a
/// whole number of bytes, a largest allocation above the global memory.
fn check_limits(limits: &ProfileLimits, origin: &str) -> Result<(), ProfileError> {
    let positive = [
        ("max_mem_alloc_size", limits.max_alloc_bytes),
        ("global_mem_size", limits.global_mem_bytes),
        ("local_mem_size", limits.local_mem_bytes),
        (
            "max_work_group_size",
            limits.max_work_group_size.map(|v| v as u64),
        ),
        (
            "mem_base_addr_align_bits",
            limits.base_addr_align_bits.map(u64::from),
        ),
    ];
    for (field, value) in positive {
        if value == Some(0) {
            return Err(invalid(
                origin,
                field,
                "must be at least 1 (or null when unknown)",
            ));
        }
    }
    if let Some(sizes) = &limits.max_work_item_sizes {
        if sizes.is_empty() || sizes.len() > 3 || sizes.contains(&0) {
            return Err(invalid(
                origin,
                "max_work_item_sizes",
                &format!("must be 1 to 3 sizes of at least 1, got {sizes:?}"),
            ));
        }
    }
    if let Some(bits) = limits.base_addr_align_bits {
        if bits % 8 != 0 {
            return Err(invalid(
                origin,
                "mem_base_addr_align_bits",
                &format!("must be a whole number of bytes, got {bits} bits"),
            ));
        }
    }
    if let (Some(alloc), Some(global)) = (limits.max_alloc_bytes, limits.global_mem_bytes) {
        if alloc > global {
            return Err(invalid(
                origin,
                "max_mem_alloc_size",
                &format!("({alloc}) exceeds global_mem_size ({global})"),
            ));
        }
    }
    Ok(())
}

fn invalid(origin: &str, field: &str, reason: &str) -> ProfileError {
    ProfileError::Invalid {
        origin: origin.to_string(),
        field: field.to_string(),
        reason: reason.to_string(),
    }
}
