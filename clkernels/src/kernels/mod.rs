//! Kernel families, each a `.cl` file beside the module that launches it.
//!
//! Every launcher is built once per [`Gpu`] (`X::new(&gpu)?`), compiles its program through the runtime's binary
//! cache with the device's capability defines, and then only sets arguments and enqueues: no launcher blocks or
//! reads back. Shapes are checked against buffer lengths before anything is enqueued, so a wrong shape is a
//! [`KernelError::Shape`] naming the kernel and the mismatch, never an out-of-bounds access on the device.
//!
//! | family | module | kernels |
//! | --- | --- | --- |
//! | decode mat-vec | [`matvec`] | M0E4 (+ residual or bias, fused RMSNorm, gate+up with SiLU/GELU), f16; packed-f16 products through inline PTX on NVIDIA |
//! | prefill mat-mat | [`matmul`] | M0E4 and f16, local-memory tiles, register blocking |
//! | norms | [`norm`] | RMSNorm (with Gemma's weight offset) |
//! | rotary | [`rope`] | interleaved and half-split, partial rotary dim, `past` offset |
//! | embedding | [`embedding`] | f16 and M0E4 tables, scale |
//! | sampling | [`sampling`] | softmax (temperature), argmax, the whole sampling chain (penalty, temperature, top-k, top-p, min-p, draw) reading back one id |
//! | attention | [`attention`] | causal GQA prefill/decode; decode over a short context in one work-group per head (no merge), longer ones split across the context and merged in the same launch; in-place K/V append (in decode, inside the attention launch with the rotary) |
//! | elementwise | [`elementwise`] | add, SiLU/GELU gating, bias add |
//!
//! [`profile_launches`] times every launch of a real workload on a queue opened with
//! [`crate::runtime::GpuOptions::profiling`]; [`bench_suite`] is the per-kernel benchmark table.

pub mod attention;
pub mod bench_suite;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod matvec;
pub mod matvec_cpu;
pub mod norm;
pub mod rope;
pub mod sampling;

use std::sync::Mutex;

use opencl3::kernel::Kernel;
use opencl3::memory::ClMem;
use opencl3::types::cl_mem;

use crate::runtime::{ClError, DeviceBuffer, Gpu, ProgramSource};

/// Prepends the shared prelude (`common.cl`) to a family's source.
macro_rules! program_source {
    ($name:literal, $file:literal) => {
        $crate::runtime::ProgramSource {
            name: $name,
            source: concat!(include_str!("common.cl"), "\n", include_str!($file)),
        }
    };
}
pub(crate) use program_source;

/// Why a launcher refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// An OpenCL call (or the program build) failed.
    #[error(transparent)]
    Cl(#[from] ClError),
    /// Shapes and buffers do not fit together.
    #[error("{kernel}: {problem}")]
    Shape {
        /// The launcher.
        kernel: &'static str,
        /// What does not fit.
        problem: String,
    },
}

/// Shorthand for a shape error.
pub(crate) fn shape_error(kernel: &'static str, problem: impl Into<String>) -> KernelError {
    KernelError::Shape {
        kernel,
        problem: problem.into(),
    }
}

/// Checks that `buffer` holds at least `needed` elements.
pub(crate) fn check_len<T>(
    kernel: &'static str,
    what: &str,
    buffer: &DeviceBuffer<T>,
    needed: usize,
) -> Result<(), KernelError>
where
    T: bytemuck::Pod,
{
    if buffer.len() < needed {
        return Err(shape_error(
            kernel,
            format!(
                "{what} buffer has {} elements but the shape needs {needed}",
                buffer.len()
            ),
        ));
    }
    Ok(())
}

/// Converts a size to the `uint` the kernels take.
pub(crate) fn to_u32(kernel: &'static str, what: &str, value: usize) -> Result<u32, KernelError> {
    u32::try_from(value)
        .map_err(|_| shape_error(kernel, format!("{what} = {value} does not fit in 32 bits")))
}

/// What a matrix product does with the previous contents of its output.
#[derive(Debug, Clone, Copy)]
pub enum Residual<'a> {
    /// `y = W·x`.
    None,
    /// `y = W·x + r` with `r` a separate buffer of `y`'s shape.
    Add(&'a DeviceBuffer<f32>),
    /// `y = W·x + y`: the residual stream is the output buffer itself.
    Accumulate,
}

