//! The decoder as a fused runtime runs it: its shapes, its in-place ops, and a plan that never lets two live
//! activations share memory, checked by brute force on random points against lifetimes recomputed here.
#![allow(clippy::unwrap_used)]

use rand::Rng;
use symshape::models::{fused_decoder, FusedDecoder, FusedDecoderDims, ModelShape};
use symshape::{DType, Domain, Expr, Graph, PlanValues, Storage, TensorId};

fn random_dims(rng: &mut impl Rng) -> FusedDecoderDims {
    let kv_heads = rng.random_range(1..4);
    let shape = ModelShape {
        hidden: rng.random_range(8..300),
        ffn: rng.random_range(8..900),
        layers: rng.random_range(1..5),
        heads: kv_heads * rng.random_range(1..4),
        kv_heads,
        head_dim: 2 * rng.random_range(1..40),
        vocab: rng.random_range(2..2000),
        max_ctx: 0,
    };
    let ctx = rng.random_range(1..300);
    let chunk = rng.random_range(1..=ctx);
    FusedDecoderDims {
        // Gemma 2/3's post norms: the projections write buffers of their own.
        post_norms: rng.random_bool(0.3),
        ..FusedDecoderDims::for_shape(&shape, ctx, chunk, 32, rng.random_bool(0.5), 4).unwrap()
    }
}

/// Lifetimes from the op list alone: a storage root is live from its first to its last use by any op, or to the
/// end when an output views it.
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

fn check_point(m: &FusedDecoder, life: &[Option<(usize, usize)>], seq: i64, past: i64) {
    let mut v = PlanValues::default();
    m.evaluate_into(seq, past, &mut v).unwrap();
    let mut live = Vec::new();
    for (i, t) in m.graph.tensors().iter().enumerate() {
        let Some((first, last)) = life[i] else {
            continue;
        };
        let id = TensorId::from_index(i);
        let bytes: i64 = t
            .shape
            .dims()
            .iter()
            .map(|d| d.eval(&[("seq", seq), ("past", past)]).unwrap() as i64)
            .product::<i64>()
            * t.dtype.size_bytes();
        let loc = m.plan.location(&v, id).unwrap();
        assert_eq!(loc.bytes, bytes as u64, "{}", t.name);
        assert!(
            loc.bytes <= v.buffer_bytes[loc.buffer],
            "{} overflows",
            t.name
        );
        live.push((first, last, loc.offset, loc.offset + loc.bytes, i));
    }
    for (x, a) in live.iter().enumerate() {
        for b in &live[x + 1..] {
            let together = a.0 <= b.1 && b.0 <= a.1;
            let overlap = a.2 < b.3 && b.2 < a.3;
            assert!(
                !(together && overlap),
                "{} and {} overlap while live at seq={seq} past={past}",
                m.graph.tensors()[a.4].name,
                m.graph.tensors()[b.4].name
            );
        }
    }
}

#[test]
fn live_activations_never_share_memory_on_random_points_of_random_models() {
    let mut rng = rand::rng();
    for _ in 0..40 {
        let dims = random_dims(&mut rng);
        let m = fused_decoder(&dims).unwrap();
        let life = lifetimes(&m.graph);
        for _ in 0..20 {
            let seq = rng.random_range(1..=dims.max_chunk);
            check_point(&m, &life, seq, rng.random_range(0..dims.max_ctx));
        }
        check_point(&m, &life, dims.max_chunk, dims.max_ctx - 1);
    }
}

