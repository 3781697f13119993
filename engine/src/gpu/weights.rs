//! Weights on the device: M0E4 matrices in the kernels' packed layout, f16 matrices, f32 norms and biases.
//!
//! q, k and v are stacked into one matrix so the QKV projection is one launch (and their biases into one vector);
//! gate and up stay separate because the prefill path gates two `[seq][ffn]` outputs elementwise.
//!
//! The embedding and the output head, the largest tensors, may exceed the device's largest allocation (Gemma 2 2B's
//! f16 embedding is 1.18 GB, a phone allows 1 GiB): they are [`RowSplitMatrix`]es, stored in as many buffers as
//! [`RowSplit`] plans, and read by one launch per part; on a device with `cl_qcom_large_buffer` they go in one
//! buffer through that extension instead (written from Qualcomm's header, never run: no machine here has it). A
//! layer matrix over the limit stays an error naming it (`memory.rs` checks before anything is uploaded); none of
//! a phone-sized model comes near.

use clkernels::kernels::embedding::{Embedding, TableRows};
use clkernels::kernels::matvec::{DeviceF16Matrix, DeviceM0e4};
use clkernels::runtime::{DeviceBuffer, Gpu, RowPart, RowSplit};
use fp4::MatrixShape;
use half::f16;

use crate::model::{LayerWeights, Model, ModelShape, Tensor, TensorData};
use crate::EngineError;

/// One weight matrix on the device.
#[derive(Debug)]
pub enum DeviceMatrix {
    /// 4-bit M0E4.
    M0e4(DeviceM0e4),
    /// Half precision (f32 model weights are narrowed to it on upload).
    F16(DeviceF16Matrix),
}

impl DeviceMatrix {
    /// Rows (output features) and columns (input features).
    pub fn shape(&self) -> MatrixShape {
        match self {
            DeviceMatrix::M0e4(m) => m.shape,
            DeviceMatrix::F16(m) => m.shape,
        }
    }

    /// Bytes a pass over the matrix reads.
    pub fn bytes(&self) -> usize {
        match self {
            DeviceMatrix::M0e4(m) => m.bytes(),
            DeviceMatrix::F16(m) => m.data.byte_len(),
        }
    }

    /// Uploads one matrix tensor.
    pub fn upload(gpu: &Gpu, name: &str, t: &Tensor) -> Result<Self, EngineError> {
        Self::upload_stacked(gpu, name, &[t])
    }

    /// Uploads matrices of equal columns stacked along the rows (all M0E4 with one group, or any mix of float
    /// formats, which become one f16 matrix; an M0E4/float mix is dequantised to f16).
    pub fn upload_stacked(gpu: &Gpu, name: &str, parts: &[&Tensor]) -> Result<Self, EngineError> {
        let cols = parts.first().map(|t| t.cols()).unwrap_or(0);
        let rows: usize = parts.iter().map(|t| t.rows()).sum();
        if parts.is_empty()
            || parts.iter().any(|t| t.shape.len() != 2 || t.cols() != cols)
            || rows == 0
        {
            let shapes: Vec<_> = parts.iter().map(|t| t.shape.clone()).collect();
            return Err(EngineError::Model(format!(
                "{name}: cannot stack matrices of shapes {shapes:?}"
            )));
        }
        let m0e4: Vec<&fp4::M0e4Matrix> = parts
            .iter()
            .filter_map(|t| match &t.data {
                TensorData::M0e4(m) => Some(m),
                _ => None,
            })
            .collect();
        if m0e4.len() == parts.len() && m0e4.iter().all(|m| m.group() == m0e4[0].group()) {
            return Ok(DeviceMatrix::M0e4(DeviceM0e4::concat_rows(gpu, &m0e4)?));
        }
        let mut data: Vec<f16> = Vec::with_capacity(rows * cols);
        for t in parts {
            match &t.data {
                TensorData::F16(v) => data.extend_from_slice(v),
                TensorData::F32(v) => data.extend(v.iter().map(|&x| f16::from_f32(x))),
                TensorData::M0e4(_) => data.extend(t.to_f32().into_iter().map(f16::from_f32)),
            }
        }
        Ok(DeviceMatrix::F16(DeviceF16Matrix::upload(
            gpu,
            &data,
            MatrixShape::new(rows, cols),
        )?))
    }
}

/// A matrix stored by rows in one buffer or, when larger than the device's largest allocation, in several
/// ([`RowSplit`]); every part has the whole matrix's format.
#[derive(Debug)]
pub struct RowSplitMatrix {
    gpu: Gpu,
    shape: MatrixShape,
    parts: Vec<(RowPart, DeviceMatrix)>,
}

