// Arm Mali: the decode M0E4 mat-vec written from Arm's Mali OpenCL guidance, for the Mali build that
// matvec/choose.rs picks on Mali devices (or under a Mali device profile). Unlike the other vendor files it is no
// prelude of every program: only the Mali mat-vec program includes it, after matvec/params.cl, and its four kernels
// take the same arguments as matvec.cl's, so the launcher passes them unchanged. Written from the documentation;
// it has run on PoCL's CPU device and Oclgrind only, never on a Mali GPU.
//
// What the guidance asks, and how this file does it:
// - No local memory: on Mali, local memory is ordinary memory behind the same caches, so staging through it costs
//   a copy and a barrier and saves no traffic. Each work-item owns MV_ROWS whole rows and walks all their chunks,
//   so there is no reduction across work-items: no local array, no barrier. The RMSNorm fused in front needs its
//   sum of squares, which every work-item takes in the same pass (it reads all of x anyway) and applies to the
//   finished dots: W·(x·s·(nw + o)) = s·(W·(x·(nw + o))).
// - The device's preferred vector width (MV_VW, 1, 2 or 4 32-bit lanes: kernels/vector_width.rs picks it from
//   CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT, else the native width, else 4): the loads of codes, activations and norm
//   weights are MV_VW words wide (at 4, one uint4 of 32 codes per row and chunk and the activations as float4: the
//   128-bit loads the guidance recommends). The products stay float4 expressions, which Bifrost and Valhall, whose
//   arithmetic is scalar per thread, split into lanes anyway. Where the device has cl_khr_fp16 and the launcher
//   asks for half math, the products are half8 (128 bits).
// - Neighbouring work-items read different rows, so their loads are not contiguous: on a phone the mat-vec is
//   bound by DRAM bandwidth, far below what the load/store unit moves even line by line, and each work-item uses
//   whole cache lines over its consecutive chunks. The activations (a few KiB) are read by every work-item and
//   stay in the cache.

#ifndef MV_WG
#define MV_WG 64
#endif

#ifndef MV_ROWS
#define MV_ROWS 2
#endif

#ifndef MV_VW
#define MV_VW 4
#endif

// Four floats at float4 index i of p, and a chunk's four code words at p, loaded MV_VW words at a time.
#if MV_VW == 4
#define MALI_F4(p, i) ((p)[(i)])
#define MALI_CODES(p) tl_load_once_u4(p)
#elif MV_VW == 2
#define MALI_F4(p, i) (float4)(vload2(0, (global const float*)((p) + (i))), vload2(1, (global const float*)((p) + (i))))
#define MALI_CODES(p) (uint4)(vload2(0, (global const uint*)(p)), vload2(1, (global const uint*)(p)))
#elif MV_VW == 1
inline float4 mali_f4_words(global const float* f) {
    return (float4)(f[0], f[1], f[2], f[3]);
}
inline uint4 mali_u4_words(global const uint* u) {
    return (uint4)(u[0], u[1], u[2], u[3]);
}
#define MALI_F4(p, i) mali_f4_words((global const float*)((p) + (i)))
#define MALI_CODES(p) mali_u4_words((global const uint*)(p))
#else
#error "MV_VW must be 1, 2 or 4"
#endif

