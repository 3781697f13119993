//! Converting loaded tensors to the storage the caller asked for (f32, f16 or M0E4).

use super::st_files::{f32_to_f16_checked, RawTensor};
use super::{LoadOptions, Tensor, WeightFormat};
use crate::EngineError;
use half::f16;

/// Where a tensor's values come from.
#[derive(Debug)]
pub(crate) enum Source<'a> {
    /// A safetensors tensor (f32/f16/bf16), already shape-checked.
    Raw(RawTensor<'a>),
    /// Values already in f32 (llama2.c checkpoints, dequantised GGUF tensors).
    F32(Vec<f32>),
}

impl Source<'_> {
    fn into_f32(self) -> Result<Vec<f32>, EngineError> {
        match self {
            Source::Raw(r) => r.to_f32(),
            Source::F32(v) => Ok(v),
        }
    }

    fn to_f16(&self, name: &str) -> Result<Vec<f16>, EngineError> {
        match self {
            Source::Raw(r) => r.to_f16(),
            Source::F32(v) => f32_to_f16_checked(v).map_err(|value| {
                EngineError::Model(format!(
                    "tensor `{name}` holds {value}, beyond the f16 range; load it as f32"
                ))
            }),
        }
    }
}

/// What a matrix is used for: embeddings and the output head may be kept f16 on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatrixRole {
    /// A linear layer inside a decoder block.
    Linear,
    /// The embedding table or the output head.
    Embedding,
}

/// A norm weight or a bias: always f32 (tiny, and the kernels read them in f32). With f16 or M0E4 storage the
/// values are rounded to f16 precision, so a tlite folder (which stores them as f16) reloads them exactly.
pub(crate) fn vector(
    name: &str,
    src: Source<'_>,
    len: usize,
    opts: &LoadOptions,
) -> Result<Tensor, EngineError> {
    let mut v = src.into_f32()?;
    if opts.quantize != WeightFormat::F32 {
        let h = f32_to_f16_checked(&v).map_err(|value| {
            EngineError::Model(format!(
                "tensor `{name}` holds {value}, beyond the f16 range; load it as f32"
            ))
        })?;
        v = h.iter().map(|x| x.to_f32()).collect();
    }
    Tensor::f32(vec![len], v)
}

/// A `[rows, cols]` matrix stored as `opts` asks.
///
/// With M0E4, a matrix whose `cols` is not a multiple of the group cannot be packed (groups run along the input
/// dimension and never straddle rows); it stays f16 and a note is logged. stories260K's `w2` (172 inputs) is one.
pub(crate) fn matrix(
    name: &str,
    src: Source<'_>,
    rows: usize,
    cols: usize,
    role: MatrixRole,
    opts: &LoadOptions,
) -> Result<Tensor, EngineError> {
    let shape = vec![rows, cols];
    match opts.quantize {
        WeightFormat::F32 => Tensor::f32(shape, src.into_f32()?),
        WeightFormat::F16 => Tensor::f16(shape, src.to_f16(name)?),
        WeightFormat::M0e4 { group } => {
            if role == MatrixRole::Embedding && opts.keep_embeddings_f16 {
                return Tensor::f16(shape, src.to_f16(name)?);
            }
            if !cols.is_multiple_of(group.len()) {
                tracing::info!(
                    "{name}: {cols} input features is not a multiple of the M0E4 group {group}; kept in f16"
                );
                return Tensor::f16(shape, src.to_f16(name)?);
            }
            // Consumed, not copied: a dequantised GGUF tensor is the largest buffer of its conversion.
            let values = src.into_f32()?;
            let m = fp4::quantize_m0e4(&values, fp4::MatrixShape::new(rows, cols), group)
                .map_err(|e| EngineError::Model(format!("quantising `{name}` to M0E4: {e}")))?;
            Ok(Tensor::m0e4(m))
        }
    }
}
