//! Capacity planning: how many bytes a model's cache needs and how large a context fits a device.
//!
//! The cache is split into one K and one V buffer per layer (`2 * layers` allocations) because phones cap a single
//! buffer at 256 MB - 1 GB (`CL_DEVICE_MAX_MEM_ALLOC_SIZE`); one buffer for the whole model would hit that cap long
//! before the memory runs out.

use crate::dtype::KvDtype;
use crate::error::KvError;
use crate::layout::KvLayout;
use crate::ring::KvRings;

/// The KV-relevant part of a model: what the cache size depends on besides the context length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KvModelShape {
    /// Transformer layers (each has its own K and V buffer).
    pub layers: usize,
    /// KV heads per layer (grouped-query attention: fewer than query heads).
    pub kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Storage element type.
    pub dtype: KvDtype,
}

/// Device memory limits the cache must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryLimits {
    /// Largest single allocation (`CL_DEVICE_MAX_MEM_ALLOC_SIZE`).
    pub max_alloc_bytes: u64,
    /// Memory the whole cache may take.
    pub budget_bytes: u64,
}

/// A model shape with a context length: everything needed to allocate one sequence's cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvConfig {
    /// The model's KV shape.
    pub shape: KvModelShape,
    /// Positions each sequence can hold.
    pub max_ctx: usize,
    /// Sliding-window layers that keep a ring of their window instead of `max_ctx` positions (`None`: every layer
    /// keeps a full cache). A ring no smaller than `max_ctx` is not used.
    pub rings: Option<KvRings>,
}

/// Figures for one sequence's cache that fits the limits it was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapacityPlan {
    /// Bytes of the largest per-layer K or V buffer (a full layer's, unless every layer keeps a ring).
    pub buffer_bytes: u64,
    /// Number of buffers (`2 * layers`).
    pub buffers: usize,
    /// Bytes of the whole cache of one sequence (one copy: what this crate allocates).
    pub total_bytes: u64,
    /// Bytes a "copy-out" design needs: the past-KV input plus a separate present-KV output of the same size.
    pub copy_out_total_bytes: u64,
    /// Sequences of this size the budget holds.
    pub sequences_in_budget: usize,
}

impl KvModelShape {
    /// Refuses zero sizes.
    pub fn validate(&self) -> Result<(), KvError> {
        for (field, value) in [
            ("layers", self.layers),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
        ] {
            if value == 0 {
                return Err(KvError::InvalidConfig {
                    field,
                    value: 0,
                    reason: "must be at least 1",
                });
            }
        }
        Ok(())
    }

    /// Bytes one position takes in one K or V buffer.
    pub fn position_bytes_per_buffer(&self) -> Result<u64, KvError> {
        (self.kv_heads as u64)
            .checked_mul(self.head_dim as u64)
            .and_then(|e| e.checked_mul(self.dtype.bytes()))
            .ok_or(KvError::SizeOverflow {
                what: "bytes per position",
            })
    }

    /// Bytes one position takes in the whole cache (all layers, K and V).
    pub fn position_bytes_total(&self) -> Result<u64, KvError> {
        self.position_bytes_per_buffer()?
            .checked_mul(2 * self.layers as u64)
            .ok_or(KvError::SizeOverflow {
                what: "bytes per position (all layers)",
            })
    }

    /// Largest `max_ctx` whose buffers fit `max_alloc_bytes` and whose whole cache fits `budget_bytes`.
    ///
    /// Returns 0 when not even one position fits.
    pub fn largest_fitting_ctx(&self, limits: &MemoryLimits) -> Result<usize, KvError> {
        self.validate()?;
        let by_alloc = limits.max_alloc_bytes / self.position_bytes_per_buffer()?;
        let by_budget = limits.budget_bytes / self.position_bytes_total()?;
        Ok(usize::try_from(by_alloc.min(by_budget)).unwrap_or(usize::MAX))
    }
}

impl KvConfig {
    /// Checked constructor: refuses zero sizes.
    pub fn new(shape: KvModelShape, max_ctx: usize) -> Result<KvConfig, KvError> {
        let config = KvConfig {
            shape,
            max_ctx,
            rings: None,
        };
        config.validate()?;
        Ok(config)
    }

    /// The same config with ring caches for the local layers of `rings` (see [`KvRings`]); refuses a window or
    /// step of 0 and a pattern naming another number of layers.
    pub fn with_rings(self, rings: KvRings) -> Result<KvConfig, KvError> {
        let config = KvConfig {
            rings: Some(rings),
            ..self
        };
        config.validate()?;
        Ok(config)
    }

    /// Whether `layer` keeps a ring (local, and its ring is smaller than the context).
    pub fn is_ring(&self, layer: usize) -> bool {
        self.rings
            .as_ref()
            .is_some_and(|r| r.is_local(layer) && r.capacity() < self.max_ctx)
    }

