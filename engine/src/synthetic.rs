//! Synthetic models of real shapes (random M0E4 codes, no tokenizer) and the end-to-end benchmark behind
//! `tlite bench`: prefill and decode speed beside the bandwidth roofline measured on the same device.

use std::time::Instant;

use clkernels::kernels::{profile_launches, LaunchTiming};
use clkernels::kv_storage::ClKvStorage;
use clkernels::runtime::Gpu;
use fp4::{GroupSize, M0e4Matrix, MatrixShape};
use half::f16;
use kvcache::{KvDtype, KvStorage};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;

use crate::generate::{LanguageModel, StepOutput, Want};
use crate::gpu::{GpuModel, GpuOptions};
use crate::model::{
    Activation, Architecture, LayerWeights, Model, ModelConfig, ModelShape, ModelWeights,
    RopeStyle, Tensor,
};
use crate::EngineError;

/// Model shapes `tlite bench` knows (the published configurations of these checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchArch {
    /// Llama 2 7B: 32 layers, hidden 4096, ffn 11008, 32 heads, vocab 32000.
    Llama2_7b,
    /// Gemma 2B: 18 layers, hidden 2048, ffn 16384, 8 heads of 256, one KV head, vocab 256000, GeGLU, tied.
    Gemma2b,
    /// Qwen1.5 4B: 40 layers, hidden 2560, ffn 6912, 20 heads, vocab 151936, QKV bias.
    Qwen15_4b,
    /// ChatGLM2 6B: 28 layers, hidden 4096, ffn 13696, 32 heads, 2 KV groups, vocab 65024, QKV bias, rotary on half
    /// of each head (run here as a Llama-style decoder of the same shapes).
    Chatglm2_6b,
    /// SmolLM2 135M: 30 layers, hidden 576, ffn 1536, 9 heads of 64, 3 KV heads, vocab 49152, tied.
    Smollm2_135m,
}

impl std::str::FromStr for BenchArch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "llama2-7b" => Ok(Self::Llama2_7b),
            "gemma-2b" => Ok(Self::Gemma2b),
            "qwen1.5-4b" => Ok(Self::Qwen15_4b),
            "chatglm2-6b" => Ok(Self::Chatglm2_6b),
            "smollm2-135m" => Ok(Self::Smollm2_135m),
            other => Err(format!(
                "unknown shape `{other}` (expected llama2-7b, gemma-2b, qwen1.5-4b, chatglm2-6b or smollm2-135m)"
            )),
        }
    }
}

impl BenchArch {
    /// The configuration of these shapes, with `layers` decoder layers when given (a smaller smoke run).
    pub fn config(self, layers: Option<usize>) -> ModelConfig {
        let base = ModelConfig {
            arch: Architecture::Llama,
            shape: ModelShape {
                hidden: 4096,
                ffn: 11008,
                layers: 32,
                heads: 32,
                kv_heads: 32,
                head_dim: 128,
                vocab: 32000,
                max_ctx: 4096,
            },
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_style: RopeStyle::HalfSplit,
            rope_scaling: None,
            partial_rotary: 1.0,
            tied_embeddings: false,
            qkv_bias: false,
            activation: Activation::Silu,
            norm_plus_one: false,
            embed_scale: None,
            bos: Some(1),
            eos: vec![2],
        };
        let mut c = match self {
            Self::Llama2_7b => base,
            Self::Gemma2b => ModelConfig {
                arch: Architecture::Gemma,
                shape: ModelShape {
                    hidden: 2048,
                    ffn: 16384,
                    layers: 18,
                    heads: 8,
                    kv_heads: 1,
                    head_dim: 256,
                    vocab: 256000,
                    max_ctx: 8192,
                },
                norm_eps: 1e-6,
                tied_embeddings: true,
                activation: Activation::GeluTanh,
                norm_plus_one: true,
                embed_scale: Some((2048f32).sqrt()),
                ..base
            },
            Self::Qwen15_4b => ModelConfig {
                arch: Architecture::Qwen2,
                shape: ModelShape {
                    hidden: 2560,
                    ffn: 6912,
                    layers: 40,
                    heads: 20,
                    kv_heads: 20,
                    head_dim: 128,
                    vocab: 151936,
                    max_ctx: 32768,
                },
                norm_eps: 1e-6,
                rope_theta: 5_000_000.0,
                qkv_bias: true,
                ..base
            },
            Self::Chatglm2_6b => ModelConfig {
                shape: ModelShape {
                    hidden: 4096,
                    ffn: 13696,
                    layers: 28,
                    heads: 32,
                    kv_heads: 2,
                    head_dim: 128,
                    vocab: 65024,
                    max_ctx: 32768,
                },
                rope_style: RopeStyle::Interleaved,
                partial_rotary: 0.5,
                qkv_bias: true,
                ..base
            },
            Self::Smollm2_135m => ModelConfig {
                shape: ModelShape {
                    hidden: 576,
                    ffn: 1536,
                    layers: 30,
                    heads: 9,
                    kv_heads: 3,
                    head_dim: 64,
                    vocab: 49152,
                    max_ctx: 8192,
                },
                rope_theta: 100_000.0,
                tied_embeddings: true,
                ..base
            },
        };
        if let Some(n) = layers {
            c.shape.layers = n.max(1);
        }
        c
    }
}

