//! [`copy_bandwidth`]: the device's copy bandwidth, the roofline both `tlite bench` and `tlite bench-kernels`
//! compare their figures with.

use std::time::Instant;

use clkernels::runtime::{ClError, DeviceBuffer, Gpu};

/// Device copy bandwidth in bytes per second: `reps` back-to-back device-to-device copies
/// (`clEnqueueCopyBuffer`) of `bytes` bytes from one buffer into another, each counted as the bytes read plus the
/// bytes written (2 × `bytes`, as STREAM counts its copy), over the wall-clock time from the first enqueue to the
/// `clFinish` after the last, after two untimed copies. `bytes` is capped at the device's largest allocation
/// where the device states one.
///
/// Read + write, because that is the traffic the memory system sustains during a copy; a decode step, which reads
/// its weights once, can at best stream them at this rate. Wall clock rather than profiling events, because it
/// needs no profiling queue (so `tlite bench` measures on the queue it decoded on) and it is the clock decode speed
/// is measured with; with copies of hundreds of MiB the enqueue and the final `clFinish` are a negligible part of
/// the window.
pub fn copy_bandwidth(gpu: &Gpu, bytes: usize, reps: usize) -> Result<f64, ClError> {
    let bytes = match usize::try_from(gpu.caps().max_alloc_bytes) {
        Ok(0) | Err(_) => bytes,
        Ok(max_alloc) => bytes.min(max_alloc),
    }
    .max(1);
    let reps = reps.max(1);
    let src = DeviceBuffer::<u8>::new(gpu, bytes)?;
    let mut dst = DeviceBuffer::<u8>::new(gpu, bytes)?;
    src.copy_to(gpu, &mut dst)?;
    src.copy_to(gpu, &mut dst)?;
    gpu.finish()?;
    let started = Instant::now();
    for _ in 0..reps {
        src.copy_to(gpu, &mut dst)?;
    }
    gpu.finish()?;
    Ok(2.0 * bytes as f64 * reps as f64 / started.elapsed().as_secs_f64())
}