impl Residual<'_> {
    /// The kernels' `res_mode` argument.
    pub(crate) fn mode(&self) -> u32 {
        match self {
            Residual::None => 0,
            Residual::Add(_) => 1,
            Residual::Accumulate => 2,
        }
    }

    /// The kernels' `residual` argument: the added buffer (checked to hold `len` values), or `out` itself as a
    /// stand-in the kernel never reads when nothing separate is added.
    pub(crate) fn arg(
        &self,
        kernel: &'static str,
        out: &DeviceBuffer<f32>,
        len: usize,
    ) -> Result<Arg, KernelError> {
        match self {
            Residual::Add(r) => {
                check_len(kernel, "residual", r, len)?;
                Ok((*r).into())
            }
            _ => Ok(out.into()),
        }
    }
}

/// The activation of a gated feed-forward (`act(gate) * up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GatedActivation {
    /// SiLU: SwiGLU (Llama, Mistral, Qwen2).
    #[default]
    Silu,
    /// tanh-approximated GELU: GeGLU (Gemma).
    GeluTanh,
}

impl GatedActivation {
    pub(crate) fn code(self) -> u32 {
        match self {
            GatedActivation::Silu => 0,
            GatedActivation::GeluTanh => 1,
        }
    }
}

/// One kernel argument.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    /// A buffer.
    Mem(cl_mem),
    /// A `uint`.
    U32(u32),
    /// A `float`.
    F32(f32),
    /// A `local` buffer of this many bytes, allocated per launch (for kernels whose local memory is sized at run
    /// time, or that must not declare it at program scope).
    Local(usize),
}

impl<T: bytemuck::Pod> From<&DeviceBuffer<T>> for Arg {
    fn from(buffer: &DeviceBuffer<T>) -> Self {
        Arg::Mem(buffer.raw().get())
    }
}

impl<T: bytemuck::Pod> From<&mut DeviceBuffer<T>> for Arg {
    fn from(buffer: &mut DeviceBuffer<T>) -> Self {
        Arg::Mem(buffer.raw().get())
    }
}

impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::U32(v)
    }
}

impl From<f32> for Arg {
    fn from(v: f32) -> Self {
        Arg::F32(v)
    }
}

/// A kernel object behind a lock: setting arguments and enqueuing must not interleave between threads.
#[derive(Debug)]
pub(crate) struct LockedKernel {
    name: &'static str,
    kernel: Mutex<Kernel>,
}

impl LockedKernel {
    /// Creates kernel `name` of the program built from `src` with `defines`.
    pub(crate) fn build(
        gpu: &Gpu,
        src: &ProgramSource,
        defines: &[(&str, &str)],
        name: &'static str,
    ) -> Result<Self, KernelError> {
        let program = gpu.program(src, defines)?;
        let kernel = Kernel::create(&program, name)
            .map_err(|e| ClError::from_code("clCreateKernel", e.0))?;
        Ok(LockedKernel {
            name,
            kernel: Mutex::new(kernel),
        })
    }

    /// The most work-items per group the driver runs this kernel with on `gpu`'s device (can be below the
    /// device maximum for kernels with many registers or much local memory; 0 if the driver will not say).
    pub(crate) fn max_work_group_size(&self, gpu: &Gpu) -> usize {
        let kernel = self
            .kernel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kernel.get_work_group_size(gpu.device().id()).unwrap_or(0)
    }

    /// As [`LockedKernel::build`], adding `TLITE_NV_SHFL` (warp reductions through inline PTX) on NVIDIA when
    /// `want` is set, and falling back to the portable build if the driver refuses it. Returns whether the
    /// shuffle build is in use. The kernel's work-groups must be whole warps (multiples of 32).
    pub(crate) fn build_with_warp_shuffle(
        gpu: &Gpu,
        src: &ProgramSource,
        defines: &[(&str, &str)],
        name: &'static str,
        want: bool,
    ) -> Result<(Self, bool), KernelError> {
        if want && gpu.caps().vendor_family == crate::runtime::VendorFamily::Nvidia {
            let mut with_shfl = defines.to_vec();
            with_shfl.push(("TLITE_NV_SHFL", "1"));
            match Self::build(gpu, src, &with_shfl, name) {
                Ok(k) => return Ok((k, true)),
                Err(err) => {
                    tracing::warn!(%err, kernel = name, "NVIDIA warp-shuffle build failed; using the local-memory tree")
                }
            }
        }
        Ok((Self::build(gpu, src, defines, name)?, false))
    }

