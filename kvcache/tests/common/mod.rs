//! Shared helpers: a naive model of a sequence's cache and random K/V data.
#![allow(dead_code, clippy::unwrap_used)]

use half::f16;
use kvcache::{HostStorage, KvDtype, KvPart, KvSequence, KvStep, KvView};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// K and V of one token: `[layer][part][head][dim]`, flattened.
pub type TokenKv = Vec<f32>;

/// Dimensions of the simulated model.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub dtype: KvDtype,
}

impl Dims {
    pub fn token_elems(&self) -> usize {
        self.layers * 2 * self.kv_heads * self.head_dim
    }

    fn index(&self, layer: usize, part: KvPart, head: usize, dim: usize) -> usize {
        let p = match part {
            KvPart::Key => 0,
            KvPart::Value => 1,
        };
        ((layer * 2 + p) * self.kv_heads + head) * self.head_dim + dim
    }
}

/// Fresh random tokens (values in [-2, 2), never all zero), already rounded to the storage dtype so a round trip
/// through the cache must reproduce them exactly.
pub fn random_tokens(dims: &Dims, n: usize, seed: u64) -> Vec<TokenKv> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            (0..dims.token_elems())
                .map(|_| {
                    let v: f32 = rng.random_range(-2.0f32..2.0);
                    match dims.dtype {
                        KvDtype::F16 => f16::from_f32(v).to_f32(),
                        KvDtype::F32 => v,
                    }
                })
                .collect()
        })
        .collect()
}

/// Data for a view over `tokens` of one layer and part, in view order (head, position, dim).
pub fn view_data(dims: &Dims, tokens: &[TokenKv], layer: usize, part: KvPart) -> Vec<f32> {
    let mut out = Vec::with_capacity(tokens.len() * dims.kv_heads * dims.head_dim);
    for h in 0..dims.kv_heads {
        for t in tokens {
            for d in 0..dims.head_dim {
                out.push(t[dims.index(layer, part, h, d)]);
            }
        }
    }
    out
}

/// Writes the step's new tokens through bindings (sub-regions where the backend makes them).
pub fn write_step(
    storage: &HostStorage,
    seq: &KvSequence<HostStorage>,
    dims: &Dims,
    step: &KvStep,
    tokens: &[TokenKv],
) {
    assert_eq!(tokens.len(), step.len());
    for layer in 0..dims.layers {
        for part in KvPart::BOTH {
            let binding = seq.bind(layer, part, &step.write_view()).unwrap();
            storage
                .write_binding(&binding, &view_data(dims, tokens, layer, part))
                .unwrap();
        }
    }
}

/// Reads `view` of every layer and part and compares it with `model` exactly.
pub fn check_view(
    storage: &HostStorage,
    seq: &KvSequence<HostStorage>,
    dims: &Dims,
    view: &KvView,
    model: &[TokenKv],
) {
    assert_eq!(view.positions, model.len());
    for layer in 0..dims.layers {
        for part in KvPart::BOTH {
            let binding = seq.bind(layer, part, view).unwrap();
            let got = storage.read_binding(&binding).unwrap();
            let want = view_data(dims, model, layer, part);
            assert_eq!(got, want, "layer {layer} {part:?} differs from the model");
        }
    }
}
