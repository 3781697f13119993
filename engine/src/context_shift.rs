//! Context shift on the host: the policy (what to keep, how much to drop at once) and the tokens shifts dropped.
//!
//! When a step would overflow the KV cache, the generator keeps the first `keep` cached tokens (the system prompt,
//! BOS and the first few tokens, on which models park much of their attention: the "attention sinks" of
//! StreamingLLM), drops the older half of the rest and goes on; the model moves and re-rotates the kept keys in
//! place ([`crate::generate::LanguageModel::shift_context`]; on the GPU `gpu/shift.rs`), so nothing is prefilled
//! again. What a shift drops is remembered here, so that a later prompt repeating it (a chat re-renders the whole
//! conversation every turn) is matched against everything the cache has seen and only its new end runs.
//!
//! The kept tokens' deeper-layer keys and values still carry what they attended to before the shift: a shifted
//! cache is not what a fresh prefill of the kept tokens would give past the first layer (the same approximation as
//! llama.cpp's context shift); the first layer's, and the rotary positions, are exact up to rounding.

/// Leading tokens a shift keeps when the caller names none (`tlite generate`; a chat keeps its system prompt):
/// BOS and the first few tokens, which StreamingLLM (Xiao et al., 2023) found four of enough to keep attention sane.
pub const DEFAULT_KEEP: usize = 4;

/// What generation does once the KV cache is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnContextFull {
    /// Stop with [`crate::generate::StopReason::ContextFull`]; a chat turn drops the oldest exchanges and
    /// prefills the rest again.
    Stop,
    /// Context shift: keep the first `keep` cached tokens, drop the older half of the ones after them (never fewer
    /// than the next step needs, as llama.cpp does, so a shift comes about once per half context rather than at
    /// every token) and go on.
    Shift {
        /// Tokens at the start never dropped; `None` is [`DEFAULT_KEEP`] for a plain generation and the system
        /// prompt for a chat. At most half the context is kept, so each shift frees at least a quarter of it.
        keep: Option<usize>,
    },
}

impl Default for OnContextFull {
    fn default() -> Self {
        OnContextFull::Shift { keep: None }
    }
}

impl OnContextFull {
    /// The leading tokens a shift keeps in a context of `context` positions (`None`: no shifting), with
    /// `default_keep` standing in for an unnamed count.
    pub fn keep(&self, context: usize, default_keep: usize) -> Option<usize> {
        match *self {
            OnContextFull::Stop => None,
            OnContextFull::Shift { keep } => Some(keep.unwrap_or(default_keep).min(context / 2)),
        }
    }
}

/// What context shifts one generation made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextShifts {
    /// Shifts done.
    pub shifts: usize,
    /// Tokens they dropped.
    pub dropped: usize,
    /// Tokens at the start they kept.
    pub kept: usize,
}

/// Positions to drop from `len` cached ones to fit `needed` more, keeping the first `keep`: half of those after
/// `keep`, and at least `needed`; `None` when even dropping them all leaves too little room.
pub fn drop_block(len: usize, keep: usize, needed: usize) -> Option<usize> {
    let droppable = len.saturating_sub(keep);
    (needed <= droppable && droppable > 0).then(|| (droppable / 2).max(needed).max(1))
}

/// How much of a prompt the cache already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Prompt tokens already seen, from its start.
    pub prompt: usize,
    /// Cached positions that hold them (fewer than `prompt` when a shift dropped some in between).
    pub cached: usize,
    /// Whether the dropped tokens stay part of what the cache stands for (the prompt repeats them).
    pub keeps_gap: bool,
}

/// The tokens context shifts dropped from the cache: they came right after its first `keep` tokens, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShiftedOut {
    gap: Option<Gap>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Gap {
    keep: usize,
    tokens: Vec<u32>,
}

impl ShiftedOut {
    /// Tokens dropped so far.
    pub fn len(&self) -> usize {
        self.gap.as_ref().map_or(0, |g| g.tokens.len())
    }

    /// Whether nothing was dropped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept start of the shifts so far: later shifts must keep the same tokens, or the dropped ones would no
    /// longer sit in one run.
    pub fn keep(&self) -> Option<usize> {
        self.gap.as_ref().map(|g| g.keep)
    }

