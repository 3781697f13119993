//! Criterion benchmarks of the fp4 crate: quantising to M0E4 (and the INT4 baselines), the
//! reference dequantiser and the reference matvec, on a 1024×4096 Gaussian matrix.
//! Run: `cargo bench -p bench --bench fp4`; throughput is printed in M elements (weights)/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fp4::baseline::{quantize_int4_asymmetric, quantize_int4_symmetric};
use fp4::{quantize_m0e4, quantize_m0e4_with, GroupSize, MatrixShape, SearchEffort};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::hint::black_box;
use std::time::Duration;

const SHAPE: MatrixShape = MatrixShape::new(1024, 4096);

fn weights() -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let normal = Normal::new(0.0f32, 0.02).unwrap_or_else(|e| panic!("normal distribution: {e}"));
    (0..SHAPE.len()).map(|_| normal.sample(&mut rng)).collect()
}

fn quantise(c: &mut Criterion) {
    let w = weights();
    let h: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
    let mut g = c.benchmark_group("fp4_quantize");
    g.throughput(Throughput::Elements(SHAPE.len() as u64));
    for group in GroupSize::ALL {
        g.bench_with_input(
            BenchmarkId::new("m0e4_search", group.len()),
            &group,
            |b, &group| b.iter(|| quantize_m0e4(black_box(&w), SHAPE, group)),
        );
    }
    g.bench_function("m0e4_search_f16_input/32", |b| {
        b.iter(|| quantize_m0e4(black_box(&h), SHAPE, GroupSize::G32))
    });
    let minmax = SearchEffort {
        steps: 1,
        refits: 0,
    };
    g.bench_function("m0e4_minmax/32", |b| {
        b.iter(|| quantize_m0e4_with(black_box(&w), SHAPE, GroupSize::G32, minmax))
    });
    g.bench_function("int4_sym_q4_0/32", |b| {
        b.iter(|| quantize_int4_symmetric(black_box(&w), SHAPE, GroupSize::G32))
    });
    g.bench_function("int4_asym_search/32", |b| {
        b.iter(|| {
            quantize_int4_asymmetric(
                black_box(&w),
                SHAPE,
                GroupSize::G32,
                SearchEffort::default(),
            )
        })
    });
    g.finish();
}

fn dequantise(c: &mut Criterion) {
    let w = weights();
    let mut g = c.benchmark_group("fp4_reference");
    g.throughput(Throughput::Elements(SHAPE.len() as u64));
    for group in GroupSize::ALL {
        let m = quantize_m0e4(&w, SHAPE, group).unwrap_or_else(|e| panic!("quantise: {e}"));
        g.bench_with_input(BenchmarkId::new("dequantize", group.len()), &m, |b, m| {
            b.iter(|| fp4::reference::dequantize(black_box(m)))
        });
        let x = &w[..SHAPE.cols];
        g.bench_with_input(BenchmarkId::new("matvec", group.len()), &m, |b, m| {
            b.iter(|| fp4::reference::matvec(black_box(m), black_box(x)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = quantise, dequantise
}
criterion_main!(benches);
