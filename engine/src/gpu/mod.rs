//! The OpenCL forward pass: plans shapes with symshape, keeps the KV cache in place, enqueues kernels.
//!
//! At load, [`GpuModel`] uploads the weights (M0E4 through the kernels' device type, f16 otherwise), allocates one
//! K and one V buffer per layer with `kvcache` on clkernels' OpenCL storage, derives the step plan and allocates
//! every activation where the plan places it. A step only evaluates the plan for `(seq, past)` on the CPU, which
//! gives every kernel's dims, and enqueues kernels: prefill (`seq > 1`) uses the mat-mat
//! kernels, decode the mat-vec ones. The only reads back are the arg-max token (greedy)
//! or the last position's logits (sampling); a decode step whose input is the token the device itself just chose
//! reads its id from the device, so greedy decode writes nothing to the device either.
//!
//! Read it beside `fixtures/src/reference_model.rs`, the plain-Rust forward pass it is tested against:
//!
//! | file | holds |
//! | --- | --- |
//! | `model.rs` | [`GpuOptions`], [`GpuModel`]: loading, the step protocol, the loop over layers |
//! | `prefill.rs` | one layer over a chunk of prompt tokens, and the output head over its last position |
//! | `decode.rs` | one layer over one token with the fused launches, and its output head |
//! | `step.rs` | what every layer of a step shares: the kernels' shapes, the model's constants, the cache views |
//! | `kv_append.rs` | the three ways q and k are rotated and the new K and V appended to the cache |
//! | `extra_steps.rs` | the optional steps of some architectures: q/k norms, post norms, logit soft-capping |
//! | `kernels.rs` | the kernel launchers one model uses |
//! | `device_sampling.rs` | sampled tokens drawn on the device, one id read back ([`SamplingSite`]) |
//! | `buffers.rs` | the activation buffers: one allocation per plan buffer, per layer handles naming them |
//! | `arena.rs` | the plan's buffer sizes for the largest step, which the memory budget sums too ([`ActivationSizes`]) |
//! | `weights.rs` | the weights on the device ([`DeviceWeights`]) |
//! | `kv_io.rs` | reading the used KV positions back and writing them into a fresh cache (sessions on disk) |
//! | `shift.rs` | context shift: drop a block of cached positions, move the rest down, re-rotate the moved keys |
//! | `plan.rs` | the symbolic plan: which activations share memory, and each step's kernel dims ([`StepPlan`]) |
//! | `memory.rs`, `budget.rs` | the device-memory budget: the context that fits it, checked before anything is allocated ([`choose_context`]) |

mod arena;
mod budget;
mod buffers;
mod decode;
mod device_sampling;
mod extra_steps;
mod kernels;
mod kv_append;
mod kv_io;
mod memory;
mod model;
mod plan;
mod prefill;
mod shift;
mod step;
mod weights;

pub use arena::{ActivationSizes, ArenaSlot, ARENA_ALIGN_BYTES};
pub use budget::{MemBudget, DEFAULT_BUDGET_PERCENT};
pub use device_sampling::SamplingSite;
pub use kv_io::KvImageShape;
pub use memory::{
    choose_context, size, ContextChoice, ContextReason, ContextRequest, DeviceMemory, Footprint,
    KvRingFootprint, MemoryNeeds, NamedBuffer, PROGRAM_ALLOWANCE_BYTES,
};
pub use model::{GpuModel, GpuOptions};
pub use plan::{StepDims, StepPlan};
pub use weights::{
    padded_ffn, DeviceLayer, DeviceMatrix, DeviceWeights, RowSplitMatrix, FFN_MULTIPLE,
};
