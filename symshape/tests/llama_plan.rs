//! A full Llama decoder with symbolic `seq`/`past`: shapes, plan soundness by brute force, and
//! peak vs naive memory.
#![allow(clippy::unwrap_used)]

use rand::Rng;
use symshape::models::{llama_decoder, DecoderDims, LlamaDecoder};
use symshape::{Graph, PlanValues, Storage, TensorId};

fn small() -> DecoderDims {
    DecoderDims {
        layers: 3,
        hidden: 48,
        heads: 6,
        kv_heads: 2,
        head_dim: 8,
        ffn: 128,
        vocab: 97,
        max_ctx: 40,
        dtype_bytes: 2,
    }
}

fn llama2_7b_like() -> DecoderDims {
    DecoderDims {
        layers: 32,
        hidden: 4096,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        ffn: 11008,
        vocab: 32000,
        max_ctx: 4096,
        dtype_bytes: 2,
    }
}

/// Lifetimes recomputed here from the op list, independently of the planner: the storage root of
/// every tensor is live from the op producing the root to the last op touching any view of it.
fn reference_lifetimes(g: &Graph) -> Vec<Option<(usize, usize)>> {
    let n = g.tensors().len();
    let root = |t: TensorId| match g.tensors()[t.index()].storage {
        Storage::Alias(r) => r,
        _ => t,
    };
    let mut life = vec![None; n];
    for (k, op) in g.ops().iter().enumerate() {
        for t in op.inputs.iter().chain(&op.outputs) {
            let r = root(*t);
            if g.tensors()[r.index()].storage != Storage::Activation {
                continue;
            }
            let e: &mut Option<(usize, usize)> = &mut life[r.index()];
            *e = Some(match *e {
                None => (k, k),
                Some((a, b)) => (a.min(k), b.max(k)),
            });
        }
    }
    for t in g.outputs() {
        let r = root(*t);
        if let Some((a, _)) = life[r.index()] {
            life[r.index()] = Some((a, g.ops().len()));
        }
    }
    life
}

/// Checks one point: every activation's bytes equal dims × dtype (computed here), fit in its
/// buffer, buffers do not overlap in the arena, and no two live activations overlap in memory.
fn check_point(
    m: &LlamaDecoder,
    life: &[Option<(usize, usize)>],
    seq: i64,
    past: i64,
    v: &mut PlanValues,
) {
    m.evaluate_into(seq, past, v).unwrap();
    let g = &m.graph;
    let p = &m.plan;
    for b in 0..p.buffers().len() {
        let end = v.buffer_offsets[b] + v.buffer_bytes[b];
        if b + 1 < p.buffers().len() {
            assert!(
                end <= v.buffer_offsets[b + 1],
                "buffers {b} and {} overlap",
                b + 1
            );
        }
        assert!(end <= v.arena_bytes);
    }
    let mut ranges = Vec::new();
    for (i, t) in g.tensors().iter().enumerate() {
        let id = TensorId::from_index(i);
        let dims: Vec<i64> = t
            .shape
            .dims()
            .iter()
            .map(|d| d.eval(&[("seq", seq), ("past", past)]).unwrap() as i64)
            .collect();
        assert_eq!(p.dims(v, id).unwrap(), dims, "{}", t.name);
        let Some((first, last)) = life[i] else {
            continue;
        };
        let bytes = dims.iter().product::<i64>() as u64 * t.dtype.size_bytes() as u64;
        let loc = p.location(v, id).unwrap();
        assert_eq!(loc.bytes, bytes, "{}", t.name);
        assert!(
            bytes <= v.buffer_bytes[loc.buffer],
            "{} ({bytes} B) overflows buffer {} at seq={seq} past={past}",
            t.name,
            loc.buffer
        );
        ranges.push((first, last, loc.offset, loc.offset + bytes, i));
    }
    for (x, a) in ranges.iter().enumerate() {
        for b in &ranges[x + 1..] {
            let live_together = a.0 <= b.1 && b.0 <= a.1;
            let overlap = a.2 < b.3 && b.2 < a.3;
            assert!(
                !(live_together && overlap),
                "{} and {} are live together and overlap at seq={seq} past={past}",
                g.tensors()[a.4].name,
                g.tensors()[b.4].name
            );
        }
    }
}

#[test]
fn shapes_of_a_llama_block_are_symbolic() {
    let m = llama_decoder(&small()).unwrap();
    let g = &m.graph;
    let l0 = m.layers[0];
    let s = |t| g.shape(t).unwrap().to_string();
    assert_eq!(s(m.token_ids), "[seq]");
    assert_eq!(s(l0.input), "[seq, 48]");
    assert_eq!(s(l0.q), "[seq, 6, 8]");
    assert_eq!(s(l0.k_new), "[seq, 2, 8]");
    assert_eq!(s(l0.scores), "[6, seq, past + seq]");
    assert_eq!(s(g.find("l0.keys").unwrap()), "[past + seq, 2, 8]");
    assert_eq!(s(g.find("l2.gated").unwrap()), "[seq, 128]");
    assert_eq!(s(m.logits), "[1, 97]");
    // Views share the cache's external memory; nothing is planned for them.
    assert_eq!(m.plan.buffer_of(g.find("l0.keys").unwrap()), None);
    // Reshape aliases its source's buffer.
    assert_eq!(
        m.plan.buffer_of(g.find("l1.q_heads").unwrap()),
        m.plan.buffer_of(g.find("l1.q_proj").unwrap())
    );
}

