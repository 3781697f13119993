//! The arena the engine allocates from the plan, checked on random models at random steps: every activation fits
//! its slot, slots do not overlap, no two activations live at once share a byte, and the dims handed to the
//! kernels are the model's.

#![allow(clippy::unwrap_used)]

use rand::Rng;
use symshape::{Graph, Storage, TensorId};

use super::super::arena::ARENA_ALIGN_BYTES;
use super::*;
use crate::model::{Activation, Architecture, ModelShape, RopeStyle};

fn config(shape: ModelShape, qkv_bias: bool) -> ModelConfig {
    ModelConfig {
        arch: Architecture::Llama,
        shape,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_style: RopeStyle::HalfSplit,
        rope_scaling: None,
        partial_rotary: 1.0,
        tied_embeddings: false,
        qkv_bias,
        activation: Activation::Silu,
        norm_plus_one: false,
        embed_scale: None,
        bos: None,
        eos: Vec::new(),
        qk_norm: false,
        post_norms: false,
        query_pre_attn_scalar: None,
        attn_softcap: None,
        final_softcap: None,
        sliding_window: None,
        rope_local_theta: None,
        nope_layers: Vec::new(),
    }
}

fn random_shape(rng: &mut impl Rng) -> ModelShape {
    let kv_heads = rng.random_range(1..5);
    ModelShape {
        hidden: rng.random_range(16..700),
        ffn: rng.random_range(16..2000),
        layers: rng.random_range(1..6),
        heads: kv_heads * rng.random_range(1..5),
        kv_heads,
        head_dim: 2 * rng.random_range(4..64),
        vocab: rng.random_range(32..60_000),
        max_ctx: rng.random_range(8..5000),
    }
}

/// Lifetimes from the op list alone (independent of the planner's own bookkeeping).
fn lifetimes(g: &Graph) -> Vec<Option<(usize, usize)>> {
    let root = |t: TensorId| match g.tensors()[t.index()].storage {
        Storage::Alias(r) => r,
        _ => t,
    };
    let mut life = vec![None; g.tensors().len()];
    for (k, op) in g.ops().iter().enumerate() {
        for t in op.inputs.iter().chain(&op.outputs) {
            let r = root(*t);
            if g.tensors()[r.index()].storage == Storage::Activation {
                let e: &mut Option<(usize, usize)> = &mut life[r.index()];
                *e = Some(e.map_or((k, k), |(a, b)| (a.min(k), b.max(k))));
            }
        }
    }
    for t in g.outputs() {
        if let Some((a, _)) = life[root(*t).index()] {
            life[root(*t).index()] = Some((a, g.ops().len()));
        }
    }
    life
}

