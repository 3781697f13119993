//! ggml's K-quant blocks (256 weights in sub-blocks with 6-bit or 8-bit scales): Q4_K, Q5_K, Q6_K, decoded as
//! `dequantize_row_q4_K` / `_q5_K` / `_q6_K` in ggml-quants.c do, same operation order.

use super::dequant::half_at;

/// Weights per K-quant super-block.
const QK_K: usize = 256;

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes `q` (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (d, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (f32::from(d), f32::from(m))
}

/// Q4_K: `d`, `dmin` (f16), 12 bytes of scales/mins, 128 bytes of nibbles; `y = d·sc·q − dmin·m` per 32 weights.
pub(super) fn q4_k(x: &[u8], y: &mut [f32]) {
    let (d, min) = (half_at(x, 0), half_at(x, 2));
    let scales = &x[4..16];
    let qs = &x[16..144];
    for (k, (out, q)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * k, scales);
        let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, min * m1, d * sc2, min * m2);
        for l in 0..32 {
            out[l] = d1 * f32::from(q[l] & 0xF) - m1;
            out[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
    debug_assert_eq!(y.len(), QK_K);
}

/// Q5_K: as Q4_K plus 32 bytes of fifth bits (`qh`), bit `2k` / `2k+1` of `qh[l]` for sub-blocks `2k`, `2k+1`.
pub(super) fn q5_k(x: &[u8], y: &mut [f32]) {
    let (d, min) = (half_at(x, 0), half_at(x, 2));
    let scales = &x[4..16];
    let qh = &x[16..48];
    let qs = &x[48..176];
    for (k, (out, ql)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * k, scales);
        let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, min * m1, d * sc2, min * m2);
        let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
        for l in 0..32 {
            let hi1 = if qh[l] & u1 != 0 { 16.0 } else { 0.0 };
            let hi2 = if qh[l] & u2 != 0 { 16.0 } else { 0.0 };
            out[l] = d1 * (f32::from(ql[l] & 0xF) + hi1) - m1;
            out[l + 32] = d2 * (f32::from(ql[l] >> 4) + hi2) - m2;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales, then `d` (f16) last;
/// `y = d·sc·(q − 32)` per 16 weights.
pub(super) fn q6_k(x: &[u8], y: &mut [f32]) {
    let d = half_at(x, 208);
    for half in 0..2 {
        let ql = &x[64 * half..64 * half + 64];
        let qh = &x[128 + 32 * half..128 + 32 * half + 32];
        let sc = &x[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |i: usize| d * f32::from(sc[is + i] as i8);
            out[l] = s(0) * q1 as f32;
            out[l + 32] = s(2) * q2 as f32;
            out[l + 64] = s(4) * q3 as f32;
            out[l + 96] = s(6) * q4 as f32;
        }
    }
}
