//! tlite's own quantised folder: `config.json` holding the resolved [`ModelConfig`] (marked `tlite_format`) and the
//! SHA-256 of the configuration and of every tensor, one `model.safetensors` written through `fp4::io` (M0E4
//! matrices as codes/scales/offsets, everything else f16), and the tokenizer files copied from the source (or, for a
//! source that keeps its vocabulary inside, such as a GGUF file, written from it by the caller). Loading
//! it converts nothing but f16 norm vectors back to f32, after checking every checksum.
//!
//! Writing is atomic (see `place`): the folder is built beside the target and renamed into place, `config.json`
//! written last, so a folder that loads is always complete.

mod digest;
mod gguf_error;
mod place;

pub use gguf_error::{gguf_requant_errors, SourceTypeError};
pub use place::check_output;

use super::hf::read_json;
use super::st_files::f32_to_f16_checked;
use super::{LayerWeights, Model, ModelConfig, ModelWeights, Tensor, TensorData};
use crate::EngineError;
use half::f16;
use std::path::Path;

/// Version of the folder layout, the value of `tlite_format` in `config.json` (2: checksums added).
pub const FORMAT_VERSION: u64 = 2;
/// Files copied from the source folder (or from beside a llama2.c checkpoint) when present.
pub const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "tokenizer.bin",
    "generation_config.json",
];
/// Of [`TOKENIZER_FILES`], those a tokenizer can be built from.
const VOCABULARY_FILES: [&str; 3] = ["tokenizer.json", "tokenizer.model", "tokenizer.bin"];

/// True when `folder/config.json` marks a tlite quantised folder.
pub(crate) fn is_tlite_folder(folder: &Path) -> bool {
    read_json(&folder.join("config.json")).is_ok_and(|j| j.get("tlite_format").is_some())
}

/// Every tensor of a model with its short name (its name in a tlite folder), in a fixed order.
pub(crate) fn named(w: &ModelWeights) -> Vec<(String, &Tensor)> {
    let mut v = vec![("embedding".to_string(), &w.embedding)];
    for (i, l) in w.layers.iter().enumerate() {
        let p = format!("layers.{i}");
        for (n, t) in [
            ("attn_norm", &l.attn_norm),
            ("wq", &l.wq),
            ("wk", &l.wk),
            ("wv", &l.wv),
            ("wo", &l.wo),
            ("ffn_norm", &l.ffn_norm),
            ("w_gate", &l.w_gate),
            ("w_up", &l.w_up),
            ("w_down", &l.w_down),
        ] {
            v.push((format!("{p}.{n}"), t));
        }
        for (n, t) in l.optional_vectors() {
            v.push((format!("{p}.{n}"), t));
        }
    }
    v.push(("final_norm".to_string(), &w.final_norm));
    if let Some(t) = &w.lm_head {
        v.push(("lm_head".to_string(), t));
    }
    v
}

/// What [`save_to`] wrote besides the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Tokenizer and generation files copied from the source, by name.
    pub copied: Vec<String>,
    /// Tokenizer files the caller handed over as bytes (see [`save_to`]), by name.
    pub written: Vec<String>,
    /// True when one of the copied files is a vocabulary (`tokenizer.json`, `tokenizer.model`, `tokenizer.bin`):
    /// without one the folder loads but cannot tokenize.
    pub has_vocabulary: bool,
}

/// Writes `model` as a tlite folder at `out`, copying tokenizer files from `tokenizer_dir`; see [`save_to`].
pub fn save(model: &Model, tokenizer_dir: &Path, out: &Path) -> Result<Saved, EngineError> {
    save_to(model, Some(tokenizer_dir), &[], out)
}