/// With post norms, each projection's output is a buffer of its own that is still live when the residual update
/// reads it, so it can share memory with neither the projection's input nor the residual stream.
#[test]
fn post_norm_outputs_get_their_own_memory() {
    let shape = ModelShape {
        hidden: 48,
        ffn: 100,
        layers: 2,
        heads: 6,
        kv_heads: 2,
        head_dim: 8,
        vocab: 97,
        max_ctx: 0,
    };
    let dims = FusedDecoderDims {
        post_norms: true,
        ..FusedDecoderDims::for_shape(&shape, 40, 16, 32, false, 4).unwrap()
    };
    let m = fused_decoder(&dims).unwrap();
    let mut v = PlanValues::default();
    m.evaluate_into(16, 3, &mut v).unwrap();
    let at = |t: TensorId| m.plan.location(&v, t).unwrap();
    let disjoint = |a: TensorId, b: TensorId| {
        let (a, b) = (at(a), at(b));
        a.buffer != b.buffer || a.offset + a.bytes <= b.offset || b.offset + b.bytes <= a.offset
    };
    for l in &m.layers {
        let (attn_out, mlp_out) = (l.attn_out.unwrap(), l.mlp_out.unwrap());
        assert_eq!(at(attn_out).bytes, 16 * 48 * 4);
        assert!(disjoint(attn_out, l.attn) && disjoint(attn_out, m.x));
        assert!(disjoint(mlp_out, l.gate) && disjoint(mlp_out, m.x));
    }
    let plain =
        fused_decoder(&FusedDecoderDims::for_shape(&shape, 40, 16, 32, false, 4).unwrap()).unwrap();
    assert!(plain
        .layers
        .iter()
        .all(|l| l.attn_out.is_none() && l.mlp_out.is_none()));
}

#[test]
fn shapes_and_in_place_updates_follow_the_fused_kernels() {
    let shape = ModelShape {
        hidden: 48,
        ffn: 100,
        layers: 3,
        heads: 6,
        kv_heads: 2,
        head_dim: 8,
        vocab: 97,
        max_ctx: 0,
    };
    let m =
        fused_decoder(&FusedDecoderDims::for_shape(&shape, 40, 16, 32, true, 4).unwrap()).unwrap();
    let s = |t| m.graph.shape(t).unwrap().to_string();
    let l1 = m.layers[1];
    assert_eq!(s(m.x), "[seq, 48]");
    assert_eq!(s(l1.qkv), "[seq, 80]");
    assert_eq!(s(l1.attn_heads), "[seq, 6, 8]");
    assert_eq!(s(l1.attn), "[seq, 48]");
    assert_eq!(s(l1.gate), "[seq, 128]", "ffn padded to a multiple of 32");
    assert_eq!(s(m.logits), "[1, 97]");
    let p = &m.plan;
    // In-place ops share their target's buffer: the residual stream is one buffer through every layer.
    for name in ["l0.o_proj", "l2.down_proj"] {
        assert_eq!(p.buffer_of(m.graph.find(name).unwrap()), p.buffer_of(m.x));
    }
    assert_eq!(
        p.buffer_of(m.graph.find("l1.qkv_rot").unwrap()),
        p.buffer_of(l1.qkv)
    );
    assert_eq!(
        p.buffer_of(m.graph.find("l1.gated").unwrap()),
        p.buffer_of(l1.gate)
    );
    assert_eq!(p.buffer_of(l1.attn), p.buffer_of(l1.attn_heads));
    assert_eq!(p.buffer_of(l1.k_cache), None);
    // The residual is live to the end, so nothing of the head reuses it.
    for t in [m.last, m.last_normed, m.logits] {
        assert_ne!(p.buffer_of(t), p.buffer_of(m.x));
    }
    // Buffers do not grow with layers.
    let more = FusedDecoderDims {
        layers: 12,
        ..m.dims
    };
    assert_eq!(
        fused_decoder(&more).unwrap().plan.buffers().len(),
        p.buffers().len()
    );
}

#[test]
fn fused_ops_refuse_shapes_that_do_not_fit() {
    let mut d = Domain::new();
    let seq = d.symbol("seq", 1, 8).unwrap();
    let mut g = Graph::new(d);
    let c = Expr::constant;
    let x = g.input("x", &[seq.clone(), c(16)], DType::F32).unwrap();
    let w = g.input("w", &[c(16), c(16)], DType::F32).unwrap();
    let wide = g.input("wide", &[c(24), c(16)], DType::F32).unwrap();
    let acc = g.linear("acc", x, w).unwrap();
    assert!(g.linear_into("ok", x, w, acc).is_ok());
    let e = g.linear_into("bad", x, wide, acc).unwrap_err().to_string();
    assert!(e.contains("linear_into") && e.contains("bad"), "{e}");
    // Packed q|k|v of 2 query heads over 1 kv head of width 4 is 16 wide.
    let kc = g.input("kc", &[c(8), c(1), c(4)], DType::F32).unwrap();
    assert!(g.attention_packed_qkv("attn", acc, kc, kc, 2).is_ok());
    let e = g
        .attention_packed_qkv("attn3", acc, kc, kc, 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("packed width"), "{e}");
}
