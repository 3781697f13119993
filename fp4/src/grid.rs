//! Least-squares search for a 16-level affine grid `level(q) = z + d·q` over one group.
//!
//! M0E4 (`s·(1+q/16) + b`) and asymmetric INT4 (`d·q + m`) are both such grids; they differ only
//! in how `(d, z)` is stored. The search minimises the group's squared error subject to the grid
//! *covering* the group — `z - d/2 <= min` and `z + 15.5·d >= max` — so that every weight is
//! within half a step of its level and outliers are never clipped (clipping lowers the RMS
//! error a little but damages exactly the large weights a model relies on).
//!
//! Every candidate costs one pass over the group that rounds to codes and accumulates `Σq`,
//! `Σq²` and `Σq·x` in eight independent lanes (so the loop vectorises); the squared error and
//! the least-squares refit of `(d, z)` for those codes both follow in closed form. Values are
//! centred on the group mean (in registers) so the closed-form error does not cancel badly.

/// Adding and subtracting 1.5·2^23 rounds an f32 in `[0, 2^22)` to the nearest integer
/// (ties to even) without a libm call, which keeps the loops vectorisable.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Lanes of independent accumulators, enough for AVX2 and a multiple of what SSE2 needs.
const LANES: usize = 8;

/// A 16-level grid: level `q` is `z + d·q`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// Step between levels.
    pub d: f32,
    /// Value of level 0.
    pub z: f32,
}

/// Nearest code of `v` on a grid given by `z` and `1/d`, clamped to `0..=15`.
#[inline(always)]
pub(crate) fn nearest_code(v: f32, z: f32, inv_d: f32) -> f32 {
    let t = (v - z) * inv_d;
    let t = if t < 0.0 { 0.0 } else { t };
    let t = if t > 15.0 { 15.0 } else { t };
    (t + ROUND_MAGIC) - ROUND_MAGIC
}

/// [`nearest_code`] as an integer: after adding [`ROUND_MAGIC`] the low mantissa bits of the
/// f32 hold the rounded value, so no float-to-int conversion is needed (the M0E4 trick, backwards).
#[inline(always)]
pub(crate) fn nearest_code_bits(v: f32, z: f32, inv_d: f32) -> u8 {
    let t = (v - z) * inv_d;
    let t = if t < 0.0 { 0.0 } else { t };
    let t = if t > 15.0 { 15.0 } else { t };
    ((t + ROUND_MAGIC).to_bits() & 0xF) as u8
}

/// Sums over one group for a given grid's codes (`sqx` uses the centred values `x - mean`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodeSums {
    sq: f32,
    sqq: f32,
    sqx: f32,
}

/// Rounds every value of `x` to its code on grid `g` (centred coordinates) and sums `q`, `q²`
/// and `q·(x - mean)`; AVX2 when the CPU has it, with bit-identical results either way.
#[inline(always)]
fn code_sums(x: &[f32], mean: f32, g: Grid) -> CodeSums {
    let inv = 1.0 / g.d;
    let z = g.z + mean;
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU supports AVX2 and FMA, which is all `sums` was compiled for.
        return unsafe { avx2::sums(x, mean, z, inv) };
    }
    code_sums_portable(x, mean, z, inv)
}

#[inline(always)]
pub(crate) fn code_sums_portable(x: &[f32], mean: f32, z: f32, inv: f32) -> CodeSums {
    let mut sq = [0.0f32; LANES];
    let mut sqq = [0.0f32; LANES];
    let mut sqx = [0.0f32; LANES];
    for chunk in x.as_chunks::<LANES>().0 {
        for i in 0..LANES {
            let v = chunk[i];
            let q = nearest_code(v, z, inv);
            sq[i] += q;
            sqq[i] += q * q;
            sqx[i] += q * (v - mean);
        }
    }
    CodeSums {
        sq: lane_sum(&sq),
        sqq: lane_sum(&sqq),
        sqx: lane_sum(&sqx),
    }
}

