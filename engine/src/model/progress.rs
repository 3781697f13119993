//! Progress of a model load, reported from whichever rayon thread finishes a stage.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts finished stages (the embedding, each layer, the head) and passes `(done, total)` to the caller's callback.
pub(crate) struct LoadProgress<'a> {
    done: AtomicUsize,
    total: usize,
    report: &'a (dyn Fn(usize, usize) + Sync),
}

impl<'a> LoadProgress<'a> {
    /// Progress over a model of `layers` layers: one stage per layer plus the embedding and the head.
    pub(crate) fn new(layers: usize, report: &'a (dyn Fn(usize, usize) + Sync)) -> Self {
        Self {
            done: AtomicUsize::new(0),
            total: layers + 2,
            report,
        }
    }

    /// One more stage is done.
    pub(crate) fn tick(&self) {
        (self.report)(self.done.fetch_add(1, Ordering::Relaxed) + 1, self.total);
    }
}
