//! Helpers shared by the tests that compare logits (`arch_refs`, `hf_refs`, `kv_ring`, `gen_gpu`,
//! `smollm2_reference`): taking them out of a step, and their largest difference from a reference.

#![allow(dead_code)]

use engine::generate::StepOutput;

/// The logits of a step that was asked for them; panics naming what came instead.
pub fn logits(out: StepOutput) -> Vec<f32> {
    match out {
        StepOutput::Logits(l) => l,
        other => panic!("expected logits, got {other:?}"),
    }
}

/// Largest |got - want| and where; a `got` that is not finite counts as an infinite difference, so two runs that
/// both overflow do not pass as equal.
pub fn max_diff(got: &[f32], want: &[f32]) -> (f32, usize) {
    assert_eq!(got.len(), want.len(), "vocabulary sizes");
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            if g.is_finite() {
                (g - w).abs()
            } else {
                f32::INFINITY
            }
        })
        .enumerate()
        .fold((0.0, 0), |b, (i, e)| if e > b.0 { (e, i) } else { b })
}
