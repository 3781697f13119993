//! `tlite`: the command line. It only parses arguments and prints; the work lives in the library crates.

mod cmd_bench;
mod cmd_bench_kernels;
mod cmd_chat;
mod cmd_devices;
mod cmd_generate;
mod cmd_quantize;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tlite",
    version,
    about = "LLM inference on mobile-phone GPUs through OpenCL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every OpenCL platform and device with the capabilities tlite uses.
    Devices(cmd_devices::Args),
    /// Generate text from a prompt.
    Generate(cmd_generate::Args),
    /// Chat interactively, keeping the KV cache between turns.
    Chat(cmd_chat::Args),
    /// Quantise a model folder to M0E4 ahead of time.
    Quantize(cmd_quantize::Args),
    /// End-to-end prefill/decode benchmark on synthetic weights of real model shapes.
    Bench(cmd_bench::Args),
    /// Per-kernel benchmark table.
    BenchKernels(cmd_bench_kernels::Args),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TLITE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(args) => cmd_devices::run(args),
        Command::Generate(args) => cmd_generate::run(args),
        Command::Chat(args) => cmd_chat::run(args),
        Command::Quantize(args) => cmd_quantize::run(args),
        Command::Bench(args) => cmd_bench::run(args),
        Command::BenchKernels(args) => cmd_bench_kernels::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
