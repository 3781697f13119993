//! SHA-256 checksums of a tlite folder's tensors and configuration, so that a damaged byte is an error naming the
//! tensor instead of silently different text (the same care the program cache takes).
//!
//! Each model tensor's digest covers the exact bytes stored for it: codes, then scales, then offsets for an M0E4
//! matrix; the little-endian f16 values for the others. Writing and checking both hash what `fp4::io::parse`
//! borrows from the file's bytes, so the two sides cannot disagree about what is covered.

use crate::EngineError;
use rayon::prelude::*;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// Lower-case hex SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of every tensor of a parsed M0E4 file, by model tensor name.
pub(crate) fn tensor_digests(t: &fp4::io::M0e4Tensors<'_>) -> BTreeMap<String, String> {
    let mut jobs: Vec<(&str, Vec<&[u8]>)> = Vec::new();
    for (name, m) in &t.matrices {
        jobs.push((name, vec![m.codes, m.scales_le, m.offsets_le]));
    }
    for (name, d) in &t.dense {
        jobs.push((name, vec![d.data_le]));
    }
    jobs.into_par_iter()
        .map(|(name, parts)| (name.to_string(), sha256_hex(&parts)))
        .collect()
}

/// The digest of the `tlite_config` object as serde_json prints it (keys sorted, so the text is canonical).
pub(crate) fn config_digest(config: &Value) -> String {
    sha256_hex(&[config.to_string().as_bytes()])
}

/// The `sha256` object written into `config.json`.
pub(crate) fn to_json(config: &Value, tensors: BTreeMap<String, String>) -> Value {
    let mut m = Map::new();
    m.insert("tlite_config".into(), Value::String(config_digest(config)));
    m.insert(
        "tensors".into(),
        Value::Object(
            tensors
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ),
    );
    Value::Object(m)
}

/// Checks the configuration and every tensor against the `sha256` object of `cfg_path`.
pub(crate) fn verify(
    cfg_path: &Path,
    st_path: &Path,
    sums: Option<&Value>,
    config: &Value,
    tensors: &fp4::io::M0e4Tensors<'_>,
) -> Result<(), EngineError> {
    let bad = |msg: String| EngineError::Model(format!("{}: {msg}", cfg_path.display()));
    let sums = sums
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing the `sha256` checksums object".into()))?;
    let want_cfg = sums.get("tlite_config").and_then(Value::as_str);
    if want_cfg != Some(config_digest(config).as_str()) {
        return Err(bad(
            "`tlite_config` does not match its checksum: the file is damaged or was edited after tlite \
             quantize wrote it"
                .into(),
        ));
    }
    let want = sums
        .get("tensors")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("`sha256` has no `tensors` object".into()))?;
    let have = tensor_digests(tensors);
    for (name, digest) in &have {
        match want.get(name).and_then(Value::as_str) {
            Some(w) if w == digest => {}
            Some(_) => {
                return Err(EngineError::Model(format!(
                    "{}: tensor `{name}` fails its SHA-256 checksum: the file is damaged (quantise the model again)",
                    st_path.display()
                )))
            }
            None => {
                return Err(bad(format!(
                    "no checksum for tensor `{name}` of {}",
                    st_path.display()
                )))
            }
        }
    }
    if let Some(missing) = want.keys().find(|k| !have.contains_key(*k)) {
        return Err(EngineError::MissingTensor {
            path: st_path.to_path_buf(),
            tensor: missing.clone(),
        });
    }
    Ok(())
}
