//! [`cases`]: the launches the suite times, at the mat-vec and mat-mat shapes of a 7B Llama (or smaller ones)
//! plus the smaller kernels, one file per kernel family.

mod attention;
mod products;
mod rows;
mod sampling;

use clkernels::kernels::KernelError;
use clkernels::runtime::Gpu;

use super::data::Xorshift;
use super::{Case, SuiteOptions};

/// Model dimensions the cases are shaped by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) hidden: usize,
    pub(crate) ffn: usize,
    pub(crate) vocab: usize,
    /// Prompt tokens of the prefill cases.
    pub(crate) seq: usize,
}

impl Dims {
    fn of(opts: &SuiteOptions) -> Self {
        let (hidden, ffn, vocab, seq) = match (opts.dims, opts.small) {
            (Some((hidden, ffn, vocab)), small) => {
                (hidden, ffn, vocab, if small { 64 } else { 512 })
            }
            (None, true) => (512, 1376, 4000, 64),
            (None, false) => (4096, 11008, 32000, 512),
        };
        Dims {
            hidden,
            ffn,
            vocab,
            seq,
        }
    }
}

/// Builds the cases `opts` selects, in a fixed order: the launch floor, the matrix products, the row kernels,
/// attention, sampling.
pub fn cases(gpu: &Gpu, opts: &SuiteOptions) -> Result<Vec<Case>, KernelError> {
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let dims = Dims::of(opts);
    let mut out = Vec::new();
    rows::launch_floor(gpu, opts, &mut rng, &mut out)?;
    products::matvec_m0e4(gpu, opts, dims, &mut rng, &mut out)?;
    products::matvec_f16(gpu, opts, dims, &mut rng, &mut out)?;
    products::matmul_m0e4(gpu, opts, dims, &mut rng, &mut out)?;
    rows::rmsnorm(gpu, opts, dims, &mut rng, &mut out)?;
    rows::rope(gpu, opts, dims, &mut rng, &mut out)?;
    attention::attention(gpu, opts, dims, &mut rng, &mut out)?;
    sampling::sampling(gpu, opts, dims, &mut rng, &mut out)?;
    Ok(out)
}
