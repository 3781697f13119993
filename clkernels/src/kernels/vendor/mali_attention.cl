// Arm Mali: decode attention without local memory, written from Arm's Mali OpenCL guidance, for the Mali build that
// attention/choose.rs picks on Mali devices (or under a Mali device profile). Like vendor/mali.cl it is no prelude
// of every program: only the Mali attention program includes it, after attention/attention.cl, whose attn_params,
// cache element macros (kv_t, KV_F16) and score helpers (attn_first_key, attn_softcap) it shares. Written from the
// documentation; it has run on PoCL's CPU device and Oclgrind only, never on a Mali GPU.
//
// Why no local memory: on Mali, local memory is ordinary memory behind the same caches, so attn_partial's and
// attn_rows' staging of q, of the block's scores and of the row groups' outputs costs copies and barriers and saves
// no traffic. Here each work-item owns one split (a run of positions) of one (token, head) and needs nobody else:
// - scores: it dots q with each key row of a block of MALI_ATT_BLOCK positions itself (q is re-read from global
//   memory for every row: a few hundred bytes every work-item of the head reads, so it stays in the cache);
// - values: it keeps its running output in its own row of part_o (of out, with one split) instead of registers,
//   rescaling and adding a block at a time: that row is also behind the cache, and head_dim floats of registers
//   per work-item would spill anyway;
// - the merge: the last split of a (token, head) to finish (an atomic counter, as attn_finish) merges all splits'
//   rows alone, split by split into its out row; the launcher keeps splits near the square root of the context so
//   the merge costs about what one split's walk does.
// Loads and products are float vectors of MALI_VW lanes (1, 2 or 4: the device's preferred width, see
// kernels/vector_width.rs), vloadN / vload_halfN of the cache's rows. In decode the launcher first runs
// attn_mali_stage, which rotates q into a buffer of its own and writes the fresh token's K and V into the cache, so
// attn_mali only ever reads the cache (fresh = 0).

#ifndef MALI_VW
#define MALI_VW 4
#endif
#ifndef MALI_ATT_WG
#define MALI_ATT_WG 64
#endif
#ifndef MALI_ATT_BLOCK
#define MALI_ATT_BLOCK 16
#endif

// Where element 0 of (kv head kvh, cache row row) lies in the K and V buffers: the one place this file addresses the
// cache. A position's row is tl_kv_row's (common.cl): the position itself, or its slot in a sliding-window layer's
// ring cache.
inline size_t mali_kv_at(const attn_params p, uint kvh, uint row) {
    return p.kv_off + (size_t)kvh * p.head_stride + (size_t)row * p.pos_stride;
}

// MALI_VW lanes of floats (f32 buffers), of the cache (kv_t) and of the output row, from element i.
#if MALI_VW == 1
typedef float mali_vec;
#define MALI_LOAD_F(p, i) ((p)[(i)])
#define MALI_STORE_F(x, p, i) ((p)[(i)] = (x))
#define MALI_HSUM(x) (x)
#ifdef KV_F16
#define MALI_LOAD_KV(p, i) vload_half(0, (p) + (i))
#else
#define MALI_LOAD_KV(p, i) ((p)[(i)])
#endif
#elif MALI_VW == 2
typedef float2 mali_vec;
#define MALI_LOAD_F(p, i) vload2(0, (p) + (i))
#define MALI_STORE_F(x, p, i) vstore2((x), 0, (p) + (i))
#define MALI_HSUM(a) ((a).x + (a).y)
#ifdef KV_F16
#define MALI_LOAD_KV(p, i) vload_half2(0, (p) + (i))
#else
#define MALI_LOAD_KV(p, i) vload2(0, (p) + (i))
#endif
#elif MALI_VW == 4
typedef float4 mali_vec;
#define MALI_LOAD_F(p, i) vload4(0, (p) + (i))
#define MALI_STORE_F(x, p, i) vstore4((x), 0, (p) + (i))
#define MALI_HSUM(x) dot((x), (float4)(1.0f))
#ifdef KV_F16
#define MALI_LOAD_KV(p, i) vload_half4(0, (p) + (i))
#else
#define MALI_LOAD_KV(p, i) vload4(0, (p) + (i))
#endif
#else
#error "MALI_VW must be 1, 2 or 4"
#endif

// The fresh token's rotary and cache append before attn_mali (decode, seq 1): rows r < heads write query head r,
// rotated at position past, into qr[r * head_dim + d]; the next heads / group rows write KV head r - heads into the
// cache at position past, its key rotated. Rotary and inputs as attn_partial's fresh path (k_src_off, v_src_off in
// q's buffer). The same arguments as attn_mali, qr in out's place. Global size (head_dim, heads + heads / group).
kernel void attn_mali_stage(global const float* q, global kv_t* k, global kv_t* v, global float* qr,
                            global float2* part_ml, global float* part_o, global uint* counters, const attn_params p) {
    const uint d = get_global_id(0), r = get_global_id(1);
    const uint heads = p.heads, head_dim = p.head_dim, rotary_dim = p.rotary_dim;
    const float pos = (float)p.past;
    const bool is_q = r < heads;
    const uint h = is_q ? r : r - heads;
    global const float* src = q + (is_q ? p.q_off : p.k_src_off) + (size_t)h * head_dim;
    const float rotated = d < rotary_dim ? tl_rope_element(src, d, rotary_dim, p.log2_theta, pos, p.rope_style)
                                         : src[d];
    if (is_q) {
        qr[(size_t)h * head_dim + d] = rotated;
        return;
    }
    const size_t at = mali_kv_at(p, h, tl_kv_row_of(p.past, p.ring, p.ring_first)) + d;
    KV_STORE(rotated, k, at);
    KV_STORE(q[p.v_src_off + (size_t)h * head_dim + d], v, at);
}

