//! Attention (prefill and split-K decode), the in-place K/V append, and the OpenCL kvcache backend, against
//! `fixtures::ops::attention_causal` (and `attention_masked` for Gemma's sliding window and soft-capped scores).
//!
//! Tolerance: 2e-5 absolute + 1e-4 relative on outputs of magnitude ~1 (softmax weights and value sums in f32 in a
//! different order; with an f16 cache the reference reads the same f16-rounded K/V, so rounding is shared).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use clkernels::kernels::attention::{
    Attention, AttentionKernel, AttentionScores, AttentionShape, AttentionWalk, FreshToken,
    KvOperand, SplitPolicy,
};
use clkernels::kernels::rope::{HeadsLayout, Rope, RopeConfig, RopeStyle};
use clkernels::kv_storage::{operand, ClKvStorage};
use clkernels::runtime::{DeviceBuffer, Gpu};
use common::*;
use fixtures::ops;
use half::f16;
use kvcache::{
    FullPolicy, KvConfig, KvDtype, KvLayout, KvModelShape, KvPart, KvSequence, KvStorage, KvView,
};

fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

fn run_direct(
    gpu: &Gpu,
    att: &Attention,
    shape: AttentionShape,
    ctx: usize,
    dtype: KvDtype,
    label: &str,
) {
    let scores = AttentionScores::scaled(1.0 / (shape.head_dim as f32).sqrt());
    run_scored(gpu, att, shape, ctx, dtype, scores, label);
}

/// As [`run_direct`], with `scores` (a sliding window, soft-capping) instead of plain scaled scores.
fn run_scored(
    gpu: &Gpu,
    att: &Attention,
    shape: AttentionShape,
    ctx: usize,
    dtype: KvDtype,
    scores: AttentionScores,
    label: &str,
) {
    let mut rng = rng(label);
    let AttentionShape {
        seq,
        past,
        heads,
        kv_heads,
        head_dim,
    } = shape;
    let q = normal(&mut rng, seq * heads * head_dim, 1.0);
    let mut k = normal(&mut rng, kv_heads * ctx * head_dim, 1.0);
    let mut v = normal(&mut rng, kv_heads * ctx * head_dim, 1.0);
    let layout = KvLayout {
        kv_heads,
        max_ctx: ctx,
        head_dim,
        dtype,
    };
    let view = layout.positions_view(0, past + seq);
    let mut out = poisoned(gpu, seq * heads * head_dim);
    let qd = upload(gpu, &q);
    let ql = HeadsLayout {
        offset: 0,
        token_stride: heads * head_dim,
        heads,
        seq,
    };
    match dtype {
        KvDtype::F32 => {
            let (kd, vd) = (upload(gpu, &k), upload(gpu, &v));
            let (ko, vo) = (
                KvOperand::from_device_buffer(&kd, view),
                KvOperand::from_device_buffer(&vd, view),
            );
            att.enqueue_with_fresh(&qd, ql, None, ko, vo, shape, scores, &mut out)
                .unwrap();
        }
        KvDtype::F16 => {
            k = round_f16(&k);
            v = round_f16(&v);
            let to16 = |x: &[f32]| -> Vec<f16> { x.iter().map(|&a| f16::from_f32(a)).collect() };
            let (kd, vd) = (upload(gpu, &to16(&k)), upload(gpu, &to16(&v)));
            let (ko, vo) = (
                KvOperand::from_device_buffer(&kd, view),
                KvOperand::from_device_buffer(&vd, view),
            );
            att.enqueue_with_fresh(&qd, ql, None, ko, vo, shape, scores, &mut out)
                .unwrap();
        }
    }
    let want = ops::attention_masked(
        &q,
        &k,
        &v,
        ctx,
        ops::AttentionShape {
            seq,
            past,
            heads,
            kv_heads,
            head_dim,
        },
        ref_scores(scores),
    );
    let what = format!("{label} {:?}", att.plan(&shape, &view, scores.window));
    assert_close(&what, &out.read(gpu).unwrap(), &want, 2e-5, 1e-4);
}

/// The reference's form of the same score options.
fn ref_scores(s: AttentionScores) -> ops::ScoreOptions {
    ops::ScoreOptions {
        scale: s.scale,
        softcap: s.softcap,
        window: s.window,
    }
}

