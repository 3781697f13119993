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

/// A model's rotary settings, from wherever the config keeps them.
struct RopeSettings {
    theta: Option<f32>,
    scaling: Option<RopeScaling>,
    partial_rotary: Option<f32>,
    /// Gemma 3's local layers' base, where `rope_parameters` gives one (`sliding_attention`).
    local_theta: Option<f32>,
}

/// The rotary settings of `config.json`. transformers 5 writes them as `rope_parameters` (`rope_theta`,
/// `rope_type` and that type's keys, and `partial_rotary_factor`; Gemma 3 nests one such object per layer type,
/// `full_attention` and `sliding_attention`) instead of the older top-level `rope_theta`, `rope_scaling` and
/// `partial_rotary_factor`, which are read where `rope_parameters` is absent or leaves them out.
fn rope_settings(f: &Fields<'_>) -> Result<RopeSettings, EngineError> {
    let legacy_theta = f.opt_f32("rope_theta")?;
    let legacy_partial = f.opt_f32("partial_rotary_factor")?;
    let Some(rp) = f.json.get("rope_parameters").filter(|v| !v.is_null()) else {
        return Ok(RopeSettings {
            theta: legacy_theta,
            scaling: f
                .json
                .get("rope_scaling")
                .filter(|v| !v.is_null())
                .map(|rs| parse_rope_scaling(f, rs))
                .transpose()?
                .flatten(),
            partial_rotary: legacy_partial,
            local_theta: None,
        });
    };
    if !rp.is_object() {
        return Err(f.err(format!("`rope_parameters` must be an object, got {rp}")));
    }
    let nested = ["full_attention", "sliding_attention"]
        .iter()
        .any(|k| rp.get(k).is_some());
    let (global, local) = if nested {
        let global = rp.get("full_attention").ok_or_else(|| {
            f.err("`rope_parameters` has per-layer-type entries but no `full_attention`".into())
        })?;
        (global, rp.get("sliding_attention"))
    } else {
        (rp, None)
    };
    let sub = |json| Fields { path: f.path, json };
    let local_theta = match local {
        None => None,
        Some(l) => {
            let l = sub(l);
            if let Some(s) = parse_rope_scaling(f, l.json)? {
                return Err(l.err(format!(
                    "rope_parameters.sliding_attention: scaling {s:?} is not supported (local layers rotate \
                     unscaled)"
                )));
            }
            l.opt_f32("rope_theta")?
        }
    };
    let g = sub(global);
    Ok(RopeSettings {
        theta: g.opt_f32("rope_theta")?.or(legacy_theta),
        scaling: parse_rope_scaling(f, global)?,
        partial_rotary: g.opt_f32("partial_rotary_factor")?.or(legacy_partial),
        local_theta,
    })
}

