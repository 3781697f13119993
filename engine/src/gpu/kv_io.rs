//! The KV cache to and from host memory, for sessions saved on disk.
//!
//! Only the committed positions travel: per layer, the keys then the values, each packed `[kv_head][position][dim]`
//! in the cache's element type, whatever context the cache was allocated for (heads lie `max_ctx` positions apart
//! on the device, so each part is one rectangular copy of a row per head). The packed form is therefore the same
//! on every device and for every `--ctx`, and a cache saved with one context restores into any other that holds
//! its positions.
//!
//! Sliding-window layers that keep a ring (kvcache's rings) hold only their latest positions: the image has those
//! (every position from [`KvImageShape::local_from`] on) and zeros before, which their windows never read. Such an
//! image restores into ring caches, whose step size may differ, or into full caches only where nothing before
//! `local_from` is missing (`local_from` 0).

use kvcache::{KvDtype, KvPart};

use super::GpuModel;
use crate::generate::LanguageModel;
use crate::EngineError;

/// Shape of a packed cache: what [`GpuModel::read_kv`] produces and [`GpuModel::write_kv`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KvImageShape {
    /// Decoder layers.
    pub layers: usize,
    /// Key/value heads per layer.
    pub kv_heads: usize,
    /// Elements per head and position.
    pub head_dim: usize,
    /// Element type.
    pub dtype: KvDtype,
    /// Positions held.
    pub positions: usize,
    /// First position whose keys and values the sliding-window layers have in the image (0: all); earlier ones
    /// are zeros there.
    pub local_from: usize,
}

impl KvImageShape {
    /// Bytes of one layer's keys (or values), or `None` on overflow.
    pub fn part_bytes(&self) -> Option<u64> {
        (self.kv_heads as u64)
            .checked_mul(self.positions as u64)?
            .checked_mul(self.head_dim as u64)?
            .checked_mul(self.dtype.bytes())
    }

    /// Bytes of the whole packed cache (`2 * layers` parts), or `None` on overflow.
    pub fn total_bytes(&self) -> Option<u64> {
        self.part_bytes()?.checked_mul(2 * self.layers as u64)
    }

    /// The same shape without its positions, for comparing caches of different lengths.
    fn layout(&self) -> (usize, usize, usize, KvDtype) {
        (self.layers, self.kv_heads, self.head_dim, self.dtype)
    }
}

impl GpuModel {
    /// The shape of this model's cache as it holds `positions` positions.
    pub fn kv_image_shape(&self, positions: usize) -> KvImageShape {
        let shape = &self.kv.config().shape;
        KvImageShape {
            layers: shape.layers,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            dtype: shape.dtype,
            positions,
            local_from: 0,
        }
    }

    /// Reads the committed positions of every layer back (blocking): layer 0 keys, layer 0 values, layer 1 keys…
    /// (a ring layer's positions from [`KvImageShape::local_from`] on, zeros before).
    pub fn read_kv(&self) -> Result<(KvImageShape, Vec<u8>), EngineError> {
        let len = self.kv.len();
        let layers = self.kv.config().shape.layers;
        let local_from = (0..layers).map(|l| self.kv.held_from(l)).max().unwrap_or(0);
        let shape = KvImageShape {
            local_from,
            ..self.kv_image_shape(len)
        };
        let total = total_bytes(&shape)?;
        let mut out = vec![0u8; total];
        if (0..layers).all(|l| !self.kv.is_ring(l)) {
            let parts = self.kv_parts(&self.kv.committed_view(), layers)?;
            self.kv.storage().read_views(&parts, &mut out)?;
            return Ok((shape, out));
        }
        let part_bytes = total / (2 * layers);
        for (i, packed) in out.chunks_exact_mut(part_bytes.max(1)).enumerate() {
            let (layer, part) = (i / 2, KvPart::BOTH[i % 2]);
            let buffer = self.kv.buffer(layer, part)?;
            if !self.kv.is_ring(layer) {
                let parts = [(buffer, self.kv.committed_view())];
                self.kv.storage().read_views(&parts, packed)?;
                continue;
            }
            let mut held = vec![0u8; ring_bytes(&shape, local_from)];
            let parts = self.ring_parts(layer, part, local_from, len)?;
            self.kv.storage().read_views(&parts, &mut held)?;
            ring_rows(&shape, local_from, |packed_at, held_at, n| {
                packed[packed_at..packed_at + n].copy_from_slice(&held[held_at..held_at + n]);
            });
        }
        Ok((shape, out))
    }

    /// The linear runs of a ring layer's positions `[from, len)`, each with its buffer, in packed order.
    fn ring_parts(
        &self,
        layer: usize,
        part: KvPart,
        from: usize,
        len: usize,
    ) -> Result<Vec<(&clkernels::kv_storage::ClKvBuffer, kvcache::KvView)>, EngineError> {
        let buffer = self.kv.buffer(layer, part)?;
        let view = self.kv.layer_view(layer, from, len - from);
        Ok(view
            .linear_parts()
            .into_iter()
            .map(|v| (buffer, v))
            .collect())
    }

    /// Every layer's key and value buffer with `view`, in the packed order.
    fn kv_parts(
        &self,
        view: &kvcache::KvView,
        layers: usize,
    ) -> Result<Vec<(&clkernels::kv_storage::ClKvBuffer, kvcache::KvView)>, EngineError> {
        let mut parts = Vec::with_capacity(2 * layers);
        for layer in 0..layers {
            for part in KvPart::BOTH {
                parts.push((self.kv.buffer(layer, part)?, *view));
            }
        }
        Ok(parts)
    }

