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
//! | rotary | [`rope`] | interleaved and half-split, partial rotary dim, `past` offset; cached keys turned by a position delta (context shift), f32 or f16 cache |
//! | embedding | [`embedding`] | f16 and M0E4 tables, scale |
//! | sampling | [`sampling`] | softmax (temperature), argmax, the whole sampling chain (penalty, temperature, top-k, top-p, min-p, draw) reading back one id |
//! | attention | [`attention`] | causal GQA prefill/decode; decode over a short context in one work-group per head (no merge), longer ones split across the context and merged in the same launch; in-place K/V append (in decode, inside the attention launch with the rotary); on Mali a decode without local memory (`vendor/mali_attention.cl`) |
//! | elementwise | [`elementwise`] | add, SiLU/GELU gating, bias add, row copy |
//!
//! The largest families (attention, mat-vec) are folders that keep apart choosing a build (pure functions,
//! unit-tested without a device), checking a call into the kernel's `#[repr(C)]` parameter struct, compiling, and
//! launching. Every launch checks its argument count against the kernel's `CL_KERNEL_NUM_ARGS`.
//!
//! Vendor code is fenced in `vendor/`: `nvidia.cl` (all inline PTX), `adreno.cl` (qcom sub-group built-ins),
//! `khr_subgroups.cl` (the khr/intel sub-group built-ins Mali and Intel use), each compiled only for its devices,
//! `mali.cl` and `mali_attention.cl` (Mali's own programs, built at the width [`vector_width`] picks), and
//! `portable.cl` with the portable definitions of the helpers they may replace. `common.cl` holds what every family
//! shares (M0E4 recipe, reductions, rotary, gated activations); `diag.cl` holds benchmark diagnostics, which only
//! [`matvec::MatvecM0e4::with_diagnostics`] includes.
//!
//! [`profile_launches`] times every launch of a real workload on a device opened with
//! [`crate::runtime::GpuOptions::profiling`]; the benchmarks that use it live in the `bench` crate.

pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod matvec;
pub mod norm;
mod profile;
pub mod rope;
pub mod sampling;
pub mod vector_width;

/// The CPU-device mat-vec kernels, by their older path ([`matvec::cpu`]).
pub use matvec::cpu as matvec_cpu;

use std::sync::Mutex;

use opencl3::kernel::Kernel;
use opencl3::memory::ClMem;
use opencl3::types::cl_mem;

pub use profile::{profile_launches, LaunchTiming};

use crate::runtime::{ClError, DeviceBuffer, Gpu, ProgramSource};

