//! How far a model loaded from a GGUF file is from the file's own weights, per source ggml type.
//!
//! Q4_0/Q4_1 import into M0E4 exactly, but K-quants (Q4_K, Q5_K, Q6_K) and 8-bit types are dequantised and
//! quantised again, which adds error on top of the file's own: `tlite quantize` reports it so a user sees what
//! the conversion cost (issue 15). Each matrix is compared with its source decoded by [`crate::gguf::dequantize`],
//! one tensor at a time, so a large file is never held in f32 whole.

use super::{named, Model, TensorData};
use crate::gguf::{self, GgmlType, GgufFile};
use crate::EngineError;
use rayon::prelude::*;

/// The re-quantisation error of all matrices of one source type.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTypeError {
    /// The ggml type the matrices had in the GGUF file.
    pub source: GgmlType,
    /// How many matrices had it.
    pub tensors: usize,
    /// How many weights they hold.
    pub weights: usize,
    /// Of those matrices, how many are stored M0E4 (the rest stay f16).
    pub m0e4_tensors: usize,
    /// `sqrt(Σ (loaded - source)² / Σ source²)` over all their weights: 0 for an exact import.
    pub relative_rms: f64,
}

/// The GGUF tensor a model matrix comes from; norms and biases (kept at f16 precision) are not compared.
fn gguf_name(short: &str) -> Option<String> {
    match short {
        "embedding" => return Some("token_embd.weight".into()),
        "lm_head" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = short.strip_prefix("layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let t = match part {
        "wq" => "attn_q",
        "wk" => "attn_k",
        "wv" => "attn_v",
        "wo" => "attn_output",
        "w_gate" => "ffn_gate",
        "w_up" => "ffn_up",
        "w_down" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{t}.weight"))
}

/// Compares every matrix of `model` (loaded from `file`, rows as stored in the file) with the file's tensor,
/// grouped by source type in the order the types first appear.
pub fn gguf_requant_errors(
    file: &GgufFile,
    model: &Model,
) -> Result<Vec<SourceTypeError>, EngineError> {
    let matrices: Vec<(String, &super::Tensor)> = named(&model.weights)
        .into_iter()
        .filter_map(|(n, t)| gguf_name(&n).map(|g| (g, t)))
        .collect();
    // (type, weights, is M0E4, Σ err², Σ source²) per matrix.
    let per_tensor = matrices
        .par_iter()
        .map(|(name, t)| {
            let info = file.tensor(name)?;
            let source = gguf::dequantize(info, file.data(info)).map_err(|m| {
                EngineError::Model(format!("{}: tensor `{name}`: {m}", file.path().display()))
            })?;
            let loaded: Vec<f32> = match &t.data {
                TensorData::M0e4(m) => fp4::reference::dequantize(m),
                TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
                TensorData::F32(v) => v.clone(),
            };
            if loaded.len() != source.len() {
                return Err(EngineError::Model(format!(
                    "tensor `{name}`: the model holds {} weights, the file {}",
                    loaded.len(),
                    source.len()
                )));
            }
            let (mut err, mut norm) = (0.0f64, 0.0f64);
            for (&a, &b) in loaded.iter().zip(&source) {
                err += (f64::from(a) - f64::from(b)).powi(2);
                norm += f64::from(b).powi(2);
            }
            let m0e4 = matches!(t.data, TensorData::M0e4(_));
            Ok((info.ggml_type, source.len(), m0e4, err, norm))
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let mut out: Vec<(SourceTypeError, f64, f64)> = Vec::new();
    for (ty, weights, m0e4, err, norm) in per_tensor {
        let i = match out.iter().position(|(s, _, _)| s.source == ty) {
            Some(i) => i,
            None => {
                out.push((
                    SourceTypeError {
                        source: ty,
                        tensors: 0,
                        weights: 0,
                        m0e4_tensors: 0,
                        relative_rms: 0.0,
                    },
                    0.0,
                    0.0,
                ));
                out.len() - 1
            }
        };
        let (s, e, n) = &mut out[i];
        s.tensors += 1;
        s.weights += weights;
        s.m0e4_tensors += usize::from(m0e4);
        *e += err;
        *n += norm;
    }
    Ok(out
        .into_iter()
        .map(|(mut s, e, n)| {
            s.relative_rms = if n > 0.0 { (e / n).sqrt() } else { e.sqrt() };
            s
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::gguf_name;

    #[test]
    fn matrices_map_to_llama_cpp_names_and_vectors_to_none() {
        assert_eq!(gguf_name("embedding").as_deref(), Some("token_embd.weight"));
        assert_eq!(
            gguf_name("layers.11.w_down").as_deref(),
            Some("blk.11.ffn_down.weight")
        );
        assert_eq!(
            gguf_name("layers.0.wo").as_deref(),
            Some("blk.0.attn_output.weight")
        );
        assert_eq!(gguf_name("layers.0.attn_norm"), None);
        assert_eq!(gguf_name("final_norm"), None);
    }
}
