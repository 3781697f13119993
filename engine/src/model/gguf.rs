//! GGUF model files (llama.cpp's format): configuration from the `<arch>.*` metadata, weights from the tensors.
//!
//! Conventions of llama.cpp's converter (`convert_hf_to_gguf.py`) this loader undoes or follows:
//!
//! * **q/k rows, llama only.** `LlamaModel.permute` reorders each head's q and k rows from Hugging Face's
//!   half-split layout to pairs `(2i, 2i+1)`, so llama.cpp's "normal" (interleaved) rope applies. The weights are
//!   kept as stored and [`RopeStyle::Interleaved`] recorded; qwen2 and gemma are not permuted and use NEOX rope,
//!   i.e. [`RopeStyle::HalfSplit`].
//! * **Gemma norms.** The converter adds 1 to every gemma, gemma2 and gemma3 norm weight (post norms and q/k
//!   norms included), so the file already holds `1 + w` and `norm_plus_one` is off (it would add 1 twice).
//! * **Gemma 2 and 3 query scale.** GGUF has no `query_pre_attn_scalar`; like llama.cpp, queries are scaled by
//!   `1/sqrt(head_dim)` except on the 27B models (recognised by their layer count, 46 and 62), whose scalar is
//!   `hidden / heads`. Which layers are local follows llama.cpp too: every second (gemma2) or sixth (gemma3) layer,
//!   counting from 1, is global; gemma3's local layers rotate with `rope.freq_base_swa` (default 10000), unscaled.
//! * **Llama 3 rope scaling** is written as a `rope_freqs.weight` tensor of per-frequency divisors, not as keys;
//!   it becomes [`RopeScaling::PerFrequency`].
//! * **Fused projections** (phi3, chatglm): `attn_qkv` holds q, k and v rows in that order (and `attn_qkv.bias`
//!   their biases); `ffn_up` holds `2 * ffn` rows, gate first, then up (llama.cpp's `LLM_FFN_SWIGLU` splits it so).
//!   They are cut into the separate matrices at load ([`Tensor::split_rows`], exact in every storage), so the GPU
//!   path sees q/k/v and gate/up as for any other model (and stacks q|k|v again on upload).
//! * **Phi-3 longrope** is written as `rope_factors_short.weight` / `rope_factors_long.weight` tensors with
//!   `rope.scaling.attn_factor` and `rope.scaling.original_context_length`; it becomes [`RopeScaling::LongRope`].
//!   Its sliding window (`attention.sliding_window`, 2047 in Phi-3-mini-4k, 0 in Phi-4: none) masks every layer.
//! * **SmolLM3** is a llama (q/k permuted, interleaved rope) whose every fourth layer skips rotary. No key says
//!   so: llama.cpp hard-codes `n_no_rope_layer_step = 4` for the arch (layer `il` rotates iff `(il + 1) % 4 != 0`)
//!   and its converter writes nothing of `no_rope_layers`, so the same rule is applied here. llama.cpp's smollm3
//!   graph rotates every head whole and without `rope_freqs`; a file asking otherwise is refused.
//! * **ChatGLM** rotates the first half of each head (`rope.dimension_count`) with llama.cpp's "normal" rope, pairs
//!   `(2i, 2i+1)`: [`RopeStyle::Interleaved`], as the original model's `apply_rotary_pos_emb` pairs them.
//!
//! Weights are converted one tensor at a time (layers in parallel), so a quantised 7B file is never inflated to
//! f32 whole: Q4_0/Q4_1 matrices go into M0E4 G32 exactly ([`crate::gguf::q4_m0e4`]); everything else is
//! dequantised and converted as [`LoadOptions`] asks.

use super::convert::{matrix, vector, MatrixRole, Source};
use super::{
    Activation, Architecture, LayerWeights, LoadOptions, Model, ModelConfig, ModelShape,
    ModelWeights, RopeScaling, RopeStyle, SlidingWindow, Tensor, WeightFormat,
};
use crate::gguf::q4_m0e4::{self, ImportError};
use crate::gguf::{self, GgmlType, GgufFile, TensorInfo};
use crate::EngineError;
use rayon::prelude::*;
use std::path::Path;