/// A family's program: the vendor files (each compiled only for its devices, see `vendor/`), their portable
/// fallbacks, the shared prelude (`common.cl`), then the family's source files in order. Paths are relative to
/// `src/kernels/`, so a family in its own folder names them as `"attention/attention.cl"`.
macro_rules! program_source {
    ($name:literal, $($file:literal),+) => {
        $crate::runtime::ProgramSource {
            name: $name,
            source: concat!(
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/kernels/vendor/nvidia.cl")),
                "\n",
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/kernels/vendor/khr_subgroups.cl")),
                "\n",
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/kernels/vendor/adreno.cl")),
                "\n",
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/kernels/vendor/portable.cl")),
                "\n",
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/kernels/common.cl")),
                $("\n", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/kernels/", $file))),+
            ),
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
    /// A launcher set a different number of arguments than the compiled kernel takes: its Rust and OpenCL sides
    /// disagree (a defect in tlite, caught before anything is enqueued).
    #[error("{kernel}: the launcher sets {set} arguments but the kernel takes {takes}")]
    Arguments {
        /// The kernel's name in its `.cl` file.
        kernel: &'static str,
        /// Arguments the launcher set.
        set: usize,
        /// `CL_KERNEL_NUM_ARGS` of the built kernel.
        takes: usize,
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
    check_count(kernel, what, buffer.len(), needed)
}

/// Checks that a buffer of `len` elements holds at least `needed`.
pub(crate) fn check_count(
    kernel: &'static str,
    what: &str,
    len: usize,
    needed: usize,
) -> Result<(), KernelError> {
    if len < needed {
        return Err(shape_error(
            kernel,
            format!("{what} buffer has {len} elements but the shape needs {needed}"),
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
    ) -> Result<Arg<'static>, KernelError> {
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
pub(crate) enum Arg<'a> {
    /// A buffer.
    Mem(cl_mem),
    /// A `uint`.
    U32(u32),
    /// A `float`.
    F32(f32),
    /// A `#[repr(C)]` parameter struct passed by value, as the bytes of the kernel's matching `typedef struct`
    /// (the driver refuses a size that differs from the kernel's).
    Params(&'a [u8]),
    /// A `local` buffer of this many bytes, allocated per launch (for kernels whose local memory is sized at run
    /// time, or that must not declare it at program scope).
    Local(usize),
}

impl<'a> Arg<'a> {
    /// A parameter struct argument.
    pub(crate) fn params<P: bytemuck::Pod>(params: &'a P) -> Self {
        Arg::Params(bytemuck::bytes_of(params))
    }
}

impl<T: bytemuck::Pod> From<&DeviceBuffer<T>> for Arg<'_> {
    fn from(buffer: &DeviceBuffer<T>) -> Self {
        Arg::Mem(buffer.raw().get())
    }
}

impl<T: bytemuck::Pod> From<&mut DeviceBuffer<T>> for Arg<'_> {
    fn from(buffer: &mut DeviceBuffer<T>) -> Self {
        Arg::Mem(buffer.raw().get())
    }
}

impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::U32(v)
    }
}

impl From<f32> for Arg<'_> {
    fn from(v: f32) -> Self {
        Arg::F32(v)
    }
}

/// A kernel object behind a lock: setting arguments and enqueuing must not interleave between threads.
#[derive(Debug)]
pub(crate) struct LockedKernel {
    name: &'static str,
    /// `CL_KERNEL_NUM_ARGS`, which every launch checks its argument list against.
    num_args: usize,
    kernel: Mutex<Kernel>,
    /// Local memory and widest launch, for [`Gpu::kernel_usage`].
    usage: std::sync::Arc<crate::runtime::UsageRecord>,
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
        gpu.check_kernel(&kernel, name)?;
        let local_mem = kernel.get_local_mem_size(gpu.device().id()).unwrap_or(0);
        let usage = gpu.register_kernel(name, local_mem);
        let num_args = kernel
            .num_args()
            .map_err(|e| ClError::from_code("clGetKernelInfo(NUM_ARGS)", e.0))?;
        Ok(LockedKernel {
            name,
            num_args: num_args as usize,
            kernel: Mutex::new(kernel),
            usage,
        })
    }

    /// The most work-items per group the driver runs this kernel with on `gpu`'s device (can be below the
    /// device maximum for kernels with many registers or much local memory; 0 if the driver will not say).
    pub(crate) fn max_work_group_size(&self, gpu: &Gpu) -> usize {
        let kernel = self
            .kernel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Under a device profile the phone's maximum can be lower than the host driver's answer.
        match (
            kernel.get_work_group_size(gpu.device().id()).unwrap_or(0),
            gpu.caps().max_work_group_size,
        ) {
            (0, _) => 0,
            (size, 0) => size,
            (size, device) => size.min(device),
        }
    }

    /// As [`LockedKernel::build`], adding `TLITE_NV_PTX` (the inline PTX of `vendor/nvidia.cl`: warp-shuffle
    /// reductions, half conversions, loads that skip L1, packed-f16 products) on NVIDIA when `want` is set, and
    /// falling back to the portable build if the driver refuses it. Returns whether the PTX build is in use. The
    /// kernel's work-groups must be whole warps (multiples of 32).
    pub(crate) fn build_with_nv_ptx(
        gpu: &Gpu,
        src: &ProgramSource,
        defines: &[(&str, &str)],
        name: &'static str,
        want: bool,
    ) -> Result<(Self, bool), KernelError> {
        if want && gpu.caps().vendor_family == crate::runtime::VendorFamily::Nvidia {
            let mut with_ptx = defines.to_vec();
            with_ptx.push(("TLITE_NV_PTX", "1"));
            match Self::build(gpu, src, &with_ptx, name) {
                Ok(k) => return Ok((k, true)),
                Err(err) => {
                    tracing::warn!(%err, kernel = name, "NVIDIA inline-PTX build failed; using the portable build")
                }
            }
        }
        Ok((Self::build(gpu, src, defines, name)?, false))
    }

    /// Sets `args` in order and enqueues an NDRange of `global` work-items (`local` per group, or the driver's
    /// choice). Global sizes are rounded up to a multiple of `local`. Refuses an argument list whose length is not
    /// the kernel's `CL_KERNEL_NUM_ARGS`.
    pub(crate) fn launch(
        &self,
        gpu: &Gpu,
        args: &[Arg<'_>],
        global: &[usize],
        local: Option<&[usize]>,
    ) -> Result<(), KernelError> {
        if args.len() != self.num_args {
            return Err(KernelError::Arguments {
                kernel: self.name,
                set: args.len(),
                takes: self.num_args,
            });
        }
        let kernel = self
            .kernel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, arg) in args.iter().enumerate() {
            let index = i as u32;
            // SAFETY: each argument is a plain value, the bytes of a plain struct, a local-memory size, or a live cl_mem
            // of a buffer the caller borrows for the duration of this call; their count is the kernel's (checked
            // above), their types match its signature (the launchers build them from the `.cl` file's order, and the
            // driver refuses a by-value size that differs).
            let set = unsafe {
                match arg {
                    Arg::Mem(m) => kernel.set_arg(index, m),
                    Arg::U32(v) => kernel.set_arg(index, v),
                    Arg::F32(v) => kernel.set_arg(index, v),
                    Arg::Params(bytes) => cl3::kernel::set_kernel_arg(
                        kernel.get(),
                        index,
                        bytes.len(),
                        bytes.as_ptr().cast(),
                    )
                    .map_err(opencl3::error_codes::ClError),
                    Arg::Local(bytes) => kernel.set_arg_local_buffer(index, *bytes),
                }
            };
            set.map_err(|e| ClError::from_code("clSetKernelArg", e.0))?;
        }
        if let Some(l) = local {
            gpu.check_work_group(self.name, l)?;
        }
        self.usage.launched(local);
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
        let queue = gpu.queue().get();
        let Some(log) = gpu.launch_log().filter(|log| log.is_recording()) else {
            enqueue_without_event(queue, kernel.get(), &global, local)?;
            tracing::trace!(kernel = self.name, ?global, "enqueued");
            return Ok(());
        };
        // SAFETY: the kernel's arguments are all set above; the size arrays live across the call; the queue is the
        // device's own, of the kernel's context.
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
        log.push(self.name, opencl3::event::Event::new(event));
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

/// The largest power of two `<= limit` and `<= want` (at least 1): local sizes for the tree reductions.
pub(crate) fn pow2_at_most(want: usize, limit: usize) -> usize {
    let cap = want.min(limit.max(1));
    1usize << (usize::BITS - 1 - cap.leading_zeros())
}
