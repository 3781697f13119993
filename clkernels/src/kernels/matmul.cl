// Prefill matrix-matrix products: Y[seq][N] = X[seq][K] · Wᵀ (+ R), W in M0E4 ([N][K] codes) or f16.
//
// Classic local-memory tiling with register blocking. A work-group computes an MM_TM × MM_TN tile of Y (MM_TM
// tokens × MM_TN output features); each work-item holds MM_WM × MM_WN accumulators, strided so neighbouring
// work-items touch neighbouring local-memory words and neighbouring outputs. Per K-step of MM_TK = 32 (one M0E4
// chunk per W row, so one scale and offset per row and step), the X tile is copied and the W tile dequantised once
// into local memory, then every work-item does MM_TK × MM_WM × MM_WN multiply-adds from registers.
//
// Awkward sizes: tokens past seq and rows past N are loaded as zeros and never stored; K is a multiple of 32.

#ifndef MM_TM
#define MM_TM 64
#endif
#ifndef MM_TN
#define MM_TN 64
#endif
#ifndef MM_WM
#define MM_WM 4
#endif
#ifndef MM_WN
#define MM_WN 4
#endif
#define MM_TK 32
#define MM_THREADS_M (MM_TM / MM_WM)
#define MM_THREADS_N (MM_TN / MM_WN)
#define MM_THREADS (MM_THREADS_M * MM_THREADS_N)
#define MM_PAD 4

// Which token / output feature register slot (i, j) of work-item (tx, ty) holds. Strided (default): neighbouring
// work-items take neighbouring columns, so local reads are conflict-free scalars and stores coalesce. MM_VEC:
// each work-item owns MM_WM x MM_WN contiguous values, so local reads become float4 loads (fewer instructions on
// GPUs whose local memory is wide, e.g. NVIDIA), at the cost of strided stores.
#ifdef MM_VEC
#define MM_ROW(ty, i) ((ty) * MM_WM + (i))
#define MM_COL(tx, j) ((tx) * MM_WN + (j))
#else
#define MM_ROW(ty, i) ((ty) + (i) * MM_THREADS_M)
#define MM_COL(tx, j) ((tx) + (j) * MM_THREADS_N)
#endif


// X tile, transposed to [k][m] so the inner loop reads a row of tokens for one k.
inline void mm_load_x(global const float* x, uint seq, uint k_dim, uint m0, uint k0,
                      local float (*xs)[MM_TM + MM_PAD]) {
    for (uint idx = get_local_id(1) * MM_THREADS_N + get_local_id(0); idx < MM_TM * MM_TK / 4; idx += MM_THREADS) {
        const uint m = idx / (MM_TK / 4);
        const uint k4 = idx % (MM_TK / 4);
        float4 v = (float4)(0.0f);
        if (m0 + m < seq) v = vload4(0, x + (size_t)(m0 + m) * k_dim + k0 + k4 * 4);
        xs[k4 * 4 + 0][m] = v.x;
        xs[k4 * 4 + 1][m] = v.y;
        xs[k4 * 4 + 2][m] = v.z;
        xs[k4 * 4 + 3][m] = v.w;
    }
}

#ifndef MM_W_F16
// W tile from M0E4 codes, dequantised to [k][n]: one 32-bit word (8 codes) per work-item and step.
inline void mm_load_w(global const uint* codes, global const half* scales, global const half* offsets, uint n_dim,
                      uint k_dim, uint cpg_shift, uint n0, uint k0, local float (*ws)[MM_TN + MM_PAD]) {
    const uint words_per_row = k_dim / 8;
    const uint groups = (k_dim / 32) >> cpg_shift;
    const uint g = (k0 / 32) >> cpg_shift;
    for (uint idx = get_local_id(1) * MM_THREADS_N + get_local_id(0); idx < MM_TN * 4; idx += MM_THREADS) {
        const uint n = idx / 4;
        const uint j = idx % 4;
        float4 lo = (float4)(0.0f), hi = (float4)(0.0f);
        if (n0 + n < n_dim) {
            const uint row = n0 + n;
            const uint word = codes[(size_t)row * words_per_row + k0 / 8 + j];
            const float s = vload_half((size_t)row * groups + g, scales);
            const float b = vload_half((size_t)row * groups + g, offsets);
            float4 ha, hb;
            tl_m0e4_h8(word, &ha, &hb);
            lo = mad((float4)(s), ha, (float4)(b));
            hi = mad((float4)(s), hb, (float4)(b));
        }
        ws[j * 8 + 0][n] = lo.x;
        ws[j * 8 + 1][n] = lo.y;
        ws[j * 8 + 2][n] = lo.z;
        ws[j * 8 + 3][n] = lo.w;
        ws[j * 8 + 4][n] = hi.x;
        ws[j * 8 + 5][n] = hi.y;
        ws[j * 8 + 6][n] = hi.z;
        ws[j * 8 + 7][n] = hi.w;
    }
}
#else
// W tile from f16 weights [N][K], 8 halves (16 bytes) per load.
inline void mm_load_w_f16(global const half* w, uint n_dim, uint k_dim, uint n0, uint k0,
                          local float (*ws)[MM_TN + MM_PAD]) {
    for (uint idx = get_local_id(1) * MM_THREADS_N + get_local_id(0); idx < MM_TN * 4; idx += MM_THREADS) {
        const uint n = idx / 4;
        const uint j = idx % 4;
        float8 v = (float8)(0.0f);
        if (n0 + n < n_dim) v = vload_half8(0, w + (size_t)(n0 + n) * k_dim + k0 + j * 8);
        ws[j * 8 + 0][n] = v.s0;
        ws[j * 8 + 1][n] = v.s1;
        ws[j * 8 + 2][n] = v.s2;
        ws[j * 8 + 3][n] = v.s3;
        ws[j * 8 + 4][n] = v.s4;
        ws[j * 8 + 5][n] = v.s5;
        ws[j * 8 + 6][n] = v.s6;
        ws[j * 8 + 7][n] = v.s7;
    }
}
#endif

