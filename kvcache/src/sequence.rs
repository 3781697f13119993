//! One sequence's cache: per-layer K and V buffers, the committed length, and the step protocol.

use std::sync::Arc;

use crate::binding::KvBinding;
use crate::error::KvError;
use crate::layout::{KvLayout, KvPart, KvView};
use crate::plan::{KvConfig, MemoryLimits};
use crate::step::{ContextShift, FullPolicy, KvStats, KvStep, ShiftReport};
use crate::storage::{ByteRange, CopyRows, KvStorage};

/// The K and V buffer of one layer.
#[derive(Debug)]
pub struct LayerBuffers<B> {
    /// Keys, `[kv_head][max_ctx][head_dim]` (a ring layer: `[kv_head][slots][head_dim]`).
    pub key: B,
    /// Values, same layout.
    pub value: B,
}

/// Identifies a sequence in logs; unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SequenceId(pub u64);

/// The KV cache of one sequence: preallocated for `max_ctx` positions, written in place, never copied by a step.
///
/// Protocol per forward pass: [`begin_step`](Self::begin_step)`(n)` → the model writes new K/V through
/// [`KvStep::write_view`] and attends over [`KvStep::read_view`] → [`commit`](Self::commit) (or
/// [`cancel`](Self::cancel)).
/// "Append" is exactly that protocol; rollback is [`truncate`](Self::truncate), which moves no data.
pub struct KvSequence<S: KvStorage> {
    storage: Arc<S>,
    config: KvConfig,
    policy: FullPolicy,
    layers: Vec<LayerBuffers<S::Buffer>>,
    len: usize,
    open: Option<(u64, usize, usize)>,
    next_token: u64,
    stats: KvStats,
    id: SequenceId,
    /// Per layer, whether it keeps a ring; all rings share one origin: position `p` is in slot
    /// `(p + ring_origin) % capacity`.
    ring_layers: Arc<[bool]>,
    ring_origin: usize,
    /// The first position every ring still holds (later positions overwrite earlier ones `capacity` apart).
    ring_held_from: usize,
}

impl<S: KvStorage> std::fmt::Debug for KvSequence<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSequence")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("policy", &self.policy)
            .field("len", &self.len)
            .field("open", &self.open)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn storage_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> KvError {
    KvError::Storage(Box::new(e))
}

fn validate_policy(policy: &FullPolicy, max_ctx: usize) -> Result<(), KvError> {
    if let FullPolicy::Shift(ContextShift { keep_first, .. }) = *policy {
        if keep_first >= max_ctx {
            return Err(KvError::ShiftKeepsEverything {
                keep_first,
                max_ctx,
            });
        }
    }
    Ok(())
}