/// Explicit AVX2 for the one loop every candidate runs (the auto-vectoriser interleaves the
/// three sums badly). Same operations in the same order as [`code_sums_portable`].
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{lane_sum, CodeSums, LANES, ROUND_MAGIC};
    use crate::quantize::{lanes_summary, GroupSummary};
    use std::arch::x86_64::*;

    /// Whether this CPU can run [`sums`] (detection is cached by std).
    #[inline(always)]
    pub(crate) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) fn sums(x: &[f32], mean: f32, z: f32, inv: f32) -> CodeSums {
        let (vz, vinv, vmean) = (_mm256_set1_ps(z), _mm256_set1_ps(inv), _mm256_set1_ps(mean));
        let (zero, fifteen, magic) = (
            _mm256_setzero_ps(),
            _mm256_set1_ps(15.0),
            _mm256_set1_ps(ROUND_MAGIC),
        );
        let (mut sq, mut sqq, mut sqx) = (zero, zero, zero);
        for chunk in x.as_chunks::<LANES>().0 {
            // SAFETY: `chunk` is eight contiguous f32; the load has no alignment requirement.
            let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            let t = _mm256_mul_ps(_mm256_sub_ps(v, vz), vinv);
            let t = _mm256_min_ps(_mm256_max_ps(t, zero), fifteen);
            let q = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
            sq = _mm256_add_ps(sq, q);
            sqq = _mm256_add_ps(sqq, _mm256_mul_ps(q, q));
            sqx = _mm256_add_ps(sqx, _mm256_mul_ps(q, _mm256_sub_ps(v, vmean)));
        }
        let lanes = |r: __m256| {
            let mut a = [0.0f32; LANES];
            // SAFETY: `a` holds eight f32; the store has no alignment requirement.
            unsafe { _mm256_storeu_ps(a.as_mut_ptr(), r) };
            lane_sum(&a)
        };
        CodeSums {
            sq: lanes(sq),
            sqq: lanes(sqq),
            sqx: lanes(sqx),
        }
    }

    /// Packs the nearest codes of `x` on the grid `(z, 1/inv)`, exactly as the portable
    /// `nearest_code_bits` loop of [`crate::quantize::assign_packed`] does.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) fn assign_packed(x: &[f32], z: f32, inv: f32, packed: &mut [u8]) {
        let (vz, vinv) = (_mm256_set1_ps(z), _mm256_set1_ps(inv));
        let (zero, fifteen, magic) = (
            _mm256_setzero_ps(),
            _mm256_set1_ps(15.0),
            _mm256_set1_ps(ROUND_MAGIC),
        );
        let nibble = _mm256_set1_epi32(0xF);
        // Odd elements go to the high nibble: shift them by 4 before pairing.
        let shifts = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
        for (chunk, out) in x
            .as_chunks::<LANES>()
            .0
            .iter()
            .zip(packed.as_chunks_mut::<4>().0)
        {
            // SAFETY: `chunk` is eight contiguous f32; the load has no alignment requirement.
            let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            let t = _mm256_mul_ps(_mm256_sub_ps(v, vz), vinv);
            let t = _mm256_min_ps(_mm256_max_ps(t, zero), fifteen);
            let q = _mm256_and_si256(_mm256_castps_si256(_mm256_add_ps(t, magic)), nibble);
            let q = _mm256_sllv_epi32(q, shifts);
            let mut c = [0i32; LANES];
            // SAFETY: `c` holds eight i32; the store has no alignment requirement.
            unsafe { _mm256_storeu_si256(c.as_mut_ptr().cast(), q) };
            for j in 0..4 {
                out[j] = (c[2 * j] | c[2 * j + 1]) as u8;
            }
        }
    }

    /// Minimum, maximum and sum of `x`, as [`crate::quantize::summarise_portable`] computes them.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) fn summarise(x: &[f32]) -> GroupSummary {
        let (mut lo, mut hi, mut sum) = (
            _mm256_set1_ps(f32::INFINITY),
            _mm256_set1_ps(f32::NEG_INFINITY),
            _mm256_setzero_ps(),
        );
        for chunk in x.as_chunks::<LANES>().0 {
            // SAFETY: `chunk` is eight contiguous f32; the load has no alignment requirement.
            let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            // `min_ps(v, lo)` returns `lo` when either is NaN, like `if v < lo { v } else { lo }`.
            lo = _mm256_min_ps(v, lo);
            hi = _mm256_max_ps(v, hi);
            sum = _mm256_add_ps(sum, v);
        }
        let arr = |r: __m256| {
            let mut a = [0.0f32; LANES];
            // SAFETY: `a` holds eight f32; the store has no alignment requirement.
            unsafe { _mm256_storeu_ps(a.as_mut_ptr(), r) };
            a
        };
        lanes_summary(&arr(lo), &arr(hi), &arr(sum))
    }
}