fn random_m0e4(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    group: GroupSize,
) -> Result<Tensor, EngineError> {
    let mut codes = vec![0u8; rows * cols / 2];
    rng.fill_bytes(&mut codes);
    let groups = rows * (cols / group.len());
    // w = s·(h − 1.5): zero-centred weights of magnitude ~s/2, small enough that activations stay finite.
    let scales: Vec<f16> = (0..groups)
        .map(|_| f16::from_f32(0.02 * (0.5 + rng.random::<f32>())))
        .collect();
    let offsets: Vec<f16> = scales
        .iter()
        .map(|s| f16::from_f32(-1.5 * s.to_f32()))
        .collect();
    Ok(Tensor::m0e4(M0e4Matrix::from_parts(
        MatrixShape::new(rows, cols),
        group,
        codes,
        scales,
        offsets,
    )?))
}

fn random_f16(rng: &mut StdRng, shape: Vec<usize>, amplitude: f32) -> Result<Tensor, EngineError> {
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| f16::from_f32(amplitude * (rng.random::<f32>() * 2.0 - 1.0)))
        .collect();
    Tensor::f16(shape, v)
}

fn vector(n: usize, value: f32) -> Result<Tensor, EngineError> {
    Tensor::f32(vec![n], vec![value; n])
}

/// A model of `config`'s shapes with random M0E4 linear layers (group `group`), an f16 embedding, and an f16
/// output head unless `m0e4_head` (a tied head is the embedding, so it stays f16 either way). Matrices whose input
/// width is not a multiple of the group stay f16, as the loader does.
pub fn synthetic_model(
    config: &ModelConfig,
    group: GroupSize,
    seed: u64,
    m0e4_head: bool,
) -> Result<Model, EngineError> {
    config.validate()?;
    let c = config;
    let matrix = |rng: &mut StdRng, rows: usize, cols: usize| {
        if cols.is_multiple_of(group.len()) {
            random_m0e4(rng, rows, cols, group)
        } else {
            random_f16(rng, vec![rows, cols], 0.01)
        }
    };
    let layers = (0..c.shape.layers)
        .into_par_iter()
        .map(|i| {
            let mut rng =
                StdRng::seed_from_u64(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let bias = |rng: &mut StdRng, n: usize| -> Result<Option<Tensor>, EngineError> {
                if c.qkv_bias {
                    Ok(Some(Tensor::f32(
                        vec![n],
                        (0..n).map(|_| 0.01 * rng.random::<f32>()).collect(),
                    )?))
                } else {
                    Ok(None)
                }
            };
            Ok(LayerWeights {
                attn_norm: vector(c.shape.hidden, 1.0)?,
                wq: matrix(&mut rng, c.shape.q_dim(), c.shape.hidden)?,
                wk: matrix(&mut rng, c.shape.kv_dim(), c.shape.hidden)?,
                wv: matrix(&mut rng, c.shape.kv_dim(), c.shape.hidden)?,
                wo: matrix(&mut rng, c.shape.hidden, c.shape.q_dim())?,
                bq: bias(&mut rng, c.shape.q_dim())?,
                bk: bias(&mut rng, c.shape.kv_dim())?,
                bv: bias(&mut rng, c.shape.kv_dim())?,
                ffn_norm: vector(c.shape.hidden, 1.0)?,
                w_gate: matrix(&mut rng, c.shape.ffn, c.shape.hidden)?,
                w_up: matrix(&mut rng, c.shape.ffn, c.shape.hidden)?,
                w_down: matrix(&mut rng, c.shape.hidden, c.shape.ffn)?,
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let embedding = random_f16(&mut rng, vec![c.shape.vocab, c.shape.hidden], 1.0)?;
    let lm_head = match (c.tied_embeddings, m0e4_head) {
        (true, _) => None,
        (false, true) => Some(matrix(&mut rng, c.shape.vocab, c.shape.hidden)?),
        (false, false) => Some(random_f16(
            &mut rng,
            vec![c.shape.vocab, c.shape.hidden],
            0.02,
        )?),
    };
    Ok(Model {
        config: config.clone(),
        weights: ModelWeights {
            embedding,
            layers,
            final_norm: vector(c.shape.hidden, 1.0)?,
            lm_head,
        },
    })
}

/// Device copy bandwidth in bytes per second, counting the bytes read plus the bytes written, from `reps` copies of
/// `bytes` bytes inside one buffer (after one warm-up copy).
pub fn copy_bandwidth(gpu: &Gpu, bytes: usize, reps: usize) -> Result<f64, EngineError> {
    let storage = ClKvStorage::new(gpu);
    let half = bytes.min((gpu.caps().max_alloc_bytes / 2).max(1) as usize) as u64;
    let buffer = storage.allocate(2 * half)?;
    storage.copy_within(&buffer, 0, half, half)?;
    gpu.finish()?;
    let started = Instant::now();
    for _ in 0..reps.max(1) {
        storage.copy_within(&buffer, 0, half, half)?;
    }
    gpu.finish()?;
    Ok(2.0 * half as f64 * reps.max(1) as f64 / started.elapsed().as_secs_f64())
}

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
    /// Measured device copy bandwidth, bytes/s (read + write).
    pub copy_bytes_per_s: f64,
    /// Device memory the model allocated.
    pub device_bytes: u64,
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
        decode_enqueue_s_per_token: decode_enqueue.as_secs_f64() / gen as f64,
        decode_profile,
    })
}
