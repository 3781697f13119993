//! [`SuiteOptions`]: which cases the suite builds and how their kernels are configured.

use clkernels::kernels::attention::{AttentionWalk, SplitPolicy};
use clkernels::kernels::matmul::MatmulConfig;
use clkernels::kernels::matvec::MatvecConfig;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    /// Substrings of case names to keep (all when empty).
    pub filter: Vec<String>,
    /// Mat-vec geometry (the vendor default when `None`).
    pub matvec: Option<MatvecConfig>,
    /// Mat-mat tiling (the vendor default when `None`).
    pub matmul: Option<MatmulConfig>,
    /// Use small shapes (for slow CPU devices and CI smoke runs).
    pub small: bool,
    /// Model dimensions (hidden, feed-forward, vocabulary) of the mat-vec and mat-mat shapes, instead of a 7B
    /// Llama's or `small`'s; e.g. SmolLM2-135M's (576, 1536, 49152).
    pub dims: Option<(usize, usize, usize)>,
    /// Extra compiler defines for the mat-vec program, `NAME` or `NAME=VALUE` (kernel experiments and diagnostics, e.g.
    /// `MV_DIAG_CHEAP_DOT`, which replaces the dequantising dot by one multiply to show whether a shape is bound
    /// by arithmetic or by memory; its results are wrong by design).
    pub matvec_defines: Vec<String>,
    /// Decode attention split policy (the default when `None`).
    pub attention_split: Option<SplitPolicy>,
    /// Attention kernel choice (the default when `None`).
    pub attention_walk: Option<AttentionWalk>,
    /// Extra compiler defines for the attention program, as `matvec_defines` (e.g. `ATT_MERGE=4`).
    pub attention_defines: Vec<String>,
    /// Decode attention contexts to time (192 and a long one when empty).
    pub attention_contexts: Vec<usize>,
    /// Attention heads as (query heads, KV heads, head dim) (a 7B model's 32 x 32 x 128 when `None`).
    pub attention_heads: Option<(usize, usize, usize)>,
}

impl SuiteOptions {
    /// `matvec_defines` as (name, value) pairs: `NAME=VALUE`, or `NAME` meaning `NAME=1`.
    pub fn matvec_define_pairs(&self) -> Vec<(&str, &str)> {
        define_pairs(&self.matvec_defines)
    }

    /// `attention_defines` as (name, value) pairs.
    pub fn attention_define_pairs(&self) -> Vec<(&str, &str)> {
        define_pairs(&self.attention_defines)
    }

    /// Whether the case named `name` is selected by [`SuiteOptions::filter`].
    pub fn wants(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| name.contains(f.as_str()))
    }
}

fn define_pairs(defines: &[String]) -> Vec<(&str, &str)> {
    defines
        .iter()
        .map(|d| d.split_once('=').unwrap_or((d.as_str(), "1")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::SuiteOptions;

    #[test]
    fn defines_and_filters_read_as_documented() {
        let opts = SuiteOptions {
            filter: vec!["gate".into(), "rope".into()],
            matvec_defines: vec!["MV_DIAG_CHEAP_DOT".into(), "UNROLL=4".into()],
            ..SuiteOptions::default()
        };
        assert_eq!(
            opts.matvec_define_pairs(),
            [("MV_DIAG_CHEAP_DOT", "1"), ("UNROLL", "4")]
        );
        assert!(opts.attention_define_pairs().is_empty());
        assert!(opts.wants("matvec_m0e4_gate_up") && opts.wants("rope"));
        assert!(!opts.wants("matvec_m0e4"));
        assert!(SuiteOptions::default().wants("anything"));
    }
}
