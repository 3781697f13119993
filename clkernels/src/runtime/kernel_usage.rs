//! [`KernelUsage`]: what each kernel built on a device takes of the per-launch limits a phone sets, its local
//! memory (`CL_KERNEL_LOCAL_MEM_SIZE`) and the widest work-group it was launched with, so a test can hold every
//! kernel the engine chose against each device profile, not only the ones that happen to be checked at the time.
//!
//! Each build registers one record; a launch updates its own record with three atomic maxima and no lock, so the
//! record costs a launch-bound decode step nothing measurable.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::runtime::ProfileLimits;

/// One built kernel's use of the per-launch limits, as recorded so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelUsage {
    /// The kernel's name.
    pub kernel: &'static str,
    /// `CL_KERNEL_LOCAL_MEM_SIZE` as the driver reported it (0 if it would not say).
    pub local_mem_bytes: u64,
    /// Most work-items per group of any launch with an explicit local size.
    pub widest_group: usize,
    /// Per dimension, the most work-items of any such launch.
    pub widest_dims: [usize; 3],
    /// Launches so far, those leaving the local size to the driver included.
    pub launches: u64,
}

impl KernelUsage {
    /// Every way this usage exceeds `limits` (unknown limits are not checked), in words with the numbers.
    pub fn breaches(&self, limits: &ProfileLimits) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(max) = limits.local_mem_bytes {
            if self.local_mem_bytes > max {
                found.push(format!(
                    "{} needs {} bytes of local memory, more than {max}",
                    self.kernel, self.local_mem_bytes
                ));
            }
        }
        if let Some(max) = limits.max_work_group_size {
            if self.widest_group > max {
                found.push(format!(
                    "{} ran {} work-items per group, more than {max}",
                    self.kernel, self.widest_group
                ));
            }
        }
        if let Some(sizes) = &limits.max_work_item_sizes {
            for (d, &items) in self.widest_dims.iter().enumerate() {
                let max = sizes.get(d).or(sizes.last()).copied().unwrap_or(usize::MAX);
                if items > max {
                    found.push(format!(
                        "{} ran {items} work-items in dimension {d} of a group, more than {max}",
                        self.kernel
                    ));
                }
            }
        }
        found
    }
}

/// The live record of one build.
#[derive(Debug)]
pub(crate) struct UsageRecord {
    kernel: &'static str,
    local_mem_bytes: u64,
    widest_group: AtomicUsize,
    widest_dims: [AtomicUsize; 3],
    launches: AtomicU64,
}

impl UsageRecord {
    /// Notes one launch with `local` work-items per group (`None`: the driver's choice).
    pub(crate) fn launched(&self, local: Option<&[usize]>) {
        self.launches.fetch_add(1, Ordering::Relaxed);
        if let Some(local) = local {
            self.widest_group
                .fetch_max(local.iter().product(), Ordering::Relaxed);
            for (slot, &items) in self.widest_dims.iter().zip(local) {
                slot.fetch_max(items, Ordering::Relaxed);
            }
        }
    }

    fn snapshot(&self) -> KernelUsage {
        let dims = |d: usize| self.widest_dims[d].load(Ordering::Relaxed);
        KernelUsage {
            kernel: self.kernel,
            local_mem_bytes: self.local_mem_bytes,
            widest_group: self.widest_group.load(Ordering::Relaxed),
            widest_dims: [dims(0), dims(1), dims(2)],
            launches: self.launches.load(Ordering::Relaxed),
        }
    }
}

/// Every record of one device, in build order.
#[derive(Debug, Default)]
pub(crate) struct UsageRegistry {
    records: Mutex<Vec<Arc<UsageRecord>>>,
}

impl UsageRegistry {
    /// A new record for a build of `kernel` taking `local_mem_bytes` of local memory.
    pub(crate) fn register(&self, kernel: &'static str, local_mem_bytes: u64) -> Arc<UsageRecord> {
        let record = Arc::new(UsageRecord {
            kernel,
            local_mem_bytes,
            widest_group: AtomicUsize::new(0),
            widest_dims: Default::default(),
            launches: AtomicU64::new(0),
        });
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&record));
        record
    }

    /// The records as they stand.
    pub(crate) fn snapshot(&self) -> Vec<KernelUsage> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|r| r.snapshot())
            .collect()
    }
}
