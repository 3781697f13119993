//! The architecture-independent description of a Llama-family decoder, filled from `config.json` or a llama2.c header.

use crate::EngineError;
use serde::{Deserialize, Serialize};
pub use symshape::models::ModelShape;

/// Decoder families tlite runs. llama2.c checkpoints load as [`Architecture::Llama`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Architecture {
    /// Llama 2/3 (and llama2.c checkpoints).
    Llama,
    /// Mistral: a Llama with its own `model_type`.
    Mistral,
    /// Qwen2: QKV bias, usually tied embeddings.
    Qwen2,
    /// Gemma: GeGLU, RMSNorm with `1 + w`, embeddings scaled by `sqrt(hidden)`, tied embeddings.
    Gemma,
    /// Phi-3, Phi-3.5 and Phi-4-mini: a Llama whose files fuse q|k|v and gate|up (split at load), with partial
    /// rotary (Phi-4-mini) and `longrope` scaling (the 128k models).
    Phi3,
    /// ChatGLM2/3 (GGUF only: the Hugging Face form needs remote code): fused QKV with bias, few KV heads, rotary
    /// on half of each head with interleaved pairs, fused gate|up.
    ChatGlm,
    /// Qwen3 (dense): RMSNorm of each q and k head before rotary, no QKV bias.
    Qwen3,
    /// Gemma 2: Gemma plus soft-capped attention and final logits, local (sliding-window) and global layers
    /// alternating, post-attention and post-MLP norms.
    Gemma2,
    /// Gemma 3 (text): Gemma 2 without soft-capping, plus q/k norms, five local layers to one global, and a rope
    /// base of their own for the local layers.
    Gemma3,
    /// SmolLM3: a Llama whose every fourth layer ("NoPE") attends without rotary embedding, with a tied head.
    SmolLm3,
}

