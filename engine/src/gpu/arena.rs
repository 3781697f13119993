//! Where the activations live on the device: one allocation holding the memory plan's buffers at fixed offsets.
//!
//! The plan's buffer sizes are polynomials in `seq` (and `past`); a step's tensors fit in their buffer at that
//! step's size. Allocating once, each buffer gets its size for the largest step, so the offsets never move and every
//! step reuses the same sub-buffers: no reallocation for any `(seq, past)`. The same sizes give the memory budget its
//! activation figure ([`ActivationSizes::bytes`]), so the budget and the allocation are one sum.

use symshape::{Expr, MemoryPlan};

use crate::EngineError;

/// The arena's alignment of every buffer's start: a multiple of any device's `CL_DEVICE_MEM_BASE_ADDR_ALIGN`
/// seen so far (NVIDIA's is 4096 bits, 512 bytes; phones' profiles say 1024 bits or less), so sub-buffer origins
/// are valid everywhere without knowing the device when the budget is summed. A device asking for more is refused
/// at load by name.
pub const ARENA_ALIGN_BYTES: u64 = 4096;

/// The sizes of a plan's activation buffers and of the token ids a step uploads, as expressions in `seq` and
/// `past`, each proven non-decreasing in both: the largest step's values are the largest of all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationSizes {
    buffers: Vec<Expr>,
    token_ids: Expr,
}

/// One buffer of the arena for steps of at most `chunk` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaSlot {
    /// Byte offset in the arena (a multiple of [`ARENA_ALIGN_BYTES`]).
    pub offset: u64,
    /// Bytes: the plan buffer's size for the largest step.
    pub bytes: u64,
}

impl ActivationSizes {
    /// The sizes of `plan`'s buffers and of the `token_ids` input's bytes; refuses a plan with a buffer that could
    /// shrink as a symbol grows (then the largest step would not bound it).
    pub fn of_plan(plan: &MemoryPlan, token_ids: Expr) -> Result<Self, EngineError> {
        let domain = plan.domain();
        for (i, b) in plan.buffers().iter().enumerate() {
            if !domain.coefficients_nonnegative(&b.size) {
                return Err(EngineError::InvalidConfig(format!(
                    "shape plan: activation buffer {i} ({}) is not proven to grow with the step, so no fixed \
                     allocation can be sized for it",
                    b.size
                )));
            }
        }
        Ok(Self {
            buffers: plan.buffers().iter().map(|b| b.size.clone()).collect(),
            token_ids,
        })
    }

    /// Sizes from expressions given directly (for budget tests): `fixed + per_token · seq` for one buffer.
    pub fn affine(fixed: u64, per_token: u64) -> Self {
        let seq = Expr::symbol(&symshape::Symbol::new("seq"));
        let e = &seq * i64::try_from(per_token).unwrap_or(i64::MAX)
            + Expr::constant(i64::try_from(fixed).unwrap_or(i64::MAX));
        Self {
            buffers: vec![e],
            token_ids: Expr::constant(0),
        }
    }

    /// The arena's buffers for steps of at most `chunk` tokens after at most `ctx - 1` cached ones.
    pub fn layout(&self, chunk: usize, ctx: usize) -> Vec<ArenaSlot> {
        let mut offset = 0u64;
        self.buffers
            .iter()
            .map(|size| {
                let bytes = at(size, chunk, ctx);
                let slot = ArenaSlot { offset, bytes };
                offset = offset.saturating_add(bytes.next_multiple_of(ARENA_ALIGN_BYTES));
                slot
            })
            .collect()
    }

    /// Bytes of the arena for steps of at most `chunk` tokens.
    pub fn arena_bytes(&self, chunk: usize, ctx: usize) -> u64 {
        self.layout(chunk, ctx)
            .last()
            .map_or(0, |s| s.offset.saturating_add(s.bytes))
    }

    /// Bytes of the token-id buffer for steps of at most `chunk` tokens.
    pub fn token_id_bytes(&self, chunk: usize, ctx: usize) -> u64 {
        at(&self.token_ids, chunk, ctx)
    }

    /// Everything activations take on the device for steps of at most `chunk` tokens: the arena and the ids.
    pub fn bytes(&self, chunk: usize, ctx: usize) -> u64 {
        self.arena_bytes(chunk, ctx)
            .saturating_add(self.token_id_bytes(chunk, ctx))
    }
}

/// `e` at `seq = chunk`, `past = ctx - 1`, saturating (a size beyond `u64` fits no device anyway).
fn at(e: &Expr, chunk: usize, ctx: usize) -> u64 {
    let seq = i64::try_from(chunk).unwrap_or(i64::MAX);
    let past = i64::try_from(ctx.saturating_sub(1)).unwrap_or(i64::MAX);
    e.eval(&[("seq", seq), ("past", past)])
        .map_or(u64::MAX, |v| u64::try_from(v.max(0)).unwrap_or(u64::MAX))
}
