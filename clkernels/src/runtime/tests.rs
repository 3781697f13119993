//! Runtime tests on the machine's OpenCL device (PoCL on the development box).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use rand::Rng;

use super::*;

const AXPY: ProgramSource = ProgramSource {
    name: "test_axpy",
    source: r#"
#if !defined(TLITE_VENDOR_ADRENO) && !defined(TLITE_VENDOR_MALI) && !defined(TLITE_VENDOR_NVIDIA) \
    && !defined(TLITE_VENDOR_INTEL) && !defined(TLITE_VENDOR_POCL) && !defined(TLITE_VENDOR_OTHER)
#error "no vendor define"
#endif
#ifdef TLITE_MAX_WORK_GROUP_SIZE
#error "a capability define no kernel reads is passed"
#endif
kernel void axpy(global float* y, global const float* x, const float a) {
    size_t i = get_global_id(0);
    y[i] = a * x[i] + y[i] + OFFSET;
}
"#,
};

fn cache_opts(dir: &std::path::Path, priority: QueuePriority) -> GpuOptions {
    GpuOptions {
        priority,
        cache: CachePolicy::Dir(dir.to_path_buf()),
        readback: BinaryReadback::Always,
        ..GpuOptions::default()
    }
}

fn random_vec(len: usize) -> Vec<f32> {
    let mut rng = rand::rng();
    (0..len).map(|_| rng.random_range(-4.0f32..4.0)).collect()
}

/// Runs `axpy` with OFFSET=0.5 on fresh random data and compares with plain Rust (tolerance 1e-5 relative).
fn check_axpy(gpu: &Gpu, program: &opencl3::program::Program) {
    let n = 1000;
    let (x, y) = (random_vec(n), random_vec(n));
    let a = rand::rng().random_range(-2.0f32..2.0);
    let xb = DeviceBuffer::from_slice(gpu, &x).unwrap();
    let yb = DeviceBuffer::from_slice(gpu, &y).unwrap();
    let kernel = opencl3::kernel::Kernel::create(program, "axpy").unwrap();
    // SAFETY: argument types match the kernel signature and the buffers hold n elements.
    unsafe {
        opencl3::kernel::ExecuteKernel::new(&kernel)
            .set_arg(yb.raw())
            .set_arg(xb.raw())
            .set_arg(&a)
            .set_global_work_size(n)
            .enqueue_nd_range(gpu.queue())
            .unwrap();
    }
    gpu.finish().unwrap();
    let got = yb.read(gpu).unwrap();
    for i in 0..n {
        let want = a * x[i] + y[i] + 0.5;
        assert!(
            (got[i] - want).abs() <= 1e-5 * want.abs().max(1.0),
            "i={i}: {} vs {want}",
            got[i]
        );
    }
}

#[test]
fn capabilities_are_read_and_serialise() {
    let gpu = Gpu::open_default().unwrap();
    let caps = gpu.caps();
    assert!(!caps.name.is_empty());
    assert!(caps.compute_units > 0 && caps.max_work_group_size > 0 && caps.max_alloc_bytes > 0);
    assert!(
        caps.base_addr_align_bits >= 8,
        "{}",
        caps.base_addr_align_bits
    );
    assert!(
        caps.opencl_version_number.is_some(),
        "{}",
        caps.opencl_version
    );
    if caps.platform_name.contains("Portable Computing Language") {
        assert_eq!(caps.vendor_family, VendorFamily::Pocl);
        assert!(caps.defines().iter().any(|(n, _)| n == "TLITE_VENDOR_POCL"));
    }
    assert_eq!(
        caps.fp16,
        caps.defines().iter().any(|(n, _)| n == "TLITE_HAS_FP16")
    );
    let json = serde_json::to_value(caps).unwrap();
    assert_eq!(json["name"], caps.name.as_str());
    assert!(json["khr_priority_hints"].is_boolean());
}

