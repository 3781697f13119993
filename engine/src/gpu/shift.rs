//! Context shift on the device: drop a block of cached positions, move the rest down, re-rotate the moved keys.
//!
//! `kvcache` does the bookkeeping and the copy (one `clEnqueueCopyBuffer` per head and chunk, on the model's
//! in-order queue). The keys it moves were rotated for their old slots; [`RopeShift`] turns them by `-dropped`
//! positions in place, with each layer's own frequencies (its theta, or the scaled table; Gemma 3's local layers
//! have a base of their own), so the cache ends
//! up as a prefill of the kept tokens at their new positions would have left it, up to rounding, without running
//! those tokens again. Values carry no position and only move.

use clkernels::kernels::rope::RopeShift;
use kvcache::{KvPart, ShiftReport};

use super::GpuModel;
use crate::EngineError;

impl GpuModel {
    /// The KV cache's counters: steps, context shifts and the bytes they copied (no step copies otherwise).
    pub fn kv_stats(&self) -> kvcache::KvStats {
        self.kv.stats()
    }

    /// Drops cached positions `[keep, keep + drop)`, moves the later ones down to `keep` and re-rotates their keys.
    ///
    /// A request outside the cache changes nothing; a failure part-way (the copy, the re-rotation) leaves the cache
    /// cut back to its first `keep` positions, the only ones still known to be right.
    pub(super) fn shift_kv(
        &mut self,
        keep: usize,
        drop: usize,
    ) -> Result<ShiftReport, EngineError> {
        // On an error here kvcache has already cut the sequence to `keep`.
        let report = self.kv.shift(keep, drop)?;
        if let Err(e) = self.rerotate_moved_keys(&report) {
            // The moved keys may be half turned: only the kept prefix is still right.
            let _ = self.kv.truncate(keep);
            return Err(e);
        }
        // The device's last arg-max stays valid: a shift changes the cache, not the chosen token.
        Ok(report)
    }

    /// Turns the keys of the moved positions, in every layer, by `-dropped` positions: in a full layer those
    /// the shift moved, in a ring layer (which moves nothing, its positions renumbered in place) those it holds.
    fn rerotate_moved_keys(&self, report: &ShiftReport) -> Result<(), EngineError> {
        let (slots, ring) = (report.rerotate_slots(), report.ring_rerotate.clone());
        if slots.is_empty() && ring.is_empty() {
            return Ok(());
        }
        let delta = -i64::try_from(report.position_delta()).map_err(|_| {
            EngineError::InvalidOption(format!("a shift of {} positions", report.position_delta()))
        })?;
        // Built per shift: the program is compiled once per device and kept in memory (and on disk) by the
        // runtime, so this costs a kernel object, and a model that never shifts never compiles it.
        let kv = self.kv.config();
        let shift = RopeShift::new(&self.gpu, kv.shape.dtype)?;
        for (layer, params) in self.params.iter().enumerate().take(kv.shape.layers) {
            let keys = self.kv.buffer(layer, KvPart::Key)?;
            let turned = if self.kv.is_ring(layer) {
                &ring
            } else {
                &slots
            };
            let view = self.kv.layer_view(layer, turned.start, turned.len());
            shift.enqueue(
                keys.operand(view),
                params.rope,
                params.table(self.rope_table.as_ref()),
                delta,
            )?;
        }
        Ok(())
    }
}
