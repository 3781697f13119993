//! The KV cache to and from host memory, for sessions saved on disk.
//!
//! Only the committed positions travel: per layer, the keys then the values, each packed `[kv_head][position][dim]`
//! in the cache's element type, whatever context the cache was allocated for (heads lie `max_ctx` positions apart
//! on the device, so each part is one rectangular copy of a row per head). The packed form is therefore the same
//! on every device and for every `--ctx`, and a cache saved with one context restores into any other that holds
//! its positions.

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
        }
    }

    /// Reads the committed positions of every layer back (blocking): layer 0 keys, layer 0 values, layer 1 keys…
    pub fn read_kv(&self) -> Result<(KvImageShape, Vec<u8>), EngineError> {
        let shape = self.kv_image_shape(self.kv.len());
        let total = total_bytes(&shape)?;
        let mut out = vec![0u8; total];
        let parts = self.kv_parts(&self.kv.committed_view(), shape.layers)?;
        self.kv.storage().read_views(&parts, &mut out)?;
        Ok((shape, out))
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
        self.kv.clear()?;
        self.device_choice = None;
        if shape.positions == 0 {
            return Ok(());
        }
        // The positions are filled as one step, so the cache's own protocol records them.
        let step = self.kv.begin_step(shape.positions)?;
        let written = self
            .kv_parts(&step.write_view(), shape.layers)
            .and_then(|parts| Ok(self.kv.storage().write_views(&parts, data)?));
        match written {
            Ok(()) => Ok(self.kv.commit(step)?),
            Err(e) => {
                self.kv.cancel(step)?;
                Err(e)
            }
        }
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
