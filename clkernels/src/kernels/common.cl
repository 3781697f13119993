// Shared prelude of every tlite kernel program: the half-precision switch, the M0E4 dequantisation recipe,
// work-group reductions, the rotary embedding and the gated activations. `kernels::program_source!` puts it after
// the vendor files (vendor/nvidia.cl, khr_subgroups.cl, adreno.cl, each compiled only for its devices) and their
// portable fallbacks (vendor/portable.cl), and before the family's own source.
//
// Capability defines come from `runtime::Capabilities::defines` (TLITE_HAS_FP16, TLITE_HAS_SUBGROUPS,
// TLITE_HAS_SUBGROUPS_KHR / _INTEL / _QCOM, TLITE_VENDOR_*). TLITE_COMPILE_CHECK makes the vendor files use
// portable stand-ins for built-ins PoCL lacks (sub-groups of one work-item), so the vendor paths compile, and even
// run, on the CPU.

#ifdef TLITE_HAS_FP16
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
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
#ifdef TL_SG_SUM
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
#ifdef TL_SG_MAX
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

// (cos a, sin a). Not sincos(): Oclgrind's uninitialised-value checker aborts any kernel that passes sincos its
// private out-parameter (scripts/test-oclgrind could not check rope or attention otherwise); two calls cost a few
// more ALU operations per rotated pair, nothing beside the memory traffic of those kernels.
inline float2 tl_cos_sin(float a) {
    return (float2)(cos(a), sin(a));
}

// Rotary embedding, for rope.cl and attention.cl alike. Pair i of a head's first rotary_dim elements is
// (2i, 2i + 1) in style 0 (interleaved) or (i, i + rotary_dim / 2) in style 1 (half-split), and turns by the angle
// pos * theta^(-2i / rotary_dim); the rest of the head passes through.
inline uint2 tl_rope_pair(uint i, uint rotary_dim, uint style) {
    return style == 0 ? (uint2)(2 * i, 2 * i + 1) : (uint2)(i, i + rotary_dim / 2);
}

// The pair of element d (< rotary_dim): returns d's partner, with the pair's index in *i and whether d is the
// pair's first element in *first.
inline uint tl_rope_partner(uint d, uint rotary_dim, uint style, bool* first, uint* i) {
    const uint half_rd = rotary_dim / 2;
    if (style == 0) {
        *i = d / 2;
        *first = (d & 1) == 0;
        return d ^ 1;
    }
    *first = d < half_rd;
    *i = *first ? d : d - half_rd;
    return *first ? d + half_rd : d - half_rd;
}

// (cos, sin) of pair i's angle at position pos, the frequency given as log2(theta).
inline float2 tl_rope_cos_sin(float pos, uint i, uint rotary_dim, float log2_theta) {
    const float freq = exp2(-(float)(2 * i) / (float)rotary_dim * log2_theta);
    return tl_cos_sin(pos * freq);
}

// Element `val` of a pair after turning by cs = (cos, sin), `other` being its partner: the first element becomes
// val·cos - other·sin, the second other·sin + val·cos.
inline float tl_rope_rotate(float val, float other, bool first, float2 cs) {
    return first ? val * cs.x - other * cs.y : other * cs.y + val * cs.x;
}

// Turns pair i of `head` in place by cs.
inline void tl_rope_rotate_pair(global float* head, uint i, uint rotary_dim, uint style, float2 cs) {
    const uint2 p = tl_rope_pair(i, rotary_dim, style);
    const float x0 = head[p.x], x1 = head[p.y];
    head[p.x] = tl_rope_rotate(x0, x1, true, cs);
    head[p.y] = tl_rope_rotate(x1, x0, false, cs);
}

// Element d (< rotary_dim) of `head` after rotary embedding at position pos (the head itself is not written).
inline float tl_rope_element(global const float* head, uint d, uint rotary_dim, float log2_theta, float pos,
                             uint style) {
    bool first;
    uint i;
    const uint partner = tl_rope_partner(d, rotary_dim, style, &first, &i);
    return tl_rope_rotate(head[d], head[partner], first, tl_rope_cos_sin(pos, i, rotary_dim, log2_theta));
}

// The gate's activation of a gated feed-forward, act(gate) * up: act 0 = SiLU (SwiGLU), 1 = tanh-GELU (Gemma's
// GeGLU). 0.5·x·(1 + tanh(u)) is written as x / (1 + exp(-2u)): the same function without the cancellation of
// 1 + tanh(u) for large negative x, which left errors of ~1e-6 where the result is ~0.
inline float tl_gate_act(float g, uint act) {
    if (act == 0) return g / (1.0f + exp(-g));
    return g / (1.0f + exp(-1.5957691216f * (g + 0.044715f * g * g * g)));
}

// ---- KV cache rows: linear caches and the ring caches of sliding-window layers ----
// A cache view's position i lies in buffer row i (a linear view), or, for a ring of `ring` slots (kvcache::KvWrap),
// in slot (ring_first + i) mod ring, ring_first being the slot of the view's position 0. ring = 0 means linear.
// Every kernel that reads or writes cache positions finds the row through tl_kv_row, given the row of some
// earlier position `from` of the same walk (tl_kv_row_of, the only modulo): the positions a kernel walks are
// contiguous and fewer than the ring's slots, so a wrap is one conditional subtract rather than a % per key.
inline uint tl_kv_row_of(uint i, uint ring, uint ring_first) {
    return ring == 0 ? i : (uint)(((ulong)ring_first + i) % ring);
}

// The row of position i, where position from (from <= i < from + ring) is in row from_row (tl_kv_row_of).
inline uint tl_kv_row(uint i, uint ring, uint from, uint from_row) {
    if (ring == 0) return i;
    const uint r = from_row + (i - from);
    return r >= ring ? r - ring : r;
}