    /// How much of `prompt` (at most its first `most` tokens) `cached` plus the dropped tokens already hold. A
    /// prompt that parts from them inside the dropped run can only reuse the kept start.
    pub fn reuse(&self, cached: &[u32], prompt: &[u32], most: usize) -> Reuse {
        let Some(gap) = &self.gap else {
            let n = common_prefix(cached.iter(), prompt).min(most);
            return Reuse {
                prompt: n,
                cached: n,
                keeps_gap: false,
            };
        };
        let keep = gap.keep.min(cached.len());
        let seen = cached[..keep]
            .iter()
            .chain(&gap.tokens)
            .chain(&cached[keep..]);
        let n = common_prefix(seen, prompt).min(most);
        let gap_end = keep + gap.tokens.len();
        if n >= gap_end {
            Reuse {
                prompt: n,
                cached: n - gap.tokens.len(),
                keeps_gap: true,
            }
        } else {
            let n = n.min(keep);
            Reuse {
                prompt: n,
                cached: n,
                keeps_gap: false,
            }
        }
    }

    /// Mirrors a shift on the host: moves `cached[keep..keep + drop]` to the dropped run.
    pub fn record(&mut self, cached: &mut Vec<u32>, keep: usize, drop: usize) {
        let gap = self.gap.get_or_insert_with(|| Gap {
            keep,
            tokens: Vec::new(),
        });
        gap.tokens.extend(cached.drain(keep..keep + drop));
    }

    /// The kept start and the tokens dropped after it, oldest first (`None`: nothing was dropped). What a saved
    /// session stores so that a resumed chat still matches its full history against the shifted cache.
    pub fn dropped(&self) -> Option<(usize, &[u32])> {
        self.gap.as_ref().map(|g| (g.keep, g.tokens.as_slice()))
    }

    /// The record of `tokens` dropped after the first `keep` cached ones (as [`ShiftedOut::dropped`] gave it).
    pub fn from_dropped(keep: usize, tokens: Vec<u32>) -> Self {
        Self {
            gap: (!tokens.is_empty()).then_some(Gap { keep, tokens }),
        }
    }

    /// Forgets the dropped run (the cache was cut back into its kept start, or cleared).
    pub fn clear(&mut self) {
        self.gap = None;
    }
}

fn common_prefix<'a>(seen: impl Iterator<Item = &'a u32>, prompt: &[u32]) -> usize {
    seen.zip(prompt).take_while(|(a, b)| a == b).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_block_halves_what_follows_keep_and_never_drops_too_little() {
        assert_eq!(drop_block(32, 4, 1), Some(14));
        assert_eq!(drop_block(32, 4, 20), Some(20));
        assert_eq!(drop_block(32, 4, 29), None);
        assert_eq!(drop_block(5, 4, 1), Some(1));
        assert_eq!(drop_block(4, 4, 1), None);
        assert_eq!(drop_block(3, 4, 0), None);
    }

    #[test]
    fn keep_follows_the_policy_and_leaves_room() {
        assert_eq!(OnContextFull::Stop.keep(64, 4), None);
        assert_eq!(OnContextFull::default().keep(64, 4), Some(4));
        assert_eq!(
            OnContextFull::Shift { keep: Some(10) }.keep(64, 4),
            Some(10)
        );
        assert_eq!(
            OnContextFull::Shift { keep: Some(50) }.keep(64, 4),
            Some(32)
        );
    }

    #[test]
    fn a_prompt_is_matched_across_the_dropped_run() {
        let mut cached: Vec<u32> = (0..10).collect();
        let mut out = ShiftedOut::default();
        out.record(&mut cached, 2, 3);
        assert_eq!(cached, [0, 1, 5, 6, 7, 8, 9]);
        out.record(&mut cached, 2, 2);
        assert_eq!(cached, [0, 1, 7, 8, 9]);
        assert_eq!((out.len(), out.keep()), (5, Some(2)));
        // Everything seen, then more: all of it reused.
        let prompt: Vec<u32> = (0..12).collect();
        let r = out.reuse(&cached, &prompt, prompt.len() - 1);
        assert_eq!((r.prompt, r.cached, r.keeps_gap), (10, 5, true));
        // Parting after the run: cut the cached tail there.
        let prompt = [0, 1, 2, 3, 4, 5, 6, 7, 42];
        let r = out.reuse(&cached, &prompt, prompt.len() - 1);
        assert_eq!((r.prompt, r.cached, r.keeps_gap), (8, 3, true));
        // Parting inside the run: only the kept start is any use.
        let prompt = [0, 1, 2, 42, 4];
        let r = out.reuse(&cached, &prompt, prompt.len() - 1);
        assert_eq!((r.prompt, r.cached, r.keeps_gap), (2, 2, false));
        let prompt = [0, 42];
        let r = out.reuse(&cached, &prompt, prompt.len() - 1);
        assert_eq!((r.prompt, r.cached, r.keeps_gap), (1, 1, false));
        out.clear();
        assert!(out.is_empty());
    }
}
