// Diagnostics for benchmarks only: `MatvecM0e4::with_diagnostics` (used by bench_suite, `tlite bench-kernels`)
// builds its program with this file between common.cl and the family's source; the engine never includes it. Each
// diagnostic is switched on by its define, and its results are wrong by design or carry extra output:
//
// MV_DIAG_CHEAP_DOT (matvec.cl): one multiply per 8 codes instead of the dequantising dot, to show whether a shape
//   is bound by arithmetic or by memory traffic (`tlite bench-kernels --mv-define MV_DIAG_CHEAP_DOT`).
// MV_DIAG_TIMES (matvec.cl; NVIDIA only, it needs vendor/nvidia.cl's timers): each work-group's work-item 0 records
//   when it started, finished staging x (its first tile; 0 when x is not staged), finished its dot products and
//   stored its rows, as eight words per work-group past the rows of y, which the caller sizes for it
//   (`tlite bench-kernels --mv-timeline`).

#ifdef MV_DIAG_CHEAP_DOT
#define tl_m0e4_dot8(w, xa, xb) (as_float((w) & 0x3F8FFFFFu) * (xa).x)
#endif

#if defined(MV_DIAG_TIMES) && defined(TL_HAVE_TIMERS)
#define MV_DIAG_HOOKS 1
// The timer at the start, and the unit's clock at the start, after staging and after the dot products.
typedef struct {
    ulong g0, c0, staged, dots;
} mv_diag;
#define MV_DIAG_START(d) ((d)->g0 = tl_globaltimer(), (d)->c0 = tl_clock())
#define MV_DIAG_STAGED(d) ((d)->staged = tl_clock())
#define MV_DIAG_DOTS(d) ((d)->dots = tl_clock())
#define MV_DIAG_END(d, y, rows) mv_diag_record((d), (global uint*)((y) + (rows)))

// Work-item 0 writes the work-group's eight words: start (low, high), duration in ns, then the cycles from the start
// to the end of staging, of the dot products and of the store, and the unit's id.
inline void mv_diag_record(const mv_diag* d, global uint* records) {
    barrier(CLK_GLOBAL_MEM_FENCE);
    if (get_local_id(0) == 0) {
        const ulong c_end = tl_clock(), g_end = tl_globaltimer();
        global uint* r = records + get_group_id(0) * 8;
        r[0] = (uint)d->g0;
        r[1] = (uint)(d->g0 >> 32);
        r[2] = (uint)(g_end - d->g0);
        r[3] = d->staged != 0 ? (uint)(d->staged - d->c0) : 0;
        r[4] = (uint)(d->dots - d->c0);
        r[5] = (uint)(c_end - d->c0);
        r[6] = tl_unit_id();
        r[7] = 0;
    }
}
#endif
