//! `tlite devices --profile NAME`: a phone's limits beside this device's, what tlite would choose on the phone, and
//! what it uses here when it emulates the phone.

use clkernels::kernels::matvec::MatvecConfig;
use clkernels::runtime::{
    mechanisms_for, Capabilities, DeviceEntry, DeviceProfile, PerfHint, QueuePriority,
    VendorFamily, EXTENSIONS_USED, LIMIT_FIELDS,
};
use engine::gpu::{size, MemBudget};

use crate::cmd_devices::bytes;

/// Prints the profile against each device in `shown` (JSON when `json`).
pub fn run(profile: &DeviceProfile, shown: &[DeviceEntry], json: bool) -> anyhow::Result<()> {
    let (limits, assumed) = profile.limits_in_effect()?;
    let phone = profile.as_device()?;
    let emulated: Vec<(usize, Capabilities)> = shown
        .iter()
        .map(|e| Ok((e.index, profile.apply(&e.caps)?)))
        .collect::<Result<_, clkernels::runtime::ProfileError>>()?;
    if json {
        let list: Vec<_> = emulated
            .iter()
            .map(|(index, caps)| {
                let (kernel, why) = MatvecConfig::vendor_choice(caps);
                serde_json::json!({
                    "index": index,
                    "capabilities": caps,
                    "matvec_kernel": kernel,
                    "matvec_kernel_why": why,
                })
            })
            .collect();
        let out = serde_json::json!({
            "profile": profile,
            "limits_in_effect": limits,
            "assumed_from_phone_min": assumed,
            "on_the_phone": {
                "capabilities": phone,
                "defines": phone.defines(),
                "reductions": reductions(&phone),
                "matvec_kernel": MatvecConfig::vendor_choice(&phone).0,
                "matvec_kernel_why": MatvecConfig::vendor_choice(&phone).1,
                "decode_attention": clkernels::kernels::attention::decode_attention_choice(&phone).1,
                "low_priority": low_priority(&phone),
            },
            "emulated": list,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "device profile {} ({})",
        profile.name,
        profile
            .device_name
            .as_deref()
            .unwrap_or("device name not in the source")
    );
    if let Some(source) = &profile.source {
        println!("    source: {source}");
    }
    println!(
        "    {} extensions shown{}",
        profile.extensions.len(),
        if profile.extensions_complete {
            ""
        } else {
            " (the source's list is incomplete: the others count as absent)"
        }
    );
    for (entry, (_, caps)) in shown.iter().zip(&emulated) {
        println!();
        print_limits(entry, caps, &phone, &assumed);
    }
    println!();
    println!("on the phone, tlite would choose:");
    print_choices(&phone);
    for (entry, (_, caps)) in shown.iter().zip(&emulated) {
        println!();
        println!(
            "emulating it on [{}] {} (TLITE_DEVICE_PROFILE={} or --device-profile {}):",
            entry.index, entry.caps.name, profile.name, profile.name
        );
        print_choices(caps);
        let lost: Vec<&str> = EXTENSIONS_USED
            .into_iter()
            .filter(|e| profile.has_extension(e) && !caps.has_extension(e))
            .collect();
        if !lost.is_empty() {
            println!(
                "    {:<20} {} (the phone has them, this device does not: what runs here does without, and \
                 tests compile the phone's paths with stand-ins)",
                "absent here",
                lost.join(" ")
            );
        }
    }
    Ok(())
}

/// The limits table: the phone's, this device's, and what tlite uses (the stricter).
fn print_limits(entry: &DeviceEntry, used: &Capabilities, phone: &Capabilities, assumed: &[&str]) {
    let host = &entry.caps;
    let mark = |field: &str| if assumed.contains(&field) { "*" } else { "" };
    let items = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join("x");
    let rows: [(&str, &str, [String; 3]); 6] = [
        (
            "max allocation",
            LIMIT_FIELDS[0],
            [
                phone.max_alloc_bytes,
                host.max_alloc_bytes,
                used.max_alloc_bytes,
            ]
            .map(bytes),
        ),
        (
            "global memory",
            LIMIT_FIELDS[1],
            [
                phone.global_mem_bytes,
                host.global_mem_bytes,
                used.global_mem_bytes,
            ]
            .map(bytes),
        ),
        (
            "local memory",
            LIMIT_FIELDS[2],
            [
                phone.local_mem_bytes,
                host.local_mem_bytes,
                used.local_mem_bytes,
            ]
            .map(bytes),
        ),
        (
            "max work-group",
            LIMIT_FIELDS[3],
            [
                phone.max_work_group_size,
                host.max_work_group_size,
                used.max_work_group_size,
            ]
            .map(|v| v.to_string()),
        ),
        (
            "work-item sizes",
            LIMIT_FIELDS[4],
            [
                &phone.max_work_item_sizes,
                &host.max_work_item_sizes,
                &used.max_work_item_sizes,
            ]
            .map(|v| items(v)),
        ),
        (
            "base-address align",
            LIMIT_FIELDS[5],
            [
                phone.base_addr_align_bits,
                host.base_addr_align_bits,
                used.base_addr_align_bits,
            ]
            .map(|b| format!("{b} bits")),
        ),
    ];
    println!("limits against [{}] {}:", entry.index, host.name);
    println!(
        "    {:<20} {:<16} {:<16} tlite uses",
        "", "phone", "this device"
    );
    for (label, field, [p, h, u]) in rows {
        println!(
            "    {label:<20} {:<16} {h:<16} {u}",
            format!("{p}{}", mark(field))
        );
    }
    if !assumed.is_empty() {
        println!(
            "    (* not in the source: phone-min's value, the most restrictive known; work-item sizes follow the \
             work-group maximum)"
        );
    }
    let budget = MemBudget::default();
    let mut places = vec![("on the phone", phone.global_mem_bytes)];
    if used.global_mem_bytes != phone.global_mem_bytes {
        places.push(("emulated here", used.global_mem_bytes));
    }
    for (who, global) in places {
        if let Some(b) = budget.bytes(global) {
            println!(
                "    {:<20} {} {who} ({budget} of {} global memory; --mem-budget changes it)",
                "memory budget",
                size(b),
                size(global)
            );
        }
    }
}

/// The choices that follow from capabilities alone.
fn print_choices(caps: &Capabilities) {
    let defines: Vec<String> = caps
        .defines()
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let rows = [
        ("vendor path", format!("{:?}", caps.vendor_family)),
        ("compile defines", defines.join(" ")),
        ("reductions", reductions(caps).to_string()),
        ("mat-vec kernels", matvec_kernels(caps)),
        (
            "decode attention",
            clkernels::kernels::attention::decode_attention_choice(caps).1,
        ),
        (
            "mat-vec products",
            if caps.fp16 {
                "f16 where asked (cl_khr_fp16)".to_string()
            } else {
                "f32 (no cl_khr_fp16)".to_string()
            },
        ),
        ("low-priority queue", low_priority(caps)),
        (
            "largest buffer",
            format!(
                "{} (a larger embedding or output head is split over buffers; a larger layer matrix is an error \
                 before upload)",
                size(caps.max_alloc_bytes)
            ),
        ),
    ];
    for (key, value) in rows {
        println!("    {key:<20} {value}");
    }
}

/// Which decode mat-vec kernels run, and why (`clkernels/src/kernels/matvec/choose.rs`).
pub(crate) fn matvec_kernels(caps: &Capabilities) -> String {
    let (kernel, why) = MatvecConfig::vendor_choice(caps);
    let geometry = MatvecConfig::for_caps(caps);
    let shape = match geometry.cpu {
        Some(_) => String::new(),
        None => format!(
            ", work-group {}, {} rows per {}",
            geometry.work_group,
            geometry.rows_per_group,
            if kernel == clkernels::kernels::matvec::MatvecVendorKernel::Mali {
                "work-item"
            } else {
                "work-group"
            }
        ),
    };
    format!("{kernel:?}: {why}{shape}")
}

/// How work-group reductions are done, as `common.cl` picks from the defines.
fn reductions(caps: &Capabilities) -> &'static str {
    if caps.vendor_family == VendorFamily::Nvidia {
        "NVIDIA warp shuffles through inline PTX"
    } else if caps.has_subgroups() {
        "sub-group built-ins (sub_group_reduce_add)"
    } else if caps.subgroups_qcom {
        "Adreno shuffles (qcom_sub_group_shuffle_down)"
    } else {
        "local-memory tree (no sub-groups)"
    }
}

/// What a low-priority generation queue would use.
fn low_priority(caps: &Capabilities) -> String {
    let used = mechanisms_for(caps, QueuePriority::Low, PerfHint::Unset);
    if used.is_empty() {
        "none: a normal-priority queue".to_string()
    } else {
        used.iter()
            .map(|m| format!("{m:?}"))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}