    /// The rings actually in use: `None` when no layer keeps one.
    pub fn active_rings(&self) -> Option<&KvRings> {
        self.rings
            .as_ref()
            .filter(|_| (0..self.shape.layers).any(|l| self.is_ring(l)))
    }

    /// Positions (or a ring's slots) the buffers of `layer` hold.
    pub fn layer_capacity(&self, layer: usize) -> usize {
        match &self.rings {
            Some(r) if self.is_ring(layer) => r.capacity(),
            _ => self.max_ctx,
        }
    }

    /// Layout of `layer`'s K and V buffers (`max_ctx` is the ring's slots for a ring layer).
    pub fn layer_layout(&self, layer: usize) -> KvLayout {
        KvLayout {
            max_ctx: self.layer_capacity(layer),
            ..self.layout()
        }
    }

    /// Bytes of `layer`'s K or V buffer.
    pub fn layer_buffer_bytes(&self, layer: usize) -> Result<u64, KvError> {
        self.shape
            .position_bytes_per_buffer()?
            .checked_mul(self.layer_capacity(layer) as u64)
            .ok_or(KvError::SizeOverflow {
                what: "buffer bytes",
            })
    }

    /// Refuses zero sizes and sizes that overflow.
    pub fn validate(&self) -> Result<(), KvError> {
        self.shape.validate()?;
        if self.max_ctx == 0 {
            return Err(KvError::InvalidConfig {
                field: "max_ctx",
                value: 0,
                reason: "must be at least 1",
            });
        }
        if let Some(r) = &self.rings {
            for (field, value) in [("ring window", r.window), ("ring max_chunk", r.max_chunk)] {
                if value == 0 {
                    return Err(KvError::InvalidConfig {
                        field,
                        value: 0,
                        reason: "must be at least 1",
                    });
                }
            }
            if r.local_layers.len() != self.shape.layers {
                return Err(KvError::InvalidConfig {
                    field: "ring local_layers",
                    value: r.local_layers.len() as u64,
                    reason: "must name every layer",
                });
            }
        }
        self.total_bytes().map(|_| ())
    }

    /// Layout of a full (non-ring) per-layer K and V buffer.
    pub fn layout(&self) -> KvLayout {
        KvLayout {
            kv_heads: self.shape.kv_heads,
            max_ctx: self.max_ctx,
            head_dim: self.shape.head_dim,
            dtype: self.shape.dtype,
        }
    }

    /// Bytes of a full (non-ring) per-layer K or V buffer, the largest one.
    pub fn buffer_bytes(&self) -> Result<u64, KvError> {
        self.shape
            .position_bytes_per_buffer()?
            .checked_mul(self.max_ctx as u64)
            .ok_or(KvError::SizeOverflow {
                what: "buffer bytes",
            })
    }

    /// Bytes of one sequence's whole cache (ring layers at their ring's size).
    pub fn total_bytes(&self) -> Result<u64, KvError> {
        (0..self.shape.layers).try_fold(0u64, |sum, layer| {
            self.layer_buffer_bytes(layer)?
                .checked_mul(2)
                .and_then(|b| b.checked_add(sum))
                .ok_or(KvError::SizeOverflow {
                    what: "total bytes",
                })
        })
    }

    /// Checks the config against device limits; on success says how much it takes.
    pub fn plan(&self, limits: &MemoryLimits) -> Result<CapacityPlan, KvError> {
        self.validate()?;
        let buffer_bytes = (0..self.shape.layers)
            .map(|layer| self.layer_buffer_bytes(layer))
            .try_fold(0u64, |m, b| b.map(|b| m.max(b)))?;
        let total_bytes = self.total_bytes()?;
        if buffer_bytes > limits.max_alloc_bytes {
            return Err(KvError::BufferTooLarge {
                buffer_bytes,
                max_alloc_bytes: limits.max_alloc_bytes,
                max_ctx: self.max_ctx,
                kv_heads: self.shape.kv_heads,
                head_dim: self.shape.head_dim,
                dtype: self.shape.dtype,
                largest_fitting_ctx: self.shape.largest_fitting_ctx(&MemoryLimits {
                    max_alloc_bytes: limits.max_alloc_bytes,
                    budget_bytes: u64::MAX,
                })?,
            });
        }
        if total_bytes > limits.budget_bytes {
            return Err(KvError::OverBudget {
                total_bytes,
                buffer_bytes,
                layers: self.shape.layers,
                budget_bytes: limits.budget_bytes,
                largest_fitting_ctx: self.shape.largest_fitting_ctx(limits)?,
            });
        }
        Ok(CapacityPlan {
            buffer_bytes,
            buffers: 2 * self.shape.layers,
            total_bytes,
            copy_out_total_bytes: total_bytes.saturating_mul(2),
            sequences_in_budget: usize::try_from(limits.budget_bytes / total_bytes)
                .unwrap_or(usize::MAX),
        })
    }
}
