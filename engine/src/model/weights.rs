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

    /// A matrix cut along its rows into consecutive parts of `rows[0]`, `rows[1]`, ... rows (which must add up to
    /// all of them): how a fused projection (`qkv_proj`, `gate_up_proj`, GGUF `attn_qkv`) becomes the separate
    /// matrices the rest of the engine takes. Exact in every storage (M0E4 groups run along a row, so a row's
    /// codes, scales and offsets move together). One part per entry of `rows`, in order.
    pub fn split_rows<const N: usize>(self, rows: [usize; N]) -> Result<[Tensor; N], EngineError> {
        let parts = self.split_rows_vec(&rows)?;
        into_array(parts)
    }

    fn split_rows_vec(self, rows: &[usize]) -> Result<Vec<Tensor>, EngineError> {
        let cols = self.cols();
        if self.shape.len() != 2 || rows.iter().sum::<usize>() != self.rows() {
            return Err(EngineError::Model(format!(
                "a tensor of shape {:?} cannot be cut into parts of {rows:?} rows",
                self.shape
            )));
        }
        match self.data {
            TensorData::F32(v) => cut_rows(&v, rows, cols)
                .into_iter()
                .zip(rows)
                .map(|(p, &r)| Tensor::f32(vec![r, cols], p))
                .collect(),
            TensorData::F16(v) => cut_rows(&v, rows, cols)
                .into_iter()
                .zip(rows)
                .map(|(p, &r)| Tensor::f16(vec![r, cols], p))
                .collect(),
            TensorData::M0e4(m) => {
                let (group, groups) = (m.group(), m.groups_per_row());
                let (codes, scales, offsets) = m.into_parts();
                let (codes, scales, offsets) = (
                    cut_rows(&codes, rows, cols / 2),
                    cut_rows(&scales, rows, groups),
                    cut_rows(&offsets, rows, groups),
                );
                codes
                    .into_iter()
                    .zip(scales)
                    .zip(offsets)
                    .zip(rows)
                    .map(|(((c, s), o), &r)| {
                        fp4::M0e4Matrix::from_parts(fp4::MatrixShape::new(r, cols), group, c, s, o)
                            .map(Tensor::m0e4)
                            .map_err(|e| EngineError::Model(format!("cutting an M0E4 matrix: {e}")))
                    })
                    .collect()
            }
        }
    }

    /// A vector cut into consecutive parts of the given lengths (a fused bias), one per entry of `lens`, in order.
    pub fn split_vector<const N: usize>(
        self,
        lens: [usize; N],
    ) -> Result<[Tensor; N], EngineError> {
        let TensorData::F32(v) = &self.data else {
            return Err(EngineError::Model(format!(
                "only f32 vectors are cut, not {}",
                self.dtype_name()
            )));
        };
        if self.shape.len() != 1 || lens.iter().sum::<usize>() != v.len() {
            return Err(EngineError::Model(format!(
                "a vector of shape {:?} cannot be cut into parts of {lens:?}",
                self.shape
            )));
        }
        let mut at = 0;
        let parts = lens
            .iter()
            .map(|&n| {
                let part = v[at..at + n].to_vec();
                at += n;
                Tensor::f32(vec![n], part)
            })
            .collect::<Result<Vec<_>, _>>()?;
        into_array(parts)
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

/// `v` (`per_row` elements a row) cut into consecutive parts of `rows[i]` rows.
fn cut_rows<T: Clone>(v: &[T], rows: &[usize], per_row: usize) -> Vec<Vec<T>> {
    let mut at = 0;
    rows.iter()
        .map(|&r| {
            let part = v[at * per_row..(at + r) * per_row].to_vec();
            at += r;
            part
        })
        .collect()
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

/// The parts of a cut as the array its caller asked for (the cuts make exactly one part per requested size).
fn into_array<const N: usize>(parts: Vec<Tensor>) -> Result<[Tensor; N], EngineError> {
    parts.try_into().map_err(|_| {
        EngineError::Model("a fused tensor was cut into the wrong number of parts".into())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn split_rows_cuts_every_storage_exactly() {
        let (rows, cols) = (7, 64);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let parts = [3, 1, 3];
        let check = |t: Tensor| {
            let whole = t.to_f32();
            let cut = t.split_rows(parts).unwrap();
            let mut at = 0;
            for (p, &r) in cut.iter().zip(&parts) {
                assert_eq!(p.shape, vec![r, cols]);
                assert_eq!(p.to_f32(), whole[at * cols..(at + r) * cols]);
                at += r;
            }
        };
        check(Tensor::f32(vec![rows, cols], values.clone()).unwrap());
        let half: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
        check(Tensor::f16(vec![rows, cols], half).unwrap());
        let m = fp4::quantize_m0e4(
            &values,
            fp4::MatrixShape::new(rows, cols),
            fp4::GroupSize::G32,
        )
        .unwrap();
        check(Tensor::m0e4(m));
        let bad = Tensor::f32(vec![rows, cols], values).unwrap();
        assert!(bad.split_rows([3, 3]).is_err());
        let b = Tensor::f32(vec![5], vec![1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let cut = b.split_vector([2, 3]).unwrap();
        assert_eq!(cut[1].to_f32(), vec![3.0, 4.0, 5.0]);
    }

    #[test]
    fn a_shape_whose_element_count_overflows_is_an_error_not_a_match() {
        // 2^63 * 2 wraps to 0 in release builds, which would "match" empty data.
        let shape = vec![1usize << (usize::BITS - 1), 2];
        let err = Tensor::f32(shape, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("overflows"), "{err}");
    }
}
