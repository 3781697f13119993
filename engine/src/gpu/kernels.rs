//! The kernel launchers one model uses, built once at load.

use clkernels::kernels::attention::Attention;
use clkernels::kernels::elementwise::Elementwise;
use clkernels::kernels::embedding::Embedding;
use clkernels::kernels::matmul::{MatmulF16, MatmulM0e4};
use clkernels::kernels::matvec::{MatvecConfig, MatvecF16, MatvecM0e4};
use clkernels::kernels::norm::Norm;
use clkernels::kernels::rope::Rope;
use clkernels::kernels::sampling::Sampling;
use clkernels::kernels::Residual;
use clkernels::runtime::{DeviceBuffer, Gpu};

use super::weights::DeviceMatrix;
use crate::EngineError;

/// The kernel launchers one model uses.
#[derive(Debug)]
pub(super) struct Kernels {
    pub matvec: MatvecM0e4,
    pub matvec_f16: MatvecF16,
    pub matmul: MatmulM0e4,
    pub matmul_f16: MatmulF16,
    pub norm: Norm,
    pub rope: Rope,
    pub embedding: Embedding,
    pub sampling: Sampling,
    pub attention: Attention,
    pub elementwise: Elementwise,
}

impl Kernels {
    pub fn new(gpu: &Gpu, half_products: bool) -> Result<Self, EngineError> {
        let mut matvec = MatvecConfig::for_gpu(gpu);
        if !half_products {
            matvec.half_math = false;
            matvec.nv_half2 = false;
        }
        // The launchers compile their programs on first start (minutes of a phone's or a 2-core PC's compiler
        // otherwise spent one program after another); drivers build different programs concurrently, so the
        // heaviest (attention, the mat-vec) start at once on their own threads while this one builds the rest.
        std::thread::scope(|scope| {
            let attention = scope.spawn(|| Attention::new(gpu));
            let matvec = scope.spawn(move || MatvecM0e4::with_config(gpu, matvec));
            let rest = (
                MatmulM0e4::new(gpu),
                MatmulF16::new(gpu),
                MatvecF16::new(gpu),
                Norm::new(gpu),
                Rope::new(gpu),
                Embedding::new(gpu),
                Sampling::new(gpu),
                Elementwise::new(gpu),
            );
            let joined =
                |name: &str| EngineError::Model(format!("building the {name} kernels panicked"));
            let attention = attention.join().map_err(|_| joined("attention"))?;
            let matvec = matvec.join().map_err(|_| joined("mat-vec"))?;
            Ok(Self {
                matvec: matvec?,
                matvec_f16: rest.2?,
                matmul: rest.0?,
                matmul_f16: rest.1?,
                norm: rest.3?,
                rope: rest.4?,
                embedding: rest.5?,
                sampling: rest.6?,
                attention: attention?,
                elementwise: rest.7?,
            })
        })
    }

    /// `y = W·x (+ residual)` for `seq` rows: mat-vec in decode, mat-mat in prefill.
    pub fn linear(
        &self,
        w: &DeviceMatrix,
        x: &DeviceBuffer<f32>,
        seq: usize,
        y: &mut DeviceBuffer<f32>,
        residual: Residual<'_>,
    ) -> Result<(), EngineError> {
        match (w, seq) {
            (DeviceMatrix::M0e4(m), 1) => self.matvec.enqueue(m, x, y, residual)?,
            (DeviceMatrix::M0e4(m), _) => self.matmul.enqueue(m, x, seq, y, residual)?,
            (DeviceMatrix::F16(m), 1) => self.matvec_f16.enqueue(m, x, y, residual)?,
            (DeviceMatrix::F16(m), _) => self.matmul_f16.enqueue(m, x, seq, y, residual)?,
        }
        Ok(())
    }
}
