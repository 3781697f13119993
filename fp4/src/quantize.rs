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
const GROUPS_PER_TASK: usize = 256;

/// One quantised group's two f16 parameters.
pub(crate) type GroupParams = (f16, f16);

/// Extremes and sum of one group's (finite) values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupSummary {
    pub min: f32,
    pub max: f32,
    pub sum: f32,
}

/// How one format turns a group of values into codes and two f16 parameters.
///
/// A trait rather than a closure so the whole per-group path inlines into the AVX2 copy of the
/// driver loop.
pub(crate) trait GroupQuantiser: Sync {
    /// Writes one code per value of `x` into `codes` and returns the group's parameters, or
    /// `None` when they would not fit in f16.
    fn quantise(&self, x: &[f32], summary: GroupSummary, codes: &mut [u8]) -> Option<GroupParams>;
}

/// Lanes used to summarise a group (a multiple of 8 divides every group size).
const LANES: usize = 8;

/// Converts one group to f32 and summarises it; `None` when some value is NaN or infinite.
#[inline(always)]
fn load_group<T: Weight>(src: &[T], dst: &mut [f32]) -> Option<GroupSummary> {
    let mut min = [f32::INFINITY; LANES];
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut sum = [0.0f32; LANES];
    let mut finite = true;
    for (d, s) in dst.chunks_exact_mut(LANES).zip(src.chunks_exact(LANES)) {
        for i in 0..LANES {
            let x = s[i].to_f32();
            d[i] = x;
            finite &= x.abs() < f32::INFINITY;
            min[i] = if x < min[i] { x } else { min[i] };
            max[i] = if x > max[i] { x } else { max[i] };
            sum[i] += x;
        }
    }
    if !finite {
        return None;
    }
    let fold = |a: &[f32; LANES], f: fn(f32, f32) -> f32| a.iter().copied().fold(a[0], f);
    Some(GroupSummary {
        min: fold(&min, f32::min),
        max: fold(&max, f32::max),
        sum: ((sum[0] + sum[4]) + (sum[1] + sum[5])) + ((sum[2] + sum[6]) + (sum[3] + sum[7])),
    })
}

/// Quantises the consecutive groups of one rayon task; `first_group` is the index of its first
/// group in the whole matrix (for error messages).
#[inline(always)]
fn run_task<T: Weight, Q: GroupQuantiser>(
    q: &Q,
    w: &[T],
    codes: &mut [u8],
    p1: &mut [f16],
    p2: &mut [f16],
    g: usize,
    first_group: usize,
    groups_per_row: usize,
) -> Result<(), Fp4Error> {
    let mut vals = [0.0f32; 128];
    let mut unpacked = [0u8; 128];
    for (i, ((wg, cg), (pa, pb))) in w
        .chunks_exact(g)
        .zip(codes.chunks_exact_mut(g / 2))
        .zip(p1.iter_mut().zip(p2.iter_mut()))
        .enumerate()
    {
        let index = first_group + i;
        let (row, group_index) = (index / groups_per_row, index % groups_per_row);
        let v = &mut vals[..g];
        let Some(summary) = load_group(wg, v) else {
            let (k, &value) = v
                .iter()
                .enumerate()
                .find(|(_, x)| !x.is_finite())
                .unwrap_or((0, &f32::NAN));
            return Err(Fp4Error::NonFinite {
                row,
                col: group_index * g + k,
                value,
            });
        };
        let c = &mut unpacked[..g];
        let (a, b) = q.quantise(v, summary, c).ok_or(Fp4Error::OutOfF16Range {
            row,
            group_index,
            min: summary.min,
            max: summary.max,
        })?;
        pack_pairs(c, cg);
        *pa = a;
        *pb = b;
    }
    Ok(())
}

/// [`run_task`] compiled for AVX2 and FMA (the arithmetic is the same: Rust never fuses a
/// multiply and an add by itself, so results do not depend on the path taken).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn run_task_avx2<T: Weight, Q: GroupQuantiser>(
    q: &Q,
    w: &[T],
    codes: &mut [u8],
    p1: &mut [f16],
    p2: &mut [f16],
    g: usize,
    first_group: usize,
    groups_per_row: usize,
) -> Result<(), Fp4Error> {
    run_task(q, w, codes, p1, p2, g, first_group, groups_per_row)
}

/// Quantises every group of `weights` in parallel with `q` and packs the codes.
pub(crate) fn quantize_groups<T: Weight, Q: GroupQuantiser>(
    weights: &[T],
    shape: MatrixShape,
    group: GroupSize,
    q: &Q,
) -> Result<(Vec<u8>, Vec<f16>, Vec<f16>), Fp4Error> {
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
    #[cfg(target_arch = "x86_64")]
    let avx2 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    weights
        .par_chunks(g * GROUPS_PER_TASK)
        .zip(codes.par_chunks_mut(g / 2 * GROUPS_PER_TASK))
        .zip(p1.par_chunks_mut(GROUPS_PER_TASK))
        .zip(p2.par_chunks_mut(GROUPS_PER_TASK))
        .enumerate()
        .try_for_each(|(task, (((w, c), a), b))| {
            let first = task * GROUPS_PER_TASK;
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU was just checked to support AVX2 and FMA.
                return unsafe { run_task_avx2(q, w, c, a, b, g, first, groups_per_row) };
            }
            run_task(q, w, c, a, b, g, first, groups_per_row)
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

/// M0E4 groups: search the grid in f32, round `s` and `b` to f16, then re-pick every code
/// against the rounded parameters.
struct M0e4Quantiser(SearchEffort);

impl GroupQuantiser for M0e4Quantiser {
    #[inline(always)]
    fn quantise(&self, x: &[f32], sm: GroupSummary, codes: &mut [u8]) -> Option<GroupParams> {
        if sm.min == sm.max {
            // A constant group: s = 0, every code 0, w = b.
            codes.fill(0);
            return Some((f16::ZERO, to_f16_finite(sm.min)?));
        }
        let grid = grid::search(x, sm.sum, sm.min, sm.max, self.0);
        let s = to_f16_finite(16.0 * grid.d)?;
        let b = to_f16_finite(grid.z - s.to_f32())?;
        let (sf, bf) = (s.to_f32(), b.to_f32());
        // Levels are s·(1 + q/16) + b = (s + b) + (s/16)·q.
        assign_codes(x, sf / 16.0, sf + bf, codes);
        Some((s, b))
    }
}

/// Quantises a row-major `[rows][cols]` weight matrix (f32, f16 or bf16) to M0E4 with groups of
/// `group` along each row, choosing each group's scale and offset by a least-squares search.
///
/// Errors: `cols` not a multiple of the group size, empty shape, `weights.len() != rows*cols`,
/// any NaN or infinity, or a group whose scale or offset would overflow f16.
pub fn quantize_m0e4<T: Weight>(
    weights: &[T],
    shape: MatrixShape,
    group: GroupSize,
) -> Result<M0e4Matrix, Fp4Error> {
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
    let (codes, scales, offsets) = quantize_groups(weights, shape, group, &M0e4Quantiser(effort))?;
    M0e4Matrix::from_parts(shape, group, codes, scales, offsets)
}
