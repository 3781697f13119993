//! Embedding gather (`embedding.cl`) from f16 or M0E4 tables.

use super::matvec::{DeviceF16Matrix, DeviceM0e4};
use super::{check_len, program_source, shape_error, to_u32, KernelError, LockedKernel};
use crate::runtime::{DeviceBuffer, Gpu};

const SOURCE: crate::runtime::ProgramSource = program_source!("embedding", "embedding.cl");

/// Embedding launcher: `out[t] = table[ids[t]] * scale`.
///
/// Ids are read on the device (they may come from the previous step's argmax); an id past the vocabulary is
/// clamped to the last row there. Use [`check_ids`] on ids that come from the host.
#[derive(Debug)]
pub struct Embedding {
    gpu: Gpu,
    f16: LockedKernel,
    m0e4: LockedKernel,
}

/// Which rows of the vocabulary a table holds: all of them, or one part of a table split across buffers
/// ([`crate::runtime::RowSplit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRows {
    /// Rows of the whole vocabulary (ids are clamped to it).
    pub vocab: usize,
    /// The vocabulary row the table's first row is.
    pub first: usize,
}

impl TableRows {
    /// A table holding the whole vocabulary of `vocab` rows.
    pub fn whole(vocab: usize) -> Self {
        TableRows { vocab, first: 0 }
    }

    /// Checks that a table of `rows` rows fits inside the vocabulary from `first`, and returns the kernel's
    /// `vocab`, `first` and `rows` arguments.
    fn args(&self, kernel: &'static str, rows: usize) -> Result<[u32; 3], KernelError> {
        if self.vocab == 0
            || self
                .first
                .checked_add(rows)
                .is_none_or(|end| end > self.vocab)
        {
            return Err(shape_error(
                kernel,
                format!(
                    "a table of {rows} rows from row {} does not fit a vocabulary of {}",
                    self.first, self.vocab
                ),
            ));
        }
        Ok([
            to_u32(kernel, "vocab", self.vocab)?,
            to_u32(kernel, "first", self.first)?,
            to_u32(kernel, "rows", rows)?,
        ])
    }
}

/// Checks host-side token ids against the vocabulary size before they are uploaded.
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<(), KernelError> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(i) => Err(shape_error(
            "embedding",
            format!(
                "token id {} at {i} is outside the vocabulary of {vocab}",
                ids[i]
            ),
        )),
        None => Ok(()),
    }
}

impl Embedding {
    /// Builds the kernels.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Ok(Embedding {
            gpu: gpu.clone(),
            f16: LockedKernel::build(gpu, &SOURCE, &[], "embed_f16")?,
            m0e4: LockedKernel::build(gpu, &SOURCE, &[], "embed_m0e4")?,
        })
    }

    /// Gathers `seq` rows of an f16 table (`[vocab][dim]`) into `out` (`[seq][dim]`).
    pub fn enqueue_f16(
        &self,
        table: &DeviceF16Matrix,
        ids: &DeviceBuffer<u32>,
        seq: usize,
        out: &mut DeviceBuffer<f32>,
        scale: f32,
    ) -> Result<(), KernelError> {
        let rows = TableRows::whole(table.shape.rows);
        self.enqueue_f16_rows(table, rows, ids, seq, out, scale)
    }

    /// As [`Embedding::enqueue_f16`] for a table holding the vocabulary rows `rows` says: writes the rows of the
    /// tokens whose ids fall in it and leaves the others' untouched.
    pub fn enqueue_f16_rows(
        &self,
        table: &DeviceF16Matrix,
        rows: TableRows,
        ids: &DeviceBuffer<u32>,
        seq: usize,
        out: &mut DeviceBuffer<f32>,
        scale: f32,
    ) -> Result<(), KernelError> {
        const K: &str = "embed_f16";
        let dim = table.shape.cols;
        let [vocab, first, held] = rows.args(K, table.shape.rows)?;
        check_len(K, "ids", ids, seq)?;
        check_len(K, "out", out, seq * dim)?;
        let args = [
            (&table.data).into(),
            ids.into(),
            (&*out).into(),
            to_u32(K, "dim", dim)?.into(),
            vocab.into(),
            first.into(),
            held.into(),
            scale.into(),
        ];
        self.f16.launch(&self.gpu, &args, &[dim, seq], None)
    }

    /// Gathers `seq` rows of an M0E4 table (`[vocab][dim]`) into `out` (`[seq][dim]`), dequantised.
    pub fn enqueue_m0e4(
        &self,
        table: &DeviceM0e4,
        ids: &DeviceBuffer<u32>,
        seq: usize,
        out: &mut DeviceBuffer<f32>,
        scale: f32,
    ) -> Result<(), KernelError> {
        let rows = TableRows::whole(table.shape.rows);
        self.enqueue_m0e4_rows(table, rows, ids, seq, out, scale)
    }

    /// As [`Embedding::enqueue_m0e4`] for a table holding the vocabulary rows `rows` says (see
    /// [`Embedding::enqueue_f16_rows`]).
    pub fn enqueue_m0e4_rows(
        &self,
        table: &DeviceM0e4,
        rows: TableRows,
        ids: &DeviceBuffer<u32>,
        seq: usize,
        out: &mut DeviceBuffer<f32>,
        scale: f32,
    ) -> Result<(), KernelError> {
        const K: &str = "embed_m0e4";
        let dim = table.shape.cols;
        let [vocab, first, held] = rows.args(K, table.shape.rows)?;
        check_len(K, "ids", ids, seq)?;
        check_len(K, "out", out, seq * dim)?;
        let args = [
            (&table.codes).into(),
            (&table.scales).into(),
            (&table.offsets).into(),
            ids.into(),
            (&*out).into(),
            to_u32(K, "dim", dim)?.into(),
            vocab.into(),
            first.into(),
            held.into(),
            to_u32(K, "group", table.group.len())?.into(),
            scale.into(),
        ];
        self.m0e4.launch(&self.gpu, &args, &[dim, seq], None)
    }
}
