//! `tlite chat` on hostile input: a line that is not UTF-8 and a multi-megabyte line are each refused with a
//! message, and the conversation goes on to answer the next line. Runs the bundled tiny model on the OpenCL device.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn bad_lines_are_refused_and_the_chat_goes_on() {
    let huge = 3usize << 20;
    let mut input = b"\xff\xfe not text\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', huge));
    input.extend_from_slice(b"\nOnce upon a time\n");

    let mut child = Command::new(env!("CARGO_BIN_EXE_tlite"))
        .args(["chat", "--max-tokens", "3", "--ctx", "128", "--timings"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tlite starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Written from a thread: the input is larger than a pipe holds, and tlite reads it only as the chat goes on.
    let writer = std::thread::spawn(move || {
        // tlite may stop reading early if it fails; the test then fails on its output, not here.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("tlite runs");
    writer.join().expect("the writer thread ends");
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert!(out.status.success(), "tlite chat failed: {stderr}");
    assert!(stderr.contains("not valid UTF-8"), "{stderr}");
    let refused = format!("a line of {} bytes was refused unread", huge + 1);
    assert!(stderr.contains(&refused), "{stderr}");
    // Exactly one turn ran (its --timings line), after both refusals.
    assert_eq!(stderr.matches("prefill ").count(), 1, "{stderr}");
    let (at_refusal, at_turn) = (
        stderr.find(&refused).unwrap_or(usize::MAX),
        stderr.find("prefill ").unwrap_or(0),
    );
    assert!(at_refusal < at_turn, "{stderr}");
}