#[inline(always)]
pub(crate) fn lane_sum(a: &[f32; LANES]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// Statistics of one group, in coordinates centred on the group mean.
#[derive(Debug, Clone, Copy)]
struct GroupStats {
    n: f32,
    min: f32,
    max: f32,
}

/// Squared error of grid `g` (centred coordinates) when the codes have sums `c`, less the
/// constant `Σ(x - mean)²`, which does not change which grid is best.
#[inline(always)]
fn sse(st: &GroupStats, c: &CodeSums, g: Grid) -> f32 {
    // Σ(x - z - d q)² with Σx = 0, dropping Σx².
    -2.0 * g.d * c.sqx + st.n * g.z * g.z + 2.0 * g.z * g.d * c.sq + g.d * g.d * c.sqq
}

/// Least-squares `(d, z)` for fixed codes, pulled back into the covering region.
#[inline(always)]
fn refit(st: &GroupStats, c: &CodeSums) -> Option<Grid> {
    let den = st.n * c.sqq - c.sq * c.sq;
    if den <= 0.0 {
        return None;
    }
    // Σx = 0, so d = n·Σqx / den and z = -d·Σq / n.
    let d = st.n * c.sqx / den;
    let z = -d * c.sq / st.n;
    Some(cover(st, Grid { d, z }))
}

/// The covering grid nearest to `g`: widen the step to at least range/16, then slide `z` into
/// `[max - 15.5·d, min + 0.5·d]`.
#[inline(always)]
fn cover(st: &GroupStats, g: Grid) -> Grid {
    let d = g.d.max((st.max - st.min) / 16.0);
    let lo = st.max - 15.5 * d;
    let hi = st.min + 0.5 * d;
    let z = if g.z < lo {
        lo
    } else if g.z > hi {
        hi
    } else {
        g.z
    };
    Grid { d, z }
}

/// How hard the per-group grid search looks (see the crate docs). More candidates lower the
/// error a little and cost time linearly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchEffort {
    /// Step candidates between `range/15` (min/max grid) and `range/16` (tightest covering grid).
    pub steps: usize,
    /// Least-squares refit rounds after the best candidate.
    pub refits: usize,
}

impl Default for SearchEffort {
    fn default() -> Self {
        Self {
            steps: 3,
            refits: 2,
        }
    }
}

/// Finds the covering grid with (near-)least squared error for `x`, whose finite values span
/// `[min, max]` with `min < max`. `x.len()` must be a multiple of 8 and at most 128.
#[inline(always)]
pub fn search(x: &[f32], sum: f32, min: f32, max: f32, effort: SearchEffort) -> Grid {
    let n = x.len();
    let mean = sum / n as f32;
    let st = GroupStats {
        n: n as f32,
        min: min - mean,
        max: max - mean,
    };
    let range = st.max - st.min;

    let first = Grid {
        d: range / 15.0,
        z: st.min,
    };
    let mut best_sums = code_sums(x, mean, first);
    let mut best = first;
    let mut best_err = sse(&st, &best_sums, first);
    let steps = effort.steps.max(1);
    for k in 1..steps {
        // Steps from range/15 towards range/16, `z` centred in the feasible interval.
        let u = k as f32 / (steps - 1) as f32;
        let d = range / (15.0 + u);
        let z = 0.5 * ((st.max - 15.5 * d) + (st.min + 0.5 * d));
        let g = Grid { d, z };
        let sums = code_sums(x, mean, g);
        let err = sse(&st, &sums, g);
        if err < best_err {
            best = g;
            best_err = err;
            best_sums = sums;
        }
    }
    for _ in 0..effort.refits {
        let Some(g) = refit(&st, &best_sums) else {
            break;
        };
        if g == best {
            break;
        }
        let sums = code_sums(x, mean, g);
        let err = sse(&st, &sums, g);
        if err < best_err {
            best = g;
            best_err = err;
            best_sums = sums;
        } else {
            break;
        }
    }
    Grid {
        d: best.d,
        z: best.z + mean,
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The AVX2 loops must give bit-identical results to the portable ones, so quantised
    /// files do not depend on the CPU that made them.
    #[test]
    fn avx2_matches_portable_bit_for_bit() {
        if !avx2::available() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for n in [32usize, 64, 128] {
            for _ in 0..200 {
                let scale = 10f32.powf(rng.random_range(-3.0..3.0));
                let x: Vec<f32> = (0..n)
                    .map(|_| scale * rng.random_range(-1.0f32..1.0))
                    .collect();
                let p = crate::quantize::summarise_portable(&x);
                // SAFETY: AVX2 and FMA were checked above.
                let a = unsafe { avx2::summarise(&x) };
                assert_eq!((p.min, p.max, p.sum), (a.min, a.max, a.sum));
                let mean = p.sum / n as f32;
                let (z, d) = (
                    p.min + rng.random_range(-0.1f32..0.1) * scale,
                    (p.max - p.min) / 15.3,
                );
                let ps = code_sums_portable(&x, mean, z, 1.0 / d);
                // SAFETY: AVX2 and FMA were checked above.
                let asum = unsafe { avx2::sums(&x, mean, z, 1.0 / d) };
                assert_eq!((ps.sq, ps.sqq, ps.sqx), (asum.sq, asum.sqq, asum.sqx));
                assert!(ps.sq > 0.0);
                let mut portable = vec![0u8; n / 2];
                for (byte, pair) in portable.iter_mut().zip(x.as_chunks::<2>().0) {
                    *byte = nearest_code_bits(pair[0], z, 1.0 / d)
                        | (nearest_code_bits(pair[1], z, 1.0 / d) << 4);
                }
                let mut simd = vec![0u8; n / 2];
                // SAFETY: AVX2 and FMA were checked above.
                unsafe { avx2::assign_packed(&x, z, 1.0 / d, &mut simd) };
                assert_eq!(portable, simd);
            }
        }
    }
}
