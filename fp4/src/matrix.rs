//! The packed M0E4 matrix: codes, scales and offsets in the layout the GPU kernels read.

use crate::packing::code_at;
use crate::recipe::dequant_one;
use crate::{Fp4Error, GroupSize, MatrixShape};
use half::f16;

/// A weight matrix packed as M0E4: `w[r][k] = s·(1 + q/16) + b` with one f16 scale `s` and one
/// f16 offset `b` per (row, group).
///
/// * `codes`: `rows * cols/2` bytes, row-major; byte `j` of a row holds element `2j` in its low
///   nibble and `2j+1` in its high nibble.
/// * `scales`, `offsets`: `rows * cols/G` values each, row-major `[rows][cols/G]`.
#[derive(Debug, Clone, PartialEq)]
pub struct M0e4Matrix {
    shape: MatrixShape,
    group: GroupSize,
    codes: Vec<u8>,
    scales: Vec<f16>,
    offsets: Vec<f16>,
}

/// Checks that `len` equals `expected`, naming the part otherwise.
pub(crate) fn check_part(part: &'static str, expected: usize, len: usize) -> Result<(), Fp4Error> {
    if len == expected {
        Ok(())
    } else {
        Err(Fp4Error::PartLength {
            part,
            expected,
            actual: len,
        })
    }
}

impl M0e4Matrix {
    /// Assembles a matrix from already-packed parts, checking every length against the shape.
    pub fn from_parts(
        shape: MatrixShape,
        group: GroupSize,
        codes: Vec<u8>,
        scales: Vec<f16>,
        offsets: Vec<f16>,
    ) -> Result<Self, Fp4Error> {
        shape.check_groupable(group)?;
        // Checked again here so no path to the sizes below multiplies unchecked; `cols` is a
        // multiple of the group size, so `len / G` is exactly `rows * (cols / G)`.
        let len = shape.try_len()?;
        let groups = len / group.len();
        check_part("codes", len / 2, codes.len())?;
        check_part("scales", groups, scales.len())?;
        check_part("offsets", groups, offsets.len())?;
        Ok(Self {
            shape,
            group,
            codes,
            scales,
            offsets,
        })
    }

    /// Gives the parts back: `(codes, scales, offsets)`.
    pub fn into_parts(self) -> (Vec<u8>, Vec<f16>, Vec<f16>) {
        (self.codes, self.scales, self.offsets)
    }

    /// Rows (N) and columns (K).
    pub fn shape(&self) -> MatrixShape {
        self.shape
    }

    /// Weights per (row, group).
    pub fn group(&self) -> GroupSize {
        self.group
    }

    /// Groups in one row, `cols / G`.
    pub fn groups_per_row(&self) -> usize {
        self.shape.cols / self.group.len()
    }

    /// Packed codes, `rows * cols/2` bytes.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// Per-group scales `s`, `[rows][cols/G]`.
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }

    /// Per-group offsets `b`, `[rows][cols/G]`.
    pub fn offsets(&self) -> &[f16] {
        &self.offsets
    }

    /// Packed codes of one row, `cols/2` bytes. Panics if `row >= rows`.
    pub fn row_codes(&self, row: usize) -> &[u8] {
        let n = self.shape.cols / 2;
        &self.codes[row * n..(row + 1) * n]
    }

    /// The 4-bit code of element (`row`, `col`). Panics if either is out of range.
    pub fn code(&self, row: usize, col: usize) -> u8 {
        code_at(self.row_codes(row), col)
    }

    /// The dequantised value of element (`row`, `col`), exactly as [`crate::reference::dequantize`] computes it.
    /// Panics if either index is out of range.
    pub fn value(&self, row: usize, col: usize) -> f32 {
        let g = row * self.groups_per_row() + col / self.group.len();
        dequant_one(self.code(row, col), self.scales[g], self.offsets[g])
    }

    /// Bytes this matrix occupies packed (codes + scales + offsets).
    pub fn packed_bytes(&self) -> usize {
        self.codes.len() + 2 * (self.scales.len() + self.offsets.len())
    }

    /// Storage cost in bits per weight, including scales and offsets (4.5 for G=64, 5 for G=32).
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.packed_bytes() as f64 / self.shape.len() as f64
    }
}
