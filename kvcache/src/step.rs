//! Values a step hands out: the write and read views, and what a context shift did.

use std::ops::Range;
use std::sync::Arc;

use crate::layout::KvView;

/// What to do when a step does not fit in `max_ctx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FullPolicy {
    /// Refuse the step with [`crate::KvError::Full`]; the caller truncates, clears or gives up.
    Error,
    /// Drop old positions to make room (see [`ContextShift`]).
    Shift(ContextShift),
}

/// Context shift: keep the first `keep_first` positions (the prompt's "attention sink"), drop the oldest positions
/// after them, and move the rest down.
///
/// This is the one operation of the crate that copies cache contents: the kept tail moves down by the number of
/// dropped positions, in every layer, head and part. Dropping more than needed at once (`drop_at_least`) makes
/// shifts rarer, so the copies are amortised.
///
/// **Rotary positions change.** The keys of a moved position were rotated (RoPE) for their old slot; after the
/// shift they sit `dropped` slots lower. The engine must re-rotate the keys in [`ShiftReport::rerotate_slots`] by
/// `-(dropped)` positions (RoPE is a rotation, so rotating by the difference is exact up to rounding), and give new
/// tokens the rotary position of their cache slot, as before. Values carry no position and need nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContextShift {
    /// Positions at the start that are never dropped.
    pub keep_first: usize,
    /// Drop at least this many positions per shift (more only if the step needs more room).
    pub drop_at_least: usize,
}

/// Report of a context shift that happened when a step began.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShiftReport {
    /// Positions at the start left untouched.
    pub keep_first: usize,
    /// Positions dropped: old slots `keep_first..keep_first + dropped`.
    pub dropped: usize,
    /// Old slots of the positions that moved.
    pub moved_from: Range<usize>,
    /// Bytes the backend copied for the move (all layers, keys and values; ring layers move nothing).
    pub bytes_copied: u64,
    /// New positions whose keys ring layers still hold and must re-rotate by `-(dropped)` (empty without rings):
    /// a ring renumbers its positions in place instead of moving them.
    pub ring_rerotate: Range<usize>,
}

impl ShiftReport {
    /// New slots of the moved positions: their keys must be re-rotated by `-(dropped)` positions.
    pub fn rerotate_slots(&self) -> Range<usize> {
        self.keep_first..self.keep_first + self.moved_from.len()
    }

    /// How far the moved positions went down.
    pub fn position_delta(&self) -> usize {
        self.dropped
    }
}

/// An open step: positions `[start, start + len)` reserved for the new tokens.
///
/// The model writes each layer's new K and V through [`write_view`](KvStep::write_view) and runs attention over
/// [`read_view`](KvStep::read_view); then [`crate::KvSequence::commit`] makes the new length permanent. Every layer
/// and both parts share the same geometry, so one view serves all of them (bind it per buffer with
/// [`crate::KvSequence::bind`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvStep {
    pub(crate) token: u64,
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) write: KvView,
    pub(crate) read: KvView,
    pub(crate) shift: Option<ShiftReport>,
    /// The ring layers' write and read views, and which layers keep a ring.
    pub(crate) ring: Option<(KvView, KvView)>,
    pub(crate) ring_layers: Arc<[bool]>,
}

impl KvStep {
    /// First new position (the cache slot and rotary position of the first new token).
    pub fn start(&self) -> usize {
        self.start
    }

    /// New positions in this step.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a step adds at least one position.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots of the new positions.
    pub fn positions(&self) -> Range<usize> {
        self.start..self.start + self.len
    }

    /// Where the new keys and values go: positions `[start, start + len)` of every head.
    pub fn write_view(&self) -> KvView {
        self.write
    }

    /// What this step's attention reads: positions `[0, start + len)` of every head.
    pub fn read_view(&self) -> KvView {
        self.read
    }

    /// Whether `layer` keeps a ring.
    fn is_ring(&self, layer: usize) -> bool {
        self.ring.is_some() && self.ring_layers.get(layer).copied().unwrap_or(false)
    }

    /// [`KvStep::write_view`] of `layer`: a ring view for a ring layer.
    pub fn layer_write_view(&self, layer: usize) -> KvView {
        match self.ring {
            Some((write, _)) if self.is_ring(layer) => write,
            _ => self.write,
        }
    }

    /// [`KvStep::read_view`] of `layer`: a ring view for a ring layer (positions `[0, start + len)`, of which the
    /// layer's window only reads the last ones).
    pub fn layer_read_view(&self, layer: usize) -> KvView {
        match self.ring {
            Some((_, read)) if self.is_ring(layer) => read,
            _ => self.read,
        }
    }

    /// The context shift that made room for this step, if one happened.
    pub fn shift(&self) -> Option<&ShiftReport> {
        self.shift.as_ref()
    }
}

/// Counters of one sequence, to check that steps never copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KvStats {
    /// Steps committed.
    pub steps_committed: u64,
    /// Positions committed over all steps.
    pub positions_committed: u64,
    /// Context shifts done.
    pub shifts: u64,
    /// Bytes the cache asked the backend to copy (only context shifts copy).
    pub bytes_copied: u64,
}
