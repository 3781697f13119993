//! Execution priority. The paper runs generation on a low-priority queue so the phone's UI keeps its frame rate.
//! Each vendor spells that differently; this module turns one [`QueuePriority`] into the context and queue
//! properties a device understands, and records which of them took effect.

use serde::Serialize;

use crate::runtime::cl_consts::*;
use crate::runtime::{Capabilities, VendorFamily};

/// Requested execution priority for tlite's command queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum QueuePriority {
    /// Yield to other GPU work (the UI): the default for generation.
    Low,
    /// The driver's default.
    #[default]
    Normal,
    /// Ask to run ahead of other work.
    High,
}

impl QueuePriority {
    /// The priority generation should use: low, as the paper does, so the phone's UI keeps its frame rate.
    pub const FOR_GENERATION: QueuePriority = QueuePriority::Low;
}

impl std::str::FromStr for QueuePriority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(QueuePriority::Low),
            "normal" | "medium" | "med" => Ok(QueuePriority::Normal),
            "high" => Ok(QueuePriority::High),
            other => Err(format!(
                "unknown queue priority `{other}` (expected low, normal or high)"
            )),
        }
    }
}

impl std::fmt::Display for QueuePriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueuePriority::Low => "low",
            QueuePriority::Normal => "normal",
            QueuePriority::High => "high",
        })
    }
}

/// Qualcomm's context performance hint (GPU clock policy), independent of priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum PerfHint {
    /// Do not pass a hint.
    #[default]
    Unset,
    /// Low clocks, saving power.
    Low,
    /// Normal clocks.
    Normal,
    /// High clocks.
    High,
}

/// One mechanism through which a priority can take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PriorityMechanism {
    /// `CL_QUEUE_PRIORITY_KHR` queue property (`cl_khr_priority_hints`).
    KhrQueuePriority,
    /// `CL_CONTEXT_PRIORITY_HINT_QCOM` context property (`cl_qcom_priority_hint`).
    QcomContextPriority,
    /// `CL_CONTEXT_PERF_HINT_QCOM` context property (`cl_qcom_perf_hint`).
    QcomPerfHint,
    /// `CL_QUEUE_COMPUTE_UNIT_LIMIT_ARM` queue property (`cl_arm_scheduling_controls`): a low-priority queue leaves
    /// half the shader cores to others.
    ArmComputeUnitLimit,
}

/// What became of a priority request, queryable after opening (`Gpu::priority_applied`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriorityReport {
    /// What was asked for.
    pub requested: QueuePriority,
    /// The mechanisms that the driver accepted.
    pub applied: Vec<PriorityMechanism>,
    /// Mechanisms the device advertised but whose properties the driver rejected (then retried without them).
    pub rejected: Vec<PriorityMechanism>,
}

impl PriorityReport {
    /// Whether the request is in effect: normal always is; low/high only through at least one mechanism.
    pub fn is_effective(&self) -> bool {
        self.requested == QueuePriority::Normal
            || self
                .applied
                .iter()
                .any(|m| *m != PriorityMechanism::QcomPerfHint)
    }
}

/// The context properties (zero-terminated, or empty) for this device and request.
pub(crate) fn context_properties(
    caps: &Capabilities,
    priority: QueuePriority,
    perf: PerfHint,
) -> (Vec<isize>, Vec<PriorityMechanism>) {
    let mut props = Vec::new();
    let mut used = Vec::new();
    if caps.qcom_priority_hint && priority != QueuePriority::Normal {
        props.push(CL_CONTEXT_PRIORITY_HINT_QCOM);
        props.push(match priority {
            QueuePriority::Low => CL_PRIORITY_HINT_LOW_QCOM,
            QueuePriority::Normal => CL_PRIORITY_HINT_NORMAL_QCOM,
            QueuePriority::High => CL_PRIORITY_HINT_HIGH_QCOM,
        });
        used.push(PriorityMechanism::QcomContextPriority);
    }
    if caps.qcom_perf_hint && perf != PerfHint::Unset {
        props.push(CL_CONTEXT_PERF_HINT_QCOM);
        props.push(match perf {
            PerfHint::Low => CL_PERF_HINT_LOW_QCOM,
            PerfHint::Normal | PerfHint::Unset => CL_PERF_HINT_NORMAL_QCOM,
            PerfHint::High => CL_PERF_HINT_HIGH_QCOM,
        });
        used.push(PriorityMechanism::QcomPerfHint);
    }
    if !props.is_empty() {
        props.push(0);
    }
    (props, used)
}

/// The queue properties (zero-terminated, or empty) for this device and request.
pub(crate) fn queue_properties(
    caps: &Capabilities,
    priority: QueuePriority,
) -> (Vec<u64>, Vec<PriorityMechanism>) {
    let mut props = Vec::new();
    let mut used = Vec::new();
    if priority == QueuePriority::Normal {
        return (props, used);
    }
    if caps.khr_priority_hints {
        props.push(CL_QUEUE_PRIORITY_KHR);
        props.push(match priority {
            QueuePriority::Low => CL_QUEUE_PRIORITY_LOW_KHR,
            QueuePriority::Normal => CL_QUEUE_PRIORITY_MED_KHR,
            QueuePriority::High => CL_QUEUE_PRIORITY_HIGH_KHR,
        });
        used.push(PriorityMechanism::KhrQueuePriority);
    }
    if priority == QueuePriority::Low
        && caps.arm_scheduling_controls
        && caps.arm_scheduling_capabilities & CL_DEVICE_SCHEDULING_COMPUTE_UNIT_LIMIT_ARM != 0
        && caps.compute_units > 1
    {
        props.push(CL_QUEUE_COMPUTE_UNIT_LIMIT_ARM);
        props.push(u64::from(caps.compute_units / 2));
        used.push(PriorityMechanism::ArmComputeUnitLimit);
    }
    if !props.is_empty() {
        props.push(0);
    }
    (props, used)
}

/// The mechanisms a request would use on a device with these capabilities (what opening it would try first; the
/// driver may still reject some). For showing what a phone would do without opening it.
pub fn mechanisms_for(
    caps: &Capabilities,
    priority: QueuePriority,
    perf: PerfHint,
) -> Vec<PriorityMechanism> {
    let mut used = context_properties(caps, priority, perf).1;
    used.extend(queue_properties(caps, priority).1);
    used
}

/// Logs, once per open, that a priority could not be applied here.
pub(crate) fn log_fallback(caps: &Capabilities, report: &PriorityReport) {
    // Normal priority is what every queue gets without hints; that a device has none (PoCL, most desktop
    // drivers) is no reason to write to the user's terminal on every start.
    if !report.is_effective() {
        tracing::info!(
            device = %caps.name,
            requested = %report.requested,
            "queue priority not supported here (no cl_khr_priority_hints, cl_qcom_priority_hint or \
             cl_arm_scheduling_controls); using a normal-priority queue"
        );
    }
    if !report.rejected.is_empty() {
        tracing::warn!(device = %caps.name, rejected = ?report.rejected, "driver rejected priority properties");
    }
    if caps.vendor_family == VendorFamily::Adreno
        && !caps.qcom_priority_hint
        && report.requested != QueuePriority::Normal
    {
        tracing::info!(device = %caps.name, "Adreno device without cl_qcom_priority_hint");
    }
}
