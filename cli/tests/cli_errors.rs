//! How the binary reports problems (issue 17, item 6): once, in words, and not at all for a reader that stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn default_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/default")
}

fn run(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tlite"))
        .args(args)
        .output()
        .expect("run tlite");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn an_underlying_error_is_printed_once() {
    let (ok, err) = run(&["generate", "--model", "/no/such/model", "--prompt", "x"]);
    assert!(!ok);
    let cause = "No such file or directory";
    assert_eq!(err.matches(cause).count(), 1, "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

#[test]
fn a_zero_context_is_an_error() {
    let model = default_model();
    let (ok, err) = run(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "x",
        "--ctx",
        "0",
    ]);
    assert!(!ok);
    assert!(err.contains("must be at least 1 token"), "{err}");
}

#[test]
fn storage_flags_on_a_quantised_folder_get_a_note() {
    let t = tempfile::tempdir().unwrap();
    let q = t.path().join("q");
    let (ok, err) = run(&["quantize", s(&default_model()), s(&q)]);
    assert!(ok, "{err}");
    // The note comes before the model is opened, whether or not a device is found afterwards.
    let (_, err) = run(&[
        "generate",
        "--model",
        s(&q),
        "--prompt",
        "x",
        "--max-tokens",
        "1",
        "--weights",
        "f16",
        "--group",
        "64",
    ]);
    assert!(
        err.contains("already quantised by tlite quantize; --weights, --group are ignored"),
        "{err}"
    );
    let (_, err) = run(&[
        "generate",
        "--model",
        s(&q),
        "--prompt",
        "x",
        "--max-tokens",
        "1",
    ]);
    assert!(!err.contains("ignored"), "{err}");
}

/// Needs an OpenCL device (PoCL here), as the engine's GPU tests do.
#[test]
fn output_into_a_closed_pipe_exits_quietly_with_success() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tlite"))
        .args([
            "generate",
            "--model",
            s(&default_model()),
            "--prompt",
            "Once upon a time",
            "--max-tokens",
            "64",
        ])
        .env("TLITE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closing the reader before anything is written makes the first write fail, as `| head -c0` would.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        !err.contains("Broken pipe") && !err.contains("error"),
        "{err}"
    );
}
