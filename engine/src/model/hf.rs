//! Hugging Face model folders: `config.json`, `generation_config.json`, safetensors shards.

use super::convert::{matrix, vector, MatrixRole, Source};
use super::st_files::SafetensorsSet;
use super::{
    Activation, Architecture, LayerWeights, LoadOptions, Model, ModelConfig, ModelShape,
    ModelWeights, RopeScaling, RopeStyle, SlidingWindow,
};
use crate::EngineError;
use rayon::prelude::*;
use serde_json::Value;
use std::path::Path;

/// Reads and parses a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<Value, EngineError> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| EngineError::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Typed access to a config object, with errors naming the file and the key.
struct Fields<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl Fields<'_> {
    fn err(&self, msg: String) -> EngineError {
        EngineError::InvalidConfig(format!("{}: {msg}", self.path.display()))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, EngineError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.err(format!("`{key}` must be a non-negative integer, got {v}"))
                }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize, EngineError> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(format!("missing `{key}`")))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>, EngineError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| self.err(format!("`{key}` must be a number, got {v}"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, EngineError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(format!("`{key}` must be true or false, got {v}"))),
        }
    }

    fn opt_str(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(Value::as_str)
    }

    /// A token id or a list of them (`eos_token_id` may be either).
    fn ids(&self, key: &str) -> Result<Vec<u32>, EngineError> {
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| {
                    self.err(format!(
                        "`{key}` must be a token id or a list of them, got {v}"
                    ))
                })
        };
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

fn parse_rope_scaling(f: &Fields<'_>) -> Result<Option<RopeScaling>, EngineError> {
    let Some(rs) = f.json.get("rope_scaling").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let sub = Fields {
        path: f.path,
        json: rs,
    };
    let kind = sub
        .opt_str("rope_type")
        .or_else(|| sub.opt_str("type"))
        .unwrap_or("default");
    let factor = || {
        sub.opt_f32("factor")?
            .ok_or_else(|| sub.err("rope_scaling: missing `factor`".into()))
    };
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear { factor: factor()? })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: sub.opt_f32("low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: sub.opt_f32("high_freq_factor")?.unwrap_or(4.0),
            original_max_ctx: sub
                .opt_usize("original_max_position_embeddings")?
                .unwrap_or(8192),
        })),
        "longrope" | "su" => long_rope(f, &sub).map(Some),
        other => Err(sub.err(format!(
            "rope_scaling type `{other}` is not supported (linear, llama3 and longrope are)"
        ))),
    }
}

/// A list of numbers (longrope's factor tables).
fn f32_list(sub: &Fields<'_>, key: &str) -> Result<Vec<f32>, EngineError> {
    let Some(Value::Array(a)) = sub.json.get(key) else {
        return Err(sub.err(format!("rope_scaling: `{key}` must be a list of numbers")));
    };
    a.iter()
        .map(|v| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| sub.err(format!("rope_scaling: `{key}` holds {v}, not a number")))
        })
        .collect()
}

/// Phi-3's longrope, as transformers' `_compute_longrope_parameters` reads it: the pre-training context is the
/// top-level `original_max_position_embeddings` (then the extension factor is `max_position_embeddings` over it),
/// else the one in `rope_scaling` beside its `factor`; without an explicit `attention_factor`, it is
/// `sqrt(1 + ln(factor) / ln(original))` for a factor above 1, and 1 otherwise.
fn long_rope(f: &Fields<'_>, sub: &Fields<'_>) -> Result<RopeScaling, EngineError> {
    let max_pos = f.opt_usize("max_position_embeddings")?.unwrap_or(2048);
    let (original_max_ctx, factor) = match f.opt_usize("original_max_position_embeddings")? {
        Some(orig) if orig > 0 => (orig, max_pos as f64 / orig as f64),
        _ => (
            sub.opt_usize("original_max_position_embeddings")?
                .unwrap_or(max_pos),
            f64::from(sub.opt_f32("factor")?.unwrap_or(1.0)),
        ),
    };
    let attn_factor = match sub.opt_f32("attention_factor")? {
        Some(a) => a,
        None if factor > 1.0 && original_max_ctx > 1 => {
            (1.0 + factor.ln() / (original_max_ctx as f64).ln()).sqrt() as f32
        }
        None => 1.0,
    };
    Ok(RopeScaling::LongRope {
        short_factors: f32_list(sub, "short_factor")?,
        long_factors: f32_list(sub, "long_factor")?,
        original_max_ctx,
        attn_factor,
    })
}

