//! `tlite bench`: end-to-end prefill and decode speed on synthetic M0E4 weights of real model shapes, beside the
//! bandwidth roofline (weight bytes per token over the device copy bandwidth measured in the same run).

use bench::end_to_end::{run_bench, synthetic_model, ActivationFigures, BenchArch, StepProfile};
use clkernels::runtime::{DeviceSelector, Gpu, GpuOptions, ProfileChoice, QueuePriority};

/// Arguments of this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model shapes: llama2-7b, gemma-2b, gemma2-2b, qwen1.5-4b, chatglm2-6b, smollm2-135m, qwen3-1.7b, gemma3-1b
    /// or phi4-mini.
    #[arg(long, default_value = "llama2-7b")]
    arch: BenchArch,
    /// Prompt tokens prefilled.
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    /// Tokens generated (greedy, chosen on the device).
    #[arg(long, default_value_t = 64)]
    gen: usize,
    /// Run only this many decoder layers (a smoke run on a small machine; 7B weights are about 3.9 GB).
    #[arg(long)]
    layers: Option<usize>,
    /// M0E4 group size (32, 64 or 128).
    #[arg(long, default_value_t = 32)]
    group: usize,
    /// Store the output head in M0E4 too (by default it stays f16, like `tlite generate`'s).
    #[arg(long)]
    quantize_head: bool,
    /// Prompt tokens per prefill step.
    #[arg(long, default_value_t = 256)]
    prefill_chunk: usize,
    /// OpenCL device: index or name substring.
    #[arg(long)]
    device: Option<String>,
    /// GPU queue priority (normal by default here, to measure the device rather than the scheduler).
    #[arg(long, default_value = "normal")]
    priority: QueuePriority,
    /// Treat the device as this phone (a bundled profile name, a profile JSON path, or none; default:
    /// $TLITE_DEVICE_PROFILE): its limits decide buffer splits, kernel variants and the context.
    #[arg(long, value_name = "NAME|FILE")]
    device_profile: Option<String>,
    /// After the timed steps, time every kernel of one more decode step on the device and print where the
    /// step's time goes (the queue is opened with profiling, which may cost a little host time per launch).
    #[arg(long)]
    profile: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.arch.config(args.layers);
    let group = fp4::GroupSize::try_from(args.group)?;
    let selector = args
        .device
        .as_deref()
        .map(DeviceSelector::parse)
        .unwrap_or_else(DeviceSelector::from_env);
    let gpu = Gpu::open_with(&GpuOptions {
        selector,
        priority: args.priority,
        profiling: args.profile,
        profile: match &args.device_profile {
            Some(text) => ProfileChoice::parse(text)?,
            None => ProfileChoice::FromEnv,
        },
        ..GpuOptions::default()
    })?;
    eprintln!(
        "building synthetic {:?} weights: {} layers, hidden {}, ffn {}, vocab {}, M0E4 G{} (embedding f16, head {})",
        args.arch,
        config.shape.layers,
        config.shape.hidden,
        config.shape.ffn,
        config.shape.vocab,
        args.group,
        if args.quantize_head { "M0E4" } else { "f16" }
    );
    let model = synthetic_model(&config, group, 7, args.quantize_head)?;
    let r = run_bench(
        gpu.clone(),
        &model,
        args.prompt_len,
        args.gen,
        args.prefill_chunk,
    )?;
    let gb = |b: f64| b / 1e9;
    println!("device            {}", gpu.caps().display_name());
    println!(
        "shapes            {:?}, {} layers, M0E4 G{}",
        args.arch, config.shape.layers, args.group
    );
    println!(
        "prompt / gen      {} / {} tokens (prefill chunk {})",
        args.prompt_len, args.gen, args.prefill_chunk
    );
    println!("device memory     {:.2} GB", gb(r.device_bytes as f64));
    println!("memory plan       {}", r.context);
    println!(
        "embedding / head  {} / {} buffer(s) (largest allocation {:.3} GB)",
        r.embedding_buffers,
        r.head_buffers,
        gb(gpu.caps().max_alloc_bytes as f64)
    );
    let before = ActivationFigures::of(&config, r.ctx, r.max_chunk)?;
    println!(
        "activations       {:.2} MiB planned ({} buffers) vs {:.2} MiB hand-sized before (ctx {}, chunk {})",
        mib(r.activation_bytes),
        before.plan_buffers,
        mib(before.scratch_bytes),
        r.ctx,
        r.max_chunk
    );
    println!("prefill           {:.1} tok/s", r.prefill_tok_s);
    println!("decode            {:.2} tok/s", r.decode_tok_s);
    println!(
        "weights/token     {:.3} GB (+ {:.3} GB KV at the last step)",
        gb(r.weight_bytes_per_token as f64),
        gb(r.kv_bytes_last_token as f64)
    );
    println!(
        "copy bandwidth    {:.1} GB/s (device copy, read + write)",
        gb(r.copy_bytes_per_s)
    );
    println!("roofline          {:.2} tok/s", r.roofline_tok_s());
    println!("decode/roofline   {:.1} %", r.percent_of_roofline());
    println!(
        "decode step       {:.3} ms wall, of which {:.3} ms host enqueue of the decoder's kernels",
        1e3 / r.decode_tok_s,
        1e3 * r.decode_enqueue_s_per_token
    );
    if let Some(profile) = StepProfile::of(&r.decode_profile) {
        print_profile(&profile);
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Per-kernel device time of one decode step, most expensive first, and the idle time between launches.
fn print_profile(p: &StepProfile) {
    println!(
        "\none decode step on the device: {:.1} us from first start to last end, {} launches, {:.1} us in \
         kernels, {:.1} us between them",
        p.span_ns as f64 / 1e3,
        p.launches,
        p.busy_ns as f64 / 1e3,
        p.idle_ns() as f64 / 1e3
    );
    println!(
        "{:<32} {:>8} {:>12} {:>10} {:>7}",
        "kernel", "launches", "us per step", "us each", "% span"
    );
    for k in &p.kernels {
        let ns = k.busy_ns as f64;
        println!(
            "{:<32} {:>8} {:>12.1} {:>10.2} {:>7.1}",
            k.kernel,
            k.launches,
            ns / 1e3,
            ns / 1e3 / k.launches as f64,
            100.0 * ns / p.span_ns.max(1) as f64
        );
    }
}
