// Row normalisation: RMSNorm (Llama; Gemma with weight offset 1). One work-group per row of
// `dim` elements; NORM_WG (a power of two) work-items stride over the row, sums go through tl_wg_sum.

#ifndef NORM_WG
#define NORM_WG 256
#endif

// y[row] = x[row] / sqrt(mean(x[row]^2) + eps) * (w + w_offset). y may alias x.
kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(NORM_WG, 1, 1)))
void rmsnorm(global const float* x, global const float* w, global float* y, uint dim, float eps, float w_offset) {
    local float scratch[NORM_WG];
    const size_t base = (size_t)get_group_id(0) * dim;
    float ss = 0.0f;
    for (uint i = get_local_id(0); i < dim; i += NORM_WG) {
        const float v = x[base + i];
        ss = mad(v, v, ss);
    }
    const float inv = rsqrt(tl_wg_sum(ss, scratch) / (float)dim + eps);
    for (uint i = get_local_id(0); i < dim; i += NORM_WG) y[base + i] = x[base + i] * inv * (w[i] + w_offset);
}

// acc[row] += x[row] / sqrt(mean(x[row]^2) + eps) * (w + w_offset): Gemma 2 and 3's post-attention and post-MLP
// norms, which normalise a block's output before it joins the residual stream.
kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(NORM_WG, 1, 1)))
void rmsnorm_add(global const float* x, global const float* w, global float* acc, uint dim, float eps,
                 float w_offset) {
    local float scratch[NORM_WG];
    const size_t base = (size_t)get_group_id(0) * dim;
    float ss = 0.0f;
    for (uint i = get_local_id(0); i < dim; i += NORM_WG) {
        const float v = x[base + i];
        ss = mad(v, v, ss);
    }
    const float inv = rsqrt(tl_wg_sum(ss, scratch) / (float)dim + eps);
    for (uint i = get_local_id(0); i < dim; i += NORM_WG) acc[base + i] += x[base + i] * inv * (w[i] + w_offset);
}

// RMSNorm of every head of `heads` heads per token, in place, one work-group per (head, token): Qwen3's and
// Gemma 3's q and k norms over the q or k part of a fused QKV output. Head h of token t is the `dim` values at
// offset + t * token_stride + h * dim. Global size (heads * NORM_WG, seq).
kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(NORM_WG, 1, 1)))
void rmsnorm_heads(global float* x, global const float* w, uint dim, float eps, float w_offset, uint offset,
                   uint token_stride) {
    local float scratch[NORM_WG];
    const size_t base = offset + (size_t)get_group_id(1) * token_stride + (size_t)get_group_id(0) * dim;
    float ss = 0.0f;
    for (uint i = get_local_id(0); i < dim; i += NORM_WG) {
        const float v = x[base + i];
        ss = mad(v, v, ss);
    }
    const float inv = rsqrt(tl_wg_sum(ss, scratch) / (float)dim + eps);
    for (uint i = get_local_id(0); i < dim; i += NORM_WG) x[base + i] = x[base + i] * inv * (w[i] + w_offset);
}
