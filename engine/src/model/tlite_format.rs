//! tlite's own quantised folder: `config.json` holding the resolved [`ModelConfig`], one `model.safetensors` holding
//! every tensor already in its final storage (M0E4 parts, f16, f32), and the tokenizer files copied from the source.
//! Loading it converts nothing: bytes go straight into the tensors.

use super::hf::read_json;
use super::st_files::{RawTensor, SafetensorsSet};
use super::{LayerWeights, Model, ModelConfig, ModelWeights, Tensor, TensorData};
use crate::EngineError;
use half::f16;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

/// Value of `tlite_format` in `config.json` and of `format` in the safetensors metadata.
pub const FORMAT_TAG: &str = "tlite";
/// Version of the folder layout.
pub const FORMAT_VERSION: u64 = 1;
/// Files copied from the source folder (or from beside a llama2.c checkpoint) when present.
pub const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "tokenizer.bin",
    "generation_config.json",
];

/// True when `folder/config.json` marks a tlite quantised folder.
pub(crate) fn is_tlite_folder(folder: &Path) -> bool {
    read_json(&folder.join("config.json")).is_ok_and(|j| j.get("tlite_format").is_some())
}

/// Every tensor of a model with its file name, in a fixed order.
fn named(w: &ModelWeights) -> Vec<(String, &Tensor)> {
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
        for (n, t) in [("bq", &l.bq), ("bk", &l.bk), ("bv", &l.bv)] {
            if let Some(t) = t {
                v.push((format!("{p}.{n}"), t));
            }
        }
    }
    v.push(("final_norm".to_string(), &w.final_norm));
    if let Some(t) = &w.lm_head {
        v.push(("lm_head".to_string(), t));
    }
    v
}

