//! Weight matrices on the device, as the mat-vec (and the mat-mat and embedding) kernels read them.

use std::sync::OnceLock;

use fp4::{GroupSize, M0e4Matrix, MatrixShape};
use half::f16;

use super::super::{shape_error, Arg, KernelError};
use crate::runtime::{BufferImage, DeviceBuffer, Gpu, PixelFormat};

/// An M0E4 matrix on the device, in exactly the layout of [`fp4::M0e4Matrix`].
#[derive(Debug)]
pub struct DeviceM0e4 {
    /// Packed codes, `rows * cols / 2` bytes.
    pub codes: DeviceBuffer<u8>,
    /// Scales, `[rows][cols / G]`.
    pub scales: DeviceBuffer<f16>,
    /// Offsets, `[rows][cols / G]`.
    pub offsets: DeviceBuffer<f16>,
    /// Rows (output features) and columns (input features).
    pub shape: MatrixShape,
    /// Group size along the columns.
    pub group: GroupSize,
    /// Images over the three buffers, made on the first launch that reads through them (the Adreno image build);
    /// `None` inside when the device refused them, and the buffers are read instead.
    images: OnceLock<Option<WeightImages>>,
}

/// `image1d_buffer_t` views of an M0E4 matrix's codes (one 32-code chunk per pixel), scales and offsets (the bits
/// of one half per pixel), sharing the buffers' memory.
#[derive(Debug)]
pub(super) struct WeightImages {
    codes: BufferImage,
    scales: BufferImage,
    offsets: BufferImage,
}

impl WeightImages {
    /// The three images as the first three arguments of a weight in the image build's kernels.
    pub(super) fn args(&self) -> [Arg<'static>; 3] {
        [
            Arg::Mem(self.codes.raw()),
            Arg::Mem(self.scales.raw()),
            Arg::Mem(self.offsets.raw()),
        ]
    }
}

impl DeviceM0e4 {
    /// Uploads `matrix`.
    pub fn upload(gpu: &Gpu, matrix: &M0e4Matrix) -> Result<Self, KernelError> {
        Ok(DeviceM0e4 {
            codes: DeviceBuffer::from_slice(gpu, matrix.codes())?,
            scales: DeviceBuffer::from_slice(gpu, matrix.scales())?,
            offsets: DeviceBuffer::from_slice(gpu, matrix.offsets())?,
            shape: matrix.shape(),
            group: matrix.group(),
            images: OnceLock::new(),
        })
    }

    /// 16-byte chunks of codes: the pixels of its codes image.
    pub(super) fn code_pixels(&self) -> usize {
        self.codes.byte_len() / 16
    }

