//! OpenCL runtime: devices, capabilities, programs, queues, buffers and errors.
//!
//! ```no_run
//! use clkernels::runtime::{DeviceBuffer, Gpu, ProgramSource};
//! let gpu = Gpu::open_default()?;
//! let program = gpu.program(&ProgramSource { name: "demo", source: "kernel void k(global float* x) {}" }, &[])?;
//! let buffer = DeviceBuffer::<f32>::from_slice(&gpu, &[1.0, 2.0])?;
//! # let _ = (program, buffer);
//! # Ok::<(), clkernels::runtime::ClError>(())
//! ```

mod buffer;
mod build;
pub mod cache;
mod caps;
pub mod cl_consts;
mod device;
mod error;
mod gpu;
mod image;
mod kernel_usage;
mod launch_log;
mod limits;
mod loader;
mod priority;
mod profile;
mod program;
mod split;

pub use buffer::DeviceBuffer;
pub use build::set_compile_notice;
pub use cache::{BinaryCache, CacheKey, CachePolicy};
pub use caps::{Capabilities, ClVersion, DeviceKind, VendorFamily, EXTENSIONS_USED};
pub use device::{list_devices, select, DeviceEntry, DeviceSelector};
pub use error::{ClError, ClResultExt};
pub use gpu::{BinaryReadback, CompilerMessage, Gpu, GpuOptions};
pub use image::{BufferImage, PixelFormat};
pub use kernel_usage::KernelUsage;
pub(crate) use kernel_usage::UsageRecord;
pub(crate) use launch_log::LaunchLog;
pub use loader::ensure_loaded;
pub use priority::{mechanisms_for, PerfHint, PriorityMechanism, PriorityReport, QueuePriority};
pub use profile::{
    DeviceProfile, ProfileChoice, ProfileError, ProfileLimits, LIMIT_FIELDS, PHONE_MIN, PROFILE_ENV,
};
pub use program::{build_options, BuildOrigin, BuildStats, ProgramSource};
pub use split::{RowPart, RowSplit, SplitError, SplitLimits, ROW_QUANTUM};

#[cfg(test)]
mod tests;