impl Architecture {
    /// Parses a Hugging Face `model_type`; anything else is "unsupported architecture: X".
    pub fn from_model_type(model_type: &str) -> Result<Self, EngineError> {
        match model_type {
            "llama" => Ok(Self::Llama),
            "mistral" => Ok(Self::Mistral),
            "qwen2" => Ok(Self::Qwen2),
            "gemma" => Ok(Self::Gemma),
            "phi3" => Ok(Self::Phi3),
            "qwen3" => Ok(Self::Qwen3),
            "gemma2" => Ok(Self::Gemma2),
            "gemma3_text" => Ok(Self::Gemma3),
            "smollm3" => Ok(Self::SmolLm3),
            "gemma3" => Err(EngineError::UnsupportedArchitecture(
                "gemma3 (the multimodal Gemma 3 config, with the text model's settings under `text_config`; \
                 tlite runs the text-only `gemma3_text`)"
                    .into(),
            )),
            "chatglm" => Err(EngineError::UnsupportedArchitecture(
                "chatglm (its Hugging Face form runs remote code; tlite reads ChatGLM2/3 from GGUF files, as \
                 llama.cpp's convert_hf_to_gguf.py writes them)"
                    .into(),
            )),
            other => Err(EngineError::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The Hugging Face `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Gemma => "gemma",
            Self::Phi3 => "phi3",
            // The model_type of THUDM's remote-code checkpoints; tlite reads this family from GGUF only.
            Self::ChatGlm => "chatglm",
            Self::Qwen3 => "qwen3",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3_text",
            Self::SmolLm3 => "smollm3",
        }
    }

    /// The Gemma family: GeGLU, norms of `1 + w`, embeddings scaled by `sqrt(hidden)`, tied head by default.
    pub fn is_gemma(self) -> bool {
        matches!(self, Self::Gemma | Self::Gemma2 | Self::Gemma3)
    }
}

/// Which layers attend through a sliding window (Gemma 2 and 3's local layers, Mistral's every layer).
///
/// The attention kernels mask by the window, and on the GPU a local layer keeps a ring KV cache of the window plus
/// one step's positions instead of the whole context (`GpuOptions::kv_ring`; see kvcache's `KvRings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Positions a local layer's query sees, its own included: keys at `j <= i` with `i - j < window`.
    pub window: usize,
    /// Per layer, true where it is local (windowed), false where it sees the whole context.
    pub local_layers: Vec<bool>,
}

impl SlidingWindow {
    /// Every `period`-th layer (counting from 1) global, the others local: Gemma 2 (period 2) and Gemma 3 (6), as
    /// Hugging Face's `sliding_window_pattern` and llama.cpp's `set_swa_pattern` define it.
    pub fn global_every(window: usize, layers: usize, period: usize) -> Self {
        Self {
            window,
            local_layers: (0..layers)
                .map(|i| period == 0 || (i + 1) % period != 0)
                .collect(),
        }
    }

    /// Whether `layer` attends through the window.
    pub fn is_local(&self, layer: usize) -> bool {
        self.local_layers.get(layer).copied().unwrap_or(false)
    }
}

/// Which pairs of a head's dimensions rotary embedding rotates together.
///
/// Recorded instead of permuting q/k weights at load, so the weights stay byte-identical to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RopeStyle {
    /// Pairs `(i, i + rotary_dim/2)`: Hugging Face `rotate_half` (Llama, Mistral, Qwen2, Gemma checkpoints).
    HalfSplit,
    /// Pairs `(2i, 2i+1)`: llama2.c and GPT-J.
    Interleaved,
}

/// Rotary frequency scaling: `config.json`'s `rope_scaling`, or a GGUF file's scaling keys and `rope_freqs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Positions divided by `factor` (`"type": "linear"`).
    Linear {
        /// Position divisor.
        factor: f32,
    },
    /// Llama 3.x frequency-dependent scaling (`"rope_type": "llama3"`).
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f32,
        /// Wavelengths above `original_max_ctx / low_freq_factor` are fully scaled.
        low_freq_factor: f32,
        /// Wavelengths below `original_max_ctx / high_freq_factor` are left alone.
        high_freq_factor: f32,
        /// Context the model was pre-trained with.
        original_max_ctx: usize,
    },
    /// One divisor per rotated pair: llama.cpp's `rope_freqs` tensor, which its converter writes instead of the
    /// llama3 parameters (pair `i` turns at `theta^(-2i/d) / divisors[i]`).
    PerFrequency {
        /// `rotary_dim / 2` positive divisors.
        divisors: Vec<f32>,
    },
    /// Phi-3's `longrope` (Hugging Face `"rope_type": "longrope"`, formerly `"su"`; GGUF `rope_factors_short` and
    /// `rope_factors_long` tensors): per-pair divisors, one table for contexts up to `original_max_ctx` and
    /// another beyond, and a factor that multiplies the rotated part of q and k (so attention scores by its
    /// square). Which table applies is decided once, by the context the model is placed with, as llama.cpp does
    /// (Hugging Face switches tables by the current sequence length, which rotates the cached keys of one
    /// sequence with two different tables).
    LongRope {
        /// `rotary_dim / 2` divisors used when the context is at most `original_max_ctx`.
        short_factors: Vec<f32>,
        /// `rotary_dim / 2` divisors used when the context exceeds `original_max_ctx`.
        long_factors: Vec<f32>,
        /// Context the model was pre-trained with.
        original_max_ctx: usize,
        /// Multiplier of the rotated dimensions of q and k (`attention_factor`; 1 when none is given and the
        /// context is not extended).
        attn_factor: f32,
    },
}

impl RopeScaling {
    /// Inverse frequencies of the `rotary_dim / 2` rotated pairs, with this scaling applied, for a model placed
    /// with a context of `ctx` positions (only [`RopeScaling::LongRope`] depends on it).
    pub fn apply(
        scaling: Option<&RopeScaling>,
        theta: f32,
        rotary_dim: usize,
        ctx: usize,
    ) -> Vec<f32> {
        let half = rotary_dim / 2;
        (0..half)
            .map(|i| {
                let inv = f64::from(theta).powf(-2.0 * i as f64 / rotary_dim as f64);
                let scaled = match scaling {
                    None => inv,
                    Some(&RopeScaling::Linear { factor }) => inv / f64::from(factor),
                    // `validate` checks there is one divisor per pair; a missing one leaves its pair unscaled.
                    Some(RopeScaling::PerFrequency { divisors }) => {
                        inv / f64::from(divisors.get(i).copied().unwrap_or(1.0))
                    }
                    Some(RopeScaling::LongRope {
                        short_factors,
                        long_factors,
                        original_max_ctx,
                        ..
                    }) => {
                        let table = if ctx > *original_max_ctx {
                            long_factors
                        } else {
                            short_factors
                        };
                        inv / f64::from(table.get(i).copied().unwrap_or(1.0))
                    }
                    Some(&RopeScaling::Llama3 {
                        factor,
                        low_freq_factor,
                        high_freq_factor,
                        original_max_ctx,
                    }) => {
                        let (factor, lo, hi) = (
                            f64::from(factor),
                            f64::from(low_freq_factor),
                            f64::from(high_freq_factor),
                        );
                        let old = original_max_ctx as f64;
                        let wavelen = 2.0 * std::f64::consts::PI / inv;
                        if wavelen < old / hi {
                            inv
                        } else if wavelen > old / lo {
                            inv / factor
                        } else {
                            let smooth = (old / wavelen - lo) / (hi - lo);
                            (1.0 - smooth) * inv / factor + smooth * inv
                        }
                    }
                };
                scaled as f32
            })
            .collect()
    }
}

