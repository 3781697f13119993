//! Parsing, the null rule, and the min/merge of a profile with a host device (no OpenCL needed: hosts here are
//! profiles too, seen through [`DeviceProfile::as_device`]).

#![allow(clippy::unwrap_used)]

use super::*;
use crate::runtime::{Capabilities, VendorFamily};

const GIB: u64 = 1 << 30;

/// A made-up desktop device: limits far above any phone's, with sub-groups, fp16 and every priority extension.
fn desktop() -> Capabilities {
    let json = r#"{
        "short_name": "desktop",
        "device_name": "Desktop GPU",
        "vendor": "Example",
        "device_version": "OpenCL 3.0 Example",
        "max_mem_alloc_size": 17179869184,
        "global_mem_size": 68719476736,
        "local_mem_size": 65536,
        "max_work_group_size": 1024,
        "max_work_item_sizes": [1024, 1024, 64],
        "mem_base_addr_align_bits": 512,
        "max_compute_units": 100,
        "extensions": ["cl_khr_fp16", "cl_khr_subgroups", "cl_khr_priority_hints", "cl_arm_scheduling_controls",
                       "cl_khr_byte_addressable_store", "cl_qcom_large_buffer"],
        "extensions_complete": true
    }"#;
    let mut caps = DeviceProfile::from_json(json, "test")
        .unwrap()
        .as_device()
        .unwrap();
    caps.profile = None;
    caps.max_num_subgroups = 32;
    caps.subgroup_sizes = vec![32];
    caps
}

#[test]
fn every_bundled_profile_parses_under_its_own_name() {
    let profiles = DeviceProfile::bundled().unwrap();
    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, DeviceProfile::bundled_names());
    for p in &profiles {
        assert!(!p.extensions.is_empty(), "{}: no extension at all", p.name);
        assert!(
            p.extensions.windows(2).all(|w| w[0] < w[1]),
            "{}: unsorted",
            p.name
        );
        // Every bundled profile is a phone: the null rule leaves no limit unknown.
        let (limits, _) = p.limits_in_effect().unwrap();
        assert!(limits.max_alloc_bytes.is_some() && limits.global_mem_bytes.is_some());
        assert!(limits.local_mem_bytes.is_some() && limits.max_work_group_size.is_some());
        assert!(limits.max_work_item_sizes.is_some() && limits.base_addr_align_bits.is_some());
    }
}

#[test]
fn phone_min_states_every_limit_and_the_stated_choices() {
    let p = DeviceProfile::phone_min().unwrap();
    let (limits, taken) = p.limits_in_effect().unwrap();
    assert!(taken.is_empty());
    assert_eq!(limits.max_alloc_bytes, Some(GIB));
    assert_eq!(limits.local_mem_bytes, Some(32 * 1024));
    assert_eq!(limits.max_work_group_size, Some(256));
    for absent in [
        "cl_khr_subgroups",
        "cl_qcom_large_buffer",
        "cl_khr_priority_hints",
        "cl_qcom_priority_hint",
    ] {
        assert!(!p.has_extension(absent), "{absent}");
    }
    // The most restrictive value known: no bundled phone shows a smaller one.
    for other in DeviceProfile::bundled().unwrap() {
        let l = &other.limits;
        assert!(l.max_alloc_bytes.is_none_or(|v| v >= GIB), "{}", other.name);
        assert!(
            l.local_mem_bytes.is_none_or(|v| v >= 32 * 1024),
            "{}",
            other.name
        );
        assert!(l
            .global_mem_bytes
            .is_none_or(|v| v >= limits.global_mem_bytes.unwrap()));
        assert!(l.base_addr_align_bits.is_none_or(|v| v <= 1024));
    }
}

#[test]
fn nulls_are_unknown_and_take_phone_mins_values() {
    let a740 = DeviceProfile::named("adreno-740").unwrap();
    assert_eq!(a740.limits, ProfileLimits::default());
    let (limits, taken) = a740.limits_in_effect().unwrap();
    assert_eq!(taken, LIMIT_FIELDS.to_vec());
    assert_eq!(limits, DeviceProfile::phone_min().unwrap().limits);

    let a750 = DeviceProfile::named("adreno-750").unwrap();
    let (limits, taken) = a750.limits_in_effect().unwrap();
    assert_eq!(
        limits.max_work_group_size,
        Some(1024),
        "the dump's own value wins"
    );
    assert_eq!(limits.global_mem_bytes, Some(5_814_714_368));
    assert_eq!(limits.max_work_item_sizes, Some(vec![1024; 3]));
    assert_eq!(
        taken,
        vec!["max_work_item_sizes", "mem_base_addr_align_bits"]
    );
}

