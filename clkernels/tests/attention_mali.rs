//! The Mali attention build (`vendor/mali_attention.cl`: one split per work-item, no local memory), forced on the
//! test device at every vector width it is built at, against `fixtures::ops::attention_masked`: prefill and decode,
//! single and split contexts (merged by the last split), grouped heads, a head size off the 8-element rows (36),
//! f32 and f16 caches, a sliding window (the splits cover only its keys), soft-capped scores, and the fresh-token
//! decode (`attn_mali_stage` rotating q and writing the token's K and V into the cache) against a host rotary.
//! Also with the Mali compile-check defines (khr sub-group stand-ins), which change nothing this build uses.
//!
//! Tolerance as tests/attention.rs: 2e-5 absolute + 1e-4 relative on outputs of magnitude ~1 (softmax weights and
//! value sums in f32 in another order; an f16 cache is read as the reference reads it, rounded once).
#![allow(clippy::unwrap_used)]

mod common;

use clkernels::kernels::attention::{
    Attention, AttentionKernel, AttentionScores, AttentionShape, AttentionWalk, FreshToken,
    KvOperand,
};
use clkernels::kernels::rope::{HeadsLayout, RopeConfig, RopeStyle};
use clkernels::kernels::vector_width::VectorWidth;
use clkernels::runtime::Gpu;
use common::*;
use fixtures::ops;
use half::f16;
use kvcache::{KvDtype, KvLayout};

fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

fn to_f16(x: &[f32]) -> Vec<f16> {
    x.iter().map(|&v| f16::from_f32(v)).collect()
}

/// The Mali build at `width`, forced for every call.
fn mali(gpu: &Gpu, width: VectorWidth, defines: &[(&str, &str)]) -> Attention {
    let mut att = Attention::with_mali_width(gpu, width, defines).unwrap();
    att.set_walk(AttentionWalk::Mali);
    assert_eq!(att.mali_width(), Some(width));
    att
}

/// One call of `shape` over a random cache of `ctx` positions, checked against the reference; returns the plan's
/// splits.
fn check(
    gpu: &Gpu,
    att: &Attention,
    shape: AttentionShape,
    ctx: usize,
    dtype: KvDtype,
    scores: AttentionScores,
    label: &str,
) -> usize {
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
    let view = KvLayout {
        kv_heads,
        max_ctx: ctx,
        head_dim,
        dtype,
    }
    .positions_view(0, past + seq);
    let plan = att.plan(&shape, &view, scores.window);
    assert_eq!(plan.kernel, AttentionKernel::Mali, "{label}");
    let mut out = poisoned(gpu, seq * heads * head_dim);
    let qd = upload(gpu, &q);
    let ql = HeadsLayout {
        offset: 0,
        token_stride: heads * head_dim,
        heads,
        seq,
    };
    if dtype == KvDtype::F16 {
        (k, v) = (round_f16(&k), round_f16(&v));
    }
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
            let (kd, vd) = (upload(gpu, &to_f16(&k)), upload(gpu, &to_f16(&v)));
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
        ops::ScoreOptions {
            scale: scores.scale,
            softcap: scores.softcap,
            window: scores.window,
        },
    );
    assert_close(
        &format!("{label} {plan:?}"),
        &out.read(gpu).unwrap(),
        &want,
        2e-5,
        1e-4,
    );
    plan.splits
}