/// Opens and validates the file and parses its configuration.
pub(crate) fn load_config(path: &Path) -> Result<ModelConfig, EngineError> {
    parse_config(&GgufFile::open(path)?)
}

/// Loads a GGUF model, converted as `opts` asks.
pub(crate) fn load_file(
    path: &Path,
    opts: &LoadOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Model, EngineError> {
    let file = GgufFile::open(path)?;
    let config = parse_config(&file)?;
    let weights = load_weights(&file, &config, opts, progress)?;
    Ok(Model { config, weights })
}

/// The architecture named by `general.architecture`.
fn architecture(file: &GgufFile) -> Result<(Architecture, String), EngineError> {
    let name = file
        .opt_str("general.architecture")?
        .ok_or_else(|| file.meta_error("general.architecture", "is missing"))?;
    let arch = match name {
        "llama" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        "gemma" => Architecture::Gemma,
        "phi3" => Architecture::Phi3,
        "chatglm" => Architecture::ChatGlm,
        "qwen3" => Architecture::Qwen3,
        "gemma2" => Architecture::Gemma2,
        "gemma3" => Architecture::Gemma3,
        "smollm3" => Architecture::SmolLm3,
        other => {
            return Err(EngineError::UnsupportedArchitecture(format!(
                "{other} (GGUF `general.architecture` of {}; llama, qwen2, qwen3, gemma, gemma2, gemma3, phi3, \
                 chatglm and smollm3 are supported)",
                file.path().display()
            )))
        }
    };
    Ok((arch, name.to_string()))
}

/// Parses the `<arch>.*` and tokenizer id keys into a validated [`ModelConfig`].
pub(crate) fn parse_config(file: &GgufFile) -> Result<ModelConfig, EngineError> {
    let (arch, name) = architecture(file)?;
    let key = |k: &str| format!("{name}.{k}");
    let hidden = file.usize(&key("embedding_length"))?;
    let heads = file.usize(&key("attention.head_count"))?;
    if heads == 0 {
        return Err(file.meta_error(&key("attention.head_count"), "must be positive"));
    }
    let head_dim = match file.opt_usize(&key("attention.key_length"))? {
        Some(d) => d,
        None if hidden.is_multiple_of(heads) => hidden / heads,
        None => {
            return Err(file.meta_error(
                &key("attention.head_count"),
                format!("({heads}) does not divide the embedding length {hidden}"),
            ))
        }
    };
    if let Some(v) = file.opt_usize(&key("attention.value_length"))? {
        if v != head_dim {
            return Err(file.meta_error(
                &key("attention.value_length"),
                format!("is {v}, but tlite needs it equal to the key length {head_dim}"),
            ));
        }
    }
    let partial_rotary = match file.opt_usize(&key("rope.dimension_count"))? {
        None => 1.0,
        Some(d) if d > 0 && d <= head_dim && d % 2 == 0 => d as f32 / head_dim as f32,
        Some(d) => {
            return Err(file.meta_error(
                &key("rope.dimension_count"),
                format!("is {d}; it must be even and in 2..={head_dim} (the head width)"),
            ))
        }
    };
    let token_embd = file.tensor("token_embd.weight")?;
    let vocab = match file.opt_usize(&key("vocab_size"))? {
        Some(v) => v,
        None => match file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            Some(tokens) => tokens.len(),
            None => token_embd.shape().first().copied().unwrap_or(0),
        },
    };
    let gemma = arch.is_gemma();
    let mut cfg = ModelConfig {
        arch,
        shape: ModelShape {
            hidden,
            ffn: file.usize(&key("feed_forward_length"))?,
            layers: file.usize(&key("block_count"))?,
            heads,
            kv_heads: file
                .opt_usize(&key("attention.head_count_kv"))?
                .unwrap_or(heads),
            head_dim,
            vocab,
            max_ctx: file.opt_usize(&key("context_length"))?.unwrap_or(2048),
        },
        norm_eps: file
            .opt_f32(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        rope_theta: file.opt_f32(&key("rope.freq_base"))?.unwrap_or(10000.0),
        rope_style: if matches!(
            arch,
            Architecture::Llama | Architecture::ChatGlm | Architecture::SmolLm3
        ) {
            RopeStyle::Interleaved
        } else {
            RopeStyle::HalfSplit
        },
        rope_scaling: None,
        partial_rotary,
        tied_embeddings: file.header().tensor("output.weight").is_none(),
        qkv_bias: arch == Architecture::Qwen2
            || file.header().tensor("blk.0.attn_q.bias").is_some()
            || file.header().tensor("blk.0.attn_qkv.bias").is_some(),
        activation: if gemma {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        norm_plus_one: false,
        embed_scale: gemma.then(|| (hidden as f32).sqrt()),
        bos: file.opt_u32("tokenizer.ggml.bos_token_id")?,
        eos: Vec::new(),
        qk_norm: matches!(arch, Architecture::Qwen3 | Architecture::Gemma3),
        post_norms: matches!(arch, Architecture::Gemma2 | Architecture::Gemma3),
        query_pre_attn_scalar: None,
        attn_softcap: None,
        final_softcap: None,
        sliding_window: None,
        rope_local_theta: None,
        nope_layers: Vec::new(),
    };
    if matches!(arch, Architecture::Gemma2 | Architecture::Gemma3) {
        gemma2_features(file, &name, &mut cfg)?;
    }
    for k in ["eos_token_id", "eot_token_id", "eom_token_id"] {
        if let Some(id) = file.opt_u32(&format!("tokenizer.ggml.{k}"))? {
            if !cfg.eos.contains(&id) {
                cfg.eos.push(id);
            }
        }
    }
    cfg.rope_scaling = rope_scaling(file, &name, cfg.rotary_dim(), cfg.shape.max_ctx)?;
    if arch == Architecture::Phi3 {
        every_layer_windowed(file, &key("attention.sliding_window"), &mut cfg)?;
    }
    if arch == Architecture::SmolLm3 {
        smollm3_features(file, &name, &mut cfg)?;
    }
    cfg.validate_in(file.path())?;
    Ok(cfg)
}

/// Phi-3 attends through its sliding window in every layer, as Mistral does (0: no window, as Phi-4 writes).
fn every_layer_windowed(
    file: &GgufFile,
    key: &str,
    cfg: &mut ModelConfig,
) -> Result<(), EngineError> {
    if let Some(window) = file.opt_usize(key)?.filter(|&w| w > 0) {
        cfg.sliding_window = Some(SlidingWindow {
            window,
            local_layers: vec![true; cfg.shape.layers],
        });
    }
    Ok(())
}

/// SmolLM3's layers without rotary (every fourth, as llama.cpp fixes it), after refusing what llama.cpp's smollm3
/// graph would not apply: a partial rotary, or rotary scaling by a `rope_freqs` tensor.
fn smollm3_features(file: &GgufFile, arch: &str, cfg: &mut ModelConfig) -> Result<(), EngineError> {
    /// llama.cpp's `n_no_rope_layer_step` for the arch.
    const NOPE_STEP: usize = 4;
    if cfg.rotary_dim() != cfg.shape.head_dim {
        return Err(file.meta_error(
            &format!("{arch}.rope.dimension_count"),
            format!(
                "is {}; llama.cpp's smollm3 rotates whole heads ({})",
                cfg.rotary_dim(),
                cfg.shape.head_dim
            ),
        ));
    }
    if matches!(cfg.rope_scaling, Some(RopeScaling::PerFrequency { .. })) {
        return Err(gguf_error(
            file,
            "has a `rope_freqs` tensor, which llama.cpp's smollm3 graph does not apply; tlite will not guess"
                .into(),
        ));
    }
    cfg.nope_layers = super::config::nope_every(cfg.shape.layers, NOPE_STEP);
    Ok(())
}

/// Gemma 2 and 3's soft-caps, sliding window, local rope base and query scale, as llama.cpp reads them (see the
/// module docs).
fn gemma2_features(file: &GgufFile, arch: &str, cfg: &mut ModelConfig) -> Result<(), EngineError> {
    let key = |k: &str| format!("{arch}.{k}");
    let gemma3 = cfg.arch == Architecture::Gemma3;
    cfg.attn_softcap = file.opt_f32(&key("attn_logit_softcapping"))?;
    cfg.final_softcap = file.opt_f32(&key("final_logit_softcapping"))?;
    let layers = cfg.shape.layers;
    if let Some(window) = file.opt_usize(&key("attention.sliding_window"))? {
        let pattern_key = key("attention.sliding_window_pattern");
        let period = match file.get(&pattern_key) {
            None => {
                if gemma3 {
                    6
                } else {
                    2
                }
            }
            Some(v) => v
                .as_u64()
                .and_then(|p| usize::try_from(p).ok())
                .filter(|&p| p > 0)
                .ok_or_else(|| {
                    file.meta_error(
                        &pattern_key,
                        format!(
                            "is {}; tlite supports a positive period (every period-th layer global)",
                            v.kind()
                        ),
                    )
                })?,
        };
        cfg.sliding_window = Some(SlidingWindow::global_every(window, layers, period));
    }
    if gemma3 {
        cfg.rope_local_theta = Some(file.opt_f32(&key("rope.freq_base_swa"))?.unwrap_or(10000.0));
    }
    let is_27b = layers == if gemma3 { 62 } else { 46 };
    if is_27b {
        cfg.query_pre_attn_scalar = Some((cfg.shape.hidden / cfg.shape.heads) as f32);
    }
    Ok(())
}

/// Phi-3's longrope tables (`rope_factors_short` / `rope_factors_long`), if the file has them.
fn long_rope(
    file: &GgufFile,
    arch: &str,
    rotary_dim: usize,
    max_ctx: usize,
) -> Result<Option<RopeScaling>, EngineError> {
    let (short, long) = (
        file.header().tensor("rope_factors_short.weight"),
        file.header().tensor("rope_factors_long.weight"),
    );
    let (short, long) = match (short, long) {
        (None, None) => return Ok(None),
        (Some(s), Some(l)) => (s, l),
        _ => {
            return Err(gguf_error(
                file,
                "has only one of the `rope_factors_short` and `rope_factors_long` tensors; longrope needs both"
                    .into(),
            ))
        }
    };
    let want = vec![rotary_dim / 2];
    let read = |info: &TensorInfo| {
        if info.shape() != want {
            return Err(shape_error(file, info, want.clone()));
        }
        gguf::dequantize(info, file.data(info)).map_err(|m| gguf_error(file, m))
    };
    let (short_factors, long_factors) = (read(short)?, read(long)?);
    Ok(Some(RopeScaling::LongRope {
        short_factors,
        long_factors,
        // llama.cpp's defaults when the keys are absent: the training context, and no attention factor.
        original_max_ctx: file
            .opt_usize(&format!("{arch}.rope.scaling.original_context_length"))?
            .unwrap_or(max_ctx),
        attn_factor: file
            .opt_f32(&format!("{arch}.rope.scaling.attn_factor"))?
            .unwrap_or(1.0),
    }))
}

/// Rotary scaling from `<arch>.rope.scaling.*` (or the older `rope.scale_linear`), the `rope_freqs` tensor, and
/// Phi-3's `rope_factors_*` tensors.
fn rope_scaling(
    file: &GgufFile,
    arch: &str,
    rotary_dim: usize,
    max_ctx: usize,
) -> Result<Option<RopeScaling>, EngineError> {
    let type_key = format!("{arch}.rope.scaling.type");
    let factor_key = format!("{arch}.rope.scaling.factor");
    let from_keys = match file.opt_str(&type_key)? {
        None | Some("none") => file
            .opt_f32(&format!("{arch}.rope.scale_linear"))?
            .filter(|&f| f != 1.0)
            .map(|factor| RopeScaling::Linear { factor }),
        Some("linear") => {
            let factor = file.opt_f32(&factor_key)?.ok_or_else(|| {
                file.meta_error(&factor_key, "is missing (rope scaling is linear)")
            })?;
            Some(RopeScaling::Linear { factor })
        }
        Some(other) => {
            return Err(file.meta_error(
                &type_key,
                format!("is \"{other}\"; tlite supports none and linear rope scaling"),
            ))
        }
    };
    let long = long_rope(file, arch, rotary_dim, max_ctx)?;
    let Some(info) = file.header().tensor("rope_freqs.weight") else {
        return match (from_keys, long) {
            (Some(_), Some(_)) => Err(file.meta_error(
                &type_key,
                "sets a rope scaling, and `rope_factors_*` tensors set longrope; tlite cannot apply both",
            )),
            (keys, long) => Ok(keys.or(long)),
        };
    };
    if long.is_some() {
        return Err(gguf_error(
            file,
            "has a `rope_freqs` tensor and `rope_factors_*` tensors; tlite cannot apply both"
                .into(),
        ));
    }
    if from_keys.is_some() {
        return Err(file.meta_error(
            &type_key,
            "sets a rope scaling, and a `rope_freqs` tensor sets another; tlite cannot apply both",
        ));
    }
    let want = vec![rotary_dim / 2];
    if info.shape() != want {
        return Err(shape_error(file, info, want));
    }
    let divisors = gguf::dequantize(info, file.data(info)).map_err(|m| gguf_error(file, m))?;
    Ok(Some(RopeScaling::PerFrequency { divisors }))
}

fn gguf_error(file: &GgufFile, message: String) -> EngineError {
    EngineError::Gguf {
        path: file.path().to_path_buf(),
        message,
    }
}

fn shape_error(file: &GgufFile, info: &TensorInfo, expected: Vec<usize>) -> EngineError {
    EngineError::TensorShape {
        path: file.path().to_path_buf(),
        tensor: info.name.clone(),
        expected,
        actual: info.shape(),
    }
}

/// Reads and converts one named tensor after checking its shape.
struct Reader<'a> {
    file: &'a GgufFile,
    opts: &'a LoadOptions,
}

impl Reader<'_> {
    fn info(&self, name: &str, shape: &[usize]) -> Result<&TensorInfo, EngineError> {
        let info = self.file.tensor(name)?;
        if info.shape() != shape {
            return Err(shape_error(self.file, info, shape.to_vec()));
        }
        Ok(info)
    }

    fn values(&self, info: &TensorInfo) -> Result<Vec<f32>, EngineError> {
        gguf::dequantize(info, self.file.data(info)).map_err(|m| gguf_error(self.file, m))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Tensor, EngineError> {
        let info = self.info(name, &[len])?;
        vector(name, Source::F32(self.values(info)?), len, self.opts)
    }

    fn matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        role: MatrixRole,
    ) -> Result<Tensor, EngineError> {
        let info = self.info(name, &[rows, cols])?;
        let exact_import = matches!(info.ggml_type, GgmlType::Q4_0 | GgmlType::Q4_1)
            && self.opts.quantize
                == (WeightFormat::M0e4 {
                    group: fp4::GroupSize::G32,
                })
            && !(role == MatrixRole::Embedding && self.opts.keep_embeddings_f16);
        if exact_import {
            match q4_m0e4::import(info.ggml_type, self.file.data(info), rows, cols) {
                Ok(m) => return Ok(Tensor::m0e4(m)),
                Err(ImportError::Overflow { row, group }) => tracing::info!(
                    "{name}: block {group} of row {row} has a scale beyond f16, so the tensor is dequantised \
                     and quantised again instead of imported exactly"
                ),
                Err(ImportError::Unsuitable(m)) => {
                    return Err(gguf_error(self.file, format!("tensor `{name}`: {m}")))
                }
            }
        }
        matrix(
            name,
            Source::F32(self.values(info)?),
            rows,
            cols,
            role,
            self.opts,
        )
    }
}