#[test]
fn buffers_round_trip_and_fill() {
    let gpu = Gpu::open_default().unwrap();
    let data = random_vec(777);
    let mut buf = DeviceBuffer::from_slice(&gpu, &data).unwrap();
    assert_eq!(buf.len(), 777);
    assert_eq!(buf.read(&gpu).unwrap(), data);
    let other = random_vec(777);
    buf.write(&gpu, &other).unwrap();
    assert_eq!(buf.read(&gpu).unwrap(), other);
    let byte = rand::rng().random_range(1u8..=255);
    buf.fill_bytes(&gpu, byte).unwrap();
    let poisoned = f32::from_bits(u32::from_ne_bytes([byte; 4]));
    assert!(buf
        .read(&gpu)
        .unwrap()
        .iter()
        .all(|v| v.to_bits() == poisoned.to_bits()));
    assert!(matches!(
        buf.write(&gpu, &other[..5]),
        Err(ClError::LengthMismatch {
            expected: 777,
            got: 5,
            ..
        })
    ));
    // A device copy lands at the start of a longer buffer and leaves its tail alone; a shorter one is refused.
    let mut longer = DeviceBuffer::from_slice(&gpu, &random_vec(800)).unwrap();
    let tail = longer.read(&gpu).unwrap()[777..].to_vec();
    let source = DeviceBuffer::from_slice(&gpu, &other).unwrap();
    source.copy_to(&gpu, &mut longer).unwrap();
    let copied = longer.read(&gpu).unwrap();
    assert_eq!((&copied[..777], &copied[777..]), (&other[..], &tail[..]));
    assert!(matches!(
        longer.copy_to(&gpu, &mut buf),
        Err(ClError::LengthMismatch {
            expected: 800,
            got: 777,
            ..
        })
    ));
    assert!(matches!(
        DeviceBuffer::<f32>::new(&gpu, 0),
        Err(ClError::InvalidBufferSize { .. })
    ));
    assert!(matches!(
        DeviceBuffer::<u8>::new(&gpu, usize::MAX),
        Err(ClError::AllocationTooLarge { .. })
    ));
    assert!(matches!(
        DeviceBuffer::<f32>::new(&gpu, usize::MAX),
        Err(ClError::InvalidBufferSize { .. })
    ));
}

/// Sub-buffers read and write their own region of the parent; a region outside the parent or off the device's
/// base-address alignment is refused.
#[test]
fn sub_buffers_see_their_region_of_the_parent() {
    let gpu = Gpu::open_default().unwrap();
    let align = (gpu.caps().base_addr_align_bits / 8 / 4).max(1) as usize;
    let parent_data = random_vec(6 * align);
    let parent = DeviceBuffer::from_slice(&gpu, &parent_data).unwrap();
    let start = 2 * align + rand::rng().random_range(0..2) * align;
    let mut sub = parent.sub_buffer(&gpu, start, 2 * align).unwrap();
    assert_eq!(sub.len(), 2 * align);
    assert_eq!(
        sub.read(&gpu).unwrap(),
        parent_data[start..start + 2 * align]
    );
    let fresh = random_vec(2 * align);
    sub.write(&gpu, &fresh).unwrap();
    let mut want = parent_data.clone();
    want[start..start + 2 * align].copy_from_slice(&fresh);
    assert_eq!(parent.read(&gpu).unwrap(), want);
    for (offset, len) in [(5 * align, 2 * align), (0, 0), (usize::MAX, 1)] {
        assert!(matches!(
            parent.sub_buffer(&gpu, offset, len),
            Err(ClError::InvalidSubBuffer { .. })
        ));
    }
    if align > 1 {
        let e = parent.sub_buffer(&gpu, 1, 1).unwrap_err().to_string();
        assert!(e.contains("base-address alignment"), "{e}");
    }
}

#[test]
fn second_build_comes_from_the_disk_cache_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let first = Gpu::open_with(&cache_opts(dir.path(), QueuePriority::Normal)).unwrap();
    let (p1, origin1) = first
        .program_with_origin(&AXPY, &[("OFFSET", "0.5f")])
        .unwrap();
    assert_eq!(origin1, BuildOrigin::Compiled);
    check_axpy(&first, &p1);
    let (_, again) = first
        .program_with_origin(&AXPY, &[("OFFSET", "0.5f")])
        .unwrap();
    assert_eq!(again, BuildOrigin::Memory);

    // A fresh Gpu (as a new process would be) loads the binary instead of compiling.
    let second = Gpu::open_with(&cache_opts(dir.path(), QueuePriority::Normal)).unwrap();
    let (p2, origin2) = second
        .program_with_origin(&AXPY, &[("OFFSET", "0.5f")])
        .unwrap();
    assert_eq!(origin2, BuildOrigin::DiskCache);
    assert_eq!(second.build_stats().compiled, 0);
    assert_eq!(second.build_stats().disk_hits, 1);
    check_axpy(&second, &p2);

    // Other options are another entry.
    let (_, origin3) = second
        .program_with_origin(&AXPY, &[("OFFSET", "1.5f")])
        .unwrap();
    assert_eq!(origin3, BuildOrigin::Compiled);
}

