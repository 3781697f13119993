//! The group-parallel quantisation driver and the M0E4 quantiser built on it.

use crate::grid::{self, SearchEffort};
use crate::{Fp4Error, GroupSize, M0e4Matrix, MatrixShape};
use half::{bf16, f16};
use rayon::prelude::*;

/// An element type weights can be quantised from.
pub trait Weight: Copy + Send + Sync {
    /// The value as f32 (exact for f16 and bf16).
    fn to_f32(self) -> f32;

    /// Converts a group (`dst.len() == src.len()`), overridden where one vector instruction
    /// converts eight values at once.
    #[inline(always)]
    fn load(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
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

    #[inline(always)]
    fn load(src: &[Self], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            // SAFETY: the CPU supports F16C and AVX, which is all `load_f16c` was compiled for.
            unsafe { load_f16c(src, dst) };
            return;
        }
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
}

/// f16 → f32 eight at a time with `vcvtph2ps` (exact, like every f16 → f32 conversion).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
#[inline]
fn load_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    for (s, d) in src
        .as_chunks::<8>()
        .0
        .iter()
        .zip(dst.as_chunks_mut::<8>().0)
    {
        // SAFETY: `s` is eight contiguous f16 (16 bytes) and `d` eight f32; neither access
        // needs alignment.
        unsafe {
            let h = _mm_loadu_si128(s.as_ptr().cast());
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
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

/// Packed codes and the two per-group parameter arrays of a quantised matrix.
pub(crate) type PackedParts = (Vec<u8>, Vec<f16>, Vec<f16>);

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
    /// Writes the codes of `x`, packed two per byte, into `packed` (`x.len()/2` bytes) and
    /// returns the group's parameters, or `None` when they would not fit in f16.
    fn quantise(&self, x: &[f32], summary: GroupSummary, packed: &mut [u8]) -> Option<GroupParams>;
}

/// Lanes used to summarise a group (a multiple of 8 divides every group size).
pub(crate) const LANES: usize = 8;

/// Converts one group to f32 and summarises it; `None` when the sum is not finite, which is
/// the case whenever some value is NaN or infinite (and when finite values sum past f32).
#[inline(always)]
fn load_group<T: Weight>(src: &[T], dst: &mut [f32]) -> Option<GroupSummary> {
    T::load(src, dst);
    #[cfg(target_arch = "x86_64")]
    let summary = if grid::avx2::available() {
        // SAFETY: the CPU supports AVX2 and FMA, which is all `summarise` was compiled for.
        unsafe { grid::avx2::summarise(dst) }
    } else {
        summarise_portable(dst)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let summary = summarise_portable(dst);
    summary.sum.is_finite().then_some(summary)
}

/// Minimum, maximum and sum of `x` in eight lanes (the same order as the AVX2 version).
#[inline(always)]
pub(crate) fn summarise_portable(x: &[f32]) -> GroupSummary {
    let mut min = [f32::INFINITY; LANES];
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut sum = [0.0f32; LANES];
    for c in x.as_chunks::<LANES>().0 {
        for i in 0..LANES {
            min[i] = if c[i] < min[i] { c[i] } else { min[i] };
            max[i] = if c[i] > max[i] { c[i] } else { max[i] };
            sum[i] += c[i];
        }
    }
    lanes_summary(&min, &max, &sum)
}

/// Folds eight lanes of minimums, maximums and sums into one summary.
#[inline(always)]
pub(crate) fn lanes_summary(
    min: &[f32; LANES],
    max: &[f32; LANES],
    sum: &[f32; LANES],
) -> GroupSummary {
    let (mut lo, mut hi) = (min[0], max[0]);
    for i in 1..LANES {
        lo = if min[i] < lo { min[i] } else { lo };
        hi = if max[i] > hi { max[i] } else { hi };
    }
    GroupSummary {
        min: lo,
        max: hi,
        sum: grid::lane_sum(sum),
    }
}

/// The error for a group whose sum was not finite: the first NaN or infinity, or, when every
/// value is finite but huge, the f16 range error such values would hit anyway.
#[cold]
fn non_finite_error(v: &[f32], index: usize, groups_per_row: usize) -> Fp4Error {
    let g = v.len();
    let (row, group_index) = (index / groups_per_row, index % groups_per_row);
    match v.iter().position(|x| !x.is_finite()) {
        Some(k) => Fp4Error::NonFinite {
            row,
            col: group_index * g + k,
            value: v[k],
        },
        None => {
            let fold = |f: fn(f32, f32) -> f32, init: f32| v.iter().copied().fold(init, f);
            Fp4Error::OutOfF16Range {
                row,
                group_index,
                min: fold(f32::min, f32::INFINITY),
                max: fold(f32::max, f32::NEG_INFINITY),
            }
        }
    }
}

/// One rayon task's share of the work: its consecutive groups' weights and the codes and
/// parameters it writes. Bundled so the portable and the AVX2 entry points take one argument
/// instead of repeating eight.
struct Task<'a, T> {
    w: &'a [T],
    codes: &'a mut [u8],
    p1: &'a mut [f16],
    p2: &'a mut [f16],
    /// Group size.
    g: usize,
    /// Index of the task's first group in the whole matrix (for error messages).
    first_group: usize,
    groups_per_row: usize,
}

/// Quantises the consecutive groups of one rayon task.
#[inline(always)]
fn run_task<T: Weight, Q: GroupQuantiser>(q: &Q, task: Task<'_, T>) -> Result<(), Fp4Error> {
    let Task {
        w,
        codes,
        p1,
        p2,
        g,
        first_group,
        groups_per_row,
    } = task;
    let mut vals = [0.0f32; 128];
    for (i, ((wg, cg), (pa, pb))) in w
        .chunks_exact(g)
        .zip(codes.chunks_exact_mut(g / 2))
        .zip(p1.iter_mut().zip(p2.iter_mut()))
        .enumerate()
    {
        let v = &mut vals[..g];
        let Some(summary) = load_group(wg, v) else {
            return Err(non_finite_error(v, first_group + i, groups_per_row));
        };
        let Some((a, b)) = q.quantise(v, summary, cg) else {
            let index = first_group + i;
            let (row, group_index) = (index / groups_per_row, index % groups_per_row);
            return Err(Fp4Error::OutOfF16Range {
                row,
                group_index,
                min: summary.min,
                max: summary.max,
            });
        };
        *pa = a;
        *pb = b;
    }
    Ok(())
}

/// [`run_task`] compiled for AVX2 and FMA (the arithmetic is the same: Rust never fuses a
/// multiply and an add by itself, so results do not depend on the path taken).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_task_avx2<T: Weight, Q: GroupQuantiser>(q: &Q, task: Task<'_, T>) -> Result<(), Fp4Error> {
    run_task(q, task)
}

/// Quantises every group of `weights` in parallel with `q` and packs the codes.
pub(crate) fn quantize_groups<T: Weight, Q: GroupQuantiser>(
    weights: &[T],
    shape: MatrixShape,
    group: GroupSize,
    q: &Q,
) -> Result<PackedParts, Fp4Error> {
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
        .try_for_each(|(index, (((w, codes), p1), p2))| {
            let task = Task {
                w,
                codes,
                p1,
                p2,
                g,
                first_group: index * GROUPS_PER_TASK,
                groups_per_row,
            };
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU was just checked to support AVX2 and FMA.
                return unsafe { run_task_avx2(q, task) };
            }
            run_task(q, task)
        })?;
    Ok((codes, p1, p2))
}

