// Portable definitions of the helpers a vendor file may supply faster (vendor/nvidia.cl, adreno.cl and
// khr_subgroups.cl come first and define TL_HAVE_* for what they replace), so the kernels call one name on every
// device. Without a sub-group reduction (no TL_SG_SUM), common.cl's work-group reductions use a local-memory tree.

// Attribute of kernels that reduce over sub-groups (Adreno asks for a sub-group size).
#ifndef TL_REQD_SUBGROUP
#define TL_REQD_SUBGROUP
#endif

#ifndef TL_HAVE_HALF2_CVT
// The two halves of a word (low one first) as f32 without cl_khr_fp16: sign, exponent and mantissa move into place
// with a shift and a mask, and one multiply by 2^112 rebiases the exponent (exact for normal halves, and for
// subnormal ones where f32 subnormals are kept; inf and nan, which a working KV cache never holds, read back as
// +-65536).
inline float2 tl_half2_to_float2(uint w) {
    const uint lo = ((w << 13) & 0x0FFFE000u) | ((w << 16) & 0x80000000u);
    const uint hi = ((w >> 3) & 0x0FFFE000u) | (w & 0x80000000u);
    return (float2)(as_float(lo), as_float(hi)) * 0x1.0p112f;
}
#endif

#ifndef TL_HAVE_LOAD_ONCE
// Loads of data a launch reads once (weights, a step's cache rows): plain loads here.
inline uint4 tl_load_once_u4(global const uint4* p) {
    return *p;
}

inline float tl_load_once_half(global const half* p) {
    return vload_half(0, p);
}

// Eight halves at a 16-byte-aligned address.
inline float8 tl_load_once_half8(global const half* p) {
    return vload_half8(0, p);
}
#endif

#ifndef TL_CODES
// Weight operands of the M0E4 kernels and how one element is read: buffers and tl_load_once_* here; Adreno's
// image build (vendor/adreno.cl, TL_WEIGHTS_IMAGE) reads the same memory through image1d_buffer_t instead.
#define TL_CODES global const uint4*
#define TL_HALVES global const half*
// The 32 codes of chunk i.
inline uint4 tl_code_chunk(TL_CODES codes, size_t i) {
    return tl_load_once_u4(codes + i);
}

// Half i (an M0E4 scale or offset) as f32.
inline float tl_weight_half(TL_HALVES h, size_t i) {
    return tl_load_once_half(h + i);
}

// f16 weights (the mat-vec's f16 heads), and their 8 halves at 16-byte chunk i as f32.
#define TL_F16_WEIGHTS global const half*
inline float8 tl_half8_chunk(TL_F16_WEIGHTS w, size_t i) {
    return tl_load_once_half8(w + i * 8);
}
#endif
