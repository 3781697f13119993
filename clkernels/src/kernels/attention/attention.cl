// Causal grouped-query attention over the kvcache layout, plus the in-place K/V append.
//
// K and V are read straight from the per-layer cache buffers: element (kv head h, position p, dim d) lies at
// kv_off + h * head_stride + row(p) * pos_stride + d (a kvcache::KvView bound to a whole buffer or a sub-buffer),
// row(p) = p for a linear cache, or p's slot in the ring of a sliding-window layer (ring > 0: tl_kv_row in
// common.cl, the one place that says where a position lives).
// KV_F16 selects f16 storage (vload_half / vstore_half_rte), else f32.
//
// attn_partial: one work-group per (split s, query head h, query token t). Token t sits at position past + t and
// attends positions [0, past + t] (or its window of them); the splits cover the positions any token of the launch
// reads, from token 0's first key f0 on: split s covers [f0 + s * chunk, f0 + (s + 1) * chunk) of them. The work-group
// walks its positions ATT_WG at a time (one position per work-item for the score), keeping a running maximum m,
// sum l and unnormalised output o in the FlashAttention style, so memory stays O(head_dim) per work-group and
// O(seq * head_dim) overall. With one split it writes the normalised output; with several (decode over a long
// context) it writes (m, l, o) partials, and the last of them to finish merges them in the same launch.
//
// Gemma's two additions: a sliding window (window > 0: token t sees only positions p with past + t - p < window,
// so a split whose positions all lie before that sees none and leaves m = -inf, l = 0, which the merge weighs 0),
// and soft-capped scores (softcap > 0: a scaled score s becomes softcap * tanh(s / softcap)).

#ifndef ATT_WG
#define ATT_WG 64
#endif
#ifndef ATT_MAX_HD
#define ATT_MAX_HD 256
#endif
#define ATT_DPT ((ATT_MAX_HD + ATT_WG - 1) / ATT_WG)
// Most splits a decode launch makes (the launcher caps its plan here): the merge keeps each split's (m, l) in
// local memory. And how many splits' outputs the merge loads at once.
#ifndef ATT_MAX_SPLITS
#define ATT_MAX_SPLITS 256
#endif
// The partial unroll of attn_partial's key-row loop. PoCL cannot apply it (its work-group transformation runs
// first) and said so on every build ("loop not unrolled"), and a CPU gains nothing from it.
#ifdef TLITE_VENDOR_POCL
#define ATT_UNROLL_KEY_ROW
#else
#define ATT_UNROLL_KEY_ROW _Pragma("unroll 16")
#endif
#ifndef ATT_MERGE
#define ATT_MERGE 8
#endif

// The scalar arguments of attn_partial and attn_rows (AttnParams in params.rs, field for field). Element d of query
// head h of token t is at q_off + t * q_stride + h * head_dim + d; a query head reads KV head h / group. chunk and
// splits are the launcher's plan; with fresh = 1 (decode) the token's K and V come from q's buffer at k_src_off
// and v_src_off and rotate as in rope.cl (rotary_dim, log2_theta, rope_style); with fresh = 0 those are unused.
typedef struct {
    uint q_off, q_stride;
    uint kv_off, head_stride, pos_stride;
    uint past, heads, group, head_dim;
    uint chunk, splits;
    float scale;
    uint fresh, k_src_off, v_src_off, rotary_dim;
    float log2_theta;
    uint rope_style;
    uint window;
    float softcap;
    uint ring, ring_first;
} attn_params;

// The first position token t (n_keys positions so far) sees: 0, or the start of its sliding window.
inline uint attn_first_key(uint n_keys, uint window) {
    return window != 0 && n_keys > window ? n_keys - window : 0;
}

// Gemma 2's soft-capping of a scaled score (cap 0: none).
inline float attn_softcap(float s, float cap) {
    return cap > 0.0f ? cap * tanh(s / cap) : s;
}

