//! Extension constants that `opencl3` does not re-export, with the values of the Khronos and vendor headers
//! (`cl_ext.h`, Qualcomm's `cl_ext_qcom.h`, Arm's `cl_arm_scheduling_controls` specification).

/// `cl_khr_priority_hints`: queue property and its values.
pub const CL_QUEUE_PRIORITY_KHR: u64 = 0x1096;
/// High queue priority.
pub const CL_QUEUE_PRIORITY_HIGH_KHR: u64 = 1 << 0;
/// Medium (default) queue priority.
pub const CL_QUEUE_PRIORITY_MED_KHR: u64 = 1 << 1;
/// Low queue priority: yields the GPU to the UI.
pub const CL_QUEUE_PRIORITY_LOW_KHR: u64 = 1 << 2;

/// `cl_qcom_priority_hint`: context property and its values.
pub const CL_CONTEXT_PRIORITY_HINT_QCOM: isize = 0x40C9;
/// High context priority.
pub const CL_PRIORITY_HINT_HIGH_QCOM: isize = 0x40CA;
/// Normal context priority.
pub const CL_PRIORITY_HINT_NORMAL_QCOM: isize = 0x40CB;
/// Low context priority.
pub const CL_PRIORITY_HINT_LOW_QCOM: isize = 0x40CC;

/// `cl_qcom_perf_hint`: context property and its values.
pub const CL_CONTEXT_PERF_HINT_QCOM: isize = 0x40C2;
/// Highest GPU clocks.
pub const CL_PERF_HINT_HIGH_QCOM: isize = 0x40C3;
/// Balanced GPU clocks.
pub const CL_PERF_HINT_NORMAL_QCOM: isize = 0x40C4;
/// Lowest GPU clocks (saves power).
pub const CL_PERF_HINT_LOW_QCOM: isize = 0x40C5;

/// `cl_arm_scheduling_controls`: device query, capability bit and queue property.
pub const CL_DEVICE_SCHEDULING_CONTROLS_CAPABILITIES_ARM: u32 = 0x41E4;
/// Capability bit: queues may be limited to a number of compute units.
pub const CL_DEVICE_SCHEDULING_COMPUTE_UNIT_LIMIT_ARM: u64 = 1 << 7;
/// Queue property: the number of compute units the queue may use.
pub const CL_QUEUE_COMPUTE_UNIT_LIMIT_ARM: u64 = 0x41F3;

/// `cl_intel_subgroups`: the supported sub-group sizes.
pub const CL_DEVICE_SUB_GROUP_SIZES_INTEL: u32 = 0x4108;
/// `cl_nv_device_attribute_query`: the warp size.
pub const CL_DEVICE_WARP_SIZE_NV: u32 = 0x4003;

/// `cl_qcom_large_buffer`: the `clCreateBufferWithProperties` property that lets one buffer exceed
/// `CL_DEVICE_MAX_MEM_ALLOC_SIZE` (value 1 turns it on), as `cl_ext_qcom.h` defines it and llama.cpp's OpenCL
/// backend passes it on Adreno.
pub const CL_LARGE_BUFFER_QCOM: u64 = 0x41A6;
