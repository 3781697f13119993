// NVIDIA: everything tlite does through inline PTX, compiled only where TLITE_NV_PTX is defined. The launchers
// define it on NVIDIA devices (LockedKernel::build_with_nv_ptx) and rebuild without it if the driver refuses the
// assembly. NVIDIA's OpenCL has neither sub-groups nor cl_khr_fp16, so warp shuffles, half conversions and
// packed-f16 arithmetic are only reachable through PTX.
//
// What this file supplies, each replacing the portable definition in vendor/portable.cl or enabling a path the
// portable kernels otherwise skip: the sub-group reduction interface (TL_SG_*) as 32-lane warp shuffles; half to
// float conversions and loads that do not allocate L1 lines (TL_HAVE_HALF2_CVT, TL_HAVE_LOAD_ONCE); the packed-f16
// M0E4 product (TL_HAVE_M0E4_H2, used by matvec.cl with MV_NVH2); device timers for diag.cl (TL_HAVE_TIMERS).
//
// Under TLITE_COMPILE_CHECK (PoCL cannot compile PTX) only the warp reduction's indexing is kept, over warps of one
// work-item, so the kernels' use of it is compiled and checked on the CPU; everything else is portable there.

#ifdef TLITE_NV_PTX
#ifdef TLITE_COMPILE_CHECK

#define TL_SG_SUM(x) (x)
#define TL_SG_MAX(x) (x)
#define TL_SG_LID() 0u
#define TL_SG_ID() ((uint)get_local_id(0))
#define TL_NUM_SG() ((uint)get_local_size(0))

#else

// v of the lane whose id differs from this one's in bit pattern o (a butterfly step over the 32-lane warp).
inline float tl_nv_shfl_xor(float v, uint o) {
    float t;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(t) : "f"(v), "r"(o));
    return t;
}

// Butterfly sum over a 32-lane warp; every lane gets the total. Work-groups are 1-D multiples of 32, so warp w
// is local ids 32w .. 32w + 31.
inline float tl_nv_warp_sum(float v) {
    for (uint o = 16; o > 0; o >>= 1) v += tl_nv_shfl_xor(v, o);
    return v;
}

// Butterfly maximum over a 32-lane warp; every lane gets it.
inline float tl_nv_warp_max(float v) {
    for (uint o = 16; o > 0; o >>= 1) v = fmax(v, tl_nv_shfl_xor(v, o));
    return v;
}

#define TL_SG_SUM(x) tl_nv_warp_sum(x)
#define TL_SG_MAX(x) tl_nv_warp_max(x)
#define TL_SG_LID() ((uint)get_local_id(0) & 31u)
#define TL_SG_ID() ((uint)get_local_id(0) >> 5)
#define TL_NUM_SG() (((uint)get_local_size(0) + 31u) >> 5)

// The two halves of a word (low one first) as f32, one cvt each: the portable bit recipe costs five operations per
// half, which made decode attention's dot products ALU-bound on the H100.
#define TL_HAVE_HALF2_CVT 1
inline float2 tl_half2_to_float2(uint w) {
    float a, b;
    asm("{\n\t.reg .f16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, h;\n\t}"
        : "=f"(a), "=f"(b)
        : "r"(w));
    return (float2)(a, b);
}

