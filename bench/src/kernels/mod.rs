//! The per-kernel benchmark suite behind `tlite bench-kernels` and the criterion bench (`benches/kernels.rs`).
//!
//! [`cases`] builds one [`Case`] per kernel and shape (synthetic data of real model shapes, each case owning its
//! buffers and a closure that enqueues one launch). [`time_case`] reads a case's device time from profiling events
//! ([`clkernels::kernels::profile_launches`], so the device must be opened with profiling) and times it launched
//! back to back without events by the wall clock, as a decode step launches; [`QueuedTimer`] times it queued
//! behind a long copy, so the host's enqueue rate cannot set the pace. Bandwidth counts the bytes a kernel must
//! read and write once (weights, activations, outputs) and is compared with [`crate::copy_bandwidth`] in
//! [`table`]. [`timeline`] breaks one mat-vec launch down from inside (NVIDIA only); [`sweep`] lists the
//! alternative configurations `--sweep` tries.

mod case;
mod cases;
mod data;
mod options;
mod queued;
pub mod sweep;
pub mod table;
pub mod timeline;
mod timing;

pub use case::Case;
pub use cases::cases;
pub use options::SuiteOptions;
pub use queued::{QueuedTimer, QUEUED_LAUNCHES};
pub use timeline::{matvec_timeline, Timeline, TIMELINE_SHAPES};
pub use timing::{time_case, Timing};
