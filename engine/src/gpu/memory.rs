//! The device-memory budget of a model, checked before anything is allocated.
//!
//! Drivers differ in how they fail once global memory is exhausted: PoCL aborts the process inside the driver,
//! others fail a later launch. Adding up weights, KV cache and activations first turns all of those into one error
//! that says what needs how much, and what to change.

use crate::EngineError;

/// What a model will allocate on the device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeeds {
    /// Weights as uploaded.
    pub weights: u64,
    /// K and V caches of every layer.
    pub kv_cache: u64,
    /// Scratch activations of the largest step.
    pub activations: u64,
    /// Context the KV cache is sized for, for the message.
    pub ctx: usize,
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl MemoryNeeds {
    /// The sum, saturating (a sum beyond `u64` does not fit any device anyway).
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv_cache)
            .saturating_add(self.activations)
    }

    /// Fails when the total exceeds `global_mem` bytes of the device `device`; a device that reports no size (0)
    /// is not checked.
    pub fn check(&self, device: &str, global_mem: u64) -> Result<(), EngineError> {
        if global_mem == 0 || self.total() <= global_mem {
            return Ok(());
        }
        Err(EngineError::InvalidOption(format!(
            "the model needs {} on the device (weights {} + KV cache {} for {} tokens + activations {}) but {device} \
             has {} of global memory: lower --ctx, or use M0E4 weights",
            gib(self.total()),
            gib(self.weights),
            gib(self.kv_cache),
            self.ctx,
            gib(self.activations),
            gib(global_mem)
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_model_over_the_device_memory_is_an_error_naming_every_part() {
        let needs = MemoryNeeds {
            weights: 4 * GIB,
            kv_cache: 5 * GIB,
            activations: GIB / 2,
            ctx: 32768,
        };
        let e = needs.check("Adreno 750", 8 * GIB).unwrap_err().to_string();
        for part in [
            "needs 9.50 GiB",
            "weights 4.00 GiB",
            "KV cache 5.00 GiB for 32768 tokens",
            "activations 0.50 GiB",
            "Adreno 750 has 8.00 GiB",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
        needs.check("big", 10 * GIB).unwrap();
        needs.check("unknown", 0).unwrap();
    }

    #[test]
    fn the_total_saturates_instead_of_wrapping() {
        let needs = MemoryNeeds {
            weights: u64::MAX,
            kv_cache: u64::MAX,
            activations: 1,
            ctx: 1,
        };
        assert!(needs.check("any", u64::MAX - 1).is_err());
    }
}
