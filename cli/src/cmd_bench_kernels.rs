//! `tlite bench-kernels`: one table row per kernel and shape, with time, bandwidth against the measured copy
//! bandwidth, and FLOP/s against a given peak.

use anyhow::Context as _;
use clkernels::kernels::bench_suite::{cases, copy_bandwidth, time_case, SuiteOptions};
use clkernels::kernels::matmul::MatmulConfig;
use clkernels::kernels::matvec::MatvecConfig;
use clkernels::runtime::Gpu;

/// Arguments of this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only kernels whose name contains this (repeatable), e.g. `--kernel matvec --kernel matmul`.
    #[arg(long = "kernel")]
    kernels: Vec<String>,
    /// Timed launches per case.
    #[arg(long, default_value_t = 50)]
    iters: usize,
    /// Untimed launches before timing.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Small shapes (for CPU devices such as PoCL).
    #[arg(long)]
    small: bool,
    /// Size of the buffer for the copy-bandwidth measurement, MiB.
    #[arg(long, default_value_t = 1024)]
    copy_mib: usize,
    /// Peak FLOP/s of the device in GFLOP/s, for the "% peak" column (e.g. 29000 for CLBlast SGEMM on an H100).
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Mat-vec work-group size (power of two).
    #[arg(long)]
    mv_wg: Option<usize>,
    /// Mat-vec rows per work-group.
    #[arg(long)]
    mv_rows: Option<usize>,
    /// Do not use the NVIDIA warp-shuffle (inline PTX) reduction in the mat-vec.
    #[arg(long)]
    mv_no_shuffle: bool,
    /// Mat-mat tiling as TMxTNxWMxWN, e.g. 64x128x4x8; a trailing `v` selects contiguous float4 blocks (64x128x4x8v).
    #[arg(long)]
    mm_tile: Option<String>,
    /// Also try several mat-vec geometries and mat-mat tilings and print each.
    #[arg(long)]
    sweep: bool,
}

fn parse_tile(text: &str) -> anyhow::Result<MatmulConfig> {
    let (dims, vec) = match text.strip_suffix('v') {
        Some(d) => (d, true),
        None => (text, false),
    };
    let parts: Vec<usize> = dims
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--mm-tile `{text}`: expected four numbers like 64x128x4x8"))?;
    match parts[..] {
        [tile_m, tile_n, work_m, work_n] => Ok(MatmulConfig {
            tile_m,
            tile_n,
            work_m,
            work_n,
            vec,
        }),
        _ => anyhow::bail!("--mm-tile `{text}`: expected four numbers like 64x128x4x8"),
    }
}

fn header() {
    println!(
        "{:<20} {:<34} {:<26} {:>10} {:>10} {:>9} {:>7} {:>10} {:>7}",
        "kernel", "shape", "config", "us(dev)", "us(wall)", "GB/s", "%copy", "GFLOP/s", "%peak"
    );
}

fn run_suite(gpu: &Gpu, opts: &SuiteOptions, args: &Args, copy_gbps: f64) -> anyhow::Result<()> {
    for mut case in cases(gpu, opts).context("setting up the benchmark cases")? {
        let t = time_case(gpu, &mut case, args.warmup, args.iters)
            .with_context(|| format!("running {} {}", case.name, case.shape))?;
        let peak = match (args.peak_gflops, case.flops > 0.0) {
            (Some(p), true) => format!("{:.1}", 100.0 * t.gflops / p),
            _ => "-".to_string(),
        };
        let gflops = if case.flops > 0.0 {
            format!("{:.1}", t.gflops)
        } else {
            "-".to_string()
        };
        println!(
            "{:<20} {:<34} {:<26} {:>10.2} {:>10.2} {:>9.1} {:>7.1} {:>10} {:>7}",
            case.name,
            case.shape,
            case.config,
            t.micros,
            t.wall_micros,
            t.gbps,
            100.0 * t.gbps / copy_gbps,
            gflops,
            peak
        );
    }
    Ok(())
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let gpu = Gpu::open_default().context("opening the OpenCL device")?;
    let caps = gpu.caps();
    println!(
        "device: {} ({}; {}; driver {}; {} CUs; fp16 {}; subgroups {})",
        caps.name,
        caps.platform_name,
        caps.opencl_version,
        caps.driver_version,
        caps.compute_units,
        caps.fp16,
        caps.has_subgroups()
    );
    let copy_bytes =
        (args.copy_mib.max(1) << 20).min((caps.max_alloc_bytes / 2).max(1 << 20) as usize);
    let copy_gbps = copy_bandwidth(&gpu, copy_bytes, args.iters.clamp(5, 50))
        .context("measuring copy bandwidth")?;
    println!(
        "copy bandwidth (clEnqueueCopyBuffer, {} MiB, read+write bytes): {copy_gbps:.1} GB/s",
        copy_bytes >> 20
    );
    println!("timing: {} warm-up + {} launches back to back on a profiling queue; us(dev) = mean device time per launch from \
events (GB/s, GFLOP/s use it), us(wall) = wall clock per launch after clFinish\n", args.warmup, args.iters);

    let default_mv = MatvecConfig::for_gpu(&gpu);
    let matvec = match (args.mv_wg, args.mv_rows) {
        (None, None) if !args.mv_no_shuffle => None,
        (wg, rows) => Some(MatvecConfig {
            work_group: wg.unwrap_or(default_mv.work_group),
            rows_per_group: rows.unwrap_or(default_mv.rows_per_group),
            warp_shuffle: !args.mv_no_shuffle,
            ..default_mv
        }),
    };
    let matmul = args.mm_tile.as_deref().map(parse_tile).transpose()?;
    let opts = SuiteOptions {
        filter: args.kernels.clone(),
        matvec,
        matmul,
        small: args.small,
    };
    header();
    run_suite(&gpu, &opts, &args, copy_gbps)?;

    if args.sweep {
        println!("\nsweep: mat-vec geometries");
        header();
        for (wg, rows, warp_shuffle) in [
            (128, 4, false),
            (128, 8, false),
            (32, 4, true),
            (64, 4, true),
            (64, 8, true),
            (128, 4, true),
            (128, 8, true),
            (256, 8, true),
            (128, 16, true),
        ] {
            if wg > caps.max_work_group_size {
                continue;
            }
            let o = SuiteOptions {
                filter: vec!["matvec_m0e4".into()],
                matvec: Some(MatvecConfig {
                    work_group: wg,
                    rows_per_group: rows,
                    warp_shuffle,
                    ..default_mv
                }),
                matmul: None,
                small: args.small,
            };
            run_suite(&gpu, &o, &args, copy_gbps)?;
        }
        println!("\nsweep: mat-mat tilings");
        header();
        for tile in [
            "64x64x4x4",
            "64x128x4x8",
            "64x128x4x8v",
            "128x64x8x4",
            "128x64x8x4v",
            "128x128x8x8",
            "128x128x8x8v",
            "64x64x4x4v",
        ] {
            let c = parse_tile(tile)?;
            if c.threads() > caps.max_work_group_size {
                continue;
            }
            let o = SuiteOptions {
                filter: vec!["matmul_m0e4".into()],
                matvec: None,
                matmul: Some(c),
                small: args.small,
            };
            run_suite(&gpu, &o, &args, copy_gbps)?;
        }
    }
    Ok(())
}
