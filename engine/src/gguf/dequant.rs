//! Decoding ggml tensor data to f32, following ggml's reference `dequantize_row_*` formulas operation for
//! operation (each product and sum rounded to f32 in the same order), so the values equal llama.cpp's CPU
//! reference bit for bit.
//!
//! Decoded: F32, F16, BF16, Q8_0, Q4_0, Q4_1 and the K-quants Q4_K, Q5_K, Q6_K ([`super::kquants`]). Any other
//! type is refused with an error naming the type and the tensor. Q4_0 and Q4_1 also map onto M0E4 without
//! re-quantisation: see [`super::q4_m0e4`].

use super::kquants;
use super::{GgmlType, TensorInfo};
use half::{bf16, f16};
use rayon::prelude::*;

/// True when [`dequantize`] can decode tensors of type `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q4_K | Q5_K | Q6_K
    )
}

/// Decodes the `tensor.elements()` values of `tensor` from its bytes `data` (as [`super::GgufFile::data`] gives
/// them), row-major with the innermost ggml dimension fastest.
///
/// Errors name the tensor: an unsupported type, or data whose length is not the type's size for the shape (the
/// header parser guarantees it for tensors read from a file).
pub fn dequantize(tensor: &TensorInfo, data: &[u8]) -> Result<Vec<f32>, String> {
    let ty = tensor.ggml_type;
    if !is_supported(ty) {
        return Err(format!(
            "tensor `{}` has ggml type {ty}, which tlite cannot decode (F32, F16, BF16, Q8_0, Q4_0, Q4_1, \
             Q4_K, Q5_K and Q6_K can be)",
            tensor.name
        ));
    }
    let n = tensor.elements();
    let blocks = n / ty.block_len();
    if !n.is_multiple_of(ty.block_len()) || data.len() != blocks * ty.block_bytes() {
        return Err(format!(
            "tensor `{}`: {} bytes do not hold {n} {ty} elements",
            tensor.name,
            data.len()
        ));
    }
    let mut out = vec![0.0f32; n];
    decode_blocks(ty, data, &mut out);
    Ok(out)
}

/// Decodes whole blocks of `ty` in parallel; `data` and `out` hold the same number of blocks.
fn decode_blocks(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    // Chunks of many blocks keep rayon's per-task cost negligible against the decoding.
    const BLOCKS_PER_TASK: usize = 1024;
    let (bl, bb) = (ty.block_len(), ty.block_bytes());
    out.par_chunks_mut(bl * BLOCKS_PER_TASK)
        .zip(data.par_chunks(bb * BLOCKS_PER_TASK))
        .for_each(|(dst, src)| {
            for (y, x) in dst.chunks_exact_mut(bl).zip(src.chunks_exact(bb)) {
                decode_block(ty, x, y);
            }
        });
}

/// One block of `ty` from `x` into `y` (`y.len()` = the block's elements, `x.len()` = its bytes).
fn decode_block(ty: GgmlType, x: &[u8], y: &mut [f32]) {
    match ty {
        GgmlType::F32 => y[0] = f32::from_le_bytes([x[0], x[1], x[2], x[3]]),
        GgmlType::F16 => y[0] = half_at(x, 0),
        GgmlType::BF16 => y[0] = bf16::from_bits(u16::from_le_bytes([x[0], x[1]])).to_f32(),
        GgmlType::Q8_0 => {
            let d = half_at(x, 0);
            for (v, &q) in y.iter_mut().zip(&x[2..34]) {
                *v = f32::from(q as i8) * d;
            }
        }
        GgmlType::Q4_0 => {
            let d = half_at(x, 0);
            let (lo, hi) = y.split_at_mut(16);
            for (j, &byte) in x[2..18].iter().enumerate() {
                lo[j] = (f32::from(byte & 0xF) - 8.0) * d;
                hi[j] = (f32::from(byte >> 4) - 8.0) * d;
            }
        }
        GgmlType::Q4_1 => {
            let (d, m) = (half_at(x, 0), half_at(x, 2));
            let (lo, hi) = y.split_at_mut(16);
            for (j, &byte) in x[4..20].iter().enumerate() {
                lo[j] = f32::from(byte & 0xF) * d + m;
                hi[j] = f32::from(byte >> 4) * d + m;
            }
        }
        GgmlType::Q4_K => kquants::q4_k(x, y),
        GgmlType::Q5_K => kquants::q5_k(x, y),
        GgmlType::Q6_K => kquants::q6_k(x, y),
        // `dequantize` refuses every other type before any block is decoded.
        _ => y.fill(f32::NAN),
    }
}

/// The little-endian f16 at byte `at` of `x`, widened.
pub(super) fn half_at(x: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([x[at], x[at + 1]])).to_f32()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn info(ty: GgmlType, dims: &[usize]) -> TensorInfo {
        TensorInfo {
            name: "t".into(),
            dims: dims.to_vec(),
            ggml_type: ty,
            start: 0,
            len: 0,
        }
    }

    #[test]
    fn q4_0_nibble_order_and_formula() {
        // d = 0.5; byte j = (j+16 high, j low): element j gets low nibble j, element j+16 gets 15 - j.
        let mut block = f16::from_f32(0.5).to_le_bytes().to_vec();
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(&info(GgmlType::Q4_0, &[32]), &block).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], 0.5 * (j as f32 - 8.0));
            assert_eq!(v[j + 16], 0.5 * ((15 - j) as f32 - 8.0));
        }
    }

    #[test]
    fn unsupported_types_and_bad_lengths_name_the_tensor() {
        let e = dequantize(&info(GgmlType::Q5_0, &[32]), &[0; 22]).unwrap_err();
        assert!(e.contains("`t`") && e.contains("Q5_0"), "{e}");
        let e = dequantize(&info(GgmlType::Q8_0, &[32]), &[0; 33]).unwrap_err();
        assert!(e.contains("`t`") && e.contains("33 bytes"), "{e}");
    }
}