    /// Replaces the cache with `data`, packed as [`GpuModel::read_kv`] makes it, so the next step continues at
    /// position `shape.positions`. A shape other than this cache's, or more positions than its context, is refused
    /// before anything is written; a failed write leaves the cache empty, never partly filled.
    pub fn write_kv(&mut self, shape: &KvImageShape, data: &[u8]) -> Result<(), EngineError> {
        let own = self.kv_image_shape(shape.positions);
        if own.layout() != shape.layout() {
            return Err(EngineError::InvalidOption(format!(
                "a KV cache of {} layers x {} heads x {} dims in {} does not fit this model's cache of {} layers \
                 x {} heads x {} dims in {}",
                shape.layers,
                shape.kv_heads,
                shape.head_dim,
                shape.dtype,
                own.layers,
                own.kv_heads,
                own.head_dim,
                own.dtype
            )));
        }
        if shape.positions > self.context_len() {
            return Err(EngineError::PromptTooLong {
                prompt: shape.positions,
                cached: 0,
                context: self.context_len(),
            });
        }
        let total = total_bytes(shape)?;
        if data.len() != total {
            return Err(EngineError::InvalidOption(format!(
                "a packed KV cache of {} positions takes {total} bytes, got {}",
                shape.positions,
                data.len()
            )));
        }
        self.check_local_from(shape)?;
        self.kv.clear()?;
        self.device_choice = None;
        if shape.positions == 0 {
            return Ok(());
        }
        // The positions are filled as one step, so the cache's own protocol records them.
        let step = self.kv.begin_fill(shape.positions)?;
        let written = self.write_parts(shape, &step.write_view(), data);
        match written {
            Ok(()) => {
                self.kv.commit(step)?;
                self.kv.forget_before(shape.local_from);
                Ok(())
            }
            Err(e) => {
                self.kv.cancel(step)?;
                let _ = self.kv.clear();
                Err(e)
            }
        }
    }

    /// Refuses an image whose sliding-window layers lack positions this cache would read: a full cache needs all
    /// of them, a ring the next step's window.
    fn check_local_from(&self, shape: &KvImageShape) -> Result<(), EngineError> {
        if shape.local_from == 0 {
            return Ok(());
        }
        let Some(w) = &self.config.sliding_window else {
            return Err(EngineError::InvalidOption(format!(
                "the saved cache lacks positions before {} of its sliding-window layers, but this model has none",
                shape.local_from
            )));
        };
        let layers = self.kv.config().shape.layers;
        if (0..layers).any(|l| w.is_local(l) && !self.kv.is_ring(l)) {
            return Err(EngineError::InvalidOption(format!(
                "the saved cache was made with sliding-window ring caches and lacks positions before {} of its local \
                 layers; this cache keeps full local layers (TLITE_KV_RING=off, or a context no longer than a \
                 ring), so it cannot be restored here: turn the ring caches on or start the session again",
                shape.local_from
            )));
        }
        let needed = shape.positions.saturating_sub(w.window - 1);
        if shape.local_from > needed {
            return Err(EngineError::InvalidOption(format!(
                "the saved cache's sliding-window layers start at position {} but the next step reads from {needed}",
                shape.local_from
            )));
        }
        Ok(())
    }

    /// Writes the packed image into every layer: full layers through `write` (the fill's write view), ring layers
    /// their last positions the ring holds.
    fn write_parts(
        &self,
        shape: &KvImageShape,
        write: &kvcache::KvView,
        data: &[u8],
    ) -> Result<(), EngineError> {
        let layers = shape.layers;
        if (0..layers).all(|l| !self.kv.is_ring(l)) {
            let parts = self.kv_parts(write, layers)?;
            return Ok(self.kv.storage().write_views(&parts, data)?);
        }
        let part_bytes = data.len() / (2 * layers);
        for (i, packed) in data.chunks_exact(part_bytes.max(1)).enumerate() {
            let (layer, part) = (i / 2, KvPart::BOTH[i % 2]);
            let buffer = self.kv.buffer(layer, part)?;
            if !self.kv.is_ring(layer) {
                self.kv.storage().write_views(&[(buffer, *write)], packed)?;
                continue;
            }
            let capacity = self.kv.config().layer_capacity(layer);
            let from = shape
                .local_from
                .max(shape.positions.saturating_sub(capacity));
            let mut held = vec![0u8; ring_bytes(shape, from)];
            ring_rows(shape, from, |packed_at, held_at, n| {
                held[held_at..held_at + n].copy_from_slice(&packed[packed_at..packed_at + n]);
            });
            let parts = self.ring_parts(layer, part, from, shape.positions)?;
            self.kv.storage().write_views(&parts, &held)?;
        }
        Ok(())
    }
}

/// Bytes of one part's positions `[from, positions)`, packed `[head][position][dim]`.
fn ring_bytes(shape: &KvImageShape, from: usize) -> usize {
    shape.kv_heads * (shape.positions - from) * shape.head_dim * shape.dtype.bytes() as usize
}

/// For each head, where its positions `[from, positions)` lie in a packed part (`packed_at`) and in the same
/// positions packed alone (`held_at`), and their byte count `n`.
fn ring_rows(shape: &KvImageShape, from: usize, mut row: impl FnMut(usize, usize, usize)) {
    let elem = shape.dtype.bytes() as usize * shape.head_dim;
    let (len, n) = (shape.positions, shape.positions - from);
    for h in 0..shape.kv_heads {
        row((h * len + from) * elem, h * n * elem, n * elem);
    }
}

/// Bytes of the whole packed cache, as `usize`.
fn total_bytes(shape: &KvImageShape) -> Result<usize, EngineError> {
    shape
        .total_bytes()
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| {
            EngineError::InvalidOption(format!(
                "a KV cache of {} positions is too large for this machine's memory",
                shape.positions
            ))
        })
}