// Merges the splits of (token, head) th into out (by the work-item that finished last): each split's output row
// weighted by exp(m_s - max m) (0 for a split that saw no position), divided by the same weights' sum of l.
// Volatile loads, so no stale cached copy of another work-item's row is read.
inline void mali_merge(size_t th, uint splits, uint head_dim, global float* out, global const float2* part_ml,
                       global const float* part_o) {
    volatile global const float2* ml = (volatile global const float2*)part_ml + th * splits;
    volatile global const float* rows = (volatile global const float*)part_o + th * splits * head_dim;
    global float* o = out + th * head_dim;
    float mx = -INFINITY;
    for (uint s = 0; s < splits; ++s) mx = fmax(mx, ml[s].x);
    float den = 0.0f;
    for (uint s = 0; s < splits; ++s) {
        const float2 msl = ml[s];
        const float w = msl.x == -INFINITY ? 0.0f : exp(msl.x - mx);
        den = mad(msl.y, w, den);
        volatile global const float* row = rows + (size_t)s * head_dim;
        for (uint d = 0; d < head_dim; ++d) o[d] = mad(w, row[d], s == 0 ? 0.0f : o[d]);
    }
    const float inv = 1.0f / den;
    for (uint d = 0; d < head_dim; d += MALI_VW) MALI_STORE_F(MALI_LOAD_F(o, d) * inv, o, d);
}

// attn_partial's job (same arguments and results) with fresh = 0, head_dim a multiple of MALI_VW. Work-item i of the
// first dimension is split i % splits of query head i / splits (items past the last head return); token t is
// get_global_id(1). Global size (heads * splits rounded up to MALI_ATT_WG, seq), local (MALI_ATT_WG, 1).
kernel __attribute__((reqd_work_group_size(MALI_ATT_WG, 1, 1)))
void attn_mali(global const float* q, global kv_t* k, global kv_t* v, global float* out, global float2* part_ml,
               global float* part_o, global uint* counters, const attn_params p) {
    const uint splits = p.splits, heads = p.heads, head_dim = p.head_dim;
    const uint i = get_global_id(0), t = get_global_id(1);
    const uint s = i % splits, h = i / splits;
    if (h >= heads) return;
    const uint kvh = h / p.group;
    const uint n_keys = p.past + t + 1;
    // Splits cover the positions the call reads, from token 0's first key on (as attn_partial's).
    const uint first0 = attn_first_key(p.past + 1, p.window);
    const uint start = max(first0 + s * p.chunk, attn_first_key(n_keys, p.window));
    const uint end = min(first0 + s * p.chunk + p.chunk, n_keys);
    const uint ring = p.ring, start_row = tl_kv_row_of(start, ring, p.ring_first);
    const float scale = p.scale, softcap = p.softcap;
    global const float* qh = q + p.q_off + (size_t)t * p.q_stride + (size_t)h * head_dim;
    const size_t th = (size_t)t * heads + h;
    global float* o = splits == 1 ? out + th * head_dim : part_o + (th * splits + s) * head_dim;

    float m = -INFINITY, l = 0.0f;
    for (uint base = start; base < end; base += MALI_ATT_BLOCK) {
        const uint n = min((uint)MALI_ATT_BLOCK, end - base);
        float sc[MALI_ATT_BLOCK];
        float block_max = -INFINITY;
#pragma unroll
        for (uint j = 0; j < MALI_ATT_BLOCK; ++j) {
            sc[j] = -INFINITY;
            if (j < n) {
                global const kv_t* kr = k + mali_kv_at(p, kvh, tl_kv_row(base + j, ring, start, start_row));
                mali_vec acc = (mali_vec)(0.0f);
                for (uint d = 0; d < head_dim; d += MALI_VW) acc = mad(MALI_LOAD_F(qh, d), MALI_LOAD_KV(kr, d), acc);
                sc[j] = attn_softcap(MALI_HSUM(acc) * scale, softcap);
                block_max = fmax(block_max, sc[j]);
            }
        }
        const float new_m = fmax(m, block_max);
        const float corr = exp(m - new_m);
        float block_sum = 0.0f;
#pragma unroll
        for (uint j = 0; j < MALI_ATT_BLOCK; ++j) {
            sc[j] = j < n ? exp(sc[j] - new_m) : 0.0f;
            block_sum += sc[j];
        }
        l = mad(l, corr, block_sum);
        for (uint d = 0; d < head_dim; d += MALI_VW) {
            mali_vec acc = base == start ? (mali_vec)(0.0f) : MALI_LOAD_F(o, d) * corr;
            for (uint j = 0; j < n; ++j) acc = mad((mali_vec)(sc[j]), MALI_LOAD_KV(v + mali_kv_at(p, kvh, tl_kv_row(base + j, ring, start, start_row)), d), acc);
            MALI_STORE_F(acc, o, d);
        }
        m = new_m;
    }
    if (start >= end) {
        // A split wholly before the sliding window: an empty row the merge weighs 0.
        for (uint d = 0; d < head_dim; d += MALI_VW) MALI_STORE_F((mali_vec)(0.0f), o, d);
    }
    if (splits == 1) {
        const float inv = 1.0f / l;
        for (uint d = 0; d < head_dim; d += MALI_VW) MALI_STORE_F(MALI_LOAD_F(o, d) * inv, o, d);
        return;
    }
    part_ml[th * splits + s] = (float2)(m, l);
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    if (atomic_inc(&counters[th]) != splits - 1) return;
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    mali_merge(th, splits, head_dim, out, part_ml, part_o);
    counters[th] = 0;
}
