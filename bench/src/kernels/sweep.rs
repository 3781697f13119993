//! [`sweeps`]: the alternative mat-vec geometries and mat-mat tilings `tlite bench-kernels --sweep` times
//! beside the defaults.

use clkernels::kernels::matmul::MatmulConfig;
use clkernels::kernels::matvec::MatvecConfig;
use clkernels::kernels::matvec_cpu::CpuMatvecGeometry;
use clkernels::runtime::Gpu;

use super::SuiteOptions;

/// One group of runs of the suite, each with its own configuration.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// What varies, in words.
    pub title: &'static str,
    /// The suite options of each run.
    pub runs: Vec<SuiteOptions>,
}

/// GPU mat-vec geometries: (work-group, rows per group, FP32-pipe dequantisation, x staged in chunks, unroll).
const MATVEC_GEOMETRIES: [(usize, usize, usize, usize); 8] = [
    (128, 8, 128, 1),
    (128, 8, 128, 2),
    (64, 8, 128, 2),
    (64, 8, 0, 2),
    (64, 4, 128, 2),
    (128, 4, 128, 2),
    (32, 8, 128, 2),
    (64, 8, 64, 4),
];

/// CPU mat-vec geometries: (rows per work-item, work-group).
const CPU_GEOMETRIES: [(usize, usize); 7] =
    [(1, 1), (2, 1), (4, 1), (8, 1), (4, 4), (8, 4), (16, 1)];

/// Mat-mat tilings: (tile m, tile n, per-item m, per-item n, contiguous float4 blocks).
const TILINGS: [(usize, usize, usize, usize, bool); 8] = [
    (64, 64, 4, 4, false),
    (64, 128, 4, 8, false),
    (64, 128, 4, 8, true),
    (128, 64, 8, 4, false),
    (128, 64, 8, 4, true),
    (128, 128, 8, 8, false),
    (128, 128, 8, 8, true),
    (64, 64, 4, 4, true),
];

/// The sweeps for `gpu`, keeping `base`'s shapes (`small`, `dims`) and mat-vec defines: GPU mat-vec geometries,
/// CPU ones where the device gets the CPU kernels by default, and mat-mat tilings; configurations with more
/// work-items per group than the device allows are left out.
pub fn sweeps(gpu: &Gpu, base: &SuiteOptions) -> Vec<Sweep> {
    let default_mv = MatvecConfig::for_gpu(gpu);
    let max_wg = gpu.caps().max_work_group_size;
    let run = |filter: &str| SuiteOptions {
        filter: vec![filter.into()],
        small: base.small,
        dims: base.dims,
        matvec_defines: base.matvec_defines.clone(),
        ..SuiteOptions::default()
    };
    let mut out = vec![Sweep {
        title: "mat-vec geometries",
        runs: MATVEC_GEOMETRIES
            .iter()
            .filter(|g| g.0 <= max_wg)
            .map(
                |&(work_group, rows_per_group, x_local_chunks, unroll)| SuiteOptions {
                    matvec: Some(MatvecConfig {
                        work_group,
                        rows_per_group,
                        x_local_chunks,
                        unroll,
                        short_unroll: 0,
                        cpu: None,
                        ..default_mv
                    }),
                    ..run("matvec_m0e4")
                },
            )
            .collect(),
    }];
    if default_mv.cpu.is_some() {
        out.push(Sweep {
            title: "CPU mat-vec geometries (rows per work-item x work-group)",
            runs: CPU_GEOMETRIES
                .iter()
                .map(|&(rows_per_item, work_group)| SuiteOptions {
                    matvec: Some(MatvecConfig {
                        cpu: Some(CpuMatvecGeometry {
                            rows_per_item,
                            work_group,
                        }),
                        ..default_mv
                    }),
                    ..run("matvec")
                })
                .collect(),
        });
    }
    out.push(Sweep {
        title: "mat-mat tilings",
        runs: TILINGS
            .iter()
            .map(|&(tile_m, tile_n, work_m, work_n, vec)| MatmulConfig {
                tile_m,
                tile_n,
                work_m,
                work_n,
                vec,
            })
            .filter(|c| c.threads() <= max_wg)
            .map(|c| SuiteOptions {
                matmul: Some(c),
                ..run("matmul_m0e4")
            })
            .collect(),
    });
    out
}