#[test]
fn planned_buffers_never_overlap_while_live_at_random_steps() {
    let mut rng = rand::rng();
    for _ in 0..12 {
        let shape = random_shape(&mut rng);
        let ctx = rng.random_range(1..=shape.max_ctx);
        let chunk = rng.random_range(1..=ctx.min(512));
        let c = config(shape, rng.random_bool(0.5));
        let mut plan = StepPlan::new(&c, ctx, chunk).unwrap();
        let sizes = plan.sizes().unwrap();
        let slots = sizes.layout(chunk, ctx);
        let arena = sizes.arena_bytes(chunk, ctx);
        for (i, a) in slots.iter().enumerate() {
            assert_eq!(a.offset % ARENA_ALIGN_BYTES, 0);
            assert!(a.offset + a.bytes <= arena);
            for b in &slots[i + 1..] {
                assert!(a.offset + a.bytes <= b.offset, "slots overlap: {a:?} {b:?}");
            }
        }
        let life = lifetimes(&plan.decoder().graph);
        for _ in 0..25 {
            let seq = rng.random_range(1..=chunk);
            let past = rng.random_range(0..=ctx - seq);
            let dims = plan.evaluate(seq, past).unwrap();
            let want = StepDims {
                seq,
                past,
                hidden: shape.hidden,
                qkv_dim: shape.qkv_dim(),
                heads: shape.heads,
                kv_heads: shape.kv_heads,
                head_dim: shape.head_dim,
                ffn: shape.ffn.next_multiple_of(32),
                vocab: shape.vocab,
            };
            assert_eq!(dims, want);
            let d = plan.decoder();
            let mut live = Vec::new();
            for (i, t) in d.graph.tensors().iter().enumerate() {
                let Some((first, last)) = life[i] else {
                    continue;
                };
                let bytes: u64 = t
                    .shape
                    .dims()
                    .iter()
                    .map(|e| {
                        e.eval(&[("seq", seq as i64), ("past", past as i64)])
                            .unwrap() as u64
                    })
                    .product::<u64>()
                    * t.dtype.size_bytes() as u64;
                let slot = slots[d.plan.buffer_of(TensorId::from_index(i)).unwrap()];
                assert!(
                    bytes <= slot.bytes,
                    "{} ({bytes} B) overflows its slot",
                    t.name
                );
                live.push((first, last, slot.offset, slot.offset + bytes, i));
            }
            for (x, a) in live.iter().enumerate() {
                for b in &live[x + 1..] {
                    let together = a.0 <= b.1 && b.0 <= a.1;
                    let overlap = a.2 < b.3 && b.2 < a.3;
                    assert!(
                        !(together && overlap),
                        "{} and {} share memory while live at seq={seq} past={past}",
                        d.graph.tensors()[a.4].name,
                        d.graph.tensors()[b.4].name
                    );
                }
            }
        }
        // Outside the domain: past the cache, or more tokens than a step runs.
        assert!(plan.evaluate(1, ctx).is_err());
        assert!(plan.evaluate(chunk + 1, 0).is_err());
        assert!(plan.evaluate(0, 0).is_err());
    }
}

/// The budget's figure is the arena the engine allocates plus the token ids, and it grows with the chunk.
#[test]
fn the_activation_figure_is_the_arena_and_the_ids() {
    let mut rng = rand::rng();
    let shape = random_shape(&mut rng);
    let ctx = shape.max_ctx;
    let chunk = rng.random_range(2..=ctx.min(300));
    let plan = StepPlan::new(&config(shape, false), ctx, chunk).unwrap();
    let sizes = plan.sizes().unwrap();
    assert_eq!(sizes.token_id_bytes(chunk, ctx), 4 * chunk as u64);
    assert_eq!(
        sizes.bytes(chunk, ctx),
        sizes.arena_bytes(chunk, ctx) + 4 * chunk as u64
    );
    assert!(sizes.bytes(chunk - 1, ctx) < sizes.bytes(chunk, ctx));
    // At least the residual stream beside the larger of the stacked qkv and the logits (which may share a slot).
    let floor = 4 * (chunk * shape.hidden + (chunk * shape.qkv_dim()).max(shape.vocab)) as u64;
    assert!(sizes.arena_bytes(chunk, ctx) >= floor);
}

/// A plan narrowed to a shorter cache refuses steps past it, gives the same dims within it, and cannot be widened.
#[test]
fn a_plan_narrowed_to_a_shorter_cache_refuses_steps_past_it() {
    let mut rng = rand::rng();
    let shape = ModelShape {
        max_ctx: 64,
        ..random_shape(&mut rng)
    };
    let mut whole = StepPlan::new(&config(shape, false), 64, 8).unwrap();
    let mut narrowed = StepPlan::new(&config(shape, false), 64, 8).unwrap();
    narrowed.limit_ctx(16).unwrap();
    assert_eq!(narrowed.sizes().unwrap(), whole.sizes().unwrap());
    for (seq, past) in [(1, 0), (8, 8), (1, 15)] {
        assert_eq!(
            narrowed.evaluate(seq, past).unwrap(),
            whole.evaluate(seq, past).unwrap()
        );
    }
    assert!(whole.evaluate(1, 16).is_ok());
    let e = narrowed.evaluate(1, 16).unwrap_err().to_string();
    assert!(e.contains("16 positions"), "{e}");
    assert!(narrowed.limit_ctx(65).is_err() && narrowed.limit_ctx(0).is_err());
    // Narrowing again within what it was derived for is allowed (a later load may choose a longer context).
    narrowed.limit_ctx(64).unwrap();
    assert!(narrowed.evaluate(1, 16).is_ok());
}
