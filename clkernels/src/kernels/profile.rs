//! [`profile_launches`]: the device time of every kernel launch of a real workload (a decode step, say), on a
//! device opened with [`crate::runtime::GpuOptions::profiling`]. The launches stay on the device's own queue, so
//! their order with the workload's reads and writes is kept.

use opencl3::event::Event;

use super::{shape_error, KernelError};
use crate::runtime::{ClError, ClResultExt, Gpu, LaunchLog};

/// Device time of one kernel launch recorded by [`profile_launches`].
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchTiming {
    /// The kernel's name in its `.cl` file.
    pub kernel: &'static str,
    /// Start and end of its execution on the device's clock, nanoseconds.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
}

/// Runs `f` and returns the device time of every kernel launched on `gpu`'s queue while it ran, in enqueue
/// order. Every launcher built on this device enqueues on that queue, so launches from other threads during `f`
/// are recorded too. Each recorded launch asks for an event, which costs host time; launches outside a recording
/// do not. Refused when `gpu` was opened without profiling, or while another recording on it is in progress.
pub fn profile_launches<T>(
    gpu: &Gpu,
    f: impl FnOnce() -> T,
) -> Result<(T, Vec<LaunchTiming>), KernelError> {
    let Some(log) = gpu.launch_log() else {
        return Err(shape_error(
            "profile_launches",
            "the device was opened without profiling (GpuOptions::profiling)",
        ));
    };
    if !log.start() {
        return Err(shape_error(
            "profile_launches",
            "a profile is already being recorded on this device",
        ));
    }
    let mut recording = Recording(Some(log));
    let out = f();
    let events = recording.stop();
    gpu.finish()?;
    let mut timings = Vec::with_capacity(events.len());
    for (kernel, event) in events {
        let (start_ns, end_ns) = device_times(&event)?;
        timings.push(LaunchTiming {
            kernel,
            start_ns,
            end_ns,
        });
    }
    Ok((out, timings))
}

/// Ends the recording even when the profiled closure panics, so later launches stop asking for events; once
/// only, so a recording started afterwards is left alone.
struct Recording<'a>(Option<&'a LaunchLog>);

impl Recording<'_> {
    fn stop(&mut self) -> Vec<(&'static str, Event)> {
        self.0.take().map(LaunchLog::stop).unwrap_or_default()
    }
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        drop(self.stop());
    }
}

/// Start and end of a profiled command on the device's clock, nanoseconds.
fn device_times(event: &Event) -> Result<(u64, u64), ClError> {
    let start = event
        .profiling_command_start()
        .cl_call("clGetEventProfilingInfo")?;
    let end = event
        .profiling_command_end()
        .cl_call("clGetEventProfilingInfo")?;
    Ok((start, end))
}
