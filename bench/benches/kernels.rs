//! Criterion benchmarks of every kernel family, on the cases of [`bench::kernels`].
//!
//! Each iteration enqueues one launch and waits for it (`clFinish`), so the figure includes one launch latency;
//! `tlite bench-kernels` reports device time from profiling events and bandwidth against the measured copy
//! bandwidth. Shapes are the small ones unless `TLITE_BENCH_FULL=1` (7B-sized shapes, for GPUs). Without an
//! OpenCL device the bench prints why and exits.

use bench::kernels::{cases, SuiteOptions};
use clkernels::runtime::Gpu;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn kernels(c: &mut Criterion) {
    let gpu = match Gpu::open_default() {
        Ok(gpu) => gpu,
        Err(err) => {
            eprintln!("kernels bench skipped: no OpenCL device ({err})");
            return;
        }
    };
    let full = std::env::var("TLITE_BENCH_FULL").is_ok_and(|v| v == "1");
    let opts = SuiteOptions {
        small: !full,
        ..SuiteOptions::default()
    };
    let all = match cases(&gpu, &opts) {
        Ok(all) => all,
        Err(err) => {
            eprintln!("kernels bench: setting up the cases failed: {err}");
            return;
        }
    };
    let mut group = c.benchmark_group("kernels");
    group.sample_size(10);
    for mut case in all {
        group.throughput(Throughput::Bytes(case.bytes as u64));
        let id = format!("{} {}", case.name, case.shape);
        group.bench_function(id.as_str(), |b| {
            b.iter(|| {
                if let Err(err) = case
                    .enqueue()
                    .and_then(|()| gpu.finish().map_err(Into::into))
                {
                    panic!("{id}: {err}");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
