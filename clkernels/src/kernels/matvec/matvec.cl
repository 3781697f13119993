// Decode matrix-vector products: y = W·x (+ r) on M0E4 weights with the dequantisation fused into the dot
// product, the SwiGLU gate+up pair in one launch, and an f16-weight variant for output heads.
//
// Work split: one work-group of MV_WG work-items owns MV_ROWS consecutive rows. Work-item t walks the 16-byte code
// chunks t, t + MV_WG, ... of every one of its rows, so neighbouring work-items load neighbouring 16 bytes of the
// same row (coalesced), and the 32 activations of a chunk are loaded once into registers and reused for all
// MV_ROWS rows. One chunk is 32 codes; with G = 32 << cpg_shift a chunk never straddles a group, so each chunk
// needs one scale and one offset: sum(w·x) = s·sum(h·x) + b·sum(x).
//
// Reductions across the work-group go through the vendor files' sub-group interface (TL_SG_*: khr/intel
// built-ins, Adreno shuffles, NVIDIA warp shuffles) where there is one, a local-memory tree otherwise (PoCL). MV_WG
// must be a power of two (and a multiple of 32 for NVIDIA's warps). Weights are read through tl_code_chunk and
// tl_weight_half: tl_load_once_* from buffers (on NVIDIA, loads that leave the L1 to the activations; plain loads
// elsewhere), or read_image* from image1d_buffer_t in the Adreno image build (TL_WEIGHTS_IMAGE, vendor/adreno.cl).

#ifndef MV_WG
#define MV_WG 128
#endif

#ifndef MV_ROWS
#define MV_ROWS 4
#endif

#if defined(MV_NVH2) && defined(TL_HAVE_M0E4_H2)
// NVIDIA's packed-f16 recipe (vendor/nvidia.cl) instead of the f32 one.
#define MV_H2_PATH 1
#endif

// MV_UNROLL > 1 lets the compiler keep the code loads of several chunks in flight per work-item. PoCL cannot
// apply it (its work-group transformation runs first) and warns "loop not unrolled", so it is not asked there.
#define MV_STR(x) #x
#define MV_PRAGMA(x) _Pragma(MV_STR(x))
#if defined(MV_UNROLL) && MV_UNROLL > 1 && !defined(TLITE_VENDOR_POCL)
#define MV_UNROLL_PRAGMA MV_PRAGMA(unroll MV_UNROLL)
#else
#define MV_UNROLL_PRAGMA
#endif

// Diagnostic hooks: diag.cl, which only benchmark builds include, defines them to record a per-work-group timeline
// (MV_DIAG_TIMES) in the state `mv_diag`; here they compile to nothing.
#ifndef MV_DIAG_HOOKS
typedef struct {
    uint unused;
} mv_diag;
#define MV_DIAG_START(d) ((void)0)
#define MV_DIAG_STAGED(d) ((void)0)
#define MV_DIAG_DOTS(d) ((void)0)
#define MV_DIAG_END(d, y, rows) ((void)0)
#endif

#ifdef MV_XLOCAL
#define MV_XL_DECL local float4 xl[MV_XLOCAL * 9];
#define MV_XL_ARG xl
#else
#define MV_XL_DECL
#define MV_XL_ARG ((local float4*)0)
#endif

// 1 / sqrt(mean(x^2) + eps) over the chunks * 32 activations, computed by every work-group (x is at most a few
// tens of KiB and stays in cache), so the RMSNorm before a decode mat-vec needs no launch of its own.
// `red` holds at least MV_WG floats; it is free again on return.
inline float mv_rms_scale(global const float4* x4, uint chunks, float eps, local float* red) {
    float ss = 0.0f;
    for (uint i = get_local_id(0); i < chunks * 8; i += MV_WG) {
        const float4 v = x4[i];
        ss += dot(v, v);
    }
    return rsqrt(tl_wg_sum(ss, red) / (float)(chunks * 32) + eps);
}

