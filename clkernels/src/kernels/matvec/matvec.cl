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

#ifdef MV_DIAG_CHEAP_DOT
// Diagnostic only (results are wrong by design): one multiply per 8 codes instead of the dequantising dot, to
// show whether a shape is bound by arithmetic or by memory traffic.
#define tl_m0e4_dot8(w, xa, xb) (as_float((w) & 0x3F8FFFFFu) * (xa).x)
#endif
#ifndef MV_ROWS
#define MV_ROWS 4
#endif

#ifdef MV_FPDQ
// FP-pipe dequantisation: q·16^i = as_float(2^23 bits | (w & (0xF << 4i))) - 2^23 for the four nibbles of a
// 16-bit half word, so each code costs one AND-OR (LOP3) and one FADD instead of a shift and an AND-OR on the
// integer pipe (half as fast as the FP32 pipe on NVIDIA). x arrives pre-scaled by 16^-(i+1) per nibble slot i,
// so the result is sum(q·x)/16 = sum(h·x) - sum(x).
inline float tl_m0e4_qdot4(uint w, float4 xs) {
    const uint4 m = ((uint4)(w) & (uint4)(0xFu, 0xF0u, 0xF00u, 0xF000u)) | 0x4B000000u;
    return dot(as_float4(m) - (float4)(8388608.0f), xs);
}
inline float tl_m0e4_qdot8(uint w, float4 xa, float4 xb) {
    return tl_m0e4_qdot4(w, xa) + tl_m0e4_qdot4(w >> 16, xb);
}
#define MV_XSCALE ((float4)(1.0f / 16.0f, 1.0f / 256.0f, 1.0f / 4096.0f, 1.0f / 65536.0f))
#endif

