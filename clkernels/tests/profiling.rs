//! `profile_launches`: per-launch device times of a real sequence of kernels, on a queue opened with profiling.
#![allow(clippy::unwrap_used)]

mod common;

use clkernels::kernels::norm::{Norm, RmsNormParams, RowsShape};
use clkernels::kernels::profile_launches;
use clkernels::kernels::sampling::Sampling;
use clkernels::runtime::{DeviceSelector, Gpu, GpuOptions};
use common::*;

fn profiling_gpu() -> Gpu {
    let gpu = Gpu::open_with(&GpuOptions {
        selector: DeviceSelector::from_env(),
        profiling: true,
        ..GpuOptions::default()
    })
    .unwrap();
    assert!(gpu.profiling());
    gpu
}

#[test]
fn launches_are_named_and_timed_in_order_and_results_stay_correct() {
    let gpu = profiling_gpu();
    let mut rng = rng("profiling");
    let shape = RowsShape { rows: 2, dim: 300 };
    let x = normal(&mut rng, 600, 1.0);
    let w = normal(&mut rng, 300, 1.0);
    let (xd, wd) = (upload(&gpu, &x), upload(&gpu, &w));
    let norm = Norm::new(&gpu).unwrap();
    let sampling = Sampling::new(&gpu).unwrap();
    let params = RmsNormParams {
        eps: 1e-5,
        weight_offset: 0.0,
    };
    let mut y = poisoned(&gpu, 600);
    let mut best = clkernels::runtime::DeviceBuffer::<u32>::new(&gpu, 1).unwrap();
    let (result, launches) = profile_launches(&gpu, || {
        norm.rms(&xd, &wd, &mut y, shape, params)?;
        sampling.argmax(&y, 300, &mut best)
    })
    .unwrap();
    result.unwrap();

    let names: Vec<&str> = launches.iter().map(|l| l.kernel).collect();
    assert_eq!(names, ["rmsnorm", "argmax"]);
    for l in &launches {
        assert!(l.end_ns >= l.start_ns, "{l:?}");
    }
    assert!(
        launches[1].start_ns >= launches[0].end_ns,
        "an in-order queue runs the argmax after the norm: {launches:?}"
    );
    // The work itself is unchanged by the profiling.
    let want = fixtures::ops::rmsnorm(&x[..300], &w, 1e-5, 0.0);
    let got = y.read(&gpu).unwrap();
    assert_close("profiled rmsnorm", &got[..300], &want, 1e-5, 1e-5);
    let host = want
        .iter()
        .enumerate()
        .fold(0, |b, (i, &v)| if v > want[b] { i } else { b });
    assert_eq!(best.read(&gpu).unwrap()[0] as usize, host);
}

#[test]
fn profiling_a_device_opened_without_it_is_refused() {
    let gpu = gpu();
    assert!(!gpu.profiling());
    assert!(profile_launches(&gpu, || ()).is_err());
}

#[test]
fn a_recording_holds_the_device_launches_made_during_it_and_no_others() {
    let gpu = profiling_gpu();
    let mut rng = rng("profiling-scope");
    let shape = RowsShape { rows: 3, dim: 64 };
    let (x, w) = (normal(&mut rng, 192, 1.0), normal(&mut rng, 64, 1.0));
    let (xd, wd) = (upload(&gpu, &x), upload(&gpu, &w));
    let norm = Norm::new(&gpu).unwrap();
    let params = RmsNormParams {
        eps: 1e-5,
        weight_offset: 0.0,
    };
    let mut y = poisoned(&gpu, 192);

    // A second recording on the same device while one runs is refused, and the outer one still records.
    let ((inner, ran), launches) = profile_launches(&gpu, || {
        let inner = profile_launches(&gpu, || ());
        (inner, norm.rms(&xd, &wd, &mut y, shape, params))
    })
    .unwrap();
    assert!(inner.is_err());
    ran.unwrap();
    assert_eq!(launches.len(), 1, "{launches:?}");

    // A launch between recordings is not kept by the next one.
    norm.rms(&xd, &wd, &mut y, shape, params).unwrap();
    let (ran, launches) = profile_launches(&gpu, || {
        norm.rms(&xd, &wd, &mut y, shape, params)?;
        norm.rms(&xd, &wd, &mut y, shape, params)
    })
    .unwrap();
    ran.unwrap();
    assert_eq!(launches.len(), 2, "{launches:?}");

    // The recording belongs to the device's queue, not to the thread that started it.
    let (ran, launches) = profile_launches(&gpu, || {
        std::thread::scope(|s| {
            s.spawn(|| norm.rms(&xd, &wd, &mut y, shape, params))
                .join()
                .unwrap()
        })
    })
    .unwrap();
    ran.unwrap();
    let names: Vec<&str> = launches.iter().map(|l| l.kernel).collect();
    assert_eq!(names, ["rmsnorm"]);
    let want: Vec<f32> = x
        .chunks(64)
        .flat_map(|row| fixtures::ops::rmsnorm(row, &w, 1e-5, 0.0))
        .collect();
    assert_close(
        "rmsnorm after profiling",
        &y.read(&gpu).unwrap(),
        &want,
        1e-5,
        1e-5,
    );
}
