//! Several independent sequences sharing one memory budget (sessions).
//!
//! Design: each sequence owns its own per-layer buffers, each sized for the pool's full `max_ctx`. The pool caps how
//! many sequences may be alive at once (from a memory budget or a count), allocates a sequence's buffers the first
//! time a slot is needed, and recycles them when the sequence is dropped, so a chat app that opens and closes sessions
//! allocates device memory once. Separate buffers per sequence (rather than one buffer with a slot per sequence) keep
//! every buffer within the device's max allocation however many sessions there are, and keep each sequence's views
//! exactly those of a standalone one.

use std::sync::{Arc, Mutex};

use crate::error::KvError;
use crate::plan::{KvConfig, MemoryLimits};
use crate::sequence::{allocate_layers, validate_policy, KvSequence, LayerBuffers, SequenceId};
use crate::step::FullPolicy;
use crate::storage::KvStorage;

#[derive(Debug)]
struct PoolState<B> {
    free: Vec<Vec<LayerBuffers<B>>>,
    live: usize,
    next_id: u64,
}

/// Shared between a pool and its sequences, so a dropped sequence returns its buffers.
#[derive(Debug)]
pub(crate) struct PoolShared<B> {
    state: Mutex<PoolState<B>>,
}

impl<B> PoolShared<B> {
    pub(crate) fn give_back(&self, layers: Vec<LayerBuffers<B>>) {
        // A poisoned lock means another thread panicked mid-update; dropping the buffers (freeing them) is then the
        // safe choice.
        if let Ok(mut state) = self.state.lock() {
            state.live = state.live.saturating_sub(1);
            if !layers.is_empty() {
                state.free.push(layers);
            }
        }
    }
}

/// A pool of sequences with one shape and `max_ctx`, at most `capacity` alive at once.
pub struct KvPool<S: KvStorage> {
    storage: Arc<S>,
    config: KvConfig,
    capacity: usize,
    shared: Arc<PoolShared<S::Buffer>>,
}

impl<S: KvStorage> std::fmt::Debug for KvPool<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvPool")
            .field("config", &self.config)
            .field("capacity", &self.capacity)
            .field("in_use", &self.in_use())
            .finish_non_exhaustive()
    }
}

impl<S: KvStorage> KvPool<S> {
    /// A pool holding as many sequences as `limits.budget_bytes` allows.
    ///
    /// The max allocation checked is the smaller of `limits.max_alloc_bytes` and the backend's own.
    pub fn with_budget(
        storage: Arc<S>,
        config: KvConfig,
        limits: &MemoryLimits,
    ) -> Result<Self, KvError> {
        let limits = MemoryLimits {
            max_alloc_bytes: limits.max_alloc_bytes.min(storage.limits().max_alloc_bytes),
            budget_bytes: limits.budget_bytes,
        };
        let plan = config.plan(&limits)?;
        Self::with_capacity(storage, config, plan.sequences_in_budget)
    }

    /// A pool holding at most `sequences` sequences.
    pub fn with_capacity(
        storage: Arc<S>,
        config: KvConfig,
        sequences: usize,
    ) -> Result<Self, KvError> {
        config.plan(&MemoryLimits {
            max_alloc_bytes: storage.limits().max_alloc_bytes,
            budget_bytes: u64::MAX,
        })?;
        if sequences == 0 {
            return Err(KvError::InvalidConfig {
                field: "sequences",
                value: 0,
                reason: "a pool must hold at least one sequence",
            });
        }
        Ok(KvPool {
            storage,
            config,
            capacity: sequences,
            shared: Arc::new(PoolShared {
                state: Mutex::new(PoolState {
                    free: Vec::new(),
                    live: 0,
                    next_id: 0,
                }),
            }),
        })
    }

    /// Shape and capacity of each sequence.
    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// Sequences that may be alive at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sequences alive now.
    pub fn in_use(&self) -> usize {
        self.shared.state.lock().map(|s| s.live).unwrap_or(0)
    }

    /// Sequences whose buffers are allocated (alive or waiting for reuse).
    pub fn allocated_sequences(&self) -> usize {
        self.shared
            .state
            .lock()
            .map(|s| s.live + s.free.len())
            .unwrap_or(0)
    }

    /// A new, empty sequence; its buffers are recycled from a dropped one when possible.
    pub fn acquire(&self, policy: FullPolicy) -> Result<KvSequence<S>, KvError> {
        validate_policy(&policy, self.config.max_ctx)?;
        let mut state =
            self.shared.state.lock().map_err(|_| {
                KvError::Storage("KV pool lock poisoned by a panic elsewhere".into())
            })?;
        if state.live >= self.capacity {
            return Err(KvError::PoolExhausted {
                capacity: self.capacity,
            });
        }
        let layers = match state.free.pop() {
            Some(layers) => layers,
            None => allocate_layers(&*self.storage, &self.config)?,
        };
        state.live += 1;
        let id = SequenceId(state.next_id);
        state.next_id += 1;
        drop(state);
        Ok(KvSequence::from_parts(
            Arc::clone(&self.storage),
            self.config,
            policy,
            layers,
            id,
            Some(Arc::clone(&self.shared)),
        ))
    }
}
