// Rotary position embedding, in place, on a strided activation buffer (so it can rotate the q and k parts of a
// fused QKV output directly). Element d of head h of token t lives at off + t * token_stride + h * head_dim + d.
// Token t sits at position past + t. style 0 = interleaved pairs (2i, 2i+1); style 1 = half-split pairs
// (i, i + rotary_dim / 2). Dimensions at or past rotary_dim pass through.

inline float2 tl_rope_cos_sin(uint pos, uint i, uint rotary_dim, float log2_theta) {
    const float freq = exp2(-(float)(2 * i) / (float)rotary_dim * log2_theta);
    const float angle = (float)pos * freq;
    return tl_cos_sin(angle);
}

inline uint2 tl_rope_pair(uint i, uint rotary_dim, uint style) {
    return style == 0 ? (uint2)(2 * i, 2 * i + 1) : (uint2)(i, i + rotary_dim / 2);
}

// Global size (rotary_dim / 2, heads, seq).
kernel void rope(global float* x, uint off, uint token_stride, uint head_dim, uint rotary_dim, float log2_theta,
                 uint past, uint style) {
    const uint i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    const float2 cs = tl_rope_cos_sin(past + t, i, rotary_dim, log2_theta);
    const uint2 p = tl_rope_pair(i, rotary_dim, style);
    global float* head = x + off + (size_t)t * token_stride + (size_t)h * head_dim;
    const float x0 = head[p.x], x1 = head[p.y];
    head[p.x] = x0 * cs.x - x1 * cs.y;
    head[p.y] = x0 * cs.y + x1 * cs.x;
}

// The same rotation with the inverse frequencies read from a table (rotary_dim / 2 entries): the form that every
// scaled rotary (linear, Llama 3, NTK-aware) takes once the host has computed its frequencies.
// Global size (rotary_dim / 2, heads, seq).
kernel void rope_table(global float* x, uint off, uint token_stride, uint head_dim, uint rotary_dim,
                       global const float* inv_freq, uint past, uint style) {
    const uint i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    const float angle = (float)(past + t) * inv_freq[i];
    const float2 cs = tl_cos_sin(angle);
    const float c = cs.x, s = cs.y;
    const uint2 p = tl_rope_pair(i, rotary_dim, style);
    global float* head = x + off + (size_t)t * token_stride + (size_t)h * head_dim;
    const float x0 = head[p.x], x1 = head[p.y];
    head[p.x] = x0 * c - x1 * s;
    head[p.y] = x0 * s + x1 * c;
}
