//! tlite's benchmarks as a library, so the `tlite bench` and `tlite bench-kernels` commands and the criterion
//! benches share one implementation and the library crates carry no benchmark code.
//!
//! - [`kernels`]: the per-kernel suite (cases of real model shapes, timing from profiling events and by the wall
//!   clock, the table).
//! - [`end_to_end`]: synthetic models of real shapes and the prefill/decode run.
//! - [`copy_bandwidth`]: the one copy-bandwidth probe both compare with.
//! - [`phone_plan`]: what tlite would choose on each phone profile, from shapes alone (the README's tables).
//! - [`session_resume`]: resuming a saved chat against prefilling its history again (`tlite bench-session`).

mod copy;
pub mod end_to_end;
pub mod kernels;
pub mod phone_plan;
pub mod session_resume;

pub use copy::copy_bandwidth;
