// The scalar arguments of the mat-vec kernels, shared by matvec.cl and cpu.cl (MvParams and MvF16Params in
// params.rs, field for field).

// The four M0E4 kernels. rows x (chunks * 32) weights in groups of 32 << cpg_shift; res_mode (plain and normed):
// 0 y = W·x, 1 + residual, 2 + the old y; act (gate+up): 0 SiLU, 1 GELU-tanh; eps and w_off (normed): the RMSNorm's
// epsilon and weight offset.
typedef struct {
    uint rows, chunks, cpg_shift;
    uint res_mode, act;
    float eps, w_off;
} mv_params;

// matvec_f16: rows x cols weights, res_mode as above.
typedef struct {
    uint rows, cols, res_mode;
} mv_f16_params;
