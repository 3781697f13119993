//! Sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded.
//!
//! The order follows llama.cpp's default chain, so settings carry over from it: repetition penalty on the raw logits,
//! then temperature, top-k, softmax, top-p, min-p, and a draw from the remaining candidates. A temperature of zero
//! means greedy (the arg-max of the penalised logits).
//!
//! Each sampled token takes one uniform number from a seeded `StdRng` and walks the kept candidates in token order
//! until their cumulative probability passes it. The GPU model runs the same chain on the device
//! (`clkernels::kernels::sampling`) with a number taken from the same stream ([`Sampler::next_uniform`]), so a
//! seed gives the same tokens whichever side samples, up to float rounding at a cut or between two candidates;
//! the host path here is what models without a device sampler use, and what the device hands back to when it
//! cannot decide.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Why a sampling request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// A parameter is outside its meaningful range.
    #[error("invalid sampling parameter {name} = {value}: {expected}")]
    InvalidParameter {
        /// The parameter's name as the CLI spells it.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The logits were empty.
    #[error("cannot sample from an empty logit vector")]
    EmptyLogits,
    /// A logit was NaN, or every logit was minus infinity.
    #[error("logits contain no finite candidate (NaN at index {nan_index:?})")]
    NoFiniteLogit {
        /// The first NaN, if one caused the refusal.
        nan_index: Option<usize>,
    },
}

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0.0` means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` highest logits; `0` disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probabilities sum to at least `top_p`; `1.0` disables.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the most likely token's; `0.0` disables.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of recently seen tokens; `1.0` disables.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the repetition penalty looks at.
    pub repeat_window: usize,
    /// Seed of the random draw, so a run can be repeated exactly.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy, no penalty: the deterministic choice a test or a benchmark wants.
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    /// Plain arg-max with no penalty.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_window: 64,
            seed: 0,
        }
    }

    /// True when the choice is the arg-max of the raw logits, so the device can make it without reading them back.
    pub fn is_plain_greedy(&self) -> bool {
        self.temperature == 0.0 && self.repeat_penalty == 1.0
    }

    /// The distinct tokens of the penalty window, the last `repeat_window` of `recent`, in increasing order (none
    /// when the penalty is off).
    pub fn penalised_tokens(&self, recent: &[u32]) -> Vec<u32> {
        if self.repeat_penalty == 1.0 || self.repeat_window == 0 || recent.is_empty() {
            return Vec::new();
        }
        let mut seen = recent[recent.len().saturating_sub(self.repeat_window)..].to_vec();
        seen.sort_unstable();
        seen.dedup();
        seen
    }

    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let check = |name, value: f32, ok: bool, expected| {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(SamplingError::InvalidParameter {
                    name,
                    value: f64::from(value),
                    expected,
                })
            }
        };
        check(
            "temperature",
            self.temperature,
            self.temperature >= 0.0,
            "a finite value >= 0",
        )?;
        check(
            "top-p",
            self.top_p,
            self.top_p > 0.0 && self.top_p <= 1.0,
            "a value in (0, 1]",
        )?;
        check(
            "min-p",
            self.min_p,
            (0.0..=1.0).contains(&self.min_p),
            "a value in [0, 1]",
        )?;
        check(
            "repeat-penalty",
            self.repeat_penalty,
            self.repeat_penalty > 0.0,
            "a finite value > 0",
        )?;
        Ok(())
    }
}

