//! What the engine must do after a context shift, checked end to end: keys cached with RoPE at their old slots,
//! moved by the shift, then re-rotated by `-dropped` over `rerotate_slots()`, equal keys rotated afresh at their new
//! slots (tolerance 1e-4 absolute, f32 storage). Also checks the cache is usable on several threads.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use kvcache::{
    ContextShift, FullPolicy, HostStorage, KvConfig, KvDtype, KvError, KvModelShape, KvPart,
    KvSequence,
};
use rand::{Rng, SeedableRng};

const HEADS: usize = 2;
const DIM: usize = 16;

/// Plain RoPE (pairs (2i, 2i+1), base 10000) of one head vector at `pos` (may be negative).
fn rope(v: &mut [f32], pos: f64) {
    for i in 0..v.len() / 2 {
        let theta = pos * 10000f64.powf(-2.0 * i as f64 / v.len() as f64);
        let (s, c) = theta.sin_cos();
        let (a, b) = (v[2 * i] as f64, v[2 * i + 1] as f64);
        v[2 * i] = (a * c - b * s) as f32;
        v[2 * i + 1] = (a * s + b * c) as f32;
    }
}

/// Key data of one token at `slot`, in view order for one position: [head][dim].
fn rotated(raw: &[f32], slot: usize) -> Vec<f32> {
    let mut out = raw.to_vec();
    for h in 0..HEADS {
        rope(&mut out[h * DIM..(h + 1) * DIM], slot as f64);
    }
    out
}

#[test]
fn rerotating_shifted_keys_matches_fresh_rotation() {
    let storage = Arc::new(HostStorage::unlimited());
    let shape = KvModelShape {
        layers: 1,
        kv_heads: HEADS,
        head_dim: DIM,
        dtype: KvDtype::F32,
    };
    let policy = FullPolicy::Shift(ContextShift {
        keep_first: 4,
        drop_at_least: 10,
    });
    let mut seq = KvSequence::new(
        Arc::clone(&storage),
        KvConfig::new(shape, 48).unwrap(),
        policy,
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Unrotated keys of the tokens the cache holds, in slot order.
    let mut raw_keys: Vec<Vec<f32>> = Vec::new();
    let mut shifts = 0;
    for _ in 0..100 {
        let raw: Vec<f32> = (0..HEADS * DIM)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let step = seq.begin_step(1).unwrap();
        let buffer = seq.buffer(0, KvPart::Key).unwrap();
        if let Some(report) = step.shift() {
            shifts += 1;
            raw_keys.drain(report.keep_first..report.keep_first + report.dropped);
            // The engine's job: re-rotate the moved keys by -dropped.
            for slot in report.rerotate_slots() {
                let view = seq.config().layout().positions_view(slot, 1);
                let mut k = storage.read_view(buffer, &view).unwrap();
                for h in 0..HEADS {
                    rope(
                        &mut k[h * DIM..(h + 1) * DIM],
                        -(report.position_delta() as f64),
                    );
                }
                storage.write_view(buffer, &view, &k).unwrap();
            }
        }
        // The new token is rotated at its cache slot; data in view order is [head][dim] for one position.
        storage
            .write_view(buffer, &step.write_view(), &rotated(&raw, step.start()))
            .unwrap();
        seq.commit(step).unwrap();
        raw_keys.push(raw);
    }
    assert!(shifts >= 5, "only {shifts} shifts");
    let buffer = seq.buffer(0, KvPart::Key).unwrap();
    for (slot, raw) in raw_keys.iter().enumerate() {
        let view = seq.config().layout().positions_view(slot, 1);
        let got = storage.read_view(buffer, &view).unwrap();
        let want = rotated(raw, slot);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "slot {slot}: {g} vs {w}");
        }
    }
}

