//! The M0E4 bit recipe: a 4-bit code becomes the mantissa of a float whose exponent is fixed at 0,
//! so `h = 1 + q/16` comes from one shift and one OR, with no int-to-float conversion.

/// FP16 bits of 1.0; the code goes into mantissa bits 6..=9.
pub const F16_ONE_BITS: u16 = 0x3C00;
/// Left shift that places a code in the top four mantissa bits of an FP16.
pub const F16_CODE_SHIFT: u32 = 6;
/// FP32 bits of 1.0; the code goes into mantissa bits 19..=22.
pub const F32_ONE_BITS: u32 = 0x3F80_0000;
/// Left shift that places a code in the top four mantissa bits of an FP32.
pub const F32_CODE_SHIFT: u32 = 19;

/// FP16 bits of `h = 1 + q/16` for code `q` (only its low four bits are used): `0x3C00 | (q << 6)`.
#[inline(always)]
pub const fn h_bits_f16(q: u8) -> u16 {
    F16_ONE_BITS | (((q & 0xF) as u16) << F16_CODE_SHIFT)
}

/// FP32 bits of `h = 1 + q/16` for code `q` (only its low four bits are used): `0x3F800000 | (q << 19)`.
#[inline(always)]
pub const fn h_bits_f32(q: u8) -> u32 {
    F32_ONE_BITS | (((q & 0xF) as u32) << F32_CODE_SHIFT)
}

/// `h = 1 + q/16` as an `f16`, built with the bit recipe.
#[inline(always)]
pub fn h_f16(q: u8) -> half::f16 {
    half::f16::from_bits(h_bits_f16(q))
}

/// `h = 1 + q/16` as an `f32`, built with the bit recipe (what kernels without `cl_khr_fp16` do).
#[inline(always)]
pub fn h_f32(q: u8) -> f32 {
    f32::from_bits(h_bits_f32(q))
}

/// Dequantises one code: `w = s·h + b`, computed in f32 (multiply then add, not fused).
#[inline(always)]
pub fn dequant_one(q: u8, scale: half::f16, offset: half::f16) -> f32 {
    scale.to_f32() * h_f32(q) + offset.to_f32()
}
