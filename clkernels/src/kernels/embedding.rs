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
        const K: &str = "embed_f16";
        let (vocab, dim) = (table.shape.rows, table.shape.cols);
        check_len(K, "ids", ids, seq)?;
        check_len(K, "out", out, seq * dim)?;
        let args = [
            (&table.data).into(),
            ids.into(),
            (&*out).into(),
            to_u32(K, "dim", dim)?.into(),
            to_u32(K, "vocab", vocab)?.into(),
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
        const K: &str = "embed_m0e4";
        let (vocab, dim) = (table.shape.rows, table.shape.cols);
        check_len(K, "ids", ids, seq)?;
        check_len(K, "out", out, seq * dim)?;
        let args = [
            (&table.codes).into(),
            (&table.scales).into(),
            (&table.offsets).into(),
            ids.into(),
            (&*out).into(),
            to_u32(K, "dim", dim)?.into(),
            to_u32(K, "vocab", vocab)?.into(),
            to_u32(K, "group", table.group.len())?.into(),
            scale.into(),
        ];
        self.m0e4.launch(&self.gpu, &args, &[dim, seq], None)
    }
}
