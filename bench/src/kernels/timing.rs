//! [`time_case`]: a case's device time from profiling events, and its wall-clock time launched back to back
//! without events, as a decode step launches.

use std::time::Instant;

use clkernels::kernels::{profile_launches, KernelError, LaunchTiming};
use clkernels::runtime::Gpu;

use super::Case;

/// A measured case.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Mean device microseconds per launch, from profiling events (all kernels of the launch summed).
    pub micros: f64,
    /// Device span per launch: (end of the last event - start of the first) / launches, i.e. steady-state
    /// throughput of back-to-back launches including the gaps between kernels but not any per-event overhead
    /// that overlaps the next kernel.
    pub span_micros: f64,
    /// Wall-clock microseconds per launch of `iters` launches enqueued back to back without events, between two
    /// `clFinish`: the cost of the kernel inside a decode step, where no launch asks for an event (when the host
    /// enqueues faster than the device runs, this is device time including the gaps between kernels).
    pub pipe_micros: f64,
    /// GB/s (1e9 bytes) from [`Case::bytes`] and the device time.
    pub gbps: f64,
    /// GFLOP/s from [`Case::flops`] and the device time.
    pub gflops: f64,
}

/// Runs `warmup` launches, then `iters` launches back to back recorded with [`profile_launches`] (so `gpu` must
/// have been opened with profiling), then `iters` more without events timed by the wall clock.
pub fn time_case(
    gpu: &Gpu,
    case: &mut Case,
    warmup: usize,
    iters: usize,
) -> Result<Timing, KernelError> {
    let iters = iters.max(1);
    for _ in 0..warmup {
        case.enqueue()?;
    }
    gpu.finish()?;
    let (ran, launches) = profile_launches(gpu, || -> Result<(), KernelError> {
        for _ in 0..iters {
            case.enqueue()?;
        }
        Ok(())
    })?;
    ran?;
    let (busy, span) = device_seconds(&launches);
    let secs = busy / iters as f64;
    let pipe = pipelined_seconds(gpu, case, iters)?;
    Ok(Timing {
        pipe_micros: pipe * 1e6,
        micros: secs * 1e6,
        span_micros: span / iters as f64 * 1e6,
        gbps: case.bytes / secs / 1e9,
        gflops: case.flops / secs / 1e9,
    })
}

/// Seconds the device spent in `launches`, and from the first start to the last end.
fn device_seconds(launches: &[LaunchTiming]) -> (f64, f64) {
    let busy: u64 = launches
        .iter()
        .map(|l| l.end_ns.saturating_sub(l.start_ns))
        .sum();
    let span = match (launches.first(), launches.last()) {
        (Some(first), Some(last)) => last.end_ns.saturating_sub(first.start_ns),
        _ => 0,
    };
    (busy as f64 * 1e-9, span as f64 * 1e-9)
}

/// Mean wall-clock seconds per launch of `iters` launches without events (after one untimed launch).
fn pipelined_seconds(gpu: &Gpu, case: &mut Case, iters: usize) -> Result<f64, KernelError> {
    case.enqueue()?;
    gpu.finish()?;
    let start = Instant::now();
    for _ in 0..iters {
        case.enqueue()?;
    }
    gpu.finish()?;
    Ok(start.elapsed().as_secs_f64() / iters as f64)
}

#[cfg(test)]
mod tests {
    use super::{device_seconds, LaunchTiming};

    #[test]
    fn busy_time_sums_launches_and_span_covers_the_gaps() {
        let at = |start_ns, end_ns| LaunchTiming {
            kernel: "k",
            start_ns,
            end_ns,
        };
        let (busy, span) = device_seconds(&[at(1_000, 3_000), at(5_000, 6_000), at(6_500, 9_000)]);
        assert!((busy - 5.5e-6).abs() < 1e-15, "{busy}");
        assert!((span - 8e-6).abs() < 1e-15, "{span}");
        assert_eq!(device_seconds(&[]), (0.0, 0.0));
    }
}
