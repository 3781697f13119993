//! The end-to-end benchmark behind `tlite bench`: synthetic models of real shapes ([`BenchArch`],
//! [`synthetic_model`]) run through the engine's GPU forward pass by [`run_bench`], whose decode speed is compared
//! with the copy-bandwidth roofline; [`StepProfile`] summarises a profiled decode step.

mod activations;
mod arch;
mod run;
mod step_profile;
mod synthetic;

pub use activations::ActivationFigures;
pub use arch::BenchArch;
pub use run::{run_bench, BenchReport};
pub use step_profile::{KernelShare, StepProfile};
pub use synthetic::synthetic_model;