#[test]
fn prefill_attention_matches_reference() {
    let gpu = gpu();
    // Auto takes attn_partial for prefill; Rows and WideRows force attn_rows where the layout allows.
    for walk in [
        AttentionWalk::Auto,
        AttentionWalk::Rows,
        AttentionWalk::WideRows,
    ] {
        let mut att = Attention::new(&gpu).unwrap();
        att.set_walk(walk);
        prefill_cases(&gpu, &att);
    }
}

fn prefill_cases(gpu: &Gpu, att: &Attention) {
    let s = |seq, past, heads, kv_heads, head_dim| AttentionShape {
        seq,
        past,
        heads,
        kv_heads,
        head_dim,
    };
    run_direct(
        gpu,
        att,
        s(37, 0, 4, 2, 64),
        50,
        KvDtype::F32,
        "prefill f32 gqa",
    );
    run_direct(
        gpu,
        att,
        s(70, 20, 2, 1, 48),
        100,
        KvDtype::F16,
        "prefill f16 after past",
    );
    run_direct(
        gpu,
        att,
        s(9, 0, 3, 3, 80),
        9,
        KvDtype::F32,
        "prefill mha odd head_dim",
    );
    // head_dim not a multiple of 8: the scalar key-dot path.
    run_direct(
        gpu,
        att,
        s(11, 5, 2, 1, 36),
        20,
        KvDtype::F16,
        "prefill head_dim 36",
    );
    // A short prefill chunk with few heads over a longer past is split across the context too (as the last
    // prefill chunk is on a GPU with many compute units), so several tokens merge their splits in one launch;
    // head_dim 128 and 256 take the row-vector value path with 4 and 2 groups of work-items.
    let chunk = s(3, 90, 2, 1, 128);
    if gpu.caps().compute_units >= 2 {
        assert!(
            att.splits(&chunk) > 1,
            "3 tokens x 2 heads over 93 positions should split"
        );
    }
    run_direct(gpu, att, chunk, 100, KvDtype::F16, "prefill chunk split");
    run_direct(
        gpu,
        att,
        s(2, 40, 1, 1, 256),
        50,
        KvDtype::F32,
        "prefill head_dim 256",
    );
}

#[test]
fn decode_attention_splits_long_contexts_and_matches_reference() {
    let gpu = gpu();
    let view = |ctx| {
        KvLayout {
            kv_heads: 2,
            max_ctx: ctx,
            head_dim: 64,
            dtype: KvDtype::F32,
        }
        .positions_view(0, ctx)
    };
    let decode = |past| AttentionShape {
        seq: 1,
        past,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
    };
    // Auto: one wide work-group per head (where the device runs it) while the context is one block of it (512
    // positions at head_dim 64), else split attn_rows at about four groups per compute unit; attn_partial for
    // layouts attn_rows cannot read (head_dim 36 here). Every kernel runs every case below.
    let kernel = |att: &Attention, past| att.plan(&decode(past), &view(past + 1), None).kernel;
    let mut auto = Attention::new(&gpu).unwrap();
    auto.set_walk(AttentionWalk::Auto); // a CPU device defaults to Positions
    let short = if auto.has_wide() {
        AttentionKernel::WideRows
    } else {
        AttentionKernel::Rows
    };
    assert_eq!(kernel(&auto, 40), short);
    assert_eq!(kernel(&auto, 100_000), AttentionKernel::Rows);
    let units = gpu.caps().compute_units.max(1) as usize;
    let long_plan = auto.plan(&decode(100_000), &view(100_001), None);
    // 4 heads: split until about 4 groups per compute unit (one split per head would already be enough on a
    // device with a single unit).
    assert!(
        long_plan.splits * 4 <= (4 * units).max(4),
        "{long_plan:?} on {units} units"
    );
    assert!(
        long_plan.splits * 2 >= units,
        "{long_plan:?} on {units} units"
    );
    let odd = AttentionShape {
        head_dim: 36,
        ..decode(700)
    };
    let odd_view = KvLayout {
        kv_heads: 2,
        max_ctx: 701,
        head_dim: 36,
        dtype: KvDtype::F32,
    }
    .positions_view(0, 701);
    assert_eq!(
        auto.plan(&odd, &odd_view, None).kernel,
        AttentionKernel::Positions
    );
    // However many work-groups the policy asks for, splits stay within what the merge holds.
    let mut greedy = Attention::new(&gpu).unwrap();
    greedy.set_split_policy(SplitPolicy {
        groups_per_unit: 100_000,
        min_chunk: 1,
    });
    let long = decode(100_000);
    assert!(
        (2..=256).contains(&greedy.splits(&long)),
        "{}",
        greedy.splits(&long)
    );
    for (walk, want) in [
        (AttentionWalk::Rows, AttentionKernel::Rows),
        (AttentionWalk::WideRows, short),
        (AttentionWalk::Positions, AttentionKernel::Positions),
    ] {
        let mut att = Attention::new(&gpu).unwrap();
        att.set_walk(walk);
        assert_eq!(kernel(&att, 700), want);
        decode_cases(&gpu, &att, walk);
    }
}