#[test]
fn extensions_come_from_the_list_and_from_flags() {
    // adreno-830 has no list, only the ggml log's fp16 flag.
    let a830 = DeviceProfile::named("adreno-830").unwrap();
    assert_eq!(a830.extensions, vec!["cl_khr_fp16".to_string()]);
    // mali-g710's partial list, plus the flags and versioned extensions it shows.
    let g710 = DeviceProfile::named("mali-g710").unwrap();
    assert!(g710.has_extension("cl_arm_scheduling_controls"));
    assert!(g710.has_extension("cl_khr_command_buffer"));
    assert!(!g710.extensions_complete);
    // Not seen in adreno-750's cut-off list: treated as absent.
    let a750 = DeviceProfile::named("adreno-750").unwrap();
    assert!(a750.has_extension("cl_khr_subgroups") && a750.has_extension("cl_khr_fp16"));
    assert!(!a750.has_extension("cl_qcom_large_buffer"));
}

#[test]
fn applying_takes_the_stricter_limit_and_the_common_extensions() {
    let host = desktop();
    let a750 = DeviceProfile::named("adreno-750").unwrap();
    let caps = a750.apply(&host).unwrap();
    assert_eq!(caps.max_alloc_bytes, GIB);
    assert_eq!(caps.global_mem_bytes, 5_814_714_368);
    assert_eq!(caps.local_mem_bytes, 32 * 1024);
    assert_eq!(
        caps.max_work_group_size, 1024,
        "the host's 1024 equals the phone's"
    );
    // The work-item sizes the dump does not show follow its work-group maximum; the host's 64 is already lower.
    assert_eq!(caps.max_work_item_sizes, vec![1024, 1024, 64]);
    // Alignment: the coarser of 512 (host) and 1024 (phone-min's, for the unknown value).
    assert_eq!(caps.base_addr_align_bits, 1024);
    assert_eq!(caps.profile.as_deref(), Some("adreno-750"));
    assert_eq!(caps.name, host.name, "the device stays the host's");
    assert_eq!(caps.vendor_family, host.vendor_family);
    // Both have fp16 and khr sub-groups; only the host has the priority and Arm extensions and the large buffer.
    assert!(caps.fp16 && caps.subgroups_khr);
    assert_eq!(caps.subgroup_sizes, vec![32]);
    assert!(!caps.khr_priority_hints && !caps.arm_scheduling_controls && !caps.qcom_large_buffer);
    assert_eq!(caps.arm_scheduling_capabilities, 0);
    assert!(caps.extensions.iter().all(|e| a750.has_extension(e)));
    assert!(caps.extensions.iter().all(|e| host.has_extension(e)));
}

#[test]
fn a_profile_never_raises_a_limit_nor_adds_an_extension() {
    // A host below the phone everywhere: nothing changes but the extensions the phone lacks.
    let mut host = desktop();
    host.max_alloc_bytes = 1 << 20;
    host.global_mem_bytes = 1 << 24;
    host.local_mem_bytes = 1024;
    host.max_work_group_size = 64;
    host.max_work_item_sizes = vec![64, 64, 64];
    host.extensions.retain(|e| e != "cl_khr_fp16");
    host.derive_extension_flags();
    for profile in DeviceProfile::bundled().unwrap() {
        let caps = profile.apply(&host).unwrap();
        assert_eq!(caps.max_alloc_bytes, 1 << 20, "{}", profile.name);
        assert_eq!(caps.global_mem_bytes, 1 << 24);
        assert_eq!(caps.local_mem_bytes, 1024);
        assert_eq!(caps.max_work_group_size, 64);
        assert_eq!(caps.max_work_item_sizes, vec![64, 64, 64]);
        assert!(
            !caps.fp16,
            "{}: the phone's fp16 must not appear",
            profile.name
        );
        assert!(caps.extensions.iter().all(|e| host.has_extension(e)));
    }
}