    /// Sets `args` in order and enqueues an NDRange of `global` work-items (`local` per group, or the driver's
    /// choice). Global sizes are rounded up to a multiple of `local`.
    pub(crate) fn launch(
        &self,
        gpu: &Gpu,
        args: &[Arg],
        global: &[usize],
        local: Option<&[usize]>,
    ) -> Result<(), KernelError> {
        let kernel = self
            .kernel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, arg) in args.iter().enumerate() {
            let index = i as u32;
            // SAFETY: each argument is a plain value, a local-memory size, or a live cl_mem of a buffer the caller
            // borrows for the duration of this call; the argument types match the kernel's signature (checked by
            // the launchers).
            let set = unsafe {
                match arg {
                    Arg::Mem(m) => kernel.set_arg(index, m),
                    Arg::U32(v) => kernel.set_arg(index, v),
                    Arg::F32(v) => kernel.set_arg(index, v),
                    Arg::Local(bytes) => kernel.set_arg_local_buffer(index, *bytes),
                }
            };
            set.map_err(|e| ClError::from_code("clSetKernelArg", e.0))?;
        }
        let global: Vec<usize> = match local {
            Some(l) => global
                .iter()
                .zip(l)
                .map(|(&g, &l)| g.div_ceil(l).max(1) * l)
                .collect(),
            None => global.to_vec(),
        };
        if global.contains(&0) {
            return Ok(());
        }
        let (queue, with_event) = profile::queue().unwrap_or((gpu.queue().get(), false));
        if !with_event {
            enqueue_without_event(queue, kernel.get(), &global, local)?;
            tracing::trace!(kernel = self.name, ?global, "enqueued");
            return Ok(());
        }
        // SAFETY: the kernel's arguments are all set above; the size arrays live across the call; the queue is the
        // device's own or the live profiling queue of `bench_suite`, both of the kernel's context.
        let event = unsafe {
            cl3::command_queue::enqueue_nd_range_kernel(
                queue,
                kernel.get(),
                global.len() as u32,
                std::ptr::null(),
                global.as_ptr(),
                local.map_or(std::ptr::null(), |l| l.as_ptr()),
                0,
                std::ptr::null(),
            )
        }
        .map_err(|e| ClError::from_code("clEnqueueNDRangeKernel", e))?;
        profile::record(self.name, opencl3::event::Event::new(event));
        tracing::trace!(kernel = self.name, ?global, "enqueued");
        Ok(())
    }
}

/// Enqueues with no event: the step's launches are never waited on one by one (the queue is in order and the
/// step ends with a blocking read), and asking the driver for an event per launch costs host time on every
/// launch of a launch-bound decode step.
fn enqueue_without_event(
    queue: opencl3::types::cl_command_queue,
    kernel: opencl3::types::cl_kernel,
    global: &[usize],
    local: Option<&[usize]>,
) -> Result<(), KernelError> {
    let runtime = cl3::load_library().as_ref().map_err(|_| {
        ClError::from_code(
            "clEnqueueNDRangeKernel",
            cl3::error_codes::DLOPEN_RUNTIME_LOAD_FAILED,
        )
    })?;
    // The caller set all of the kernel's arguments and the size arrays live across the call; a null event
    // pointer is allowed by the OpenCL specification and means no event is returned.
    let status = runtime.clEnqueueNDRangeKernel(
        queue,
        kernel,
        global.len() as u32,
        std::ptr::null(),
        global.as_ptr(),
        local.map_or(std::ptr::null(), |l| l.as_ptr()),
        0,
        std::ptr::null(),
        std::ptr::null_mut(),
    );
    match status {
        Some(opencl3::error_codes::CL_SUCCESS) => Ok(()),
        Some(code) => Err(ClError::from_code("clEnqueueNDRangeKernel", code).into()),
        None => Err(ClError::from_code(
            "clEnqueueNDRangeKernel",
            cl3::error_codes::DLOPEN_FUNCTION_NOT_AVAILABLE,
        )
        .into()),
    }
}

