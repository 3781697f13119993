//! Resuming a saved chat against prefilling its history again, behind `tlite bench-session`.
//!
//! A history of `history` tokens is followed by a new message of `new` tokens, and the time to the first token
//! of the reply is measured two ways on one loaded model: **re-prefill** (empty cache: history and message are
//! prefilled, then the first token is chosen) and **resume** ([`Session::resume_from`] on a file saved with the
//! history in its cache: read, verify every checksum, write the cache to the device; then only the message is
//! prefilled). Greedy decoding, chosen on the device, as `tlite chat` does by default. The file is read back
//! right after it was written, so it comes from the page cache, as when a chat is resumed soon after it was left;
//! a cold read adds the disk's time for the file's size. The model's identity is computed once per load; resume
//! is timed both with it known (a chat resumed again in the same process) and with it computed during the restore
//! (a freshly started `tlite chat --session`, where it overlaps reading the file).

use std::path::Path;
use std::time::{Duration, Instant};

use engine::generate::{GenerateOptions, Generation};
use engine::session::Session;
use engine::session_file::{Resumed, SessionFileError};

/// What one run measured (medians over the repetitions).
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeReport {
    /// Tokens of history in the cache.
    pub history_tokens: usize,
    /// Tokens of the new message.
    pub new_tokens: usize,
    /// Empty cache: prefill of history and message, up to the first token.
    pub reprefill: Duration,
    /// Restoring the file: read, checksums, upload.
    pub restore: Duration,
    /// After the restore: prefill of the message, up to the first token.
    pub after_restore: Duration,
    /// `restore + after_restore`.
    pub resume: Duration,
    /// The same with the model's identity not yet known, as in a freshly started process.
    pub resume_fresh: Duration,
    /// Writing the file (atomically, fsynced).
    pub save: Duration,
    /// Size of the file.
    pub file_bytes: u64,
    /// Computing the model's identity, once per load.
    pub identity: Duration,
    /// Whether both ways chose the same first token (prefill chunks fall differently, so rounding may differ).
    pub same_first_token: bool,
}

impl ResumeReport {
    /// Resume time over re-prefill time (the target is below 0.1).
    pub fn ratio(&self) -> f64 {
        self.resume.as_secs_f64() / self.reprefill.as_secs_f64().max(1e-12)
    }

    /// The same for a freshly started process.
    pub fn ratio_fresh(&self) -> f64 {
        self.resume_fresh.as_secs_f64() / self.reprefill.as_secs_f64().max(1e-12)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// `count` token ids of `text` repeated, BOS first where the tokenizer wants one.
fn tokens_of(session: &Session, text: &str, count: usize) -> Result<Vec<u32>, SessionFileError> {
    let one = session.generator.prompt_tokens(text, Some(false))?;
    if one.is_empty() {
        return Err(SessionFileError::Engine(
            engine::EngineError::InvalidOption("the filler text has no tokens".into()),
        ));
    }
    Ok(one.iter().copied().cycle().take(count).collect())
}

/// Runs the comparison on `session` (its conversation and cache are replaced), using `file` as the session file;
/// `reps` timed repetitions of each way after one untimed warm-up.
pub fn run_resume_bench(
    session: &mut Session,
    history: usize,
    new: usize,
    reps: usize,
    file: &Path,
) -> Result<ResumeReport, SessionFileError> {
    const FILLER: &str =
        "The lighthouse keeper wrote in his log every evening: the wind, the ships that \
        passed, the colour of the sea, and the small things that made one day unlike another. ";
    const MESSAGE: &str = "What did he write on the last evening? ";
    let mut prompt = session.generator.prompt_tokens(FILLER, None)?;
    prompt.extend(tokens_of(
        session,
        FILLER,
        history.saturating_sub(prompt.len()),
    )?);
    prompt.truncate(history);
    let history_tokens = prompt.len();
    prompt.extend(tokens_of(session, MESSAGE, new)?);
    let options = GenerateOptions {
        max_tokens: 1,
        ..GenerateOptions::default()
    };
    let first = |g: &Generation| g.tokens.first().copied();

    let started = Instant::now();
    session.model_identity()?;
    let identity = started.elapsed();

    let mut reprefill = Vec::new();
    let mut reprefill_token = None;
    for rep in 0..=reps {
        session.generator.reset()?;
        let started = Instant::now();
        let out = session
            .generator
            .generate_from_tokens(&prompt, &options, |_| {})?;
        if rep > 0 {
            reprefill.push(started.elapsed());
        }
        reprefill_token = first(&out);
    }

    session.generator.reset()?;
    session
        .generator
        .generate_from_tokens(&prompt[..history_tokens], &options, |_| {})?;
    let started = Instant::now();
    let saved = session.save_to(file)?;
    let save = started.elapsed();

    let (mut restore, mut after, mut resume, mut fresh) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut resume_token = None;
    for rep in 0..=2 * reps {
        // Odd repetitions start as a fresh process would, without the model's identity.
        let cold = rep % 2 == 1;
        if cold {
            session.forget_model_identity();
        }
        session.generator.reset()?;
        let started = Instant::now();
        if let Resumed::Conversation { reason, .. } = session.resume_from(file)? {
            return Err(reason);
        }
        let restored = started.elapsed();
        let out = session
            .generator
            .generate_from_tokens(&prompt, &options, |_| {})?;
        let total = started.elapsed();
        match (rep, cold) {
            (0, _) => {}
            (_, true) => fresh.push(total),
            (_, false) => {
                restore.push(restored);
                after.push(total - restored);
                resume.push(total);
            }
        }
        resume_token = first(&out);
    }
    Ok(ResumeReport {
        history_tokens,
        new_tokens: prompt.len() - history_tokens,
        reprefill: median(reprefill),
        restore: median(restore),
        after_restore: median(after),
        resume: median(resume),
        resume_fresh: median(fresh),
        save,
        file_bytes: saved.bytes,
        identity,
        same_first_token: reprefill_token == resume_token,
    })
}
