//! Compiling one program from source: the compiler's log goes to `tracing` (never to the user's output), and the
//! first real compilation of a process may tell the user, through a hook the application installs, why this start
//! is slow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use opencl3::context::Context;
use opencl3::program::Program;
use opencl3::types::cl_device_id;

use crate::runtime::{ClError, ClResultExt, ProgramSource};

type Notice = Box<dyn Fn() + Send + Sync>;

static NOTICE: OnceLock<Notice> = OnceLock::new();
static NOTICE_GIVEN: AtomicBool = AtomicBool::new(false);

/// Installs what to do (once per process) just before the first program is really compiled, as opposed to loaded
/// from a cache: a command-line tool prints "compiling GPU kernels (first run only)…", a library user may show a
/// spinner. A library never prints by itself; without a hook nothing is shown. Only the first call installs.
pub fn set_compile_notice(notice: impl Fn() + Send + Sync + 'static) {
    let _ = NOTICE.set(Box::new(notice));
}

/// Runs the hook the first time it is called in this process.
pub(crate) fn notify_compiling() {
    if let Some(notice) = NOTICE.get() {
        if !NOTICE_GIVEN.swap(true, Ordering::Relaxed) {
            notice();
        }
    }
}

/// Compiles `src` for `device` with `options`, returning the program and the compiler's output (trimmed; empty
/// when it said nothing). A failure carries the log; a success logs any output at debug level
/// (`TLITE_LOG=clkernels=debug`): kernels are meant to build without warnings (`tests/build_warnings.rs` holds
/// them to it) and a warning is for the kernel's author, not the user.
pub(crate) fn compile(
    context: &Context,
    device: cl_device_id,
    src: &ProgramSource,
    options: &str,
) -> Result<(Program, String), ClError> {
    let started = std::time::Instant::now();
    let mut program =
        Program::create_from_source(context, src.source).cl_call("clCreateProgramWithSource")?;
    let built = program.build(&[device], options);
    let log = program.get_build_log(device).ok();
    if let Err(e) = built {
        return Err(ClError::Build {
            program: src.name.to_string(),
            name: opencl3::error_codes::error_text(e.0),
            options: options.to_string(),
            log: log.unwrap_or_else(|| "(no build log)".to_string()),
        });
    }
    let log = log.unwrap_or_default();
    let log = log.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if !log.is_empty() {
        tracing::debug!(program = src.name, options, log, "compiler output");
    }
    tracing::debug!(
        program = src.name,
        ms = started.elapsed().as_millis() as u64,
        "program compiled"
    );
    Ok((program, log.to_string()))
}