/// Writes `model` as a tlite folder at `out`, copying the tokenizer files found in `tokenizer_dir` and writing
/// `generated` (name, bytes) beside them: tokenizer files made from a source that has none as files (a GGUF's
/// vocabulary). Each name must be one of [`TOKENIZER_FILES`], so a later save recognises the folder as its own;
/// a generated file takes the place of a copied one of the same name. They go through the same atomic write as
/// the weights, so a folder that loads always has its tokenizer.
///
/// `out` must be absent, an empty folder, or a folder holding only what an earlier save wrote (it is then
/// replaced as a whole, so no stale file survives); anything else is refused before a byte is written.
pub fn save_to(
    model: &Model,
    tokenizer_dir: Option<&Path>,
    generated: &[(&str, &[u8])],
    out: &Path,
) -> Result<Saved, EngineError> {
    if let Some((name, _)) = generated.iter().find(|(n, _)| !TOKENIZER_FILES.contains(n)) {
        return Err(EngineError::Model(format!(
            "`{name}` is not a tokenizer file a tlite folder holds (one of {})",
            TOKENIZER_FILES.join(", ")
        )));
    }
    let stage = place::Staging::new(out)?;

    // f32 tensors (norms, biases) are stored as f16; loading with f16 or M0E4 already rounded them, so this is
    // exact, and anything that would not be (an f32-loaded model) is refused rather than silently rounded.
    let mut matrices: Vec<(String, &fp4::M0e4Matrix)> = Vec::new();
    let mut dense: Vec<(String, Vec<usize>, Vec<f16>)> = Vec::new();
    for (name, t) in named(&model.weights) {
        match &t.data {
            TensorData::M0e4(m) => matrices.push((name, m)),
            TensorData::F16(v) => dense.push((name, t.shape.clone(), v.clone())),
            TensorData::F32(v) => {
                let h = f32_to_f16_checked(v)
                    .ok()
                    .filter(|h| h.iter().zip(v).all(|(a, b)| a.to_f32() == *b));
                let h = h.ok_or_else(|| {
                    EngineError::Model(format!(
                        "tensor `{name}` is f32 with values f16 cannot hold exactly: a tlite folder stores f16 and \
                         M0E4, so load the model with WeightFormat::F16 or M0e4 before saving"
                    ))
                })?;
                dense.push((name, t.shape.clone(), h));
            }
        }
    }
    let m_refs: Vec<(&str, &fp4::M0e4Matrix)> =
        matrices.iter().map(|(n, m)| (n.as_str(), *m)).collect();
    let d_refs: Vec<(&str, &[usize], &[f16])> = dense
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice()))
        .collect();
    let bytes = fp4::io::to_bytes(&m_refs, &d_refs)?;
    let tensors = digest::tensor_digests(&fp4::io::parse(&bytes, "model.safetensors")?);
    stage.write("model.safetensors", &bytes)?;
    drop(bytes);

    let mut written = Vec::new();
    for (name, bytes) in generated {
        stage.write(name, bytes)?;
        written.push(name.to_string());
    }
    let mut copied = Vec::new();
    for f in TOKENIZER_FILES {
        if written.iter().any(|w| w == f) {
            continue;
        }
        let Some(src) = tokenizer_dir.map(|d| d.join(f)).filter(|p| p.is_file()) else {
            continue;
        };
        let data = std::fs::read(&src).map_err(|e| EngineError::io(&src, e))?;
        stage.write(f, &data)?;
        copied.push(f.to_string());
    }

    // Last: until config.json exists, the folder is not a model.
    let tlite_config = serde_json::to_value(&model.config).map_err(|e| EngineError::Json {
        path: out.join("config.json"),
        source: e,
    })?;
    let config = serde_json::json!({
        "tlite_format": FORMAT_VERSION,
        "model_type": model.config.arch.model_type(),
        "sha256": digest::to_json(&tlite_config, tensors),
        "tlite_config": tlite_config,
    });
    let text = serde_json::to_string_pretty(&config).map_err(|e| EngineError::Json {
        path: out.join("config.json"),
        source: e,
    })?;
    stage.write("config.json", text.as_bytes())?;
    stage.commit()?;
    let has_vocabulary = copied
        .iter()
        .chain(&written)
        .any(|f| VOCABULARY_FILES.contains(&f.as_str()));
    Ok(Saved {
        copied,
        written,
        has_vocabulary,
    })
}

/// Tensors of a file read by `fp4::io`, handed out by name with their shape checked.
struct Stored {
    path: std::path::PathBuf,
    file: fp4::io::M0e4File,
}

impl Stored {
    /// The tensor `name` shaped `shape`: an M0E4 matrix, an f16 matrix, or (`vector`) an f32 vector.
    fn take(&mut self, name: &str, shape: &[usize], vector: bool) -> Result<Tensor, EngineError> {
        let shape_err = |actual: Vec<usize>| EngineError::TensorShape {
            path: self.path.clone(),
            tensor: name.to_string(),
            expected: shape.to_vec(),
            actual,
        };
        if let Some(m) = self.file.matrices.remove(name) {
            let s = m.shape();
            if vector || [s.rows, s.cols] != shape {
                return Err(shape_err(vec![s.rows, s.cols]));
            }
            return Ok(Tensor::m0e4(m));
        }
        let d = self
            .file
            .dense
            .remove(name)
            .ok_or_else(|| EngineError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })?;
        if d.shape != shape {
            return Err(shape_err(d.shape));
        }
        if vector {
            Tensor::f32(d.shape, d.data.iter().map(|x| x.to_f32()).collect())
        } else {
            Tensor::f16(d.shape, d.data)
        }
    }
}