fn decode_cases(gpu: &Gpu, att: &Attention, walk: AttentionWalk) {
    let s = |seq, past, heads, kv_heads, head_dim| AttentionShape {
        seq,
        past,
        heads,
        kv_heads,
        head_dim,
    };
    let long = s(1, 700, 4, 2, 64);
    assert!(
        att.splits(&long) > 1,
        "a 701-position decode should use several splits"
    );
    run_direct(gpu, att, long, 800, KvDtype::F32, "decode f32 long");
    // A short context with few heads is split too (into chunks of at least 32 positions) so that more work-groups
    // run; the last split is partial.
    let short = s(1, 100, 2, 1, 64);
    assert!(
        att.splits(&short) > 1,
        "a 101-position decode over 2 heads should use several splits"
    );
    run_direct(gpu, att, short, 128, KvDtype::F16, "decode f16 short split");
    run_direct(
        gpu,
        att,
        s(1, 1000, 8, 1, 128),
        1024,
        KvDtype::F16,
        "decode f16 long mqa",
    );
    run_direct(
        gpu,
        att,
        s(1, 0, 2, 2, 32),
        4,
        KvDtype::F32,
        "decode first token",
    );
    run_direct(
        gpu,
        att,
        s(2, 300, 2, 1, 64),
        310,
        KvDtype::F32,
        "two-token verify step",
    );
    // More splits than the merge loads at once (a large device's policy, forced here), so the merge walks them
    // in batches; and a policy of few splits.
    for (groups_per_unit, label) in [(64, "decode many splits"), (1, "decode few splits")] {
        let mut tuned = Attention::new(gpu).unwrap();
        tuned.set_walk(walk);
        tuned.set_split_policy(SplitPolicy {
            groups_per_unit,
            min_chunk: 32,
        });
        let shape = s(1, 700, 2, 1, 64);
        if groups_per_unit > 1 {
            assert!(
                tuned.splits(&shape) > 8,
                "{label}: {}",
                tuned.splits(&shape)
            );
        }
        run_direct(gpu, &tuned, shape, 704, KvDtype::F16, label);
    }
}

/// A whole prefill + decode through kvcache on the OpenCL backend: K is rotated and written in place by
/// `kv_write`, V written as is, attention reads the cache views (sub-buffers or offsets), no copies.
#[test]
fn kvcache_steps_write_in_place_and_attend_like_the_reference() {
    let steps = [13, 1, 1, 7, 1];
    kvcache_steps(
        "kvcache steps",
        (4, 2, 32, 32),
        RopeStyle::HalfSplit,
        64,
        &steps,
        false,
        Variant::plain(AttentionWalk::Auto),
    );
}