#[test]
fn programs_build_in_parallel_in_request_order_and_then_come_from_memory() {
    let gpu = Gpu::open_with(&GpuOptions {
        cache: CachePolicy::Disabled,
        ..GpuOptions::default()
    })
    .unwrap();
    let offsets = ["0.5f", "1.5f", "2.5f"];
    let defines: Vec<[(&str, &str); 1]> = offsets.iter().map(|o| [("OFFSET", *o)]).collect();
    let requests: Vec<(&ProgramSource, &[(&str, &str)])> =
        defines.iter().map(|d| (&AXPY, &d[..])).collect();
    let programs = gpu.programs(&requests).unwrap();
    assert_eq!(gpu.build_stats().compiled, 3);
    // Each result is the program of its own request: OFFSET 0.5 is the one check_axpy expects.
    check_axpy(&gpu, &programs[0]);
    for (d, p) in defines.iter().zip(&programs) {
        let (again, origin) = gpu.program_with_origin(&AXPY, d).unwrap();
        assert_eq!(origin, BuildOrigin::Memory);
        assert!(Arc::ptr_eq(&again, p));
    }
    let broken = ProgramSource {
        name: "broken",
        source: "kernel void k(global float* x) { x[0] = undefined_name; }",
    };
    let mixed: Vec<(&ProgramSource, &[(&str, &str)])> = vec![(&AXPY, &defines[0]), (&broken, &[])];
    assert!(matches!(gpu.programs(&mixed), Err(ClError::Build { .. })));
}

#[test]
fn drivers_that_cache_programs_get_markers_not_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let gpu = Gpu::open_with(&GpuOptions {
        cache: CachePolicy::Dir(dir.path().to_path_buf()),
        ..GpuOptions::default()
    })
    .unwrap();
    let (p, origin) = gpu
        .program_with_origin(&AXPY, &[("OFFSET", "0.5f")])
        .unwrap();
    assert_eq!(origin, BuildOrigin::Compiled);
    check_axpy(&gpu, &p);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let want = if gpu.caps().driver_caches_programs() {
        ".built"
    } else {
        ".clbin"
    };
    assert!(names[0].ends_with(want), "{names:?} on {}", gpu.caps().name);
}

#[test]
fn corrupt_or_stale_cache_entries_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let defines = [("OFFSET", "0.5f")];
    let first = Gpu::open_with(&cache_opts(dir.path(), QueuePriority::Normal)).unwrap();
    first.program(&AXPY, &defines).unwrap();
    let cache = first.binary_cache().unwrap();
    let entries: Vec<_> = std::fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let path = &entries[0];
    let mut bad = std::fs::read(path).unwrap();

    // Corrupt one byte of the binary.
    let i = rand::rng().random_range(100..bad.len());
    bad[i] ^= 0xff;
    std::fs::write(path, &bad).unwrap();
    let gpu = Gpu::open_with(&cache_opts(dir.path(), QueuePriority::Normal)).unwrap();
    let (p, origin) = gpu.program_with_origin(&AXPY, &defines).unwrap();
    assert_eq!(origin, BuildOrigin::Compiled);
    assert_eq!(gpu.build_stats().rejected_entries, 1);
    check_axpy(&gpu, &p);
    // The rebuilt entry replaced the corrupt one: the next process loads it.
    let next = Gpu::open_with(&cache_opts(dir.path(), QueuePriority::Normal)).unwrap();
    assert_eq!(
        next.program_with_origin(&AXPY, &defines).unwrap().1,
        BuildOrigin::DiskCache
    );

    // A stale entry: a valid file for other options, renamed to this key's name.
    let (_, _) = gpu
        .program_with_origin(&AXPY, &[("OFFSET", "2.0f")])
        .unwrap();
    let other = std::fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p != path)
        .unwrap();
    std::fs::rename(&other, path).unwrap();
    let gpu = Gpu::open_with(&cache_opts(dir.path(), QueuePriority::Normal)).unwrap();
    let (p, origin) = gpu.program_with_origin(&AXPY, &defines).unwrap();
    assert_eq!(origin, BuildOrigin::Compiled);
    check_axpy(&gpu, &p);
}