// One row's share of a chunk: the dot of the 32 codes q (scale s, offset b) with the chunk's activations, in
// whichever form the path above prepared them (x0..x8 / xa..xd / h0..h3, and xsum = their sum).
#if defined(TLITE_HAS_FP16) && defined(TLITE_MV_HALF_MATH)
#define MV_ROW_TERM(q, s, b)                                                                                       \
    ((s) * (tl_m0e4_dot8_half((q).x, xa) + tl_m0e4_dot8_half((q).y, xb) + tl_m0e4_dot8_half((q).z, xc8) +        \
            tl_m0e4_dot8_half((q).w, xd)) +                                                                        \
     (b) * xsum)
#elif defined(MV_H2_PATH)
// The f16x2 accumulator sums q·x/256 and sum(h·x) = sum(x) + sum(q·x)/16, so the scale's share is 16·s·sum.
#define MV_ROW_TERM(q, s, b) ((16.0f * (s)) * tl_m0e4_dot32_h2((q), h0, h1, h2, h3) + ((s) + (b)) * xsum)
#else
#define MV_ROW_TERM(q, s, b)                                                                                       \
    ((s) * (tl_m0e4_dot8((q).x, x0, x1) + tl_m0e4_dot8((q).y, x2, x3) + tl_m0e4_dot8((q).z, x5, x6) +           \
            tl_m0e4_dot8((q).w, x7, x8)) +                                                                         \
     (b) * xsum)
#endif

// acc[r] += chunk c of row min(row0 + r, rows - 1) of one matrix, for r < MV_ROWS.
#define MV_ROWS_ACC(acc, codes, scales, offsets)                                                                    \
    _Pragma("unroll") for (uint r = 0; r < MV_ROWS; ++r) {                                                          \
        const uint row = min(row0 + r, rows - 1);                                                                   \
        const uint4 q = tl_code_chunk((codes), (size_t)row * chunks + c);                                           \
        const size_t gi = (size_t)row * groups + g;                                                                 \
        (acc)[r] += MV_ROW_TERM(q, tl_weight_half((scales), gi), tl_weight_half((offsets), gi));                    \
    }

