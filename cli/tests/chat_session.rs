//! `tlite chat --session FILE` with the bundled tiny model: a chat split over two runs answers what one run
//! answers, the second run restoring the cache instead of prefilling; a damaged file is reported and the chat goes
//! on from its conversation with the same answer; a file that is not a session is refused and left untouched.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/models/default");

/// Runs `tlite chat` on `input`; its status, stdout and stderr.
fn chat(input: &str, session: Option<&Path>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tlite"));
    cmd.args([
        "chat",
        "--model",
        MODEL,
        "--max-tokens",
        "4",
        "--ctx",
        "256",
    ]);
    if let Some(file) = session {
        cmd.arg("--session").arg(file);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tlite starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("the input is written");
    let out = child.wait_with_output().expect("tlite runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_chat_resumed_from_its_file_answers_as_if_it_never_stopped() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("chat.session");

    let (ok, whole, err) = chat("Once upon a time\nand then\n", None);
    assert!(ok, "{err}");
    let replies: Vec<&str> = whole.lines().collect();
    assert_eq!(replies.len(), 2, "{whole}");

    let (ok, first, err) = chat("Once upon a time\n", Some(&file));
    assert!(ok, "{err}");
    assert!(err.contains("new; saved after each turn"), "{err}");
    assert_eq!(first.lines().next(), Some(replies[0]));
    let saved = std::fs::read(&file).expect("the session was saved");

    let (ok, second, err) = chat("and then\n", Some(&file));
    assert!(ok, "{err}");
    assert!(err.contains("restored 2 messages and"), "{err}");
    assert_eq!(second.lines().next(), Some(replies[1]));

    // The cache damaged: said so, and the conversation is read again to the same answer.
    let mut damaged = saved.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x20;
    std::fs::write(&file, &damaged).expect("the damaged copy is written");
    let (ok, again, err) = chat("and then\n", Some(&file));
    assert!(ok, "{err}");
    assert!(err.contains("fail their SHA-256 checksum"), "{err}");
    assert!(err.contains("read again on the next turn"), "{err}");
    assert_eq!(again.lines().next(), Some(replies[1]));
    // ...and the file is whole again after the turn.
    assert!(chat("", Some(&file)).2.contains("restored 4 messages"));
}

#[test]
fn a_file_that_is_not_a_session_is_refused_and_kept() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"my notes, not a session").expect("the file is written");
    let (ok, _, err) = chat("hello\n", Some(&file));
    assert!(!ok, "tlite accepted a foreign file: {err}");
    assert!(err.contains("is not a tlite session file"), "{err}");
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(
        std::fs::read(&file).expect("the file is still there"),
        b"my notes, not a session"
    );
}
