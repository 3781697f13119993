// Softmax, argmax and the whole sampling chain on the device, so choosing a token reads back one id.
// SAMPLE_WG is a power of two; argmax and `sample` run as one work-group over the whole row.

#ifndef SAMPLE_WG
#define SAMPLE_WG 256
#endif

// y[row] = softmax(x[row] * scale) (scale = 1 / temperature). One work-group per row; y may alias x.
kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(SAMPLE_WG, 1, 1)))
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

// Best (value, index) of x[0..n] over the work-group: the index (0xFFFFFFFF when n is 0); the value goes to
// *best_v.
inline uint tl_wg_best(global const float* x, uint n, float* best_v, local float* sv, local uint* si) {
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
            if (bi == 0xFFFFFFFFu || tl_ranks_before(v, iu, bv, bi)) {
                bv = v;
                bi = iu;
            }
        }
    }
    for (; i < n; i += SAMPLE_WG) {
        const float v = x[i];
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
    const uint i = tl_wg_best(x, n, &v, sv, si);
    if (get_local_id(0) == 0) out[0] = i;
}

// ---- The sampling chain (`sample`) ------------------------------------------------------------------------------
// One work-group walks the vocabulary a few times (the reasons are in sampling.rs): repetition penalty in place,
// then the largest logit and the softmax normaliser; top-k and top-p each find their cutoff by narrowing a band of
// logit values with SAMPLE_LADDER thresholds per pass until at most SAMPLE_CAND candidates are left in it, which
// are gathered and sorted in local memory; min-p is a plain threshold; the draw walks the kept tokens in token
// order with the host's uniform number. The penalised logits are restored before the kernel ends.
//
// Written for PoCL's compiler as much as for GPUs: every phase runs its barriers whatever the data (work is
// switched off by loop bounds and flags, never by a branch around a barrier, which PoCL compiles by duplicating
// the code after it), barrier loops are not nested, and what the work-group agrees on lives in local memory
// (`tl_state`), not in private variables across barriers, of which PoCL keeps a copy per work-item: with the
// phases' results held privately its compile time grew past ten minutes.

#define SAMPLE_CAND 2048
#define SAMPLE_CAND_LOG2 11
#define SAMPLE_LADDER 8
#define SAMPLE_MAX_PASSES 5
#define SAMPLE_NONE 0xFFFFFFFFu
// Reductions and scans: the first SAMPLE_SPANS work-items each add up one span of the values.
#define SAMPLE_SPANS (SAMPLE_WG < 32 ? SAMPLE_WG : 32)

// Local memory shared by the phases: SAMPLE_WG + SAMPLE_SPANS float4s for the reductions, or the candidates' keys
// and ids.
#if SAMPLE_WG + 32 > SAMPLE_CAND / 2
#define SAMPLE_POOL (SAMPLE_WG + 32)
#else
#define SAMPLE_POOL (SAMPLE_CAND / 2)
#endif

// What `info` says about how a draw was decided (tests and benchmarks read it; the engine reads only the id).
#define SAMPLE_DRAWN 0u
#define SAMPLE_GREEDY 1u
#define SAMPLE_BAD_LOGITS 2u
#define SAMPLE_UNRESOLVED 3u
#define SAMPLE_INFO_LEN 8