fn allocate_layers<S: KvStorage>(
    storage: &S,
    config: &KvConfig,
) -> Result<Vec<LayerBuffers<S::Buffer>>, KvError> {
    (0..config.shape.layers)
        .map(|layer| {
            let bytes = config.layer_buffer_bytes(layer)?;
            Ok(LayerBuffers {
                key: storage.allocate(bytes).map_err(storage_err)?,
                value: storage.allocate(bytes).map_err(storage_err)?,
            })
        })
        .collect()
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl<S: KvStorage> KvSequence<S> {
    /// Allocates a sequence: `2 * layers` buffers of `config.layer_buffer_bytes(layer)` each.
    ///
    /// Fails with [`KvError::BufferTooLarge`] when one buffer exceeds the backend's max allocation.
    pub fn new(storage: Arc<S>, config: KvConfig, policy: FullPolicy) -> Result<Self, KvError> {
        config.plan(&MemoryLimits {
            max_alloc_bytes: storage.limits().max_alloc_bytes,
            budget_bytes: u64::MAX,
        })?;
        validate_policy(&policy, config.max_ctx)?;
        let layers = allocate_layers(&*storage, &config)?;
        let id = SequenceId(NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let ring_layers = (0..config.shape.layers)
            .map(|l| config.is_ring(l))
            .collect();
        Ok(KvSequence {
            ring_layers,
            ring_origin: 0,
            ring_held_from: 0,
            storage,
            config,
            policy,
            layers,
            len: 0,
            open: None,
            next_token: 0,
            stats: KvStats::default(),
            id,
        })
    }

    /// Identifier for logs.
    pub fn id(&self) -> SequenceId {
        self.id
    }

    /// Shape and capacity.
    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// Positions committed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No positions committed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in positions.
    pub fn max_ctx(&self) -> usize {
        self.config.max_ctx
    }

    /// Positions a step can still add without a context shift.
    pub fn room(&self) -> usize {
        self.config.max_ctx - self.len
    }

    /// Current full policy.
    pub fn policy(&self) -> FullPolicy {
        self.policy
    }

    /// Changes the full policy.
    pub fn set_policy(&mut self, policy: FullPolicy) -> Result<(), KvError> {
        validate_policy(&policy, self.config.max_ctx)?;
        self.policy = policy;
        Ok(())
    }

    /// Counters (steps, copies).
    pub fn stats(&self) -> KvStats {
        self.stats
    }

    /// The backend the buffers live in.
    pub fn storage(&self) -> &Arc<S> {
        &self.storage
    }

    /// View of the committed positions `[0, len)` of a full layer.
    pub fn committed_view(&self) -> KvView {
        self.config.layout().positions_view(0, self.len)
    }

    /// Whether `layer` keeps a ring.
    pub fn is_ring(&self, layer: usize) -> bool {
        self.ring_layers.get(layer).copied().unwrap_or(false)
    }

    /// The rings in use, if any layer keeps one.
    fn rings(&self) -> Option<&crate::KvRings> {
        self.config.active_rings()
    }

    /// View of positions `[start, start + len)` of `layer` (a ring view for a ring layer). The caller keeps the
    /// positions inside what the layer holds ([`KvSequence::held_from`]).
    pub fn layer_view(&self, layer: usize, start: usize, len: usize) -> KvView {
        let layout = self.config.layer_layout(layer);
        if self.is_ring(layer) {
            layout.ring_view(self.ring_origin, start, len)
        } else {
            layout.positions_view(start, len)
        }
    }

    /// The first committed position `layer` still holds: 0 for a full layer; for a ring layer, positions before
    /// this were overwritten (its window never reads them).
    pub fn held_from(&self, layer: usize) -> usize {
        if self.is_ring(layer) {
            self.ring_held_from.min(self.len)
        } else {
            0
        }
    }

    /// The K or V buffer of `layer`.
    pub fn buffer(&self, layer: usize, part: KvPart) -> Result<&S::Buffer, KvError> {
        let buffers = self.layers.get(layer).ok_or(KvError::LayerOutOfRange {
            layer,
            layers: self.layers.len(),
        })?;
        Ok(match part {
            KvPart::Key => &buffers.key,
            KvPart::Value => &buffers.value,
        })
    }

    /// Reserves positions `[len, len + n)` for a step and returns its views.
    ///
    /// If they do not fit, the full policy decides: [`KvError::Full`], or a context shift that copies the kept tail
    /// down first (reported in [`KvStep::shift`]). If the backend fails during a shift, the sequence is truncated
    /// to its `keep_first` positions (the only ones known intact) and the error returned.
    pub fn begin_step(&mut self, n: usize) -> Result<KvStep, KvError> {
        self.begin(n, true)
    }

    /// As [`KvSequence::begin_step`], for positions the caller fills itself rather than kernels that read the
    /// window as they write (restoring a saved cache): longer than the rings' step size is allowed. Ring layers
    /// then hold only the last positions of the fill; write them through [`KvSequence::layer_view`] of
    /// `[max(start, end - capacity), end)`.
    pub fn begin_fill(&mut self, n: usize) -> Result<KvStep, KvError> {
        self.begin(n, false)
    }

    /// Marks ring layers' positions before `position` as not held (a restored cache that had only its latest
    /// positions): truncating to where the next window would read them is then refused, as after a wrap.
    pub fn forget_before(&mut self, position: usize) {
        if self.rings().is_some() {
            self.ring_held_from = self.ring_held_from.max(position);
        }
    }

    fn begin(&mut self, n: usize, ring_step: bool) -> Result<KvStep, KvError> {
        if let Some((_, start, end)) = self.open {
            return Err(KvError::StepInProgress { start, end });
        }
        if n == 0 {
            return Err(KvError::EmptyStep);
        }
        if let Some(r) = self.rings().filter(|_| ring_step) {
            if n > r.max_chunk {
                return Err(KvError::StepLongerThanRing {
                    requested: n,
                    max_chunk: r.max_chunk,
                    window: r.window,
                });
            }
        }
        let max_ctx = self.config.max_ctx;
        let mut shift = None;
        if n > max_ctx - self.len {
            match self.policy {
                FullPolicy::Error => {
                    return Err(KvError::Full {
                        len: self.len,
                        requested: n,
                        max_ctx,
                    })
                }
                FullPolicy::Shift(policy) => {
                    let room = max_ctx - policy.keep_first;
                    if n > room {
                        return Err(KvError::StepTooLarge {
                            requested: n,
                            max_ctx,
                            keep_first: policy.keep_first,
                            room,
                        });
                    }
                    // len > keep_first here: len + n > max_ctx and n <= max_ctx - keep_first.
                    let needed = self.len + n - max_ctx;
                    let droppable = self.max_shift_drop(policy.keep_first);
                    let drop = policy.drop_at_least.max(needed).min(droppable);
                    match self.move_tail(policy.keep_first, drop) {
                        Ok(report) => shift = Some(report),
                        Err(e) => {
                            // Part of the tail may have moved; only the kept prefix is still known good.
                            self.cut_after_failed_shift(policy.keep_first);
                            return Err(e);
                        }
                    }
                }
            }
        }
        let start = self.len;
        let token = self.next_token;
        self.next_token += 1;
        self.open = Some((token, start, start + n));
        let layout = self.config.layout();
        let ring = self.rings().map(|r| {
            let ring = KvLayout {
                max_ctx: r.capacity(),
                ..layout
            };
            (
                ring.ring_view(self.ring_origin, start, n),
                ring.ring_view(self.ring_origin, 0, start + n),
            )
        });
        Ok(KvStep {
            token,
            start,
            len: n,
            write: layout.positions_view(start, n),
            read: layout.positions_view(0, start + n),
            shift,
            ring,
            ring_layers: self.ring_layers.clone(),
        })
    }

    fn check_open(&self, step: &KvStep) -> Result<(), KvError> {
        match self.open {
            Some((token, _, _)) if token == step.token => Ok(()),
            _ => Err(KvError::StaleStep {
                start: step.start,
                end: step.start + step.len,
            }),
        }
    }

    /// Makes all positions of the step part of the sequence.
    pub fn commit(&mut self, step: KvStep) -> Result<(), KvError> {
        self.check_open(&step)?;
        self.open = None;
        self.len = step.start + step.len;
        if let Some(capacity) = self.rings().map(|r| r.capacity()) {
            self.ring_held_from = self.ring_held_from.max(self.len.saturating_sub(capacity));
        }
        self.stats.steps_committed += 1;
        self.stats.positions_committed += step.len as u64;
        Ok(())
    }

    /// Abandons the step; the sequence keeps its length from before it (a shift it caused stays done).
    pub fn cancel(&mut self, step: KvStep) -> Result<(), KvError> {
        self.check_open(&step)?;
        self.open = None;
        Ok(())
    }

    /// Rolls the sequence back to its first `to` positions (regeneration, rejected speculation). Moves no data.
    ///
    /// With ring layers this is exact only while the rings still hold the window the next step reads,
    /// `[to - window + 1, to)`: otherwise [`KvError::RingOverwritten`] and nothing changes (the caller clears the
    /// cache and runs its tokens again). Truncating to 0 always works.
    pub fn truncate(&mut self, to: usize) -> Result<(), KvError> {
        if self.open.is_some() {
            return Err(KvError::StepOpen);
        }
        if to > self.len {
            return Err(KvError::TruncateBeyondLength { to, len: self.len });
        }
        if let Some(r) = self.rings() {
            let needed_from = to.saturating_sub(r.window - 1);
            if to > 0 && self.ring_held_from > needed_from {
                return Err(KvError::RingOverwritten {
                    to,
                    held_from: self.ring_held_from,
                    needed_from,
                });
            }
        }
        if to == 0 {
            self.ring_held_from = 0;
        }
        self.len = to;
        Ok(())
    }

    /// Whether [`KvSequence::truncate`]`(to)` would be exact (always, without rings).
    pub fn can_truncate(&self, to: usize) -> bool {
        to <= self.len
            && (to == 0
                || self
                    .rings()
                    .is_none_or(|r| self.ring_held_from <= to.saturating_sub(r.window - 1)))
    }

    /// The most positions a context shift keeping `keep_first` may drop now: all after them without rings; with
    /// rings, so many that at least `window - 1` positions stay after the kept start (a ring holds only the
    /// latest positions, not the kept start, so the next window must not reach into it).
    pub fn max_shift_drop(&self, keep_first: usize) -> usize {
        let after = self.len.saturating_sub(keep_first);
        match self.rings() {
            Some(r) => after.saturating_sub(r.window - 1),
            None => after,
        }
    }

    /// Empties the sequence. Moves no data.
    pub fn clear(&mut self) -> Result<(), KvError> {
        self.truncate(0)
    }

    /// Shifts the context now, whatever the policy: drops positions `[keep_first, keep_first + drop)` and moves
    /// the later ones down to `keep_first` (what [`FullPolicy::Shift`] does to make room for a step, for a caller
    /// that decides when and how much to drop itself, as a chat keeping its system prompt does). Keys need
    /// re-rotating afterwards by the report's [`ShiftReport::position_delta`] over its
    /// [`ShiftReport::rerotate_slots`].
    ///
    /// Refused while a step is open, and unless `1 <= drop` and `keep_first + drop <= len`, and with ring layers
    /// unless `drop <= max_shift_drop(keep_first)` (nothing changes then). If the backend fails
    /// part-way, the sequence is truncated to its `keep_first` positions (the only ones known intact) and the
    /// error returned.
    pub fn shift(&mut self, keep_first: usize, drop: usize) -> Result<ShiftReport, KvError> {
        if self.open.is_some() {
            return Err(KvError::StepOpen);
        }
        if drop == 0
            || keep_first
                .checked_add(drop)
                .is_none_or(|end| end > self.len)
        {
            return Err(KvError::ShiftOutOfRange {
                keep_first,
                drop,
                len: self.len,
            });
        }
        if let Some(r) = self.rings() {
            if drop > self.max_shift_drop(keep_first) {
                return Err(KvError::ShiftBreaksWindow {
                    keep_first,
                    drop,
                    len: self.len,
                    window: r.window,
                });
            }
        }
        self.move_tail(keep_first, drop).inspect_err(|_| {
            self.cut_after_failed_shift(keep_first);
        })
    }

    /// After a failed shift only the kept prefix is known good: keep it where the rings still hold its window,
    /// else nothing.
    fn cut_after_failed_shift(&mut self, keep_first: usize) {
        self.open = None;
        let keep = keep_first.min(self.len);
        self.len = if self.can_truncate(keep) { keep } else { 0 };
        if self.len == 0 {
            self.ring_held_from = 0;
        }
    }

    /// Drops positions `[keep_first, keep_first + drop)` and moves `[keep_first + drop, len)` down to
    /// `keep_first`, in chunks of at most `drop` positions so no copy overlaps itself.
    fn move_tail(&mut self, keep_first: usize, drop: usize) -> Result<ShiftReport, KvError> {
        if let Some(r) = self.rings() {
            if drop > self.max_shift_drop(keep_first) {
                return Err(KvError::ShiftBreaksWindow {
                    keep_first,
                    drop,
                    len: self.len,
                    window: r.window,
                });
            }
        }
        let layout = self.config.layout();
        let elem = layout.dtype.bytes();
        let moved_from = keep_first + drop..self.len;
        let mut bytes_copied = 0u64;
        if drop > 0 {
            let full = self
                .layers
                .iter()
                .enumerate()
                .filter(|(l, _)| !self.is_ring(*l));
            for (_, buffers) in full {
                for buffer in [&buffers.key, &buffers.value] {
                    let mut src = moved_from.start;
                    while src < moved_from.end {
                        let chunk = drop.min(moved_from.end - src);
                        // The same chunk of every head: rows one head slab apart.
                        let rows = CopyRows {
                            src: layout.element_index(0, src) * elem,
                            dst: layout.element_index(0, src - drop) * elem,
                            row_bytes: chunk as u64 * layout.head_dim as u64 * elem,
                            rows: layout.kv_heads as u64,
                            row_stride: layout.head_stride_elems() * elem,
                        };
                        self.storage
                            .copy_rows_within(buffer, rows)
                            .map_err(storage_err)?;
                        bytes_copied += rows.row_bytes * rows.rows;
                        src += chunk;
                    }
                }
            }
        }
        self.len -= drop;
        let mut ring_rerotate = self.len..self.len;
        if let Some(capacity) = self.rings().map(|r| r.capacity()) {
            // Positions move down by `drop` where they are: the slot of old `p` becomes the slot of `p - drop`.
            self.ring_origin = ((self.ring_origin as u64 + drop as u64) % capacity as u64) as usize;
            self.ring_held_from = self.ring_held_from.max(keep_first + drop) - drop;
            ring_rerotate = self.ring_held_from..self.len;
        }
        self.stats.shifts += 1;
        self.stats.bytes_copied += bytes_copied;
        Ok(ShiftReport {
            keep_first,
            dropped: drop,
            moved_from,
            bytes_copied,
            ring_rerotate,
        })
    }

    /// Binds `view` to the K or V buffer of `layer`: a sub-region when the backend can make one at the view's
    /// origin, otherwise the whole buffer with the view's element offset.
    ///
    /// A view starting at element 0 always binds the whole buffer (no sub-region is needed for it).
    pub fn bind(
        &self,
        layer: usize,
        part: KvPart,
        view: &KvView,
    ) -> Result<KvBinding<'_, S>, KvError> {
        let buffer = self.buffer(layer, part)?;
        let layout = self.config.layer_layout(layer);
        let buffer_elems = layout.buffer_elems();
        if view.dtype != layout.dtype {
            return Err(KvError::ViewDtypeMismatch {
                view: view.dtype,
                buffer: layout.dtype,
            });
        }
        if view.end_elems() > buffer_elems {
            return Err(KvError::ViewOutOfRange {
                end_elem: view.end_elems(),
                buffer_elems,
            });
        }
        let origin = view.offset_bytes();
        if view.wrap.is_some() != self.is_ring(layer) {
            return Err(KvError::ViewOutOfRange {
                end_elem: view.end_elems(),
                buffer_elems,
            });
        }
        if view.offset_elems > 0
            && view.wrap.is_none()
            && view.span_elems() > 0
            && self.storage.limits().is_aligned(origin)
        {
            let range = ByteRange {
                origin,
                len: view.span_bytes(),
            };
            if let Some(region) = self
                .storage
                .sub_region(buffer, range)
                .map_err(storage_err)?
            {
                return Ok(KvBinding::SubRegion {
                    region,
                    view: view.rebased(view.offset_elems),
                });
            }
        }
        Ok(KvBinding::Offset {
            buffer,
            view: *view,
        })
    }
}