#[test]
fn plan_never_overlaps_live_tensors_on_every_point_of_a_small_model() {
    let m = llama_decoder(&small()).unwrap();
    let life = reference_lifetimes(&m.graph);
    let mut v = PlanValues::default();
    let max = m.dims.max_ctx;
    for seq in 1..=max {
        for past in 0..=(max - seq) {
            check_point(&m, &life, seq, past, &mut v);
        }
    }
}

#[test]
fn plan_never_overlaps_live_tensors_on_random_points_of_a_7b_shaped_model() {
    let m = llama_decoder(&llama2_7b_like()).unwrap();
    let life = reference_lifetimes(&m.graph);
    let mut v = PlanValues::default();
    let mut rng = rand::rng();
    let max = m.dims.max_ctx;
    let mut points = vec![(1, 0), (max, 0), (1, max - 1), (2, max - 2)];
    for _ in 0..150 {
        let seq = rng.random_range(1..=max);
        points.push((seq, rng.random_range(0..=max - seq)));
    }
    for (seq, past) in points {
        check_point(&m, &life, seq, past, &mut v);
    }
    // Buffer count does not grow with layers: compare with a 2-layer model of the same width.
    let two = llama_decoder(&DecoderDims {
        layers: 2,
        ..llama2_7b_like()
    })
    .unwrap();
    assert_eq!(m.plan.buffers().len(), two.plan.buffers().len());
}

#[test]
fn evaluation_outside_the_domain_is_refused() {
    let m = llama_decoder(&small()).unwrap();
    let mut v = PlanValues::default();
    assert!(m.evaluate_into(0, 0, &mut v).is_err());
    assert!(m.evaluate_into(30, 11, &mut v).is_err()); // seq + past > max_ctx
    assert!(m.evaluate_into(1, -1, &mut v).is_err());
    assert!(m.evaluate_into(30, 10, &mut v).is_ok());
}

#[test]
fn peak_vs_naive_memory() {
    let m = llama_decoder(&llama2_7b_like()).unwrap();
    let p = &m.plan;
    let (arena, seq, past) = m.arena_bytes_at_max_context().unwrap();
    let at = |e: &symshape::Expr, s: i64, q: i64| e.eval(&[("seq", s), ("past", q)]).unwrap();
    println!(
        "buffers: {}, distinct compiled expressions: {}",
        p.buffers().len(),
        p.compiled_expression_count()
    );
    println!("planned peak bytes = {}", p.peak_bytes());
    println!("naive sum bytes    = {}", p.naive_bytes());
    println!("largest arena {arena} B at seq={seq} past={past}");
    for (s, q) in [(m.dims.max_ctx, 0), (1, m.dims.max_ctx - 1)] {
        println!(
            "seq={s} past={q}: planned {} B, naive {} B",
            at(p.peak_bytes(), s, q),
            at(p.naive_bytes(), s, q)
        );
    }
    let (s, q) = (m.dims.max_ctx, 0);
    assert!(
        at(p.peak_bytes(), s, q) * 10 < at(p.naive_bytes(), s, q),
        "reuse should save > 90% on 32 layers"
    );
    assert!(arena as i128 >= at(p.peak_bytes(), seq, past));
}

/// A model's shape becomes the planner's dimensions for the runtime's context and activation size, field by
/// field, and a size beyond `i64` is refused with its name instead of wrapping.
#[test]
fn a_model_shape_converts_to_decoder_dims() {
    use symshape::models::ModelShape;
    let mut rng = rand::rng();
    let shape = ModelShape {
        hidden: rng.random_range(1..10_000),
        ffn: rng.random_range(1..40_000),
        layers: rng.random_range(1..100),
        heads: rng.random_range(1..64),
        kv_heads: rng.random_range(1..64),
        head_dim: rng.random_range(1..512),
        vocab: rng.random_range(1..300_000),
        max_ctx: rng.random_range(2..100_000),
    };
    let ctx = rng.random_range(1..shape.max_ctx);
    let dims = DecoderDims::for_shape(&shape, ctx, 4).unwrap();
    let want = DecoderDims {
        layers: shape.layers,
        hidden: shape.hidden as i64,
        heads: shape.heads as i64,
        kv_heads: shape.kv_heads as i64,
        head_dim: shape.head_dim as i64,
        ffn: shape.ffn as i64,
        vocab: shape.vocab as i64,
        max_ctx: ctx as i64,
        dtype_bytes: 4,
    };
    assert_eq!(dims, want, "{shape:?}");
    assert_eq!(shape.q_dim(), shape.heads * shape.head_dim);
    assert_eq!(shape.kv_dim(), shape.kv_heads * shape.head_dim);
    assert_eq!(shape.qkv_dim(), shape.q_dim() + 2 * shape.kv_dim());
    if usize::BITS == 64 {
        let huge = ModelShape {
            vocab: usize::MAX,
            ..shape
        };
        let err = DecoderDims::for_shape(&huge, ctx, 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vocab"), "{err}");
    }
}