/// One rotary-scaling object (`rope_scaling`, or transformers 5's `rope_parameters`); `None` for the default
/// rotary.
fn parse_rope_scaling(f: &Fields<'_>, rs: &Value) -> Result<Option<RopeScaling>, EngineError> {
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
fn gemma2_features(
    f: &Fields<'_>,
    cfg: &mut ModelConfig,
    local_theta: Option<f32>,
) -> Result<(), EngineError> {
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
        let local = local_theta.or(f.opt_f32("rope_local_base_freq")?);
        cfg.rope_local_theta = Some(local.unwrap_or(10000.0));
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

/// SmolLM3's layers without rotary: `no_rope_layers` (one entry per layer, 1 where it rotates, 0 where it does
/// not), else every `no_rope_layer_interval`-th layer (default 4) without, as `SmolLM3Config` derives the list.
/// Its sliding window and MLP bias are refused by name: tlite does not implement them for this family.
fn smollm3_features(f: &Fields<'_>, cfg: &mut ModelConfig) -> Result<(), EngineError> {
    let layers = cfg.shape.layers;
    cfg.nope_layers = match f.json.get("no_rope_layers").filter(|v| !v.is_null()) {
        Some(list) => {
            let entries = list
                .as_array()
                .ok_or_else(|| f.err(format!("`no_rope_layers` must be a list, got {list}")))?;
            if entries.len() != layers {
                return Err(f.err(format!(
                    "`no_rope_layers` has {} entries for {layers} layers",
                    entries.len()
                )));
            }
            entries
                .iter()
                .map(|e| match e.as_u64() {
                    Some(1) => Ok(false),
                    Some(0) => Ok(true),
                    _ => Err(f.err(format!(
                        "`no_rope_layers` entry {e} must be 1 (the layer uses rotary) or 0 (it does not)"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        None => {
            let interval = f.opt_usize("no_rope_layer_interval")?.unwrap_or(4);
            if interval == 0 {
                return Err(f.err("`no_rope_layer_interval` must be positive".into()));
            }
            super::config::nope_every(layers, interval)
        }
    };
    let windowed = f.opt_bool("use_sliding_window")?.unwrap_or(false)
        && f.opt_usize("sliding_window")?.is_some_and(|w| w > 0);
    let sliding_types = f
        .json
        .get("layer_types")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|t| t.as_str() != Some("full_attention")));
    if windowed || sliding_types {
        return Err(f.err(
            "smollm3: `use_sliding_window` with a `sliding_window` (or `layer_types` other than \
             full_attention) is not supported: tlite does not implement SmolLM3's sliding-window layers"
                .into(),
        ));
    }
    if f.opt_bool("mlp_bias")?.unwrap_or(false) {
        return Err(f.err("smollm3: `mlp_bias` is not supported".into()));
    }
    Ok(())
}

/// Parses `config.json` (and `generation_config.json` beside it, when present) into a validated [`ModelConfig`].
pub(crate) fn parse_config(folder: &Path) -> Result<ModelConfig, EngineError> {
    let path = folder.join("config.json");
    let json = read_json(&path)?;
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
    let rope = rope_settings(&f)?;
    if rope.local_theta.is_some() && arch != Architecture::Gemma3 {
        return Err(f.err(format!(
            "`rope_parameters.sliding_attention` gives local layers a rotary of their own, which tlite applies \
             only to gemma3_text, not {model_type}"
        )));
    }
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
        rope_theta: rope.theta.unwrap_or(10000.0),
        rope_style: RopeStyle::HalfSplit,
        rope_scaling: rope.scaling,
        partial_rotary: rope.partial_rotary.unwrap_or(1.0),
        // transformers' own default where the key is absent (SmolLM3Config's is true).
        tied_embeddings: f
            .opt_bool("tie_word_embeddings")?
            .unwrap_or(gemma || arch == Architecture::SmolLm3),
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
        nope_layers: Vec::new(),
    };
    let gemma2 = matches!(arch, Architecture::Gemma2 | Architecture::Gemma3);
    if gemma2 {
        gemma2_features(&f, &mut cfg, rope.local_theta)?;
    }
    if arch == Architecture::SmolLm3 {
        smollm3_features(&f, &mut cfg)?;
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
                let [wq, wk, wv] =
                    lin("self_attn.qkv_proj", q + 2 * kv, h)?.split_rows([q, kv, kv])?;
                (wq, wk, wv)
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
                    let [bq, bk, bv] = vec(&format!("{p}.self_attn.qkv_proj.bias"), q + 2 * kv)?
                        .split_vector([q, kv, kv])?;
                    (Some(bq), Some(bk), Some(bv))
                }
                (true, false) => (bias("q_proj", q)?, bias("k_proj", kv)?, bias("v_proj", kv)?),
            };
            let (w_gate, w_up) = if st.get(&name("mlp.gate_up_proj")).is_ok() {
                let [gate, up] = lin("mlp.gate_up_proj", 2 * ffn, h)?.split_rows([ffn, ffn])?;
                (gate, up)
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

    /// SmolLM3's layers without rotary come from `no_rope_layers` (1 = rotates), else from the interval; its
    /// sliding window and anything malformed are refused by name.
    #[test]
    fn smollm3_layers_without_rotary_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        write_hf_folder(
            &TinySpec::for_arch(RefArch::SmolLm3),
            dir.path(),
            StoreDtype::F32,
            1,
        )
        .unwrap();
        let nope = |dir: &Path| parse_config(dir).unwrap().nope_layers;
        let c = parse_config(dir.path()).unwrap();
        assert_eq!(c.nope_layers, [false, false, false, true]);
        assert_eq!((c.rope_theta, c.tied_embeddings), (2.0e6, true));
        assert_eq!(
            (0..4).map(|l| c.layer_rotary_dim(l)).collect::<Vec<_>>(),
            [16, 16, 16, 0]
        );
        set_config(
            dir.path(),
            "no_rope_layers",
            serde_json::json!([0, 1, 1, 1]),
        );
        assert_eq!(nope(dir.path()), [true, false, false, false]);
        // Without the list, the interval decides (SmolLM3Config's derivation); 4 is the default.
        set_config(dir.path(), "no_rope_layers", Value::Null);
        set_config(dir.path(), "no_rope_layer_interval", 2.into());
        assert_eq!(nope(dir.path()), [false, true, false, true]);
        set_config(dir.path(), "no_rope_layer_interval", Value::Null);
        assert_eq!(nope(dir.path()), [false, false, false, true]);
        let refused = |key: &str, value: Value, needle: &str| {
            let before = read_json(&dir.path().join("config.json")).unwrap();
            set_config(dir.path(), key, value);
            let e = parse_config(dir.path()).unwrap_err().to_string();
            assert!(e.contains(needle), "{key}: {e}");
            std::fs::write(dir.path().join("config.json"), before.to_string()).unwrap();
        };
        refused(
            "no_rope_layers",
            serde_json::json!([1, 1, 0]),
            "3 entries for 4 layers",
        );
        refused(
            "no_rope_layers",
            serde_json::json!([1, 1, 2, 0]),
            "must be 1",
        );
        refused("no_rope_layer_interval", 0.into(), "must be positive");
        refused("mlp_bias", true.into(), "mlp_bias");
        refused(
            "layer_types",
            serde_json::json!([
                "full_attention",
                "full_attention",
                "full_attention",
                "sliding_attention"
            ]),
            "sliding-window layers",
        );
        set_config(dir.path(), "sliding_window", 8.into());
        assert_eq!(
            nope(dir.path()).len(),
            4,
            "a window that is off is no refusal"
        );
        refused("use_sliding_window", true.into(), "use_sliding_window");
    }

    /// transformers 5 keeps the rotary in `rope_parameters` (Gemma 3: one object per layer type); the older
    /// top-level keys are read where it is absent, and what it leaves out.
    #[test]
    fn rope_parameters_of_transformers_5() {
        let dir = tempfile::tempdir().unwrap();
        write_hf_folder(
            &TinySpec::for_arch(RefArch::Llama),
            dir.path(),
            StoreDtype::F32,
            1,
        )
        .unwrap();
        set_config(dir.path(), "rope_scaling", Value::Null);
        set_config(dir.path(), "rope_theta", 1234.0.into());
        set_config(
            dir.path(),
            "rope_parameters",
            serde_json::json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
                "partial_rotary_factor": 0.5}),
        );
        let c = parse_config(dir.path()).unwrap();
        assert_eq!((c.rope_theta, c.partial_rotary), (500000.0, 0.5));
        assert_eq!(
            c.rope_scaling,
            Some(RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_ctx: 8192,
            })
        );
        set_config(
            dir.path(),
            "rope_parameters",
            serde_json::json!({"rope_type": "default"}),
        );
        let c = parse_config(dir.path()).unwrap();
        assert_eq!(
            (c.rope_theta, &c.rope_scaling),
            (1234.0, &None),
            "top-level theta"
        );
        set_config(
            dir.path(),
            "rope_parameters",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}),
        );
        let e = parse_config(dir.path()).unwrap_err().to_string();
        assert!(e.contains("`yarn` is not supported"), "{e}");
        set_config(
            dir.path(),
            "rope_parameters",
            serde_json::json!({"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                "full_attention": {"rope_type": "default", "rope_theta": 1e6}}),
        );
        let e = parse_config(dir.path()).unwrap_err().to_string();
        assert!(e.contains("only to gemma3_text"), "{e}");

        // Gemma 3's per-layer-type form: the local base from `sliding_attention`, the global rotary from
        // `full_attention`.
        let dir = tempfile::tempdir().unwrap();
        write_hf_folder(
            &TinySpec::for_arch(RefArch::Gemma3),
            dir.path(),
            StoreDtype::F32,
            1,
        )
        .unwrap();
        for k in ["rope_scaling", "rope_theta", "rope_local_base_freq"] {
            set_config(dir.path(), k, Value::Null);
        }
        set_config(
            dir.path(),
            "rope_parameters",
            serde_json::json!({"sliding_attention": {"rope_type": "default", "rope_theta": 2e4},
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}),
        );
        let c = parse_config(dir.path()).unwrap();
        assert_eq!(c.layer_rope(0), (2e4, None));
        assert_eq!(
            c.layer_rope(1),
            (1e6, Some(&RopeScaling::Linear { factor: 8.0 }))
        );
        set_config(
            dir.path(),
            "rope_parameters",
            serde_json::json!({"sliding_attention": {"rope_type": "linear", "factor": 2.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1e6}}),
        );
        let e = parse_config(dir.path()).unwrap_err().to_string();
        assert!(e.contains("local layers rotate unscaled"), "{e}");
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