// The 32 activations of chunk c of x (times nw + w_off when `normed`), their sum, and the sum of squares of the
// raw activations added to ss.
#define MALI_LOAD_X(c)                                                                                             \
    float4 x0 = MALI_F4(xv, (c) * 8 + 0), x1 = MALI_F4(xv, (c) * 8 + 1);                                         \
    float4 x2 = MALI_F4(xv, (c) * 8 + 2), x3 = MALI_F4(xv, (c) * 8 + 3);                                         \
    float4 x4 = MALI_F4(xv, (c) * 8 + 4), x5 = MALI_F4(xv, (c) * 8 + 5);                                         \
    float4 x6 = MALI_F4(xv, (c) * 8 + 6), x7 = MALI_F4(xv, (c) * 8 + 7);                                         \
    if (normed) {                                                                                                  \
        ss += dot(x0, x0) + dot(x1, x1) + dot(x2, x2) + dot(x3, x3) + dot(x4, x4) + dot(x5, x5) + dot(x6, x6) +   \
              dot(x7, x7);                                                                                         \
        global const float4* n = nw4 + (c) * 8;                                                                    \
        x0 *= (MALI_F4(n, 0) + w_off) * x_scale; x1 *= (MALI_F4(n, 1) + w_off) * x_scale;                          \
        x2 *= (MALI_F4(n, 2) + w_off) * x_scale; x3 *= (MALI_F4(n, 3) + w_off) * x_scale;                          \
        x4 *= (MALI_F4(n, 4) + w_off) * x_scale; x5 *= (MALI_F4(n, 5) + w_off) * x_scale;                          \
        x6 *= (MALI_F4(n, 6) + w_off) * x_scale; x7 *= (MALI_F4(n, 7) + w_off) * x_scale;                          \
    }                                                                                                              \
    const float xsum = dot(((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)), (float4)(1.0f));

#if defined(TLITE_HAS_FP16) && defined(TLITE_MV_HALF_MATH)
#define MALI_HALF 1
#define MALI_HALF_X                                                                                                \
    const half8 xa = (half8)(convert_half4(x0), convert_half4(x1));                                                \
    const half8 xb = (half8)(convert_half4(x2), convert_half4(x3));                                                \
    const half8 xc = (half8)(convert_half4(x4), convert_half4(x5));                                                \
    const half8 xd = (half8)(convert_half4(x6), convert_half4(x7));
#define MALI_TERM(q, s, b)                                                                                         \
    ((s) * (tl_m0e4_dot8_half((q).x, xa) + tl_m0e4_dot8_half((q).y, xb) + tl_m0e4_dot8_half((q).z, xc) +          \
            tl_m0e4_dot8_half((q).w, xd)) +                                                                        \
     (b) * xsum)
#else
#define MALI_HALF_X
#define MALI_TERM(q, s, b)                                                                                         \
    ((s) * (tl_m0e4_dot8((q).x, x0, x1) + tl_m0e4_dot8((q).y, x2, x3) + tl_m0e4_dot8((q).z, x4, x5) +             \
            tl_m0e4_dot8((q).w, x6, x7)) +                                                                         \
     (b) * xsum)
#endif

// acc[r] += chunk c of row min(row0 + r, rows - 1) of one matrix (rows past the end are clamped and never stored).
#define MALI_ROWS_ACC(acc, codes, scales, offsets)                                                                 \
    _Pragma("unroll") for (uint r = 0; r < MV_ROWS; ++r) {                                                         \
        const uint row = min(row0 + r, rows - 1);                                                                  \
        const uint4 q = MALI_CODES((codes) + (size_t)row * chunks + c);                                            \
        const size_t gi = (size_t)row * groups + g;                                                                \
        (acc)[r] += MALI_TERM(q, tl_load_once_half((scales) + gi), tl_load_once_half((offsets) + gi));             \
    }

// The dots of rows row0 .. row0 + MV_ROWS - 1 with x (normalised when `normed`, up to the 1/rms scale, which is
// returned), of the gate matrix into acc and, with `pair`, of the up matrix into acc_u in the same pass over x.
inline float mali_dots(global const uint4* codes, global const half* scales, global const half* offsets,
                       global const uint4* u_codes, global const half* u_scales, global const half* u_offsets,
                       const bool pair, global const float4* xv, uint rows, uint chunks, uint cpg_shift, uint row0,
                       const bool normed, global const float4* nw4, float eps, float w_off, float* acc,
                       float* acc_u) {
    const uint groups = chunks >> cpg_shift;
    float ss = 0.0f;
    // The f32 products take the norm's scale at the end. Half products need the activations at their normalised
    // size (x·(nw + o) alone can overflow f16), so there the scale comes first, from a pass of its own over x.
    float x_scale = 1.0f;
#ifdef MALI_HALF
    if (normed) {
        for (uint i = 0; i < chunks * 8; ++i) {
            const float4 xi = MALI_F4(xv, i);
            ss += dot(xi, xi);
        }
        x_scale = rsqrt(ss / (float)(chunks * 32) + eps);
    }
    const bool scale_at_end = false;
#else
    const bool scale_at_end = normed;
#endif
    for (uint c = 0; c < chunks; ++c) {
        MALI_LOAD_X(c)
        MALI_HALF_X
        const uint g = c >> cpg_shift;
        MALI_ROWS_ACC(acc, codes, scales, offsets)
        if (pair) {
            MALI_ROWS_ACC(acc_u, u_codes, u_scales, u_offsets)
        }
    }
    return scale_at_end ? rsqrt(ss / (float)(chunks * 32) + eps) : 1.0f;
}