// Partial dots of this work-item for rows row0 .. row0 + MV_ROWS - 1 (rows past the end are clamped; their
// results are never stored), added to acc. (Walking the gate and up matrices in one pass, both rows' loads in
// flight together, measured slower on the H100 than one after the other.)
// With MV_XLOCAL (a tile size in chunks), x is staged through local memory `xl` (MV_XLOCAL * 9 float4: each
// chunk's 8 float4 padded to 9 so 8 neighbouring work-items hit distinct banks), read from global memory once per
// work-group with coalesced loads.
// With `normed`, x is RMS-normalised on the way in: each activation is multiplied by inv_rms * (nw + w_off), so
// the norm costs no launch of its own. Every work-group computes inv_rms itself; when x fits one tile, its sum of
// squares is taken while staging (x is read from global memory once) and inv_rms is applied as x leaves local
// memory, otherwise mv_rms_scale reads x once more up front.
inline void mv_m0e4_partial(TL_CODES codes, TL_HALVES scales, TL_HALVES offsets,
                            global const float4* x4, uint rows, uint chunks, uint cpg_shift, uint row0, float* acc,
                            local float4* xl, const bool normed,
                            global const float4* nw4, float eps, float w_off, local float* red,
                            const bool x_staged, float* norm_scale, mv_diag* diag) {
    const uint groups = chunks >> cpg_shift;
    const uint lid = get_local_id(0);
    // `x_staged`: an earlier call of this launch with the same x (the gate+up launch's gate matrix) left the norm's
    // scale in *norm_scale and, when x fits one tile, x itself in xl; this call reuses both.
#ifdef MV_XLOCAL
    const bool one_tile = chunks <= MV_XLOCAL;
    const bool norm_in_tile = normed && one_tile;
    // Over several tiles the scale is needed before staging: mv_rms_scale reads x up front.
    float inv_rms = 1.0f;
    if (normed && !one_tile) {
        inv_rms = x_staged ? *norm_scale : mv_rms_scale(x4, chunks, eps, red);
        *norm_scale = inv_rms;
    }
    // In one tile the scale comes from the sum of squares taken while staging, applied as x leaves local memory.
    float x_scale = norm_in_tile ? *norm_scale : 1.0f;
    for (uint t0 = 0; t0 < chunks; t0 += MV_XLOCAL) {
        const uint tn = min((uint)MV_XLOCAL, chunks - t0);
        if (!(x_staged && one_tile)) {
            float ss = 0.0f;
            barrier(CLK_LOCAL_MEM_FENCE);
            for (uint i = lid; i < tn * 8; i += MV_WG) {
                float4 v = x4[t0 * 8 + i];
                if (normed) {
                    ss += dot(v, v);
                    v = v * inv_rms * (nw4[t0 * 8 + i] + w_off);
                }
                xl[(i >> 3) * 9 + (i & 7)] = v;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            if (t0 == 0) MV_DIAG_STAGED(diag);
            if (norm_in_tile) {
                x_scale = rsqrt(tl_wg_sum(ss, red) / (float)(chunks * 32) + eps);
                *norm_scale = x_scale;
            }
        }
        MV_UNROLL_PRAGMA
        for (uint c = t0 + lid; c < t0 + tn; c += MV_WG) {
            local const float4* xc = xl + (c - t0) * 9;
            float4 x0 = xc[0], x1 = xc[1], x2 = xc[2], x3 = xc[3];
            float4 x5 = xc[4], x6 = xc[5], x7 = xc[6], x8 = xc[7];
            if (norm_in_tile) {
                x0 *= x_scale; x1 *= x_scale; x2 *= x_scale; x3 *= x_scale;
                x5 *= x_scale; x6 *= x_scale; x7 *= x_scale; x8 *= x_scale;
            }
#else
    {
        float inv_rms = 1.0f;
        if (normed) {
            inv_rms = x_staged ? *norm_scale : mv_rms_scale(x4, chunks, eps, red);
            *norm_scale = inv_rms;
        }
        MV_UNROLL_PRAGMA
        for (uint c = lid; c < chunks; c += MV_WG) {
            float4 x0 = x4[c * 8 + 0], x1 = x4[c * 8 + 1], x2 = x4[c * 8 + 2], x3 = x4[c * 8 + 3];
            float4 x5 = x4[c * 8 + 4], x6 = x4[c * 8 + 5], x7 = x4[c * 8 + 6], x8 = x4[c * 8 + 7];
            if (normed) {
                global const float4* n = nw4 + c * 8;
                x0 = x0 * inv_rms * (n[0] + w_off); x1 = x1 * inv_rms * (n[1] + w_off);
                x2 = x2 * inv_rms * (n[2] + w_off); x3 = x3 * inv_rms * (n[3] + w_off);
                x5 = x5 * inv_rms * (n[4] + w_off); x6 = x6 * inv_rms * (n[5] + w_off);
                x7 = x7 * inv_rms * (n[6] + w_off); x8 = x8 * inv_rms * (n[7] + w_off);
            }
#endif
            const float xsum = dot((x0 + x1) + (x2 + x3) + (x5 + x6) + (x7 + x8), (float4)(1.0f));
#if defined(TLITE_HAS_FP16) && defined(TLITE_MV_HALF_MATH)
            const half8 xa = (half8)(convert_half4(x0), convert_half4(x1));
            const half8 xb = (half8)(convert_half4(x2), convert_half4(x3));
            const half8 xc8 = (half8)(convert_half4(x5), convert_half4(x6));
            const half8 xd = (half8)(convert_half4(x7), convert_half4(x8));
#elif defined(MV_H2_PATH)
            const uint4 h0 = tl_m0e4_x_h2(x0, x1), h1 = tl_m0e4_x_h2(x2, x3);
            const uint4 h2 = tl_m0e4_x_h2(x5, x6), h3 = tl_m0e4_x_h2(x7, x8);
#endif
            const uint g = c >> cpg_shift;
            MV_ROWS_ACC(acc, codes, scales, offsets)
        }
    }
}

// Sums acc[r] over the work-group into red[r * MV_WG]; afterwards work-item r < MV_ROWS reads its row's total.
inline float mv_reduce(float* acc, local float* red) {
    const uint lid = get_local_id(0);
#ifdef TL_SG_SUM
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) {
        const float s = TL_SG_SUM(acc[r]);
        if (TL_SG_LID() == 0) red[r * MV_WG + TL_SG_ID()] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float total = 0.0f;
    if (lid < MV_ROWS) {
        const uint n = TL_NUM_SG();
        for (uint i = 0; i < n; ++i) total += red[lid * MV_WG + i];
    }
    return total;
#else
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) red[r * MV_WG + lid] = acc[r];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = MV_WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
#pragma unroll
            for (uint r = 0; r < MV_ROWS; ++r) red[r * MV_WG + lid] += red[r * MV_WG + lid + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return lid < MV_ROWS ? red[lid * MV_WG] : 0.0f;
#endif
}

// Work-item r < MV_ROWS writes its row's total: y[row0 + r] = total (+ residual[row] when res_mode is 1, + the old
// y[row] when it is 2).
inline void mv_store(float total, global float* y, global const float* residual, uint rows, uint row0,
                     uint res_mode) {
    const uint lid = get_local_id(0);
    const uint row = row0 + lid;
    if (lid < MV_ROWS && row < rows) {
        float v = total;
        if (res_mode == 1) v += residual[row];
        else if (res_mode == 2) v += y[row];
        y[row] = v;
    }
}

// y[row] = W[row]·x, plus residual[row] when res_mode is 1, plus the old y[row] when res_mode is 2.
// codes: [rows][chunks] uint4; scales/offsets: [rows][chunks >> cpg_shift] f16; x: [chunks * 32] f32.
// With `normed`, x is replaced by rmsnorm(x) * (nw + w_off) (see mv_m0e4_partial).
inline void mv_m0e4_body(TL_CODES codes, TL_HALVES scales, TL_HALVES offsets,
                         global const float4* x, global float* y, global const float* residual, uint rows,
                         uint chunks, uint cpg_shift, uint res_mode, const bool normed, global const float4* nw,
                         float eps, float w_off, local float* red, local float4* xl) {
    const uint row0 = get_group_id(0) * MV_ROWS;
    mv_diag diag = {0};
    MV_DIAG_START(&diag);
    float acc[MV_ROWS];
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    float norm_scale = 1.0f;
    mv_m0e4_partial(codes, scales, offsets, x, rows, chunks, cpg_shift, row0, acc, xl, normed, nw, eps, w_off, red,
                    false, &norm_scale, &diag);
    MV_DIAG_DOTS(&diag);
    mv_store(mv_reduce(acc, red), y, residual, rows, row0, res_mode);
    MV_DIAG_END(&diag, y, rows);
}

kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4(TL_CODES codes, TL_HALVES scales, TL_HALVES offsets,
                 global const float4* x, global float* y, global const float* residual, const mv_params p) {
    local float red[MV_ROWS * MV_WG];
    MV_XL_DECL
    mv_m0e4_body(codes, scales, offsets, x, y, residual, p.rows, p.chunks, p.cpg_shift, p.res_mode, false, x, 0.0f,
                 0.0f, red, MV_XL_ARG);
}

// y = W·(rmsnorm(x) * (nw + w_off)) (+ residual per res_mode): the decode step's norm fused into the mat-vec that
// follows it (QKV; Qwen's QKV bias comes in as the residual).
kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4_normed(TL_CODES codes, TL_HALVES scales, TL_HALVES offsets,
                        global const float4* x, global const float4* nw, global float* y,
                        global const float* residual, const mv_params p) {
    local float red[MV_ROWS * MV_WG];
    MV_XL_DECL
    mv_m0e4_body(codes, scales, offsets, x, y, residual, p.rows, p.chunks, p.cpg_shift, p.res_mode, true, nw, p.eps,
                 p.w_off, red, MV_XL_ARG);
}

// out[row] = act(Wg[row]·x) * (Wu[row]·x): the gated feed-forward's gate and up projections in one launch
// (act 0: SiLU, 1: GELU-tanh). With `normed`, x is rmsnorm(x) * (nw + w_off) as in mv_m0e4_body.
inline void mv_gate_up_body(TL_CODES g_codes, TL_HALVES g_scales, TL_HALVES g_offsets,
                            TL_CODES u_codes, TL_HALVES u_scales, TL_HALVES u_offsets,
                            global const float4* x, global float* out, uint rows, uint chunks, uint cpg_shift,
                            uint act, const bool normed, global const float4* nw, float eps, float w_off,
                            local float* red, local float4* xl) {
    const uint row0 = get_group_id(0) * MV_ROWS;
    float acc[MV_ROWS];
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    float norm_scale = 1.0f;
    mv_diag diag = {0};
    mv_m0e4_partial(g_codes, g_scales, g_offsets, x, rows, chunks, cpg_shift, row0, acc, xl, normed, nw, eps, w_off,
                    red, false, &norm_scale, &diag);
    const float gate = mv_reduce(acc, red);
    barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    mv_m0e4_partial(u_codes, u_scales, u_offsets, x, rows, chunks, cpg_shift, row0, acc, xl, normed, nw, eps, w_off,
                    red, true, &norm_scale, &diag);
    const float up = mv_reduce(acc, red);
    const uint lid = get_local_id(0);
    const uint row = row0 + lid;
    if (lid < MV_ROWS && row < rows) out[row] = tl_gate_act(gate, act) * up;
}

kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4_gate_up(TL_CODES g_codes, TL_HALVES g_scales, TL_HALVES g_offsets,
                         TL_CODES u_codes, TL_HALVES u_scales, TL_HALVES u_offsets,
                         global const float4* x, global float* out, const mv_params p) {
    local float red[MV_ROWS * MV_WG];
    MV_XL_DECL
    mv_gate_up_body(g_codes, g_scales, g_offsets, u_codes, u_scales, u_offsets, x, out, p.rows, p.chunks,
                    p.cpg_shift, p.act, false, x, 0.0f, 0.0f, red, MV_XL_ARG);
}

// The gate+up launch with the feed-forward's RMSNorm fused in front of it.
kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4_gate_up_normed(TL_CODES g_codes, TL_HALVES g_scales,
                                TL_HALVES g_offsets, TL_CODES u_codes,
                                TL_HALVES u_scales, TL_HALVES u_offsets, global const float4* x,
                                global const float4* nw, global float* out, const mv_params p) {
    local float red[MV_ROWS * MV_WG];
    MV_XL_DECL
    mv_gate_up_body(g_codes, g_scales, g_offsets, u_codes, u_scales, u_offsets, x, out, p.rows, p.chunks,
                    p.cpg_shift, p.act, true, nw, p.eps, p.w_off, red, MV_XL_ARG);
}

// y[row] = W[row]·x (+ residual) for f16 weights [rows][cols], cols a multiple of 8: each load is 16 bytes.
kernel TL_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_f16(TL_F16_WEIGHTS w, global const float4* x, global float* y, global const float* residual,
                const mv_f16_params p) {
    local float red[MV_ROWS * MV_WG];
    const uint rows = p.rows, cols = p.cols, res_mode = p.res_mode;
    const uint row0 = get_group_id(0) * MV_ROWS;
    const uint chunks = cols / 8;
    float acc[MV_ROWS];
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    for (uint c = get_local_id(0); c < chunks; c += MV_WG) {
        const float4 xa = x[c * 2], xb = x[c * 2 + 1];
#pragma unroll
        for (uint r = 0; r < MV_ROWS; ++r) {
            const uint row = min(row0 + r, rows - 1);
            const float8 wv = tl_half8_chunk(w, (size_t)row * chunks + c);
            acc[r] += dot(wv.lo, xa) + dot(wv.hi, xb);
        }
    }
    mv_store(mv_reduce(acc, red), y, residual, rows, row0, res_mode);
}