/// Per-thread redirection of launches to a profiling queue, so `bench_suite` can read each kernel's device time
/// from its events without the launchers knowing (the runtime's queue has profiling off).
pub(crate) mod profile {
    use std::cell::RefCell;

    use opencl3::event::Event;
    use opencl3::types::cl_command_queue;

    thread_local! {
        static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
    }

    struct Sink {
        queue: cl_command_queue,
        /// `None`: launch without events (steady-state timing of back-to-back launches by wall clock).
        events: Option<Vec<(&'static str, Event)>>,
    }

    /// Sends this thread's launches to `queue` and keeps their events, until [`stop`].
    pub(crate) fn start(queue: cl_command_queue) {
        SINK.with(|s| {
            *s.borrow_mut() = Some(Sink {
                queue,
                events: Some(Vec::new()),
            })
        });
    }

    /// Sends this thread's launches to `queue` without asking for events, until [`stop`].
    pub(crate) fn start_without_events(queue: cl_command_queue) {
        SINK.with(|s| {
            *s.borrow_mut() = Some(Sink {
                queue,
                events: None,
            })
        });
    }

    /// Stops redirecting; returns the events recorded since [`start`].
    pub(crate) fn stop() -> Vec<Event> {
        stop_named().into_iter().map(|(_, e)| e).collect()
    }

    /// As [`stop`], with the kernel name of each event.
    pub(crate) fn stop_named() -> Vec<(&'static str, Event)> {
        SINK.with(|s| {
            s.borrow_mut()
                .take()
                .and_then(|sink| sink.events)
                .unwrap_or_default()
        })
    }

    /// The queue launches go to, and whether they should ask for an event.
    pub(super) fn queue() -> Option<(cl_command_queue, bool)> {
        SINK.with(|s| s.borrow().as_ref().map(|k| (k.queue, k.events.is_some())))
    }

    /// Start and end of a profiled command on the device's clock, nanoseconds.
    pub(crate) fn device_times(event: &Event) -> Result<(u64, u64), crate::runtime::ClError> {
        use crate::runtime::ClResultExt;
        let start = event
            .profiling_command_start()
            .cl_call("clGetEventProfilingInfo")?;
        let end = event
            .profiling_command_end()
            .cl_call("clGetEventProfilingInfo")?;
        Ok((start, end))
    }

    pub(super) fn record(kernel: &'static str, event: Event) {
        SINK.with(|s| {
            if let Some(events) = s.borrow_mut().as_mut().and_then(|k| k.events.as_mut()) {
                events.push((kernel, event));
            }
        });
    }
}

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

/// Runs `f` and returns the device time of every kernel it launched on this thread, in launch order: a
/// per-kernel breakdown of a real workload (a decode step, say) with its own queue, so ordering with the
/// workload's reads and writes is kept. The queue of `gpu` must have been opened with
/// [`crate::runtime::GpuOptions::profiling`]; each launch then asks for an event, which costs host time.
pub fn profile_launches<T>(
    gpu: &Gpu,
    f: impl FnOnce() -> T,
) -> Result<(T, Vec<LaunchTiming>), KernelError> {
    if !gpu.profiling() {
        return Err(shape_error(
            "profile_launches",
            "the device was opened without profiling (GpuOptions::profiling)",
        ));
    }
    profile::start(gpu.queue().get());
    let out = f();
    let events = profile::stop_named();
    gpu.finish()?;
    let mut timings = Vec::with_capacity(events.len());
    for (kernel, e) in events {
        let (start_ns, end_ns) = profile::device_times(&e)?;
        timings.push(LaunchTiming {
            kernel,
            start_ns,
            end_ns,
        });
    }
    Ok((out, timings))
}

/// The largest power of two `<= limit` and `<= want` (at least 1): local sizes for the tree reductions.
pub(crate) fn pow2_at_most(want: usize, limit: usize) -> usize {
    let cap = want.min(limit.max(1));
    1usize << (usize::BITS - 1 - cap.leading_zeros())
}