impl RowSplitMatrix {
    /// Uploads a matrix tensor, split by rows where the device's largest allocation requires it (f32 values are
    /// narrowed to f16, as [`DeviceMatrix::upload`] does).
    pub fn upload(gpu: &Gpu, name: &str, t: &Tensor) -> Result<Self, EngineError> {
        if t.shape.len() != 2 || t.rows() == 0 || t.cols() == 0 {
            return Err(EngineError::Model(format!(
                "{name}: expected a matrix, got shape {:?}",
                t.shape
            )));
        }
        let (rows, cols) = (t.rows(), t.cols());
        // The largest buffer of a part decides: M0E4 codes (or its scales, for tiny groups), else the f16 values.
        let row_bytes = match &t.data {
            TensorData::M0e4(m) => (cols / 2).max(2 * cols / m.group().len()),
            _ => 2 * cols,
        } as u64;
        let split = RowSplit::plan(rows, row_bytes, gpu.split_limits()).map_err(|e| {
            EngineError::DeviceMemory(format!(
                "{name} ({rows}x{cols}) cannot be split to fit {}: {e}",
                gpu.caps().display_name()
            ))
        })?;
        if !split.is_split() {
            let whole = DeviceMatrix::upload(gpu, name, t)?;
            return Ok(Self::from_parts(gpu, vec![(split.parts()[0], whole)]));
        }
        if gpu.caps().qcom_large_buffer {
            // One buffer past the limit through the Adreno extension instead of parts (not run on hardware).
            let whole = upload_large(gpu, t)?;
            let all = RowSplit::whole(rows).parts()[0];
            return Ok(Self::from_parts(gpu, vec![(all, whole)]));
        }
        let parts = split
            .parts()
            .iter()
            .map(|&p| Ok((p, upload_rows(gpu, t, p)?)))
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(Self::from_parts(gpu, parts))
    }

    fn from_parts(gpu: &Gpu, parts: Vec<(RowPart, DeviceMatrix)>) -> Self {
        let rows = parts.iter().map(|(p, _)| p.rows).sum();
        let cols = parts.first().map_or(0, |(_, m)| m.shape().cols);
        RowSplitMatrix {
            gpu: gpu.clone(),
            shape: MatrixShape::new(rows, cols),
            parts,
        }
    }

    /// Rows and columns of the whole matrix.
    pub fn shape(&self) -> MatrixShape {
        self.shape
    }

    /// The parts in row order, each with the rows it holds.
    pub fn parts(&self) -> &[(RowPart, DeviceMatrix)] {
        &self.parts
    }

    /// Whether the matrix is stored in more than one buffer.
    pub fn is_split(&self) -> bool {
        self.parts.len() > 1
    }

    /// Whether the matrix is M0E4 (all its parts are, or none).
    pub fn is_m0e4(&self) -> bool {
        matches!(self.parts.first(), Some((_, DeviceMatrix::M0e4(_))))
    }

    /// Bytes of all parts.
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|(_, m)| m.bytes()).sum()
    }

    /// The rows of `out` each part computes, as sub-buffers (their offsets are aligned by the split), for
    /// [`RowSplitMatrix::for_each_part`]; none for a matrix in one buffer, which writes `out` itself. Made once
    /// beside the output buffer rather than per launch, since a step would otherwise create and release one
    /// OpenCL object per part.
    pub fn part_outputs(
        &self,
        out: &DeviceBuffer<f32>,
    ) -> Result<Vec<DeviceBuffer<f32>>, EngineError> {
        if !self.is_split() {
            return Ok(Vec::new());
        }
        self.parts
            .iter()
            .map(|(part, _)| Ok(out.sub_buffer(&self.gpu, part.first, part.rows)?))
            .collect()
    }

    /// Runs `launch` once per part with the part's matrix and the rows of the output it computes: `out` itself for
    /// a matrix in one buffer, else the part's sub-buffer of `out` from [`RowSplitMatrix::part_outputs`]. For
    /// products with one output per matrix row, such as the output head's mat-vec.
    pub fn for_each_part(
        &self,
        out: &mut DeviceBuffer<f32>,
        part_outputs: &mut [DeviceBuffer<f32>],
        mut launch: impl FnMut(&DeviceMatrix, &mut DeviceBuffer<f32>) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        if let [(_, whole)] = self.parts.as_slice() {
            return launch(whole, out);
        }
        if part_outputs.len() != self.parts.len() {
            return Err(EngineError::Model(format!(
                "a matrix stored in {} parts was given {} output slices",
                self.parts.len(),
                part_outputs.len()
            )));
        }
        for ((_, m), rows) in self.parts.iter().zip(part_outputs) {
            launch(m, rows)?;
        }
        Ok(())
    }

    /// Enqueues the embedding gather of `seq` tokens from this table into `out`, `scale` times each row: one launch
    /// per part, each writing the tokens whose rows it holds.
    pub fn gather(
        &self,
        embedding: &Embedding,
        ids: &DeviceBuffer<u32>,
        seq: usize,
        out: &mut DeviceBuffer<f32>,
        scale: f32,
    ) -> Result<(), EngineError> {
        let vocab = self.shape.rows;
        for (part, m) in &self.parts {
            let rows = TableRows {
                vocab,
                first: part.first,
            };
            match m {
                DeviceMatrix::F16(t) => {
                    embedding.enqueue_f16_rows(t, rows, ids, seq, out, scale)?
                }
                DeviceMatrix::M0e4(t) => {
                    embedding.enqueue_m0e4_rows(t, rows, ids, seq, out, scale)?
                }
            }
        }
        Ok(())
    }
}