/// Decode steps through `enqueue_with_fresh` (q and k rotated, K/V written to the cache, all in the attention
/// launch) agree with the reference, and the cache they leave behind is what the separate launches would write:
/// later steps read it, and it is compared at the end. Covers grouped heads, partial rotary with the interleaved
/// pairing, a head size off the 8-element load path (36), a context long enough to split (past 300), and no rotary
/// at all (rotary_dim 0, SmolLM3's NoPE layers), on each kernel.
#[test]
fn fresh_token_attention_rotates_writes_and_attends_like_the_reference() {
    let steps = [13, 1, 1, 5, 1];
    kvcache_steps(
        "fresh",
        (4, 2, 32, 32),
        RopeStyle::HalfSplit,
        64,
        &steps,
        true,
        Variant::plain(AttentionWalk::Auto),
    );
    // The same through attn_partial (head_dim 32 takes the wide attn_rows by default).
    kvcache_steps(
        "fresh positions",
        (4, 2, 32, 32),
        RopeStyle::HalfSplit,
        64,
        &steps,
        true,
        Variant::plain(AttentionWalk::Positions),
    );
    kvcache_steps(
        "fresh partial",
        (6, 2, 36, 16),
        RopeStyle::Interleaved,
        64,
        &steps,
        true,
        Variant::plain(AttentionWalk::Auto),
    );
    kvcache_steps(
        "fresh long split rows",
        (4, 1, 32, 32),
        RopeStyle::HalfSplit,
        320,
        &[300, 1, 1],
        true,
        Variant::plain(AttentionWalk::Rows),
    ); // rotary_dim 0 (SmolLM3's layers without rotary): q and the new key pass through unrotated, on both walks.
    for walk in [AttentionWalk::Auto, AttentionWalk::Positions] {
        kvcache_steps(
            "fresh without rotary",
            (4, 2, 32, 0),
            RopeStyle::Interleaved,
            64,
            &steps,
            true,
            Variant::plain(walk),
        );
    }
}

/// Which kernel walks the context, and the score options of [`AttentionScores`] beyond the scale.
#[derive(Debug, Clone, Copy)]
struct Variant {
    walk: AttentionWalk,
    window: Option<usize>,
    softcap: Option<f32>,
}

impl Variant {
    fn plain(walk: AttentionWalk) -> Self {
        Self {
            walk,
            window: None,
            softcap: None,
        }
    }
}

/// Sliding windows (Gemma's local layers) shorter and longer than the context, and soft-capped scores, on every
/// kernel: prefill (each token its own window), split decode (splits wholly before the window see nothing and
/// must weigh nothing in the merge), and fresh-token decode through the cache.
#[test]
fn sliding_window_and_soft_capped_scores_match_reference() {
    let gpu = gpu();
    let s = |seq, past, heads, kv_heads, head_dim| AttentionShape {
        seq,
        past,
        heads,
        kv_heads,
        head_dim,
    };
    let scored = |shape: AttentionShape, window, softcap| AttentionScores {
        scale: 1.0 / (shape.head_dim as f32).sqrt(),
        softcap,
        window,
    };
    for walk in [
        AttentionWalk::Auto,
        AttentionWalk::Rows,
        AttentionWalk::WideRows,
        AttentionWalk::Positions,
    ] {
        let mut att = Attention::new(&gpu).unwrap();
        att.set_walk(walk);
        let cases = [
            // Prefill: windows shorter than the chunk, of one position, longer than the context.
            (s(37, 0, 4, 2, 64), 50, Some(5), None, "prefill window 5"),
            (
                s(20, 12, 2, 1, 64),
                40,
                Some(1),
                Some(1.5),
                "prefill window 1 capped",
            ),
            (
                s(11, 5, 2, 1, 36),
                20,
                Some(8),
                Some(1.5),
                "prefill head_dim 36 window 8",
            ),
            (
                s(9, 3, 2, 2, 32),
                16,
                Some(1000),
                None,
                "prefill window beyond context",
            ),
            (
                s(3, 90, 2, 1, 128),
                100,
                Some(20),
                Some(2.0),
                "prefill chunk split window",
            ),
            (
                s(12, 0, 4, 2, 64),
                16,
                None,
                Some(1.0),
                "prefill capped only",
            ),
            // Decode: a long split context whose early splits lie before the window, a window inside the last
            // split, one longer than the context, and a plain one with capped scores.
            (
                s(1, 700, 4, 2, 64),
                800,
                Some(100),
                None,
                "decode window 100 of 701",
            ),
            (
                s(1, 700, 4, 2, 64),
                704,
                Some(3),
                Some(1.5),
                "decode window 3 capped",
            ),
            (
                s(1, 100, 2, 1, 64),
                128,
                Some(4096),
                None,
                "decode window beyond context",
            ),
            (
                s(1, 300, 8, 1, 128),
                320,
                None,
                Some(1.0),
                "decode capped only",
            ),
        ];
        for (shape, ctx, window, softcap, label) in cases {
            for dtype in [KvDtype::F32, KvDtype::F16] {
                let what = format!("{label} {walk:?} {dtype}");
                run_scored(
                    &gpu,
                    &att,
                    shape,
                    ctx,
                    dtype,
                    scored(shape, window, softcap),
                    &what,
                );
            }
        }
    }
    for (walk, window) in [
        (AttentionWalk::Auto, 4),
        (AttentionWalk::Positions, 6),
        (AttentionWalk::Rows, 1),
    ] {
        let variant = Variant {
            walk,
            window: Some(window),
            softcap: Some(2.0),
        };
        let label = format!("fresh window {window} {walk:?}");
        kvcache_steps(
            &label,
            (4, 2, 32, 32),
            RopeStyle::HalfSplit,
            64,
            &[13, 1, 1, 5, 1],
            true,
            variant,
        );
    }
    let long = Variant {
        walk: AttentionWalk::Rows,
        window: Some(50),
        softcap: None,
    };
    kvcache_steps(
        "fresh long split window",
        (4, 1, 32, 32),
        RopeStyle::HalfSplit,
        320,
        &[300, 1, 1],
        true,
        long,
    );
}

