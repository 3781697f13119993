//! The device sampler (`clkernels::kernels::sampling`) against the host sampler (`engine::sampling`), and
//! generation through it.
//!
//! - Same distribution: on fixed logits, 10000 draws from each (independent random streams) pass a two-sample
//!   chi-square test at a false-failure probability of 1e-6 per comparison (tokens pooled in order of probability
//!   into bins of at least 100 expected draws; the quantile by Wilson-Hilferty), and each passes the one-sample test against the exact probabilities of
//!   `fixtures::sampling`. The same test must reject draws at a 30 % warmer temperature, so it can fail. Seeds are
//!   fixed: the outcome is the same on every run.
//! - Same token for the same uniform number: on random logits and settings, device and host pick the same token
//!   unless float rounding sits on a boundary: a cut that the device placed elsewhere than the f64 reference, or
//!   that is within 1e-6 relative of flipping there (the host's side), or the draw's target within 1e-5 of the kept
//!   weight of the edge between two tokens. Such cases are counted and printed; every mismatch must be one of them,
//!   and mismatches must stay under 2 % of the draws.
//! - Generation: a tiny model sampled on the device and the same model sampled on the host give the same tokens for
//!   a seed, and the device path really ran (forced with `SamplingSite::Device`: on PoCL the default is the host).
#![allow(clippy::unwrap_used)]

use clkernels::kernels::sampling::{DrawParams, DrawScratch, Sampling, Uniform, NO_TOKEN};
use clkernels::runtime::{DeviceBuffer, Gpu};
use engine::generate::{
    DrawRequest, GenerateOptions, Generator, LanguageModel, StepOutput, TextCodec, Want,
};
use engine::gpu::{GpuModel, GpuOptions, SamplingSite};
use engine::model::{self, LoadOptions, ModelConfig, WeightFormat};
use engine::sampling::{Sampler, SamplingParams};
use engine::EngineError;
use fixtures::reference_model::RefArch;
use fixtures::sampling::{self as reference, ChainParams};
use fixtures::tiny_models::{write_hf_folder, StoreDtype, TinySpec};
use kvcache::KvDtype;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The standard normal's quantile at 1 - 1e-6.
const Z_1E6: f64 = 4.753_424;

struct Device {
    gpu: Gpu,
    s: Sampling,
    scratch: DrawScratch,
    out: DeviceBuffer<u32>,
}

impl Device {
    fn new() -> Self {
        let gpu = Gpu::open_default().expect("an OpenCL device (PoCL on the dev box)");
        Device {
            s: Sampling::new(&gpu).unwrap(),
            scratch: DrawScratch::new(&gpu, 64).unwrap(),
            out: DeviceBuffer::new(&gpu, 1).unwrap(),
            gpu,
        }
    }

    /// Sets the penalty window as the generator does for a sequence `recent`.
    fn set_recent(&mut self, p: &SamplingParams, recent: &[u32]) {
        self.scratch
            .set_penalised(&self.gpu, &p.penalised_tokens(recent))
            .unwrap();
    }

    fn draw(&mut self, x: &mut DeviceBuffer<f32>, n: usize, p: &SamplingParams, u: f32) -> u32 {
        let params =
            DrawParams::new(p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty).unwrap();
        self.s
            .draw(
                x,
                n,
                &params,
                Uniform::new(u).unwrap(),
                &mut self.scratch,
                &mut self.out,
            )
            .unwrap();
        self.out.read(&self.gpu).unwrap()[0]
    }
}

fn chain(p: &SamplingParams) -> ChainParams {
    ChainParams {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        min_p: p.min_p,
        repeat_penalty: p.repeat_penalty,
    }
}

