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
// scaled rotary (linear, Llama 3, NTK-aware) takes once the host has computed its frequencies.
// Global size (rotary_dim / 2, heads, seq).
kernel void rope_table(global float* x, uint off, uint token_stride, uint head_dim, uint rotary_dim,
                       global const float* inv_freq, uint past, uint style) {
    const uint i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    const float2 cs = tl_cos_sin((float)(past + t) * inv_freq[i]);
    global float* head = x + off + (size_t)t * token_stride + (size_t)h * head_dim;
    tl_rope_rotate_pair(head, i, rotary_dim, style, cs);
}