inline void mm_store(float (*acc)[MM_WN], global float* y, global const float* residual, uint seq, uint n_dim,
                     uint m0, uint n0, uint res_mode) {
    const uint tx = get_local_id(0), ty = get_local_id(1);
#pragma unroll
    for (uint i = 0; i < MM_WM; ++i) {
        const uint m = m0 + MM_ROW(ty, i);
        if (m >= seq) continue;
#pragma unroll
        for (uint j = 0; j < MM_WN; ++j) {
            const uint n = n0 + MM_COL(tx, j);
            if (n >= n_dim) continue;
            const size_t o = (size_t)m * n_dim + n;
            float v = acc[i][j];
            if (res_mode == 1) v += residual[o];
            else if (res_mode == 2) v += y[o];
            y[o] = v;
        }
    }
}

// One K-step of register-blocked multiply-adds from the local tiles.
inline void mm_step(float (*acc)[MM_WN], local float (*xs)[MM_TM + MM_PAD], local float (*ws)[MM_TN + MM_PAD]) {
    const uint tx = get_local_id(0), ty = get_local_id(1);
#pragma unroll 8
    for (uint k = 0; k < MM_TK; ++k) {
        float a[MM_WM], b[MM_WN];
#if defined(MM_VEC) && (MM_WM % 4 == 0) && (MM_WN % 4 == 0)
#pragma unroll
        for (uint i = 0; i < MM_WM; i += 4) {
            const float4 v = *(local const float4*)&xs[k][ty * MM_WM + i];
            a[i] = v.x; a[i + 1] = v.y; a[i + 2] = v.z; a[i + 3] = v.w;
        }
#pragma unroll
        for (uint j = 0; j < MM_WN; j += 4) {
            const float4 v = *(local const float4*)&ws[k][tx * MM_WN + j];
            b[j] = v.x; b[j + 1] = v.y; b[j + 2] = v.z; b[j + 3] = v.w;
        }
#else
#pragma unroll
        for (uint i = 0; i < MM_WM; ++i) a[i] = xs[k][MM_ROW(ty, i)];
#pragma unroll
        for (uint j = 0; j < MM_WN; ++j) b[j] = ws[k][MM_COL(tx, j)];
#endif
#pragma unroll
        for (uint i = 0; i < MM_WM; ++i) {
#pragma unroll
            for (uint j = 0; j < MM_WN; ++j) acc[i][j] = mad(a[i], b[j], acc[i][j]);
        }
    }
}

// One kernel body for both weight formats; only the weight operands and the tile loader differ.
#ifndef MM_W_F16
#define MM_KERNEL matmul_m0e4
#define MM_W_ARGS global const uint *codes, global const half *scales, global const half *offsets,
#define MM_W_EXTRA_ARGS uint cpg_shift,
#define MM_LOAD_W() mm_load_w(codes, scales, offsets, n_dim, k_dim, cpg_shift, n0, k0, ws)
#else
#define MM_KERNEL matmul_f16
#define MM_W_ARGS global const half *w,
#define MM_W_EXTRA_ARGS
#define MM_LOAD_W() mm_load_w_f16(w, n_dim, k_dim, n0, k0, ws)
#endif
// Global size (ceil(N / MM_TN) * MM_THREADS_N, ceil(seq / MM_TM) * MM_THREADS_M), local (MM_THREADS_N, MM_THREADS_M).
kernel __attribute__((reqd_work_group_size(MM_THREADS_N, MM_THREADS_M, 1)))
void MM_KERNEL(MM_W_ARGS global const float* x, global float* y, global const float* residual, uint seq,
               uint n_dim, uint k_dim, MM_W_EXTRA_ARGS uint res_mode) {
    local float xs[MM_TK][MM_TM + MM_PAD] __attribute__((aligned(16)));
    local float ws[MM_TK][MM_TN + MM_PAD] __attribute__((aligned(16)));
    const uint n0 = get_group_id(0) * MM_TN;
    const uint m0 = get_group_id(1) * MM_TM;
    float acc[MM_WM][MM_WN];
#pragma unroll
    for (uint i = 0; i < MM_WM; ++i)
#pragma unroll
        for (uint j = 0; j < MM_WN; ++j) acc[i][j] = 0.0f;
    for (uint k0 = 0; k0 < k_dim; k0 += MM_TK) {
        mm_load_x(x, seq, k_dim, m0, k0, xs);
        MM_LOAD_W();
        barrier(CLK_LOCAL_MEM_FENCE);
        mm_step(acc, xs, ws);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    mm_store(acc, y, residual, seq, n_dim, m0, n0, res_mode);
}
