//! tlite's benchmarks as a library, so the `tlite bench` command and the criterion benches share one implementation
//! and the library crates carry no benchmark code.
//!
//! - [`end_to_end`]: synthetic models of real shapes and the prefill/decode run.
//! - [`copy_bandwidth`]: the copy-bandwidth probe decode speed is compared with.

mod copy;
pub mod end_to_end;

pub use copy::copy_bandwidth;