fn load_weights(
    file: &GgufFile,
    c: &ModelConfig,
    opts: &LoadOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ModelWeights, EngineError> {
    let r = Reader { file, opts };
    let stages = super::progress::LoadProgress::new(c.shape.layers, progress);
    // A block count beyond the tensors present fails here, before anything is sized by it.
    file.tensor(&format!(
        "blk.{}.attn_norm.weight",
        c.shape.layers.saturating_sub(1)
    ))?;
    let (h, q, kv, ffn, hd) = (
        c.shape.hidden,
        c.shape.q_dim(),
        c.shape.kv_dim(),
        c.shape.ffn,
        c.shape.head_dim,
    );
    let embedding = r.matrix("token_embd.weight", c.shape.vocab, h, MatrixRole::Embedding)?;
    stages.tick();
    let layers = (0..c.shape.layers)
        .into_par_iter()
        .map(|i| {
            let n = |t: &str| format!("blk.{i}.{t}");
            let lin = |t: &str, rows, cols| r.matrix(&n(t), rows, cols, MatrixRole::Linear);
            let bias = |t: &str, len| {
                c.qkv_bias
                    .then(|| r.vector(&n(&format!("{t}.bias")), len))
                    .transpose()
            };
            let has = |t: &str| file.header().tensor(&n(t)).is_some();
            let (wq, wk, wv) = if has("attn_qkv.weight") {
                let [wq, wk, wv] =
                    lin("attn_qkv.weight", q + 2 * kv, h)?.split_rows([q, kv, kv])?;
                (wq, wk, wv)
            } else {
                (
                    lin("attn_q.weight", q, h)?,
                    lin("attn_k.weight", kv, h)?,
                    lin("attn_v.weight", kv, h)?,
                )
            };
            let (bq, bk, bv) = match (c.qkv_bias, has("attn_qkv.weight")) {
                (false, _) => (None, None, None),
                (true, true) => {
                    let [bq, bk, bv] = r
                        .vector(&n("attn_qkv.bias"), q + 2 * kv)?
                        .split_vector([q, kv, kv])?;
                    (Some(bq), Some(bk), Some(bv))
                }
                (true, false) => (bias("attn_q", q)?, bias("attn_k", kv)?, bias("attn_v", kv)?),
            };
            let (w_gate, w_up) = if has("ffn_gate.weight") {
                (
                    lin("ffn_gate.weight", ffn, h)?,
                    lin("ffn_up.weight", ffn, h)?,
                )
            } else {
                // Fused: `ffn_up` holds gate rows, then up rows.
                let [gate, up] = lin("ffn_up.weight", 2 * ffn, h)?.split_rows([ffn, ffn])?;
                (gate, up)
            };
            let norm_if = |on: bool, t: &str, len| on.then(|| r.vector(&n(t), len)).transpose();
            let l = LayerWeights {
                attn_norm: r.vector(&n("attn_norm.weight"), h)?,
                wq,
                wk,
                wv,
                wo: lin("attn_output.weight", h, q)?,
                bq,
                bk,
                bv,
                ffn_norm: r.vector(&n("ffn_norm.weight"), h)?,
                w_gate,
                w_up,
                w_down: lin("ffn_down.weight", h, ffn)?,
                q_norm: norm_if(c.qk_norm, "attn_q_norm.weight", hd)?,
                k_norm: norm_if(c.qk_norm, "attn_k_norm.weight", hd)?,
                post_attn_norm: norm_if(c.post_norms, "post_attention_norm.weight", h)?,
                post_ffn_norm: norm_if(c.post_norms, "post_ffw_norm.weight", h)?,
            };
            stages.tick();
            Ok(l)
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let final_norm = r.vector("output_norm.weight", h)?;
    let lm_head = if c.tied_embeddings {
        None
    } else {
        Some(r.matrix("output.weight", c.shape.vocab, h, MatrixRole::Embedding)?)
    };
    stages.tick();
    Ok(ModelWeights {
        embedding,
        layers,
        final_norm,
        lm_head,
    })
}