/// Activation inside the gated MLP: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Activation {
    /// SwiGLU (Llama, Mistral, Qwen2).
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma).
    GeluTanh,
}

/// Everything the forward pass needs to know about a model besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Family.
    pub arch: Architecture,
    /// Sizes: widths, heads, layers, vocabulary, context (symshape's [`ModelShape`], shared with the reference
    /// model in `fixtures`). Flattened, so `config.json` of a tlite folder keeps its eight keys at the top level.
    #[serde(flatten)]
    pub shape: ModelShape,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Rotary base.
    pub rope_theta: f32,
    /// Rotary pairing convention of the stored q/k weights.
    pub rope_style: RopeStyle,
    /// Rotary scaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Fraction of each head that is rotated (1.0 for all supported families).
    pub partial_rotary: f32,
    /// True when the output head reuses the embedding matrix.
    pub tied_embeddings: bool,
    /// True when q, k and v projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    /// MLP activation.
    pub activation: Activation,
    /// RMSNorm multiplies by `1 + w` instead of `w` (Gemma stores `w - 1`).
    pub norm_plus_one: bool,
    /// Embedding rows are multiplied by this (Gemma: `sqrt(hidden)`).
    pub embed_scale: Option<f32>,
    /// Beginning-of-sequence token, if the model has one.
    pub bos: Option<u32>,
    /// Tokens that end generation.
    pub eos: Vec<u32>,
    /// RMSNorm of each q and k head (weights `[head_dim]`) before rotary (Qwen3, Gemma 3).
    #[serde(default)]
    pub qk_norm: bool,
    /// Each block's output (attention's, the MLP's) is RMS-normed before the residual add (Gemma 2, 3).
    #[serde(default)]
    pub post_norms: bool,
    /// Attention scores are scaled by `1 / sqrt(query_pre_attn_scalar)` instead of `1 / sqrt(head_dim)` (Gemma 2,
    /// 3's `query_pre_attn_scalar`).
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f32>,
    /// Soft-capping of the attention scores, `cap * tanh(s / cap)` (Gemma 2).
    #[serde(default)]
    pub attn_softcap: Option<f32>,
    /// Soft-capping of the output logits (Gemma 2).
    #[serde(default)]
    pub final_softcap: Option<f32>,
    /// Local layers and their window, if any.
    #[serde(default)]
    pub sliding_window: Option<SlidingWindow>,
    /// Rotary base of the local layers (Gemma 3's `rope_local_base_freq`), which then rotate unscaled; `None`: they
    /// rotate as the global ones.
    #[serde(default)]
    pub rope_local_theta: Option<f32>,
    /// Per layer, true where q and k are not rotated at all (SmolLM3's "NoPE" layers); empty: every layer
    /// rotates. Left out of a tlite folder's `config.json` when empty, so other models' files are unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nope_layers: Vec<bool>,
}

/// Every `interval`-th layer (counting from 1) without rotary, as SmolLM3's `no_rope_layer_interval` and
/// llama.cpp's `n_no_rope_layer_step` define it: layer `i` rotates iff `(i + 1) % interval != 0`.
pub(crate) fn nope_every(layers: usize, interval: usize) -> Vec<bool> {
    (0..layers)
        .map(|i| interval != 0 && (i + 1) % interval == 0)
        .collect()
}

impl ModelConfig {
    /// Number of leading dimensions of each head that rotary embedding rotates (even).
    pub fn rotary_dim(&self) -> usize {
        let d = (self.shape.head_dim as f32 * self.partial_rotary).round() as usize;
        d - d % 2
    }

    /// Whether `layer` rotates q and k (false on SmolLM3's NoPE layers).
    pub fn layer_has_rope(&self, layer: usize) -> bool {
        !self.nope_layers.get(layer).copied().unwrap_or(false)
    }