/// A matrix tensor in one buffer past the device's largest allocation, through `cl_qcom_large_buffer`.
fn upload_large(gpu: &Gpu, t: &Tensor) -> Result<DeviceMatrix, EngineError> {
    let shape = MatrixShape::new(t.rows(), t.cols());
    Ok(match &t.data {
        TensorData::M0e4(m) => DeviceMatrix::M0e4(DeviceM0e4::upload_large(gpu, m)?),
        TensorData::F16(v) => DeviceMatrix::F16(DeviceF16Matrix::upload_large(gpu, v, shape)?),
        TensorData::F32(v) => {
            let narrowed: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            DeviceMatrix::F16(DeviceF16Matrix::upload_large(gpu, &narrowed, shape)?)
        }
    })
}

/// Rows `part` of a matrix tensor as a device matrix of their own.
fn upload_rows(gpu: &Gpu, t: &Tensor, part: RowPart) -> Result<DeviceMatrix, EngineError> {
    let cols = t.cols();
    let shape = MatrixShape::new(part.rows, cols);
    let values = part.first * cols..(part.first + part.rows) * cols;
    Ok(match &t.data {
        TensorData::M0e4(m) => DeviceMatrix::M0e4(DeviceM0e4::upload_rows(gpu, m, part.range())?),
        TensorData::F16(v) => DeviceMatrix::F16(DeviceF16Matrix::upload(gpu, &v[values], shape)?),
        TensorData::F32(v) => {
            let narrowed: Vec<f16> = v[values].iter().map(|&x| f16::from_f32(x)).collect();
            DeviceMatrix::F16(DeviceF16Matrix::upload(gpu, &narrowed, shape)?)
        }
    })
}

/// The MLP width the device uses: `ffn` rounded up to a multiple of 32, because the f16 mat-mat kernel needs its
/// inner dimension in whole 32-wide tiles (stories260K has ffn = 172). The extra gate/up rows and down columns are
/// zero, so the padded MLP computes exactly the same values (act(0) * 0 = 0 feeds zero columns).
pub fn padded_ffn(ffn: usize) -> usize {
    ffn.next_multiple_of(FFN_MULTIPLE)
}

/// The multiple [`padded_ffn`] rounds to; the shape plan pads its MLP activations with it too.
pub const FFN_MULTIPLE: usize = 32;

/// `t` (`[rows, cols]`) with zero rows appended up to `rows` (M0E4 stays M0E4: zero codes, scales and offsets).
fn pad_rows(t: &Tensor, rows: usize) -> Result<Tensor, EngineError> {
    let extra = rows - t.rows();
    let cols = t.cols();
    let shape = vec![rows, cols];
    Ok(match &t.data {
        TensorData::M0e4(m) => {
            let (mut codes, mut scales, mut offsets) = m.clone().into_parts();
            let groups = cols / m.group().len();
            codes.resize(codes.len() + extra * cols / 2, 0);
            scales.resize(scales.len() + extra * groups, f16::ZERO);
            offsets.resize(offsets.len() + extra * groups, f16::ZERO);
            Tensor::m0e4(fp4::M0e4Matrix::from_parts(
                MatrixShape::new(rows, cols),
                m.group(),
                codes,
                scales,
                offsets,
            )?)
        }
        TensorData::F16(v) => {
            let mut v = v.clone();
            v.resize(rows * cols, f16::ZERO);
            Tensor::f16(shape, v)?
        }
        TensorData::F32(v) => {
            let mut v = v.clone();
            v.resize(rows * cols, 0.0);
            Tensor::f32(shape, v)?
        }
    })
}