#[test]
fn build_failures_carry_the_log_and_bad_defines_are_refused() {
    let gpu = Gpu::open_with(&GpuOptions {
        cache: CachePolicy::Disabled,
        ..GpuOptions::default()
    })
    .unwrap();
    let broken = ProgramSource {
        name: "broken",
        source: "kernel void k(global float* x) { x[0] = undefined_name; }",
    };
    match gpu.program(&broken, &[]) {
        Err(ClError::Build {
            program, log, name, ..
        }) => {
            assert_eq!(program, "broken");
            assert!(log.contains("undefined_name"), "{log}");
            assert_eq!(name, "CL_BUILD_PROGRAM_FAILURE");
        }
        other => panic!("expected a build error, got {other:?}"),
    }
    assert!(matches!(
        gpu.program(&AXPY, &[("OFF SET", "1")]),
        Err(ClError::InvalidDefine { .. })
    ));
    assert!(matches!(
        gpu.program(&AXPY, &[("OFFSET", "1 -cl-opt-disable")]),
        Err(ClError::InvalidDefine { .. })
    ));
}

#[test]
fn low_and_high_priority_fall_back_cleanly_where_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    for priority in [QueuePriority::Low, QueuePriority::High] {
        let gpu = Gpu::open_with(&cache_opts(dir.path(), priority)).unwrap();
        let report = gpu.priority_applied();
        assert_eq!(report.requested, priority);
        let caps = gpu.caps();
        let supported =
            caps.khr_priority_hints || caps.qcom_priority_hint || caps.arm_scheduling_controls;
        if !supported {
            assert!(report.applied.is_empty(), "{report:?}");
            assert!(!report.is_effective());
        }
        let program = gpu.program(&AXPY, &[("OFFSET", "0.5f")]).unwrap();
        check_axpy(&gpu, &program);
    }
    let normal = Gpu::open_with(&cache_opts(dir.path(), QueuePriority::Normal)).unwrap();
    assert!(normal.priority_applied().is_effective());
    assert!(normal.priority_applied().applied.is_empty());
}

#[test]
fn devices_are_selected_by_index_or_name() {
    let entries = list_devices().unwrap();
    assert!(!entries.is_empty());
    let last = entries.last().unwrap();
    assert_eq!(
        select(&entries, &DeviceSelector::Index(last.index))
            .unwrap()
            .index,
        last.index
    );
    let fragment: String = last
        .caps
        .name
        .chars()
        .skip(1)
        .take(6)
        .collect::<String>()
        .to_uppercase();
    let by_name = select(&entries, &DeviceSelector::Name(fragment)).unwrap();
    assert!(by_name.caps.name.to_uppercase().contains(
        &last
            .caps
            .name
            .chars()
            .skip(1)
            .take(6)
            .collect::<String>()
            .to_uppercase()
    ));
    let missing = select(&entries, &DeviceSelector::Name("no-such-device-xyz".into())).unwrap_err();
    assert!(missing.to_string().contains("[0]"), "{missing}");
    assert!(select(&entries, &DeviceSelector::Index(entries.len())).is_err());
    assert_eq!(DeviceSelector::parse("1"), DeviceSelector::Index(1));
    assert_eq!(
        DeviceSelector::parse("adreno"),
        DeviceSelector::Name("adreno".into())
    );
    assert_eq!(DeviceSelector::parse(" "), DeviceSelector::Default);
    assert_eq!("LOW".parse::<QueuePriority>(), Ok(QueuePriority::Low));
    assert!("urgent".parse::<QueuePriority>().is_err());
}

