//! Criterion benchmarks of choosing a token on the host from a full logit vector (what `tlite generate` does per
//! token whenever sampling is not plain greedy), at the vocabulary sizes of the supported families: Llama 2
//! (32000), Llama 3 (128256), Qwen2 (151936), Gemma (256000).
//! Run: `cargo bench -p bench --bench sampling`; the time per call is the host's cost per generated token.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use engine::sampling::{Sampler, SamplingParams};
use rand::SeedableRng;
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

fn sample(c: &mut Criterion) {
    let recent: Vec<u32> = (0..64u32).map(|i| i * 97).collect();
    let cases = [
        ("temperature", 0, 1.0, 0.0, 1.0),
        ("top_k40", 40, 1.0, 0.0, 1.0),
        ("top_p0.9", 0, 0.9, 0.0, 1.0),
        ("min_p0.05", 0, 1.0, 0.05, 1.0),
        ("top_p0.9+penalty", 0, 0.9, 0.0, 1.1),
    ];
    let mut g = c.benchmark_group("sample_host");
    for vocab in [32000usize, 128256, 151936, 256000] {
        let l = logits(vocab);
        for (name, top_k, top_p, min_p, repeat_penalty) in cases {
            let params = SamplingParams {
                temperature: 0.8,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                seed: 1,
                ..SamplingParams::greedy()
            };
            let mut s = Sampler::new(params).unwrap_or_else(|e| panic!("sampler: {e}"));
            g.bench_with_input(BenchmarkId::new(name, vocab), &l, |b, l| {
                b.iter(|| s.sample(black_box(l), &recent))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = sample
}
criterion_main!(benches);
