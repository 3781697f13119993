//! The ways a layer rotates q and k and appends the step's new K and V to the cache, chosen once per step.

use clkernels::kernels::attention::FreshToken;
use clkernels::kernels::rope::RopeTable;
use clkernels::runtime::DeviceBuffer;

use super::kernels::Kernels;
use super::step::{LayerKv, Step};
use crate::EngineError;

/// How q and k are rotated and how the new K and V reach the cache.
#[derive(Debug, Clone, Copy)]
pub(super) enum KvAppend<'a> {
    /// Decode with a plain theta: nothing runs before attention; the attention launch rotates q and the new key
    /// and writes K and V into the cache itself, which saves a launch per layer.
    InAttention,
    /// Prefill with a plain theta: one launch rotates q in place and writes K (rotated) and V into the cache.
    RopeThenWrite,
    /// Scaled rotaries (linear, Llama 3, longrope with its attention factor), either phase: the fused kernels
    /// take a theta, not a frequency table, so q and k rotate in the QKV buffer from the table, then K and V are
    /// copied into the cache.
    Table(&'a RopeTable),
}

impl<'a> KvAppend<'a> {
    /// The way for a step of `seq` tokens of a model with this frequency table (if its rotary is scaled).
    pub fn for_step(seq: usize, table: Option<&'a RopeTable>) -> Self {
        match (table, seq) {
            (Some(table), _) => Self::Table(table),
            (None, 1) => Self::InAttention,
            (None, _) => Self::RopeThenWrite,
        }
    }

    /// Enqueues what must run before attention; returns the token the attention launch must rotate and write
    /// itself, if any.
    pub fn enqueue(
        &self,
        k: &Kernels,
        qkv: &mut DeviceBuffer<f32>,
        kv: &LayerKv<'_>,
        step: &Step<'_>,
    ) -> Result<Option<FreshToken>, EngineError> {
        let (rope, past) = (step.params.rope, step.past);
        match *self {
            Self::InAttention => {
                return Ok(Some(FreshToken {
                    k: step.k,
                    v: step.v,
                    rope,
                }))
            }
            Self::RopeThenWrite => k.attention.enqueue_qkv_rope_write(
                qkv, step.q, step.k, step.v, kv.k_write, kv.v_write, rope, past,
            )?,
            Self::Table(table) => {
                k.rope.enqueue_with_table(qkv, step.q, rope, table, past)?;
                k.rope.enqueue_with_table(qkv, step.k, rope, table, past)?;
                k.attention
                    .enqueue_kv_write(qkv, step.k, kv.k_write, None, past)?;
                k.attention
                    .enqueue_kv_write(qkv, step.v, kv.v_write, None, past)?;
            }
        }
        Ok(None)
    }
}
