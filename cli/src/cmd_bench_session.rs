//! `tlite bench-session`: the time to the first token of a chat resumed from a session file against prefilling
//! its history again, on a real model (the default one unless `--model` says otherwise).

use std::path::PathBuf;

use bench::session_resume::run_resume_bench;

use crate::cmd_generate::ModelArgs;

/// Arguments of this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tokens of history in the saved cache.
    #[arg(long, default_value_t = 1000)]
    history: usize,
    /// Tokens of the new message prefilled after it.
    #[arg(long, default_value_t = 8)]
    new: usize,
    /// Timed repetitions of each way (after one untimed warm-up); the medians are printed.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Session file to write and read (default: one in the temporary folder, removed afterwards).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.history == 0 || args.new == 0 || args.reps == 0 {
        anyhow::bail!("--history, --new and --reps must each be at least 1");
    }
    let mut session = args.model.open()?;
    let temp = std::env::temp_dir().join(format!("tlite-bench-{}.session", std::process::id()));
    let file = args.file.clone().unwrap_or_else(|| temp.clone());
    let result = run_resume_bench(&mut session, args.history, args.new, args.reps, &file);
    if args.file.is_none() {
        let _ = std::fs::remove_file(&temp);
    }
    let r = result?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!(
        "device            {}",
        session.generator.model().gpu().caps().name
    );
    println!("model             {}", session.model_path.display());
    println!(
        "history / new     {} / {} tokens ({} reps, medians)",
        r.history_tokens, r.new_tokens, args.reps
    );
    println!(
        "re-prefill        {:.2} ms to the first token",
        ms(r.reprefill)
    );
    println!(
        "resume            {:.2} ms to the first token = restore {:.2} ms (read, verify, upload) + {:.2} ms \
         (prefill of the new tokens, first token)",
        ms(r.resume),
        ms(r.restore),
        ms(r.after_restore)
    );
    println!("resume/re-prefill {:.3}", r.ratio());
    println!(
        "fresh process     {:.2} ms to the first token, the model identity computed meanwhile: {:.3} of \
         re-prefill",
        ms(r.resume_fresh),
        r.ratio_fresh()
    );
    println!(
        "file              {:.2} MiB, saved in {:.2} ms (fsynced)",
        r.file_bytes as f64 / (1024.0 * 1024.0),
        ms(r.save)
    );
    println!(
        "model identity    {:.2} ms alone, once per load",
        ms(r.identity)
    );
    println!(
        "same first token  {}",
        if r.same_first_token { "yes" } else { "no" }
    );
    Ok(())
}