/// `t` (`[rows, cols]`) with zero columns appended up to `cols`, as f16 (a matrix whose columns are not a multiple
/// of 32 was never M0E4; one that was is dequantised).
fn pad_cols(t: &Tensor, cols: usize) -> Result<Tensor, EngineError> {
    let (rows, old) = (t.rows(), t.cols());
    let values = t.to_f32();
    let mut v = Vec::with_capacity(rows * cols);
    for row in values.chunks(old) {
        v.extend(row.iter().map(|&x| f16::from_f32(x)));
        v.extend(std::iter::repeat_n(f16::ZERO, cols - old));
    }
    Tensor::f16(vec![rows, cols], v)
}

/// Uploads a vector tensor (norm weight, bias) as f32.
pub fn upload_vector(
    gpu: &Gpu,
    name: &str,
    t: &Tensor,
    len: usize,
) -> Result<DeviceBuffer<f32>, EngineError> {
    let v = t.to_f32();
    if v.len() != len {
        return Err(EngineError::Model(format!(
            "{name}: {} values, expected {len}",
            v.len()
        )));
    }
    Ok(DeviceBuffer::from_slice(gpu, &v)?)
}

/// One decoder layer on the device.
#[derive(Debug)]
pub struct DeviceLayer {
    /// RMSNorm weight before attention.
    pub attn_norm: DeviceBuffer<f32>,
    /// `[wq; wk; wv]`.
    pub qkv: DeviceMatrix,
    /// `[bq; bk; bv]` (Qwen2).
    pub qkv_bias: Option<DeviceBuffer<f32>>,
    /// Output projection.
    pub wo: DeviceMatrix,
    /// RMSNorm weight before the MLP.
    pub ffn_norm: DeviceBuffer<f32>,
    /// Gate projection.
    pub gate: DeviceMatrix,
    /// Up projection.
    pub up: DeviceMatrix,
    /// Down projection.
    pub down: DeviceMatrix,
    /// Per-head RMSNorm weights of q and k (Qwen3, Gemma 3).
    pub qk_norm: Option<QkNorms>,
    /// RMSNorm of the attention output before the residual add (Gemma 2, 3).
    pub post_attn_norm: Option<DeviceBuffer<f32>>,
    /// RMSNorm of the MLP output before the residual add (Gemma 2, 3).
    pub post_ffn_norm: Option<DeviceBuffer<f32>>,
}

/// The `[head_dim]` RMSNorm weights every q head and every k head is normed with.
#[derive(Debug)]
pub struct QkNorms {
    /// Of the query heads.
    pub q: DeviceBuffer<f32>,
    /// Of the key heads.
    pub k: DeviceBuffer<f32>,
}

/// All weights on the device.
#[derive(Debug)]
pub struct DeviceWeights {
    /// Token embedding `[vocab][hidden]`, split by rows where one allocation cannot hold it.
    pub embedding: RowSplitMatrix,
    /// Layers.
    pub layers: Vec<DeviceLayer>,
    /// Final RMSNorm weight.
    pub final_norm: DeviceBuffer<f32>,
    /// Output head, split like the embedding; `None` when tied to the embedding.
    pub head: Option<RowSplitMatrix>,
}