    /// Dimensions of each head that `layer` rotates: [`ModelConfig::rotary_dim`], or 0 on a layer without rotary
    /// (which the kernels then pass through unchanged).
    pub fn layer_rotary_dim(&self, layer: usize) -> usize {
        if self.layer_has_rope(layer) {
            self.rotary_dim()
        } else {
            0
        }
    }

    /// Inverse rotary frequencies of this model at its full context (`shape.max_ctx`), scaling included.
    pub fn rope_inv_freqs(&self) -> Vec<f32> {
        self.rope_inv_freqs_for(self.shape.max_ctx)
    }

    /// Inverse rotary frequencies when the model is placed with a context of `ctx` positions (longrope picks its
    /// table by it).
    pub fn rope_inv_freqs_for(&self, ctx: usize) -> Vec<f32> {
        RopeScaling::apply(
            self.rope_scaling.as_ref(),
            self.rope_theta,
            self.rotary_dim(),
            ctx,
        )
    }

    /// What the rotated dimensions of q and k are multiplied by (longrope's attention factor; 1 otherwise).
    pub fn rope_attn_factor(&self) -> f32 {
        match self.rope_scaling {
            Some(RopeScaling::LongRope { attn_factor, .. }) => attn_factor,
            _ => 1.0,
        }
    }

    /// Whether `layer` is a local (sliding-window) layer.
    pub fn is_local_layer(&self, layer: usize) -> bool {
        self.sliding_window
            .as_ref()
            .is_some_and(|w| w.is_local(layer))
    }

    /// The rotary base and scaling of `layer`: the local ones of Gemma 3's local layers, the model's otherwise.
    pub fn layer_rope(&self, layer: usize) -> (f32, Option<&RopeScaling>) {
        match self.rope_local_theta {
            Some(theta) if self.is_local_layer(layer) => (theta, None),
            _ => (self.rope_theta, self.rope_scaling.as_ref()),
        }
    }

    /// Inverse rotary frequencies of `layer`, scaling included, for a cache of `ctx` positions (longrope's table
    /// depends on it).
    pub fn layer_rope_inv_freqs(&self, layer: usize, ctx: usize) -> Vec<f32> {
        let (theta, scaling) = self.layer_rope(layer);
        RopeScaling::apply(scaling, theta, self.rotary_dim(), ctx)
    }

    /// What multiplies `q·k`: `1 / sqrt(query_pre_attn_scalar)`, or `1 / sqrt(head_dim)`.
    pub fn attn_scale(&self) -> f32 {
        let d = self
            .query_pre_attn_scalar
            .unwrap_or(self.shape.head_dim as f32);
        1.0 / d.sqrt()
    }

    /// [`ModelConfig::validate`], with the config file named in the error.
    pub(crate) fn validate_in(&self, path: &std::path::Path) -> Result<(), EngineError> {
        self.validate().map_err(|e| match e {
            EngineError::InvalidConfig(m) => {
                EngineError::InvalidConfig(format!("{}: {m}", path.display()))
            }
            other => other,
        })
    }

