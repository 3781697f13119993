//! [`QueuedTimer`]: launches timed with the device, not the host, setting the pace.

use std::time::Instant;

use clkernels::kernels::KernelError;
use clkernels::runtime::{DeviceBuffer, Gpu};

use super::Case;

/// Launches queued behind the copy per measurement: few enough that the host enqueues them while the copy runs.
pub const QUEUED_LAUNCHES: usize = 50;

/// Times launches queued behind one long copy (which the device needs longer for than the host needs to enqueue
/// them), with the copy's own time, measured alone, subtracted. Back-to-back launches timed by the wall clock
/// alone ([`super::Timing::pipe_micros`]) measure the host's enqueue rate instead when a kernel is shorter than
/// its enqueue. The copy's buffers are allocated once and serve every case; launches and copy share `gpu`'s queue.
pub struct QueuedTimer {
    gpu: Gpu,
    src: DeviceBuffer<u8>,
    dst: DeviceBuffer<u8>,
}

impl std::fmt::Debug for QueuedTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedTimer")
            .field("copy_bytes", &self.src.len())
            .finish_non_exhaustive()
    }
}

impl QueuedTimer {
    /// A timer whose launches wait behind a copy of `copy_bytes` bytes on `gpu`, the device the cases were built
    /// on.
    pub fn new(gpu: &Gpu, copy_bytes: usize) -> Result<Self, KernelError> {
        Ok(QueuedTimer {
            gpu: gpu.clone(),
            src: DeviceBuffer::new(gpu, copy_bytes)?,
            dst: DeviceBuffer::new(gpu, copy_bytes)?,
        })
    }

    /// Device microseconds per launch of `case`, `launches` launches queued behind the copy; the least of three
    /// runs.
    pub fn micros(&mut self, case: &mut Case, launches: usize) -> Result<f64, KernelError> {
        let gpu = self.gpu.clone();
        case.enqueue()?;
        self.copy()?;
        gpu.finish()?;
        let (mut alone, mut queued) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..3 {
            let start = Instant::now();
            self.copy()?;
            gpu.finish()?;
            alone = alone.min(start.elapsed().as_secs_f64());
            let start = Instant::now();
            self.copy()?;
            for _ in 0..launches {
                case.enqueue()?;
            }
            gpu.finish()?;
            queued = queued.min(start.elapsed().as_secs_f64());
        }
        Ok((queued - alone).max(0.0) / launches.max(1) as f64 * 1e6)
    }

    fn copy(&mut self) -> Result<(), KernelError> {
        Ok(self.src.copy_to(&self.gpu, &mut self.dst)?)
    }
}
