//! `tlite chat`: an interactive loop on stdin. Each turn re-renders the conversation with the model's chat
//! template; the KV cache already holds everything but the new turn, so only that is prefilled.

use std::io::{BufRead, Write};

use crate::cmd_generate::{print_timings, SessionArgs};

/// Arguments of this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    session: SessionArgs,
}

/// Runs the subcommand: one line per turn; `/reset` forgets the conversation; end of input (Ctrl-D) quits.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (mut session, options) = args.session.open()?;
    if let Some(system) = &args.system {
        session.set_system(system);
    }
    eprintln!(
        "tlite chat: {} ({:?} template). One line per turn, /reset to start over, Ctrl-D to quit.",
        session.model_path.display(),
        session.template
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let Some(line) = lines.next() else {
            eprintln!();
            return Ok(());
        };
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/reset" {
            session.reset_chat()?;
            eprintln!("(conversation cleared)");
            continue;
        }
        let forgotten_before = session.forgotten_messages();
        let mut stdout = std::io::stdout().lock();
        let result = session.chat_turn(line, &options, |piece| {
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        });
        writeln!(stdout)?;
        let forgotten = session.forgotten_messages() - forgotten_before;
        if forgotten > 0 {
            eprintln!(
                "(context full: the {forgotten} oldest messages were dropped and the rest read again; \
                 /reset to start over)"
            );
        }
        match result {
            Ok(out) => {
                if args.session.sampling.timings {
                    print_timings(&out);
                }
            }
            // A turn that does not fit is reported and the chat goes on (e.g. after /reset).
            Err(e) => eprintln!("error: {e}"),
        }
    }
}
