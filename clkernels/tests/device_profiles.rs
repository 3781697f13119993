//! The opened device under a device profile: its limits lowered, its extensions narrowed, and every breach of a
//! phone limit that the host driver would allow (a large buffer, a large local array, a wide work-group) an
//! error naming the numbers.
#![allow(clippy::unwrap_used)]

use clkernels::runtime::{
    ClError, DeviceBuffer, DeviceProfile, Gpu, GpuOptions, ProfileChoice, ProgramSource,
};
use opencl3::kernel::Kernel;

fn open(profile: ProfileChoice) -> Gpu {
    Gpu::open_with(&GpuOptions {
        profile,
        ..GpuOptions::default()
    })
    .expect("an OpenCL device (PoCL on the dev box)")
}

fn phone_min() -> Gpu {
    open(ProfileChoice::Use(Box::new(
        DeviceProfile::phone_min().unwrap(),
    )))
}

/// A kernel with a 48 KiB local array: more than any phone here gives, less than PoCL's 1 MiB.
const BIG_LOCAL: ProgramSource = ProgramSource {
    name: "big_local",
    source: r#"
kernel void big_local(global float* out) {
    local float tile[12288];
    uint i = get_local_id(0);
    tile[i] = (float)i;
    barrier(CLK_LOCAL_MEM_FENCE);
    out[get_global_id(0)] = tile[get_local_size(0) - 1 - i];
}
"#,
};

#[test]
fn the_device_takes_the_profiles_limits() {
    let host = open(ProfileChoice::Off);
    let phone = phone_min();
    let (h, p) = (host.caps(), phone.caps());
    assert_eq!(h.profile, None);
    assert_eq!(p.profile.as_deref(), Some("phone-min"));
    assert_eq!(p.max_alloc_bytes, h.max_alloc_bytes.min(1 << 30));
    assert_eq!(p.local_mem_bytes, h.local_mem_bytes.min(32 << 10));
    assert_eq!(p.max_work_group_size, h.max_work_group_size.min(256));
    assert!(!p.has_subgroups() && !p.khr_priority_hints && !p.qcom_large_buffer);
    assert!(p.extensions.iter().all(|e| h.has_extension(e)));
    assert!(p.display_name().ends_with("(as phone-min)"));
}

#[test]
fn a_buffer_over_the_phones_largest_allocation_is_refused_before_the_driver_sees_it() {
    let phone = phone_min();
    let max = phone.caps().max_alloc_bytes;
    let e = DeviceBuffer::<u8>::new(&phone, max as usize + 1).unwrap_err();
    assert!(
        matches!(e, ClError::AllocationTooLarge { bytes, max: m, .. } if bytes == max + 1 && m == max),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&max.to_string()) && text.contains("(as phone-min)"),
        "{text}"
    );
    assert!(phone.check_allocation(max).is_ok());
}

#[test]
fn a_kernel_over_the_phones_local_memory_is_an_error_naming_it() {
    // The host runs it...
    let host = open(ProfileChoice::Off);
    let program = host.program(&BIG_LOCAL, &[]).unwrap();
    let kernel = Kernel::create(&program, "big_local").unwrap();
    let needs = kernel.get_local_mem_size(host.device().id()).unwrap();
    assert!(
        needs >= 48 << 10,
        "the driver reports {needs} bytes of local memory"
    );
    host.check_kernel(&kernel, "big_local").unwrap();
    // ...the phone would not.
    let phone = phone_min();
    let program = phone.program(&BIG_LOCAL, &[]).unwrap();
    let kernel = Kernel::create(&program, "big_local").unwrap();
    let e = phone.check_kernel(&kernel, "big_local").unwrap_err();
    let text = e.to_string();
    for part in [
        "big_local",
        &needs.to_string(),
        "bytes of local memory",
        "allows at most 32768",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
}

#[test]
fn a_work_group_over_the_phones_limits_is_an_error() {
    let phone = phone_min();
    phone.check_work_group("k", &[256]).unwrap();
    phone.check_work_group("k", &[16, 16]).unwrap();
    let e = phone.check_work_group("k", &[512]).unwrap_err().to_string();
    assert!(
        e.contains("512 work-items per group") && e.contains("at most 256"),
        "{e}"
    );
    let e = phone
        .check_work_group("k", &[32, 16])
        .unwrap_err()
        .to_string();
    assert!(e.contains("512 work-items per group"), "{e}");
    // A phone whose work-item sizes are narrower than its work-group.
    let json = r#"{"short_name": "narrow", "max_work_group_size": 256, "max_work_item_sizes": [256, 4, 1]}"#;
    let narrow = open(ProfileChoice::Use(Box::new(
        DeviceProfile::from_json(json, "narrow").unwrap(),
    )));
    let e = narrow
        .check_work_group("k", &[8, 8])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("8 work-items in one dimension") && e.contains("at most 4"),
        "{e}"
    );
}

#[test]
fn a_bad_profile_fails_the_open_with_the_known_names() {
    let e = ProfileChoice::parse("mali-g999").unwrap_err().to_string();
    assert!(e.contains("adreno-750") && e.contains("phone-min"), "{e}");
    let json = r#"{"short_name": "broken", "local_mem_size": 0}"#;
    assert!(DeviceProfile::from_json(json, "broken.json").is_err());
}
