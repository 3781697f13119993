//! Nibble packing shared by M0E4 and the INT4 baselines: element `2j` in the low nibble of byte
//! `j`, element `2j+1` in the high nibble, rows of `cols/2` bytes one after another.

/// Code of element `col` in a packed row.
#[inline(always)]
pub fn code_at(row_bytes: &[u8], col: usize) -> u8 {
    (row_bytes[col / 2] >> ((col & 1) * 4)) & 0xF
}

/// Packs pairs of 4-bit codes (values `0..=15`) into bytes; `out.len()` must be `codes.len()/2`.
#[inline(always)]
pub fn pack_pairs(codes: &[u8], out: &mut [u8]) {
    for (byte, pair) in out.iter_mut().zip(codes.as_chunks::<2>().0) {
        *byte = (pair[0] & 0xF) | ((pair[1] & 0xF) << 4);
    }
}

/// Unpacks bytes into one code per element; `out.len()` must be `2 * bytes.len()`.
#[inline(always)]
pub fn unpack_pairs(bytes: &[u8], out: &mut [u8]) {
    for (pair, &byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = byte & 0xF;
        pair[1] = byte >> 4;
    }
}
