//! [`BenchArch`]: the published shapes of the checkpoints `tlite bench` imitates.

use engine::model::{Activation, Architecture, ModelConfig, ModelShape, RopeScaling, RopeStyle};

/// Model shapes `tlite bench` knows (the published configurations of these checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchArch {
    /// Llama 2 7B: 32 layers, hidden 4096, ffn 11008, 32 heads, vocab 32000.
    Llama2_7b,
    /// Gemma 2B: 18 layers, hidden 2048, ffn 16384, 8 heads of 256, one KV head, vocab 256000, GeGLU, tied.
    Gemma2b,
    /// Gemma 2 2B's shapes: 26 layers, hidden 2304, ffn 9216, 8 heads of 256, 4 KV heads, vocab 256000, tied; run as a
    /// Gemma decoder (no logit soft-capping, no extra norms). Its f16 embedding, 1.18 GB, exceeds a phone's 1 GiB
    /// allocation, so it is stored in two buffers there.
    Gemma2_2b,
    /// Qwen1.5 4B: 40 layers, hidden 2560, ffn 6912, 20 heads, vocab 151936, QKV bias.
    Qwen15_4b,
    /// ChatGLM2 6B: 28 layers, hidden 4096, ffn 13696, 32 heads, 2 KV groups, vocab 65024, QKV bias, rotary on half
    /// of each head with interleaved pairs.
    Chatglm2_6b,
    /// SmolLM2 135M: 30 layers, hidden 576, ffn 1536, 9 heads of 64, 3 KV heads, vocab 49152, tied.
    Smollm2_135m,
    /// Qwen3 1.7B: 28 layers, hidden 2048, ffn 6144, 16 heads of 128, 8 KV heads, vocab 151936, tied, theta 1e6.
    /// Its per-head q/k RMSNorm is not run here (a few hundred multiply-adds per head; the matrices dominate).
    Qwen3_1_7b,
    /// Gemma 3 1B: 26 layers, hidden 1152, ffn 6912, 4 heads of 256, one KV head, vocab 262144, GeGLU, tied.
    /// Run as a Gemma of these shapes: its q/k norms, post-norms, 512-token sliding window and local rope base are
    /// not (the window would shorten attention past 512 positions).
    Gemma3_1b,
    /// Phi-4-mini: 32 layers, hidden 3072, ffn 8192, 24 heads of 128, 8 KV heads, vocab 200064, tied, 96 of 128
    /// dims rotated, longrope (pre-training context 4096 of 131072; so the frequency-table rotary runs). The
    /// factor tables are placeholders of the right length: their values do not change the work.
    Phi4Mini,
}

impl std::str::FromStr for BenchArch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "llama2-7b" => Ok(Self::Llama2_7b),
            "gemma-2b" => Ok(Self::Gemma2b),
            "gemma2-2b" => Ok(Self::Gemma2_2b),
            "qwen1.5-4b" => Ok(Self::Qwen15_4b),
            "chatglm2-6b" => Ok(Self::Chatglm2_6b),
            "smollm2-135m" => Ok(Self::Smollm2_135m),
            "qwen3-1.7b" => Ok(Self::Qwen3_1_7b),
            "gemma3-1b" => Ok(Self::Gemma3_1b),
            "phi4-mini" => Ok(Self::Phi4Mini),
            other => Err(format!(
                "unknown shape `{other}` (expected {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

impl BenchArch {
    /// Every name `--arch` takes.
    pub const NAMES: [&'static str; 9] = [
        "llama2-7b",
        "gemma-2b",
        "gemma2-2b",
        "qwen1.5-4b",
        "chatglm2-6b",
        "smollm2-135m",
        "qwen3-1.7b",
        "gemma3-1b",
        "phi4-mini",
    ];

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
            qk_norm: false,
            post_norms: false,
            query_pre_attn_scalar: None,
            attn_softcap: None,
            final_softcap: None,
            sliding_window: None,
            rope_local_theta: None,
            nope_layers: Vec::new(),
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
            Self::Gemma2_2b => ModelConfig {
                arch: Architecture::Gemma,
                shape: ModelShape {
                    hidden: 2304,
                    ffn: 9216,
                    layers: 26,
                    heads: 8,
                    kv_heads: 4,
                    head_dim: 256,
                    vocab: 256000,
                    max_ctx: 8192,
                },
                norm_eps: 1e-6,
                tied_embeddings: true,
                activation: Activation::GeluTanh,
                norm_plus_one: true,
                embed_scale: Some((2304f32).sqrt()),
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
                arch: Architecture::ChatGlm,
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
            Self::Qwen3_1_7b => ModelConfig {
                arch: Architecture::Qwen2,
                shape: ModelShape {
                    hidden: 2048,
                    ffn: 6144,
                    layers: 28,
                    heads: 16,
                    kv_heads: 8,
                    head_dim: 128,
                    vocab: 151936,
                    max_ctx: 40960,
                },
                norm_eps: 1e-6,
                rope_theta: 1_000_000.0,
                tied_embeddings: true,
                ..base
            },
            Self::Gemma3_1b => ModelConfig {
                arch: Architecture::Gemma,
                shape: ModelShape {
                    hidden: 1152,
                    ffn: 6912,
                    layers: 26,
                    heads: 4,
                    kv_heads: 1,
                    head_dim: 256,
                    vocab: 262144,
                    max_ctx: 32768,
                },
                norm_eps: 1e-6,
                rope_theta: 1_000_000.0,
                tied_embeddings: true,
                activation: Activation::GeluTanh,
                norm_plus_one: true,
                embed_scale: Some((1152f32).sqrt()),
                ..base
            },
            Self::Phi4Mini => ModelConfig {
                arch: Architecture::Phi3,
                shape: ModelShape {
                    hidden: 3072,
                    ffn: 8192,
                    layers: 32,
                    heads: 24,
                    kv_heads: 8,
                    head_dim: 128,
                    vocab: 200064,
                    max_ctx: 131072,
                },
                partial_rotary: 0.75,
                rope_scaling: Some(RopeScaling::LongRope {
                    short_factors: vec![1.0; 48],
                    long_factors: vec![1.0; 48],
                    original_max_ctx: 4096,
                    // transformers' default for 131072 / 4096: sqrt(1 + ln 32 / ln 4096).
                    attn_factor: (1.0f32 + 32f32.ln() / 4096f32.ln()).sqrt(),
                }),
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