// KV_LOAD8 reads 8 consecutive elements from an index that is a multiple of 8 (16- or 32-byte aligned, which the
// kernels check at run time: see kv_wide). vload8 / vload_half8 promise only element alignment, and NVIDIA's
// compiler turns them into eight scalar loads (eight 2-byte loads and conversions for f16), which made decode
// attention latency- and instruction-bound; aligned vector loads are one or two 16-byte loads.
#ifdef KV_F16
typedef half kv_t;
#define KV_LOAD(p, i) vload_half((i), (p))
#define KV_STORE(v, p, i) vstore_half_rte((v), (i), (p))
#ifdef TLITE_HAS_FP16
#define KV_LOAD8(p, i) vload_half8(0, (p) + (i))
#else
// Without cl_khr_fp16: tl_half2_to_float2 (a bit recipe, or one conversion per half on NVIDIA).
inline float8 kv_half8_from_bits(uint4 w) {
    return (float8)(tl_half2_to_float2(w.x), tl_half2_to_float2(w.y), tl_half2_to_float2(w.z),
                    tl_half2_to_float2(w.w));
}
#define KV_LOAD8(p, i) kv_half8_from_bits(*(global const uint4*)((p) + (i)))
#endif
#else
typedef float kv_t;
#define KV_LOAD(p, i) ((p)[(i)])
#define KV_LOAD8(p, i) (float8)(*(global const float4*)((p) + (i)), *(global const float4*)((p) + (i) + 4))
#define KV_STORE(v, p, i) ((p)[(i)] = (v))
#endif

// The work-group's query head into qs, times scale (rotated at position p_new when fresh); with has_fresh also
// the fresh token's key (rotated) and value, rounded to the cache's element type as a cache read would return
// them, into kn / vn, and the work-groups of query heads h % group == 0 write them into the cache at p_new.
// row_new is p_new's row in the cache. Callers put a barrier before reading qs, kn or vn.
inline void attn_stage_query(global const float* q, global kv_t* k, global kv_t* v, const attn_params p, uint h,
                             uint t, bool has_fresh, uint p_new, uint row_new, local float* qs, local float* kn,
                             local float* vn, local kv_t* rounding) {
    const uint lid = get_local_id(0);
    const float pos = (float)p_new;
    const uint kvh = h / p.group, head_dim = p.head_dim, q_stride = p.q_stride;
    const uint fresh = p.fresh, rotary_dim = p.rotary_dim;
    global const float* qh = q + p.q_off + (size_t)t * q_stride + (size_t)h * head_dim;
    global const float* kh = q + p.k_src_off + (size_t)t * q_stride + (size_t)kvh * head_dim;
    global const float* vh = q + p.v_src_off + (size_t)t * q_stride + (size_t)kvh * head_dim;
    // Every load first (q, and the fresh key and value, with their rotary partners), so a work-item waits one
    // round trip; one angle serves q and k.
    float qa[ATT_DPT], qb[ATT_DPT], ka[ATT_DPT], kb[ATT_DPT], va[ATT_DPT];
    bool first[ATT_DPT];
    uint pair[ATT_DPT];
#pragma unroll
    for (uint j = 0; j < ATT_DPT; ++j) {
        const uint d = lid + j * ATT_WG;
        const bool rotated = fresh != 0 && d < rotary_dim;
        first[j] = true;
        pair[j] = 0;
        const uint partner = rotated ? tl_rope_partner(d, rotary_dim, p.rope_style, &first[j], &pair[j]) : d;
        if (d < head_dim) {
            qa[j] = qh[d];
            qb[j] = qh[partner];
            if (has_fresh) {
                ka[j] = kh[d];
                kb[j] = kh[partner];
                va[j] = vh[d];
            }
        }
    }
    const size_t at = p.kv_off + (size_t)kvh * p.head_stride + (size_t)row_new * p.pos_stride;
    const bool writer = h % p.group == 0;
#pragma unroll
    for (uint j = 0; j < ATT_DPT; ++j) {
        const uint d = lid + j * ATT_WG;
        if (d >= head_dim) continue;
        float qv = qa[j], kv = ka[j];
        if (fresh != 0 && d < rotary_dim) {
            const float2 cs = tl_rope_cos_sin(pos, pair[j], rotary_dim, p.log2_theta);
            qv = tl_rope_rotate(qa[j], qb[j], first[j], cs);
            kv = tl_rope_rotate(ka[j], kb[j], first[j], cs);
        }
        qs[d] = qv * p.scale;
        if (has_fresh) {
            // Each work-item rounds its own element through local memory: what the cache will hold.
            KV_STORE(kv, rounding, d);
            kn[d] = KV_LOAD(rounding, d);
            KV_STORE(va[j], rounding, d);
            vn[d] = KV_LOAD(rounding, d);
            if (writer) {
                KV_STORE(kn[d], k, at + d);
                KV_STORE(vn[d], v, at + d);
            }
        }
    }
}