/// Chooses tokens with one parameter set and one random stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Scratch reused across calls so sampling allocates nothing per token after the first.
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler with validated parameters, its random stream seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Self {
            params,
            rng,
            scratch: Vec::new(),
        })
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from a full logit vector; `recent` is the sequence so far (its tail is the penalty window).
    /// Takes one number from the random stream unless the temperature is 0.
    pub fn sample(&mut self, logits: &[f32], recent: &[u32]) -> Result<u32, SamplingError> {
        let uniform = self.next_uniform().unwrap_or(0.0);
        self.sample_at(logits, recent, uniform)
    }

    /// The number the next sampled token's draw uses, taken from this sampler's stream; `None` at temperature 0,
    /// which draws nothing. `sample(l, r)` is `sample_at(l, r, next_uniform())`, so a device sampler handed this
    /// number keeps the stream a seed gives.
    pub fn next_uniform(&mut self) -> Option<f32> {
        (self.params.temperature > 0.0).then(|| self.rng.random::<f32>())
    }

    /// As [`Sampler::sample`], drawing at `uniform` (in `[0, 1)`; ignored at temperature 0) instead of taking a
    /// number from the stream.
    pub fn sample_at(
        &mut self,
        logits: &[f32],
        recent: &[u32],
        uniform: f32,
    ) -> Result<u32, SamplingError> {
        if !(0.0..1.0).contains(&uniform) {
            return Err(SamplingError::InvalidParameter {
                name: "uniform",
                value: f64::from(uniform),
                expected: "a value in [0, 1)",
            });
        }
        if logits.is_empty() {
            return Err(SamplingError::EmptyLogits);
        }
        if let Some(nan_index) = logits.iter().position(|l| l.is_nan()) {
            return Err(SamplingError::NoFiniteLogit {
                nan_index: Some(nan_index),
            });
        }
        let mut candidates = std::mem::take(&mut self.scratch);
        candidates.clear();
        candidates.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        // Candidate i is token i here, so the penalty indexes the window's tokens instead of searching for them.
        let p = &self.params;
        for token in p.penalised_tokens(recent) {
            if let Some(c) = candidates.get_mut(token as usize) {
                c.1 = penalise(c.1, p.repeat_penalty);
            }
        }
        let choice = self.choose(&mut candidates, uniform);
        self.scratch = candidates;
        choice
    }

    /// The chain after the penalty: temperature, top-k, softmax, top-p, min-p, draw at `uniform`. The candidates a
    /// draw can reach are a prefix of the descending order (logit, then lower token id), and only that prefix is
    /// sorted: sorting a whole 256000-token vocabulary each token cost milliseconds (`cargo bench -p bench --bench
    /// sampling`).
    fn choose(&self, candidates: &mut Vec<(u32, f32)>, uniform: f32) -> Result<u32, SamplingError> {
        candidates.retain(|c| c.1 > f32::NEG_INFINITY);
        if candidates.is_empty() {
            return Err(SamplingError::NoFiniteLogit { nan_index: None });
        }
        let p = &self.params;
        if p.temperature == 0.0 {
            return Ok(arg_max(candidates));
        }
        if p.top_k > 0 && candidates.len() > p.top_k {
            candidates.select_nth_unstable_by(p.top_k - 1, descending);
            candidates.truncate(p.top_k);
        }
        // From here each candidate carries its softmax weight exp((logit - max) / T) (1 at the top) in place of its
        // logit: one exp per candidate, and the same descending order (equal weights are equal probabilities).
        // The normaliser is over every candidate top-k left, taken before any narrowing.
        let max = candidates
            .iter()
            .map(|c| c.1)
            .fold(f32::NEG_INFINITY, f32::max);
        let temperature = p.temperature;
        let mut sum = 0.0f64;
        for c in candidates.iter_mut() {
            c.1 = ((c.1 - max) / temperature).exp();
            sum += f64::from(c.1);
        }
        if p.top_p >= 1.0 && p.min_p == 0.0 {
            // Every candidate can be drawn: no order is needed.
            return Ok(draw_in_token_order(candidates, sum, uniform));
        }
        if candidates.len() > SORT_ALL_UP_TO {
            narrow_to_reachable_prefix(candidates, sum, p.top_p, p.min_p);
        }
        candidates.sort_unstable_by(descending);
        let probs: Vec<f32> = candidates
            .iter()
            .map(|c| (f64::from(c.1) / sum) as f32)
            .collect();
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut mass = 0.0f64;
            for (i, &q) in probs.iter().enumerate() {
                mass += f64::from(q);
                if mass >= f64::from(p.top_p) {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        candidates.truncate(keep);
        let kept: f64 = candidates.iter().map(|c| f64::from(c.1)).sum();
        Ok(draw_in_token_order(candidates, kept, uniform))
    }
}

/// Candidate lists up to this long are sorted whole; longer ones are first narrowed to what a draw can reach.
const SORT_ALL_UP_TO: usize = 1024;

/// Descending logit, ties to the lower token id: the order the chain ranks candidates in.
fn descending(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Keeps a prefix of the descending order that contains every candidate top-p and min-p can keep: all those whose
/// weight (the candidates carry their softmax weight, probability times `sum`, 1 at the top) is at least `t`. With min-p, `t = min_p` is exact (min-p drops
/// the rest). Otherwise `t` starts at 1e-3 and falls until the kept weight reaches top-p's share of `sum` (with a
/// margin for rounding), which on a trained model's logits is one pass keeping a few hundred candidates.
fn narrow_to_reachable_prefix(candidates: &mut Vec<(u32, f32)>, sum: f64, top_p: f32, min_p: f32) {
    // (min-p compares rounded probabilities: the cut sits a hair below min_p so none it keeps is lost here.)
    let mut t = if min_p > 0.0 {
        min_p * (1.0 - 1e-5)
    } else {
        1e-3
    };
    if min_p == 0.0 {
        let need = (f64::from(top_p) + 1e-6) * sum;
        loop {
            let kept: f64 = candidates
                .iter()
                .filter(|c| c.1 >= t)
                .map(|c| f64::from(c.1))
                .sum();
            if kept >= need {
                break;
            }
            if t < 1e-30 {
                return;
            }
            t /= 16.0;
        }
    }
    candidates.retain(|c| c.1 >= t);
}

/// A draw over the candidates by weight (`sum` is their total) at `uniform`, walking them in token order: the order
/// the device sampler walks in, so both pick the same token for the same number, and the result does not depend on
/// the order the candidates came in. O(n) when they are in token order already.
fn draw_in_token_order(candidates: &mut [(u32, f32)], sum: f64, uniform: f32) -> u32 {
    if !candidates.is_sorted_by_key(|c| c.0) {
        candidates.sort_unstable_by_key(|c| c.0);
    }
    let mut target = f64::from(uniform) * sum;
    for c in candidates.iter() {
        let w = f64::from(c.1);
        if target < w {
            return c.0;
        }
        target -= w;
    }
    // Rounding left a sliver of mass past the end; it belongs to the last candidate with any.
    candidates
        .iter()
        .rev()
        .find(|c| c.1 > 0.0)
        .map_or(candidates[candidates.len() - 1].0, |c| c.0)
}

/// A repeated token's logit: divided by the penalty when positive, multiplied when not.
fn penalise(logit: f32, penalty: f32) -> f32 {
    if logit > 0.0 {
        logit / penalty
    } else {
        logit * penalty
    }
}

/// Highest logit; the lowest token id wins a tie (the same rule as the device arg-max).
fn arg_max(candidates: &[(u32, f32)]) -> u32 {
    let mut best = candidates[0];
    for &c in &candidates[1..] {
        if c.1 > best.1 || (c.1 == best.1 && c.0 < best.0) {
            best = c;
        }
    }
    best.0
}

/// Probabilities of a logit vector at a temperature (for tests and callers that want to show them).
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let mut probs: Vec<f32> = logits.iter().map(|&l| ((l - max) / t).exp()).collect();
    let sum: f32 = probs.iter().sum();
    for q in &mut probs {
        *q /= sum;
    }
    probs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::Rng;

    fn random_logits(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random::<f32>() * 8.0 - 4.0).collect()
    }

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            seed: 7,
            ..SamplingParams::greedy()
        }
    }

    fn reference_argmax(logits: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        best as u32
    }

    proptest! {
        #[test]
        fn greedy_is_argmax(seed in any::<u64>(), n in 1usize..300) {
            let logits = random_logits(seed, n);
            let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
            prop_assert_eq!(s.sample(&logits, &[]).unwrap(), reference_argmax(&logits));
        }

        #[test]
        fn top_k_one_is_greedy(seed in any::<u64>(), n in 1usize..300, t in 0.1f32..5.0) {
            let logits = random_logits(seed, n);
            let mut s = Sampler::new(SamplingParams { top_k: 1, seed, ..params(t) }).unwrap();
            prop_assert_eq!(s.sample(&logits, &[]).unwrap(), reference_argmax(&logits));
        }

        #[test]
        fn same_seed_same_tokens(seed in any::<u64>(), n in 2usize..300) {
            let logits = random_logits(seed ^ 0x55, n);
            let p = SamplingParams { temperature: 1.3, top_p: 0.9, top_k: 40, seed, ..SamplingParams::greedy() };
            let mut a = Sampler::new(p.clone()).unwrap();
            let mut b = Sampler::new(p).unwrap();
            for _ in 0..20 {
                prop_assert_eq!(a.sample(&logits, &[]).unwrap(), b.sample(&logits, &[]).unwrap());
            }
        }

        /// Above SORT_ALL_UP_TO candidates only a narrowed prefix is sorted: it must hold every candidate the
        /// whole-vocabulary chain (sort all, softmax, top-p, min-p) can keep, on trained-like and flat logits.
        #[test]
        fn narrowing_keeps_every_reachable_candidate(
            seed in any::<u64>(),
            n in 1025usize..6000,
            top_p in 0.05f32..1.0,
            min_p in prop_oneof![Just(0.0f32), 0.001f32..0.5],
            temperature in 0.2f32..2.0,
            spread in prop_oneof![Just(0.5f32), Just(4.0f32)],
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let logits: Vec<f32> = (0..n).map(|_| (rng.random::<f32>() - 0.5) * 2.0 * spread).collect();
            let reachable = whole_chain_keep_set(&logits, temperature, top_p, min_p);
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut candidates: Vec<(u32, f32)> = logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, ((l - max) / temperature).exp()))
                .collect();
            let sum: f64 = candidates.iter().map(|c| f64::from(c.1)).sum();
            narrow_to_reachable_prefix(&mut candidates, sum, top_p, min_p);
            let kept: std::collections::HashSet<u32> = candidates.iter().map(|c| c.0).collect();
            for t in &reachable {
                prop_assert!(kept.contains(t), "token {} reachable but narrowed away ({} kept of {})", t, kept.len(), n);
            }
            // Every draw of the sampler lands in that set.
            let mut s = Sampler::new(SamplingParams { temperature, top_p, min_p, seed, ..params(1.0) }).unwrap();
            for _ in 0..10 {
                let t = s.sample(&logits, &[]).unwrap();
                prop_assert!(reachable.contains(&t), "drew {} outside the reachable set", t);
            }
        }

        #[test]
        fn top_k_stays_in_top_k(seed in any::<u64>(), n in 5usize..300, k in 1usize..5) {
            let logits = random_logits(seed, n);
            let mut sorted = logits.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            let mut s = Sampler::new(SamplingParams { top_k: k, seed, ..params(2.0) }).unwrap();
            for _ in 0..20 {
                let t = s.sample(&logits, &[]).unwrap();
                prop_assert!(logits[t as usize] >= kth);
            }
        }
    }

    /// The tokens the chain can draw, computed the plain way: sort the whole vocabulary, softmax in f32, then
    /// top-p's prefix and min-p's cut (what `choose` did for every vocabulary before narrowing).
    fn whole_chain_keep_set(logits: &[f32], temperature: f32, top_p: f32, min_p: f32) -> Vec<u32> {
        let mut c: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        c.sort_unstable_by(descending);
        let max = c[0].1;
        let mut probs: Vec<f32> = c
            .iter()
            .map(|x| ((x.1 - max) / temperature).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= sum);
        let mut keep = probs.len();
        if top_p < 1.0 {
            let mut mass = 0.0f64;
            for (i, &q) in probs.iter().enumerate() {
                mass += f64::from(q);
                if mass >= f64::from(top_p) {
                    keep = i + 1;
                    break;
                }
            }
        }
        if min_p > 0.0 {
            let floor = probs[0] * min_p;
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        c[..keep].iter().map(|x| x.0).collect()
    }

    /// Plain temperature sampling over a large vocabulary draws without sorting (in token order): the draws must
    /// still follow the softmax. Three heads hold ~0.9 of the mass; 20000 draws put each head's frequency
    /// within 5 standard deviations of its probability, and the tail is drawn too.
    #[test]
    fn large_vocabulary_draws_follow_the_softmax() {
        let n = 3000;
        let mut rng = StdRng::seed_from_u64(11);
        let mut logits: Vec<f32> = (0..n).map(|_| rng.random::<f32>() - 8.0).collect();
        logits[2999] = 2.0;
        logits[7] = 1.5;
        logits[1500] = 1.0;
        let probs = softmax(&logits, 1.0);
        let mut s = Sampler::new(params(1.0)).unwrap();
        let draws = 20000;
        let mut seen = vec![0usize; n];
        for _ in 0..draws {
            seen[s.sample(&logits, &[]).unwrap() as usize] += 1;
        }
        for head in [2999, 7, 1500] {
            let p = f64::from(probs[head]);
            let expected = p * draws as f64;
            let sigma = (draws as f64 * p * (1.0 - p)).sqrt();
            let got = seen[head] as f64;
            assert!(
                (got - expected).abs() < 5.0 * sigma,
                "token {head}: {got} draws, expected {expected:.0}"
            );
        }
        let tail: usize = seen.iter().sum::<usize>() - seen[2999] - seen[7] - seen[1500];
        assert!(tail > 0, "the tail was never drawn");
    }

    #[test]
    fn top_p_excludes_the_tail() {
        // Probabilities ~ [0.6, 0.3, 0.1 spread over many]: top-p 0.8 must keep only the two heads.
        let mut logits = vec![0.0f32; 50];
        logits[3] = 6.0;
        logits[17] = 5.3;
        let probs = softmax(&logits, 1.0);
        assert!(
            probs[3] + probs[17] > 0.8 && probs[3] < 0.8,
            "fixture no longer tests top-p: {probs:?}"
        );
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.8,
            ..params(1.0)
        })
        .unwrap();
        let mut seen = [0usize; 50];
        for _ in 0..2000 {
            seen[s.sample(&logits, &[]).unwrap() as usize] += 1;
        }
        assert_eq!(
            seen.iter().sum::<usize>(),
            seen[3] + seen[17],
            "tail token drawn: {seen:?}"
        );
        assert!(seen[17] > 0, "second head never drawn: {seen:?}");
        // Without top-p the tail does get drawn, so the assertion above is not vacuous.
        let mut s = Sampler::new(params(1.0)).unwrap();
        let tail = (0..2000)
            .filter(|_| !matches!(s.sample(&logits, &[]).unwrap(), 3 | 17))
            .count();
        assert!(tail > 0);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let logits = vec![3.0f32, 2.9, 0.0, -1.0, 2.0];
        // p(i)/p(max) = exp(l_i - 3): keeps 0, 1 (0.90) and 4 (0.37) at min-p 0.3; drops 2 (0.05) and 3.
        let mut s = Sampler::new(SamplingParams {
            min_p: 0.3,
            ..params(1.0)
        })
        .unwrap();
        let mut seen = [0usize; 5];
        for _ in 0..3000 {
            seen[s.sample(&logits, &[]).unwrap() as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
        assert!(seen[4] > 0, "{seen:?}");
    }

    #[test]
    fn repetition_penalty_lowers_repeated_tokens() {
        let logits = random_logits(11, 64);
        let top = reference_argmax(&logits);
        let count = |penalty: f32| {
            let mut s = Sampler::new(SamplingParams {
                repeat_penalty: penalty,
                repeat_window: 8,
                ..params(1.0)
            })
            .unwrap();
            (0..3000)
                .filter(|_| s.sample(&logits, &[top, 1, 2]).unwrap() == top)
                .count()
        };
        assert!(
            count(3.0) < count(1.0) / 2,
            "penalty 3.0: {} vs none: {}",
            count(3.0),
            count(1.0)
        );
        // Outside the window the penalty does not apply.
        let mut far = vec![top];
        far.extend(std::iter::repeat_n(63 - top.min(62), 8));
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 1e6,
            repeat_window: 8,
            ..SamplingParams::greedy()
        })
        .unwrap();
        assert_eq!(s.sample(&logits, &far).unwrap(), top);
        // Greedy with the penalty avoids the repeated arg-max when the penalty is large enough.
        assert_ne!(s.sample(&logits, &[top]).unwrap(), top);
    }

    #[test]
    fn negative_logits_are_penalised_downwards() {
        assert_eq!((penalise(-2.0, 2.0), penalise(2.0, 2.0)), (-4.0, 1.0));
        let p = SamplingParams {
            repeat_penalty: 2.0,
            repeat_window: 3,
            ..SamplingParams::greedy()
        };
        assert_eq!(p.penalised_tokens(&[9, 5, 1, 5]), vec![1, 5]);
    }

    #[test]
    fn different_seeds_differ() {
        let logits = vec![0.0f32; 1000];
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0)
            })
            .unwrap();
            (0..8)
                .map(|_| s.sample(&logits, &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(
            Sampler::new(SamplingParams {
                temperature: -1.0,
                ..SamplingParams::greedy()
            }),
            Err(SamplingError::InvalidParameter {
                name: "temperature",
                ..
            })
        ));
        assert!(Sampler::new(SamplingParams {
            top_p: 0.0,
            ..SamplingParams::greedy()
        })
        .is_err());
        assert!(Sampler::new(SamplingParams {
            min_p: 1.5,
            ..SamplingParams::greedy()
        })
        .is_err());
        assert!(Sampler::new(SamplingParams {
            repeat_penalty: f32::NAN,
            ..SamplingParams::greedy()
        })
        .is_err());
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[], &[]), Err(SamplingError::EmptyLogits));
        assert!(matches!(
            s.sample(&[0.0, f32::NAN], &[]),
            Err(SamplingError::NoFiniteLogit { nan_index: Some(1) })
        ));
        assert!(s.sample(&[f32::NEG_INFINITY; 3], &[]).is_err());
    }
}