#[test]
fn without_sub_groups_in_the_profile_core_sub_groups_go_too() {
    let caps = DeviceProfile::phone_min()
        .unwrap()
        .apply(&desktop())
        .unwrap();
    assert!(!caps.has_subgroups());
    assert_eq!(caps.max_num_subgroups, 0);
    assert!(caps.subgroup_sizes.is_empty());
    assert!(!caps
        .defines()
        .iter()
        .any(|(n, _)| n.starts_with("TLITE_HAS_SUBGROUPS")));
    assert_eq!(caps.max_work_group_size, 256);
}

#[test]
fn unknown_host_limits_take_the_profiles() {
    let mut host = desktop();
    host.max_alloc_bytes = 0;
    host.local_mem_bytes = 0;
    host.max_work_item_sizes.clear();
    let caps = DeviceProfile::phone_min().unwrap().apply(&host).unwrap();
    assert_eq!(caps.max_alloc_bytes, GIB);
    assert_eq!(caps.local_mem_bytes, 32 * 1024);
    assert_eq!(caps.max_work_item_sizes, vec![256, 256, 256]);
}

#[test]
fn the_phone_on_its_own_is_recognised_and_chooses_its_vendor_path() {
    let a740 = DeviceProfile::named("adreno-740")
        .unwrap()
        .as_device()
        .unwrap();
    assert_eq!(a740.vendor_family, VendorFamily::Adreno);
    assert!(a740.subgroups_qcom && a740.qcom_priority_hint && a740.qcom_large_buffer && a740.fp16);
    let g610 = DeviceProfile::named("mali-g610-mc6")
        .unwrap()
        .as_device()
        .unwrap();
    assert_eq!(g610.vendor_family, VendorFamily::Mali);
    assert!(g610.arm_scheduling_controls && g610.khr_priority_hints && g610.subgroups_khr);
    assert_eq!(g610.max_alloc_bytes, 7_797_280_768);
    let g710 = DeviceProfile::named("mali-g710")
        .unwrap()
        .as_device()
        .unwrap();
    assert_eq!(g710.vendor_family, VendorFamily::Mali);
}