/// Steps of `steps` tokens through one layer's cache; with `fresh_decode`, one-token steps use
/// `Attention::enqueue_with_fresh` instead of rope + `kv_write` + `enqueue`.
fn kvcache_steps(
    label: &str,
    (heads, kv_heads, head_dim, rotary_dim): (usize, usize, usize, usize),
    style: RopeStyle,
    max_ctx: usize,
    steps: &[usize],
    fresh_decode: bool,
    variant: Variant,
) {
    let gpu = gpu();
    let mut rng = rng(label);
    let mut att = Attention::new(&gpu).unwrap();
    att.set_walk(variant.walk);
    let rope = Rope::new(&gpu).unwrap();
    let cfg = RopeConfig {
        head_dim,
        rotary_dim,
        theta: 10000.0,
        style,
    };
    let ref_rope = ops::RopeParams {
        head_dim,
        rotary_dim,
        rope_theta: 10000.0,
        style: match style {
            RopeStyle::HalfSplit => ops::RopeStyle::HalfSplit,
            RopeStyle::Interleaved => ops::RopeStyle::Interleaved,
        },
    };
    for dtype in [KvDtype::F32, KvDtype::F16] {
        let storage = Arc::new(ClKvStorage::new(&gpu));
        let shape = KvModelShape {
            layers: 1,
            kv_heads,
            head_dim,
            dtype,
        };
        let mut seq_cache = KvSequence::new(
            storage.clone(),
            KvConfig::new(shape, max_ctx).unwrap(),
            FullPolicy::Error,
        )
        .unwrap();
        // Reference cache, [kv_head][max_ctx][head_dim], as the kernels should leave it.
        let mut ref_k = vec![0.0f32; kv_heads * max_ctx * head_dim];
        let mut ref_v = ref_k.clone();
        for &n in steps {
            let step = seq_cache.begin_step(n).unwrap();
            let past = step.start();
            // Fused QKV activations [n][(heads + 2 kv_heads) * head_dim].
            let stride = (heads + 2 * kv_heads) * head_dim;
            let qkv = normal(&mut rng, n * stride, 1.0);
            let mut qkv_d = upload(&gpu, &qkv);
            let ql = HeadsLayout {
                offset: 0,
                token_stride: stride,
                heads,
                seq: n,
            };
            let fresh = fresh_decode && n == 1;
            if !fresh {
                rope.enqueue(&mut qkv_d, ql, cfg, past).unwrap();
            }
            let kl = HeadsLayout {
                offset: heads * head_dim,
                token_stride: stride,
                heads: kv_heads,
                seq: n,
            };
            let vl = HeadsLayout {
                offset: (heads + kv_heads) * head_dim,
                ..kl
            };
            if !fresh {
                let wv = step.write_view();
                let kb = seq_cache.bind(0, KvPart::Key, &wv).unwrap();
                att.enqueue_kv_write(&qkv_d, kl, operand(&kb).unwrap(), Some(cfg), past)
                    .unwrap();
                let vb = seq_cache.bind(0, KvPart::Value, &wv).unwrap();
                att.enqueue_kv_write(&qkv_d, vl, operand(&vb).unwrap(), None, past)
                    .unwrap();
            }

            // Reference: rotate q and k on the host, store k and v (rounded like the cache).
            let mut q_ref = Vec::new();
            for t in 0..n {
                let row = &qkv[t * stride..(t + 1) * stride];
                let mut q = row[..heads * head_dim].to_vec();
                ops::rope(&mut q, heads, ref_rope, past + t);
                q_ref.extend(q);
                let mut k = row[heads * head_dim..(heads + kv_heads) * head_dim].to_vec();
                ops::rope(&mut k, kv_heads, ref_rope, past + t);
                let v = &row[(heads + kv_heads) * head_dim..];
                for h in 0..kv_heads {
                    let at = (h * max_ctx + past + t) * head_dim;
                    let (ks, vs) = (
                        &k[h * head_dim..][..head_dim],
                        &v[h * head_dim..][..head_dim],
                    );
                    let (ks, vs) = match dtype {
                        KvDtype::F16 => (round_f16(ks), round_f16(vs)),
                        KvDtype::F32 => (ks.to_vec(), vs.to_vec()),
                    };
                    ref_k[at..at + head_dim].copy_from_slice(&ks);
                    ref_v[at..at + head_dim].copy_from_slice(&vs);
                }
            }

            let rv = step.read_view();
            let (kr, vr) = (
                seq_cache.bind(0, KvPart::Key, &rv).unwrap(),
                seq_cache.bind(0, KvPart::Value, &rv).unwrap(),
            );
            let shape = AttentionShape {
                seq: n,
                past,
                heads,
                kv_heads,
                head_dim,
            };
            let mut out = poisoned(&gpu, n * heads * head_dim);
            let scores = AttentionScores {
                scale: 1.0 / (head_dim as f32).sqrt(),
                softcap: variant.softcap,
                window: variant.window,
            };
            let (ko, vo) = (operand(&kr).unwrap(), operand(&vr).unwrap());
            if fresh {
                let token = FreshToken {
                    k: kl,
                    v: vl,
                    rope: cfg,
                };
                att.enqueue_with_fresh(&qkv_d, ql, Some(token), ko, vo, shape, scores, &mut out)
                    .unwrap();
            } else {
                att.enqueue_with_fresh(&qkv_d, ql, None, ko, vo, shape, scores, &mut out)
                    .unwrap();
            }
            let ashape = ops::AttentionShape {
                seq: n,
                past,
                heads,
                kv_heads,
                head_dim,
            };
            let want =
                ops::attention_masked(&q_ref, &ref_k, &ref_v, max_ctx, ashape, ref_scores(scores));
            // With an f16 cache, the device rotates k in f32 and the reference in f64 before both round to f16:
            // where the two land on either side of a rounding boundary, a key or value differs by one f16 ulp
            // (~1e-3 relative), which moves outputs by up to ~1e-4.
            let (abs, rel) = match dtype {
                KvDtype::F32 => (3e-5, 1e-4),
                KvDtype::F16 => (2e-4, 1e-3),
            };
            assert_close(
                &format!("{label} {dtype} step at {past} (+{n})"),
                &out.read(&gpu).unwrap(),
                &want,
                abs,
                rel,
            );
            seq_cache.commit(step).unwrap();
        }
        // The cache holds exactly the rotated K written in place (valid positions only).
        let len = seq_cache.len();
        let bytes = storage
            .read_bytes(seq_cache.buffer(0, KvPart::Key).unwrap())
            .unwrap();
        let got: Vec<f32> = match dtype {
            KvDtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            KvDtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        };
        for h in 0..kv_heads {
            let at = h * max_ctx * head_dim;
            let n = len * head_dim;
            assert_close(
                &format!("{label} {dtype} cache K head {h}"),
                &got[at..at + n],
                &ref_k[at..at + n],
                2e-5,
                1e-3,
            );
        }
        assert!(storage.limits().sub_region_align_bytes >= 1);
    }
}