/// A tlite folder's `config.json`: the whole object and the configuration it holds, validated.
fn read_folder_config(folder: &Path) -> Result<(serde_json::Value, ModelConfig), EngineError> {
    let cfg_path = folder.join("config.json");
    let json = read_json(&cfg_path)?;
    match json.get("tlite_format").and_then(serde_json::Value::as_u64) {
        Some(FORMAT_VERSION) => {}
        Some(1) => {
            return Err(EngineError::Model(format!(
                "{}: written by an older tlite (tlite_format 1, without checksums); quantise the model again",
                cfg_path.display()
            )))
        }
        _ => {
            let found = json
                .get("tlite_format")
                .map_or_else(|| "missing".to_string(), |v| v.to_string());
            return Err(EngineError::Model(format!(
                "{}: tlite_format is {found}, not the supported version {FORMAT_VERSION}",
                cfg_path.display()
            )));
        }
    }
    let cfg_json = json.get("tlite_config").cloned().ok_or_else(|| {
        EngineError::InvalidConfig(format!("{}: missing `tlite_config`", cfg_path.display()))
    })?;
    let c: ModelConfig = serde_json::from_value(cfg_json).map_err(|e| EngineError::Json {
        path: cfg_path.clone(),
        source: e,
    })?;
    c.validate_in(&cfg_path)?;
    Ok((json, c))
}

/// Reads a tlite folder's configuration.
pub(crate) fn load_folder_config(folder: &Path) -> Result<ModelConfig, EngineError> {
    Ok(read_folder_config(folder)?.1)
}

/// Loads a tlite folder, checking the configuration and every tensor against their checksums first.
pub(crate) fn load_folder(
    folder: &Path,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Model, EngineError> {
    let (json, c) = read_folder_config(folder)?;
    let path = folder.join("model.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
    let parsed = fp4::io::parse(&bytes, &path.display().to_string())?;
    digest::verify(
        &folder.join("config.json"),
        &path,
        json.get("sha256"),
        json.get("tlite_config").unwrap_or(&serde_json::Value::Null),
        &parsed,
    )?;
    let mut matrices = std::collections::BTreeMap::new();
    for (name, m) in &parsed.matrices {
        matrices.insert(name.clone(), m.to_matrix()?);
    }
    let dense = parsed
        .dense
        .iter()
        .map(|(n, d)| (n.clone(), d.to_dense()))
        .collect();
    let file = fp4::io::M0e4File {
        group: parsed.group,
        matrices,
        dense,
    };
    drop(parsed);
    drop(bytes);
    let mut st = Stored { path, file };
    let (h, q, kv, ffn) = (
        c.shape.hidden,
        c.shape.q_dim(),
        c.shape.kv_dim(),
        c.shape.ffn,
    );
    let total = c.shape.layers + 2;
    let embedding = st.take("embedding", &[c.shape.vocab, h], false)?;
    progress(1, total);
    // Grown as layers are found, not sized by the config's claim (a corrupt `layers` must not allocate).
    let mut layers = Vec::new();
    for i in 0..c.shape.layers {
        let mut t = |n: &str, shape: &[usize], vector: bool| {
            st.take(&format!("layers.{i}.{n}"), shape, vector)
        };
        let (bq, bk, bv) = if c.qkv_bias {
            (
                Some(t("bq", &[q], true)?),
                Some(t("bk", &[kv], true)?),
                Some(t("bv", &[kv], true)?),
            )
        } else {
            (None, None, None)
        };
        let (q_norm, k_norm) = if c.qk_norm {
            (
                Some(t("q_norm", &[c.shape.head_dim], true)?),
                Some(t("k_norm", &[c.shape.head_dim], true)?),
            )
        } else {
            (None, None)
        };
        let (post_attn_norm, post_ffn_norm) = if c.post_norms {
            (
                Some(t("post_attn_norm", &[h], true)?),
                Some(t("post_ffn_norm", &[h], true)?),
            )
        } else {
            (None, None)
        };
        layers.push(LayerWeights {
            attn_norm: t("attn_norm", &[h], true)?,
            wq: t("wq", &[q, h], false)?,
            wk: t("wk", &[kv, h], false)?,
            wv: t("wv", &[kv, h], false)?,
            wo: t("wo", &[h, q], false)?,
            bq,
            bk,
            bv,
            ffn_norm: t("ffn_norm", &[h], true)?,
            w_gate: t("w_gate", &[ffn, h], false)?,
            w_up: t("w_up", &[ffn, h], false)?,
            w_down: t("w_down", &[h, ffn], false)?,
            q_norm,
            k_norm,
            post_attn_norm,
            post_ffn_norm,
        });
        progress(i + 2, total);
    }
    let final_norm = st.take("final_norm", &[h], true)?;
    let lm_head = if c.tied_embeddings {
        None
    } else {
        Some(st.take("lm_head", &[c.shape.vocab, h], false)?)
    };
    progress(total, total);
    Ok(Model {
        config: c,
        weights: ModelWeights {
            embedding,
            layers,
            final_norm,
            lm_head,
        },
    })
}
