//! The group-parallel quantisation driver and the M0E4 quantiser built on it.

use crate::grid::{self, nearest_code, SearchEffort};
use crate::packing::pack_pairs;
use crate::{Fp4Error, GroupSize, M0e4Matrix, MatrixShape};
use half::{bf16, f16};
use rayon::prelude::*;

/// An element type weights can be quantised from.
pub trait Weight: Copy + Send + Sync {
    /// The value as f32 (exact for f16 and bf16).
    fn to_f32(self) -> f32;
}

impl Weight for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Weight for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Weight for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// Groups handed to one rayon task: large enough to amortise scheduling, small enough to balance.
const GROUPS_PER_TASK: usize = 512;

/// One quantised group: its codes (one per element, unpacked) and its two f16 parameters.
pub(crate) type GroupParams = (f16, f16);

/// Runs `quantise_group` over every group of `weights` in parallel and packs the codes.
///
/// `quantise_group(values, min, max, codes)` gets the group's finite f32 values and their
/// extremes, writes one code per value into `codes`, and returns the two f16 parameters, or
/// `None` when they would not fit in f16.
pub(crate) fn quantize_groups<T, F>(
    weights: &[T],
    shape: MatrixShape,
    group: GroupSize,
    quantise_group: F,
) -> Result<(Vec<u8>, Vec<f16>, Vec<f16>), Fp4Error>
where
    T: Weight,
    F: Fn(&[f32], f32, f32, &mut [u8]) -> Option<GroupParams> + Sync,
{
    shape.check_groupable(group)?;
    if weights.len() != shape.len() {
        return Err(Fp4Error::LengthMismatch {
            rows: shape.rows,
            cols: shape.cols,
            expected: shape.len(),
            actual: weights.len(),
        });
    }
    let g = group.len();
    let n_groups = shape.len() / g;
    let groups_per_row = shape.cols / g;
    let mut codes = vec![0u8; shape.len() / 2];
    let mut p1 = vec![f16::ZERO; n_groups];
    let mut p2 = vec![f16::ZERO; n_groups];
    weights
        .par_chunks(g * GROUPS_PER_TASK)
        .zip(codes.par_chunks_mut(g / 2 * GROUPS_PER_TASK))
        .zip(p1.par_chunks_mut(GROUPS_PER_TASK))
        .zip(p2.par_chunks_mut(GROUPS_PER_TASK))
        .enumerate()
        .try_for_each(|(task, (((w, c), a), b))| {
            let mut vals = [0.0f32; 128];
            let mut unpacked = [0u8; 128];
            for (i, ((wg, cg), (pa, pb))) in
                w.chunks_exact(g).zip(c.chunks_exact_mut(g / 2)).zip(a.iter_mut().zip(b.iter_mut())).enumerate()
            {
                let index = task * GROUPS_PER_TASK + i;
                let (row, group_index) = (index / groups_per_row, index % groups_per_row);
                let v = &mut vals[..g];
                let mut min = f32::INFINITY;
                let mut max = f32::NEG_INFINITY;
                let mut finite = true;
                for (dst, &src) in v.iter_mut().zip(wg) {
                    let x = src.to_f32();
                    *dst = x;
                    finite &= x.is_finite();
                    min = min.min(x);
                    max = max.max(x);
                }
                if !finite {
                    let (k, &value) =
                        v.iter().enumerate().find(|(_, x)| !x.is_finite()).unwrap_or((0, &f32::NAN));
                    return Err(Fp4Error::NonFinite { row, col: group_index * g + k, value });
                }
                let q = &mut unpacked[..g];
                let (x1, x2) =
                    quantise_group(v, min, max, q).ok_or(Fp4Error::OutOfF16Range { row, group_index, min, max })?;
                pack_pairs(q, cg);
                *pa = x1;
                *pb = x2;
            }
            Ok(())
        })?;
    Ok((codes, p1, p2))
}

/// Rounds to f16, or `None` when the value overflows f16.
#[inline(always)]
pub(crate) fn to_f16_finite(x: f32) -> Option<f16> {
    let h = f16::from_f32(x);
    h.is_finite().then_some(h)
}

/// Writes, for each value, the nearest code on the grid `level(q) = z + d·q` (all zeros when `d == 0`).
#[inline(always)]
pub(crate) fn assign_codes(x: &[f32], d: f32, z: f32, codes: &mut [u8]) {
    if d > 0.0 {
        let inv = 1.0 / d;
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = nearest_code(v, z, inv) as u8;
        }
    } else {
        codes.fill(0);
    }
}

/// Quantises one group to M0E4 given a search effort: search the grid in f32, round `s` and `b`
/// to f16, then re-pick every code against the rounded parameters.
pub(crate) fn m0e4_group(x: &[f32], min: f32, max: f32, codes: &mut [u8], effort: SearchEffort) -> Option<GroupParams> {
    if min == max {
        // A constant group: s = 0, every code 0, w = b.
        codes.fill(0);
        return Some((f16::ZERO, to_f16_finite(min)?));
    }
    let grid = grid::search(x, min, max, effort);
    let s = to_f16_finite(16.0 * grid.d)?;
    let b = to_f16_finite(grid.z - s.to_f32())?;
    let (sf, bf) = (s.to_f32(), b.to_f32());
    // Levels are s·(1 + q/16) + b = (s + b) + (s/16)·q.
    assign_codes(x, sf / 16.0, sf + bf, codes);
    Some((s, b))
}

/// Quantises a row-major `[rows][cols]` weight matrix (f32, f16 or bf16) to M0E4 with groups of
/// `group` along each row, choosing each group's scale and offset by a least-squares search.
///
/// Errors: `cols` not a multiple of the group size, empty shape, `weights.len() != rows*cols`,
/// any NaN or infinity, or a group whose scale or offset would overflow f16.
pub fn quantize_m0e4<T: Weight>(weights: &[T], shape: MatrixShape, group: GroupSize) -> Result<M0e4Matrix, Fp4Error> {
    quantize_m0e4_with(weights, shape, group, SearchEffort::default())
}

/// [`quantize_m0e4`] with an explicit search effort (`SearchEffort { steps: 1, refits: 0 }` is
/// the plain min/max grid).
pub fn quantize_m0e4_with<T: Weight>(
    weights: &[T],
    shape: MatrixShape,
    group: GroupSize,
    effort: SearchEffort,
) -> Result<M0e4Matrix, Fp4Error> {
    let (codes, scales, offsets) =
        quantize_groups(weights, shape, group, |x, min, max, q| m0e4_group(x, min, max, q, effort))?;
    M0e4Matrix::from_parts(shape, group, codes, scales, offsets)
}