fn shape(
    seq: usize,
    past: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> AttentionShape {
    AttentionShape {
        seq,
        past,
        heads,
        kv_heads,
        head_dim,
    }
}

fn scaled(head_dim: usize) -> AttentionScores {
    AttentionScores::scaled(1.0 / (head_dim as f32).sqrt())
}

#[test]
fn mali_attention_matches_reference_at_every_width() {
    let gpu = gpu();
    let small = small_shapes();
    let long = if small { 200 } else { 700 };
    for width in VectorWidth::ALL {
        for (defines, tag) in [
            (Vec::new(), ""),
            (KHR_SUBGROUP_STAND_INS.to_vec(), " stand-ins"),
        ] {
            let mut defines = defines;
            if !tag.is_empty() {
                defines.push(("TLITE_VENDOR_MALI", "1"));
            }
            let att = mali(&gpu, width, &defines);
            let w = width.floats();
            let label = |what: &str| format!("mali {what} {width}{tag}");
            // Decode over a long context: several splits, merged by the last to finish.
            let splits = check(
                &gpu,
                &att,
                shape(1, long, 4, 2, 64),
                long + 8,
                KvDtype::F32,
                scaled(64),
                &label("decode f32 split"),
            );
            assert!(splits > 1, "{}: {splits} splits", label("decode f32 split"));
            check(
                &gpu,
                &att,
                shape(1, long, 8, 1, 128),
                long + 1,
                KvDtype::F16,
                scaled(128),
                &label("decode f16 mqa"),
            );
            // The first token (one split of one position) and a head size off the 8-element rows.
            check(
                &gpu,
                &att,
                shape(1, 0, 2, 2, 32),
                4,
                KvDtype::F32,
                scaled(32),
                &label("first token"),
            );
            check(
                &gpu,
                &att,
                shape(1, 90, 6, 2, 36),
                96,
                KvDtype::F16,
                scaled(36),
                &label("head 36"),
            );
            // Prefill and a two-token step: every token its own causal length.
            check(
                &gpu,
                &att,
                shape(21, 0, 4, 2, 64),
                24,
                KvDtype::F32,
                scaled(64),
                &label("prefill"),
            );
            check(
                &gpu,
                &att,
                shape(2, 150, 2, 1, 64),
                160,
                KvDtype::F16,
                scaled(64),
                &label("verify step"),
            );
            // A window shorter than the context (the splits cover only its keys) and soft-capped scores.
            let windowed = AttentionScores {
                window: Some(40),
                softcap: Some(1.5),
                ..scaled(64)
            };
            let splits = check(
                &gpu,
                &att,
                shape(1, long, 4, 2, 64),
                long + 1,
                KvDtype::F16,
                windowed,
                &label("window 40 capped"),
            );
            assert!(splits > 2, "{}: {splits} splits", label("window"));
            assert!(w <= 4);
        }
    }
}

/// A decode step whose token's K and V come from the fused QKV row (`enqueue_with_fresh`): q and k rotated on the
/// host as the reference, the token's K and V expected in the cache afterwards (rounded as it stores them), and
/// the output against the reference over the whole cache. Partial rotary with interleaved pairs, grouped heads,
/// a split context.
#[test]
fn mali_fresh_token_rotates_writes_and_attends_like_the_reference() {
    let gpu = gpu();
    let (heads, kv_heads, head_dim, rotary_dim) = (6, 2, 36, 16);
    let past = if small_shapes() { 120 } else { 400 };
    let ctx = past + 8;
    for width in VectorWidth::ALL {
        let att = mali(&gpu, width, &[]);
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let label = format!("mali fresh {width} {dtype:?}");
            let mut rng = rng(&label);
            let stride = (heads + 2 * kv_heads) * head_dim;
            let qkv = normal(&mut rng, stride, 1.0);
            let mut k = normal(&mut rng, kv_heads * ctx * head_dim, 1.0);
            let mut v = normal(&mut rng, kv_heads * ctx * head_dim, 1.0);
            if dtype == KvDtype::F16 {
                (k, v) = (round_f16(&k), round_f16(&v));
            }
            let layout = KvLayout {
                kv_heads,
                max_ctx: ctx,
                head_dim,
                dtype,
            };
            let view = layout.positions_view(0, past + 1);
            let s = shape(1, past, heads, kv_heads, head_dim);
            let plan = att.plan(&s, &view, None);
            assert_eq!(plan.kernel, AttentionKernel::Mali);
            assert!(plan.splits > 1, "{label}: {plan:?}");
            let rope = RopeConfig {
                head_dim,
                rotary_dim,
                theta: 10000.0,
                style: RopeStyle::Interleaved,
            };
            let heads_at = |offset, heads| HeadsLayout {
                offset,
                token_stride: stride,
                heads,
                seq: 1,
            };
            let fresh = FreshToken {
                k: heads_at(heads * head_dim, kv_heads),
                v: heads_at((heads + kv_heads) * head_dim, kv_heads),
                rope,
            };
            let qd = upload(&gpu, &qkv);
            let mut out = poisoned(&gpu, heads * head_dim);
            let scores = scaled(head_dim);
            let (got_k, got_v) = match dtype {
                KvDtype::F32 => {
                    let (kd, vd) = (upload(&gpu, &k), upload(&gpu, &v));
                    let (ko, vo) = (
                        KvOperand::from_device_buffer(&kd, view),
                        KvOperand::from_device_buffer(&vd, view),
                    );
                    att.enqueue_with_fresh(
                        &qd,
                        heads_at(0, heads),
                        Some(fresh),
                        ko,
                        vo,
                        s,
                        scores,
                        &mut out,
                    )
                    .unwrap();
                    (kd.read(&gpu).unwrap(), vd.read(&gpu).unwrap())
                }
                KvDtype::F16 => {
                    let (kd, vd) = (upload(&gpu, &to_f16(&k)), upload(&gpu, &to_f16(&v)));
                    let (ko, vo) = (
                        KvOperand::from_device_buffer(&kd, view),
                        KvOperand::from_device_buffer(&vd, view),
                    );
                    att.enqueue_with_fresh(
                        &qd,
                        heads_at(0, heads),
                        Some(fresh),
                        ko,
                        vo,
                        s,
                        scores,
                        &mut out,
                    )
                    .unwrap();
                    let back = |b: Vec<f16>| b.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
                    (back(kd.read(&gpu).unwrap()), back(vd.read(&gpu).unwrap()))
                }
            };
            // Reference: q and the token's k rotated at position `past`, K and V stored there.
            let ref_rope = ops::RopeParams {
                head_dim,
                rotary_dim,
                rope_theta: 10000.0,
                style: ops::RopeStyle::Interleaved,
            };
            let mut q = qkv[..heads * head_dim].to_vec();
            ops::rope(&mut q, heads, ref_rope, past);
            let mut kn = qkv[heads * head_dim..(heads + kv_heads) * head_dim].to_vec();
            ops::rope(&mut kn, kv_heads, ref_rope, past);
            let vn = &qkv[(heads + kv_heads) * head_dim..];
            for h in 0..kv_heads {
                let at = (h * ctx + past) * head_dim;
                let (ks, vs) = (
                    &kn[h * head_dim..][..head_dim],
                    &vn[h * head_dim..][..head_dim],
                );
                let (ks, vs) = match dtype {
                    KvDtype::F16 => (round_f16(ks), round_f16(vs)),
                    KvDtype::F32 => (ks.to_vec(), vs.to_vec()),
                };
                k[at..at + head_dim].copy_from_slice(&ks);
                v[at..at + head_dim].copy_from_slice(&vs);
            }
            // The cache: the new row as the reference stores it (the rotation within f32 rounding, so one f16
            // step for an f16 cache), every other row untouched.
            let cache_tol = if dtype == KvDtype::F16 { 2e-3 } else { 1e-5 };
            assert_close(
                &format!("{label} K cache"),
                &got_k,
                &k,
                cache_tol,
                cache_tol,
            );
            assert_close(&format!("{label} V cache"), &got_v, &v, 0.0, 0.0);
            let want = ops::attention_masked(
                &q,
                &got_k,
                &v,
                ctx,
                ops::AttentionShape {
                    seq: 1,
                    past,
                    heads,
                    kv_heads,
                    head_dim,
                },
                ops::ScoreOptions {
                    scale: scores.scale,
                    softcap: None,
                    window: None,
                },
            );
            assert_close(
                &format!("{label} {plan:?}"),
                &out.read(&gpu).unwrap(),
                &want,
                2e-5,
                1e-4,
            );
        }
    }
}

/// Auto takes the Mali kernel for decode only, and only where the Mali build exists; a device whose own family is
/// not Mali builds it only when asked.
#[test]
fn auto_takes_the_mali_kernel_for_decode_where_it_is_built() {
    let gpu = gpu();
    let mut att = Attention::with_mali_width(&gpu, VectorWidth::DEFAULT, &[]).unwrap();
    att.set_walk(AttentionWalk::Auto);
    let view = |n| {
        KvLayout {
            kv_heads: 2,
            max_ctx: n,
            head_dim: 64,
            dtype: KvDtype::F16,
        }
        .positions_view(0, n)
    };
    assert_eq!(
        att.plan(&shape(1, 99, 4, 2, 64), &view(100), None).kernel,
        AttentionKernel::Mali
    );
    assert_ne!(
        att.plan(&shape(9, 0, 4, 2, 64), &view(9), None).kernel,
        AttentionKernel::Mali
    );
    let plain = Attention::new(&gpu).unwrap();
    if gpu.caps().target_family() != clkernels::runtime::VendorFamily::Mali {
        assert_eq!(plain.mali_width(), None);
    }
}
