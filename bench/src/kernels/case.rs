//! [`Case`]: one kernel launch of a real model shape, ready to enqueue again and again.

use clkernels::kernels::KernelError;

/// One benchmark case: it owns its device buffers (synthetic data of real model shapes) and a closure that
/// enqueues one launch.
pub struct Case {
    /// Kernel name, e.g. `matvec_m0e4`.
    pub name: String,
    /// Shape, e.g. `4096x11008 G32`.
    pub shape: String,
    /// Launch configuration in words.
    pub config: String,
    /// Bytes one launch must move (read + written once: weights, activations, outputs).
    pub bytes: f64,
    /// Floating-point operations of one launch (0 when bandwidth is the measure).
    pub flops: f64,
    pub(crate) run: Box<dyn FnMut() -> Result<(), KernelError>>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl Case {
    /// Enqueues one launch (does not wait).
    pub fn enqueue(&mut self) -> Result<(), KernelError> {
        (self.run)()
    }
}
