//! `tlite`: the command line. It only parses arguments and prints; the work lives in the library crates.

mod chat_session;
mod cmd_bench;
mod cmd_bench_kernels;
mod cmd_bench_session;
mod cmd_chat;
mod cmd_devices;
mod cmd_devices_profile;
mod cmd_generate;
mod cmd_quantize;
mod cmd_tokenize;
mod ignored_flags;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    /// Time to the first token of a chat resumed from a session file against prefilling its history again.
    BenchSession(cmd_bench_session::Args),
    /// Print the token ids of a text, like llama.cpp's llama-tokenize.
    Tokenize(cmd_tokenize::Args),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TLITE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One line on the first start, when the OpenCL compiler may take a while (never on cache hits).
    clkernels::runtime::set_compile_notice(|| eprintln!("compiling GPU kernels (first run only)…"));
    quiet_on_closed_stdout();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Some(note) = matches
        .subcommand()
        .and_then(|(_, sub)| ignored_flags::note(sub))
    {
        eprintln!("{note}");
    }
    let result = match cli.command {
        Command::Devices(args) => cmd_devices::run(args),
        Command::Generate(args) => cmd_generate::run(args),
        Command::Chat(args) => cmd_chat::run(args),
        Command::Quantize(args) => cmd_quantize::run(args),
        Command::Bench(args) => cmd_bench::run(args),
        Command::BenchKernels(args) => cmd_bench_kernels::run(args),
        Command::BenchSession(args) => cmd_bench_session::run(args),
        Command::Tokenize(args) => cmd_tokenize::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that stopped early (`tlite generate ... | head`) is not a failure, as for every Unix tool.
        Err(err) if is_broken_pipe(&err) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_text(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// True when the error comes from writing to a pipe whose reader has gone.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes joined by ": ", each said once: error types that print their source inside their own
/// message (`I/O error on FILE: CAUSE`) would otherwise show the cause twice.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// `println!` into a closed pipe panics; exit quietly with success instead, like an error result would.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(engine::EngineError::io("/m", io)).context("loading /m");
        assert_eq!(
            error_text(&err),
            "loading /m: I/O error on /m: no such file"
        );
    }

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe");
        let err = anyhow::Error::new(io).context("writing the answer");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