    /// The images over this matrix's buffers, made on first use. A device that refuses them (an image format it
    /// lacks) is logged once and `None` is kept, so launches read the buffers instead.
    pub(super) fn images(&self, gpu: &Gpu) -> Option<&WeightImages> {
        self.images
            .get_or_init(|| {
                let made = (|| {
                    Ok::<_, crate::runtime::ClError>(WeightImages {
                        codes: BufferImage::over(gpu, &self.codes, PixelFormat::U32x4)?,
                        scales: BufferImage::over(gpu, &self.scales, PixelFormat::U16)?,
                        offsets: BufferImage::over(gpu, &self.offsets, PixelFormat::U16)?,
                    })
                })();
                match made {
                    Ok(images) => Some(images),
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "weight images refused; this {}x{} matrix is read from buffers",
                            self.shape.rows,
                            self.shape.cols
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    /// As [`DeviceM0e4::upload`], in buffers that may exceed the device's largest allocation where it has
    /// `cl_qcom_large_buffer` ([`DeviceBuffer::new_large`]; not run on hardware).
    pub fn upload_large(gpu: &Gpu, matrix: &M0e4Matrix) -> Result<Self, KernelError> {
        Ok(DeviceM0e4 {
            codes: DeviceBuffer::from_slice_large(gpu, matrix.codes())?,
            scales: DeviceBuffer::from_slice_large(gpu, matrix.scales())?,
            offsets: DeviceBuffer::from_slice_large(gpu, matrix.offsets())?,
            shape: matrix.shape(),
            group: matrix.group(),
            images: OnceLock::new(),
        })
    }

    /// Uploads rows `rows` of `matrix` as a matrix of their own: one part of a matrix split across buffers
    /// ([`crate::runtime::RowSplit`]).
    pub fn upload_rows(
        gpu: &Gpu,
        matrix: &M0e4Matrix,
        rows: std::ops::Range<usize>,
    ) -> Result<Self, KernelError> {
        let MatrixShape { rows: all, cols } = matrix.shape();
        if rows.is_empty() || rows.end > all {
            return Err(shape_error(
                "DeviceM0e4::upload_rows",
                format!("rows {rows:?} of a matrix of {all} rows"),
            ));
        }
        let groups = cols / matrix.group().len();
        let codes = rows.start * cols / 2..rows.end * cols / 2;
        let scales = rows.start * groups..rows.end * groups;
        Ok(DeviceM0e4 {
            codes: DeviceBuffer::from_slice(gpu, &matrix.codes()[codes])?,
            scales: DeviceBuffer::from_slice(gpu, &matrix.scales()[scales.clone()])?,
            offsets: DeviceBuffer::from_slice(gpu, &matrix.offsets()[scales])?,
            shape: MatrixShape::new(rows.len(), cols),
            group: matrix.group(),
            images: OnceLock::new(),
        })
    }

    /// Uploads several matrices of equal columns and group stacked along the rows (e.g. `[q; k; v]` so the QKV
    /// projection is one launch, or `[gate; up]`).
    pub fn concat_rows(gpu: &Gpu, parts: &[&M0e4Matrix]) -> Result<Self, KernelError> {
        let first = parts
            .first()
            .ok_or_else(|| shape_error("DeviceM0e4::concat_rows", "no matrices given"))?;
        let (cols, group) = (first.shape().cols, first.group());
        let mut rows = 0;
        let (mut codes, mut scales, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
        for (i, m) in parts.iter().enumerate() {
            if m.shape().cols != cols || m.group() != group {
                return Err(shape_error(
                    "DeviceM0e4::concat_rows",
                    format!(
                        "part {i} is {}x{} with group {}, but part 0 has {cols} columns and group {group}",
                        m.shape().rows,
                        m.shape().cols,
                        m.group()
                    ),
                ));
            }
            rows += m.shape().rows;
            codes.extend_from_slice(m.codes());
            scales.extend_from_slice(m.scales());
            offsets.extend_from_slice(m.offsets());
        }
        Ok(DeviceM0e4 {
            codes: DeviceBuffer::from_slice(gpu, &codes)?,
            scales: DeviceBuffer::from_slice(gpu, &scales)?,
            offsets: DeviceBuffer::from_slice(gpu, &offsets)?,
            shape: MatrixShape::new(rows, cols),
            group,
            images: OnceLock::new(),
        })
    }

    /// Bytes a mat-vec reads from this matrix (codes, scales, offsets).
    pub fn bytes(&self) -> usize {
        self.codes.byte_len() + self.scales.byte_len() + self.offsets.byte_len()
    }

    /// `log2(G / 32)`: how many 32-code chunks share one scale, as the kernels take it.
    pub(crate) fn chunks_per_group_shift(&self) -> u32 {
        chunks_per_group_shift(self.group)
    }

    /// The shape and buffer lengths the launch checks read.
    pub(super) fn dims(&self) -> WeightDims {
        WeightDims {
            shape: self.shape,
            group: self.group,
            codes: self.codes.len(),
            scales: self.scales.len(),
            offsets: self.offsets.len(),
        }
    }
}

/// `log2(G / 32)` of a group size.
pub(super) fn chunks_per_group_shift(group: GroupSize) -> u32 {
    match group {
        GroupSize::G32 => 0,
        GroupSize::G64 => 1,
        GroupSize::G128 => 2,
    }
}

/// What the checks need of a [`DeviceM0e4`]: its shape and group, and how many elements its buffers hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WeightDims {
    pub shape: MatrixShape,
    pub group: GroupSize,
    pub codes: usize,
    pub scales: usize,
    pub offsets: usize,
}

/// An f16 matrix on the device, row-major `[rows][cols]` (e.g. an unquantised output head).
#[derive(Debug)]
pub struct DeviceF16Matrix {
    /// The weights.
    pub data: DeviceBuffer<f16>,
    /// Rows and columns.
    pub shape: MatrixShape,
    /// An image over `data` (8 halves per pixel), made on the first launch that reads through it; `None` inside
    /// when the device refused it.
    image: OnceLock<Option<BufferImage>>,
}

impl DeviceF16Matrix {
    /// Uploads a row-major `[rows][cols]` f16 matrix.
    pub fn upload(gpu: &Gpu, data: &[f16], shape: MatrixShape) -> Result<Self, KernelError> {
        if data.len() != shape.len() || shape.is_empty() {
            return Err(shape_error(
                "DeviceF16Matrix::upload",
                format!(
                    "{} values for a {}x{} matrix",
                    data.len(),
                    shape.rows,
                    shape.cols
                ),
            ));
        }
        Ok(DeviceF16Matrix {
            data: DeviceBuffer::from_slice(gpu, data)?,
            shape,
            image: OnceLock::new(),
        })
    }

    /// 16-byte chunks of 8 halves: the pixels of its image.
    pub(super) fn pixels(&self) -> usize {
        self.data.byte_len() / 16
    }

    /// The image over the weights, made on first use (`None`, logged once, where the device refuses it).
    pub(super) fn image(&self, gpu: &Gpu) -> Option<&BufferImage> {
        self.image
            .get_or_init(
                || match BufferImage::over(gpu, &self.data, PixelFormat::U32x4) {
                    Ok(image) => Some(image),
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "weight image refused; this {}x{} f16 matrix is read from its buffer",
                            self.shape.rows,
                            self.shape.cols
                        );
                        None
                    }
                },
            )
            .as_ref()
    }

    /// As [`DeviceF16Matrix::upload`], in one buffer that may exceed the device's largest allocation where it has
    /// `cl_qcom_large_buffer` ([`DeviceBuffer::new_large`]; not run on hardware).
    pub fn upload_large(gpu: &Gpu, data: &[f16], shape: MatrixShape) -> Result<Self, KernelError> {
        if data.len() != shape.len() || shape.is_empty() {
            return Err(shape_error(
                "DeviceF16Matrix::upload_large",
                format!(
                    "{} values for a {}x{} matrix",
                    data.len(),
                    shape.rows,
                    shape.cols
                ),
            ));
        }
        Ok(DeviceF16Matrix {
            data: DeviceBuffer::from_slice_large(gpu, data)?,
            shape,
            image: OnceLock::new(),
        })
    }
}
