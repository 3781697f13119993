//! [`StepProfile`]: where one profiled decode step's device time goes, kernel by kernel.

use clkernels::kernels::LaunchTiming;

/// One kernel's share of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelShare {
    /// The kernel's name.
    pub kernel: &'static str,
    /// Its launches in the step.
    pub launches: usize,
    /// Device nanoseconds of those launches together.
    pub busy_ns: u64,
}

/// The launches of one step summed per kernel, most expensive first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepProfile {
    /// First start to last end, nanoseconds.
    pub span_ns: u64,
    /// Launches in the step.
    pub launches: usize,
    /// Nanoseconds inside kernels (the rest of the span is between launches).
    pub busy_ns: u64,
    /// Per kernel, by descending device time (first launched first among equals).
    pub kernels: Vec<KernelShare>,
}

impl StepProfile {
    /// The summary of `launches` (in launch order, as [`clkernels::kernels::profile_launches`] returns them);
    /// `None` for no launches.
    pub fn of(launches: &[LaunchTiming]) -> Option<Self> {
        let span_ns = match (launches.first(), launches.last()) {
            (Some(a), Some(b)) => b.end_ns.saturating_sub(a.start_ns),
            _ => return None,
        };
        let mut kernels: Vec<KernelShare> = Vec::new();
        for l in launches {
            let ns = l.end_ns.saturating_sub(l.start_ns);
            match kernels.iter_mut().find(|k| k.kernel == l.kernel) {
                Some(k) => {
                    k.launches += 1;
                    k.busy_ns += ns;
                }
                None => kernels.push(KernelShare {
                    kernel: l.kernel,
                    launches: 1,
                    busy_ns: ns,
                }),
            }
        }
        kernels.sort_by_key(|k| std::cmp::Reverse(k.busy_ns));
        Some(StepProfile {
            span_ns,
            launches: launches.len(),
            busy_ns: kernels.iter().map(|k| k.busy_ns).sum(),
            kernels,
        })
    }

    /// Nanoseconds of the span no kernel ran.
    pub fn idle_ns(&self) -> u64 {
        self.span_ns.saturating_sub(self.busy_ns)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{KernelShare, LaunchTiming, StepProfile};

    #[test]
    fn launches_are_summed_per_kernel_most_expensive_first() {
        let at = |kernel, start_ns, end_ns| LaunchTiming {
            kernel,
            start_ns,
            end_ns,
        };
        let launches = [
            at("rmsnorm", 100, 110),
            at("matvec", 120, 220),
            at("attn", 230, 260),
            at("matvec", 270, 400),
            at("rmsnorm", 405, 420),
        ];
        let p = StepProfile::of(&launches).unwrap();
        assert_eq!(
            (p.span_ns, p.launches, p.busy_ns, p.idle_ns()),
            (320, 5, 285, 35)
        );
        let share = |kernel, launches, busy_ns| KernelShare {
            kernel,
            launches,
            busy_ns,
        };
        assert_eq!(
            p.kernels,
            [
                share("matvec", 2, 230),
                share("attn", 1, 30),
                share("rmsnorm", 2, 25)
            ]
        );
        assert_eq!(StepProfile::of(&[]), None);
    }
}
