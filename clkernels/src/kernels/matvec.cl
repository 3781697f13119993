// Decode matrix-vector products: y = W·x (+ r) on M0E4 weights with the dequantisation fused into the dot
// product, the SwiGLU gate+up pair in one launch, and an f16-weight variant for output heads.
//
// Work split: one work-group of MV_WG work-items owns MV_ROWS consecutive rows. Work-item t walks the 16-byte code
// chunks t, t + MV_WG, ... of every one of its rows, so neighbouring work-items load neighbouring 16 bytes of the
// same row (coalesced), and the 32 activations of a chunk are loaded once into registers and reused for all
// MV_ROWS rows. One chunk is 32 codes; with G = 32 << cpg_shift a chunk never straddles a group, so each chunk
// needs one scale and one offset: sum(w·x) = s·sum(h·x) + b·sum(x).
//
// Reductions across the work-group: sub-group built-ins where the device has them (TL_SG_MODE 1), Adreno
// shuffles (mode 2), NVIDIA warp shuffles in inline PTX (mode 3), a local-memory tree otherwise (PoCL). MV_WG must
// be a power of two (and a multiple of 32 in mode 3).

#ifndef MV_WG
#define MV_WG 128
#endif
#ifndef MV_ROWS
#define MV_ROWS 4
#endif

// Partial dots of this work-item for rows row0 .. row0 + MV_ROWS - 1 (rows past the end are clamped; their
// results are never stored).
inline void mv_m0e4_partial(global const uint4* codes, global const half* scales, global const half* offsets,
                            global const float4* x4, uint rows, uint chunks, uint cpg_shift, uint row0,
                            float* acc) {
    const uint groups = chunks >> cpg_shift;
    for (uint c = get_local_id(0); c < chunks; c += MV_WG) {
        const float4 x0 = x4[c * 8 + 0], x1 = x4[c * 8 + 1], x2 = x4[c * 8 + 2], x3 = x4[c * 8 + 3];
        const float4 x5 = x4[c * 8 + 4], x6 = x4[c * 8 + 5], x7 = x4[c * 8 + 6], x8 = x4[c * 8 + 7];
        const float xsum = dot((x0 + x1) + (x2 + x3) + (x5 + x6) + (x7 + x8), (float4)(1.0f));
#if defined(TLITE_HAS_FP16) && defined(TLITE_MV_HALF_MATH)
        const half8 xa = (half8)(convert_half4(x0), convert_half4(x1));
        const half8 xb = (half8)(convert_half4(x2), convert_half4(x3));
        const half8 xc = (half8)(convert_half4(x5), convert_half4(x6));
        const half8 xd = (half8)(convert_half4(x7), convert_half4(x8));
#endif
        const uint g = c >> cpg_shift;
#pragma unroll
        for (uint r = 0; r < MV_ROWS; ++r) {
            const uint row = min(row0 + r, rows - 1);
            const uint4 q = codes[(size_t)row * chunks + c];
#if defined(TLITE_HAS_FP16) && defined(TLITE_MV_HALF_MATH)
            const float d = tl_m0e4_dot8_half(q.x, xa) + tl_m0e4_dot8_half(q.y, xb) +
                            tl_m0e4_dot8_half(q.z, xc) + tl_m0e4_dot8_half(q.w, xd);
#else
            const float d = tl_m0e4_dot8(q.x, x0, x1) + tl_m0e4_dot8(q.y, x2, x3) + tl_m0e4_dot8(q.z, x5, x6) +
                            tl_m0e4_dot8(q.w, x7, x8);
#endif
            const size_t gi = (size_t)row * groups + g;
            acc[r] += vload_half(gi, scales) * d + vload_half(gi, offsets) * xsum;
        }
    }
}

// Sums acc[r] over the work-group into red[r * MV_WG]; afterwards work-item r < MV_ROWS reads its row's total.
inline float mv_reduce(float* acc, local float* red) {
    const uint lid = get_local_id(0);
#if TL_SG_MODE != 0
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

// y[row] = W[row]·x, plus residual[row] when res_mode is 1, plus the old y[row] when res_mode is 2.
// codes: [rows][chunks] uint4; scales/offsets: [rows][chunks >> cpg_shift] f16; x: [chunks * 32] f32.
kernel TL_QCOM_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4(global const uint4* codes, global const half* scales, global const half* offsets,
                 global const float4* x, global float* y, global const float* residual, uint rows, uint chunks,
                 uint cpg_shift, uint res_mode) {
    local float red[MV_ROWS * MV_WG];
    const uint row0 = get_group_id(0) * MV_ROWS;
    float acc[MV_ROWS];
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    mv_m0e4_partial(codes, scales, offsets, x, rows, chunks, cpg_shift, row0, acc);
    const float total = mv_reduce(acc, red);
    const uint lid = get_local_id(0);
    const uint row = row0 + lid;
    if (lid < MV_ROWS && row < rows) {
        float v = total;
        if (res_mode == 1) v += residual[row];
        else if (res_mode == 2) v += y[row];
        y[row] = v;
    }
}

// out[row] = silu(Wg[row]·x) * (Wu[row]·x): the SwiGLU feed-forward's gate and up projections in one launch.
kernel TL_QCOM_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4_gate_up(global const uint4* g_codes, global const half* g_scales, global const half* g_offsets,
                         global const uint4* u_codes, global const half* u_scales, global const half* u_offsets,
                         global const float4* x, global float* out, uint rows, uint chunks, uint cpg_shift,
                         uint act) {
    local float red[MV_ROWS * MV_WG];
    const uint row0 = get_group_id(0) * MV_ROWS;
    float acc[MV_ROWS];
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    mv_m0e4_partial(g_codes, g_scales, g_offsets, x, rows, chunks, cpg_shift, row0, acc);
    const float gate = mv_reduce(acc, red);
    barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    mv_m0e4_partial(u_codes, u_scales, u_offsets, x, rows, chunks, cpg_shift, row0, acc);
    const float up = mv_reduce(acc, red);
    const uint lid = get_local_id(0);
    const uint row = row0 + lid;
    if (lid < MV_ROWS && row < rows) {
        float a;
        if (act == 0) {
            a = gate / (1.0f + exp(-gate));
        } else {
            a = 0.5f * gate * (1.0f + tanh(0.7978845608f * (gate + 0.044715f * gate * gate * gate)));
        }
        out[row] = a * up;
    }
}

// y[row] = W[row]·x (+ residual) for f16 weights [rows][cols], cols a multiple of 8: each load is 16 bytes.
kernel TL_QCOM_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_f16(global const half* w, global const float4* x, global float* y, global const float* residual,
                uint rows, uint cols, uint res_mode) {
    local float red[MV_ROWS * MV_WG];
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
            const float8 wv = vload_half8(c, w + (size_t)row * cols);
            acc[r] += dot(wv.lo, xa) + dot(wv.hi, xb);
        }
    }
    const float total = mv_reduce(acc, red);
    const uint lid = get_local_id(0);
    const uint row = row0 + lid;
    if (lid < MV_ROWS && row < rows) {
        float v = total;
        if (res_mode == 1) v += residual[row];
        else if (res_mode == 2) v += y[row];
        y[row] = v;
    }
}