// Float bits mapped to uint so that the order of the floats is the order of the uints.
inline uint tl_order_key(float v) {
    const uint b = as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

inline float tl_order_value(uint k) {
    return as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

// Whether (ka, ia) ranks before (kb, ib) in the chain's order: larger logit first, lower token id on ties.
inline bool tl_key_before(uint ka, uint ia, uint kb, uint ib) {
    return ka > kb || (ka == kb && ia < ib);
}

// A band of logit values [lo, hi) and what lies at or above its edges: count and softmax mass (weights
// exp((l - max) / T), 1 at the top).
typedef struct {
    float lo, hi;
    float count_lo, mass_lo;  // of the logits >= lo
    float count_hi, mass_hi;  // of the logits >= hi
} tl_band;

// What the work-group agrees on. Written by work-item 0 between barriers, read by all.
typedef struct {
    float m, lo, finite, total;  // largest and smallest finite logit, how many are finite, the normaliser
    uint status, greedy, passes;
    uint active;                 // the current phase has work
    float target;                // the current phase's rank or mass
    tl_band band;                // the band being narrowed, then the one gathered
    uint counter, len, from_top; // the sorted candidates: how many, whether they start at rank 1
    uint at, eq_last;            // what tl_resolve found: the cutoff's place, the last equal to it
    float mass_at, mass_eq;      // and the prefix masses through them
    uint has_cut, cut_key, cut_id;
    float s_k;                   // top-p's and min-p's normaliser: the mass top-k keeps
    float k_count_ge, k_mass_ge; // the logits >= top-k's cutoff value
    uint k_from_top;
    float total_scan;
    uint pick;
    float4 sums[4];              // a narrowing pass's counts and masses
} tl_state;

// Element-wise sum of `v` over the work-group into *dst, in a fixed order (deterministic). Touches no memory
// unless `go` (the scratch may hold candidates that a later phase still needs), but runs its barriers either way.
inline void tl_sum4_into(uint go, float4 v, local float4* scratch, local float4* dst) {
    const uint lid = get_local_id(0);
    local float4* spans = scratch + SAMPLE_WG;
    if (go) scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (go && lid < SAMPLE_SPANS) {
        const uint per = SAMPLE_WG / SAMPLE_SPANS;
        float4 t = 0.0f;
        for (uint i = lid * per; i < (lid + 1) * per; ++i) t += scratch[i];
        spans[lid] = t;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (go && lid == 0) {
        float4 r = 0.0f;
        for (uint i = 0; i < SAMPLE_SPANS; ++i) r += spans[i];
        *dst = r;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

// Exclusive prefix sums of `v` in local-id order into scan[lid], the total into *total. Work-item t's interval is
// [scan[t], scan[t + 1]) (the last one's ends at *total): consecutive intervals tile [0, total) exactly.
inline void tl_scan(float v, local float* scan, local float* spans, local float* total) {
    const uint lid = get_local_id(0);
    const uint per = SAMPLE_WG / SAMPLE_SPANS;
    scan[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < SAMPLE_SPANS) {
        float t = 0.0f;
        for (uint i = lid * per; i < (lid + 1) * per; ++i) t += scan[i];
        spans[lid] = t;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float before = 0.0f;
    for (uint j = 0; j < lid / per; ++j) before += spans[j];
    for (uint i = (lid / per) * per; i < lid; ++i) before += scan[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    scan[lid] = before;
    if (lid == SAMPLE_WG - 1) *total = before + v;
    barrier(CLK_LOCAL_MEM_FENCE);
}

// Sum, maximum and minimum of `v` over the work-group, in a fixed order; every work-item gets the result. Three
// barriers and no loop around them (see the note at the top of this section on PoCL and barrier loops).
#define TL_SPAN_REDUCE(name, type, op)                                                   \
    inline type name(type v, local type* scratch, local type* spans) {                   \
        const uint lid = get_local_id(0);                                                \
        const uint per = SAMPLE_WG / SAMPLE_SPANS;                                       \
        scratch[lid] = v;                                                                \
        barrier(CLK_LOCAL_MEM_FENCE);                                                    \
        if (lid < SAMPLE_SPANS) {                                                        \
            type t = scratch[lid * per];                                                 \
            for (uint i = lid * per + 1; i < (lid + 1) * per; ++i) t = op(t, scratch[i]); \
            spans[lid] = t;                                                              \
        }                                                                                \
        barrier(CLK_LOCAL_MEM_FENCE);                                                    \
        type r = spans[0];                                                               \
        for (uint i = 1; i < SAMPLE_SPANS; ++i) r = op(r, spans[i]);                     \
        barrier(CLK_LOCAL_MEM_FENCE);                                                    \
        return r;                                                                        \
    }
#define TL_ADD(a, b) ((a) + (b))
TL_SPAN_REDUCE(tl_span_sum, float, TL_ADD)
TL_SPAN_REDUCE(tl_span_max, float, fmax)
TL_SPAN_REDUCE(tl_span_min_u, uint, min)

// Sorts the first `len` (a power of two, at most SAMPLE_CAND) candidates best first (bitonic network). The loop
// runs the stages of a SAMPLE_CAND network whatever `len` is, those past `len`'s doing nothing, so that its trip
// count does not depend on the data (see the note at the top of this section).
#define SAMPLE_SORT_STAGES (SAMPLE_CAND_LOG2 * (SAMPLE_CAND_LOG2 + 1) / 2)
inline void tl_sort_candidates(local uint* ck, local uint* ci, uint len) {
    const uint lid = get_local_id(0);
    uint size = 2, stride = 1;
    for (uint stage = 0; stage < SAMPLE_SORT_STAGES; ++stage) {
        const uint pairs = size <= len ? len / 2 : 0;
        for (uint t = lid; t < pairs; t += SAMPLE_WG) {
            const uint a = 2 * t - (t & (stride - 1));
            const uint b = a + stride;
            const bool best_first = (a & size) == 0;
            const uint ka = ck[a], kb = ck[b], ia = ci[a], ib = ci[b];
            if (tl_key_before(kb, ib, ka, ia) == best_first) {
                ck[a] = kb;
                ck[b] = ka;
                ci[a] = ib;
                ci[b] = ia;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (stride > 1) {
            stride >>= 1;
        } else {
            size <<= 1;
            stride = size >> 1;
        }
    }
}

// Narrows st->band to at most SAMPLE_CAND logits around the cutoff: the rank st->target (by_mass = 0) or the first
// rank whose prefix mass reaches it (by_mass = 1). Each of up to SAMPLE_MAX_PASSES passes counts and weighs the
// band's logits at SAMPLE_LADDER
// evenly spaced thresholds and keeps the sub-band where the criterion flips (the masses above it are needed either
// way: top-k's cutoff gives top-p and min-p their normaliser). Clears st->active when the band is still too full
// after SAMPLE_MAX_PASSES (many equal logits). Nothing happens unless st->active.
inline void tl_narrow(global const float* x, uint n, float temperature, uint by_mass, local tl_state* st,
                      local float4* pool) {
    const uint lid = get_local_id(0);
    for (uint pass = 0; pass < SAMPLE_MAX_PASSES; ++pass) {
        // Every pass runs its barriers; one with nothing left to narrow skips the work.
        const uint go = st->active && st->band.count_lo - st->band.count_hi > (float)SAMPLE_CAND;
        const float lo = st->band.lo, hi = st->band.hi, m = st->m;
        const float step = ((hi < INFINITY ? hi : m) - lo) / (float)(SAMPLE_LADDER + 1);
        float c[SAMPLE_LADDER], s[SAMPLE_LADDER];
        for (uint j = 0; j < SAMPLE_LADDER; ++j) {
            c[j] = 0.0f;
            s[j] = 0.0f;
        }
        const uint end = go ? n : 0;
        for (uint i = lid; i < end; i += SAMPLE_WG) {
            const float l = x[i];
            if (!(l >= lo && l < hi)) continue;
            const float w = exp((l - m) / temperature);
            for (uint j = 0; j < SAMPLE_LADDER; ++j) {
                if (l >= lo + step * (float)(j + 1)) {
                    c[j] += 1.0f;
                    s[j] += w;
                }
            }
        }
        tl_sum4_into(go, (float4)(c[0], c[1], c[2], c[3]), pool, &st->sums[0]);
        tl_sum4_into(go, (float4)(c[4], c[5], c[6], c[7]), pool, &st->sums[1]);
        tl_sum4_into(go, (float4)(s[0], s[1], s[2], s[3]), pool, &st->sums[2]);
        tl_sum4_into(go, (float4)(s[4], s[5], s[6], s[7]), pool, &st->sums[3]);
        if (lid == 0 && go) {
            ++st->passes;
            // The highest threshold where the criterion holds becomes the lower edge, the next one up the upper.
            const float4 c0 = st->sums[0], c1 = st->sums[1], s0 = st->sums[2], s1 = st->sums[3];
            const float cs[SAMPLE_LADDER] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
            const float ss[SAMPLE_LADDER] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
            tl_band b = st->band;
            int met = -1;
            for (int j = 0; j < SAMPLE_LADDER; ++j) {
                if ((by_mass ? b.mass_hi + ss[j] : b.count_hi + cs[j]) >= st->target) met = j;
            }
            tl_band nb = b;
            if (met >= 0) {
                nb.lo = lo + step * (float)(met + 1);
                nb.count_lo = b.count_hi + cs[met];
                nb.mass_lo = b.mass_hi + ss[met];
            }
            if (met + 1 < SAMPLE_LADDER) {
                nb.hi = lo + step * (float)(met + 2);
                nb.count_hi = b.count_hi + cs[met + 1];
                nb.mass_hi = b.mass_hi + ss[met + 1];
            }
            st->band = nb;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0 && st->band.count_lo - st->band.count_hi > (float)SAMPLE_CAND) st->active = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
}

// Gathers the logits of st->band (or every logit >= its lower edge when they fit, so a later cutoff can reuse the
// sort) into the candidate arrays and sorts them best first: st->len of them, st->from_top when they start at rank
// 1. Nothing happens unless st->active.
inline void tl_gather(global const float* x, uint n, local tl_state* st, local uint* ck, local uint* ci) {
    const uint lid = get_local_id(0);
    if (lid == 0) {
        st->counter = 0;
        if (st->active) {
            st->from_top = st->band.count_lo <= (float)SAMPLE_CAND;
            if (st->from_top) {
                st->band.hi = INFINITY;
                st->band.count_hi = 0.0f;
                st->band.mass_hi = 0.0f;
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const uint end = st->active ? n : 0;
    const float lo = st->band.lo, hi = st->band.hi;
    for (uint i = lid; i < end; i += SAMPLE_WG) {
        const float l = x[i];
        if (l >= lo && l < hi) {
            const uint slot = atomic_inc(&st->counter);
            if (slot < SAMPLE_CAND) {
                ck[slot] = tl_order_key(l);
                ci[slot] = i;
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == 0 && st->active) st->len = min(st->counter, (uint)SAMPLE_CAND);
    barrier(CLK_LOCAL_MEM_FENCE);
    const uint len = st->active ? st->len : 0;
    uint len2 = len > 0 ? 2 : 0;
    while (len2 < len) len2 <<= 1;
    for (uint r = len + lid; r < len2; r += SAMPLE_WG) {
        ck[r] = 0;  // below every finite logit's key
        ci[r] = SAMPLE_NONE;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    tl_sort_candidates(ck, ci, len2);
}

// The cutoff among the st->len sorted candidates, which follow st->band.count_hi better ranks of mass
// st->band.mass_hi: the rank st->target (by_mass = 0) or the first whose prefix mass reaches it (the last candidate
// if none does). Sets st->at, st->mass_at (the prefix mass through the cutoff) and st->eq_last, st->mass_eq (the
// last candidate equal to it).
inline void tl_resolve(float temperature, uint by_mass, local tl_state* st, local uint* ck, local float* scan,
                       local float* spans) {
    const uint lid = get_local_id(0);
    const uint len = st->len;
    const float m = st->m;
    const uint per = (len + SAMPLE_WG - 1) / SAMPLE_WG;
    const uint r0 = min(lid * per, len), r1 = min(r0 + per, len);
    float part = 0.0f;
    for (uint r = r0; r < r1; ++r) part += exp((tl_order_value(ck[r]) - m) / temperature);
    tl_scan(part, scan, spans, &st->total_scan);
    if (lid == 0) {
        const float rank = st->target - st->band.count_hi;
        const uint last = len > 0 ? len - 1 : 0;
        st->at = by_mass ? last : (rank >= 1.0f ? min((uint)rank - 1, last) : 0);
        st->eq_last = 0;
        st->mass_at = 0.0f;
        st->mass_eq = 0.0f;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (by_mass) {
        float run = st->band.mass_hi + scan[lid];
        for (uint r = r0; r < r1; ++r) {
            run += exp((tl_order_value(ck[r]) - m) / temperature);
            if (run >= st->target) {
                atomic_min(&st->at, r);
                break;
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const uint at = st->at;
    const uint key = len > 0 ? ck[at] : 0;
    float run = st->band.mass_hi + scan[lid];
    for (uint r = r0; r < r1; ++r) {
        run += exp((tl_order_value(ck[r]) - m) / temperature);
        if (r == at) st->mass_at = run;
        if (ck[r] == key && (r + 1 == len || ck[r + 1] != key)) {
            st->eq_last = r;
            st->mass_eq = run;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

// Top-k's cutoff, and the normaliser of what it keeps (st->s_k).
inline void tl_top_k(global const float* x, uint n, float temperature, uint top_k, local tl_state* st,
                     local float4* pool, local uint* ck, local uint* ci, local float* scan, local float* spans) {
    const uint lid = get_local_id(0);
    if (lid == 0) {
        st->active = st->status == SAMPLE_DRAWN && top_k > 0 && (float)top_k < st->finite;
        st->target = (float)top_k;
        const tl_band all = {st->lo, INFINITY, st->finite, st->total, 0.0f, 0.0f};
        st->band = all;
        st->len = 0;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const uint on = st->active;
    tl_narrow(x, n, temperature, 0, st, pool);
    tl_gather(x, n, st, ck, ci);
    tl_resolve(temperature, 0, st, ck, scan, spans);
    if (lid == 0) {
        if (st->len > 0) {
            st->has_cut = 1;
            st->cut_key = ck[st->at];
            st->cut_id = ci[st->at];
            st->s_k = st->mass_at;
            st->k_count_ge = st->band.count_hi + (float)(st->eq_last + 1);
            st->k_mass_ge = st->mass_eq;
            st->k_from_top = st->from_top;
        } else if (on) {
            st->status = SAMPLE_UNRESOLVED;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

// Top-p's cutoff within what top-k kept: from the candidates top-k sorted when they start at the top, otherwise
// narrowed and gathered afresh. The earlier of the two cutoffs stands.
inline void tl_top_p(global const float* x, uint n, float temperature, float top_p, local tl_state* st,
                     local float4* pool, local uint* ck, local uint* ci, local float* scan, local float* spans) {
    const uint lid = get_local_id(0);
    if (lid == 0) {
        const uint on = st->status == SAMPLE_DRAWN;
        const uint reuse = on && st->has_cut && st->k_from_top;
        st->target = top_p * st->s_k;
        st->active = on && !reuse;
        if (st->active) {
            const tl_band all = {st->lo, INFINITY, st->finite, st->total, 0.0f, 0.0f};
            st->band = all;
            if (st->has_cut) {
                st->band.lo = tl_order_value(st->cut_key);
                st->band.count_lo = st->k_count_ge;
                st->band.mass_lo = st->k_mass_ge;
            }
        }
        if (!reuse) st->len = 0;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const uint on = st->status == SAMPLE_DRAWN;
    tl_narrow(x, n, temperature, 1, st, pool);
    tl_gather(x, n, st, ck, ci);
    tl_resolve(temperature, 1, st, ck, scan, spans);
    if (lid == 0 && on) {
        if (st->len == 0) {
            st->status = SAMPLE_UNRESOLVED;
        } else if (!st->has_cut || tl_key_before(ck[st->at], ci[st->at], st->cut_key, st->cut_id)) {
            st->has_cut = 1;
            st->cut_key = ck[st->at];
            st->cut_id = ci[st->at];
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

// Whether token i with logit l (weight w) is kept: finite, not past the cutoff (when there is one), and above
// min-p's floor (min_w, a fraction of the normaliser s_k).
inline bool tl_kept(float l, uint i, float w, uint has_cut, uint cut_key, uint cut_id, float s_k, float min_p,
                    float min_w) {
    if (!(l > -INFINITY)) return false;
    const uint key = tl_order_key(l);
    if (has_cut && !(key > cut_key || (key == cut_key && i <= cut_id))) return false;
    return !(min_p > 0.0f) || w / s_k >= min_w;
}

// Chooses one token from x[0..n] the way the host sampler does (engine/src/sampling.rs): repetition penalty on the
// tokens pen_ids[0..n_pen) (distinct), then temperature (0: arg-max), top-k (0: off), top-p (1: off), min-p (0: off),
// and a draw at `uniform` (in [0, 1)) through the kept tokens in token order. out[0] gets the token, or SAMPLE_NONE
// when the device cannot decide (a NaN, an infinity or no finite logit; or too many equal logits at a cutoff): the
// caller then samples on the host. x is restored before the kernel ends; pen_saved holds n_pen floats of scratch.
// info gets SAMPLE_INFO_LEN words on how the draw went. One work-group. `use_k` and `use_p` are constants of each
// kernel below: the top-k and top-p phases are compiled in or left out, never skipped by a branch at run time
// (PoCL 3.1 miscompiled barriers under such a branch, even one on a kernel argument).
inline void tl_sample(global float* x, uint n, global const uint* pen_ids, global float* pen_saved, uint n_pen,
                      float penalty, float temperature, uint top_k, float top_p, float min_p, float uniform,
                      global uint* out, global uint* info, const uint use_k, const uint use_p, local float4* pool,
                      local float* scan, local float* spans, local tl_state* st) {
    local float* red = (local float*)pool;
    local uint* ck = (local uint*)pool;
    local uint* ci = ck + SAMPLE_CAND;
    const uint lid = get_local_id(0);

    for (uint j = lid; j < n_pen; j += SAMPLE_WG) {
        const uint t = pen_ids[j];
        if (t < n) {
            const float v = x[t];
            pen_saved[j] = v;
            x[t] = v > 0.0f ? v / penalty : v * penalty;
        }
    }
    barrier(CLK_GLOBAL_MEM_FENCE);

    // The largest and smallest finite logits, how many are finite, NaNs, and the softmax normaliser (a running
    // sum per work-item, rescaled when its maximum grows).
    const uint sampled = temperature > 0.0f;
    {
        float m = -INFINITY, lo = INFINITY, s = 0.0f, finite = 0.0f, has_nan = 0.0f;
        for (uint i = lid; i < n; i += SAMPLE_WG) {
            const float l = x[i];
            if (isnan(l)) {
                has_nan = 1.0f;
            } else if (l > -INFINITY) {
                finite += 1.0f;
                lo = fmin(lo, l);
                if (l > m) {
                    if (sampled) s = s * exp((m - l) / temperature) + 1.0f;
                    m = l;
                } else if (sampled) {
                    s += exp((l - m) / temperature);
                }
            }
        }
        const float mx = tl_span_max(m, red, spans);
        const float s_all =
            tl_span_sum(m > -INFINITY && sampled ? s * exp((m - mx) / temperature) : 0.0f, red, spans);
        const float lo_all = -tl_span_max(-lo, red, spans);
        const float finite_all = tl_span_sum(finite, red, spans);
        const float nan_any = tl_span_max(has_nan, red, spans);
        if (lid == 0) {
            st->m = mx;
            st->lo = lo_all;
            st->finite = finite_all;
            st->total = s_all;
            const uint ok = nan_any == 0.0f && mx > -INFINITY && mx < INFINITY;
            st->status = ok ? (sampled ? SAMPLE_DRAWN : SAMPLE_GREEDY) : SAMPLE_BAD_LOGITS;
            st->passes = 0;
            st->has_cut = 0;
            st->cut_key = 0;
            st->cut_id = 0;
            st->s_k = s_all;
            st->len = 0;
            st->from_top = 0;
            st->k_from_top = 0;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    // Greedy on the penalised logits: the lowest index holding the maximum.
    {
        uint first = SAMPLE_NONE;
        const uint end = st->status == SAMPLE_GREEDY ? n : 0;
        const float m = st->m;
        for (uint i = lid; i < end; i += SAMPLE_WG) {
            if (x[i] == m) {
                first = i;
                break;
            }
        }
        const uint g = tl_span_min_u(first, (local uint*)pool, (local uint*)spans);
        if (lid == 0) st->greedy = g;
    }

    // The cutoffs.
    if (use_k) tl_top_k(x, n, temperature, top_k, st, pool, ck, ci, scan, spans);
    if (use_p) tl_top_p(x, n, temperature, top_p, st, pool, ck, ci, scan, spans);

    // The draw: each work-item weighs a contiguous run of tokens, the prefix sums over work-items place `uniform`
    // in one run, and that work-item walks it.
    const uint chunk = (n + SAMPLE_WG - 1) / SAMPLE_WG;
    const uint i0 = st->status == SAMPLE_DRAWN ? min(lid * chunk, n) : 0;
    const uint i1 = st->status == SAMPLE_DRAWN ? min(i0 + chunk, n) : 0;
    // The cut, in private copies for the loops.
    const float m = st->m, s_k = st->s_k, min_w = (1.0f / s_k) * min_p;
    const uint has_cut = st->has_cut, cut_key = st->cut_key, cut_id = st->cut_id;
    float part = 0.0f, mine = 0.0f, last = -1.0f;
    for (uint i = i0; i < i1; ++i) {
        const float l = x[i];
        const float w = exp((l - m) / temperature);
        if (!tl_kept(l, i, w, has_cut, cut_key, cut_id, s_k, min_p, min_w)) continue;
        part += w;
        mine += 1.0f;
        if (w > 0.0f) last = (float)i;
    }
    const float kept = tl_span_sum(mine, red, spans);
    // When rounding puts the target past the last kept token, it belongs to the last one with weight.
    const float last_all = tl_span_max(last, red, spans);
    tl_scan(part, scan, spans, &st->total_scan);
    if (lid == 0) st->pick = last_all >= 0.0f ? (uint)last_all : SAMPLE_NONE;
    barrier(CLK_LOCAL_MEM_FENCE);
    const float sum = st->total_scan;
    const float at = uniform * sum;
    const float before = scan[lid];
    const float through = lid + 1 < SAMPLE_WG ? scan[lid + 1] : sum;
    if (i0 < i1 && before <= at && at < through) {
        float run = before;
        uint pick = last >= 0.0f ? (uint)last : SAMPLE_NONE;
        for (uint i = i0; i < i1; ++i) {
            const float l = x[i];
            const float w = exp((l - m) / temperature);
            if (!tl_kept(l, i, w, has_cut, cut_key, cut_id, s_k, min_p, min_w)) continue;
            run += w;
            if (at < run) {
                pick = i;
                break;
            }
        }
        st->pick = pick;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    for (uint j = lid; j < n_pen; j += SAMPLE_WG) {
        const uint t = pen_ids[j];
        if (t < n) x[t] = pen_saved[j];
    }
    if (lid == 0) {
        out[0] = st->status == SAMPLE_GREEDY ? st->greedy : st->status == SAMPLE_DRAWN ? st->pick : SAMPLE_NONE;
        info[0] = st->status;
        info[1] = st->passes;
        info[2] = st->has_cut;
        info[3] = st->cut_key;
        info[4] = st->cut_id;
        info[5] = (uint)kept;
        info[6] = as_uint(sum);
        info[7] = as_uint(st->s_k);
    }
}

// The local memory a draw kernel takes as its last argument, in float4s: the pool, the state, the scan and the
// spans. It is an argument, not arrays declared in the kernels, because a compiler may lay program-scope local
// arrays of several kernels out together: Oclgrind charged the first of these kernels with all four kernels' arrays.
#define SAMPLE_STATE_F4 32
#define SAMPLE_LOCAL_F4 (SAMPLE_POOL + SAMPLE_STATE_F4 + SAMPLE_WG / 4 + (SAMPLE_SPANS + 3) / 4)
typedef char tl_state_fits[sizeof(tl_state) <= 16 * SAMPLE_STATE_F4 ? 1 : -1];

#define TL_SAMPLE_KERNEL(name, use_k, use_p)                                                                       \
    kernel __attribute__((reqd_work_group_size(SAMPLE_WG, 1, 1))) void name(                                     \
        global float* x, uint n, global const uint* pen_ids, global float* pen_saved, uint n_pen, float penalty, \
        float temperature, uint top_k, float top_p, float min_p, float uniform, global uint* out,                \
        global uint* info, local float4* mem) {                                                                  \
        local float4* state = mem + SAMPLE_POOL;                                                                 \
        local float* scan = (local float*)(state + SAMPLE_STATE_F4);                                             \
        tl_sample(x, n, pen_ids, pen_saved, n_pen, penalty, temperature, top_k, top_p, min_p, uniform, out,      \
                  info, use_k, use_p, mem, scan, scan + SAMPLE_WG, (local tl_state*)state);                      \
    }
TL_SAMPLE_KERNEL(sample, 0, 0)
TL_SAMPLE_KERNEL(sample_top_k, 1, 0)
TL_SAMPLE_KERNEL(sample_top_p, 0, 1)
TL_SAMPLE_KERNEL(sample_top_k_p, 1, 1)
