//! Geometry of one per-layer K or V buffer and typed views into it.
//!
//! Each buffer is laid out `[kv_head][max_ctx][head_dim]` (head-major). Why:
//!
//! * a decode attention work-group for one kv head streams one contiguous `[ctx][head_dim]` slab, the best case for
//!   coalesced loads and prefetch on phone GPUs;
//! * the element of head `h`, position `p`, dimension `d` is `((h * max_ctx) + p) * head_dim + d`, so a new token
//!   lands in place at a fixed address and never moves afterwards;
//! * `n` new tokens form a strided view: `n * head_dim` contiguous elements per head, `max_ctx * head_dim` between
//!   heads, which a projection kernel writes with one extra stride argument.
//!
//! Position-major (`[ctx][head][dim]`) would make the new-token region contiguous, but then every attention read
//! skips over the other heads; reads happen at every step over the whole context while writes touch only the `n`
//! new positions, so reads decide.

use crate::dtype::KvDtype;
use crate::ring::KvWrap;

/// Which of the two per-layer tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvPart {
    /// Keys.
    Key,
    /// Values.
    Value,
}

impl KvPart {
    /// Both parts, keys first.
    pub const BOTH: [KvPart; 2] = [KvPart::Key, KvPart::Value];
}

/// Shape of one per-layer K (or V) buffer: `[kv_heads][max_ctx][head_dim]` of `dtype` (for a ring layer,
/// `max_ctx` is the ring's slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KvLayout {
    /// Grouped-query KV heads of one layer.
    pub kv_heads: usize,
    /// Positions the buffer holds.
    pub max_ctx: usize,
    /// Elements per head and position.
    pub head_dim: usize,
    /// Element type.
    pub dtype: KvDtype,
}

impl KvLayout {
    /// Elements in one buffer.
    pub fn buffer_elems(&self) -> u64 {
        self.kv_heads as u64 * self.max_ctx as u64 * self.head_dim as u64
    }

    /// Bytes of one buffer.
    pub fn buffer_bytes(&self) -> u64 {
        self.buffer_elems() * self.dtype.bytes()
    }

    /// Elements between consecutive heads.
    pub fn head_stride_elems(&self) -> u64 {
        self.max_ctx as u64 * self.head_dim as u64
    }

    /// Element index of (`head`, `position`, dimension 0).
    pub fn element_index(&self, head: usize, position: usize) -> u64 {
        (head as u64 * self.max_ctx as u64 + position as u64) * self.head_dim as u64
    }

    /// View of positions `[start, start + len)` of every head.
    ///
    /// The caller keeps `start + len <= max_ctx`; the cache only builds views it has checked.
    pub fn positions_view(&self, start: usize, len: usize) -> KvView {
        KvView {
            offset_elems: self.element_index(0, start),
            first_position: start,
            positions: len,
            heads: self.kv_heads,
            head_dim: self.head_dim,
            head_stride_elems: self.head_stride_elems(),
            position_stride_elems: self.head_dim as u64,
            dtype: self.dtype,
            wrap: None,
        }
    }

    /// View of positions `[start, start + len)` of a ring of `max_ctx` slots whose position 0 is in slot `origin`:
    /// it spans the whole buffer (offset 0), and the kernel finds each position's slot through [`KvView::wrap`].
    pub fn ring_view(&self, origin: usize, start: usize, len: usize) -> KvView {
        let slots = self.max_ctx.max(1);
        KvView {
            offset_elems: 0,
            first_position: start,
            positions: len,
            heads: self.kv_heads,
            head_dim: self.head_dim,
            head_stride_elems: self.head_stride_elems(),
            position_stride_elems: self.head_dim as u64,
            dtype: self.dtype,
            wrap: Some(KvWrap {
                slots,
                first_slot: ((origin as u64 + start as u64) % slots as u64) as usize,
            }),
        }
    }
}

/// A strided sub-tensor of one K or V buffer, `[heads][positions][head_dim]`.
///
/// This is what a kernel receives: element (`h`, `i`, `d`) of the view lies at
/// `offset_elems + h * head_stride_elems + i * position_stride_elems + d` of the buffer (or of the sub-region, when
/// bound to one: then `offset_elems` is relative to the sub-region, see [`crate::KvBinding`]). A ring layer's view
/// has a [`KvView::wrap`], and `i` is replaced by the position's slot there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KvView {
    /// Element offset of (head 0, first position, dim 0).
    pub offset_elems: u64,
    /// Cache position (slot) of the view's first position; the causal mask and rotary embedding need it.
    pub first_position: usize,
    /// Positions in the view.
    pub positions: usize,
    /// Heads in the view.
    pub heads: usize,
    /// Elements per head and position (contiguous).
    pub head_dim: usize,
    /// Elements between heads.
    pub head_stride_elems: u64,
    /// Elements between positions.
    pub position_stride_elems: u64,
    /// Element type.
    pub dtype: KvDtype,
    /// `Some` for a ring layer: positions lie in slots modulo the ring's size (see [`crate::KvRings`]).
    pub wrap: Option<KvWrap>,
}

impl KvView {
    /// Element index of (`head`, `i`-th position of the view, `dim`).
    pub fn element_index(&self, head: usize, i: usize, dim: usize) -> u64 {
        let row = self.wrap.map_or(i, |w| w.slot(i));
        self.offset_elems
            + head as u64 * self.head_stride_elems
            + row as u64 * self.position_stride_elems
            + dim as u64
    }