    /// Every size field with its name, the one list both validity checks walk.
    fn named_dims(&self) -> [(&'static str, usize); 8] {
        let s = &self.shape;
        [
            ("hidden", s.hidden),
            ("ffn", s.ffn),
            ("layers", s.layers),
            ("heads", s.heads),
            ("kv_heads", s.kv_heads),
            ("head_dim", s.head_dim),
            ("vocab", s.vocab),
            ("max_ctx", s.max_ctx),
        ]
    }

    /// Checks the dimensions are positive and consistent; names the offending field otherwise.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |msg: String| Err(EngineError::InvalidConfig(msg));
        if let Some((name, _)) = self.named_dims().into_iter().find(|&(_, v)| v == 0) {
            return bad(format!("{name} must be positive"));
        }
        self.check_sizes()?;
        if !self.shape.heads.is_multiple_of(self.shape.kv_heads) {
            return bad(format!(
                "heads {} is not a multiple of kv_heads {}",
                self.shape.heads, self.shape.kv_heads
            ));
        }
        if !self.shape.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for rotary embedding",
                self.shape.head_dim
            ));
        }
        if !(self.partial_rotary > 0.0 && self.partial_rotary <= 1.0) {
            return bad(format!(
                "partial_rotary_factor {} must be in (0, 1]",
                self.partial_rotary
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return bad(format!(
                "norm eps {} must be finite and non-negative",
                self.norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope_theta {} must be positive", self.rope_theta));
        }
        if let Some(scale) = self.embed_scale {
            if !scale.is_finite() {
                return bad(format!("embedding scale {scale} must be finite"));
            }
        }
        if let Some(scaling) = &self.rope_scaling {
            check_rope_scaling(scaling, self.rotary_dim())?;
        }
        self.check_gemma_features()?;
        for (name, id) in self
            .bos
            .iter()
            .map(|b| ("bos", *b))
            .chain(self.eos.iter().map(|e| ("eos", *e)))
        {
            if id as usize >= self.shape.vocab {
                return bad(format!(
                    "{name} token id {id} is outside the vocabulary of {}",
                    self.shape.vocab
                ));
            }
        }
        Ok(())
    }

    /// Soft-caps, the query scalar and the local rope base must be positive; a window, and a list of layers without
    /// rotary, must name every layer.
    fn check_gemma_features(&self) -> Result<(), EngineError> {
        for (name, v) in [
            ("attn_logit_softcapping", self.attn_softcap),
            ("final_logit_softcapping", self.final_softcap),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("rope_local_base_freq", self.rope_local_theta),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(EngineError::InvalidConfig(format!(
                    "{name} {v} must be positive and finite"
                )));
            }
        }
        if !self.nope_layers.is_empty() && self.nope_layers.len() != self.shape.layers {
            return Err(EngineError::InvalidConfig(format!(
                "the list of layers without rotary names {} layers, the model has {}",
                self.nope_layers.len(),
                self.shape.layers
            )));
        }
        if let Some(w) = &self.sliding_window {
            if w.window == 0 {
                return Err(EngineError::InvalidConfig(
                    "sliding_window must be at least 1".into(),
                ));
            }
            if w.local_layers.len() != self.shape.layers {
                return Err(EngineError::InvalidConfig(format!(
                    "the sliding-window pattern names {} layers, the model has {}",
                    w.local_layers.len(),
                    self.shape.layers
                )));
            }
        }
        Ok(())
    }

    /// Refuses dimensions whose products (tensor sizes, the KV cache) overflow or could never be allocated, so
    /// no later size computation can overflow and no header can make the loader allocate terabytes.
    fn check_sizes(&self) -> Result<(), EngineError> {
        if let Some((name, v)) = self.named_dims().into_iter().find(|&(_, v)| v > MAX_DIM) {
            return Err(EngineError::InvalidConfig(format!(
                "{name} = {v} is not a plausible size (limit {MAX_DIM})"
            )));
        }
        let product = |name: &str, factors: &[usize]| -> Result<usize, EngineError> {
            factors
                .iter()
                .try_fold(1usize, |acc, &f| acc.checked_mul(f))
                .filter(|&n| n <= MAX_ELEMENTS)
                .ok_or_else(|| {
                    EngineError::InvalidConfig(format!(
                        "{name} ({}) has more than {MAX_ELEMENTS} elements",
                        factors
                            .iter()
                            .map(usize::to_string)
                            .collect::<Vec<_>>()
                            .join(" x ")
                    ))
                })
        };
        let q = product("heads x head_dim", &[self.shape.heads, self.shape.head_dim])?;
        let kv = product(
            "kv_heads x head_dim",
            &[self.shape.kv_heads, self.shape.head_dim],
        )?;
        product(
            "the embedding vocab x hidden",
            &[self.shape.vocab, self.shape.hidden],
        )?;
        product("the q projection", &[q, self.shape.hidden])?;
        product("the k/v projection", &[kv, self.shape.hidden])?;
        product("the MLP ffn x hidden", &[self.shape.ffn, self.shape.hidden])?;
        product(
            "the KV cache layers x max_ctx x kv_dim x 2",
            &[self.shape.layers, self.shape.max_ctx, kv, 2],
        )?;
        product(
            "the rotary table max_ctx x head_dim",
            &[self.shape.max_ctx, self.shape.head_dim],
        )?;
        // Activations of one full-context step (prefill chunks are at most max_ctx tokens).
        let qkv = kv
            .checked_mul(2)
            .and_then(|kv2| kv2.checked_add(q))
            .unwrap_or(usize::MAX);
        product(
            "a full-context step's q|k|v, max_ctx x (q_dim + 2 kv_dim)",
            &[self.shape.max_ctx, qkv],
        )?;
        product(
            "a full-context step's MLP, max_ctx x ffn",
            &[self.shape.max_ctx, self.shape.ffn],
        )?;
        Ok(())
    }
}

/// Largest single dimension a config may name (kernels index with 32-bit integers).
const MAX_DIM: usize = (1 << 31) - 1;
/// Largest element count of any one tensor (or of the whole KV cache) a config may imply: 2^40, four TiB of f32.
const MAX_ELEMENTS: usize = 1 << 40;

/// One positive, finite divisor per rotated pair.
fn check_divisors(what: &str, divisors: &[f32], rotary_dim: usize) -> Result<(), EngineError> {
    if divisors.len() != rotary_dim / 2 {
        return Err(EngineError::InvalidConfig(format!(
            "{what}: {} given, but the rotary dimension {rotary_dim} has {} pairs",
            divisors.len(),
            rotary_dim / 2
        )));
    }
    match divisors
        .iter()
        .enumerate()
        .find(|(_, d)| !(d.is_finite() && **d > 0.0))
    {
        Some((i, d)) => Err(EngineError::InvalidConfig(format!(
            "{what}: value {i} is {d}; it must be positive and finite"
        ))),
        None => Ok(()),
    }
}

/// Rotary scaling factors must be positive and finite, llama3's band must not be empty (it is divided by), and
/// per-frequency divisors must cover the rotated pairs exactly.
fn check_rope_scaling(s: &RopeScaling, rotary_dim: usize) -> Result<(), EngineError> {
    let positive = |name: &str, v: f32| {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(EngineError::InvalidConfig(format!(
                "rope_scaling {name} {v} must be positive and finite"
            )))
        }
    };
    match *s {
        RopeScaling::Linear { factor } => positive("factor", factor),
        RopeScaling::PerFrequency { ref divisors } => {
            check_divisors("rope frequency divisors", divisors, rotary_dim)
        }
        RopeScaling::LongRope {
            ref short_factors,
            ref long_factors,
            original_max_ctx,
            attn_factor,
        } => {
            check_divisors("longrope short_factor", short_factors, rotary_dim)?;
            check_divisors("longrope long_factor", long_factors, rotary_dim)?;
            positive("attention_factor", attn_factor)?;
            if original_max_ctx == 0 {
                return Err(EngineError::InvalidConfig(
                    "longrope original_max_position_embeddings must be positive".into(),
                ));
            }
            Ok(())
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_ctx,
        } => {
            positive("factor", factor)?;
            positive("low_freq_factor", low_freq_factor)?;
            positive("high_freq_factor", high_freq_factor)?;
            if high_freq_factor <= low_freq_factor {
                return Err(EngineError::InvalidConfig(format!(
                    "rope_scaling high_freq_factor {high_freq_factor} must exceed low_freq_factor {low_freq_factor}"
                )));
            }
            if original_max_ctx == 0 {
                return Err(EngineError::InvalidConfig(
                    "rope_scaling original_max_position_embeddings must be positive".into(),
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn long_rope() -> RopeScaling {
        RopeScaling::LongRope {
            short_factors: vec![1.0, 1.5, 2.0],
            long_factors: vec![3.0, 5.0, 9.0],
            original_max_ctx: 4096,
            attn_factor: 1.19,
        }
    }

    /// transformers' `inv_freq = 1 / (ext_factors * base^(arange(0, dim, 2) / dim))`, the short table up to the
    /// pre-training context and the long one beyond it.
    #[test]
    fn longrope_divides_by_the_table_the_context_selects() {
        let (theta, dim) = (10000.0f32, 6);
        let s = long_rope();
        for (ctx, table) in [
            (4096, [1.0f32, 1.5, 2.0]),
            (100, [1.0, 1.5, 2.0]),
            (4097, [3.0, 5.0, 9.0]),
        ] {
            let got = RopeScaling::apply(Some(&s), theta, dim, ctx);
            for (i, (g, f)) in got.iter().zip(table).enumerate() {
                let want = 1.0 / (f64::from(f) * 10000f64.powf(2.0 * i as f64 / dim as f64));
                assert!(
                    (f64::from(*g) - want).abs() <= 1e-6 * want,
                    "ctx {ctx} pair {i}: {g} vs {want}"
                );
            }
        }
        assert!(check_rope_scaling(&s, 6).is_ok());
        assert!(check_rope_scaling(&s, 8).is_err(), "3 factors for 4 pairs");
        let RopeScaling::LongRope {
            short_factors,
            long_factors,
            ..
        } = s
        else {
            unreachable!()
        };
        let zero_attn = RopeScaling::LongRope {
            short_factors,
            long_factors,
            original_max_ctx: 4096,
            attn_factor: 0.0,
        };
        assert!(check_rope_scaling(&zero_attn, 6).is_err());
    }
}
