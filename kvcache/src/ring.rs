//! Ring buffers for sliding-window layers.
//!
//! A local (sliding-window) layer's query at position `i` reads only keys `[i - window + 1, i]`, so its cache needs
//! no more than the last `window` positions plus the step being written. Such a layer keeps a ring of
//! `capacity = window + max_chunk - 1` slots: position `p` lives in slot `(p + origin) mod capacity`. A step of
//! `n <= max_chunk` tokens at `past` reads keys `[past - window + 1, past + n)`, at most `capacity` of them, so all
//! of its new keys and values are written before attention without overwriting a key the step still reads. The
//! ring is used only where it is smaller than the context (else the layer keeps a full cache).
//!
//! A context shift moves nothing in a ring: the kept tail's slots stay where they are and `origin` advances by the
//! dropped count, so the positions renumber in place (the keys are still re-rotated by `-dropped`).

/// Which layers keep a ring and how large it is: one window and one step size for the whole model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvRings {
    /// Positions a local layer's query sees, its own included (`i - j < window`).
    pub window: usize,
    /// The longest step (tokens) the caller will run: [`crate::KvSequence::begin_step`] refuses longer ones.
    pub max_chunk: usize,
    /// Per layer, whether it is local (windowed).
    pub local_layers: Vec<bool>,
}

impl KvRings {
    /// Slots of a ring: the window plus the positions one step adds beyond the first (`window + max_chunk - 1`).
    pub fn capacity(&self) -> usize {
        self.window.saturating_add(self.max_chunk).saturating_sub(1)
    }

    /// Whether `layer` is local.
    pub fn is_local(&self, layer: usize) -> bool {
        self.local_layers.get(layer).copied().unwrap_or(false)
    }
}

/// Where a ring view's positions lie: the view's `i`-th position is in slot `(first_slot + i) % slots`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KvWrap {
    /// Slots of the ring (its capacity).
    pub slots: usize,
    /// Slot of the view's first position (less than `slots`).
    pub first_slot: usize,
}

impl KvWrap {
    /// Slot of the view's `i`-th position.
    pub fn slot(&self, i: usize) -> usize {
        ((self.first_slot as u64 + i as u64) % self.slots.max(1) as u64) as usize
    }
}
