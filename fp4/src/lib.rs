//! M0E4 4-bit weight format: quantiser, GPU packing layout, reference dequantiser and matvec.
//!
//! (Full format documentation below is being written; the public names are stable.)

pub mod baseline;
mod error;
mod grid;
pub mod io;
mod matrix;
pub mod packing;
mod quantize;
pub mod recipe;
pub mod reference;
mod shape;
pub mod stats;

pub use error::Fp4Error;
pub use grid::{Grid, SearchEffort};
pub use matrix::M0e4Matrix;
pub use quantize::{quantize_m0e4, quantize_m0e4_with, Weight};
pub use shape::{GroupSize, MatrixShape};
