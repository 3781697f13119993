//! Sliding-window attention over ring caches (kvcache's rings of `window + max_chunk - 1` slots): several steps
//! of prefill chunks and decode tokens written through every append path (`qkv_rope_write`, `kv_write` after
//! `rope`, the decode launch's fresh token) and read by every attention kernel, with the ring wrapping many
//! times, context shifts that renumber the ring in place (`RopeShift` over a ring view) and truncations. Each
//! step's output is checked against `fixtures::ops::attention_masked` over the plain (unwrapped) keys and values,
//! and against the same step over a full cache (a second layer of the same sequence).
//!
//! Tolerance: 2e-4 absolute + 2e-3 relative (f32 cache) or 4e-3 + 4e-3 (f16 cache): the keys are rotated on the
//! device in f32 and by the reference in f64, an f16 cache rounds them after that (one ulp, 1e-3 relative, where
//! the two differ near a rounding boundary), and a context shift turns them once more.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use clkernels::kernels::attention::{
    Attention, AttentionScores, AttentionShape, AttentionWalk, FreshToken,
};
use clkernels::kernels::rope::{HeadsLayout, Rope, RopeConfig, RopeShift, RopeStyle};
use clkernels::kernels::vector_width::VectorWidth;
use clkernels::kv_storage::ClKvStorage;
use common::*;
use fixtures::ops;
use half::f16;
use kvcache::{FullPolicy, KvConfig, KvDtype, KvModelShape, KvPart, KvRings, KvSequence};
use rand::Rng;