/// Rounds to f16, or `None` when the value overflows f16.
#[inline(always)]
pub(crate) fn to_f16_finite(x: f32) -> Option<f16> {
    let h = f16::from_f32(x);
    h.is_finite().then_some(h)
}

/// Writes, packed two per byte, the nearest code of each value on the grid
/// `level(q) = z + d·q` (all zeros when `d == 0`); AVX2 when available, same codes either way.
#[inline(always)]
pub(crate) fn assign_packed(x: &[f32], d: f32, z: f32, packed: &mut [u8]) {
    if d > 0.0 {
        let inv = 1.0 / d;
        #[cfg(target_arch = "x86_64")]
        if grid::avx2::available() {
            // SAFETY: the CPU supports AVX2 and FMA, which is all `assign_packed` was compiled for.
            unsafe { grid::avx2::assign_packed(x, z, inv, packed) };
            return;
        }
        for (byte, pair) in packed.iter_mut().zip(x.as_chunks::<2>().0) {
            *byte = grid::nearest_code_bits(pair[0], z, inv)
                | (grid::nearest_code_bits(pair[1], z, inv) << 4);
        }
    } else {
        packed.fill(0);
    }
}

/// M0E4 groups: search the grid in f32, round `s` and `b` to f16, then re-pick every code
/// against the rounded parameters.
struct M0e4Quantiser(SearchEffort);

impl GroupQuantiser for M0e4Quantiser {
    #[inline(always)]
    fn quantise(&self, x: &[f32], sm: GroupSummary, packed: &mut [u8]) -> Option<GroupParams> {
        if sm.min == sm.max {
            // A constant group: s = 0, every code 0, w = b.
            packed.fill(0);
            return Some((f16::ZERO, to_f16_finite(sm.min)?));
        }
        let grid = grid::search(x, sm.sum, sm.min, sm.max, self.0);
        let s = to_f16_finite(16.0 * grid.d)?;
        let b = to_f16_finite(grid.z - s.to_f32())?;
        let (sf, bf) = (s.to_f32(), b.to_f32());
        // Levels are s·(1 + q/16) + b = (s + b) + (s/16)·q.
        assign_packed(x, sf / 16.0, sf + bf, packed);
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
