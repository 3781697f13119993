//! Weights on the device: M0E4 matrices in the kernels' packed layout, f16 matrices, f32 norms and biases.
//!
//! q, k and v are stacked into one matrix so the QKV projection is one launch (and their biases into one vector);
//! gate and up stay separate because the prefill path gates two `[seq][ffn]` outputs elementwise.

use clkernels::kernels::matvec::{DeviceF16Matrix, DeviceM0e4};
use clkernels::runtime::{DeviceBuffer, Gpu};
use fp4::MatrixShape;
use half::f16;

use crate::model::{LayerWeights, Model, Tensor, TensorData};
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
}

/// All weights on the device.
#[derive(Debug)]
pub struct DeviceWeights {
    /// Token embedding `[vocab][hidden]`.
    pub embedding: DeviceMatrix,
    /// Layers.
    pub layers: Vec<DeviceLayer>,
    /// Final RMSNorm weight.
    pub final_norm: DeviceBuffer<f32>,
    /// Output head; `None` when tied to the embedding.
    pub head: Option<DeviceMatrix>,
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
            .map(|(i, l)| upload_layer(gpu, i, l, c.hidden, c.qkv_dim()))
            .collect::<Result<Vec<_>, _>>()?;
        let head = match &w.lm_head {
            Some(t) => Some(DeviceMatrix::upload(gpu, "lm_head", t)?),
            None => None,
        };
        Ok(Self {
            embedding: DeviceMatrix::upload(gpu, "embedding", &w.embedding)?,
            layers,
            final_norm: upload_vector(gpu, "final_norm", &w.final_norm, c.hidden)?,
            head,
        })
    }

    /// The output head (the embedding when tied).
    pub fn head(&self) -> &DeviceMatrix {
        self.head.as_ref().unwrap_or(&self.embedding)
    }

    /// Bytes of all weights on the device.
    pub fn bytes(&self) -> usize {
        let layer = |l: &DeviceLayer| {
            l.attn_norm.byte_len()
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
            + self.head.as_ref().map_or(0, DeviceMatrix::bytes)
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
    hidden: usize,
    qkv_rows: usize,
) -> Result<DeviceLayer, EngineError> {
    let name = |s: &str| format!("layers.{i}.{s}");
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