/// Logits shaped like a trained model's: a Gaussian body of spread `sigma` and a few strong tokens.
fn trained_logits(rng: &mut StdRng, n: usize, sigma: f32) -> Vec<f32> {
    // Box-Muller.
    let mut normal = || {
        let (a, b): (f64, f64) = (rng.random(), rng.random());
        ((-2.0 * (1.0 - a).ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32 * sigma
    };
    let mut l: Vec<f32> = (0..n).map(|_| normal()).collect();
    for _ in 0..6 {
        l[rng.random_range(0..n)] = rng.random_range(3.0..7.0) * sigma;
    }
    l
}

/// Chi-square quantile at 1 - 1e-6 with `df` degrees of freedom (Wilson-Hilferty; within a few percent for
/// df >= 3).
fn chi2_limit(df: usize) -> f64 {
    let k = df as f64;
    let c = 2.0 / (9.0 * k);
    k * (1.0 - c + Z_1E6 * c.sqrt()).powi(3)
}

/// Token bins, most likely tokens first, each expecting at least 100 of `draws` under `probs` (the last merged
/// into its predecessor when short): pooling by probability keeps a shift of mass between head and tail visible.
fn bins(tokens: &[u32], probs: &[f64], draws: usize) -> Vec<Vec<u32>> {
    let mut by_prob: Vec<(u32, f64)> = tokens.iter().copied().zip(probs.iter().copied()).collect();
    by_prob.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out: Vec<Vec<u32>> = Vec::new();
    let (mut cur, mut expected) = (Vec::new(), 0.0);
    for (t, p) in by_prob {
        cur.push(t);
        expected += p * draws as f64;
        if expected >= 100.0 {
            out.push(std::mem::take(&mut cur));
            expected = 0.0;
        }
    }
    if !cur.is_empty() {
        match out.last_mut() {
            Some(last) => last.extend(cur),
            None => out.push(cur),
        }
    }
    out
}

fn counts(bins: &[Vec<u32>], draws: &[u32]) -> Vec<f64> {
    let mut bin_of = std::collections::HashMap::new();
    for (b, tokens) in bins.iter().enumerate() {
        for &t in tokens {
            bin_of.insert(t, b);
        }
    }
    let mut c = vec![0.0; bins.len() + 1]; // the last: tokens outside the kept set
    for t in draws {
        c[bin_of.get(t).copied().unwrap_or(bins.len())] += 1.0;
    }
    c
}

/// Two-sample chi-square statistic of equal-size samples.
fn chi2_two(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .filter(|(x, y)| **x + **y > 0.0)
        .map(|(x, y)| (x - y).powi(2) / (x + y))
        .sum()
}

/// One-sample statistic against expected probabilities (the last count must be 0: nothing outside the kept set).
fn chi2_one(c: &[f64], expected: &[f64]) -> f64 {
    let n: f64 = c.iter().sum();
    c.iter()
        .zip(expected)
        .map(|(o, p)| (o - n * p).powi(2) / (n * p))
        .sum()
}

#[test]
fn device_and_host_draws_follow_the_same_distribution() {
    let mut dev = Device::new();
    let mut rng = StdRng::seed_from_u64(20_240_518);
    let draws = 10_000;
    let cases = [
        (
            "top-k 60, top-p 0.9, min-p 0.02, penalty 1.3",
            2000,
            0.8,
            SamplingParams {
                temperature: 0.9,
                top_k: 60,
                top_p: 0.9,
                min_p: 0.02,
                repeat_penalty: 1.3,
                repeat_window: 16,
                seed: 11,
            },
        ),
        (
            "temperature 1.2 only, flat logits",
            3000,
            0.7,
            SamplingParams {
                temperature: 1.2,
                seed: 12,
                ..SamplingParams::greedy()
            },
        ),
        (
            "top-p 0.95 past 2048 candidates",
            6000,
            0.6,
            SamplingParams {
                temperature: 1.0,
                top_p: 0.95,
                seed: 13,
                ..SamplingParams::greedy()
            },
        ),
    ];
    for (what, n, sigma, p) in cases {
        let logits = trained_logits(&mut rng, n, sigma);
        let recent: Vec<u32> = (0..24).map(|_| rng.random_range(0..n as u32)).collect();
        let kept = reference::rank(&logits, &p.penalised_tokens(&recent), &chain(&p), 0.0)
            .unwrap()
            .kept();
        let total = kept.mass();
        let probs: Vec<f64> = kept.weights.iter().map(|w| w / total).collect();
        let bins = bins(&kept.tokens, &probs, draws);
        let mut expected: Vec<f64> = bins
            .iter()
            .map(|b| {
                b.iter()
                    .map(|t| probs[kept.tokens.binary_search(t).unwrap()])
                    .sum()
            })
            .collect();
        expected.push(0.0);

        let mut host = Sampler::new(p.clone()).unwrap();
        let host_draws: Vec<u32> = (0..draws)
            .map(|_| host.sample(&logits, &recent).unwrap())
            .collect();
        let mut xd = DeviceBuffer::from_slice(&dev.gpu, &logits).unwrap();
        dev.set_recent(&p, &recent);
        let mut stream = StdRng::seed_from_u64(p.seed ^ 0xD1CE);
        let dev_draws: Vec<u32> = (0..draws)
            .map(|_| dev.draw(&mut xd, n, &p, stream.random()))
            .collect();

        let (h, d) = (counts(&bins, &host_draws), counts(&bins, &dev_draws));
        assert_eq!(
            h[bins.len()] + d[bins.len()],
            0.0,
            "{what}: a draw outside the kept set"
        );
        let limit = chi2_limit(bins.len() - 1);
        let (two, one_d, one_h) = (
            chi2_two(&h, &d),
            chi2_one(&d[..bins.len()], &expected),
            chi2_one(&h[..bins.len()], &expected),
        );
        eprintln!(
            "{what}: {} kept, {} bins; chi2 device-host {two:.1}, device-exact {one_d:.1}, host-exact {one_h:.1} \
             (limit {limit:.1})",
            kept.tokens.len(),
            bins.len()
        );
        assert!(
            two < limit,
            "{what}: device and host differ (chi2 {two:.1} >= {limit:.1})"
        );
        assert!(
            one_d < limit,
            "{what}: device draws off the exact distribution ({one_d:.1})"
        );
        assert!(
            one_h < limit,
            "{what}: host draws off the exact distribution ({one_h:.1})"
        );

        // The test has power: draws at a 30 % warmer temperature fail it.
        let warmer = SamplingParams {
            temperature: p.temperature * 1.3,
            ..p.clone()
        };
        let mut stream = StdRng::seed_from_u64(p.seed ^ 0xBEEF);
        let off: Vec<u32> = (0..draws)
            .map(|_| dev.draw(&mut xd, n, &warmer, stream.random()))
            .collect();
        let wrong = chi2_two(&h[..bins.len()], &counts(&bins, &off)[..bins.len()]);
        eprintln!("{what}: device 30 % warmer against host: chi2 {wrong:.1}");
        assert!(
            wrong > limit,
            "{what}: a 30 % warmer temperature went unnoticed ({wrong:.1})"
        );
    }
}

#[test]
fn the_same_uniform_number_picks_the_same_token() {
    let mut dev = Device::new();
    let mut rng = StdRng::seed_from_u64(77);
    let (mut draws, mut mismatches, mut boundary) = (0, 0, 0);
    for &n in &[1000usize, 32000, 151936] {
        for _ in 0..40 {
            let p = SamplingParams {
                temperature: [0.5, 0.8, 1.0, 1.5][rng.random_range(0..4)],
                top_k: [0, 0, 1, 40, 500][rng.random_range(0..5)],
                top_p: [1.0, 0.8, 0.95][rng.random_range(0..3)],
                min_p: [0.0, 0.0, 0.05][rng.random_range(0..3)],
                repeat_penalty: [1.0, 1.15][rng.random_range(0..2)],
                repeat_window: 64,
                seed: 0,
            };
            let sigma = [0.8, 2.0, 3.0][rng.random_range(0..3)];
            let logits = trained_logits(&mut rng, n, sigma);
            let recent: Vec<u32> = (0..80).map(|_| rng.random_range(0..n as u32)).collect();
            let mut xd = DeviceBuffer::from_slice(&dev.gpu, &logits).unwrap();
            dev.set_recent(&p, &recent);
            // The host sums in f64: a cut within 1e-6 of flipping in the reference may go either way there.
            let ranked =
                reference::rank(&logits, &p.penalised_tokens(&recent), &chain(&p), 1e-6).unwrap();
            let kept = ranked.kept();
            let mut host = Sampler::new(p.clone()).unwrap();
            for _ in 0..5 {
                let u: f32 = rng.random();
                let d = dev.draw(&mut xd, n, &p, u);
                let info = dev.scratch.info(&dev.gpu).unwrap();
                let h = host.sample_at(&logits, &recent, u).unwrap();
                draws += 1;
                let near = kept.draws_near(f64::from(u), 1e-5 * kept.mass());
                let on_edge =
                    ranked.near_boundary || info.kept as usize != ranked.keep || near.len() > 1;
                boundary += usize::from(on_edge);
                if d != h {
                    mismatches += 1;
                    assert!(
                        on_edge && d != NO_TOKEN,
                        "vocab {n}, {p:?}, u {u}: device {d}, host {h}, not on a boundary (near: {near:?})"
                    );
                }
            }
        }
    }
    eprintln!(
        "{draws} draws: {mismatches} picked different tokens, {boundary} had a rounding boundary in reach"
    );
    assert!(
        mismatches * 50 <= draws,
        "{mismatches} of {draws} draws differ"
    );
}

/// A codec for token ids only: the tests here never encode text.
struct Ids;

impl TextCodec for Ids {
    fn encode(&self, _: &str) -> Result<Vec<u32>, EngineError> {
        Ok(Vec::new())
    }
    fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        Ok(ids.iter().map(|i| format!("<{i}>")).collect())
    }
    fn token_id(&self, _: &str) -> Option<u32> {
        None
    }
}

/// The GPU model, counting the tokens it drew on the device.
struct Wrapped {
    inner: GpuModel,
    drawn_on_device: usize,
}

impl LanguageModel for Wrapped {
    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }
    fn context_len(&self) -> usize {
        self.inner.context_len()
    }
    fn cached_len(&self) -> usize {
        self.inner.cached_len()
    }
    fn max_step_tokens(&self) -> usize {
        self.inner.max_step_tokens()
    }
    fn truncate(&mut self, len: usize) -> Result<(), EngineError> {
        self.inner.truncate(len)
    }
    fn step(&mut self, tokens: &[u32], want: Want) -> Result<StepOutput, EngineError> {
        self.inner.step(tokens, want)
    }
    fn step_sampled(
        &mut self,
        tokens: &[u32],
        draw: &DrawRequest<'_>,
    ) -> Result<StepOutput, EngineError> {
        let out = self.inner.step_sampled(tokens, draw)?;
        self.drawn_on_device += usize::from(matches!(out, StepOutput::Token(_)));
        Ok(out)
    }
}

