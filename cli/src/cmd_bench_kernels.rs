//! `tlite bench-kernels`: one table row per kernel and shape, with time, bandwidth against the measured copy
//! bandwidth, and FLOP/s against a given peak.

use anyhow::Context as _;
use bench::copy_bandwidth;
use bench::kernels::sweep::sweeps;
use bench::kernels::table::{header, Baseline, Row};
use bench::kernels::{
    cases, matvec_timeline, time_case, QueuedTimer, SuiteOptions, QUEUED_LAUNCHES, TIMELINE_SHAPES,
};
use clkernels::kernels::attention::{AttentionWalk, SplitPolicy};
use clkernels::kernels::matmul::MatmulConfig;
use clkernels::kernels::matvec::MatvecConfig;
use clkernels::kernels::matvec_cpu::CpuMatvecGeometry;
use clkernels::runtime::{DeviceSelector, Gpu, GpuOptions};

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
    /// Model dimensions HIDDENxFFNxVOCAB of the mat-vec and mat-mat shapes, e.g. 576x1536x49152 for
    /// SmolLM2-135M (default: a 7B Llama's, or smaller ones with --small).
    #[arg(long, value_parser = parse_dims)]
    dims: Option<(usize, usize, usize)>,
    /// Mat-vec: run the GPU kernels even on a CPU device (which gets the CPU kernels by default). Any of the
    /// GPU geometry flags (--mv-wg, --mv-rows, ...) implies it.
    #[arg(long)]
    mv_gpu_kernels: bool,
    /// Mat-vec CPU kernels: rows per work-item (runs the CPU kernels, on any device).
    #[arg(long)]
    mv_cpu_rows: Option<usize>,
    /// Mat-vec CPU kernels: work-items per work-group (runs the CPU kernels, on any device).
    #[arg(long)]
    mv_cpu_wg: Option<usize>,
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
    /// Mat-vec chunk-loop unroll factor (for every launch when given, the plain short launches included).
    #[arg(long)]
    mv_unroll: Option<usize>,
    /// Mat-vec unroll factor of plain launches that are neither tall nor long (0: as --mv-unroll).
    #[arg(long)]
    mv_short_unroll: Option<usize>,
    /// Mat-vec packed-f16 dequantisation through inline PTX on NVIDIA (true/false).
    #[arg(long)]
    mv_nv_half2: Option<bool>,
    /// Extra define for the mat-vec program (repeatable), for kernel experiments, e.g. `MV_DIAG_CHEAP_DOT`
    /// (a diagnostic whose results are wrong by design: it shows whether the mat-vec is bound by arithmetic).
    #[arg(long = "mv-define")]
    mv_defines: Vec<String>,
    /// Extra define for the attention program (repeatable), for kernel experiments, e.g. `ATT_MERGE=4` (how many
    /// splits' outputs the merge loads at once).
    #[arg(long = "att-define")]
    att_defines: Vec<String>,
    /// Decode attention contexts to time, comma-separated (default 192 and 4096).
    #[arg(long = "att-ctx", value_delimiter = ',')]
    att_contexts: Vec<usize>,
    /// Attention heads as QUERYxKVxDIM, e.g. 8x1x256 for Gemma 2B (default 32x32x128).
    #[arg(long, value_parser = parse_heads)]
    att_heads: Option<(usize, usize, usize)>,
    /// Mat-vec activations staged through local memory in tiles of this many 32-value chunks (0 = off).
    #[arg(long)]
    mv_x_local: Option<usize>,
    /// Mat-mat tiling as TMxTNxWMxWN, e.g. 64x128x4x8; a trailing `v` selects contiguous float4 blocks (64x128x4x8v).
    #[arg(long)]
    mm_tile: Option<String>,
    /// Decode attention: split the context until about this many work-groups per compute unit (default 8).
    #[arg(long)]
    att_groups_per_cu: Option<usize>,
    /// Decode attention: fewest positions per split (default 32).
    #[arg(long)]
    att_min_chunk: Option<usize>,
    /// Attention kernel: `rows` (K and V loaded together, rows sliced across work-items, the context split),
    /// `wide` (the same in one 256-wide work-group per head, no split), `positions` (a whole key row per
    /// work-item, values after the softmax), `mali` (one split per work-item, no local memory; built only on a Mali
    /// or under a Mali profile, else as `auto`) or `auto` (the default: wide, rows or positions by context length,
    /// the Mali kernel for decode on a Mali).
    #[arg(long, value_parser = parse_walk)]
    att_walk: Option<AttentionWalk>,
    /// Also try several mat-vec geometries and mat-mat tilings and print each.
    #[arg(long)]
    sweep: bool,
    /// Instead of the table, time single cold mat-vec launches from inside (per-work-group timestamps; NVIDIA
    /// only) and print where each launch's time goes.
    #[arg(long)]
    mv_timeline: bool,
}