    /// Rows (positions, or a ring's slots) between the view's first and last element.
    fn rows_spanned(&self) -> usize {
        match self.wrap {
            Some(w) => w.slots.min(w.first_slot + self.positions),
            None => self.positions,
        }
    }

    /// Elements from the first to one past the last element the view touches (0 for an empty view); a ring view
    /// may touch any slot from its offset on.
    pub fn span_elems(&self) -> u64 {
        if self.positions == 0 || self.heads == 0 || self.head_dim == 0 {
            return 0;
        }
        (self.heads as u64 - 1) * self.head_stride_elems
            + (self.rows_spanned() as u64 - 1) * self.position_stride_elems
            + self.head_dim as u64
    }

    /// One past the last element, counted from the buffer (or sub-region) start.
    pub fn end_elems(&self) -> u64 {
        self.offset_elems + self.span_elems()
    }

    /// Elements the view actually holds.
    pub fn elems(&self) -> u64 {
        self.heads as u64 * self.positions as u64 * self.head_dim as u64
    }

    /// Byte offset of the first element.
    pub fn offset_bytes(&self) -> u64 {
        self.offset_elems * self.dtype.bytes()
    }

    /// Bytes from the first to one past the last element touched.
    pub fn span_bytes(&self) -> u64 {
        self.span_elems() * self.dtype.bytes()
    }

    /// The view as linear views (no wrap) whose elements, one after the other, are the view's in view order
    /// (head, position, dim): the view itself when it does not wrap, else per head its runs of slots before and
    /// after the ring's end. For copies that take rectangles (saving a ring layer's positions).
    pub fn linear_parts(&self) -> Vec<KvView> {
        let Some(w) = self.wrap else {
            return vec![*self];
        };
        let mut parts = Vec::new();
        for h in 0..self.heads {
            let mut i = 0;
            while i < self.positions {
                let slot = w.slot(i);
                let run = (w.slots - slot).min(self.positions - i);
                parts.push(KvView {
                    offset_elems: self.offset_elems
                        + h as u64 * self.head_stride_elems
                        + slot as u64 * self.position_stride_elems,
                    first_position: self.first_position + i,
                    positions: run,
                    heads: 1,
                    wrap: None,
                    ..*self
                });
                i += run;
            }
        }
        parts
    }

    /// Same view, with the offset moved back by `origin_elems` (for binding to a sub-region starting there).
    pub fn rebased(&self, origin_elems: u64) -> KvView {
        KvView {
            offset_elems: self.offset_elems - origin_elems,
            ..*self
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Index of every element of a view, against a nested-array model of `[head][ctx][dim]`.
    #[test]
    fn views_index_like_nested_arrays() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..200 {
            let layout = KvLayout {
                kv_heads: rng.random_range(1..6),
                max_ctx: rng.random_range(1..40),
                head_dim: rng.random_range(1..20),
                dtype: KvDtype::F16,
            };
            // Flat index of a nested array, counted by walking it.
            let mut flat = vec![vec![vec![0u64; layout.head_dim]; layout.max_ctx]; layout.kv_heads];
            let mut next = 0;
            for head in flat.iter_mut() {
                for pos in head.iter_mut() {
                    for e in pos.iter_mut() {
                        *e = next;
                        next += 1;
                    }
                }
            }
            assert_eq!(next, layout.buffer_elems());
            let start = rng.random_range(0..layout.max_ctx);
            let len = rng.random_range(1..=layout.max_ctx - start);
            let view = layout.positions_view(start, len);
            let mut last = 0;
            for (h, head) in flat.iter().enumerate() {
                for i in 0..len {
                    for (d, &want) in head[start + i].iter().enumerate() {
                        let idx = view.element_index(h, i, d);
                        assert_eq!(idx, want);
                        last = last.max(idx);
                    }
                }
            }
            assert_eq!(view.end_elems(), last + 1);
            assert_eq!(view.offset_elems, flat[0][start][0]);
            assert_eq!(
                view.elems(),
                (layout.kv_heads * len * layout.head_dim) as u64
            );
            assert_eq!(view.span_bytes(), view.span_elems() * 2);
        }
    }

    /// A ring view's linear parts list its elements in view order, and every element lies inside the span.
    #[test]
    fn ring_views_split_into_linear_parts_in_view_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let layout = KvLayout {
                kv_heads: rng.random_range(1..4),
                max_ctx: rng.random_range(1..12),
                head_dim: rng.random_range(1..5),
                dtype: KvDtype::F16,
            };
            let origin = rng.random_range(0..50);
            let start = rng.random_range(0..50);
            let len = rng.random_range(0..=layout.max_ctx);
            let view = layout.ring_view(origin, start, len);
            let mut want = Vec::new();
            for h in 0..layout.kv_heads {
                for i in 0..len {
                    assert_eq!(
                        view.wrap.unwrap().slot(i),
                        (origin + start + i) % layout.max_ctx
                    );
                    for d in 0..layout.head_dim {
                        let idx = view.element_index(h, i, d);
                        assert!(idx < view.end_elems().max(1) && idx < layout.buffer_elems());
                        want.push(idx);
                    }
                }
            }
            let got: Vec<u64> = view
                .linear_parts()
                .iter()
                .flat_map(|p| {
                    (0..p.heads).flat_map(move |h| {
                        (0..p.positions).flat_map(move |i| {
                            (0..p.head_dim).map(move |d| p.element_index(h, i, d))
                        })
                    })
                })
                .collect();
            assert_eq!(got, want);
        }
    }
}