// Stores a work-group's result: o (element d = lid + i * ATT_WG, unnormalised), running maximum m and sum l of
// (token, head) th, split s of splits. With one split the normalised output; else the partial, and the last
// split of th to finish merges all of them (no second launch): each work-item's writes are fenced before the
// work-group counts itself done, and the merging work-group reads the partials with volatile loads so no stale
// cached copy is used. The counter is reset for the next launch.
inline void attn_finish(const float* o, float m, float l, size_t th, uint s, uint splits, uint head_dim,
                        global float* out, global float2* part_ml, global float* part_o, global uint* counters,
                        local uint* is_last, local float2* ml_space) {
    const uint lid = get_local_id(0);
    if (splits == 1) {
        const float inv = 1.0f / l;
#pragma unroll
        for (uint i = 0; i < ATT_DPT; ++i) {
            const uint d = lid + i * ATT_WG;
            if (d < head_dim) out[th * head_dim + d] = o[i] * inv;
        }
        return;
    }
    const size_t ps_idx = th * splits + s;
#pragma unroll
    for (uint i = 0; i < ATT_DPT; ++i) {
        const uint d = lid + i * ATT_WG;
        if (d < head_dim) part_o[ps_idx * head_dim + d] = o[i];
    }
    if (lid == 0) part_ml[ps_idx] = (float2)(m, l);
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
    if (lid == 0) *is_last = atomic_inc(&counters[th]) == splits - 1;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (!*is_last) return;
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    volatile global const float2* vml = (volatile global const float2*)part_ml + th * splits;
    volatile global const float* vo = (volatile global const float*)part_o + th * splits * head_dim;
    // Every load of a batch is issued before any is used, so the merge waits one round trip per batch (volatile
    // loads stay in program order but do not wait for each other): first each split's weight, exp(m_s - max)
    // (0 for a split with no positions, m = -inf), kept in local memory, then ATT_MERGE splits' outputs at a time.
    for (uint sp = lid; sp < splits; sp += ATT_WG) ml_space[sp] = vml[sp];
    barrier(CLK_LOCAL_MEM_FENCE);
    float mx = -INFINITY;
    for (uint sp = 0; sp < splits; ++sp) mx = fmax(mx, ml_space[sp].x);
    float den = 0.0f;
    for (uint sp = 0; sp < splits; ++sp) {
        const float2 ml = ml_space[sp];
        den = mad(ml.y, ml.x == -INFINITY ? 0.0f : exp(ml.x - mx), den);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint sp = lid; sp < splits; sp += ATT_WG) {
        const float x = ml_space[sp].x;
        ml_space[sp].y = x == -INFINITY ? 0.0f : exp(x - mx);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float num[ATT_DPT];
#pragma unroll
    for (uint i = 0; i < ATT_DPT; ++i) num[i] = 0.0f;
    for (uint sp0 = 0; sp0 < splits; sp0 += ATT_MERGE) {
        float ov[ATT_DPT][ATT_MERGE];
#pragma unroll
        for (uint i = 0; i < ATT_DPT; ++i) {
            const uint d = lid + i * ATT_WG;
#pragma unroll
            for (uint u = 0; u < ATT_MERGE; ++u)
                ov[i][u] = d < head_dim && sp0 + u < splits ? vo[(sp0 + u) * head_dim + d] : 0.0f;
        }
#pragma unroll
        for (uint i = 0; i < ATT_DPT; ++i)
#pragma unroll
            for (uint u = 0; u < ATT_MERGE; ++u)
                if (sp0 + u < splits) num[i] = mad(ov[i][u], ml_space[sp0 + u].y, num[i]);
    }
    const float inv = 1.0f / den;
#pragma unroll
    for (uint i = 0; i < ATT_DPT; ++i) {
        const uint d = lid + i * ATT_WG;
        if (d < head_dim) out[th * head_dim + d] = num[i] * inv;
    }
    if (lid == 0) counters[th] = 0;
}

// Global size (ATT_WG * splits, heads, seq), local (ATT_WG, 1, 1). Scalars in p (attn_params above).
// out: [seq][heads][head_dim]. part_ml: [seq][heads][splits] float2 (m, l). part_o: [seq][heads][splits][head_dim].
//
// fresh = 1 (decode, seq 1, the step's K/V not yet in the cache): the launch also does what qkv_rope_write does,
// so a decode layer needs one launch fewer. q is the fused QKV row, rotated here as it is loaded (rotary_dim,
// log2_theta, rope_style as in rope.cl, position past); the new token's key (at k_src_off in q's buffer, rotated)
// and value (at v_src_off) are taken from there rather than from the cache, rounded to the cache's element type
// as a cache read would return them, and the work-groups of query heads h % group == 0 write them into the cache
// at position past. No work-group of the launch reads that cache position, so the write races with nothing.
kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attn_partial(global const float* q, global kv_t* k, global kv_t* v, global float* out,
                  global float2* part_ml, global float* part_o, global uint* counters, const attn_params p) {
    local float4 qs4[ATT_MAX_HD / 4];
    local float* qs = (local float*)qs4;
    // The fresh token's key and value (fresh = 1, last split only).
    local float4 kn4[ATT_MAX_HD / 4], vn4[ATT_MAX_HD / 4];
    local float* kn = (local float*)kn4;
    local float* vn = (local float*)vn4;
    // Storage for rounding to the cache's element type (half arrays need cl_khr_fp16; half pointers do not).
    local float rounding_space[ATT_MAX_HD];
    local kv_t* rounding = (local kv_t*)rounding_space;
    local uint is_last;
    local float2 ml_space[ATT_MAX_SPLITS];
    local float ps[ATT_WG];
    local float scratch[ATT_WG];
    const uint past = p.past, heads = p.heads, group = p.group, head_dim = p.head_dim;
    const uint chunk = p.chunk, splits = p.splits;
    const uint kv_off = p.kv_off, head_stride = p.head_stride, pos_stride = p.pos_stride;
    const uint lid = get_local_id(0);
    const uint s = get_group_id(0), h = get_global_id(1), t = get_global_id(2);
    const uint kvh = h / group;
    const uint n_keys = past + t + 1;
    const uint first0 = attn_first_key(past + 1, p.window);
    const uint start = max(first0 + s * chunk, attn_first_key(n_keys, p.window));
    const uint end = min(first0 + s * chunk + chunk, n_keys);
    const float softcap = p.softcap;
    // Rows of this work-group's positions: tl_kv_row(j, ring, start, start_row).
    const uint ring = p.ring, start_row = tl_kv_row_of(start, ring, p.ring_first);
    // This work-group covers the fresh position (the last one), which it takes from kn / vn.
    const bool has_fresh = p.fresh != 0 && end == n_keys;
    const uint p_new = n_keys - 1;

    attn_stage_query(q, k, v, p, h, t, has_fresh, p_new, tl_kv_row(p_new, ring, start, start_row), qs, kn, vn,
                     rounding);
    const size_t kv_head = kv_off + (size_t)kvh * head_stride;
    barrier(CLK_LOCAL_MEM_FENCE);

    float o[ATT_DPT];
#pragma unroll
    for (uint i = 0; i < ATT_DPT; ++i) o[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    // Row-vector value path: vg work-items cover one value row with 16-byte loads (8 dims each), and the
    // work-group's ATT_WG / vg groups take every (ATT_WG / vg)-th position, so a work-item has few, wide,
    // independent loads instead of one 2- or 4-byte load per position and dim. Needs head_dim = 8 * vg with vg
    // dividing ATT_WG (head_dim 64, 128, 256 at ATT_WG 64); other head sizes take the per-dim path.
    const uint vg = head_dim / 8;
    // Rows start on 8-element boundaries, so KV_LOAD8 applies (else the element-wise paths).
    const bool kv_wide = ((head_dim | kv_off | head_stride | pos_stride) & 7) == 0;
    const bool row_v = kv_wide && vg > 0 && vg <= ATT_WG && (ATT_WG % vg) == 0;
    const uint n_vgroups = row_v ? ATT_WG / vg : 1;
    const uint vgroup = row_v ? lid / vg : 0, vdim = row_v ? (lid % vg) * 8 : 0;
    float8 o8 = (float8)(0.0f);

    for (uint base = start; base < end; base += ATT_WG) {
        const uint j = base + lid;
        float score = -INFINITY;
        if (has_fresh && j == p_new) {
            float acc = 0.0f;
            if ((head_dim & 3) == 0) {
                for (uint d4 = 0; d4 < head_dim / 4; ++d4) acc += dot(qs4[d4], kn4[d4]);
            } else {
                for (uint d = 0; d < head_dim; ++d) acc = mad(qs[d], kn[d], acc);
            }
            score = acc;
        } else if (j < end) {
            const size_t kr = kv_head + (size_t)tl_kv_row(j, ring, start, start_row) * pos_stride;
            float acc = 0.0f;
            if (kv_wide) {
                // 16- or 32-byte loads of the key row instead of one element at a time.
                float8 a8 = (float8)(0.0f);
                // Unrolled so the key row's loads are in flight together rather than one latency each.
                ATT_UNROLL_KEY_ROW
                for (uint d = 0; d < head_dim; d += 8)
                    a8 = mad((float8)(qs4[d / 4], qs4[d / 4 + 1]), KV_LOAD8(k, kr + d), a8);
                acc = dot(a8.lo, (float4)(1.0f)) + dot(a8.hi, (float4)(1.0f));
            } else {
                for (uint d = 0; d < head_dim; ++d) acc = mad(qs[d], KV_LOAD(k, kr + d), acc);
            }
            score = acc;
        }
        if (j < end) score = attn_softcap(score, softcap);
        const float new_m = fmax(m, tl_wg_max(score, scratch));
        const float p = j < end ? exp(score - new_m) : 0.0f;
        ps[lid] = p;
        const float block_sum = tl_wg_sum(p, scratch);
        const float corr = exp(m - new_m);
        l = l * corr + block_sum;
        const uint n = min((uint)ATT_WG, end - base);
        // The fresh position is the last of this block: the loops below stop before it, it is added from vn.
        const bool fresh_here = has_fresh && base + n == end;
        const uint n_cached = fresh_here ? n - 1 : n;
        if (row_v) {
            o8 *= corr;
            const global kv_t* vp = v + kv_head + vdim;
#define ATT_V_ROW(jj) ((size_t)tl_kv_row(base + (jj), ring, start, start_row) * pos_stride)
            // Four rows in flight per work-item per round trip.
            const uint ng = n_vgroups;
            uint jj = vgroup;
            for (; jj + 3 * ng < n_cached; jj += 4 * ng) {
                const float8 v0 = KV_LOAD8(vp, ATT_V_ROW(jj));
                const float8 v1 = KV_LOAD8(vp, ATT_V_ROW(jj + ng));
                const float8 v2 = KV_LOAD8(vp, ATT_V_ROW(jj + 2 * ng));
                const float8 v3 = KV_LOAD8(vp, ATT_V_ROW(jj + 3 * ng));
                o8 = mad((float8)(ps[jj]), v0, o8);
                o8 = mad((float8)(ps[jj + ng]), v1, o8);
                o8 = mad((float8)(ps[jj + 2 * ng]), v2, o8);
                o8 = mad((float8)(ps[jj + 3 * ng]), v3, o8);
            }
            for (; jj < n_cached; jj += ng) o8 = mad((float8)(ps[jj]), KV_LOAD8(vp, ATT_V_ROW(jj)), o8);
            if (fresh_here && vgroup == 0)
                o8 = mad((float8)(ps[n - 1]), (float8)(vn4[vdim / 4], vn4[vdim / 4 + 1]), o8);
        } else {
#pragma unroll
            for (uint i = 0; i < ATT_DPT; ++i) {
                const uint d = lid + i * ATT_WG;
                if (d < head_dim) {
                    float acc = o[i] * corr;
                    for (uint jj = 0; jj < n_cached; ++jj)
                        acc = mad(ps[jj], KV_LOAD(v, kv_head + ATT_V_ROW(jj) + d), acc);
                    if (fresh_here) acc = mad(ps[n - 1], vn[d], acc);
                    o[i] = acc;
                }
            }
        }
        m = new_m;
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    if (row_v) {
        // Sum the value groups' partial rows through local memory (qs is free again; ATT_MAX_HD floats per
        // group would not fit, so groups add in turn).
        for (uint g = 0; g < n_vgroups; ++g) {
            if (vgroup == g) {
                local float* dst = qs + vdim;
                for (uint e = 0; e < 8; ++e) dst[e] = (g == 0 ? 0.0f : dst[e]) + ((float*)&o8)[e];
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
#pragma unroll
        for (uint i = 0; i < ATT_DPT; ++i) {
            const uint d = lid + i * ATT_WG;
            if (d < head_dim) o[i] = qs[d];
        }
    }

    attn_finish(o, m, l, (size_t)t * heads + h, s, splits, head_dim, out, part_ml, part_o, counters, &is_last,
                ml_space);
}

#ifndef ATT_ROWS
#define ATT_ROWS 8
#endif
// attn_rows takes head_dim >= 32 (at least 4 work-items per row), so a block holds at most this many positions.
#define ATT_MAX_BLOCK (ATT_WG / 4 * ATT_ROWS)
#define ATT_DOTS_LEN (ATT_ROWS * (ATT_WG + ATT_WG / 4))
#define ATT_SCRATCH_LEN (ATT_DOTS_LEN > ATT_WG * 8 ? ATT_DOTS_LEN : ATT_WG * 8)

// A cache row's 8 elements as loaded (kv_raw8: four words of halves, or eight floats) and as eight floats.
#ifdef KV_F16
typedef uint4 kv_raw8;
// A step reads each cache row once: tl_load_once_u4 (on NVIDIA a load that allocates no L1 line).
#define KV_RAW_LOAD8(p, i) tl_load_once_u4((global const uint4*)((p) + (i)))
#ifdef TLITE_HAS_FP16
#define KV_RAW_F8(r) convert_float8(as_half8(r))
#else
#define KV_RAW_F8(r) kv_half8_from_bits(r)
#endif
#else
typedef float8 kv_raw8;
#define KV_RAW_LOAD8(p, i) KV_LOAD8(p, i)
#define KV_RAW_F8(r) (r)
#endif

// attn_rows: attn_partial's job (same arguments, grid and results) for caches whose rows start on 8-element
// boundaries, with head_dim = 8 * vg, 4 <= vg and vg dividing ATT_WG. attn_partial gives each work-item a whole
// key row and loads the values only after the block's softmax: two dependent memory round trips per block, which
// is most of a short decode's time (a 192-position decode is latency-bound). Here vg work-items cover a row with
// 16-byte loads, K and V alike, ATT_WG / vg rows at a time and ATT_ROWS rows per work-item per block, and every
// K and V load of a block is issued before any is used; the first block's before the query is even read. A block
// then costs one round trip. Partial dots are summed through local memory (portable: no sub-groups needed).
// Built at ATT_WG 64 for split decode and at 256 for one work-group per (token, head) over a short context,
// which needs no merge.
kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(ATT_WG, 1, 1)))
void attn_rows(global const float* q, global kv_t* k, global kv_t* v, global float* out, global float2* part_ml,
               global float* part_o, global uint* counters, const attn_params p) {
    local float4 qs4[ATT_MAX_HD / 4];
    local float4 kn4[ATT_MAX_HD / 4], vn4[ATT_MAX_HD / 4];
    local float* qs = (local float*)qs4;
    local float* kn = (local float*)kn4;
    local float* vn = (local float*)vn4;
    local float rounding_space[ATT_MAX_HD];
    // Partial dots of a block, row r's vg values at r * (vg + 1) (padded against bank conflicts); later the
    // row groups' output rows, group g's at g * head_dim (ATT_WG * 8 floats).
    local float dots[ATT_SCRATCH_LEN];
    local float ps[ATT_MAX_BLOCK];
    local float scratch[ATT_WG];
    local uint is_last;
    local float2 ml_space[ATT_MAX_SPLITS];
    const uint past = p.past, heads = p.heads, group = p.group, head_dim = p.head_dim;
    const uint chunk = p.chunk, splits = p.splits;
    const uint kv_off = p.kv_off, head_stride = p.head_stride, pos_stride = p.pos_stride;
    const uint lid = get_local_id(0);
    const uint s = get_group_id(0), h = get_global_id(1), t = get_global_id(2);
    const uint kvh = h / group;
    const uint n_keys = past + t + 1;
    const uint first0 = attn_first_key(past + 1, p.window);
    const uint start = max(first0 + s * chunk, attn_first_key(n_keys, p.window));
    const uint end = min(first0 + s * chunk + chunk, n_keys);
    const float softcap = p.softcap;
    // Rows of this work-group's positions: tl_kv_row(j, ring, start, start_row).
    const uint ring = p.ring, start_row = tl_kv_row_of(start, ring, p.ring_first);
    const bool has_fresh = p.fresh != 0 && end == n_keys;
    const uint p_new = n_keys - 1;
    // Rows read from the cache (the fresh one comes from kn / vn).
    const uint end_cached = has_fresh ? p_new : end;
    const uint row_new = tl_kv_row(p_new, ring, start, start_row);
    const uint vg = head_dim / 8, ng = ATT_WG / vg;
    const uint g = lid / vg, lane = lid % vg, dim0 = lane * 8;
    const uint block = ng * ATT_ROWS;
    const size_t kv_head = kv_off + (size_t)kvh * head_stride;
    const global kv_t* kp = k + kv_head + dim0;
    const global kv_t* vp = v + kv_head + dim0;

    float m = -INFINITY, l = 0.0f;
    float8 o8 = (float8)(0.0f);
    for (uint base = start; base < end; base += block) {
        kv_raw8 kr[ATT_ROWS], vr[ATT_ROWS];
#pragma unroll
        for (uint i = 0; i < ATT_ROWS; ++i) {
            const uint row = base + g + i * ng;
            if (row < end_cached) {
                const size_t at = (size_t)tl_kv_row(row, ring, start, start_row) * pos_stride;
                kr[i] = KV_RAW_LOAD8(kp, at);
                vr[i] = KV_RAW_LOAD8(vp, at);
            }
        }
        if (base == start)
            attn_stage_query(q, k, v, p, h, t, has_fresh, p_new, row_new, qs, kn, vn,
                             (local kv_t*)rounding_space);
        // qs, kn, vn are written (first block) and the previous block's dots and ps are read: both fenced here.
        barrier(CLK_LOCAL_MEM_FENCE);
        const float8 q8 = (float8)(qs4[dim0 / 4], qs4[dim0 / 4 + 1]);
#pragma unroll
        for (uint i = 0; i < ATT_ROWS; ++i) {
            const uint row = base + g + i * ng;
            float8 k8 = (float8)(0.0f);
            if (row < end_cached)
                k8 = KV_RAW_F8(kr[i]);
            else if (has_fresh && row == p_new)
                k8 = (float8)(kn4[dim0 / 4], kn4[dim0 / 4 + 1]);
            const float8 p8 = q8 * k8;
            const float4 p4 = p8.lo + p8.hi;
            dots[(g + i * ng) * (vg + 1) + lane] = (p4.x + p4.y) + (p4.z + p4.w);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        const uint n = min(block, end - base);
        float local_max = -INFINITY;
        for (uint r = lid; r < n; r += ATT_WG) {
            float acc = 0.0f;
            for (uint e = 0; e < vg; ++e) acc += dots[r * (vg + 1) + e];
            acc = attn_softcap(acc, softcap);
            ps[r] = acc;
            local_max = fmax(local_max, acc);
        }
        const float new_m = fmax(m, tl_wg_max(local_max, scratch));
        float local_sum = 0.0f;
        for (uint r = lid; r < n; r += ATT_WG) {
            const float p = exp(ps[r] - new_m);
            ps[r] = p;
            local_sum += p;
        }
        // tl_wg_sum's barrier also publishes ps.
        const float block_sum = tl_wg_sum(local_sum, scratch);
        const float corr = exp(m - new_m);
        l = l * corr + block_sum;
        o8 *= corr;
#pragma unroll
        for (uint i = 0; i < ATT_ROWS; ++i) {
            const uint r = g + i * ng, row = base + r;
            if (row < end_cached)
                o8 = mad((float8)(ps[r]), KV_RAW_F8(vr[i]), o8);
            else if (has_fresh && row == p_new)
                o8 = mad((float8)(ps[r]), (float8)(vn4[dim0 / 4], vn4[dim0 / 4 + 1]), o8);
        }
        m = new_m;
    }

    // Sum the row groups' output rows.
    barrier(CLK_LOCAL_MEM_FENCE);
    local float* rows_out = dots + g * head_dim + dim0;
    for (uint e = 0; e < 8; ++e) rows_out[e] = ((float*)&o8)[e];
    barrier(CLK_LOCAL_MEM_FENCE);
    float o[ATT_DPT];
#pragma unroll
    for (uint i = 0; i < ATT_DPT; ++i) {
        const uint d = lid + i * ATT_WG;
        float acc = 0.0f;
        if (d < head_dim)
            for (uint gg = 0; gg < ng; ++gg) acc += dots[gg * head_dim + d];
        o[i] = acc;
    }
    attn_finish(o, m, l, (size_t)t * heads + h, s, splits, head_dim, out, part_ml, part_o, counters, &is_last,
                ml_space);
}

// The scalar arguments of kv_write (KvWriteParams in params.rs).
typedef struct {
    uint src_off, src_stride;
    uint dst_off, head_stride, pos_stride;
    uint head_dim, rotary_dim;
    float log2_theta;
    uint past, style;
    uint ring, ring_first;
} kv_write_params;

// Writes seq new tokens' K (rotated here when rotary_dim > 0) and V into the cache in place.
// src: element d of kv head h of token t at src_off + t * src_stride + h * head_dim + d (f32, e.g. the k or v part
// of a fused QKV output). dst: dst_off + h * head_stride + row(t) * pos_stride + d (the step's write view; row(t)
// is t, or in a ring its slot, tl_kv_row).
// Rotary as in rope.cl, token t at position past + t. Global size (head_dim, kv_heads, seq).
kernel void kv_write(global const float* src, global kv_t* dst, const kv_write_params p) {
    const uint src_off = p.src_off, src_stride = p.src_stride, dst_off = p.dst_off, head_stride = p.head_stride;
    const uint pos_stride = p.pos_stride, head_dim = p.head_dim, rotary_dim = p.rotary_dim, past = p.past;
    const uint style = p.style;
    const float log2_theta = p.log2_theta;
    const uint d = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    const size_t sh = src_off + (size_t)t * src_stride + (size_t)h * head_dim;
    float val = src[sh + d];
    if (d < rotary_dim) val = tl_rope_element(src + sh, d, rotary_dim, log2_theta, (float)(past + t), style);
    const uint row = tl_kv_row(t, p.ring, 0, p.ring_first);
    KV_STORE(val, dst, dst_off + (size_t)h * head_stride + (size_t)row * pos_stride + d);
}

// The scalar arguments of qkv_rope_write (QkvRopeWriteParams in params.rs).
typedef struct {
    uint q_off, k_off, v_off, stride;
    uint dst_off, head_stride, pos_stride;
    uint head_dim, rotary_dim;
    float log2_theta;
    uint past, style, heads, kv_heads;
    uint ring, ring_first;
} qkv_rope_write_params;

// The step's rotary and cache append in ONE launch over the fused QKV output: rows r < heads rotate q head r in
// place (work-item d < rotary_dim / 2 owns one pair, so no work-item reads what another writes); the next kv_heads
// rows write K head r - heads, rotated, into k_dst; the last kv_heads rows copy V into v_dst. Rotary and
// addressing as in rope and kv_write; token t sits at position past + t.
// Global size (head_dim, heads + 2 * kv_heads, seq).
kernel void qkv_rope_write(global float* qkv, global kv_t* k_dst, global kv_t* v_dst, const qkv_rope_write_params p) {
    const uint q_off = p.q_off, k_off = p.k_off, v_off = p.v_off, stride = p.stride, dst_off = p.dst_off;
    const uint head_stride = p.head_stride, pos_stride = p.pos_stride, head_dim = p.head_dim;
    const uint rotary_dim = p.rotary_dim, past = p.past, style = p.style, heads = p.heads, kv_heads = p.kv_heads;
    const float log2_theta = p.log2_theta;
    const uint d = get_global_id(0), r = get_global_id(1), t = get_global_id(2);
    const uint half_rd = rotary_dim / 2;
    const float pos = (float)(past + t);
    if (r < heads) {
        if (d < half_rd) {
            global float* head = qkv + q_off + (size_t)t * stride + (size_t)r * head_dim;
            tl_rope_rotate_pair(head, d, rotary_dim, style, tl_rope_cos_sin(pos, d, rotary_dim, log2_theta));
        }
        return;
    }
    const bool is_v = r >= heads + kv_heads;
    const uint h = is_v ? r - heads - kv_heads : r - heads;
    const size_t sh = (is_v ? v_off : k_off) + (size_t)t * stride + (size_t)h * head_dim;
    float val = qkv[sh + d];
    if (!is_v && d < rotary_dim) val = tl_rope_element(qkv + sh, d, rotary_dim, log2_theta, pos, style);
    const size_t di = dst_off + (size_t)h * head_stride + (size_t)tl_kv_row(t, p.ring, 0, p.ring_first) * pos_stride + d;
    if (is_v) {
        KV_STORE(val, v_dst, di);
    } else {
        KV_STORE(val, k_dst, di);
    }
}
