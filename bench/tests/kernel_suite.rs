//! The kernel suite on the test device: every case of the small shapes builds and launches, the timings of a
//! profiled device are finite and positive, a device opened without profiling is refused, and the table's rows
//! come out whole (figures are printed by `tlite bench-kernels`, never asserted).
#![allow(clippy::unwrap_used)]

use bench::copy_bandwidth;
use bench::kernels::sweep::sweeps;
use bench::kernels::table::{header, Baseline, Row};
use bench::kernels::{cases, time_case, QueuedTimer, SuiteOptions};
use clkernels::runtime::{DeviceSelector, Gpu, GpuOptions};

fn profiling_gpu() -> Gpu {
    Gpu::open_with(&GpuOptions {
        selector: DeviceSelector::from_env(),
        profiling: true,
        ..GpuOptions::default()
    })
    .unwrap()
}

fn small() -> SuiteOptions {
    SuiteOptions {
        small: true,
        attention_contexts: vec![40, 200],
        ..SuiteOptions::default()
    }
}

#[test]
fn every_small_case_builds_and_launches_in_the_documented_order() {
    let gpu = Gpu::open_default().unwrap();
    let mut all = cases(&gpu, &small()).unwrap();
    let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "launch_floor",
            "matvec_m0e4",
            "matvec_m0e4",
            "matvec_m0e4",
            "matvec_m0e4",
            "matvec_m0e4_normed",
            "matvec_m0e4_gate_up",
            "matvec_f16",
            "matmul_m0e4",
            "rmsnorm",
            "rope",
            "attention_decode",
            "attention_decode",
            "attention_prefill",
            "softmax",
            "argmax",
        ]
    );
    for case in &mut all {
        assert!(case.bytes > 0.0, "{case:?}");
        case.enqueue().unwrap();
        case.enqueue().unwrap();
    }
    gpu.finish().unwrap();
    // A filter keeps the cases whose names contain it.
    let only = SuiteOptions {
        filter: vec!["gate".into(), "argmax".into()],
        ..small()
    };
    let names: Vec<String> = cases(&gpu, &only)
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["matvec_m0e4_gate_up", "argmax"]);
}

#[test]
fn timed_rows_are_finite_and_need_a_profiling_device() {
    let gpu = profiling_gpu();
    let copy_gbps = copy_bandwidth(&gpu, 4 << 20, 3).unwrap() / 1e9;
    assert!(copy_gbps.is_finite() && copy_gbps > 0.0);
    let mut queued = QueuedTimer::new(&gpu, 4 << 20).unwrap();
    let baseline = Baseline::measure(&gpu, copy_gbps, &mut queued, 1, 3).unwrap();
    assert!(baseline.floor_us > 0.0 && baseline.floor_pipe_us > 0.0);
    assert!(baseline.floor_queued_us >= 0.0);
    let opts = SuiteOptions {
        filter: vec!["rmsnorm".into(), "matmul".into()],
        ..small()
    };
    for mut case in cases(&gpu, &opts).unwrap() {
        let t = time_case(&gpu, &mut case, 1, 3).unwrap();
        for v in [t.micros, t.span_micros, t.pipe_micros, t.gbps] {
            assert!(v.is_finite() && v > 0.0, "{} {t:?}", case.name);
        }
        assert!(t.span_micros >= t.micros * 0.999, "{t:?}");
        let q = queued.micros(&mut case, 5).unwrap();
        assert!(q.is_finite() && q >= 0.0);
        let row = Row::new(&case, t, q, &baseline, None);
        assert_eq!(row.to_string().len(), header().len(), "{row}");
    }

    let plain = Gpu::open_default().unwrap();
    let mut case = cases(&plain, &opts).unwrap().remove(0);
    let err = time_case(&plain, &mut case, 0, 1).unwrap_err();
    assert!(err.to_string().contains("profiling"), "{err}");
}

#[test]
fn sweeps_keep_the_shapes_and_fit_the_device() {
    let gpu = Gpu::open_default().unwrap();
    let base = SuiteOptions {
        dims: Some((576, 1536, 49152)),
        matvec_defines: vec!["MV_DIAG_CHEAP_DOT".into()],
        ..small()
    };
    let all = sweeps(&gpu, &base);
    assert!(all.iter().any(|s| s.title == "mat-mat tilings"));
    let max_wg = gpu.caps().max_work_group_size;
    for sweep in &all {
        assert!(!sweep.runs.is_empty(), "{}", sweep.title);
        for run in &sweep.runs {
            assert_eq!((run.small, run.dims), (true, base.dims));
            assert_eq!(run.matvec_defines, base.matvec_defines);
            assert_eq!(run.filter.len(), 1);
            if let Some(m) = run.matmul {
                assert!(m.threads() <= max_wg);
            }
            if let Some(m) = run.matvec.filter(|m| m.cpu.is_none()) {
                assert!(m.work_group <= max_wg);
            }
        }
    }
}