/// A shift the caller asks for (`KvSequence::shift`, under a policy that refuses full steps) moves exactly what
/// the policy-driven one would: the positions after the dropped block, down to `keep_first`, every head.
#[test]
fn an_explicit_shift_moves_the_tail_down_and_refuses_bad_requests() {
    let storage = Arc::new(HostStorage::unlimited());
    let shape = KvModelShape {
        layers: 2,
        kv_heads: HEADS,
        head_dim: DIM,
        dtype: KvDtype::F32,
    };
    let mut seq = KvSequence::new(
        Arc::clone(&storage),
        KvConfig::new(shape, 32).unwrap(),
        FullPolicy::Error,
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let step = seq.begin_step(20).unwrap();
    let mut written = Vec::new();
    for layer in 0..2 {
        for part in [KvPart::Key, KvPart::Value] {
            let data: Vec<f32> = (0..20 * HEADS * DIM)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let buffer = seq.buffer(layer, part).unwrap();
            storage
                .write_view(buffer, &step.write_view(), &data)
                .unwrap();
            written.push(data);
        }
    }
    // Refused while a step is open, and outside the sequence; nothing moves.
    assert!(matches!(seq.shift(3, 5), Err(KvError::StepOpen)));
    seq.commit(step).unwrap();
    for (keep, drop) in [(3, 0), (15, 6), (21, 1), (usize::MAX, 1)] {
        let err = seq.shift(keep, drop).unwrap_err();
        assert!(matches!(err, KvError::ShiftOutOfRange { .. }), "{err}");
    }
    assert_eq!(seq.len(), 20);

    let report = seq.shift(3, 5).unwrap();
    assert_eq!((report.keep_first, report.dropped), (3, 5));
    assert_eq!(report.moved_from, 8..20);
    assert_eq!(seq.len(), 15);
    let all = seq.config().layout().positions_view(0, 15);
    let mut i = 0;
    for layer in 0..2 {
        for part in [KvPart::Key, KvPart::Value] {
            let got = storage
                .read_view(seq.buffer(layer, part).unwrap(), &all)
                .unwrap();
            // Data in view order is [head][position][dim].
            for h in 0..HEADS {
                for pos in 0..15 {
                    let from = if pos < 3 { pos } else { pos + 5 };
                    let want = &written[i][(h * 20 + from) * DIM..][..DIM];
                    assert_eq!(
                        &got[(h * 15 + pos) * DIM..][..DIM],
                        want,
                        "layer {layer} head {h} position {pos}"
                    );
                }
            }
            i += 1;
        }
    }
    // The step after a shift writes right behind the moved tail.
    let next = seq.begin_step(1).unwrap();
    assert_eq!(next.start(), 15);
}

#[test]
fn sessions_run_on_separate_threads() {
    let storage = Arc::new(HostStorage::unlimited());
    let shape = KvModelShape {
        layers: 2,
        kv_heads: 1,
        head_dim: 4,
        dtype: KvDtype::F16,
    };
    let config = KvConfig::new(shape, 32).unwrap();
    let seqs: Vec<_> = (0..4)
        .map(|_| KvSequence::new(Arc::clone(&storage), config.clone(), FullPolicy::Error).unwrap())
        .collect();
    std::thread::scope(|scope| {
        for (t, mut seq) in seqs.into_iter().enumerate() {
            let storage = Arc::clone(&storage);
            scope.spawn(move || {
                for _ in 0..=t {
                    let step = seq.begin_step(2).unwrap();
                    let data = vec![t as f32 + 0.5; 2 * 4];
                    for layer in 0..2 {
                        let buffer = seq.buffer(layer, KvPart::Value).unwrap();
                        storage
                            .write_view(buffer, &step.write_view(), &data)
                            .unwrap();
                    }
                    seq.commit(step).unwrap();
                }
                let buffer = seq.buffer(1, KvPart::Value).unwrap();
                let all = storage.read_view(buffer, &seq.committed_view()).unwrap();
                assert_eq!(all, vec![t as f32 + 0.5; 2 * (t + 1) * 4]);
            });
        }
    });
}
