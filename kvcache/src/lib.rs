#![doc = include_str!("../README.md")]
//!
//! # How it works
//!
//! A step that adds `n` tokens at position `p` gets a *write view* of positions `[p, p + n)`, where the model's K/V
//! projection writes directly, and a *read view* of `[0, p + n)` for attention. No step copies cache contents; only
//! an optional context shift (when the cache is full) moves data, and it is counted.
//!
//! # Layout
//! Per layer, separate K and V buffers, each `[kv_head][max_ctx][head_dim]` (see [`layout`] for why). The new
//! token at position `p` for head `h` starts at element `(h * max_ctx + p) * head_dim`.
//!
//! # Sliding-window layers
//! A layer that only attends the last `window` positions can keep a ring of `window + max_chunk - 1` slots instead
//! ([`KvConfig::with_rings`], [`KvRings`]): position `p` lives in slot `(p + origin) mod capacity`, its views carry
//! a [`KvWrap`] so kernels find the slots, and a step still writes its new K/V in place before attention without
//! overwriting a key it reads. Truncation is exact only while the rings hold the next window
//! ([`KvError::RingOverwritten`] otherwise), and a context shift renumbers a ring by advancing its origin instead of
//! moving it (it may not drop so much that the next window reaches into the kept start:
//! [`KvSequence::max_shift_drop`]).
//!
//! # Parts
//! * [`KvConfig`], [`KvModelShape`], [`MemoryLimits`], [`CapacityPlan`]: bytes for a model, max-allocation checks,
//!   the largest context that fits.
//! * [`KvStorage`]: the backend trait (bytes only, no OpenCL types); [`HostStorage`] is the host backend for tests.
//! * [`KvSequence`]: one sequence's cache and the step protocol (`begin_step` / `commit` / `truncate` / `clear`).
//! * [`KvView`], [`KvBinding`]: what kernels receive.
//!
//! # Steps and rollback
//! A forward pass over `n` tokens is `begin_step(n)` → write K/V through [`KvStep::write_view`], attend over
//! [`KvStep::read_view`] → [`KvSequence::commit`] (or [`KvSequence::cancel`]). New token `i` of the step has cache
//! slot and rotary position `step.start() + i`. [`KvSequence::truncate`] and [`KvSequence::clear`] only change the
//! length (regeneration, or a chat turn that keeps the shared prefix). Several sessions are several sequences, each
//! owning its own per-layer buffers; [`CapacityPlan::sequences_in_budget`] says how many fit a memory budget.
//!
//! # When the cache is full
//! [`FullPolicy::Error`] refuses the step ([`KvError::Full`]). [`FullPolicy::Shift`] keeps the first `keep_first`
//! positions, drops the oldest after them and moves the rest down; this is the only operation that copies, it is
//! reported in [`KvStep::shift`] and counted in [`KvStats::bytes_copied`]. The moved keys' rotary positions change:
//! the engine must re-rotate the keys in [`ShiftReport::rerotate_slots`] by `-dropped` positions.
//!
//! # For backend authors
//! Implement [`KvStorage`] with bytes only: `limits()` reports the max single allocation
//! (`CL_DEVICE_MAX_MEM_ALLOC_SIZE`) and the sub-region origin alignment (`CL_DEVICE_MEM_BASE_ADDR_ALIGN`, which
//! OpenCL gives in *bits*: divide by 8). [`KvSequence::bind`] asks for a sub-region only at aligned origins, and the
//! backend may still decline with `Ok(None)`; otherwise the kernel gets the whole buffer and
//! [`KvView::offset_elems`]. Kernels should therefore take `(buffer, offset_elems)` always; the sub-region form is
//! for callees that cannot take an offset. A write view's sub-region spans from head 0's first new position to the
//! last head's last new position, so it also covers other positions of the inner heads: a kernel writes only the
//! view's strided elements. `copy_rows_within` (by default one `copy_within` per row) is called only for a context
//! shift, with non-overlapping ranges.
//!
//! This crate has no GPU code; its tests run on the host backend.

#![deny(missing_docs)]

mod binding;
mod dtype;
mod error;
mod host;
pub mod layout;
mod plan;
mod ring;
mod sequence;
mod step;
mod storage;

pub use binding::KvBinding;
pub use dtype::KvDtype;
pub use error::{BoxedStorageError, KvError};
pub use host::{HostBuffer, HostCounters, HostRegion, HostStorage, HostStorageError};
pub use layout::{KvLayout, KvPart, KvView};
pub use plan::{CapacityPlan, KvConfig, KvModelShape, MemoryLimits};
pub use ring::{KvRings, KvWrap};
pub use sequence::{KvSequence, LayerBuffers, SequenceId};
pub use step::{ContextShift, FullPolicy, KvStats, KvStep, ShiftReport};
pub use storage::{ByteRange, CopyRows, KvStorage, StorageLimits};
