//! `tlite chat --session FILE`: restore the chat from FILE on start and save it after each turn, telling the user
//! on stderr what happened. A file that cannot be used never stops the chat, except when saving would overwrite
//! something that may be of value: a file that is not a tlite session (or is one of a newer format), a file that
//! cannot be read, or a folder is refused.

use std::path::Path;
use std::time::Instant;

use engine::session::Session;
use engine::session_file::{Resumed, SessionFileError};

/// Restores `file` into `session`. Fails only when `file` exists and must not be overwritten.
pub fn restore(session: &mut Session, file: &Path) -> anyhow::Result<()> {
    let name = file.display();
    match std::fs::metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("(session {name}: new; saved after each turn)");
            return Ok(());
        }
        // An empty file holds nothing to lose (`touch FILE`).
        Ok(m) if m.is_file() && m.len() == 0 => {
            eprintln!("(session {name}: empty; saved after each turn)");
            return Ok(());
        }
        Ok(m) if m.is_dir() => anyhow::bail!("--session {name} is a folder; it takes a file"),
        _ => {}
    }
    let started = Instant::now();
    match session.resume_from(file) {
        Ok(Resumed::Cache {
            positions,
            messages,
        }) => eprintln!(
            "(session {name}: restored {messages} messages and {positions} cached tokens in {:.0} ms; nothing \
             to prefill again)",
            started.elapsed().as_secs_f64() * 1e3
        ),
        Ok(Resumed::Conversation { messages, reason }) => eprintln!(
            "({reason}. The conversation's {messages} messages were restored without it and are read again on \
             the next turn.)"
        ),
        Err(e) if e.is_foreign() || matches!(e, SessionFileError::Io { .. }) => {
            anyhow::bail!("{e}; refusing to overwrite it: choose another --session file")
        }
        Err(e) => eprintln!(
            "({e}. Nothing could be restored: starting a new conversation, which replaces the file after the \
             first turn.)"
        ),
    }
    Ok(())
}

/// Saves `session` to `file`; a failure is reported and the chat goes on.
pub fn save(session: &Session, file: &Path) {
    if let Err(e) = session.save_to(file) {
        eprintln!("(the session was not saved: {e})");
    }
}
