// Shared prelude of every tlite kernel program: capability switches, the M0E4 dequantisation recipe and
// work-group reductions. Prepended to each family's source by `kernels::program_source!`.
//
// Capability defines come from `runtime::Capabilities::defines` (TLITE_HAS_FP16, TLITE_HAS_SUBGROUPS,
// TLITE_HAS_SUBGROUPS_QCOM, TLITE_VENDOR_*). TLITE_COMPILE_CHECK maps vendor built-ins that PoCL lacks to portable
// stand-ins with a sub-group size of 1, so the vendor paths compile (and even run, trivially) on the CPU.

#ifdef TLITE_HAS_FP16
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
#endif

#ifdef TLITE_COMPILE_CHECK
// Portable stand-ins: a sub-group of one work-item. Reductions over it are the identity, shuffles return the
// default value, so code written for real sub-groups stays correct.
#define sub_group_reduce_add(x) (x)
#define sub_group_reduce_max(x) (x)
#define get_sub_group_local_id() 0u
#define get_sub_group_id() ((uint)get_local_id(0))
#define get_num_sub_groups() ((uint)get_local_size(0))
#define qcom_sub_group_shuffle_down(v, d, w, def) (def)
#define CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM 0
#define TL_QCOM_REQD_SUBGROUP
#else
#if defined(TLITE_HAS_SUBGROUPS_KHR)
#pragma OPENCL EXTENSION cl_khr_subgroups : enable
#endif
#if defined(TLITE_HAS_SUBGROUPS_INTEL)
#pragma OPENCL EXTENSION cl_intel_subgroups : enable
#endif
#if defined(TLITE_HAS_SUBGROUPS_QCOM) && defined(cl_qcom_reqd_sub_group_size)
#pragma OPENCL EXTENSION cl_qcom_reqd_sub_group_size : enable
// Adreno: ask for "half" waves (64 lanes); the matvec reductions below assume at most 64.
#define TL_QCOM_REQD_SUBGROUP __attribute__((qcom_reqd_sub_group_size("half")))
#else
#define TL_QCOM_REQD_SUBGROUP
#endif
#if defined(TLITE_HAS_SUBGROUPS_QCOM) && defined(cl_qcom_subgroup_shuffle)
#pragma OPENCL EXTENSION cl_qcom_subgroup_shuffle : enable
#endif
#endif

// Which sub-group reduction, if any, the reductions use: 1 = cl_khr/intel sub-group built-ins, 2 = Adreno
// shuffles, 3 = NVIDIA warp shuffles through inline PTX (NVIDIA's OpenCL has no sub-group extension; the launcher
// defines TLITE_NV_SHFL only where that builds), 0 = local-memory tree.
#if defined(TLITE_NV_SHFL)
#define TL_SG_MODE 3
#elif defined(TLITE_HAS_SUBGROUPS)
#define TL_SG_MODE 1
#elif defined(TLITE_HAS_SUBGROUPS_QCOM) && (defined(cl_qcom_subgroup_shuffle) || defined(TLITE_COMPILE_CHECK))
#define TL_SG_MODE 2
#else
#define TL_SG_MODE 0
#endif

