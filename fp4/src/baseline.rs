//! INT4 baselines in the same packing as M0E4 (same nibble order, same `[rows][cols/G]`
//! parameters), so error and speed comparisons isolate the number format.
//!
//! * Symmetric (llama.cpp Q4_0 shape): `w = d·(q - 8)`, one f16 `d` per group, `d = m / -8`
//!   where `m` is the group's value of largest magnitude.
//! * Asymmetric (llama.cpp Q4_1 shape): `w = d·q + m`, f16 `d` and `m` per group, from min/max
//!   or from the same least-squares search M0E4 uses.

use crate::grid::{self, SearchEffort};
use crate::packing::{pack_pairs, unpack_pairs};
use crate::quantize::{
    assign_packed, quantize_groups, to_f16_finite, GroupParams, GroupQuantiser, GroupSummary,
    Weight,
};
use crate::{Fp4Error, GroupSize, MatrixShape};
use half::f16;

/// Which INT4 dequantisation formula a matrix uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int4Kind {
    /// `w = d·(q - 8)`; only scales are stored.
    Symmetric,
    /// `w = d·q + m`; scales and minimums are stored.
    Asymmetric,
}

/// An INT4-packed matrix (baseline for comparisons with M0E4).
#[derive(Debug, Clone, PartialEq)]
pub struct Int4Matrix {
    /// Rows and columns.
    pub shape: MatrixShape,
    /// Weights per group.
    pub group: GroupSize,
    /// Dequantisation formula.
    pub kind: Int4Kind,
    /// Packed codes, same layout as [`crate::M0e4Matrix::codes`].
    pub codes: Vec<u8>,
    /// Per-group `d`, `[rows][cols/G]`.
    pub scales: Vec<f16>,
    /// Per-group `m`, `[rows][cols/G]`; all zero (and unused) for [`Int4Kind::Symmetric`].
    pub mins: Vec<f16>,
}

struct Symmetric;

impl GroupQuantiser for Symmetric {
    #[inline(always)]
    fn quantise(&self, x: &[f32], sm: GroupSummary, packed: &mut [u8]) -> Option<GroupParams> {
        let (min, max) = (sm.min, sm.max);
        let mut unpacked = [0u8; 128];
        let codes = &mut unpacked[..x.len()];
        let m = if -min > max { min } else { max };
        let d = to_f16_finite(m / -8.0)?;
        let df = d.to_f32();
        if df == 0.0 {
            codes.fill(8);
        } else {
            // Nearest level d·(q - 8), re-picked against the f16-rounded d.
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = ((v / df) + 8.0).round().clamp(0.0, 15.0) as u8;
            }
        }
        pack_pairs(codes, packed);
        Some((d, f16::ZERO))
    }
}

struct Asymmetric(SearchEffort);

impl GroupQuantiser for Asymmetric {
    #[inline(always)]
    fn quantise(&self, x: &[f32], sm: GroupSummary, packed: &mut [u8]) -> Option<GroupParams> {
        let (min, max) = (sm.min, sm.max);
        if min == max {
            packed.fill(0);
            return Some((f16::ZERO, to_f16_finite(min)?));
        }
        let g = grid::search(x, sm.sum, min, max, self.0);
        let d = to_f16_finite(g.d)?;
        let m = to_f16_finite(g.z)?;
        assign_packed(x, d.to_f32(), m.to_f32(), packed);
        Some((d, m))
    }
}

/// Symmetric INT4 (Q4_0 shape): `w = d·(q - 8)`.
pub fn quantize_int4_symmetric<T: Weight>(
    weights: &[T],
    shape: MatrixShape,
    group: GroupSize,
) -> Result<Int4Matrix, Fp4Error> {
    let (codes, scales, mins) = quantize_groups(weights, shape, group, &Symmetric)?;
    Ok(Int4Matrix {
        shape,
        group,
        kind: Int4Kind::Symmetric,
        codes,
        scales,
        mins,
    })
}

/// Asymmetric INT4: `w = d·q + m`; `SearchEffort { steps: 1, refits: 0 }` gives the min/max
/// grid of llama.cpp's Q4_1, [`SearchEffort::default`] the search M0E4 uses.
pub fn quantize_int4_asymmetric<T: Weight>(
    weights: &[T],
    shape: MatrixShape,
    group: GroupSize,
    effort: SearchEffort,
) -> Result<Int4Matrix, Fp4Error> {
    let (codes, scales, mins) = quantize_groups(weights, shape, group, &Asymmetric(effort))?;
    Ok(Int4Matrix {
        shape,
        group,
        kind: Int4Kind::Asymmetric,
        codes,
        scales,
        mins,
    })
}

impl Int4Matrix {
    /// Dequantises every weight in f32, row-major `[rows][cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let g = self.group.len();
        let mut out = vec![0.0f32; self.shape.len()];
        let mut q = [0u8; 128];
        for (((dst, bytes), d), m) in out
            .chunks_exact_mut(g)
            .zip(self.codes.chunks_exact(g / 2))
            .zip(&self.scales)
            .zip(&self.mins)
        {
            unpack_pairs(bytes, &mut q[..g]);
            let (d, m) = (d.to_f32(), m.to_f32());
            for (w, &c) in dst.iter_mut().zip(&q[..g]) {
                *w = match self.kind {
                    Int4Kind::Symmetric => d * (f32::from(c) - 8.0),
                    Int4Kind::Asymmetric => d * f32::from(c) + m,
                };
            }
        }
        out
    }
}
