//! Plain-Rust reference dequantiser and matrix-vector product on packed M0E4 weights; the GPU
//! kernel tests compare against these.

use crate::packing::unpack_pairs;
use crate::recipe::h_f32;
use crate::{Fp4Error, M0e4Matrix};
use rayon::prelude::*;

/// Dequantises every weight, `w = s·h + b` in f32 with `h` from the bit recipe; row-major `[rows][cols]`.
pub fn dequantize(m: &M0e4Matrix) -> Vec<f32> {
    let shape = m.shape();
    let g = m.group().len();
    let mut out = vec![0.0f32; shape.len()];
    out.par_chunks_mut(g)
        .zip(m.codes().par_chunks(g / 2))
        .zip(m.scales().par_iter().zip(m.offsets().par_iter()))
        .for_each(|((dst, bytes), (s, b))| dequantize_group(bytes, s.to_f32(), b.to_f32(), dst));
    out
}

/// Dequantises one packed group into `dst` (`dst.len() == 2 * bytes.len()`).
#[inline(always)]
fn dequantize_group(bytes: &[u8], s: f32, b: f32, dst: &mut [f32]) {
    for (pair, &byte) in dst.chunks_exact_mut(2).zip(bytes) {
        pair[0] = s * h_f32(byte & 0xF) + b;
        pair[1] = s * h_f32(byte >> 4) + b;
    }
}

/// `y = W·x` on the packed weights, each weight dequantised as [`dequantize`] does and the sums
/// accumulated in f64, so the result is a tight reference for kernels that accumulate in f32.
pub fn matvec(m: &M0e4Matrix, x: &[f32]) -> Result<Vec<f32>, Fp4Error> {
    let shape = m.shape();
    if x.len() != shape.cols {
        return Err(Fp4Error::VectorLength {
            expected: shape.cols,
            actual: x.len(),
        });
    }
    let g = m.group().len();
    let gpr = m.groups_per_row();
    Ok((0..shape.rows)
        .into_par_iter()
        .map(|r| {
            let mut codes = [0u8; 128];
            let mut acc = 0.0f64;
            for (j, bytes) in m.row_codes(r).chunks_exact(g / 2).enumerate() {
                let (s, b) = (
                    m.scales()[r * gpr + j].to_f32(),
                    m.offsets()[r * gpr + j].to_f32(),
                );
                unpack_pairs(bytes, &mut codes[..g]);
                for (&q, &xv) in codes[..g].iter().zip(&x[j * g..(j + 1) * g]) {
                    acc += f64::from(s * h_f32(q) + b) * f64::from(xv);
                }
            }
            acc as f32
        })
        .collect())
}