#[test]
fn bad_names_and_bad_json_are_clear_errors() {
    let e = DeviceProfile::resolve("adreno-999")
        .unwrap_err()
        .to_string();
    for name in DeviceProfile::bundled_names() {
        assert!(e.contains(name), "{e}");
    }
    assert!(e.contains("adreno-999"), "{e}");
    assert!(
        DeviceProfile::named("ADRENO-750").is_ok(),
        "names are case-insensitive"
    );

    let cases = [
        ("not json", "not valid profile JSON"),
        ("[1, 2]", "must be a JSON object"),
        (r#"{"max_mem_alloc_size": 1}"#, "short_name"),
        (
            r#"{"short_name": "x", "max_mem_alloc_size": "1GiB"}"#,
            "invalid type",
        ),
        (
            r#"{"short_name": "x", "local_mem_size": 0}"#,
            "local_mem_size",
        ),
        (
            r#"{"short_name": "x", "max_work_item_sizes": [1, 2, 3, 4]}"#,
            "max_work_item_sizes",
        ),
        (
            r#"{"short_name": "x", "mem_base_addr_align_bits": 12}"#,
            "whole number of bytes",
        ),
        (
            r#"{"short_name": "x", "max_mem_alloc_size": 9, "global_mem_size": 8}"#,
            "exceeds global_mem_size",
        ),
        (
            r#"{"short_name": "x", "extensions": ["fp16"]}"#,
            "no OpenCL extension name",
        ),
        (
            r#"{"short_name": "x", "max_work_group_size": -1}"#,
            "invalid value",
        ),
    ];
    for (json, want) in cases {
        let e = DeviceProfile::from_json(json, "my.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains(want) && e.contains("my.json"), "{json}: {e}");
    }
}

#[test]
fn a_json_path_is_read_and_none_means_no_profile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("myphone.json");
    std::fs::write(
        &path,
        r#"{"short_name": "myphone", "max_mem_alloc_size": 268435456, "extensions": ["cl_khr_fp16"]}"#,
    )
    .unwrap();
    let p = DeviceProfile::resolve(path.to_str().unwrap()).unwrap();
    assert_eq!(p.name, "myphone");
    let (limits, taken) = p.limits_in_effect().unwrap();
    assert_eq!(limits.max_alloc_bytes, Some(256 << 20));
    assert!(!taken.contains(&"max_mem_alloc_size") && taken.contains(&"local_mem_size"));
    assert!(matches!(
        ProfileChoice::parse(path.to_str().unwrap()).unwrap(),
        ProfileChoice::Use(_)
    ));
    assert_eq!(ProfileChoice::parse("none").unwrap(), ProfileChoice::Off);
    assert_eq!(ProfileChoice::parse(" ").unwrap(), ProfileChoice::Off);
    assert_eq!(ProfileChoice::Off.resolve().unwrap(), None);
    let missing = dir.path().join("absent.json");
    assert!(matches!(
        DeviceProfile::resolve(missing.to_str().unwrap()),
        Err(ProfileError::Unknown { .. })
    ));
}

#[test]
fn images_and_the_phones_family_follow_the_profile() {
    // Adreno 750's source does not show image support but lists image extensions: images, at the spec's minimum.
    let adreno = DeviceProfile::named("adreno-750").unwrap();
    assert_eq!(
        adreno.images_in_effect(),
        (true, SPEC_MIN_IMAGE_BUFFER_PIXELS)
    );
    assert_eq!(adreno.family(), VendorFamily::Adreno);
    // Mali G710's dump shows its image-buffer limit.
    let mali = DeviceProfile::named("mali-g710").unwrap();
    assert_eq!(mali.images_in_effect(), (true, 65536));
    assert_eq!(mali.family(), VendorFamily::Mali);
    let phone = mali.as_device().unwrap();
    assert_eq!(phone.profile_family, Some(VendorFamily::Mali));
    assert_eq!(phone.target_family(), VendorFamily::Mali);
    // Applied to a host: the family stays the host's, the target is the phone's, the image limit the lower.
    let mut host = desktop();
    host.image_support = true;
    host.image_max_buffer_pixels = 1 << 28;
    let emulated = adreno.apply(&host).unwrap();
    assert_eq!(emulated.vendor_family, host.vendor_family);
    assert_eq!(emulated.target_family(), VendorFamily::Adreno);
    assert_eq!(
        emulated.image_max_buffer_pixels,
        SPEC_MIN_IMAGE_BUFFER_PIXELS
    );
    // A profile that says it has no images takes them away.
    let json = r#"{"short_name": "noimg", "vendor": "Qualcomm", "image_support": false, "extensions": ["cl_khr_fp16"]}"#;
    let none = DeviceProfile::from_json(json, "test").unwrap();
    let emulated = none.apply(&host).unwrap();
    assert!(!emulated.image_support);
    assert_eq!(emulated.image_max_buffer_pixels, 0);
}

#[test]
fn vector_widths_are_the_phones_and_null_is_unknown() {
    // Adreno 740's dump shows [preferred, native] pairs; the Mali dumps show null for every type.
    let adreno = DeviceProfile::named("adreno-740").unwrap();
    assert_eq!(
        (
            adreno.preferred_vector_width_float,
            adreno.native_vector_width_float
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        (
            adreno.preferred_vector_width_half,
            adreno.native_vector_width_half
        ),
        (Some(1), Some(1))
    );
    let mali = DeviceProfile::named("mali-g710").unwrap();
    assert_eq!(mali.preferred_vector_width_float, None);
    assert_eq!(mali.native_vector_width_float, None);
    // Applied to a host, the widths are the phone's, never the host's: 0 (unknown) where the profile shows none.
    let mut host = desktop();
    (
        host.preferred_vector_width_float,
        host.native_vector_width_float,
    ) = (8, 8);
    (
        host.preferred_vector_width_half,
        host.native_vector_width_half,
    ) = (16, 16);
    let emulated = mali.apply(&host).unwrap();
    assert_eq!(
        [
            emulated.preferred_vector_width_float,
            emulated.native_vector_width_float,
            emulated.preferred_vector_width_half,
            emulated.native_vector_width_half
        ],
        [0; 4]
    );
    let emulated = adreno.apply(&host).unwrap();
    assert_eq!(
        (
            emulated.preferred_vector_width_float,
            emulated.native_vector_width_half
        ),
        (1, 1)
    );
    // A pair is [preferred, native]; a null or missing member is unknown.
    for half in ["[8, null]", "[8]"] {
        let json = format!(
            r#"{{"short_name": "w", "vector_widths_preferred_native": {{"float": [4, 2], "half": {half}}}}}"#
        );
        let w = DeviceProfile::from_json(&json, "test").unwrap();
        assert_eq!(
            (
                w.preferred_vector_width_float,
                w.native_vector_width_float,
                w.preferred_vector_width_half,
                w.native_vector_width_half
            ),
            (Some(4), Some(2), Some(8), None)
        );
    }
}