/// Writes `model` as a tlite folder into `out` (created if needed), copying tokenizer files from `tokenizer_dir`.
pub fn save(model: &Model, tokenizer_dir: &Path, out: &Path) -> Result<(), EngineError> {
    std::fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
    let config = serde_json::json!({
        "tlite_format": FORMAT_VERSION,
        "model_type": model.config.arch.model_type(),
        "tlite_config": model.config,
    });
    let cfg_path = out.join("config.json");
    let text = serde_json::to_string_pretty(&config).map_err(|e| EngineError::Json {
        path: cfg_path.clone(),
        source: e,
    })?;
    std::fs::write(&cfg_path, text).map_err(|e| EngineError::io(&cfg_path, e))?;

    let mut blobs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in named(&model.weights) {
        match &t.data {
            TensorData::F32(v) => blobs.push((
                name,
                Dtype::F32,
                t.shape.clone(),
                bytemuck::cast_slice(v).to_vec(),
            )),
            TensorData::F16(v) => blobs.push((
                name,
                Dtype::F16,
                t.shape.clone(),
                bytemuck::cast_slice(v).to_vec(),
            )),
            TensorData::M0e4(m) => {
                let s = m.shape();
                let g = m.groups_per_row();
                blobs.push((
                    format!("{name}.m0e4_codes"),
                    Dtype::U8,
                    vec![s.rows, s.cols / 2],
                    m.codes().to_vec(),
                ));
                blobs.push((
                    format!("{name}.m0e4_scales"),
                    Dtype::F16,
                    vec![s.rows, g],
                    bytemuck::cast_slice(m.scales()).to_vec(),
                ));
                blobs.push((
                    format!("{name}.m0e4_offsets"),
                    Dtype::F16,
                    vec![s.rows, g],
                    bytemuck::cast_slice(m.offsets()).to_vec(),
                ));
            }
        }
    }
    let st_path = out.join("model.safetensors");
    let views = blobs
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| EngineError::Safetensors {
                    path: st_path.clone(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta: HashMap<String, String> = [
        ("format".to_string(), FORMAT_TAG.to_string()),
        ("tlite_format".to_string(), FORMAT_VERSION.to_string()),
    ]
    .into();
    safetensors::serialize_to_file(views, Some(meta), &st_path).map_err(|e| {
        EngineError::Safetensors {
            path: st_path.clone(),
            message: e.to_string(),
        }
    })?;

    for f in TOKENIZER_FILES {
        let src = tokenizer_dir.join(f);
        if src.is_file() {
            let dst = out.join(f);
            std::fs::copy(&src, &dst).map_err(|e| EngineError::io(&dst, e))?;
        }
    }
    Ok(())
}

fn f16s(r: &RawTensor<'_>) -> Result<Vec<f16>, EngineError> {
    Ok(r.bytes_of(Dtype::F16)?
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect())
}

fn f32s(r: &RawTensor<'_>) -> Result<Vec<f32>, EngineError> {
    Ok(r.bytes_of(Dtype::F32)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Reads one tensor in whatever storage the file holds, checking it has `shape`.
fn read_tensor(st: &SafetensorsSet, name: &str, shape: &[usize]) -> Result<Tensor, EngineError> {
    if st.contains(name) {
        let r = st.get(name)?;
        r.expect_shape(shape)?;
        return match r.dtype {
            Dtype::F32 => Tensor::f32(shape.to_vec(), f32s(&r)?),
            Dtype::F16 => Tensor::f16(shape.to_vec(), f16s(&r)?),
            _ => Err(EngineError::UnsupportedDtype {
                path: r.path.to_path_buf(),
                tensor: name.to_string(),
                dtype: format!("{:?}", r.dtype),
            }),
        };
    }
    let codes_name = format!("{name}.m0e4_codes");
    if !st.contains(&codes_name) || shape.len() != 2 {
        return Err(st.missing(name));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let codes = st.get(&codes_name)?;
    codes.expect_shape(&[rows, cols / 2])?;
    let scales = st.get(&format!("{name}.m0e4_scales"))?;
    let offsets = st.get(&format!("{name}.m0e4_offsets"))?;
    let groups = scales.shape.get(1).copied().unwrap_or(0);
    if groups == 0 || cols % groups != 0 {
        return Err(EngineError::Model(format!(
            "{}: `{name}.m0e4_scales` has shape {:?}, which fits no group size for {cols} columns",
            scales.path.display(),
            scales.shape
        )));
    }
    scales.expect_shape(&[rows, groups])?;
    offsets.expect_shape(&[rows, groups])?;
    let group = fp4::GroupSize::try_from(cols / groups)?;
    let m = fp4::M0e4Matrix::from_parts(
        fp4::MatrixShape::new(rows, cols),
        group,
        codes.bytes_of(Dtype::U8)?.to_vec(),
        f16s(&scales)?,
        f16s(&offsets)?,
    )?;
    Ok(Tensor::m0e4(m))
}

/// Reads a tlite folder's configuration.
pub(crate) fn load_folder_config(folder: &Path) -> Result<ModelConfig, EngineError> {
    let cfg_path = folder.join("config.json");
    let json = read_json(&cfg_path)?;
    let version = json.get("tlite_format").and_then(serde_json::Value::as_u64);
    if version != Some(FORMAT_VERSION) {
        return Err(EngineError::Model(format!(
            "{}: tlite_format {:?} is not the supported version {FORMAT_VERSION}",
            cfg_path.display(),
            json.get("tlite_format")
        )));
    }
    let cfg_json = json.get("tlite_config").cloned().ok_or_else(|| {
        EngineError::InvalidConfig(format!("{}: missing `tlite_config`", cfg_path.display()))
    })?;
    let c: ModelConfig = serde_json::from_value(cfg_json).map_err(|e| EngineError::Json {
        path: cfg_path.clone(),
        source: e,
    })?;
    c.validate_in(&cfg_path)?;
    Ok(c)
}

/// Loads a tlite folder.
pub(crate) fn load_folder(
    folder: &Path,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Model, EngineError> {
    let c = load_folder_config(folder)?;
    let st = SafetensorsSet::open_files(folder, &[folder.join("model.safetensors")])?;
    if st
        .metadata()
        .and_then(|m| m.get("format"))
        .map(String::as_str)
        != Some(FORMAT_TAG)
    {
        return Err(EngineError::Model(format!(
            "{}: safetensors metadata does not mark the tlite format",
            folder.join("model.safetensors").display()
        )));
    }
    let (h, q, kv, ffn) = (c.hidden, c.q_dim(), c.kv_dim(), c.ffn);
    let total = c.layers + 2;
    let embedding = read_tensor(&st, "embedding", &[c.vocab, h])?;
    progress(1, total);
    let mut layers = Vec::with_capacity(c.layers);
    for i in 0..c.layers {
        let t = |n: &str, shape: &[usize]| read_tensor(&st, &format!("layers.{i}.{n}"), shape);
        let bias = |n: &str, len: usize| {
            if c.qkv_bias {
                t(n, &[len]).map(Some)
            } else {
                Ok(None)
            }
        };
        layers.push(LayerWeights {
            attn_norm: t("attn_norm", &[h])?,
            wq: t("wq", &[q, h])?,
            wk: t("wk", &[kv, h])?,
            wv: t("wv", &[kv, h])?,
            wo: t("wo", &[h, q])?,
            bq: bias("bq", q)?,
            bk: bias("bk", kv)?,
            bv: bias("bv", kv)?,
            ffn_norm: t("ffn_norm", &[h])?,
            w_gate: t("w_gate", &[ffn, h])?,
            w_up: t("w_up", &[ffn, h])?,
            w_down: t("w_down", &[h, ffn])?,
        });
        progress(i + 2, total);
    }
    let final_norm = read_tensor(&st, "final_norm", &[h])?;
    let lm_head = if c.tied_embeddings {
        None
    } else {
        Some(read_tensor(&st, "lm_head", &[c.vocab, h])?)
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
