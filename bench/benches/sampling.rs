//! Criterion benchmarks of choosing a token, per generated token:
//! - `sample_host`: the host sampler on a logit vector already in host memory, at the vocabulary sizes of the
//!   supported families: Llama 2 (32000), Llama 3 (128256), Qwen2 (151936), Gemma (256000);
//! - `sample_device` against `sample_readback_host`, at SmolLM2's (49152) and Qwen2's (151936) vocabulary: the
//!   device sampler (`Sampling::draw`, reading back the id) against what the engine does without it (read the
//!   logits back, then the host sampler). Both start from logits in device memory, as after a forward pass.
//!
//! Run: `cargo bench -p bench --bench sampling` (`TLITE_DEVICE` picks the OpenCL device; `-- sample_device` for
//! one group). Each device case first prints how many narrowing passes its draw took.

use clkernels::kernels::sampling::{DrawParams, DrawScratch, Sampling, Uniform};
use clkernels::runtime::{DeviceBuffer, Gpu};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use engine::sampling::{Sampler, SamplingParams};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::hint::black_box;
use std::time::Duration;

/// Logits shaped like a trained model's: a broad Gaussian body with a few strong candidates.
fn logits(vocab: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let normal = Normal::new(0.0f32, 2.0).unwrap_or_else(|e| panic!("normal distribution: {e}"));
    let mut l: Vec<f32> = (0..vocab).map(|_| normal.sample(&mut rng)).collect();
    for (i, v) in l.iter_mut().enumerate().step_by(vocab / 7) {
        *v = 12.0 + (i % 5) as f32;
    }
    l
}

/// The settings timed: name, top-k, top-p, min-p, repetition penalty (temperature 0.8, window 64).
const CASES: [(&str, usize, f32, f32, f32); 5] = [
    ("temperature", 0, 1.0, 0.0, 1.0),
    ("top_k40", 40, 1.0, 0.0, 1.0),
    ("top_p0.9", 0, 0.9, 0.0, 1.0),
    ("min_p0.05", 0, 1.0, 0.05, 1.0),
    ("top_p0.9+penalty", 0, 0.9, 0.0, 1.1),
];

fn params(case: (&str, usize, f32, f32, f32)) -> SamplingParams {
    let (_, top_k, top_p, min_p, repeat_penalty) = case;
    SamplingParams {
        temperature: 0.8,
        top_k,
        top_p,
        min_p,
        repeat_penalty,
        seed: 1,
        ..SamplingParams::greedy()
    }
}

fn recent() -> Vec<u32> {
    (0..64u32).map(|i| i * 97).collect()
}

fn sample_host(c: &mut Criterion) {
    let recent = recent();
    let mut g = c.benchmark_group("sample_host");
    for vocab in [32000usize, 128256, 151936, 256000] {
        let l = logits(vocab);
        for case in CASES {
            let mut s = Sampler::new(params(case)).unwrap_or_else(|e| panic!("sampler: {e}"));
            g.bench_with_input(BenchmarkId::new(case.0, vocab), &l, |b, l| {
                b.iter(|| s.sample(black_box(l), &recent))
            });
        }
    }
    g.finish();
}

/// One timed setting on the device: its logits (in device memory), parameters and sampling buffers.
struct DeviceCase {
    name: &'static str,
    vocab: usize,
    x: DeviceBuffer<f32>,
    params: SamplingParams,
    draw: DrawParams,
    scratch: DrawScratch,
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    panic!("device sampling: {e}")
}

/// Draws on the device at a fresh uniform number and reads the id back.
fn device_draw(
    s: &Sampling,
    gpu: &Gpu,
    case: &mut DeviceCase,
    out: &mut DeviceBuffer<u32>,
    rng: &mut impl Rng,
) -> u32 {
    let u = Uniform::new(rng.random()).unwrap_or_else(|e| fail(&e));
    s.draw(
        &mut case.x,
        case.vocab,
        &case.draw,
        u,
        &mut case.scratch,
        out,
    )
    .unwrap_or_else(|e| fail(&e));
    out.read(gpu).unwrap_or_else(|e| fail(&e))[0]
}

fn sample_device(c: &mut Criterion) {
    let gpu = match Gpu::open_default() {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("no OpenCL device, device sampling not timed: {e}");
            return;
        }
    };
    let s = Sampling::new(&gpu).unwrap_or_else(|e| fail(&e));
    let recent = recent();
    let mut out = DeviceBuffer::<u32>::new(&gpu, 1).unwrap_or_else(|e| fail(&e));
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    eprintln!("device: {}", gpu.caps().name);
    let mut cases = Vec::new();
    for vocab in [49152usize, 151936] {
        let l = logits(vocab);
        for case in CASES {
            let params = params(case);
            let p = &params;
            let draw = DrawParams::new(p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty)
                .unwrap_or_else(|e| fail(&e));
            let mut scratch = DrawScratch::new(&gpu, 64).unwrap_or_else(|e| fail(&e));
            scratch
                .set_penalised(&gpu, &p.penalised_tokens(&recent))
                .unwrap_or_else(|e| fail(&e));
            let mut case = DeviceCase {
                name: case.0,
                vocab,
                x: DeviceBuffer::from_slice(&gpu, &l).unwrap_or_else(|e| fail(&e)),
                params,
                draw,
                scratch,
            };
            device_draw(&s, &gpu, &mut case, &mut out, &mut rng);
            let info = case.scratch.info(&gpu).unwrap_or_else(|e| fail(&e));
            eprintln!(
                "{}/{vocab}: {:?}, {} narrowing passes, {} kept",
                case.name, info.outcome, info.narrowing_passes, info.kept
            );
            cases.push(case);
        }
    }
    let mut g = c.benchmark_group("sample_device");
    for case in &mut cases {
        let id = BenchmarkId::new(case.name, case.vocab);
        g.bench_function(id, |b| {
            b.iter(|| device_draw(&s, &gpu, case, &mut out, &mut rng))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("sample_readback_host");
    for case in &cases {
        let mut host = Sampler::new(case.params.clone()).unwrap_or_else(|e| fail(&e));
        g.bench_function(BenchmarkId::new(case.name, case.vocab), |b| {
            b.iter(|| {
                let logits = case.x.read(&gpu).unwrap_or_else(|e| fail(&e));
                host.sample(&logits, &recent)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = sample_host, sample_device
}
criterion_main!(benches);