fn parse_heads(text: &str) -> Result<(usize, usize, usize), String> {
    let parts: Vec<usize> = text
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{text:?}: {e}"))?;
    match parts[..] {
        [q, kv, d] if q > 0 && kv > 0 && d > 0 && q % kv == 0 => Ok((q, kv, d)),
        _ => Err(format!(
            "{text:?} is not QUERYxKVxDIM with query heads a multiple of KV heads (e.g. 8x1x256)"
        )),
    }
}

fn parse_dims(text: &str) -> Result<(usize, usize, usize), String> {
    let parts: Vec<usize> = text
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{text:?}: {e}"))?;
    match parts[..] {
        [h, f, v] if h > 0 && h % 32 == 0 && f > 0 && f % 32 == 0 && v > 0 => Ok((h, f, v)),
        _ => Err(format!(
            "{text:?} is not HIDDENxFFNxVOCAB with hidden and ffn positive multiples of 32 (e.g. 576x1536x49152)"
        )),
    }
}

fn parse_walk(text: &str) -> Result<AttentionWalk, String> {
    match text {
        "auto" => Ok(AttentionWalk::Auto),
        "rows" => Ok(AttentionWalk::Rows),
        "positions" => Ok(AttentionWalk::Positions),
        "wide" => Ok(AttentionWalk::WideRows),
        "mali" => Ok(AttentionWalk::Mali),
        other => Err(format!(
            "unknown attention kernel {other:?} (auto, rows, wide, positions or mali)"
        )),
    }
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

/// Times every case `opts` selects and prints its row.
fn run_suite(
    gpu: &Gpu,
    opts: &SuiteOptions,
    args: &Args,
    queued: &mut QueuedTimer,
    baseline: &Baseline,
) -> anyhow::Result<()> {
    for mut case in cases(gpu, opts).context("setting up the benchmark cases")? {
        let t = time_case(gpu, &mut case, args.warmup, args.iters)
            .with_context(|| format!("running {} {}", case.name, case.shape))?;
        let queued_us = queued
            .micros(&mut case, QUEUED_LAUNCHES)
            .with_context(|| format!("queuing {} {}", case.name, case.shape))?;
        println!(
            "{}",
            Row::new(&case, t, queued_us, baseline, args.peak_gflops)
        );
    }
    Ok(())
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    // Profiling on: the table reads each case's device time from its launches' events.
    let gpu = Gpu::open_with(&GpuOptions {
        selector: DeviceSelector::from_env(),
        profiling: true,
        ..GpuOptions::default()
    })
    .context("opening the OpenCL device")?;
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
        .context("measuring copy bandwidth")?
        / 1e9;
    println!(
        "copy bandwidth (clEnqueueCopyBuffer, {} MiB, read+write bytes): {copy_gbps:.1} GB/s",
        copy_bytes >> 20
    );
    println!("timing: {} warm-up + {} launches back to back on a profiling queue; us(dev) = mean device time per launch from \
events (GB/s, %copy, GFLOP/s use it); us(span) = (last end - first start) / launches, the steady-state time of \
back-to-back launches (%copy-s uses it); us(pipe) = wall clock per launch of launches enqueued back to back \
without events, as a decode step enqueues them (%copy-p uses it); us(queue) = device time per launch of {} launches \
queued behind a long copy, so the host's enqueue rate cannot set the pace (%copy-q uses it)\n", args.warmup, args.iters,
        QUEUED_LAUNCHES);

    let default_mv = MatvecConfig::for_gpu(&gpu);
    let gpu_geometry_given = args.mv_wg.is_some()
        || args.mv_rows.is_some()
        || args.mv_no_shuffle
        || args.mv_x_local.is_some()
        || args.mv_unroll.is_some()
        || args.mv_short_unroll.is_some()
        || args.mv_nv_half2.is_some();
    let cpu = if args.mv_gpu_kernels || gpu_geometry_given {
        None
    } else if args.mv_cpu_rows.is_some() || args.mv_cpu_wg.is_some() {
        let base = default_mv.cpu.unwrap_or(CpuMatvecGeometry::DEFAULT);
        Some(CpuMatvecGeometry {
            rows_per_item: args.mv_cpu_rows.unwrap_or(base.rows_per_item),
            work_group: args.mv_cpu_wg.unwrap_or(base.work_group),
        })
    } else {
        default_mv.cpu
    };
    let untouched = cpu == default_mv.cpu
        && args.mv_wg.is_none()
        && args.mv_rows.is_none()
        && !args.mv_no_shuffle
        && args.mv_x_local.is_none()
        && args.mv_unroll.is_none()
        && args.mv_short_unroll.is_none()
        && args.mv_nv_half2.is_none();
    let matvec = match (args.mv_wg, args.mv_rows) {
        _ if untouched => None,
        (wg, rows) => Some(MatvecConfig {
            work_group: wg.unwrap_or(default_mv.work_group),
            rows_per_group: rows.unwrap_or(default_mv.rows_per_group),
            warp_shuffle: !args.mv_no_shuffle,
            x_local_chunks: args.mv_x_local.unwrap_or(default_mv.x_local_chunks),
            unroll: args.mv_unroll.unwrap_or(default_mv.unroll),
            short_unroll: match (args.mv_short_unroll, args.mv_unroll) {
                (Some(n), _) => n,
                (None, Some(_)) => 0,
                (None, None) => default_mv.short_unroll,
            },
            nv_half2: args.mv_nv_half2.unwrap_or(default_mv.nv_half2),
            cpu,
            ..default_mv
        }),
    };
    let matmul = args.mm_tile.as_deref().map(parse_tile).transpose()?;
    let opts = SuiteOptions {
        matvec_defines: args.mv_defines.clone(),
        filter: args.kernels.clone(),
        matvec,
        matmul,
        small: args.small,
        dims: args.dims,
        attention_split: match (args.att_groups_per_cu, args.att_min_chunk) {
            (None, None) => None,
            (g, c) => {
                let d = SplitPolicy::default();
                Some(SplitPolicy {
                    groups_per_unit: g.unwrap_or(d.groups_per_unit),
                    min_chunk: c.unwrap_or(d.min_chunk),
                })
            }
        },
        attention_walk: args.att_walk,
        attention_defines: args.att_defines.clone(),
        attention_contexts: args.att_contexts.clone(),
        attention_heads: args.att_heads,
    };
    let mut queued =
        QueuedTimer::new(&gpu, copy_bytes).context("allocating the queued-launch copy")?;
    let baseline = Baseline::measure(&gpu, copy_gbps, &mut queued, args.warmup, args.iters)
        .context("timing the launch floor")?;
    let Baseline {
        floor_us,
        floor_pipe_us,
        floor_queued_us,
        ..
    } = baseline;
    println!(
        "launch floor (a 32-float add): {floor_us:.2} us by its event, {floor_pipe_us:.2} us back to back without \
         events, {floor_queued_us:.2} us device time per launch queued behind a {} MiB copy (the host out of the \
         way; back to back, a launch this short measures the host's enqueue rate); %copy-n / %copy-qn = bandwidth \
         net of the event floor / the queued floor (from us(dev) / us(queue)), diagnostics of the kernel body; \
         %copy, %copy-p and %copy-q are the measured figures\n",
        copy_bytes >> 20
    );
    if args.mv_timeline {
        return print_timelines(&gpu, &opts);
    }
    println!("{}", header());
    run_suite(&gpu, &opts, &args, &mut queued, &baseline)?;

    if args.sweep {
        for sweep in sweeps(&gpu, &opts) {
            println!("\nsweep: {}", sweep.title);
            println!("{}", header());
            for o in &sweep.runs {
                run_suite(&gpu, o, &args, &mut queued, &baseline)?;
            }
        }
    }
    Ok(())
}

/// `--mv-timeline`: the mat-vec shapes of a 7B decode step, each launch timed from inside.
fn print_timelines(gpu: &Gpu, opts: &SuiteOptions) -> anyhow::Result<()> {
    let defines = opts.matvec_define_pairs();
    println!(
        "one cold launch per shape (median of 5): times in us from the first work-group's start; phases are \
         medians over work-groups (stage x / dot products with their loads / reduce and store)"
    );
    for (rows, cols) in TIMELINE_SHAPES {
        match matvec_timeline(gpu, opts.matvec, &defines, rows, cols, 5)
            .with_context(|| format!("timeline of {rows}x{cols}"))?
        {
            None => {
                println!("no timestamps on this device (the timeline needs NVIDIA's inline PTX)");
                return Ok(());
            }
            Some(t) => println!(
                "{rows}x{cols}: {} groups on {} units (<= {} each); span {:.2}; starts p10/50/90/max {:.2} {:.2} \
                 {:.2} {:.2}; ends first/p10/50/90/max {:.2} {:.2} {:.2} {:.2} {:.2}; phases {:.2} / {:.2} / {:.2}",
                t.groups,
                t.units,
                t.max_groups_per_unit,
                t.span_us,
                t.starts_us[0],
                t.starts_us[1],
                t.starts_us[2],
                t.starts_us[3],
                t.ends_us[0],
                t.ends_us[1],
                t.ends_us[2],
                t.ends_us[3],
                t.ends_us[4],
                t.phases_us[0],
                t.phases_us[1],
                t.phases_us[2]
            ),
        }
    }
    Ok(())
}
