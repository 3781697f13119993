// Decode matrix-vector products for CPU devices (PoCL, a phone's CPU driver): the kernels of matvec.cl with
// the same arguments and results, shaped for a CPU instead of a GPU.
//
// Work split: one work-item owns MVC_ROWS consecutive rows and walks the whole of K alone, so there is no
// reduction across work-items, no local memory and no barrier (a CPU driver runs local memory as ordinary memory
// and a barrier as a loop split, both pure cost). Wide vector types (16 lanes) do the SIMD work explicitly: a
// CPU compiler maps them onto its vector unit, while its implicit vectoriser across work-items would need
// gathers here (each work-item reads its own rows). Work-groups are MVC_WG work-items, so the driver's threads
// share out many small groups.
//
// M0E4 chunk of 32 codes (16 bytes, one scale s and offset b, element i in nibble i): sum(w·x) =
// (s/16)·sum(q·x) + (s + b)·sum(x) with q the 4-bit codes. The low nibbles of the 16 bytes are the even
// elements and the high nibbles the odd ones, so x is split into its even and odd halves once per chunk and
// shared by all the work-item's rows; the codes become floats by one zero-extension and one conversion per 16.

#ifndef MVC_ROWS
#define MVC_ROWS 4
#endif
#ifndef MVC_WG
#define MVC_WG 1
#endif

inline float mvc_hsum16(float16 v) {
    const float8 a = v.lo + v.hi;
    const float4 b = a.lo + a.hi;
    return (b.x + b.y) + (b.z + b.w);
}

// 1 / sqrt(mean(x^2) + eps) over `cols` activations (a multiple of 16); every work-item computes it itself, as
// x (a few KiB) stays in cache and the weights dwarf it.
inline float mvc_inv_rms(global const float* x, uint cols, float eps) {
    float16 ss = 0.0f;
    for (uint i = 0; i < cols / 16; ++i) {
        const float16 v = vload16(i, x);
        ss = fma(v, v, ss);
    }
    return rsqrt(mvc_hsum16(ss) / (float)cols + eps);
}

// The even- and odd-indexed activations of 32-value chunk c, RMS-normalised when `normed`.
inline void mvc_chunk_x(global const float* x, uint c, const bool normed, global const float* nw, float inv_rms,
                        float w_off, float16* xe, float16* xo) {
    float16 a = vload16(2 * c, x), b = vload16(2 * c + 1, x);
    if (normed) {
        a *= inv_rms * (vload16(2 * c, nw) + w_off);
        b *= inv_rms * (vload16(2 * c + 1, nw) + w_off);
    }
    *xe = (float16)(a.even, b.even);
    *xo = (float16)(a.odd, b.odd);
}

// out[r] = W[row0 + r]·x for r < MVC_ROWS (rows past the end are clamped; the caller never stores them).
// codes: [rows][chunks * 16] bytes; scales/offsets: [rows][chunks >> cpg_shift] f16; x: [chunks * 32] f32.
inline void mvc_m0e4_rows(global const uchar* codes, global const half* scales, global const half* offsets,
                          global const float* x, uint rows, uint chunks, uint cpg_shift, uint row0, float* out,
                          const bool normed, global const float* nw, float inv_rms, float w_off) {
    const uint groups = chunks >> cpg_shift;
    float16 acc[MVC_ROWS];
    float acc_b[MVC_ROWS];
    size_t row_at[MVC_ROWS];
#pragma unroll
    for (uint r = 0; r < MVC_ROWS; ++r) {
        acc[r] = 0.0f;
        acc_b[r] = 0.0f;
        row_at[r] = min(row0 + r, rows - 1);
    }
    for (uint c = 0; c < chunks; ++c) {
        float16 xe, xo;
        mvc_chunk_x(x, c, normed, nw, inv_rms, w_off, &xe, &xo);
        const float xsum = mvc_hsum16(xe + xo);
        const uint g = c >> cpg_shift;
#pragma unroll
        for (uint r = 0; r < MVC_ROWS; ++r) {
            const uchar16 q = vload16(row_at[r] * chunks + c, codes);
            const float16 qe = convert_float16(q & (uchar)15);
            const float16 qo = convert_float16(q >> (uchar)4);
            const size_t gi = row_at[r] * groups + g;
            const float s = vload_half(gi, scales), b = vload_half(gi, offsets);
            acc[r] = fma((float16)(s * 0.0625f), fma(qo, xo, qe * xe), acc[r]);
            acc_b[r] = fma(s + b, xsum, acc_b[r]);
        }
    }
#pragma unroll
    for (uint r = 0; r < MVC_ROWS; ++r) out[r] = mvc_hsum16(acc[r]) + acc_b[r];
}

// y[row0 + r] = v[r] (+ residual[row] when res_mode is 1, + the old y[row] when 2), for the rows that exist.
inline void mvc_store(const float* v, global float* y, global const float* residual, uint rows, uint row0,
                      uint res_mode) {
    for (uint r = 0; r < MVC_ROWS && row0 + r < rows; ++r) {
        const uint row = row0 + r;
        float t = v[r];
        if (res_mode == 1) t += residual[row];
        else if (res_mode == 2) t += y[row];
        y[row] = t;
    }
}

kernel __attribute__((reqd_work_group_size(MVC_WG, 1, 1)))
void matvec_m0e4_cpu(global const uchar* codes, global const half* scales, global const half* offsets,
                     global const float* x, global float* y, global const float* residual, const mv_params p) {
    const uint rows = p.rows, chunks = p.chunks, cpg_shift = p.cpg_shift, res_mode = p.res_mode;
    const uint row0 = get_global_id(0) * MVC_ROWS;
    if (row0 >= rows) return;
    float v[MVC_ROWS];
    mvc_m0e4_rows(codes, scales, offsets, x, rows, chunks, cpg_shift, row0, v, false, x, 1.0f, 0.0f);
    mvc_store(v, y, residual, rows, row0, res_mode);
}