#[test]
fn attention_refuses_views_that_do_not_cover_the_context() {
    let gpu = gpu();
    let att = Attention::new(&gpu).unwrap();
    let layout = KvLayout {
        kv_heads: 1,
        max_ctx: 8,
        head_dim: 16,
        dtype: KvDtype::F32,
    };
    let kv: DeviceBuffer<f32> = upload(&gpu, &vec![0.5; 8 * 16]);
    let short = layout.positions_view(0, 3);
    let q = upload(&gpu, &[0.25f32; 16]);
    let mut out = poisoned(&gpu, 16);
    let shape = AttentionShape {
        seq: 1,
        past: 3,
        heads: 1,
        kv_heads: 1,
        head_dim: 16,
    };
    let ql = HeadsLayout {
        offset: 0,
        token_stride: 16,
        heads: 1,
        seq: 1,
    };
    let op = KvOperand::from_device_buffer(&kv, short);
    let err = att
        .enqueue(&q, ql, op, op, shape, 0.25, &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("cover 4 positions"), "{err}");
    let big = AttentionShape {
        head_dim: 512,
        ..shape
    };
    assert!(att.enqueue(&q, ql, op, op, big, 0.25, &mut out).is_err());
}

/// `qkv_rope_write` (q rotated in place, K rotated and V copied into the cache, one launch) against the host
/// rotary on both pairing styles, a partial rotary dimension and both cache element types. Cache slots outside the
/// write view must keep their poison, and the K and V parts of the QKV buffer must be left as they were.
/// Tolerance: 2e-5 absolute + 1e-4 relative (f32 sincos at small positions; f16 caches compare with the rounded
/// reference, as in the kv_write test).
#[test]
fn fused_rope_and_kv_write_matches_host_rotary_and_leaves_the_rest() {
    let gpu = gpu();
    let mut rng = rng("fused rope write");
    let att = Attention::new(&gpu).unwrap();
    let (heads, kv_heads, max_ctx) = (6, 2, 16);
    for (dtype, style, ref_style, head_dim, rotary_dim, n, past) in [
        (
            KvDtype::F32,
            RopeStyle::HalfSplit,
            ops::RopeStyle::HalfSplit,
            24,
            24,
            3,
            5,
        ),
        (
            KvDtype::F16,
            RopeStyle::Interleaved,
            ops::RopeStyle::Interleaved,
            20,
            12,
            1,
            9,
        ),
        (
            KvDtype::F16,
            RopeStyle::HalfSplit,
            ops::RopeStyle::HalfSplit,
            32,
            16,
            4,
            0,
        ),
        // No rotary at all (SmolLM3's NoPE layers): q stays, K and V are copied.
        (
            KvDtype::F32,
            RopeStyle::Interleaved,
            ops::RopeStyle::Interleaved,
            16,
            0,
            3,
            2,
        ),
    ] {
        let cfg = RopeConfig {
            head_dim,
            rotary_dim,
            theta: 10000.0,
            style,
        };
        let ref_rope = ops::RopeParams {
            head_dim,
            rotary_dim,
            rope_theta: 10000.0,
            style: ref_style,
        };
        let stride = (heads + 2 * kv_heads) * head_dim;
        let qkv = normal(&mut rng, n * stride, 1.0);
        let mut qkv_d = upload(&gpu, &qkv);
        let ql = HeadsLayout {
            offset: 0,
            token_stride: stride,
            heads,
            seq: n,
        };
        let kl = HeadsLayout {
            offset: heads * head_dim,
            heads: kv_heads,
            ..ql
        };
        let vl = HeadsLayout {
            offset: (heads + kv_heads) * head_dim,
            ..kl
        };
        let view = KvView {
            offset_elems: (past * head_dim) as u64,
            first_position: past,
            positions: n,
            heads: kv_heads,
            head_dim,
            head_stride_elems: (max_ctx * head_dim) as u64,
            position_stride_elems: head_dim as u64,
            dtype,
            wrap: None,
        };
        let cache_len = kv_heads * max_ctx * head_dim;
        let (kc32, vc32) = (poisoned(&gpu, cache_len), poisoned(&gpu, cache_len));
        let mut kc16 = DeviceBuffer::<f16>::new(&gpu, cache_len).unwrap();
        let mut vc16 = DeviceBuffer::<f16>::new(&gpu, cache_len).unwrap();
        kc16.fill_bytes(&gpu, 0xFF).unwrap();
        vc16.fill_bytes(&gpu, 0xFF).unwrap();
        let (k_op, v_op) = match dtype {
            KvDtype::F32 => (
                KvOperand::from_device_buffer(&kc32, view),
                KvOperand::from_device_buffer(&vc32, view),
            ),
            KvDtype::F16 => (
                KvOperand::from_device_buffer(&kc16, view),
                KvOperand::from_device_buffer(&vc16, view),
            ),
        };
        att.enqueue_qkv_rope_write(&mut qkv_d, ql, kl, vl, k_op, v_op, cfg, past)
            .unwrap();
        let read_cache = |c32: &DeviceBuffer<f32>, c16: &DeviceBuffer<f16>| match dtype {
            KvDtype::F32 => c32.read(&gpu).unwrap(),
            KvDtype::F16 => c16
                .read(&gpu)
                .unwrap()
                .iter()
                .map(|v| v.to_f32())
                .collect::<Vec<f32>>(),
        };
        let (got_k, got_v) = (read_cache(&kc32, &kc16), read_cache(&vc32, &vc16));
        let got_qkv = qkv_d.read(&gpu).unwrap();
        let what = format!("{dtype} {style:?} hd{head_dim} rd{rotary_dim} +{n}@{past}");
        for t in 0..n {
            let row = &qkv[t * stride..(t + 1) * stride];
            let got_row = &got_qkv[t * stride..(t + 1) * stride];
            let mut q = row[..heads * head_dim].to_vec();
            ops::rope(&mut q, heads, ref_rope, past + t);
            assert_close(
                &format!("{what} q t{t}"),
                &got_row[..heads * head_dim],
                &q,
                2e-5,
                1e-4,
            );
            assert_eq!(
                &got_row[heads * head_dim..],
                &row[heads * head_dim..],
                "{what}: the K and V parts of the QKV buffer changed"
            );
            let mut k = row[heads * head_dim..(heads + kv_heads) * head_dim].to_vec();
            ops::rope(&mut k, kv_heads, ref_rope, past + t);
            let v = &row[(heads + kv_heads) * head_dim..];
            for h in 0..kv_heads {
                let at = (h * max_ctx + past + t) * head_dim;
                let (mut ks, mut vs) = (
                    k[h * head_dim..][..head_dim].to_vec(),
                    v[h * head_dim..][..head_dim].to_vec(),
                );
                if dtype == KvDtype::F16 {
                    (ks, vs) = (round_f16(&ks), round_f16(&vs));
                }
                let k_what = format!("{what} K h{h} t{t}");
                assert_close(&k_what, &got_k[at..at + head_dim], &ks, 2e-5, 1e-3);
                let v_what = format!("{what} V h{h} t{t}");
                assert_close(&v_what, &got_v[at..at + head_dim], &vs, 0.0, 0.0);
            }
        }
        // Everything outside the written positions is still poison.
        for h in 0..kv_heads {
            for p in (0..max_ctx).filter(|p| !(past..past + n).contains(p)) {
                let at = (h * max_ctx + p) * head_dim;
                assert!(
                    got_k[at..at + head_dim].iter().all(|v| v.is_nan())
                        && got_v[at..at + head_dim].iter().all(|v| v.is_nan()),
                    "{what}: slot h{h} p{p} outside the write view was written"
                );
            }
        }
    }
}

/// The sub-group reductions of the softmax (khr built-ins, Adreno shuffles) built with TLITE_COMPILE_CHECK, whose
/// stand-ins make a sub-group of one work-item: compiles the vendor code on PoCL and checks its logic on every
/// kernel.
#[test]
fn attention_vendor_reductions_compile_and_match_reference() {
    let gpu = gpu();
    for (label, defines) in [
        ("khr subgroups", KHR_SUBGROUP_STAND_INS.to_vec()),
        ("adreno", ADRENO_STAND_INS.to_vec()),
    ] {
        let mut att = Attention::with_defines(&gpu, &defines).unwrap();
        for walk in [
            AttentionWalk::Rows,
            AttentionWalk::WideRows,
            AttentionWalk::Positions,
        ] {
            att.set_walk(walk);
            let shape = AttentionShape {
                seq: 1,
                past: 150,
                heads: 4,
                kv_heads: 2,
                head_dim: 64,
            };
            run_direct(
                &gpu,
                &att,
                shape,
                160,
                KvDtype::F16,
                &format!("{label} {walk:?}"),
            );
        }
    }
}