#[test]
fn priority_properties_follow_the_extensions() {
    let mut caps = Gpu::open_default().unwrap().caps().clone();
    caps.khr_priority_hints = true;
    caps.qcom_priority_hint = true;
    caps.qcom_perf_hint = true;
    caps.arm_scheduling_controls = true;
    caps.arm_scheduling_capabilities = cl_consts::CL_DEVICE_SCHEDULING_COMPUTE_UNIT_LIMIT_ARM;
    caps.compute_units = 10;
    let (q, used) = priority::queue_properties(&caps, QueuePriority::Low);
    assert_eq!(
        q,
        vec![
            cl_consts::CL_QUEUE_PRIORITY_KHR,
            cl_consts::CL_QUEUE_PRIORITY_LOW_KHR,
            cl_consts::CL_QUEUE_COMPUTE_UNIT_LIMIT_ARM,
            5,
            0
        ]
    );
    assert_eq!(used.len(), 2);
    let (c, used) = priority::context_properties(&caps, QueuePriority::Low, PerfHint::High);
    assert_eq!(
        c,
        vec![
            cl_consts::CL_CONTEXT_PRIORITY_HINT_QCOM,
            cl_consts::CL_PRIORITY_HINT_LOW_QCOM,
            cl_consts::CL_CONTEXT_PERF_HINT_QCOM,
            cl_consts::CL_PERF_HINT_HIGH_QCOM,
            0
        ]
    );
    assert_eq!(
        used,
        vec![
            PriorityMechanism::QcomContextPriority,
            PriorityMechanism::QcomPerfHint
        ]
    );
    assert!(priority::queue_properties(&caps, QueuePriority::Normal)
        .0
        .is_empty());
    let (q, _) = priority::queue_properties(&caps, QueuePriority::High);
    assert_eq!(
        q,
        vec![
            cl_consts::CL_QUEUE_PRIORITY_KHR,
            cl_consts::CL_QUEUE_PRIORITY_HIGH_KHR,
            0
        ]
    );
}

/// Benchmark (prints, asserts only origins): compiling every kernel family vs loading it from the binary cache.
/// `cargo test -p clkernels --release --lib runtime::tests::program_cache_timing -- --ignored --nocapture`
/// (set `POCL_KERNEL_CACHE=0` to keep PoCL's own compiler cache out of the first figure).
#[test]
#[ignore = "benchmark; run by hand"]
fn program_cache_timing() {
    let kernels = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels");
    let read = |file: &str| std::fs::read_to_string(kernels.join(file)).unwrap();
    // As `kernels::program_source!` assembles them.
    let prelude = [
        "vendor/nvidia.cl",
        "vendor/khr_subgroups.cl",
        "vendor/adreno.cl",
        "vendor/portable.cl",
        "common.cl",
    ]
    .map(read)
    .join("\n");
    let families: [(&str, &[&str]); 9] = [
        ("attention", &["attention/attention.cl"]),
        ("matvec", &["matvec/params.cl", "matvec/matvec.cl"]),
        ("matvec_cpu", &["matvec/params.cl", "matvec/cpu.cl"]),
        ("matmul", &["matmul.cl"]),
        ("norm", &["norm.cl"]),
        ("rope", &["rope.cl"]),
        ("embedding", &["embedding.cl"]),
        ("sampling", &["sampling.cl"]),
        ("elementwise", &["elementwise.cl"]),
    ];
    let sources: Vec<ProgramSource> = families
        .iter()
        .map(|(name, files)| {
            let text = [prelude.clone()]
                .into_iter()
                .chain(files.iter().map(|f| read(f)))
                .collect::<Vec<_>>()
                .join("\n");
            ProgramSource {
                name,
                source: Box::leak(text.into_boxed_str()),
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for round in ["compile", "disk cache"] {
        let gpu = Gpu::open_with(&cache_opts(dir.path(), QueuePriority::Normal)).unwrap();
        let started = std::time::Instant::now();
        for src in &sources {
            let (_, origin) = gpu.program_with_origin(src, &[]).unwrap();
            if round == "disk cache" {
                assert_eq!(origin, BuildOrigin::DiskCache, "{}", src.name);
            }
        }
        println!(
            "{round}: {} programs on {} in {:.3} s",
            sources.len(),
            gpu.caps().name,
            started.elapsed().as_secs_f64()
        );
    }
}