// y = W·(rmsnorm(x) * (nw + w_off)) (+ residual per res_mode), as matvec_m0e4_normed.
kernel __attribute__((reqd_work_group_size(MVC_WG, 1, 1)))
void matvec_m0e4_normed_cpu(global const uchar* codes, global const half* scales, global const half* offsets,
                            global const float* x, global const float* nw, global float* y,
                            global const float* residual, const mv_params p) {
    const uint rows = p.rows, chunks = p.chunks, cpg_shift = p.cpg_shift, res_mode = p.res_mode;
    const float eps = p.eps, w_off = p.w_off;
    const uint row0 = get_global_id(0) * MVC_ROWS;
    if (row0 >= rows) return;
    const float inv_rms = mvc_inv_rms(x, chunks * 32, eps);
    float v[MVC_ROWS];
    mvc_m0e4_rows(codes, scales, offsets, x, rows, chunks, cpg_shift, row0, v, true, nw, inv_rms, w_off);
    mvc_store(v, y, residual, rows, row0, res_mode);
}

// out[row] = act(Wg[row]·x) * (Wu[row]·x) (act 0: SiLU, 1: GELU-tanh), as matvec_m0e4_gate_up.
inline void mvc_gate_up(global const uchar* g_codes, global const half* g_scales, global const half* g_offsets,
                        global const uchar* u_codes, global const half* u_scales, global const half* u_offsets,
                        global const float* x, global float* out, uint rows, uint chunks, uint cpg_shift, uint act,
                        const bool normed, global const float* nw, float eps, float w_off) {
    const uint row0 = get_global_id(0) * MVC_ROWS;
    if (row0 >= rows) return;
    const float inv_rms = normed ? mvc_inv_rms(x, chunks * 32, eps) : 1.0f;
    float gate[MVC_ROWS], up[MVC_ROWS];
    mvc_m0e4_rows(g_codes, g_scales, g_offsets, x, rows, chunks, cpg_shift, row0, gate, normed, nw, inv_rms, w_off);
    mvc_m0e4_rows(u_codes, u_scales, u_offsets, x, rows, chunks, cpg_shift, row0, up, normed, nw, inv_rms, w_off);
    for (uint r = 0; r < MVC_ROWS && row0 + r < rows; ++r) out[row0 + r] = tl_gate_act(gate[r], act) * up[r];
}

kernel __attribute__((reqd_work_group_size(MVC_WG, 1, 1)))
void matvec_m0e4_gate_up_cpu(global const uchar* g_codes, global const half* g_scales, global const half* g_offsets,
                             global const uchar* u_codes, global const half* u_scales, global const half* u_offsets,
                             global const float* x, global float* out, const mv_params p) {
    mvc_gate_up(g_codes, g_scales, g_offsets, u_codes, u_scales, u_offsets, x, out, p.rows, p.chunks, p.cpg_shift,
                p.act, false, x, 0.0f, 0.0f);
}

kernel __attribute__((reqd_work_group_size(MVC_WG, 1, 1)))
void matvec_m0e4_gate_up_normed_cpu(global const uchar* g_codes, global const half* g_scales,
                                    global const half* g_offsets, global const uchar* u_codes,
                                    global const half* u_scales, global const half* u_offsets,
                                    global const float* x, global const float* nw, global float* out,
                                    const mv_params p) {
    mvc_gate_up(g_codes, g_scales, g_offsets, u_codes, u_scales, u_offsets, x, out, p.rows, p.chunks, p.cpg_shift,
                p.act, true, nw, p.eps, p.w_off);
}

// y[row] = W[row]·x (+ residual per res_mode) for f16 weights [rows][cols], cols a multiple of 8: sixteen
// weights per load (a CPU with F16C converts them in one instruction), eight for the tail.
kernel __attribute__((reqd_work_group_size(MVC_WG, 1, 1)))
void matvec_f16_cpu(global const half* w, global const float* x, global float* y, global const float* residual,
                    const mv_f16_params p) {
    const uint rows = p.rows, cols = p.cols, res_mode = p.res_mode;
    const uint row0 = get_global_id(0) * MVC_ROWS;
    if (row0 >= rows) return;
    float16 acc[MVC_ROWS];
    global const half* wr[MVC_ROWS];
#pragma unroll
    for (uint r = 0; r < MVC_ROWS; ++r) {
        acc[r] = 0.0f;
        wr[r] = w + (size_t)min(row0 + r, rows - 1) * cols;
    }
    const uint n16 = cols / 16;
    for (uint c = 0; c < n16; ++c) {
        const float16 xv = vload16(c, x);
#pragma unroll
        for (uint r = 0; r < MVC_ROWS; ++r) acc[r] = fma(vload_half16(c, wr[r]), xv, acc[r]);
    }
    float v[MVC_ROWS];
#pragma unroll
    for (uint r = 0; r < MVC_ROWS; ++r) v[r] = mvc_hsum16(acc[r]);
    if (cols & 8) {
        const float8 xv = vload8(2 * n16, x);
#pragma unroll
        for (uint r = 0; r < MVC_ROWS; ++r) {
            const float8 wx = vload_half8(2 * n16, wr[r]) * xv;
            const float4 h = wx.lo + wx.hi;
            v[r] += (h.x + h.y) + (h.z + h.w);
        }
    }
    mvc_store(v, y, residual, rows, row0, res_mode);
}
