//! Cases of the sampling kernels over one row of logits: softmax and argmax.

use std::rc::Rc;

use clkernels::kernels::norm::RowsShape;
use clkernels::kernels::sampling::Sampling;
use clkernels::kernels::KernelError;
use clkernels::runtime::{DeviceBuffer, Gpu};

use super::Dims;
use crate::kernels::data::Xorshift;
use crate::kernels::{Case, SuiteOptions};

/// Softmax and argmax over one vocabulary-wide row, sharing the logits.
pub(super) fn sampling(
    gpu: &Gpu,
    opts: &SuiteOptions,
    dims: Dims,
    rng: &mut Xorshift,
    out: &mut Vec<Case>,
) -> Result<(), KernelError> {
    if !["softmax", "argmax"].iter().any(|n| opts.wants(n)) {
        return Ok(());
    }
    let vocab = dims.vocab;
    let s = Rc::new(Sampling::new(gpu)?);
    let logits = Rc::new(DeviceBuffer::from_slice(gpu, &rng.floats(vocab))?);
    if opts.wants("softmax") {
        let (s, x) = (s.clone(), logits.clone());
        let mut y = DeviceBuffer::<f32>::new(gpu, vocab)?;
        out.push(Case {
            name: "softmax".into(),
            shape: format!("1x{vocab}"),
            config: String::new(),
            bytes: (vocab * 8) as f64,
            flops: 0.0,
            run: Box::new(move || {
                s.softmax(
                    &x,
                    &mut y,
                    RowsShape {
                        rows: 1,
                        dim: vocab,
                    },
                    1.0,
                )
            }),
        });
    }
    if opts.wants("argmax") {
        let (s, x) = (s, logits);
        let mut i = DeviceBuffer::<u32>::new(gpu, 1)?;
        out.push(Case {
            name: "argmax".into(),
            shape: format!("{vocab}"),
            config: String::new(),
            bytes: (vocab * 4) as f64,
            flops: 0.0,
            run: Box::new(move || s.argmax(&x, vocab, &mut i)),
        });
    }
    Ok(())
}
