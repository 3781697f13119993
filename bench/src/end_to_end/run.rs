//! [`run_bench`]: prefill and decode speed of a model on the device, beside the copy-bandwidth roofline.

use std::time::Instant;

use clkernels::kernels::{profile_launches, LaunchTiming};
use clkernels::runtime::Gpu;
use engine::generate::{LanguageModel, StepOutput, Want};
use engine::gpu::{GpuModel, GpuOptions};
use engine::model::Model;
use engine::EngineError;
use kvcache::KvDtype;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::copy_bandwidth;

/// Figures of one benchmark run.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Generated tokens per second.
    pub decode_tok_s: f64,
    /// Weight bytes one decode step reads (layers and head; KV reads not included).
    pub weight_bytes_per_token: u64,
    /// KV-cache bytes the last decode step read (keys and values of every layer).
    pub kv_bytes_last_token: u64,
    /// Measured device copy bandwidth, bytes/s (read + write; see [`crate::copy_bandwidth`]).
    pub copy_bytes_per_s: f64,
    /// Device memory the model allocated.
    pub device_bytes: u64,
    /// Buffers the embedding is stored in (more than one where it exceeds the device's largest allocation).
    pub embedding_buffers: usize,
    /// Buffers the output head is stored in (the embedding's when tied).
    pub head_buffers: usize,
    /// The context chosen at load and why, with the memory plan (the load line).
    pub context: String,
    /// Of which the activations (the shape plan's arena and the token ids).
    pub activation_bytes: u64,
    /// The context and the largest step the model was placed for (what the activations are sized by).
    pub ctx: usize,
    pub max_chunk: usize,
    /// Host time per decode step spent enqueueing the decoder's kernels (arguments and launches), seconds.
    pub decode_enqueue_s_per_token: f64,
    /// Every kernel launch of one extra decode step after the timed ones, with device times, when the device
    /// was opened with profiling (empty otherwise): where a step's time goes.
    pub decode_profile: Vec<LaunchTiming>,
}

impl BenchReport {
    /// Decode tokens per second if every step only streamed its weights at the copy bandwidth.
    pub fn roofline_tok_s(&self) -> f64 {
        self.copy_bytes_per_s / self.weight_bytes_per_token as f64
    }

    /// Decode speed as a percentage of that roofline.
    pub fn percent_of_roofline(&self) -> f64 {
        100.0 * self.decode_tok_s / self.roofline_tok_s()
    }
}

/// Places `model` on `gpu`, prefills `prompt_len` random tokens in chunks of `chunk`, then decodes `gen` tokens
/// greedily (each step's input is the token the device chose), and measures the copy bandwidth.
pub fn run_bench(
    gpu: Gpu,
    model: &Model,
    prompt_len: usize,
    gen: usize,
    chunk: usize,
) -> Result<BenchReport, EngineError> {
    if prompt_len == 0 || gen == 0 {
        return Err(EngineError::InvalidOption(
            "--prompt-len and --gen must be at least 1".into(),
        ));
    }
    let options = GpuOptions {
        max_ctx: Some(prompt_len + gen + 8),
        max_chunk: chunk.max(1),
        kv_dtype: KvDtype::F16,
        ..GpuOptions::default()
    };
    let mut gm = GpuModel::with_gpu(gpu.clone(), model, &options)?;
    let mut rng = StdRng::seed_from_u64(42);
    let vocab = model.config.shape.vocab as u32;
    let prompt: Vec<u32> = (0..prompt_len)
        .map(|_| rng.random_range(0..vocab))
        .collect();
    // Warm-up: first launches of every kernel (prefill and decode shapes), then start over.
    let warm = &prompt[..prompt_len.min(gm.max_step_tokens()).max(1)];
    gm.step(warm, Want::Argmax)?;
    if let StepOutput::Token(t) = gm.step(&[prompt[0]], Want::Argmax)? {
        gm.step(&[t], Want::Argmax)?;
    }
    gm.truncate(0)?;
    gpu.finish()?;

    let started = Instant::now();
    let mut out = StepOutput::Nothing;
    let chunks: Vec<&[u32]> = prompt.chunks(gm.max_step_tokens()).collect();
    for (i, part) in chunks.iter().enumerate() {
        let want = if i + 1 == chunks.len() {
            Want::Argmax
        } else {
            Want::Nothing
        };
        out = gm.step(part, want)?;
    }
    let prefill = started.elapsed();
    let mut token = match out {
        StepOutput::Token(t) => t,
        _ => {
            return Err(EngineError::InvalidOption(
                "prefill returned no token".into(),
            ))
        }
    };
    let enqueue_before = gm.host_enqueue_time();
    let started = Instant::now();
    for _ in 0..gen {
        token = match gm.step(&[token], Want::Argmax)? {
            StepOutput::Token(t) => t,
            _ => {
                return Err(EngineError::InvalidOption(
                    "decode returned no token".into(),
                ))
            }
        };
    }
    let decode = started.elapsed();
    let decode_enqueue = gm.host_enqueue_time() - enqueue_before;
    let decode_profile = if gpu.profiling() {
        let (step, launches) = profile_launches(&gpu, || gm.step(&[token], Want::Argmax))?;
        step?;
        launches
    } else {
        Vec::new()
    };
    let c = &model.config;
    let kv_bytes_last_token = (2 * c.shape.layers * c.shape.kv_dim() * gm.cached_len() * 2) as u64;
    let copy = copy_bandwidth(&gpu, 256 << 20, 20)?;
    Ok(BenchReport {
        prefill_tok_s: prompt_len as f64 / prefill.as_secs_f64(),
        decode_tok_s: gen as f64 / decode.as_secs_f64(),
        weight_bytes_per_token: gm.weights().bytes_per_token() as u64,
        kv_bytes_last_token,
        copy_bytes_per_s: copy,
        device_bytes: gm.device_bytes(),
        embedding_buffers: gm.weights().embedding.parts().len(),
        head_buffers: gm.weights().head().parts().len(),
        context: gm.context_choice().to_string(),
        activation_bytes: gm.activation_bytes(),
        ctx: gm.context_choice().ctx,
        max_chunk: gm.context_choice().max_chunk,
        decode_enqueue_s_per_token: decode_enqueue.as_secs_f64() / gen as f64,
        decode_profile,
    })
}