/// Gemma 2 and 3 (text): query scalar, soft-caps, which layers are local (`layer_types`, else every
/// `sliding_window_pattern`-th layer global: 2 for Gemma 2, 6 by default for Gemma 3) and Gemma 3's local rope base.
/// Gemma 3 scales only its global layers' rotary, and only linearly: anything else is refused by name.
fn gemma2_features(f: &Fields<'_>, cfg: &mut ModelConfig) -> Result<(), EngineError> {
    let gemma3 = cfg.arch == Architecture::Gemma3;
    cfg.query_pre_attn_scalar = f.opt_f32("query_pre_attn_scalar")?;
    cfg.attn_softcap = f.opt_f32("attn_logit_softcapping")?;
    cfg.final_softcap = f.opt_f32("final_logit_softcapping")?;
    let layers = cfg.shape.layers;
    if let Some(window) = f.opt_usize("sliding_window")? {
        let local_layers = match f.json.get("layer_types").filter(|v| !v.is_null()) {
            Some(types) => {
                let list = types
                    .as_array()
                    .ok_or_else(|| f.err(format!("`layer_types` must be a list, got {types}")))?;
                list.iter()
                    .map(|t| match t.as_str() {
                        Some("sliding_attention") => Ok(true),
                        Some("full_attention") => Ok(false),
                        _ => Err(f.err(format!(
                            "`layer_types` entry {t} is not supported (sliding_attention and full_attention are)"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let period = if gemma3 {
                    f.opt_usize("sliding_window_pattern")?.unwrap_or(6)
                } else {
                    2
                };
                SlidingWindow::global_every(window, layers, period).local_layers
            }
        };
        cfg.sliding_window = Some(SlidingWindow {
            window,
            local_layers,
        });
    }
    if gemma3 {
        cfg.rope_local_theta = Some(f.opt_f32("rope_local_base_freq")?.unwrap_or(10000.0));
        if let Some(s) = cfg
            .rope_scaling
            .as_ref()
            .filter(|s| !matches!(s, RopeScaling::Linear { .. }))
        {
            return Err(f.err(format!(
                "gemma3_text: rope_scaling {s:?} is not supported (Gemma 3 scales its global layers linearly)"
            )));
        }
    }
    Ok(())
}

/// Parses `config.json` (and `generation_config.json` beside it, when present) into a validated [`ModelConfig`].
pub(crate) fn parse_config(folder: &Path) -> Result<ModelConfig, EngineError> {
    let path = folder.join("config.json");
    let mut json = read_json(&path)?;
    super::hf_rope_params::fill_legacy_rope_keys(&mut json, &path)?;
    let f = Fields {
        path: &path,
        json: &json,
    };
    let model_type = f
        .opt_str("model_type")
        .ok_or_else(|| f.err("missing `model_type`".into()))?;
    let arch = Architecture::from_model_type(model_type)?;
    let hidden = f.usize("hidden_size")?;
    let heads = f.usize("num_attention_heads")?;
    if heads == 0 {
        return Err(f.err("num_attention_heads must be positive".into()));
    }
    let head_dim = match f.opt_usize("head_dim")? {
        Some(d) => d,
        None => {
            if hidden % heads != 0 {
                return Err(f.err(format!(
                    "num_attention_heads {heads} does not divide hidden_size {hidden}"
                )));
            }
            hidden / heads
        }
    };
    let act_name = f
        .opt_str("hidden_activation")
        .or_else(|| f.opt_str("hidden_act"))
        .unwrap_or("silu");
    let activation = match (arch, act_name) {
        (a, "gelu" | "gelu_pytorch_tanh" | "gelu_new") if a.is_gemma() => Activation::GeluTanh,
        (_, "silu" | "swish") => Activation::Silu,
        (_, other) => {
            return Err(f.err(format!(
                "activation `{other}` is not supported for {model_type}"
            )))
        }
    };
    let gemma = arch.is_gemma();
    let mut cfg = ModelConfig {
        arch,
        shape: ModelShape {
            hidden,
            ffn: f.usize("intermediate_size")?,
            layers: f.usize("num_hidden_layers")?,
            heads,
            kv_heads: f.opt_usize("num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            vocab: f.usize("vocab_size")?,
            max_ctx: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
        },
        norm_eps: f.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: f.opt_f32("rope_theta")?.unwrap_or(10000.0),
        rope_style: RopeStyle::HalfSplit,
        rope_scaling: parse_rope_scaling(&f)?,
        partial_rotary: f.opt_f32("partial_rotary_factor")?.unwrap_or(1.0),
        tied_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(gemma),
        qkv_bias: arch == Architecture::Qwen2 || f.opt_bool("attention_bias")?.unwrap_or(false),
        activation,
        norm_plus_one: gemma,
        embed_scale: gemma.then(|| (hidden as f32).sqrt()),
        bos: f.ids("bos_token_id")?.first().copied(),
        eos: f.ids("eos_token_id")?,
        qk_norm: matches!(arch, Architecture::Qwen3 | Architecture::Gemma3),
        post_norms: matches!(arch, Architecture::Gemma2 | Architecture::Gemma3),
        query_pre_attn_scalar: None,
        attn_softcap: None,
        final_softcap: None,
        sliding_window: None,
        rope_local_theta: None,
    };
    let gemma2 = matches!(arch, Architecture::Gemma2 | Architecture::Gemma3);
    if gemma2 {
        gemma2_features(&f, &mut cfg)?;
    }
    // Mistral and Phi-3 attend through their window in every layer.
    let mistral_window = f
        .opt_usize("sliding_window")?
        .filter(|&w| matches!(arch, Architecture::Mistral | Architecture::Phi3) && w > 0);
    if let Some(window) = mistral_window {
        cfg.sliding_window = Some(SlidingWindow {
            window,
            local_layers: vec![true; cfg.shape.layers],
        });
    }
    // Qwen's sliding window is not applied (it covers only some layers, by rules of its own); within the window
    // it equals full attention, so the usable context is capped at the window instead of silently computing
    // something else beyond it.
    let sliding = !gemma2
        && !matches!(arch, Architecture::Mistral | Architecture::Phi3)
        && f.opt_bool("use_sliding_window")?.unwrap_or(false);
    if let (true, Some(window)) = (sliding, f.opt_usize("sliding_window")?) {
        if window > 0 && window < cfg.shape.max_ctx {
            tracing::info!(
                "{}: context capped at the sliding window of {window} tokens",
                path.display()
            );
            cfg.shape.max_ctx = window;
        }
    }
    let gen_path = folder.join("generation_config.json");
    if gen_path.is_file() {
        let gen = read_json(&gen_path)?;
        let g = Fields {
            path: &gen_path,
            json: &gen,
        };
        if let Some(bos) = g.ids("bos_token_id")?.first() {
            cfg.bos = Some(*bos);
        }
        let eos = g.ids("eos_token_id")?;
        if !eos.is_empty() {
            cfg.eos = eos;
        }
    }
    cfg.validate_in(&path)?;
    Ok(cfg)
}

/// Loads a Hugging Face folder's weights, converted as `opts` asks.
pub(crate) fn load_folder(
    folder: &Path,
    opts: &LoadOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Model, EngineError> {
    let config = parse_config(folder)?;
    let st = SafetensorsSet::open_folder(folder)?;
    check_no_extra_layer(&st, &config, folder)?;
    if let Some(warning) = tied_head_conflict(&st, &config, folder) {
        tracing::warn!("{warning}");
    }
    let weights = load_weights(&st, &config, opts, progress)?;
    Ok(Model { config, weights })
}

/// The next part of a cut tensor (`split_rows` returns as many parts as asked).
fn next(parts: &mut impl Iterator<Item = super::Tensor>) -> Result<super::Tensor, EngineError> {
    parts
        .next()
        .ok_or_else(|| EngineError::Model("a fused tensor was cut into too few parts".into()))
}

fn load_weights(
    st: &SafetensorsSet,
    c: &ModelConfig,
    opts: &LoadOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ModelWeights, EngineError> {
    let stages = super::progress::LoadProgress::new(c.shape.layers, progress);
    let mat = |name: &str, rows: usize, cols: usize, role: MatrixRole| {
        let raw = st.get(name)?;
        raw.expect_shape(&[rows, cols])?;
        matrix(name, Source::Raw(raw), rows, cols, role, opts)
    };
    let vec = |name: &str, len: usize| {
        let raw = st.get(name)?;
        raw.expect_shape(&[len])?;
        vector(name, Source::Raw(raw), len, opts)
    };
    // A config claiming more layers than the files hold fails here, before anything is sized by the claim.
    st.get(&format!(
        "model.layers.{}.input_layernorm.weight",
        c.shape.layers.saturating_sub(1)
    ))?;
    let (h, q, kv, ffn, hd) = (
        c.shape.hidden,
        c.shape.q_dim(),
        c.shape.kv_dim(),
        c.shape.ffn,
        c.shape.head_dim,
    );
    let embedding = mat(
        "model.embed_tokens.weight",
        c.shape.vocab,
        h,
        MatrixRole::Embedding,
    )?;
    stages.tick();
    let layers = (0..c.shape.layers)
        .into_par_iter()
        .map(|i| {
            let p = format!("model.layers.{i}");
            let bias = |n: &str, len: usize| {
                if c.qkv_bias {
                    vec(&format!("{p}.self_attn.{n}.bias"), len).map(Some)
                } else {
                    Ok(None)
                }
            };
            let norm_if = |on: bool, n: &str, len: usize| {
                on.then(|| vec(&format!("{p}.{n}.weight"), len)).transpose()
            };
            // Gemma 2 and 3 call the MLP's pre-norm `pre_feedforward_layernorm`, and their
            // `post_attention_layernorm` is the attention output's post norm.
            let ffn_norm = if c.post_norms {
                "pre_feedforward_layernorm"
            } else {
                "post_attention_layernorm"
            };
            let name = |t: &str| format!("{p}.{t}.weight");
            let lin = |t: &str, rows, cols| mat(&name(t), rows, cols, MatrixRole::Linear);
            // Phi-3 fuses q|k|v into `qkv_proj` and gate|up into `gate_up_proj` (gate rows first); they are cut
            // here so the rest of the engine sees the usual matrices.
            let fused_qkv = st.get(&name("self_attn.qkv_proj")).is_ok();
            let (wq, wk, wv) = if fused_qkv {
                let mut parts = lin("self_attn.qkv_proj", q + 2 * kv, h)?
                    .split_rows(&[q, kv, kv])?
                    .into_iter();
                (next(&mut parts)?, next(&mut parts)?, next(&mut parts)?)
            } else {
                (
                    lin("self_attn.q_proj", q, h)?,
                    lin("self_attn.k_proj", kv, h)?,
                    lin("self_attn.v_proj", kv, h)?,
                )
            };
            let (bq, bk, bv) = match (c.qkv_bias, fused_qkv) {
                (false, _) => (None, None, None),
                (true, true) => {
                    let mut parts = vec(&format!("{p}.self_attn.qkv_proj.bias"), q + 2 * kv)?
                        .split_vector(&[q, kv, kv])?
                        .into_iter();
                    (
                        Some(next(&mut parts)?),
                        Some(next(&mut parts)?),
                        Some(next(&mut parts)?),
                    )
                }
                (true, false) => (bias("q_proj", q)?, bias("k_proj", kv)?, bias("v_proj", kv)?),
            };
            let (w_gate, w_up) = if st.get(&name("mlp.gate_up_proj")).is_ok() {
                let mut parts = lin("mlp.gate_up_proj", 2 * ffn, h)?
                    .split_rows(&[ffn, ffn])?
                    .into_iter();
                (next(&mut parts)?, next(&mut parts)?)
            } else {
                (lin("mlp.gate_proj", ffn, h)?, lin("mlp.up_proj", ffn, h)?)
            };
            let l = LayerWeights {
                attn_norm: vec(&format!("{p}.input_layernorm.weight"), h)?,
                wq,
                wk,
                wv,
                wo: lin("self_attn.o_proj", h, q)?,
                bq,
                bk,
                bv,
                ffn_norm: vec(&format!("{p}.{ffn_norm}.weight"), h)?,
                w_gate,
                w_up,
                w_down: lin("mlp.down_proj", h, ffn)?,
                q_norm: norm_if(c.qk_norm, "self_attn.q_norm", hd)?,
                k_norm: norm_if(c.qk_norm, "self_attn.k_norm", hd)?,
                post_attn_norm: norm_if(c.post_norms, "post_attention_layernorm", h)?,
                post_ffn_norm: norm_if(c.post_norms, "post_feedforward_layernorm", h)?,
            };
            stages.tick();
            Ok(l)
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let final_norm = vec("model.norm.weight", h)?;
    let lm_head = if c.tied_embeddings {
        None
    } else {
        Some(mat(
            "lm_head.weight",
            c.shape.vocab,
            h,
            MatrixRole::Embedding,
        )?)
    };
    stages.tick();
    Ok(ModelWeights {
        embedding,
        layers,
        final_norm,
        lm_head,
    })
}

/// A config claiming fewer layers than the files hold would run a truncated model and print fluent-looking
/// nonsense; it is refused, naming the first layer the config leaves out.
fn check_no_extra_layer(
    st: &SafetensorsSet,
    c: &ModelConfig,
    folder: &Path,
) -> Result<(), EngineError> {
    let n = c.shape.layers;
    let extra = [
        format!("model.layers.{n}.input_layernorm.weight"),
        format!("model.layers.{n}.self_attn.q_proj.weight"),
        format!("model.layers.{n}.self_attn.qkv_proj.weight"),
    ]
    .into_iter()
    .find(|name| st.get(name).is_ok());
    match extra {
        None => Ok(()),
        Some(name) => Err(EngineError::InvalidConfig(format!(
            "{}: config.json says num_hidden_layers = {n} but the safetensors also hold `{name}`: the config does \
             not describe these weights",
            folder.display()
        ))),
    }
}

/// The warning for a tied head (`tie_word_embeddings`, or Gemma's default) beside an `lm_head.weight` that differs
/// from the embedding: like transformers, tlite uses the embedding and ignores the stored head, which the user
/// should hear about. An identical copy (some exporters write both) needs no word.
pub(crate) fn tied_head_conflict(
    st: &SafetensorsSet,
    c: &ModelConfig,
    folder: &Path,
) -> Option<String> {
    if !c.tied_embeddings {
        return None;
    }
    let head = st.get("lm_head.weight").ok()?;
    let same = st
        .get("model.embed_tokens.weight")
        .is_ok_and(|e| e.dtype == head.dtype && e.shape == head.shape && e.bytes == head.bytes);
    (!same).then(|| {
        format!(
            "{}: config.json ties the output head to the embedding (tie_word_embeddings) but the files also hold a \
             different `lm_head.weight`; it is ignored, as transformers ignores it (set tie_word_embeddings to \
             false to use it)",
            folder.display()
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fixtures::reference_model::RefArch;
    use fixtures::tiny_models::{
        generate, write_hf_folder, write_safetensors, StoreDtype, TinySpec,
    };

    fn set_config(dir: &Path, key: &str, value: Value) {
        let p = dir.join("config.json");
        let mut j = read_json(&p).unwrap();
        j[key] = value;
        std::fs::write(&p, j.to_string()).unwrap();
    }

    /// What tlite does not run of these families is refused by name, never run as something else.
    #[test]
    fn unsupported_gemma_features_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write_hf_folder(
            &TinySpec::for_arch(RefArch::Gemma3),
            dir.path(),
            StoreDtype::F32,
            1,
        )
        .unwrap();
        let c = parse_config(dir.path()).unwrap();
        // The tiny Gemma 3: layer 0 local with its own base, layer 1 global with linear scaling.
        assert_eq!(c.layer_rope(0), (10000.0, None));
        assert_eq!(
            c.layer_rope(1),
            (1.0e6, Some(&RopeScaling::Linear { factor: 2.0 }))
        );
        let refused = |key: &str, value: Value, needle: &str| {
            let before = read_json(&dir.path().join("config.json")).unwrap();
            set_config(dir.path(), key, value);
            let e = parse_config(dir.path()).unwrap_err().to_string();
            assert!(e.contains(needle), "{key}: {e}");
            std::fs::write(dir.path().join("config.json"), before.to_string()).unwrap();
        };
        refused(
            "rope_scaling",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
            "Gemma 3 scales its global layers linearly",
        );
        refused(
            "layer_types",
            serde_json::json!(["chunked_attention", "full_attention"]),
            "chunked_attention",
        );
        refused(
            "layer_types",
            serde_json::json!(["sliding_attention"]),
            "names 1 layers, the model has 2",
        );
        refused(
            "attn_logit_softcapping",
            (-1.0).into(),
            "attn_logit_softcapping",
        );
        refused(
            "sliding_window",
            0.into(),
            "sliding_window must be at least 1",
        );
        refused("model_type", "gemma3".into(), "gemma3_text");
    }

    #[test]
    fn a_tied_config_beside_a_different_head_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TinySpec::for_arch(RefArch::Llama);
        assert!(!spec.tied);
        write_hf_folder(&spec, dir.path(), StoreDtype::F32, 1).unwrap();
        let st = SafetensorsSet::open_folder(dir.path()).unwrap();
        assert!(tied_head_conflict(&st, &parse_config(dir.path()).unwrap(), dir.path()).is_none());
        set_config(dir.path(), "tie_word_embeddings", Value::Bool(true));
        let w = tied_head_conflict(&st, &parse_config(dir.path()).unwrap(), dir.path()).unwrap();
        assert!(w.contains("different `lm_head.weight`"), "{w}");

        // An identical copy of the embedding is what some exporters write: no warning.
        let mut model = generate(&spec, fixtures::ops::RopeStyle::HalfSplit);
        model.weights.lm_head = Some(model.weights.embedding.clone());
        write_safetensors(&model, dir.path(), StoreDtype::F32, 1).unwrap();
        let st = SafetensorsSet::open_folder(dir.path()).unwrap();
        assert!(tied_head_conflict(&st, &parse_config(dir.path()).unwrap(), dir.path()).is_none());
    }
}
