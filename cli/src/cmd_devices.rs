//! `tlite devices`: every OpenCL platform and device with the capabilities tlite uses, as a table or JSON; with
//! `--profile`, a phone's limits against them (`cmd_devices_profile`).

use clkernels::runtime::{
    list_devices, select, Capabilities, DeviceEntry, DeviceProfile, DeviceSelector, ProfileChoice,
    PROFILE_ENV,
};

/// Arguments of this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Show only this device (index or name substring); the default device is marked either way.
    #[arg(long)]
    device: Option<String>,
    /// Show what tlite would choose on this phone, and what it uses here when it emulates it: a bundled profile
    /// (adreno-740, adreno-750, adreno-830, mali-g610-mc6, mali-g710, phone-min) or the path of a profile JSON.
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<String>,
    /// Print, as Markdown, what tlite would choose on every bundled phone profile for Gemma-2B, Qwen3-1.7B and
    /// Llama-3.2-1B (kernel variants, memory plan at the default context), from shapes alone: the README's tables.
    #[arg(long, conflicts_with_all = ["json", "device", "profile"])]
    phone_plan: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.phone_plan {
        print!("{}", bench::phone_plan::phone_plan_markdown()?);
        return Ok(());
    }
    let entries = list_devices()?;
    let default_index = select(&entries, &DeviceSelector::from_env())?.index;
    let shown: Vec<DeviceEntry> = match &args.device {
        Some(text) => vec![select(&entries, &DeviceSelector::parse(text))?],
        None => entries,
    };
    if let Some(name) = &args.profile {
        let profile = DeviceProfile::resolve(name)?;
        return crate::cmd_devices_profile::run(&profile, &shown, args.json);
    }
    if let Ok(Some(profile)) = ProfileChoice::FromEnv.resolve() {
        eprintln!(
            "note: {PROFILE_ENV}={} narrows these devices when tlite opens them; `tlite devices --profile {}` \
             shows how",
            profile.name, profile.name
        );
    }
    if args.json {
        let list: Vec<_> = shown
            .iter()
            .map(|e| {
                serde_json::json!({
                    "index": e.index,
                    "platform_index": e.platform_index,
                    "default": e.index == default_index,
                    "capabilities": e.caps,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    print_summary(&shown, default_index);
    for entry in &shown {
        println!();
        print_details(entry);
    }
    Ok(())
}

fn yes(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}

/// A byte count in binary units, one decimal.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn subgroups(c: &Capabilities) -> String {
    let mut kinds = Vec::new();
    for (on, name) in [
        (c.subgroups_khr, "khr"),
        (c.subgroups_intel, "intel"),
        (c.subgroups_qcom, "qcom"),
    ] {
        if on {
            kinds.push(name);
        }
    }
    if kinds.is_empty() {
        "no".to_string()
    } else {
        kinds.join("+")
    }
}

fn priority(c: &Capabilities) -> String {
    let mut kinds = Vec::new();
    for (on, name) in [
        (c.khr_priority_hints, "khr"),
        (c.qcom_priority_hint, "qcom"),
        (c.arm_scheduling_controls, "arm-sched"),
    ] {
        if on {
            kinds.push(name);
        }
    }
    if kinds.is_empty() {
        "none".to_string()
    } else {
        kinds.join("+")
    }
}

fn print_summary(entries: &[DeviceEntry], default_index: usize) {
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            let c = &e.caps;
            [
                format!(
                    "{}{}",
                    e.index,
                    if e.index == default_index { "*" } else { "" }
                ),
                c.platform_name.clone(),
                c.name.clone(),
                format!("{:?}", c.kind),
                format!("{:?}", c.vendor_family),
                c.opencl_version_number
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "?".into()),
                format!("{}/{}", yes(c.fp16), subgroups(c)),
                priority(c),
            ]
        })
        .collect();
    let header = [
        "#",
        "platform",
        "device",
        "type",
        "family",
        "OpenCL",
        "fp16/subgroups",
        "priority",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    println!("(* = the device tlite opens by default: $TLITE_DEVICE, else the first GPU, else the first device)");
}

fn print_details(e: &DeviceEntry) {
    let c = &e.caps;
    let subgroup_sizes = if c.subgroup_sizes.is_empty() {
        "unknown".to_string()
    } else {
        c.subgroup_sizes
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let arm_dot = if c.arm_integer_dot_product.is_empty() {
        "no".to_string()
    } else {
        c.arm_integer_dot_product.join(",")
    };
    let rows: Vec<(&str, String)> = vec![
        ("platform", format!("[{}] {} ({})", e.platform_index, c.platform_name, c.platform_version)),
        ("vendor", format!("{} (family {:?}, {:?})", c.vendor, c.vendor_family, c.kind)),
        ("driver", c.driver_version.clone()),
        ("OpenCL / OpenCL C", format!("{} / {}", c.opencl_version, c.opencl_c_version)),
        ("compute units", format!("{} @ {} MHz", c.compute_units, c.max_clock_mhz)),
        ("work-group", format!("max {}, item sizes {:?}", c.max_work_group_size, c.max_work_item_sizes)),
        ("global memory", bytes(c.global_mem_bytes)),
        ("max allocation", bytes(c.max_alloc_bytes)),
        ("local memory", bytes(c.local_mem_bytes)),
        ("base-address align", format!("{} bits", c.base_addr_align_bits)),
        ("cl_khr_fp16", yes(c.fp16).to_string()),
        (
            "subgroups",
            format!(
                "khr {}, intel {}, qcom {}; sizes {subgroup_sizes}; max per work-group {}",
                yes(c.subgroups_khr),
                yes(c.subgroups_intel),
                yes(c.subgroups_qcom),
                c.max_num_subgroups
            ),
        ),
        (
            "priority / hints",
            format!(
                "cl_khr_priority_hints {}, cl_khr_throttle_hints {}, cl_qcom_priority_hint {}, cl_qcom_perf_hint {}",
                yes(c.khr_priority_hints),
                yes(c.khr_throttle_hints),
                yes(c.qcom_priority_hint),
                yes(c.qcom_perf_hint)
            ),
        ),
        (
            "scheduling",
            format!(
                "cl_arm_scheduling_controls {} (caps {:#x}), cl_qcom_recordable_queues {}",
                yes(c.arm_scheduling_controls),
                c.arm_scheduling_capabilities,
                yes(c.qcom_recordable_queues)
            ),
        ),
        ("cl_qcom_large_buffer", yes(c.qcom_large_buffer).to_string()),
        (
            "integer dot product",
            format!(
                "cl_khr_integer_dot_product {}, cl_qcom_dot_product8 {}, arm {arm_dot}",
                yes(c.khr_integer_dot_product),
                yes(c.qcom_dot_product8)
            ),
        ),
        (
            "images",
            if c.image_support {
                format!("yes, image buffers up to {} pixels", c.image_max_buffer_pixels)
            } else {
                "no".to_string()
            },
        ),
        (
            "preferred vectors",
            format!(
                "float {}, half {} (native: float {}, half {})",
                c.preferred_vector_width_float,
                c.preferred_vector_width_half,
                c.native_vector_width_float,
                c.native_vector_width_half
            ),
        ),
        ("mat-vec kernels", crate::cmd_devices_profile::matvec_kernels(c)),
        (
            "decode attention",
            clkernels::kernels::attention::decode_attention_choice(c).1,
        ),
    ];
    println!("[{}] {}", e.index, c.name);
    for (key, value) in rows {
        println!("    {key:<20} {value}");
    }
}
