//! Checks of allocations, kernels and launches against the device's limits, as [`Gpu::caps`] states them.
//!
//! The host driver enforces its own limits, but under a device profile ([`crate::runtime::DeviceProfile`]) the
//! limits that matter are the phone's, which are lower: a 2 MiB local array or a 1024-wide work-group runs on the
//! CPU driver and fails on the phone. These checks make such a breach an error naming the kernel and the numbers
//! here, where the phone's driver would fail a build or a launch (or abort).

use opencl3::kernel::Kernel;

use crate::runtime::{ClError, Gpu, SplitLimits};

impl Gpu {
    /// Fails when one buffer of `bytes` exceeds the device's largest allocation (0: the device does not say).
    pub fn check_allocation(&self, bytes: u64) -> Result<(), ClError> {
        let max = self.caps().max_alloc_bytes;
        if max > 0 && bytes > max {
            return Err(ClError::AllocationTooLarge {
                bytes,
                max,
                device: self.caps().display_name(),
            });
        }
        Ok(())
    }

    /// The limits a tensor split across buffers must respect ([`crate::runtime::RowSplit::plan`]).
    pub fn split_limits(&self) -> SplitLimits {
        SplitLimits {
            max_alloc_bytes: self.caps().max_alloc_bytes,
            base_addr_align_bits: self.caps().base_addr_align_bits,
        }
    }

    /// Fails when a created kernel needs more local memory than the device gives. The driver counts the kernel's
    /// own local arrays; tlite's kernels have no local arguments, so that is all of it.
    pub fn check_kernel(&self, kernel: &Kernel, name: &str) -> Result<(), ClError> {
        let limit = self.caps().local_mem_bytes;
        // A driver that will not say is not second-guessed: the build it made is what runs.
        let Ok(needs) = kernel.get_local_mem_size(self.device().id()) else {
            return Ok(());
        };
        if limit > 0 && needs > limit {
            return Err(self.over_limit(name, "bytes of local memory", needs, limit));
        }
        Ok(())
    }

    /// Fails when a launch's work-group exceeds the device's work-group size or work-item sizes. Called on every
    /// launch with an explicit local size: a few comparisons against values read once at open.
    pub fn check_work_group(&self, name: &str, local: &[usize]) -> Result<(), ClError> {
        let caps = self.caps();
        let items: usize = local.iter().product();
        if caps.max_work_group_size > 0 && items > caps.max_work_group_size {
            return Err(self.over_limit(
                name,
                "work-items per group",
                items as u64,
                caps.max_work_group_size as u64,
            ));
        }
        for (&size, &max) in local.iter().zip(&caps.max_work_item_sizes) {
            if size > max {
                return Err(self.over_limit(
                    name,
                    "work-items in one dimension of a group",
                    size as u64,
                    max as u64,
                ));
            }
        }
        Ok(())
    }

    fn over_limit(&self, kernel: &str, what: &'static str, needs: u64, limit: u64) -> ClError {
        ClError::OverDeviceLimit {
            kernel: kernel.to_string(),
            what,
            needs,
            limit,
            device: self.caps().display_name(),
        }
    }
}
