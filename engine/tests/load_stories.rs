//! The real stories260K llama2.c checkpoint (bundled in fixtures/models) loads, and the reference forward pass on it gives
//! finite logits whose greedy continuation does not depend on how the tokens were batched or on f16 storage.

#![allow(clippy::unwrap_used)]

mod load_common;

use engine::model::{load, load_config, LoadOptions, RopeStyle, TensorData, WeightFormat};
use load_common::{rel_rms, stories260k, to_ref};

fn f32_opts() -> LoadOptions {
    LoadOptions {
        quantize: WeightFormat::F32,
        keep_embeddings_f16: false,
    }
}

#[test]
fn stories260k_header_and_weights() {
    let path = stories260k();
    let m = load(&path, &f32_opts()).unwrap();
    let c = &m.config;
    assert_eq!(
        (
            c.shape.hidden,
            c.shape.ffn,
            c.shape.layers,
            c.shape.heads,
            c.shape.kv_heads,
            c.shape.vocab,
            c.shape.max_ctx
        ),
        (64, 172, 5, 8, 4, 512, 512)
    );
    assert_eq!(
        (c.shape.head_dim, c.rope_style, c.tied_embeddings),
        (8, RopeStyle::Interleaved, true)
    );
    assert_eq!(load_config(&path).unwrap(), *c);
    assert_eq!(m.weights.layers[4].w_down.shape, vec![64, 172]);
    // Trained norm weights are not all ones and every weight is finite.
    let norm = m.weights.layers[0].attn_norm.to_f32();
    assert!(norm.iter().any(|&x| (x - 1.0).abs() > 0.05));
    assert!(m.weights.embedding.to_f32().iter().all(|x| x.is_finite()));
}

#[test]
fn stories260k_reference_continuation_is_stable() {
    let path = stories260k();
    let m = to_ref(&load(&path, &f32_opts()).unwrap());
    let prompt = [1u32];
    let cont = m.greedy(&prompt, 24);
    assert_eq!(cont.len(), 24);
    assert!(cont.iter().all(|&t| (t as usize) < 512));
    // A trained model does not emit one token over and over.
    let distinct = cont.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert!(distinct >= 6, "continuation {cont:?}");

    // One long prefill of prompt + continuation predicts the same continuation at every step.
    let mut seq = prompt.to_vec();
    seq.extend(&cont);
    let logits = m.forward(&seq);
    assert!(logits.iter().flatten().all(|x| x.is_finite()));
    for (i, &t) in cont.iter().enumerate() {
        assert_eq!(
            fixtures::ops::argmax(&logits[i]),
            Some(t as usize),
            "position {i}"
        );
    }

    // f16 storage keeps the continuation (logits move by far less than the top-1 margins here).
    let h = to_ref(&load(&path, &LoadOptions::default()).unwrap());
    assert_eq!(h.greedy(&prompt, 24), cont);
    let d = rel_rms(&logits, &h.forward(&seq));
    assert!(d < 5e-3, "f16 rel rms {d}");
}

#[test]
fn stories260k_m0e4_keeps_w2_f16_and_packs_the_rest() {
    let path = stories260k();
    let opts = LoadOptions {
        quantize: WeightFormat::M0e4 {
            group: fp4::GroupSize::G32,
        },
        keep_embeddings_f16: false,
    };
    let q = load(&path, &opts).unwrap();
    // hidden_dim 172 is not a multiple of 32: w2 (down) cannot be grouped along its inputs.
    for l in &q.weights.layers {
        assert!(matches!(l.w_down.data, TensorData::F16(_)));
        assert!(matches!(l.w_gate.data, TensorData::M0e4(_)));
        assert!(matches!(l.wq.data, TensorData::M0e4(_)));
    }
    let f = load(&path, &f32_opts()).unwrap();
    // Each packed matrix stays within ~9% relative RMS of the f32 weights (4 bits, groups of 32).
    for (a, b) in f.weights.layers.iter().zip(&q.weights.layers) {
        for (x, y) in [
            (&a.wq, &b.wq),
            (&a.wk, &b.wk),
            (&a.wv, &b.wv),
            (&a.wo, &b.wo),
            (&a.w_gate, &b.w_gate),
        ] {
            let d = rel_rms(&[x.to_f32()], &[y.to_f32()]);
            assert!(d < 0.12, "matrix rel rms {d}");
        }
        assert_eq!(a.w_down.to_f32().len(), b.w_down.to_f32().len());
    }
    let f = to_ref(&f);
    let seq: Vec<u32> = std::iter::once(1).chain(f.greedy(&[1], 15)).collect();
    let logits = to_ref(&q).forward(&seq);
    assert!(logits.iter().flatten().all(|x| x.is_finite()));
    // A 260K-parameter model is fragile under 4-bit weights: the logits move a lot (printed, not asserted);
    // GPU tests of the M0E4 path must compare against the reference on the dequantised weights.
    eprintln!(
        "stories260K m0e4 (G32) logits rel rms vs f32: {:.3}",
        rel_rms(&f.forward(&seq), &logits)
    );
}