// y[row] = scale · acc (+ residual[row] when res_mode is 1, + the old y[row] when it is 2) for this work-item's rows.
inline void mali_store(const float* acc, float scale, global float* y, global const float* residual, uint rows,
                       uint row0, uint res_mode) {
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) {
        const uint row = row0 + r;
        if (row < rows) {
            float v = acc[r] * scale;
            if (res_mode == 1) v += residual[row];
            else if (res_mode == 2) v += y[row];
            y[row] = v;
        }
    }
}

inline void mali_single(global const uint4* codes, global const half* scales, global const half* offsets,
                        global const float4* x, global float* y, global const float* residual, const mv_params p,
                        const bool normed, global const float4* nw) {
    const uint row0 = (uint)get_global_id(0) * MV_ROWS;
    if (row0 >= p.rows) return;
    float acc[MV_ROWS];
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    const float scale = mali_dots(codes, scales, offsets, codes, scales, offsets, false, x, p.rows, p.chunks,
                                  p.cpg_shift, row0, normed, nw, p.eps, p.w_off, acc, acc);
    mali_store(acc, scale, y, residual, p.rows, row0, p.res_mode);
}

inline void mali_gate_up(global const uint4* g_codes, global const half* g_scales, global const half* g_offsets,
                         global const uint4* u_codes, global const half* u_scales, global const half* u_offsets,
                         global const float4* x, global float* out, const mv_params p, const bool normed,
                         global const float4* nw) {
    const uint row0 = (uint)get_global_id(0) * MV_ROWS;
    if (row0 >= p.rows) return;
    float acc[MV_ROWS], acc_u[MV_ROWS];
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = acc_u[r] = 0.0f;
    const float scale = mali_dots(g_codes, g_scales, g_offsets, u_codes, u_scales, u_offsets, true, x, p.rows,
                                  p.chunks, p.cpg_shift, row0, normed, nw, p.eps, p.w_off, acc, acc_u);
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) {
        const uint row = row0 + r;
        if (row < p.rows) out[row] = tl_gate_act(acc[r] * scale, p.act) * (acc_u[r] * scale);
    }
}

kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4(global const uint4* codes, global const half* scales, global const half* offsets,
                 global const float4* x, global float* y, global const float* residual, const mv_params p) {
    mali_single(codes, scales, offsets, x, y, residual, p, false, x);
}

kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4_normed(global const uint4* codes, global const half* scales, global const half* offsets,
                        global const float4* x, global const float4* nw, global float* y,
                        global const float* residual, const mv_params p) {
    mali_single(codes, scales, offsets, x, y, residual, p, true, nw);
}

kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4_gate_up(global const uint4* g_codes, global const half* g_scales, global const half* g_offsets,
                         global const uint4* u_codes, global const half* u_scales, global const half* u_offsets,
                         global const float4* x, global float* out, const mv_params p) {
    mali_gate_up(g_codes, g_scales, g_offsets, u_codes, u_scales, u_offsets, x, out, p, false, x);
}

kernel __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4_gate_up_normed(global const uint4* g_codes, global const half* g_scales,
                                global const half* g_offsets, global const uint4* u_codes,
                                global const half* u_scales, global const half* u_offsets, global const float4* x,
                                global const float4* nw, global float* out, const mv_params p) {
    mali_gate_up(g_codes, g_scales, g_offsets, u_codes, u_scales, u_offsets, x, out, p, true, nw);
}