#if TL_SG_MODE == 2
// Adreno without cl_khr_subgroups: a shuffle-down tree over a half wave (64 lanes); lane 0 holds the sum.
inline float tl_qcom_reduce_add(float v) {
    v += qcom_sub_group_shuffle_down(v, 32u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    v += qcom_sub_group_shuffle_down(v, 16u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    v += qcom_sub_group_shuffle_down(v, 8u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    v += qcom_sub_group_shuffle_down(v, 4u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    v += qcom_sub_group_shuffle_down(v, 2u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    v += qcom_sub_group_shuffle_down(v, 1u, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, 0.0f);
    return v;
}

// The same tree for the maximum (lanes past the wave read -inf).
inline float tl_qcom_reduce_max(float v) {
    for (uint o = 32u; o > 0u; o >>= 1)
        v = fmax(v, qcom_sub_group_shuffle_down(v, o, CLK_SUB_GROUP_SHUFFLE_WIDTH_WAVE_SIZE_QCOM, -INFINITY));
    return v;
}
#endif

#if TL_SG_MODE == 3
#ifndef TLITE_COMPILE_CHECK
// v of the lane whose id differs from this one's in bit pattern o (a butterfly step over the 32-lane warp).
inline float tl_nv_shfl_xor(float v, uint o) {
    float t;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(t) : "f"(v), "r"(o));
    return t;
}
#endif

// Butterfly sum over a 32-lane warp; every lane gets the total. Work-groups are 1-D multiples of 32, so warp w
// is local ids 32w .. 32w + 31.
inline float tl_nv_warp_sum(float v) {
#ifdef TLITE_COMPILE_CHECK
    return v;
#else
    for (uint o = 16; o > 0; o >>= 1) v += tl_nv_shfl_xor(v, o);
    return v;
#endif
}

// Butterfly maximum over a 32-lane warp; every lane gets it.
inline float tl_nv_warp_max(float v) {
#ifdef TLITE_COMPILE_CHECK
    return v;
#else
    for (uint o = 16; o > 0; o >>= 1) v = fmax(v, tl_nv_shfl_xor(v, o));
    return v;
#endif
}
#endif

// Uniform names for the sub-group reductions (modes 1-3).
#if TL_SG_MODE == 1
#define TL_SG_SUM(x) sub_group_reduce_add(x)
#define TL_SG_MAX(x) sub_group_reduce_max(x)
#define TL_SG_LID() get_sub_group_local_id()
#define TL_SG_ID() get_sub_group_id()
#define TL_NUM_SG() get_num_sub_groups()
#elif TL_SG_MODE == 2
#define TL_SG_SUM(x) tl_qcom_reduce_add(x)
#define TL_SG_MAX(x) tl_qcom_reduce_max(x)
#define TL_SG_LID() get_sub_group_local_id()
#define TL_SG_ID() get_sub_group_id()
#define TL_NUM_SG() get_num_sub_groups()
#elif TL_SG_MODE == 3
#define TL_SG_SUM(x) tl_nv_warp_sum(x)
#define TL_SG_MAX(x) tl_nv_warp_max(x)
#ifdef TLITE_COMPILE_CHECK
#define TL_SG_LID() 0u
#define TL_SG_ID() ((uint)get_local_id(0))
#define TL_NUM_SG() ((uint)get_local_size(0))
#else
#define TL_SG_LID() ((uint)get_local_id(0) & 31u)
#define TL_SG_ID() ((uint)get_local_id(0) >> 5)
#define TL_NUM_SG() (((uint)get_local_size(0) + 31u) >> 5)
#endif
#endif

// M0E4: h = 1 + q/16 built by placing the code in the top mantissa bits of 1.0f (FP32 recipe).
#define TL_M0E4_ONE 0x3F800000u
#define TL_M0E4_MASK 0x00780000u

// Dot of the 8 codes packed in `w` (element i in bits 4i..4i+3) with xa (elements 0..3) and xb (4..7), as h values.
inline float tl_m0e4_dot8(uint w, float4 xa, float4 xb) {
    uint4 la = ((uint4)(w << 19, w << 15, w << 11, w << 7) & TL_M0E4_MASK) | TL_M0E4_ONE;
    uint4 lb = ((uint4)(w << 3, w >> 1, w >> 5, w >> 9) & TL_M0E4_MASK) | TL_M0E4_ONE;
    return dot(as_float4(la), xa) + dot(as_float4(lb), xb);
}

// The 8 h values of word `w`, elements 0..3 and 4..7.
inline void tl_m0e4_h8(uint w, float4* ha, float4* hb) {
    *ha = as_float4(((uint4)(w << 19, w << 15, w << 11, w << 7) & TL_M0E4_MASK) | TL_M0E4_ONE);
    *hb = as_float4(((uint4)(w << 3, w >> 1, w >> 5, w >> 9) & TL_M0E4_MASK) | TL_M0E4_ONE);
}

// Element `i` (0..7) of word `w` as an h value.
inline float tl_m0e4_h1(uint w, uint i) {
    return as_float((((w >> (4u * i)) & 0xFu) << 19) | TL_M0E4_ONE);
}

// (cos a, sin a) for rotary embeddings. Not sincos(): Oclgrind's uninitialised-value checker aborts any kernel that
// passes sincos its private out-parameter (scripts/test-oclgrind could not check rope or attention otherwise); two
// calls cost a few more ALU operations per rotated pair, nothing beside the memory traffic of those kernels.
inline float2 tl_cos_sin(float a) {
    return (float2)(cos(a), sin(a));
}

#ifdef TLITE_HAS_FP16
// FP16 recipe: bits(h) = 0x3C00 | (q << 6). Half math for the 8 products, f32 for the sum across groups.
inline float tl_m0e4_dot8_half(uint w, half8 x) {
    ushort8 b = (ushort8)((ushort)(w << 6), (ushort)(w << 2), (ushort)(w >> 2), (ushort)(w >> 6),
                          (ushort)(w >> 10), (ushort)(w >> 14), (ushort)(w >> 18), (ushort)(w >> 22));
    half8 h = as_half8((b & (ushort)0x03C0) | (ushort)0x3C00);
    half8 p = h * x;
    half4 q = p.lo + p.hi;
    half2 r = q.lo + q.hi;
    return (float)r.lo + (float)r.hi;
}
#endif

// Sum of `v` over the work-group; every work-item gets the result. `scratch` holds >= local size floats.
// Needs a power-of-two local size in the portable path.
inline float tl_wg_sum(float v, local float* scratch) {
    const uint lid = get_local_id(0);
    const uint n = get_local_size(0);
#if TL_SG_MODE != 0
    float s = TL_SG_SUM(v);
    if (TL_SG_LID() == 0) scratch[TL_SG_ID()] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    float total = 0.0f;
    for (uint i = 0; i < TL_NUM_SG(); ++i) total += scratch[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
#else
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = n / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] += scratch[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float total = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
#endif
}

// Maximum of `v` over the work-group; every work-item gets the result. `scratch` holds >= local size floats.
// Needs a power-of-two local size in the portable path.
inline float tl_wg_max(float v, local float* scratch) {
#if TL_SG_MODE != 0
    float s = TL_SG_MAX(v);
    if (TL_SG_LID() == 0) scratch[TL_SG_ID()] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    float m = -INFINITY;
    for (uint i = 0; i < TL_NUM_SG(); ++i) m = fmax(m, scratch[i]);
    barrier(CLK_LOCAL_MEM_FENCE);
    return m;
#else
    const uint lid = get_local_id(0);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = get_local_size(0) / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] = fmax(scratch[lid], scratch[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float m = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return m;
#endif
}

#if defined(TLITE_NV_SHFL) && !defined(TLITE_COMPILE_CHECK)
// The two halves of a word (low one first) as f32, one PTX cvt each: NVIDIA's OpenCL has no cl_khr_fp16, and
// its vload_half lowering costs more (the attention and mat-vec loads use this).
inline float2 tl_nv_half2_to_float2(uint w) {
    float a, b;
    asm("{\n\t.reg .f16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, h;\n\t}"
        : "=f"(a), "=f"(b)
        : "r"(w));
    return (float2)(a, b);
}

// 16 bytes read once per launch (weights, a step's cache rows), loaded without allocating an L1 line so the L1
// keeps what is read again.
inline uint4 tl_nv_ld_once(global const uint4* p) {
    uint4 v;
    asm("ld.global.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}
#endif