#if defined(MV_NVH2) && defined(TLITE_NV_SHFL) && !defined(TLITE_COMPILE_CHECK)
// NVIDIA packed-half dequantisation (the paper's FP16 recipe, through inline PTX because NVIDIA's OpenCL has no
// cl_khr_fp16). Two codes at a time go straight into the mantissas of an f16x2: (w & 0x000F000F) | 0x6400 6400 is
// (1024 + q0, 1024 + q4) and (w & 0x00F000F0) | 0x5400 5400 is (64 + q1, 64 + q5) (ulp 1/16 there, so the
// nibble needs no shift); one exact f16x2 subtraction leaves (q, q'), and one f16x2 FMA multiplies them by the
// activations. Per 8 codes: 4 LOP3 + 1 shift + 4 HSUB2 + 4 HFMA2, against 16 integer ops + 8 FMAs in f32.
// The products and the 16-term sum per lane are in f16, with the activations pre-scaled by 1/256: the per-lane
// sum is then at most 0.94·max|x|, so |x| up to ~69000 cannot overflow (the large outliers some models' FFN
// activations reach stay representable), while |x| < 0.016 loses only ~1e-5 absolute to f16 subnormals. The
// sums across chunks and groups are f32.
#define MV_H2_PATH 1
inline uint tl_nv_pack_h2(float lo, float hi) {
    uint r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
// acc + (codes of word w) * x, where xh holds the word's activations as pairs (x0,x4), (x1,x5), (x2,x6), (x3,x7).
inline uint tl_nv_m0e4_word_h2(uint w, uint4 xh, uint acc) {
    const uint w8 = w >> 8;
    const uint a = (w & 0x000F000Fu) | 0x64006400u, b = (w & 0x00F000F0u) | 0x54005400u;
    const uint c = (w8 & 0x000F000Fu) | 0x64006400u, d = (w8 & 0x00F000F0u) | 0x54005400u;
    uint r;
    asm("{\n\t.reg .b32 qa, qb, qc, qd, t, k1, k2;\n\t"
        "mov.b32 k1, 0x64006400;\n\tmov.b32 k2, 0x54005400;\n\t"
        "sub.rn.f16x2 qa, %1, k1;\n\t"
        "sub.rn.f16x2 qb, %2, k2;\n\t"
        "sub.rn.f16x2 qc, %3, k1;\n\t"
        "sub.rn.f16x2 qd, %4, k2;\n\t"
        "fma.rn.f16x2 t, qa, %5, %9;\n\t"
        "fma.rn.f16x2 t, qb, %6, t;\n\t"
        "fma.rn.f16x2 t, qc, %7, t;\n\t"
        "fma.rn.f16x2 %0, qd, %8, t;\n\t}"
        : "=r"(r)
        : "r"(a), "r"(b), "r"(c), "r"(d), "r"(xh.x), "r"(xh.y), "r"(xh.z), "r"(xh.w), "r"(acc));
    return r;
}
// The two halves of an f16x2, summed in f32.
inline float tl_nv_h2_sum(uint v) {
    const float2 f = tl_nv_half2_to_float2(v);
    return f.x + f.y;
}
// sum over a chunk's 32 codes of q·x/256 (x paired by tl_nv_x_h2), summed in f16x2 and returned in f32.
inline float tl_nv_m0e4_dot32(uint4 q, uint4 h0, uint4 h1, uint4 h2, uint4 h3) {
    uint ha = tl_nv_m0e4_word_h2(q.x, h0, 0u);
    ha = tl_nv_m0e4_word_h2(q.y, h1, ha);
    ha = tl_nv_m0e4_word_h2(q.z, h2, ha);
    ha = tl_nv_m0e4_word_h2(q.w, h3, ha);
    return tl_nv_h2_sum(ha);
}
// The word's activations (xa: elements 0-3, xb: 4-7), scaled by 1/256 and paired as tl_nv_m0e4_word_h2 wants.
inline uint4 tl_nv_x_h2(float4 xa, float4 xb) {
    xa *= 0.00390625f;
    xb *= 0.00390625f;
    return (uint4)(tl_nv_pack_h2(xa.x, xb.x), tl_nv_pack_h2(xa.y, xb.y), tl_nv_pack_h2(xa.z, xb.z),
                   tl_nv_pack_h2(xa.w, xb.w));
}
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

#if defined(MV_DIAG_TIMES) && defined(TLITE_NV_SHFL) && !defined(TLITE_COMPILE_CHECK)
// Diagnostic only (bench-kernels --mv-timeline): each work-group's work-item 0 records when it started, finished
// staging x (its first tile; 0 when x is not staged), finished its dot products and stored its rows, as eight
// words per work-group past the rows of y (which the caller sizes for it).
#define MV_TIMES 1
inline ulong mv_globaltimer(void) {
    ulong t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
inline ulong mv_clock(void) {
    ulong t;
    asm volatile("mov.u64 %0, %%clock64;" : "=l"(t));
    return t;
}
inline uint mv_smid(void) {
    uint t;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(t));
    return t;
}
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
#define MV_ROW_TERM(q, s, b) ((16.0f * (s)) * tl_nv_m0e4_dot32((q), h0, h1, h2, h3) + ((s) + (b)) * xsum)
#elif defined(MV_FPDQ)
#define MV_ROW_TERM(q, s, b)                                                                                       \
    ((s) * (tl_m0e4_qdot8((q).x, x0, x1) + tl_m0e4_qdot8((q).y, x2, x3) + tl_m0e4_qdot8((q).z, x5, x6) +         \
            tl_m0e4_qdot8((q).w, x7, x8)) +                                                                        \
     ((s) + (b)) * xsum)
#else
#define MV_ROW_TERM(q, s, b)                                                                                       \
    ((s) * (tl_m0e4_dot8((q).x, x0, x1) + tl_m0e4_dot8((q).y, x2, x3) + tl_m0e4_dot8((q).z, x5, x6) +           \
            tl_m0e4_dot8((q).w, x7, x8)) +                                                                         \
     (b) * xsum)
#endif

#if defined(TLITE_NV_SHFL) && !defined(TLITE_COMPILE_CHECK) && !defined(MV_NV_PLAIN_LD)
// Weight loads: MV_CODES_AT (16 bytes of codes), MV_HALF_AT (one f16 as f32), MV_HALF8_AT (eight f16 as f32,
// 16-byte aligned: cols is a multiple of 8, and buffers and sub-buffers start on the device's base alignment).
// On NVIDIA the weights (codes, scales, offsets, f16 rows), each read once, are loaded without allocating L1
// lines, leaving the L1 to what is read again (x, by every group on the unit), and halves convert with one cvt
// each. H100: the codes alone took gate+up from 29.8-30.0 to 29.1 us and llama2-7b decode up 2-4 %; the
// scales and offsets too made every shape 0.2-0.7 us faster again (bench/RESULTS.md). MV_NV_PLAIN_LD restores
// plain loads, for comparison.
#define MV_CODES_AT(codes, i) tl_nv_ld_once((codes) + (i))
inline float mv_ld_half(global const half* p) {
    float v;
    asm("{\n\t.reg .b16 h;\n\tld.global.L1::no_allocate.b16 h, [%1];\n\tcvt.f32.f16 %0, h;\n\t}"
        : "=f"(v)
        : "l"(p));
    return v;
}
#define MV_HALF_AT(p, i) mv_ld_half((p) + (i))
// Eight f16 weights at a 16-byte-aligned address, as f32.
inline float8 mv_ld_half8(global const half* p) {
    const uint4 w = tl_nv_ld_once((global const uint4*)p);
    return (float8)(tl_nv_half2_to_float2(w.x), tl_nv_half2_to_float2(w.y), tl_nv_half2_to_float2(w.z),
                    tl_nv_half2_to_float2(w.w));
}
#define MV_HALF8_AT(c, p) mv_ld_half8((p) + (size_t)(c) * 8)
#else
#define MV_CODES_AT(codes, i) ((codes)[i])
#define MV_HALF_AT(p, i) vload_half((i), (p))
#define MV_HALF8_AT(c, p) vload_half8((c), (p))
#endif

// acc[r] += chunk c of row min(row0 + r, rows - 1) of one matrix, for r < MV_ROWS.
#define MV_ROWS_ACC(acc, codes, scales, offsets)                                                                    \
    _Pragma("unroll") for (uint r = 0; r < MV_ROWS; ++r) {                                                          \
        const uint row = min(row0 + r, rows - 1);                                                                   \
        const uint4 q = MV_CODES_AT(codes, (size_t)row * chunks + c);                                               \
        const size_t gi = (size_t)row * groups + g;                                                                 \
        (acc)[r] += MV_ROW_TERM(q, MV_HALF_AT(scales, gi), MV_HALF_AT(offsets, gi));                                \
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
inline void mv_m0e4_partial(global const uint4* codes, global const half* scales, global const half* offsets,
                            global const float4* x4, uint rows, uint chunks, uint cpg_shift, uint row0, float* acc,
                            local float4* xl, const bool normed,
                            global const float4* nw4, float eps, float w_off, local float* red,
                            const bool x_staged, float* norm_scale, ulong* staged_clock) {
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
#ifdef MV_TIMES
            if (t0 == 0) *staged_clock = mv_clock();
#endif
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
            const uint4 h0 = tl_nv_x_h2(x0, x1), h1 = tl_nv_x_h2(x2, x3);
            const uint4 h2 = tl_nv_x_h2(x5, x6), h3 = tl_nv_x_h2(x7, x8);
#elif defined(MV_FPDQ)
            x0 *= MV_XSCALE; x1 *= MV_XSCALE; x2 *= MV_XSCALE; x3 *= MV_XSCALE;
            x5 *= MV_XSCALE; x6 *= MV_XSCALE; x7 *= MV_XSCALE; x8 *= MV_XSCALE;
#endif
            const uint g = c >> cpg_shift;
            MV_ROWS_ACC(acc, codes, scales, offsets)
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
inline void mv_m0e4_body(global const uint4* codes, global const half* scales, global const half* offsets,
                         global const float4* x, global float* y, global const float* residual, uint rows,
                         uint chunks, uint cpg_shift, uint res_mode, const bool normed, global const float4* nw,
                         float eps, float w_off, local float* red, local float4* xl) {
    const uint row0 = get_group_id(0) * MV_ROWS;
#ifdef MV_TIMES
    const ulong g0 = mv_globaltimer(), c0 = mv_clock();
#endif
    float acc[MV_ROWS];
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    float norm_scale = 1.0f;
    ulong staged = 0;
    mv_m0e4_partial(codes, scales, offsets, x, rows, chunks, cpg_shift, row0, acc, xl, normed, nw, eps, w_off, red,
                    false, &norm_scale, &staged);
#ifdef MV_TIMES
    const ulong c_dot = mv_clock();
#endif
    mv_store(mv_reduce(acc, red), y, residual, rows, row0, res_mode);
#ifdef MV_TIMES
    barrier(CLK_GLOBAL_MEM_FENCE);
    if (get_local_id(0) == 0) {
        const ulong c_end = mv_clock(), g_end = mv_globaltimer();
        global uint* d = (global uint*)(y + rows) + get_group_id(0) * 8;
        d[0] = (uint)g0;
        d[1] = (uint)(g0 >> 32);
        d[2] = (uint)(g_end - g0);
        d[3] = staged != 0 ? (uint)(staged - c0) : 0;
        d[4] = (uint)(c_dot - c0);
        d[5] = (uint)(c_end - c0);
        d[6] = mv_smid();
        d[7] = 0;
    }
#endif
}

kernel TL_QCOM_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4(global const uint4* codes, global const half* scales, global const half* offsets,
                 global const float4* x, global float* y, global const float* residual, const mv_params p) {
    local float red[MV_ROWS * MV_WG];
    MV_XL_DECL
    mv_m0e4_body(codes, scales, offsets, x, y, residual, p.rows, p.chunks, p.cpg_shift, p.res_mode, false, x, 0.0f,
                 0.0f, red, MV_XL_ARG);
}

// y = W·(rmsnorm(x) * (nw + w_off)) (+ residual per res_mode): the decode step's norm fused into the mat-vec that
// follows it (QKV; Qwen's QKV bias comes in as the residual).
kernel TL_QCOM_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4_normed(global const uint4* codes, global const half* scales, global const half* offsets,
                        global const float4* x, global const float4* nw, global float* y,
                        global const float* residual, const mv_params p) {
    local float red[MV_ROWS * MV_WG];
    MV_XL_DECL
    mv_m0e4_body(codes, scales, offsets, x, y, residual, p.rows, p.chunks, p.cpg_shift, p.res_mode, true, nw, p.eps,
                 p.w_off, red, MV_XL_ARG);
}

// out[row] = act(Wg[row]·x) * (Wu[row]·x): the gated feed-forward's gate and up projections in one launch
// (act 0: SiLU, 1: GELU-tanh). With `normed`, x is rmsnorm(x) * (nw + w_off) as in mv_m0e4_body.
inline void mv_gate_up_body(global const uint4* g_codes, global const half* g_scales, global const half* g_offsets,
                            global const uint4* u_codes, global const half* u_scales, global const half* u_offsets,
                            global const float4* x, global float* out, uint rows, uint chunks, uint cpg_shift,
                            uint act, const bool normed, global const float4* nw, float eps, float w_off,
                            local float* red, local float4* xl) {
    const uint row0 = get_group_id(0) * MV_ROWS;
    float acc[MV_ROWS];
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    float norm_scale = 1.0f;
    ulong staged = 0;
    mv_m0e4_partial(g_codes, g_scales, g_offsets, x, rows, chunks, cpg_shift, row0, acc, xl, normed, nw, eps, w_off,
                    red, false, &norm_scale, &staged);
    const float gate = mv_reduce(acc, red);
    barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
    for (uint r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    mv_m0e4_partial(u_codes, u_scales, u_offsets, x, rows, chunks, cpg_shift, row0, acc, xl, normed, nw, eps, w_off,
                    red, true, &norm_scale, &staged);
    const float up = mv_reduce(acc, red);
    const uint lid = get_local_id(0);
    const uint row = row0 + lid;
    if (lid < MV_ROWS && row < rows) {
        float a;
        if (act == 0) {
            a = gate / (1.0f + exp(-gate));
        } else {
            // 0.5*x*(1 + tanh(u)) written as x / (1 + exp(-2u)): the same function without the cancellation of
            // 1 + tanh(u) for large negative x, which left errors of ~1e-6 where the result is ~0.
            a = gate / (1.0f + exp(-1.5957691216f * (gate + 0.044715f * gate * gate * gate)));
        }
        out[row] = a * up;
    }
}

kernel TL_QCOM_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4_gate_up(global const uint4* g_codes, global const half* g_scales, global const half* g_offsets,
                         global const uint4* u_codes, global const half* u_scales, global const half* u_offsets,
                         global const float4* x, global float* out, const mv_params p) {
    local float red[MV_ROWS * MV_WG];
    MV_XL_DECL
    mv_gate_up_body(g_codes, g_scales, g_offsets, u_codes, u_scales, u_offsets, x, out, p.rows, p.chunks,
                    p.cpg_shift, p.act, false, x, 0.0f, 0.0f, red, MV_XL_ARG);
}

// The gate+up launch with the feed-forward's RMSNorm fused in front of it.
kernel TL_QCOM_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_m0e4_gate_up_normed(global const uint4* g_codes, global const half* g_scales,
                                global const half* g_offsets, global const uint4* u_codes,
                                global const half* u_scales, global const half* u_offsets, global const float4* x,
                                global const float4* nw, global float* out, const mv_params p) {
    local float red[MV_ROWS * MV_WG];
    MV_XL_DECL
    mv_gate_up_body(g_codes, g_scales, g_offsets, u_codes, u_scales, u_offsets, x, out, p.rows, p.chunks,
                    p.cpg_shift, p.act, true, nw, p.eps, p.w_off, red, MV_XL_ARG);
}

// y[row] = W[row]·x (+ residual) for f16 weights [rows][cols], cols a multiple of 8: each load is 16 bytes.
kernel TL_QCOM_REQD_SUBGROUP __attribute__((reqd_work_group_size(MV_WG, 1, 1)))
void matvec_f16(global const half* w, global const float4* x, global float* y, global const float* residual,
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
            const float8 wv = MV_HALF8_AT(c, w + (size_t)row * cols);
            acc[r] += dot(wv.lo, xa) + dot(wv.hi, xb);
        }
    }
    mv_store(mv_reduce(acc, red), y, residual, rows, row0, res_mode);
}
