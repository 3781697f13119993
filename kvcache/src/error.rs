//! Errors of the crate: every refusal names what was asked and the limit it hit.

use crate::dtype::KvDtype;

/// Error returned by a storage backend, boxed so [`KvError`] stays one non-generic type.
pub type BoxedStorageError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in planning, allocating or stepping a KV cache.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A configuration field is zero or otherwise unusable.
    #[error("invalid KV cache config: {field} = {value} ({reason})")]
    InvalidConfig {
        /// Name of the field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Sizes overflow 64-bit byte arithmetic.
    #[error("KV cache size overflows 64 bits ({what})")]
    SizeOverflow {
        /// Which quantity overflowed.
        what: &'static str,
    },
    /// One per-layer K or V buffer exceeds the device's maximum single allocation.
    #[error(
        "one KV buffer needs {buffer_bytes} bytes ({kv_heads} kv heads x {max_ctx} positions x {head_dim} x {dtype}) \
         but the device allows at most {max_alloc_bytes} bytes per allocation; \
         the largest context that fits is {largest_fitting_ctx} positions"
    )]
    BufferTooLarge {
        /// Bytes one buffer would need.
        buffer_bytes: u64,
        /// Device limit on one allocation.
        max_alloc_bytes: u64,
        /// Requested context.
        max_ctx: usize,
        /// KV heads per layer.
        kv_heads: usize,
        /// Head dimension.
        head_dim: usize,
        /// Element type.
        dtype: KvDtype,
        /// Largest context whose buffer would fit (0 if not even one position fits).
        largest_fitting_ctx: usize,
    },
    /// The whole cache exceeds the memory budget.
    #[error(
        "the KV cache needs {total_bytes} bytes ({layers} layers x 2 buffers x {buffer_bytes} bytes) \
         but the memory budget is {budget_bytes} bytes; the largest context that fits is {largest_fitting_ctx} positions"
    )]
    OverBudget {
        /// Bytes the cache needs.
        total_bytes: u64,
        /// Bytes one buffer needs.
        buffer_bytes: u64,
        /// Number of layers.
        layers: usize,
        /// Budget given.
        budget_bytes: u64,
        /// Largest context that fits the budget and the allocation limit.
        largest_fitting_ctx: usize,
    },
    /// A step does not fit and the full policy is [`crate::FullPolicy::Error`].
    #[error(
        "KV cache full: {len} positions cached + {requested} new > max_ctx {max_ctx} (policy: error; \
         truncate, clear, or use a context-shift policy)"
    )]
    Full {
        /// Positions held.
        len: usize,
        /// Positions requested by the step.
        requested: usize,
        /// Capacity.
        max_ctx: usize,
    },
    /// A step is larger than what a context shift could ever make room for.
    #[error(
        "step of {requested} positions cannot fit even after a context shift: max_ctx {max_ctx} minus \
         {keep_first} kept positions leaves {room}"
    )]
    StepTooLarge {
        /// Positions requested.
        requested: usize,
        /// Capacity.
        max_ctx: usize,
        /// Positions the shift policy never drops.
        keep_first: usize,
        /// Room a shift can make at most.
        room: usize,
    },
    /// A step of zero positions was asked for.
    #[error("a step must add at least one position")]
    EmptyStep,
    /// `begin_step` while another step is still open.
    #[error("a step for positions {start}..{end} is still open; commit or cancel it first")]
    StepInProgress {
        /// First position of the open step.
        start: usize,
        /// One past its last position.
        end: usize,
    },
    /// `commit`/`cancel` with a step that is not the open one.
    #[error("this step ({start}..{end}) is not the sequence's open step")]
    StaleStep {
        /// First position of the given step.
        start: usize,
        /// One past its last position.
        end: usize,
    },
    /// A context shift asked for outside the sequence, or dropping nothing.
    #[error("a context shift must drop 1..={} of the {len} positions after the first {keep_first}, not {drop}", len.saturating_sub(*keep_first))]
    ShiftOutOfRange {
        /// Positions asked to be kept at the start.
        keep_first: usize,
        /// Positions asked to be dropped after them.
        drop: usize,
        /// Positions the sequence holds.
        len: usize,
    },
    /// Truncating to a length longer than the sequence.
    #[error("cannot truncate to {to} positions: the sequence holds only {len}")]
    TruncateBeyondLength {
        /// Requested length.
        to: usize,
        /// Current length.
        len: usize,
    },
    /// An operation other than `cancel`/`commit` while a step is open.
    #[error("operation not allowed while a step is open")]
    StepOpen,
    /// A layer index past the model's layers.
    #[error("layer {layer} out of range: the cache has {layers} layers")]
    LayerOutOfRange {
        /// Layer asked for.
        layer: usize,
        /// Layers present.
        layers: usize,
    },
    /// A view that does not lie inside the buffer it is bound to.
    #[error("view ends at element {end_elem} but the buffer holds {buffer_elems} elements")]
    ViewOutOfRange {
        /// One past the last element of the view.
        end_elem: u64,
        /// Elements of the buffer.
        buffer_elems: u64,
    },
    /// A view of another element type than the buffer's.
    #[error("view has element type {view} but the buffer stores {buffer}")]
    ViewDtypeMismatch {
        /// The view's dtype.
        view: KvDtype,
        /// The buffer's dtype.
        buffer: KvDtype,
    },
    /// Context shift configured with `keep_first` leaving no room.
    #[error("context shift keeps {keep_first} positions but max_ctx is {max_ctx}: nothing could ever be dropped")]
    ShiftKeepsEverything {
        /// Positions kept.
        keep_first: usize,
        /// Capacity.
        max_ctx: usize,
    },
    /// A step longer than the ring caches were sized for.
    #[error(
        "a step of {requested} positions is longer than the {max_chunk} the sliding-window ring caches were sized \
         for (window {window})"
    )]
    StepLongerThanRing {
        /// Positions asked for.
        requested: usize,
        /// The rings' step size.
        max_chunk: usize,
        /// The rings' window.
        window: usize,
    },
    /// A truncation to a length whose window the rings no longer hold.
    #[error(
        "cannot truncate to {to} positions: the sliding-window ring caches hold positions from {held_from} on, \
         and the next step's window starts at {needed_from}; clear the cache and run the tokens again"
    )]
    RingOverwritten {
        /// Length asked for.
        to: usize,
        /// First position the rings still hold.
        held_from: usize,
        /// First position the next step's window reads.
        needed_from: usize,
    },
    /// A context shift that would leave a ring layer's next window reaching below the kept start.
    #[error(
        "a context shift keeping {keep_first} and dropping {drop} of {len} positions leaves {} after the kept \
         start, fewer than the {} a sliding window of {window} reads from the ring caches",
        len.saturating_sub(keep_first + drop), window.saturating_sub(1)
    )]
    ShiftBreaksWindow {
        /// Positions kept at the start.
        keep_first: usize,
        /// Positions asked to drop.
        drop: usize,
        /// Length before the shift.
        len: usize,
        /// The rings' window.
        window: usize,
    },
    /// The storage backend failed.
    #[error("KV storage backend failed: {0}")]
    Storage(#[source] BoxedStorageError),
}
