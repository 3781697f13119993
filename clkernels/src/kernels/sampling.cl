// Softmax, argmax and top-k on the device, so sampling needs to read back only a few numbers.
// SAMPLE_WG is a power of two; argmax and top-k run as one work-group over the whole row.

#ifndef SAMPLE_WG
#define SAMPLE_WG 256
#endif

// y[row] = softmax(x[row] * scale) (scale = 1 / temperature). One work-group per row; y may alias x.
kernel __attribute__((reqd_work_group_size(SAMPLE_WG, 1, 1)))
void softmax(global const float* x, global float* y, uint n, float scale) {
    local float scratch[SAMPLE_WG];
    const size_t base = (size_t)get_group_id(0) * n;
    float m = -INFINITY;
    for (uint i = get_local_id(0); i < n; i += SAMPLE_WG) m = fmax(m, x[base + i] * scale);
    m = tl_wg_max(m, scratch);
    float s = 0.0f;
    for (uint i = get_local_id(0); i < n; i += SAMPLE_WG) s += exp(x[base + i] * scale - m);
    const float inv = 1.0f / tl_wg_sum(s, scratch);
    for (uint i = get_local_id(0); i < n; i += SAMPLE_WG) y[base + i] = exp(x[base + i] * scale - m) * inv;
}

// Whether (va, ia) ranks before (vb, ib): larger value first, lower index on ties; NaN ranks last.
inline bool tl_ranks_before(float va, uint ia, float vb, uint ib) {
    if (isnan(vb)) return !isnan(va) || ia < ib;
    if (isnan(va)) return false;
    return va > vb || (va == vb && ia < ib);
}

// Best (value, index) over the work-group among elements ranking strictly after (prev_v, prev_i)
// (pass prev_i = 0xFFFFFFFF with prev_v = +inf ... via has_prev = 0 for "no bound"). Returns the index
// (0xFFFFFFFF when nothing is eligible) and writes the value to *best_v.
inline uint tl_wg_best(global const float* x, uint n, uint has_prev, float prev_v, uint prev_i, float* best_v,
                       local float* sv, local uint* si) {
    const uint lid = get_local_id(0);
    float bv = NAN;
    uint bi = 0xFFFFFFFFu;
    // Four loads in flight per work-item, then the candidates in index order (ties keep the lowest index).
    uint i = lid;
    for (; i + 3 * SAMPLE_WG < n; i += 4 * SAMPLE_WG) {
        const float v4[4] = {x[i], x[i + SAMPLE_WG], x[i + 2 * SAMPLE_WG], x[i + 3 * SAMPLE_WG]};
        for (uint u = 0; u < 4; ++u) {
            const float v = v4[u];
            const uint iu = i + u * SAMPLE_WG;
            if (has_prev && !tl_ranks_before(prev_v, prev_i, v, iu)) continue;
            if (bi == 0xFFFFFFFFu || tl_ranks_before(v, iu, bv, bi)) {
                bv = v;
                bi = iu;
            }
        }
    }
    for (; i < n; i += SAMPLE_WG) {
        const float v = x[i];
        if (has_prev && !tl_ranks_before(prev_v, prev_i, v, i)) continue;
        if (bi == 0xFFFFFFFFu || tl_ranks_before(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    sv[lid] = bv;
    si[lid] = bi;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = SAMPLE_WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            const uint oi = si[lid + s];
            if (oi != 0xFFFFFFFFu && (si[lid] == 0xFFFFFFFFu || tl_ranks_before(sv[lid + s], oi, sv[lid], si[lid]))) {
                sv[lid] = sv[lid + s];
                si[lid] = oi;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    *best_v = sv[0];
    const uint r = si[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

// out[0] = index of the largest of x[0..n] (lowest index on ties). One work-group.
kernel __attribute__((reqd_work_group_size(SAMPLE_WG, 1, 1)))
void argmax(global const float* x, global uint* out, uint n) {
    local float sv[SAMPLE_WG];
    local uint si[SAMPLE_WG];
    float v;
    const uint i = tl_wg_best(x, n, 0, 0.0f, 0, &v, sv, si);
    if (get_local_id(0) == 0) out[0] = i;
}

// The k largest of x[0..n], largest first (lowest index on ties): k rounds of "best element ranking after the
// previous pick", so no scratch beyond the work-group. One work-group; k <= n.
kernel __attribute__((reqd_work_group_size(SAMPLE_WG, 1, 1)))
void top_k(global const float* x, global uint* out_idx, global float* out_val, uint n, uint k) {
    local float sv[SAMPLE_WG];
    local uint si[SAMPLE_WG];
    float pv = 0.0f;
    uint pi = 0;
    for (uint r = 0; r < k; ++r) {
        float v;
        const uint i = tl_wg_best(x, n, r > 0, pv, pi, &v, sv, si);
        if (get_local_id(0) == 0) {
            out_idx[r] = i;
            out_val[r] = v;
        }
        pv = v;
        pi = i;
    }
}
