//! [`BenchArch`]: the published shapes of the checkpoints `tlite bench` imitates.

use engine::model::{
    Activation, Architecture, ModelConfig, ModelShape, RopeScaling, RopeStyle, SlidingWindow,
};

/// Model shapes `tlite bench` knows: the published configurations of these checkpoints, each with its
/// architecture's features (q/k norms, post norms, sliding windows, soft-caps, local rope bases, rope scaling), so a
/// run does the work the real model does; only the weights are random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchArch {
    /// Llama 2 7B: 32 layers, hidden 4096, ffn 11008, 32 heads, vocab 32000.
    Llama2_7b,
    /// Gemma 2B: 18 layers, hidden 2048, ffn 16384, 8 heads of 256, one KV head, vocab 256000, GeGLU, tied.
    Gemma2b,
    /// Gemma 2 2B (`gemma-2-2b-it`): 26 layers, hidden 2304, ffn 9216, 8 heads of 256, 4 KV heads, vocab 256000,
    /// tied; attention scores soft-capped at 50 and logits at 30, post-attention and post-MLP norms, a 4096-token
    /// window on every other layer (the first of each pair), one rope base (1e4). Its f16 embedding, 1.18 GB,
    /// exceeds a phone's 1 GiB allocation, so it is stored in two buffers there.
    Gemma2_2b,
    /// Qwen1.5 4B: 40 layers, hidden 2560, ffn 6912, 20 heads, vocab 151936, QKV bias.
    Qwen15_4b,
    /// ChatGLM2 6B: 28 layers, hidden 4096, ffn 13696, 32 heads, 2 KV groups, vocab 65024, QKV bias, rotary on half
    /// of each head with interleaved pairs.
    Chatglm2_6b,
    /// SmolLM2 135M: 30 layers, hidden 576, ffn 1536, 9 heads of 64, 3 KV heads, vocab 49152, tied.
    Smollm2_135m,
    /// Qwen3 1.7B: 28 layers, hidden 2048, ffn 6144, 16 heads of 128, 8 KV heads, vocab 151936, tied, theta 1e6, no
    /// QKV bias, an RMSNorm of every q and k head before rotary.
    Qwen3_1_7b,
    /// Gemma 3 1B (`gemma-3-1b-it`): 26 layers, hidden 1152, ffn 6912, 4 heads of 256, one KV head, vocab 262144,
    /// GeGLU, tied; q/k norms, post norms, five local layers (512-token window, rope base 1e4) to one global (rope
    /// base 1e6). The 1B's published config has no rope scaling (the larger Gemma 3 models scale their global
    /// layers linearly by 8), so none is run. Its local layers keep ring KV caches of the window plus one step (unless
    /// `TLITE_KV_RING=off`), so decode past 512 positions reads and stores only the window there.
    Gemma3_1b,
    /// Phi-4-mini (`Phi-4-mini-instruct`): 32 layers, hidden 3072, ffn 8192, 24 heads of 128, 8 KV heads, vocab
    /// 200064, tied, 96 of 128 dims rotated, longrope (pre-training context 4096 of 131072; so the frequency-table
    /// rotary runs). The factor tables are placeholders of the right length: their values do not change the work.
    /// Its config's `sliding_window` (262144) exceeds its context, so it masks nothing and is left out.
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
                arch: Architecture::Gemma2,
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
                post_norms: true,
                query_pre_attn_scalar: Some(256.0),
                attn_softcap: Some(50.0),
                final_softcap: Some(30.0),
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
                arch: Architecture::Qwen3,
                qk_norm: true,
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
                arch: Architecture::Gemma3,
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
                qk_norm: true,
                post_norms: true,
                query_pre_attn_scalar: Some(256.0),
                rope_local_theta: Some(10_000.0),
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
        // The local/global pattern names every layer, so it is laid out for the layer count just chosen (a
        // two-layer Gemma 2 run has one local and one global layer; a two-layer Gemma 3 run, two local ones).
        c.sliding_window = self
            .window()
            .map(|(window, period)| SlidingWindow::global_every(window, c.shape.layers, period));
        c
    }

    /// The sliding window and the period of global layers (every `period`-th layer sees the whole context), as the
    /// published configs give them (`sliding_window`, `sliding_window_pattern`).
    fn window(self) -> Option<(usize, usize)> {
        match self {
            Self::Gemma2_2b => Some((4096, 2)),
            Self::Gemma3_1b => Some((512, 6)),
            _ => None,
        }
    }
}