impl DeviceWeights {
    /// Uploads a model's weights.
    pub fn upload(gpu: &Gpu, model: &Model) -> Result<Self, EngineError> {
        let c = &model.config.shape;
        let w = &model.weights;
        let layers = w
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| upload_layer(gpu, i, l, c))
            .collect::<Result<Vec<_>, _>>()?;
        let head = match &w.lm_head {
            Some(t) => Some(RowSplitMatrix::upload(gpu, "lm_head", t)?),
            None => None,
        };
        Ok(Self {
            embedding: RowSplitMatrix::upload(gpu, "embedding", &w.embedding)?,
            layers,
            final_norm: upload_vector(gpu, "final_norm", &w.final_norm, c.hidden)?,
            head,
        })
    }

    /// The output head (the embedding when tied).
    pub fn head(&self) -> &RowSplitMatrix {
        self.head.as_ref().unwrap_or(&self.embedding)
    }

    /// Bytes of all weights on the device.
    pub fn bytes(&self) -> usize {
        let layer = |l: &DeviceLayer| {
            let opt = |b: &Option<DeviceBuffer<f32>>| b.as_ref().map_or(0, DeviceBuffer::byte_len);
            l.attn_norm.byte_len()
                + l.qk_norm
                    .as_ref()
                    .map_or(0, |n| n.q.byte_len() + n.k.byte_len())
                + opt(&l.post_attn_norm)
                + opt(&l.post_ffn_norm)
                + l.qkv.bytes()
                + l.qkv_bias.as_ref().map_or(0, DeviceBuffer::byte_len)
                + l.wo.bytes()
                + l.ffn_norm.byte_len()
                + l.gate.bytes()
                + l.up.bytes()
                + l.down.bytes()
        };
        self.embedding.bytes()
            + self.layers.iter().map(layer).sum::<usize>()
            + self.final_norm.byte_len()
            + self.head.as_ref().map_or(0, RowSplitMatrix::bytes)
    }

    /// Bytes one decode step reads from the weights (every layer matrix and the head; one embedding row).
    pub fn bytes_per_token(&self) -> usize {
        let layer = |l: &DeviceLayer| {
            l.qkv.bytes() + l.wo.bytes() + l.gate.bytes() + l.up.bytes() + l.down.bytes()
        };
        self.layers.iter().map(layer).sum::<usize>() + self.head().bytes()
    }
}

fn upload_layer(
    gpu: &Gpu,
    i: usize,
    l: &LayerWeights,
    shape: &ModelShape,
) -> Result<DeviceLayer, EngineError> {
    let (hidden, qkv_rows, head_dim) = (shape.hidden, shape.qkv_dim(), shape.head_dim);
    let name = |s: &str| format!("layers.{i}.{s}");
    let optional = |n: &str, t: &Option<Tensor>, len: usize| {
        t.as_ref()
            .map(|t| upload_vector(gpu, &name(n), t, len))
            .transpose()
    };
    let qk_norm = match (
        optional("q_norm", &l.q_norm, head_dim)?,
        optional("k_norm", &l.k_norm, head_dim)?,
    ) {
        (Some(q), Some(k)) => Some(QkNorms { q, k }),
        (None, None) => None,
        _ => {
            return Err(EngineError::Model(format!(
                "{}: q and k norms must both be present or both absent",
                name("qk_norm")
            )))
        }
    };
    let qkv_bias = match (&l.bq, &l.bk, &l.bv) {
        (Some(q), Some(k), Some(v)) => {
            let mut b = q.to_f32();
            b.extend(k.to_f32());
            b.extend(v.to_f32());
            if b.len() != qkv_rows {
                return Err(EngineError::Model(format!(
                    "{}: {} bias values, expected {qkv_rows}",
                    name("qkv_bias"),
                    b.len()
                )));
            }
            Some(DeviceBuffer::from_slice(gpu, &b)?)
        }
        (None, None, None) => None,
        _ => {
            return Err(EngineError::Model(format!(
                "{}: q, k and v biases must all be present or all absent",
                name("qkv_bias")
            )))
        }
    };
    Ok(DeviceLayer {
        attn_norm: upload_vector(gpu, &name("attn_norm"), &l.attn_norm, hidden)?,
        qkv: DeviceMatrix::upload_stacked(gpu, &name("qkv"), &[&l.wq, &l.wk, &l.wv])?,
        qkv_bias,
        wo: DeviceMatrix::upload(gpu, &name("wo"), &l.wo)?,
        ffn_norm: upload_vector(gpu, &name("ffn_norm"), &l.ffn_norm, hidden)?,
        gate: upload_mlp(gpu, &name("w_gate"), &l.w_gate, false)?,
        up: upload_mlp(gpu, &name("w_up"), &l.w_up, false)?,
        down: upload_mlp(gpu, &name("w_down"), &l.w_down, true)?,
        qk_norm,
        post_attn_norm: optional("post_attn_norm", &l.post_attn_norm, hidden)?,
        post_ffn_norm: optional("post_ffn_norm", &l.post_ffn_norm, hidden)?,
    })
}

/// Uploads an MLP matrix padded to [`padded_ffn`]: rows for gate/up, columns for down.
fn upload_mlp(gpu: &Gpu, name: &str, t: &Tensor, down: bool) -> Result<DeviceMatrix, EngineError> {
    let ffn = if down { t.cols() } else { t.rows() };
    let padded = padded_ffn(ffn);
    if padded == ffn {
        return DeviceMatrix::upload(gpu, name, t);
    }
    let t = if down {
        pad_cols(t, padded)?
    } else {
        pad_rows(t, padded)?
    };
    DeviceMatrix::upload(gpu, name, &t)
}
