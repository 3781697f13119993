//! `tlite chat`: an interactive loop on stdin. Each turn re-renders the conversation with the model's chat
//! template; the KV cache already holds everything but the new turn, so only that is prefilled. A conversation
//! longer than the context goes on through context shifts (the system prompt stays), or, with
//! `--context-shift off`, by dropping its oldest exchanges.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use engine::generate::LanguageModel;

use crate::cmd_generate::{print_context_note, print_timings, SessionArgs};

/// Arguments of this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// System prompt (replacing a restored session's own).
    #[arg(long)]
    system: Option<String>,
    /// Keep the chat in FILE: restore it (conversation and KV cache) on start, save it after each turn.
    #[arg(long = "session", value_name = "FILE")]
    session_file: Option<PathBuf>,
    #[command(flatten)]
    session: SessionArgs,
}

/// Input lines longer than this are refused unread; shorter ones that still exceed the context are refused after
/// tokenising. A token is rarely longer than 16 bytes, so `16 × context` bytes cannot fit.
const BYTES_PER_TOKEN_BOUND: usize = 16;
/// The largest line ever read whole (1 MiB), whatever the context.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Runs the subcommand: one line per turn; `/reset` forgets the conversation; end of input (Ctrl-D) quits. A line
/// that is not UTF-8, or too long for the context, is refused and the chat goes on.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (mut session, options) = args.session.open()?;
    if let Some(file) = &args.session_file {
        crate::chat_session::restore(&mut session, file)?;
    }
    if let Some(system) = &args.system {
        session.set_system(system);
    }
    let format = if session.uses_model_template() {
        format!(
            "the model's chat template, {:?} stop strings",
            session.template
        )
    } else {
        format!("built-in {:?} format", session.template)
    };
    eprintln!(
        "tlite chat: {} ({format}). One line per turn, /reset to start over, Ctrl-D to quit.",
        session.model_path.display(),
    );
    let context = session.generator.model().context_len();
    let max_line = context
        .saturating_mul(BYTES_PER_TOKEN_BOUND)
        .clamp(4096, MAX_LINE_BYTES);
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let line = match read_line(&mut input, max_line)? {
            Line::End => {
                eprintln!();
                return Ok(());
            }
            Line::NotUtf8 => {
                eprintln!("(that line is not valid UTF-8 text and was ignored)");
                continue;
            }
            Line::TooLong(bytes) => {
                eprintln!(
                    "(a line of {bytes} bytes was refused unread: this model's context of {context} tokens takes lines of at most {max_line} bytes)"
                );
                continue;
            }
            Line::Text(text) => text,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/reset" {
            session.reset_chat()?;
            if let Some(file) = &args.session_file {
                crate::chat_session::save(&session, file);
            }
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
                print_context_note(&out, context, &options);
                if let Some(file) = &args.session_file {
                    crate::chat_session::save(&session, file);
                }
                if args.session.sampling.timings {
                    print_timings(&out);
                }
            }
            // A turn that does not fit is reported and the chat goes on (e.g. after /reset).
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

/// One line of input as the chat sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A line of text, without its line ending.
    Text(String),
    /// A line that is not UTF-8 (a binary paste, a wrong terminal encoding).
    NotUtf8,
    /// A line longer than the limit, skipped to its end without being kept; how many bytes it had.
    TooLong(u64),
    /// End of input.
    End,
}

/// Reads one line of at most `max` bytes (line ending not counted). A longer line is consumed to its end in the
/// reader's own buffer-sized pieces, so a 50 MB paste costs neither memory nor tokenising time.
fn read_line(input: &mut impl BufRead, max: usize) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    // `max` bytes, then up to two for "\r\n".
    let n = Read::take(&mut *input, max as u64 + 2).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > max {
        let mut bytes = n as u64;
        if !(n == max + 2 && buf.len() == n) {
            // The newline was read already.
            return Ok(Line::TooLong(bytes));
        }
        loop {
            let chunk = match input.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            let (used, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            input.consume(used);
            bytes += used as u64;
            if done {
                break;
            }
        }
        return Ok(Line::TooLong(bytes));
    }
    Ok(match String::from_utf8(buf) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::NotUtf8,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::BufReader;

    /// Reads every line of `data` with limit `max` through a small buffer (so long lines span many refills).
    fn lines(data: &[u8], max: usize) -> Vec<Line> {
        let mut r = BufReader::with_capacity(7, data);
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut r, max).unwrap();
            if line == Line::End {
                return out;
            }
            out.push(line);
        }
    }

    #[test]
    fn text_lines_and_line_endings() {
        assert_eq!(
            lines(b"hi\r\nthere\nlast", 10),
            vec![
                Line::Text("hi".into()),
                Line::Text("there".into()),
                Line::Text("last".into())
            ]
        );
        // Exactly the limit passes, with either line ending.
        assert_eq!(
            lines(b"0123456789\r\n0123456789\n", 10),
            vec![Line::Text("0123456789".into()); 2]
        );
    }

    #[test]
    fn an_invalid_line_is_reported_and_the_next_one_read() {
        assert_eq!(
            lines(b"\xff\xfe oops\nfine\n", 100),
            vec![Line::NotUtf8, Line::Text("fine".into())]
        );
    }

    #[test]
    fn a_long_line_is_skipped_without_being_kept() {
        let mut data = vec![b'x'; 100_000];
        data.extend_from_slice(b"\nafter\n");
        assert_eq!(
            lines(&data, 10),
            vec![Line::TooLong(100_001), Line::Text("after".into())]
        );
        // One byte over, and a long last line without a newline.
        assert_eq!(
            lines(b"01234567890\nok\nxxxxxxxxxxxxxxxxxxxx", 10),
            vec![
                Line::TooLong(12),
                Line::Text("ok".into()),
                Line::TooLong(20)
            ]
        );
        // The reader is left just after the long line: nothing of it is read twice.
        let mut r = BufReader::with_capacity(4, &b"xxxxxxxxxxxx\nnext"[..]);
        assert_eq!(read_line(&mut r, 3).unwrap(), Line::TooLong(13));
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "next");
    }
}