/// The plain keys (rotated at their current positions) and values of the sequence, `[kv_head][position][dim]`
/// as lists per position.
struct Plain {
    raw_k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Plain {
    /// Keys and values of every position as the cache holds them (rotated, rounded to the cache's type).
    fn arrays(
        &self,
        kv_heads: usize,
        head_dim: usize,
        rope: RopeConfig,
        dtype: KvDtype,
    ) -> (Vec<f32>, Vec<f32>) {
        let ctx = self.raw_k.len();
        let round = |x: f32| match dtype {
            KvDtype::F16 => f16::from_f32(x).to_f32(),
            KvDtype::F32 => x,
        };
        let (mut k, mut v) = (
            vec![0.0; kv_heads * ctx * head_dim],
            vec![0.0; kv_heads * ctx * head_dim],
        );
        for p in 0..ctx {
            let mut kp = self.raw_k[p].clone();
            ops::rope(&mut kp, kv_heads, ref_rope(rope), p);
            for h in 0..kv_heads {
                for d in 0..head_dim {
                    k[(h * ctx + p) * head_dim + d] = round(kp[h * head_dim + d]);
                    v[(h * ctx + p) * head_dim + d] = round(self.v[p][h * head_dim + d]);
                }
            }
        }
        (k, v)
    }
}

fn ref_rope(r: RopeConfig) -> ops::RopeParams {
    ops::RopeParams {
        head_dim: r.head_dim,
        rotary_dim: r.rotary_dim,
        rope_theta: r.theta,
        style: match r.style {
            RopeStyle::Interleaved => ops::RopeStyle::Interleaved,
            RopeStyle::HalfSplit => ops::RopeStyle::HalfSplit,
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: usize,
    max_chunk: usize,
    dtype: KvDtype,
    walk: AttentionWalk,
}

fn run_case(gpu: &clkernels::runtime::Gpu, case: Case, label: &str) {
    let mut rng = rng(label);
    let Case {
        heads,
        kv_heads,
        head_dim,
        window,
        max_chunk,
        dtype,
        walk,
    } = case;
    let capacity = window + max_chunk - 1;
    // Long enough for the ring to wrap several times.
    let max_ctx = 4 * capacity + 9;
    let shape = KvModelShape {
        layers: 2,
        kv_heads,
        head_dim,
        dtype,
    };
    let config = KvConfig::new(shape, max_ctx)
        .unwrap()
        .with_rings(KvRings {
            window,
            max_chunk,
            local_layers: vec![true, false],
        })
        .unwrap();
    assert!(config.is_ring(0) && !config.is_ring(1));
    let storage = Arc::new(ClKvStorage::new(gpu));
    let mut seq = KvSequence::new(storage, config, FullPolicy::Error).unwrap();
    // Poison both caches: a slot read before it is written shows up as NaN.
    for layer in 0..2 {
        let all = seq.config().layer_layout(layer);
        let view = all.positions_view(0, all.max_ctx);
        let nan: Vec<u8> = match dtype {
            KvDtype::F16 => f16::NAN.to_le_bytes().repeat(view.elems() as usize),
            KvDtype::F32 => f32::NAN.to_le_bytes().repeat(view.elems() as usize),
        };
        for part in KvPart::BOTH {
            let buffer = seq.buffer(layer, part).unwrap();
            seq.storage().write_views(&[(buffer, view)], &nan).unwrap();
        }
    }
    // The Mali kernel is built only on Malis (or under their profiles): build it here to run it on any device.
    let mut att = if walk == AttentionWalk::Mali {
        Attention::with_mali_width(gpu, VectorWidth::DEFAULT, &[])
    } else {
        Attention::new(gpu)
    }
    .unwrap();
    att.set_walk(walk);
    let rope_k = Rope::new(gpu).unwrap();
    let shift = RopeShift::new(gpu, dtype).unwrap();
    let rope = RopeConfig {
        head_dim,
        rotary_dim: if rng.random_bool(0.5) {
            head_dim
        } else {
            (head_dim / 2) & !1
        },
        theta: 10000.0,
        style: if rng.random_bool(0.5) {
            RopeStyle::HalfSplit
        } else {
            RopeStyle::Interleaved
        },
    };
    let scores = AttentionScores {
        scale: 1.0 / (head_dim as f32).sqrt(),
        softcap: if rng.random_bool(0.3) {
            Some(5.0)
        } else {
            None
        },
        window: Some(window),
    };
    let mut plain = Plain {
        raw_k: Vec::new(),
        v: Vec::new(),
    };
    let width = (heads + 2 * kv_heads) * head_dim;
    let mut fills = 0;
    let steps = if small_shapes() { 30 } else { 60 };
    for step_no in 0..steps {
        let past = seq.len();
        // Now and then a context shift or a truncation, where the rings allow them; a shift (or a clear) when the
        // cache is full.
        let full = past + max_chunk > max_ctx;
        fills += usize::from(full);
        if full || (past > 2 && rng.random_bool(0.1)) {
            let keep = rng.random_range(0..=past / 4);
            let most = seq.max_shift_drop(keep);
            let drop = if full {
                most
            } else {
                most.min(rng.random_range(1..=past - keep))
            };
            if drop >= 1 {
                let report = seq.shift(keep, drop).unwrap();
                let delta = -(drop as i64);
                let full = seq.layer_view(
                    1,
                    report.rerotate_slots().start,
                    report.rerotate_slots().len(),
                );
                let ring =
                    seq.layer_view(0, report.ring_rerotate.start, report.ring_rerotate.len());
                for (layer, view) in [(1, full), (0, ring)] {
                    let keys = seq.buffer(layer, KvPart::Key).unwrap();
                    shift
                        .enqueue(keys.operand(view), rope, None, delta)
                        .unwrap();
                }
                plain.raw_k.drain(keep..keep + drop);
                plain.v.drain(keep..keep + drop);
                continue;
            }
            if full {
                seq.clear().unwrap();
                plain.raw_k.clear();
                plain.v.clear();
                continue;
            }
        }
        if past > 1 && rng.random_bool(0.08) {
            let to = rng.random_range(1..past);
            if seq.can_truncate(to) {
                seq.truncate(to).unwrap();
                plain.raw_k.truncate(to);
                plain.v.truncate(to);
                continue;
            }
        }
        let n = rng.random_range(1..=max_chunk);
        let qkv = normal(&mut rng, n * width, 1.0);
        let q_l = HeadsLayout {
            offset: 0,
            token_stride: width,
            heads,
            seq: n,
        };
        let k_l = HeadsLayout {
            offset: heads * head_dim,
            heads: kv_heads,
            ..q_l
        };
        let v_l = HeadsLayout {
            offset: (heads + kv_heads) * head_dim,
            ..k_l
        };
        // The plain model: raw keys and values of the new tokens, and the rotated queries.
        let mut q_ref = Vec::new();
        for t in 0..n {
            let row = &qkv[t * width..(t + 1) * width];
            q_ref.extend_from_slice(&row[..heads * head_dim]);
            plain
                .raw_k
                .push(row[heads * head_dim..(heads + kv_heads) * head_dim].to_vec());
            plain.v.push(row[(heads + kv_heads) * head_dim..].to_vec());
        }
        ops::rope(&mut q_ref, heads, ref_rope(rope), past);
        let (k_ref, v_ref) = plain.arrays(kv_heads, head_dim, rope, dtype);
        let ctx = plain.raw_k.len();
        let a_shape = AttentionShape {
            seq: n,
            past,
            heads,
            kv_heads,
            head_dim,
        };
        let want = ops::attention_masked(
            &q_ref,
            &k_ref,
            &v_ref,
            ctx,
            ops::AttentionShape {
                seq: n,
                past,
                heads,
                kv_heads,
                head_dim,
            },
            ops::ScoreOptions {
                scale: scores.scale,
                softcap: scores.softcap,
                window: scores.window,
            },
        );
        let step = seq.begin_step(n).unwrap();
        let path = if n == 1 && rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(1..3)
        };
        for layer in 0..2 {
            let (kb, vb) = (
                seq.buffer(layer, KvPart::Key).unwrap(),
                seq.buffer(layer, KvPart::Value).unwrap(),
            );
            let (write, read) = (step.layer_write_view(layer), step.layer_read_view(layer));
            let mut buf = upload(gpu, &qkv);
            let mut out = poisoned(gpu, n * heads * head_dim);
            let fresh = match path {
                0 => Some(FreshToken {
                    k: k_l,
                    v: v_l,
                    rope,
                }),
                1 => {
                    att.enqueue_qkv_rope_write(
                        &mut buf,
                        q_l,
                        k_l,
                        v_l,
                        kb.operand(write),
                        vb.operand(write),
                        rope,
                        past,
                    )
                    .unwrap();
                    None
                }
                _ => {
                    rope_k.enqueue(&mut buf, q_l, rope, past).unwrap();
                    att.enqueue_kv_write(&buf, k_l, kb.operand(write), Some(rope), past)
                        .unwrap();
                    att.enqueue_kv_write(&buf, v_l, vb.operand(write), None, past)
                        .unwrap();
                    None
                }
            };
            att.enqueue_with_fresh(
                &buf,
                q_l,
                fresh,
                kb.operand(read),
                vb.operand(read),
                a_shape,
                scores,
                &mut out,
            )
            .unwrap();
            let (atol, rtol) = match dtype {
                KvDtype::F32 => (2e-4, 2e-3),
                KvDtype::F16 => (4e-3, 4e-3),
            };
            let what = format!(
                "{label} step {step_no} layer {layer} (ring {}) path {path} past {past} n {n} plan {:?}",
                layer == 0,
                att.plan(&a_shape, &read, scores.window)
            );
            assert_close(&what, &out.read(gpu).unwrap(), &want, atol, rtol);
        }
        seq.commit(step).unwrap();
    }
    assert!(
        seq.stats().steps_committed > 20,
        "{label}: too few steps ran"
    );
    let stats = seq.stats();
    assert!(
        stats.positions_committed > capacity as u64,
        "{label}: the ring never wrapped"
    );
    assert!(
        fills == 0 || stats.shifts > 0,
        "{label}: the cache filled but no context shift ran"
    );
}

#[test]
fn ring_attention_matches_the_plain_reference_through_wraps_shifts_and_truncations() {
    let gpu = gpu();
    let small = small_shapes();
    let mut rng = rng("ring cases");
    let walks = [
        AttentionWalk::Positions,
        AttentionWalk::Rows,
        AttentionWalk::WideRows,
        AttentionWalk::Auto,
        AttentionWalk::Mali,
    ];
    // Windows of 1, short and long against the chunks; head sizes the row kernels take (64) and do not (36).
    let windows: &[usize] = if small { &[1, 5] } else { &[1, 3, 7, 40] };
    let mut n = 0;
    for &window in windows {
        for &head_dim in &[64usize, 36] {
            for dtype in [KvDtype::F32, KvDtype::F16] {
                let case = Case {
                    heads: 4,
                    kv_heads: if rng.random_bool(0.5) { 2 } else { 1 },
                    head_dim,
                    window,
                    max_chunk: rng.random_range(1..6),
                    dtype,
                    walk: walks[n % walks.len()],
                };
                n += 1;
                run_case(&gpu, case, &format!("{case:?}"));
            }
        }
    }
}
