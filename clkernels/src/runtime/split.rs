//! [`RowSplit`]: how a row-major tensor larger than the device's largest allocation is stored across several
//! buffers, by whole rows (pure: a function of the sizes and the device's limits, unit-tested without a device).
//!
//! A phone caps one buffer at `CL_DEVICE_MAX_MEM_ALLOC_SIZE` (1 GiB on the Adreno 750), below the f16 embedding of
//! a 256000-token vocabulary. Splitting by rows keeps every part an ordinary matrix of the same layout, so the
//! kernels that read whole rows (the embedding gather, the output-head mat-vec) run once per part unchanged. Each
//! part starts at a row whose offset into a row-indexed `f32` output (the logits) is a multiple of the device's
//! base-address alignment, so that output slice can be bound as a sub-buffer, and at a multiple of
//! [`ROW_QUANTUM`] rows, so every launch geometry (rows per work-item or per group) sees whole blocks. Parts are as
//! equal as those constraints allow.

use std::ops::Range;

/// Every part but the last holds a multiple of this many rows: a multiple of the rows per work-item or per group of
/// every mat-vec geometry (`matvec/config.rs`: at most 16), so each part's launch covers whole blocks.
pub const ROW_QUANTUM: usize = 64;

/// Bytes of one element of the row-indexed output a part writes (the `f32` logits).
const OUT_ELEMENT_BYTES: u64 = 4;

/// One part of a split tensor: rows `first..first + rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowPart {
    /// First row of the whole tensor this part holds.
    pub first: usize,
    /// Rows in this part.
    pub rows: usize,
}

impl RowPart {
    /// The rows as a range of the whole tensor.
    pub fn range(&self) -> Range<usize> {
        self.first..self.first + self.rows
    }
}

/// The parts a tensor is stored in: one part when it fits one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSplit {
    parts: Vec<RowPart>,
}

/// Why a tensor cannot be split to fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a block of {quantum} rows of {row_bytes} bytes ({block} bytes, the smallest aligned part) exceeds the device's \
     largest allocation of {max_alloc} bytes (CL_DEVICE_MAX_MEM_ALLOC_SIZE)"
)]
pub struct SplitError {
    /// Rows of the smallest part the alignment allows.
    pub quantum: usize,
    /// Bytes of one row in the largest of the tensor's buffers.
    pub row_bytes: u64,
    /// `quantum * row_bytes`.
    pub block: u64,
    /// The device's largest allocation.
    pub max_alloc: u64,
}

/// The limits a split must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLimits {
    /// `CL_DEVICE_MAX_MEM_ALLOC_SIZE` in bytes (0: the device does not say, so nothing is split).
    pub max_alloc_bytes: u64,
    /// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` in bits (0: unknown, taken as byte alignment).
    pub base_addr_align_bits: u32,
}

impl SplitLimits {
    /// The rows every part boundary is a multiple of: [`ROW_QUANTUM`], and enough rows that their `f32` outputs
    /// fill a whole number of alignment units.
    pub fn quantum(&self) -> usize {
        let align = (u64::from(self.base_addr_align_bits) / 8).max(1);
        let rows_for_align = (align / gcd(align, OUT_ELEMENT_BYTES)) as usize;
        lcm(ROW_QUANTUM, rows_for_align)
    }
}

impl RowSplit {
    /// Plans the parts of a tensor of `rows` rows whose largest buffer takes `row_bytes` bytes per row (an M0E4
    /// matrix has three buffers, codes the largest; an f16 matrix one).
    pub fn plan(rows: usize, row_bytes: u64, limits: SplitLimits) -> Result<Self, SplitError> {
        let max = limits.max_alloc_bytes;
        let whole = (rows as u64).saturating_mul(row_bytes);
        if max == 0 || whole <= max || rows == 0 {
            return Ok(Self::whole(rows));
        }
        let quantum = limits.quantum();
        let block = (quantum as u64).saturating_mul(row_bytes);
        // The most rows one part may hold, in whole quanta.
        let max_blocks = max / block.max(1);
        if max_blocks == 0 {
            return Err(SplitError {
                quantum,
                row_bytes,
                block,
                max_alloc: max,
            });
        }
        let max_rows = max_blocks as usize * quantum;
        let count = rows.div_ceil(max_rows);
        // Equal parts, rounded up to whole quanta: never above `max_rows`, since `rows / count <= max_rows`.
        let per_part = rows.div_ceil(count).next_multiple_of(quantum).min(max_rows);
        let parts = (0..rows)
            .step_by(per_part)
            .map(|first| RowPart {
                first,
                rows: per_part.min(rows - first),
            })
            .collect();
        Ok(RowSplit { parts })
    }

    /// One part holding all `rows`.
    pub fn whole(rows: usize) -> Self {
        RowSplit {
            parts: vec![RowPart { first: 0, rows }],
        }
    }

    /// The parts, in row order.
    pub fn parts(&self) -> &[RowPart] {
        &self.parts
    }

    /// Whether the tensor is stored in more than one buffer.
    pub fn is_split(&self) -> bool {
        self.parts.len() > 1
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a as u64, b as u64) as usize * b
}

#[cfg(test)]
mod tests;
