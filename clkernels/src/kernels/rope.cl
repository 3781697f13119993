// Rotary position embedding, in place, on a strided activation buffer (so it can rotate the q and k parts of a
// fused QKV output directly). Element d of head h of token t lives at off + t * token_stride + h * head_dim + d.
// Token t sits at position past + t. style 0 = interleaved pairs (2i, 2i+1); style 1 = half-split pairs
// (i, i + rotary_dim / 2). Dimensions at or past rotary_dim pass through. The rotation itself is common.cl's, which
// attention.cl shares.

// Global size (rotary_dim / 2, heads, seq).
kernel void rope(global float* x, uint off, uint token_stride, uint head_dim, uint rotary_dim, float log2_theta,
                 uint past, uint style) {
    const uint i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    const float2 cs = tl_rope_cos_sin((float)(past + t), i, rotary_dim, log2_theta);
    global float* head = x + off + (size_t)t * token_stride + (size_t)h * head_dim;
    tl_rope_rotate_pair(head, i, rotary_dim, style, cs);
}

// The same rotation with the inverse frequencies read from a table (rotary_dim / 2 entries): the form that every
// scaled rotary (linear, Llama 3, NTK-aware, longrope) takes once the host has computed its frequencies. mscale
// multiplies the rotated pair (longrope's attention factor; 1 otherwise), as llama.cpp scales cos and sin.
// Global size (rotary_dim / 2, heads, seq).
kernel void rope_table(global float* x, uint off, uint token_stride, uint head_dim, uint rotary_dim,
                       global const float* inv_freq, uint past, uint style, float mscale) {
    const uint i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    const float2 cs = tl_cos_sin((float)(past + t) * inv_freq[i]) * mscale;
    global float* head = x + off + (size_t)t * token_stride + (size_t)h * head_dim;
    tl_rope_rotate_pair(head, i, rotary_dim, style, cs);
}

// ---- Context shift: cached keys re-rotated by a position delta ----
// The KV cache stores keys already rotated for their slot. A context shift moves kept keys `delta` slots (delta < 0)
// and they must then read as if rotated at their new slot: rotations compose, so each pair turns once more by
// delta * freq, computed directly (one cos/sin) rather than un-rotating to the raw key and rotating again. Keys live
// in the kvcache layout: element d of kv head h at view position t is at off + h * head_stride + row(t) * pos_stride
// + d, row(t) = t, or its slot in a ring (ring > 0, view position 0 in slot ring_first: tl_kv_row).
// KV_F16 selects f16 storage (vload_half / vstore_half_rte, as attention.cl), else f32. delta is a whole number of
// positions passed as a float (exact up to 2^24, which the launcher checks).
#ifdef KV_F16
typedef half rope_kv_t;
#define ROPE_KV_LOAD(p, i) vload_half((i), (p))
#define ROPE_KV_STORE(v, p, i) vstore_half_rte((v), (i), (p))
#else
typedef float rope_kv_t;
#define ROPE_KV_LOAD(p, i) ((p)[(i)])
#define ROPE_KV_STORE(v, p, i) ((p)[(i)] = (v))
#endif

// The shift's math in one place (so it can move to the shared rotary helpers): pair p of the head starting at `at`
// turned by `angle` radians, in f32 whatever the storage.
inline void rope_shift_pair(global rope_kv_t* k, size_t at, uint2 p, float angle) {
    const float2 cs = tl_cos_sin(angle);
    const float x0 = ROPE_KV_LOAD(k, at + p.x), x1 = ROPE_KV_LOAD(k, at + p.y);
    ROPE_KV_STORE(x0 * cs.x - x1 * cs.y, k, at + p.x);
    ROPE_KV_STORE(x0 * cs.y + x1 * cs.x, k, at + p.y);
}

// Frequencies from theta, formed exactly as the forward rotary forms them (rope, kv_write, qkv_rope_write).
// Global size (rotary_dim / 2, heads, positions).
kernel void rope_shift(global rope_kv_t* k, uint off, uint head_stride, uint pos_stride, uint rotary_dim,
                       float log2_theta, float delta, uint style, uint ring, uint ring_first) {
    const uint i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    const float freq = exp2(-(float)(2 * i) / (float)rotary_dim * log2_theta);
    const size_t at = off + (size_t)h * head_stride + (size_t)tl_kv_row(t, ring, 0, ring_first) * pos_stride;
    rope_shift_pair(k, at, tl_rope_pair(i, rotary_dim, style), delta * freq);
}

// Frequencies from the table the forward rotary of a scaled model reads (rope_table).
// Global size (rotary_dim / 2, heads, positions).
kernel void rope_shift_table(global rope_kv_t* k, uint off, uint head_stride, uint pos_stride, uint rotary_dim,
                             global const float* inv_freq, float delta, uint style, uint ring,
                             uint ring_first) {
    const uint i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    const size_t at = off + (size_t)h * head_stride + (size_t)tl_kv_row(t, ring, 0, ring_first) * pos_stride;
    rope_shift_pair(k, at, tl_rope_pair(i, rotary_dim, style), delta * inv_freq[i]);
}