// Data read once per launch (weights, a step's cache rows) loaded without allocating L1 lines, so the L1 keeps what
// is read again (the activations, by every work-group on the unit). H100: faster gate+up, decode attention and
// llama2-7b decode (bench/RESULTS.md).
#define TL_HAVE_LOAD_ONCE 1
inline uint4 tl_load_once_u4(global const uint4* p) {
    uint4 v;
    asm("ld.global.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

inline float tl_load_once_half(global const half* p) {
    float v;
    asm("{\n\t.reg .b16 h;\n\tld.global.L1::no_allocate.b16 h, [%1];\n\tcvt.f32.f16 %0, h;\n\t}"
        : "=f"(v)
        : "l"(p));
    return v;
}

// Eight halves at a 16-byte-aligned address.
inline float8 tl_load_once_half8(global const half* p) {
    const uint4 w = tl_load_once_u4((global const uint4*)p);
    return (float8)(tl_half2_to_float2(w.x), tl_half2_to_float2(w.y), tl_half2_to_float2(w.z),
                    tl_half2_to_float2(w.w));
}

// Packed-half M0E4 dequantisation (the paper's FP16 recipe). Two codes at a time go straight into the mantissas of
// an f16x2: (w & 0x000F000F) | 0x6400 6400 is (1024 + q0, 1024 + q4) and (w & 0x00F000F0) | 0x5400 5400 is
// (64 + q1, 64 + q5) (ulp 1/16 there, so the nibble needs no shift); one exact f16x2 subtraction leaves (q, q'),
// and one f16x2 FMA multiplies them by the activations. Per 8 codes: 4 LOP3 + 1 shift + 4 HSUB2 + 4 HFMA2, against
// 16 integer ops + 8 FMAs in f32. The products and the 16-term sum per lane are in f16, with the activations
// pre-scaled by 1/256: the per-lane sum is then at most 0.94·max|x|, so |x| up to ~69000 cannot overflow (the large
// outliers some models' FFN activations reach stay representable), while |x| < 0.016 loses only ~1e-5 absolute to
// f16 subnormals. The sums across chunks and groups are f32.
#define TL_HAVE_M0E4_H2 1
inline uint tl_nv_pack_h2(float lo, float hi) {
    uint r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// acc + (codes of word w) * x, where xh holds the word's activations as pairs (x0,x4), (x1,x5), (x2,x6), (x3,x7).
inline uint tl_nv_m0e4_word_h2(uint w, uint4 xh, uint acc) {
    const uint w8 = w >> 8;
    const uint a = (w & 0x000F000Fu) | 0x64006400u, b = (w & 0x00F000F0u) | 0x54005400u;
    const uint c = (w8 & 0x000F000Fu) | 0x64006400u, d = (w8 & 0x00F000F0u) | 0x54005400u;
    uint r;
    asm("{\n\t.reg .b32 qa, qb, qc, qd, t, k1, k2;\n\t"
        "mov.b32 k1, 0x64006400;\n\tmov.b32 k2, 0x54005400;\n\t"
        "sub.rn.f16x2 qa, %1, k1;\n\t"
        "sub.rn.f16x2 qb, %2, k2;\n\t"
        "sub.rn.f16x2 qc, %3, k1;\n\t"
        "sub.rn.f16x2 qd, %4, k2;\n\t"
        "fma.rn.f16x2 t, qa, %5, %9;\n\t"
        "fma.rn.f16x2 t, qb, %6, t;\n\t"
        "fma.rn.f16x2 t, qc, %7, t;\n\t"
        "fma.rn.f16x2 %0, qd, %8, t;\n\t}"
        : "=r"(r)
        : "r"(a), "r"(b), "r"(c), "r"(d), "r"(xh.x), "r"(xh.y), "r"(xh.z), "r"(xh.w), "r"(acc));
    return r;
}

// sum over a chunk's 32 codes of q·x/256 (x paired by tl_m0e4_x_h2), summed in f16x2 and returned in f32.
inline float tl_m0e4_dot32_h2(uint4 q, uint4 h0, uint4 h1, uint4 h2, uint4 h3) {
    uint ha = tl_nv_m0e4_word_h2(q.x, h0, 0u);
    ha = tl_nv_m0e4_word_h2(q.y, h1, ha);
    ha = tl_nv_m0e4_word_h2(q.z, h2, ha);
    ha = tl_nv_m0e4_word_h2(q.w, h3, ha);
    const float2 f = tl_half2_to_float2(ha);
    return f.x + f.y;
}

// The word's activations (xa: elements 0-3, xb: 4-7), scaled by 1/256 and paired as tl_nv_m0e4_word_h2 wants.
inline uint4 tl_m0e4_x_h2(float4 xa, float4 xb) {
    xa *= 0.00390625f;
    xb *= 0.00390625f;
    return (uint4)(tl_nv_pack_h2(xa.x, xb.x), tl_nv_pack_h2(xa.y, xb.y), tl_nv_pack_h2(xa.z, xb.z),
                   tl_nv_pack_h2(xa.w, xb.w));
}

// The device's nanosecond timer, the unit's cycle counter and the unit's id, for diag.cl's timelines.
#define TL_HAVE_TIMERS 1
inline ulong tl_globaltimer(void) {
    ulong t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

inline ulong tl_clock(void) {
    ulong t;
    asm volatile("mov.u64 %0, %%clock64;" : "=l"(t));
    return t;
}

inline uint tl_unit_id(void) {
    uint t;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(t));
    return t;
}

#endif
#endif
