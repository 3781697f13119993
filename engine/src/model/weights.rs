//! Weight tensors as the forward pass consumes them: f32, f16 or M0E4, linear weights in the `[out, in]` layout.

use crate::EngineError;
use half::f16;

/// The storage of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Full precision (norm weights and biases always; everything with [`WeightFormat::F32`]).
    F32(Vec<f32>),
    /// Half precision (matrices with [`WeightFormat::F16`], and matrices M0E4 cannot pack).
    F16(Vec<f16>),
    /// 4-bit M0E4 (matrices with [`WeightFormat::M0e4`]).
    M0e4(fp4::M0e4Matrix),
}

/// One named weight: its shape (`[out, in]` for matrices, `[n]` for vectors) and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: TensorData,
}

impl Tensor {
    /// An f32 tensor; fails if `data` does not hold `shape`'s element count.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, EngineError> {
        check_len(&shape, data.len())?;
        Ok(Self {
            shape,
            data: TensorData::F32(data),
        })
    }

    /// An f16 tensor; fails if `data` does not hold `shape`'s element count.
    pub fn f16(shape: Vec<usize>, data: Vec<f16>) -> Result<Self, EngineError> {
        check_len(&shape, data.len())?;
        Ok(Self {
            shape,
            data: TensorData::F16(data),
        })
    }

    /// An M0E4 matrix, shaped `[rows, cols]`.
    pub fn m0e4(m: fp4::M0e4Matrix) -> Self {
        let s = m.shape();
        Self {
            shape: vec![s.rows, s.cols],
            data: TensorData::M0e4(m),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Output features of a matrix (first dimension); the length of a vector.
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Input features of a matrix (last dimension); 1 for a vector.
    pub fn cols(&self) -> usize {
        if self.shape.len() < 2 {
            1
        } else {
            self.shape.last().copied().unwrap_or(0)
        }
    }

    /// The storage kind as a short name ("f32", "f16", "m0e4").
    pub fn dtype_name(&self) -> &'static str {
        match self.data {
            TensorData::F32(_) => "f32",
            TensorData::F16(_) => "f16",
            TensorData::M0e4(_) => "m0e4",
        }
    }

    /// The values in f32 (dequantised for M0E4): what the plain-Rust references consume.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::M0e4(m) => fp4::reference::dequantize(m),
        }
    }

    /// Bytes the tensor occupies in memory.
    pub fn bytes(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => 4 * v.len(),
            TensorData::F16(v) => 2 * v.len(),
            TensorData::M0e4(m) => m.packed_bytes(),
        }
    }
}

fn check_len(shape: &[usize], len: usize) -> Result<(), EngineError> {
    // Checked: a wrapped product of a corrupt shape could otherwise match `len` by accident.
    let Some(want) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        return Err(EngineError::Model(format!(
            "tensor shape {shape:?} overflows the address space"
        )));
    };
    if want == len {
        Ok(())
    } else {
        Err(EngineError::Model(format!(
            "tensor of shape {shape:?} needs {want} elements, got {len}"
        )))
    }
}

/// The weights of one decoder layer. Matrices are `[out, in]`; norms and biases are f32 vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// RMSNorm before attention, `[hidden]` (Gemma: stored `w - 1`, see `ModelConfig::norm_plus_one`).
    pub attn_norm: Tensor,
    /// Query projection, `[heads*head_dim, hidden]`.
    pub wq: Tensor,
    /// Key projection, `[kv_heads*head_dim, hidden]`.
    pub wk: Tensor,
    /// Value projection, `[kv_heads*head_dim, hidden]`.
    pub wv: Tensor,
    /// Output projection, `[hidden, heads*head_dim]`.
    pub wo: Tensor,
    /// Query bias (Qwen2), `[heads*head_dim]`.
    pub bq: Option<Tensor>,
    /// Key bias (Qwen2), `[kv_heads*head_dim]`.
    pub bk: Option<Tensor>,
    /// Value bias (Qwen2), `[kv_heads*head_dim]`.
    pub bv: Option<Tensor>,
    /// RMSNorm before the MLP, `[hidden]`.
    pub ffn_norm: Tensor,
    /// Gate projection (llama2.c `w1`), `[ffn, hidden]`.
    pub w_gate: Tensor,
    /// Up projection (llama2.c `w3`), `[ffn, hidden]`.
    pub w_up: Tensor,
    /// Down projection (llama2.c `w2`), `[hidden, ffn]`.
    pub w_down: Tensor,
    /// RMSNorm of each query head before rotary (Qwen3, Gemma 3), `[head_dim]`.
    pub q_norm: Option<Tensor>,
    /// RMSNorm of each key head before rotary (Qwen3, Gemma 3), `[head_dim]`.
    pub k_norm: Option<Tensor>,
    /// RMSNorm of the attention output before the residual add (Gemma 2, 3), `[hidden]`.
    pub post_attn_norm: Option<Tensor>,
    /// RMSNorm of the MLP output before the residual add (Gemma 2, 3), `[hidden]`.
    pub post_ffn_norm: Option<Tensor>,
}