#[test]
fn generation_samples_on_the_device_with_the_hosts_tokens() {
    let dir = tempfile::tempdir().unwrap();
    write_hf_folder(
        &TinySpec::for_arch(RefArch::Llama),
        dir.path(),
        StoreDtype::F32,
        1,
    )
    .unwrap();
    let m = model::load(
        dir.path(),
        &LoadOptions {
            quantize: WeightFormat::M0e4 {
                group: fp4::GroupSize::G32,
            },
            keep_embeddings_f16: true,
        },
    )
    .unwrap();
    let gpu_options = GpuOptions {
        max_chunk: 8,
        kv_dtype: KvDtype::F32,
        max_ctx: Some(64),
        half_products: false,
        ..GpuOptions::default()
    };
    let generator = |site| {
        let mut inner = GpuModel::load(&m, &gpu_options).unwrap();
        inner.set_sampling_site(site);
        let wrapped = Wrapped {
            inner,
            drawn_on_device: 0,
        };
        Generator::new(wrapped, Ids).unwrap()
    };
    let prompt: Vec<u32> = (0..11)
        .map(|i| (i * 37 % m.config.shape.vocab) as u32)
        .collect();
    for sampling in [
        SamplingParams {
            temperature: 0.8,
            top_p: 0.9,
            seed: 5,
            ..SamplingParams::greedy()
        },
        SamplingParams {
            temperature: 1.1,
            top_k: 20,
            min_p: 0.05,
            repeat_penalty: 1.3,
            repeat_window: 8,
            seed: 6,
            ..SamplingParams::greedy()
        },
        // Greedy with a penalty: the device's arg-max of the penalised logits.
        SamplingParams {
            repeat_penalty: 1.5,
            repeat_window: 8,
            ..SamplingParams::greedy()
        },
    ] {
        let opts = GenerateOptions {
            max_tokens: 24,
            sampling: sampling.clone(),
            prefill_chunk: 4,
            ..GenerateOptions::default()
        };
        let (mut on_device, mut on_host) = (
            generator(SamplingSite::Device),
            generator(SamplingSite::Host),
        );
        let a = on_device
            .generate_from_tokens(&prompt, &opts, |_| {})
            .unwrap();
        let b = on_host
            .generate_from_tokens(&prompt, &opts, |_| {})
            .unwrap();
        assert_eq!(a.tokens, b.tokens, "{sampling:?}");
        assert_eq!(
            on_device.model().drawn_on_device,
            a.tokens.len(),
            "{sampling:?}: not every token was drawn on the device"
        );
        assert_eq!(on_host.model().drawn_on_device, 0);
        assert!(
            sampling.temperature == 0.0
                || a.tokens
                    .iter()
                    .collect::<std::collections::HashSet<_>>()
                    .len()
                    > 1,
            "{sampling:?}: {:?} does not look sampled",
            a.tokens
        );
        // The same seed again on the device repeats itself.
        let again = on_device
            .generate_from_tokens(&prompt, &opts, |_| {})
            .unwrap();
        assert_eq!(again.tokens, a.tokens, "{sampling:?}");
    }
}
