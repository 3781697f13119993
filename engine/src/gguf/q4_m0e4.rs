//! Q4_0 and Q4_1 blocks imported into M0E4 at group 32 with no re-quantisation.
//!
//! Both ggml formats are 16-level affine grids over 32 weights, as is M0E4 (`w = s·(1 + q/16) + b`):
//!
//! * Q4_1 `w = d·q + m`   gives `s = 16d`, `b = m − 16d`;
//! * Q4_0 `w = d·(q − 8)` gives `s = 16d`, `b = −24d`;
//!
//! with the same 4-bit codes `q`. Only the nibble order differs: a ggml block's byte `j` holds element `j` (low
//! nibble) and element `j + 16` (high), M0E4's byte `j` holds elements `2j` (low) and `2j + 1` (high).
//!
//! What is exact: every code, and every scale (`16d` is `d` with its exponent raised by four, representable in
//! f16 whenever it does not overflow). What is rounded: the offset `b`, computed exactly in f64 from the two f16
//! inputs and rounded once to f16, so it is within half an f16 ulp of the exact `m − 16d` (or `−24d`). A weight
//! therefore dequantises (`s·h + b` in f32) to within half an f16 ulp of `b`, plus one f32 rounding, of
//! llama.cpp's `d·q + m`; when `b` is exact it is bit-identical, since both compute the same real number and
//! round it once (`d·q` is exact in f32, so fused or unfused evaluation by llama.cpp makes no difference).
//! Measured on SmolLM2-135M-Instruct Q4_1 (210 tensors, 106 M weights): 66.3 % of weights are bit-identical.
//!
//! A block whose `16d` or `b` overflows f16 (`24d` does above |d| ≈ 2730; `m − 16d` may for a huge `m`) cannot be
//! imported this way: [`import`] reports it and the loader dequantises and quantises that tensor instead.

use super::dequant::half_at;
use super::GgmlType;
use fp4::{GroupSize, M0e4Matrix, MatrixShape};
use half::f16;
use rayon::prelude::*;

/// Why a Q4 tensor could not be imported exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportError {
    /// The type is not Q4_0 or Q4_1, or the shape does not fit the data.
    Unsuitable(String),
    /// A block's scale or offset is beyond the f16 range (at the given row and group).
    Overflow {
        /// Row of the block.
        row: usize,
        /// Group (block) within the row.
        group: usize,
    },
}

/// The `(s, b)` of one block from its f16 `d` and, for Q4_1, `m`; `None` when either overflows f16.
fn scale_offset(ty: GgmlType, x: &[u8]) -> Option<(f16, f16)> {
    let d = f64::from(half_at(x, 0));
    let b = if ty == GgmlType::Q4_1 {
        f64::from(half_at(x, 2)) - 16.0 * d
    } else {
        -24.0 * d
    };
    let (s, b) = (f16::from_f64(16.0 * d), f16::from_f64(b));
    (s.is_finite() && b.is_finite()).then_some((s, b))
}

/// The M0E4 code bytes of one block: ggml nibble order (`j` | `j+16`) to M0E4's (`2j` | `2j+1`).
fn repack(qs: &[u8], out: &mut [u8]) {
    let code = |e: usize| {
        if e < 16 {
            qs[e] & 0xF
        } else {
            qs[e - 16] >> 4
        }
    };
    for (j, byte) in out.iter_mut().enumerate() {
        *byte = code(2 * j) | (code(2 * j + 1) << 4);
    }
}

/// Imports a `[rows, cols]` Q4_0 or Q4_1 tensor (`data` = its blocks, row-major) as an M0E4 G32 matrix.
pub fn import(
    ty: GgmlType,
    data: &[u8],
    rows: usize,
    cols: usize,
) -> Result<M0e4Matrix, ImportError> {
    if !matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1) {
        return Err(ImportError::Unsuitable(format!(
            "{ty} blocks cannot be imported into M0E4 (only Q4_0 and Q4_1)"
        )));
    }
    let bb = ty.block_bytes();
    let nibbles = if ty == GgmlType::Q4_1 { 4 } else { 2 };
    let groups = rows
        .checked_mul(cols)
        .filter(|n| n.is_multiple_of(32) && cols.is_multiple_of(32))
        .map(|n| n / 32);
    if groups.is_none_or(|g| g.checked_mul(bb) != Some(data.len())) {
        return Err(ImportError::Unsuitable(format!(
            "{} bytes of {ty} do not hold a {rows} x {cols} matrix",
            data.len()
        )));
    }
    let groups = groups.unwrap_or(0);
    let mut codes = vec![0u8; groups * 16];
    let mut scales = vec![f16::ZERO; groups];
    let mut offsets = vec![f16::ZERO; groups];
    let gpr = cols / 32;
    codes
        .par_chunks_mut(16)
        .zip(scales.par_iter_mut().zip(offsets.par_iter_mut()))
        .zip(data.par_chunks(bb))
        .enumerate()
        .try_for_each(|(g, ((c, (s, b)), x))| {
            let (sg, bg) = scale_offset(ty, x).ok_or(ImportError::Overflow {
                row: g / gpr,
                group: g % gpr,
            })?;
            repack(&x[nibbles..], c);
            (*s, *b) = (sg, bg);
            Ok(())
        })?;
    M0e4Matrix::from_parts(
        MatrixShape::new(rows, cols),
        GroupSize::G32,
        codes,
        scales,
        offsets,
    )
    .map_err(|e| ImportError::Unsuitable(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn repack_moves_every_nibble_to_its_element() {
        // Byte j of the ggml block holds element j (low) and j + 16 (high); give element e the code e % 16 and
        // check M0E4 reads it back at e.
        let qs: Vec<u8> = (0..16u8).map(|j| j | (j << 4)).collect();
        let mut out = [0u8; 16];
        repack(&qs, &mut out);
        for e in 0..32usize {
            let m0e4 = if e % 2 == 0 {
                out[e / 2] & 0xF
            } else {
                out[e / 2] >> 4
            };
            let ggml = if e < 16 { qs[e] & 0xF } else { qs[e - 16] >> 4 };
            assert_eq!(m0e4, ggml, "element {e}");
        }
    }

    #[test]
    fn huge_d_reports_overflow_with_its_position() {
        let mut block = f16::from_f32(4000.0).to_le_bytes().to_vec();
        block.extend([0u8; 16]);
        let mut data = vec![0u8; 18];
        data.extend(&block);
        assert_eq!(
            import(GgmlType::Q4_0, &data, 1, 64).unwrap_err(),
            ImportError::Overflow { row: 0, group: 1 }
        );
    }
}