impl LayerWeights {
    /// The optional vectors (biases, q/k norms, post norms) with their short names, those present only.
    pub fn optional_vectors(&self) -> Vec<(&'static str, &Tensor)> {
        [
            ("bq", &self.bq),
            ("bk", &self.bk),
            ("bv", &self.bv),
            ("q_norm", &self.q_norm),
            ("k_norm", &self.k_norm),
            ("post_attn_norm", &self.post_attn_norm),
            ("post_ffn_norm", &self.post_ffn_norm),
        ]
        .into_iter()
        .filter_map(|(n, t)| t.as_ref().map(|t| (n, t)))
        .collect()
    }
}

/// All weights of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelWeights {
    /// Token embedding, `[vocab, hidden]`.
    pub embedding: Tensor,
    /// Decoder layers, first to last.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm, `[hidden]`.
    pub final_norm: Tensor,
    /// Output head, `[vocab, hidden]`; `None` when tied to `embedding`.
    pub lm_head: Option<Tensor>,
}

impl ModelWeights {
    /// The output head: `lm_head`, or the embedding when tied.
    pub fn output_head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embedding)
    }

    /// Bytes of all weights in memory.
    pub fn bytes(&self) -> usize {
        let layer = |l: &LayerWeights| {
            [
                &l.attn_norm,
                &l.wq,
                &l.wk,
                &l.wv,
                &l.wo,
                &l.ffn_norm,
                &l.w_gate,
                &l.w_up,
                &l.w_down,
            ]
            .iter()
            .map(|t| t.bytes())
            .sum::<usize>()
                + l.optional_vectors()
                    .iter()
                    .map(|(_, t)| t.bytes())
                    .sum::<usize>()
        };
        self.embedding.bytes()
            + self.layers.iter().map(layer).sum::<usize>()
            + self.final_norm.bytes()
            + self.lm_head.as_ref().map_or(0, Tensor::bytes)
    }
}

/// How matrices are stored after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Keep f32 (for reference checks; f16/bf16 files are widened).
    F32,
    /// Half precision.
    #[default]
    F16,
    /// M0E4 4-bit with the given group; matrices whose `in` dimension is not a multiple of it stay f16.
    M0e4 {
        /// Weights per scale/offset pair.
        group: fp4::GroupSize,
    },
}

/// Options of [`crate::model::load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Storage of the linear layers (and of the embedding/output head unless `keep_embeddings_f16`).
    pub quantize: WeightFormat,
    /// With `WeightFormat::M0e4`, keep the embedding and the output head in f16.
    pub keep_embeddings_f16: bool,
}

/// A loaded model: its configuration and its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Shapes and hyper-parameters.
    pub config: super::ModelConfig,
    /// Weights.
    pub weights: ModelWeights,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_shape_whose_element_count_overflows_is_an_error_not_a_match() {
        // 2^63 * 2 wraps to 0 in release builds, which would "match" empty data.
        let shape = vec![1usize << (usize::BITS - 1), 2];
        let err = Tensor::f32(shape, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("overflows"), "{err}");
    }
}
