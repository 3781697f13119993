//! Shape rules: inferred shapes checked against concrete evaluation, and every error case naming
//! the op and the expressions.
#![allow(clippy::unwrap_used)]

use rand::Rng;
use symshape::{
    DType, Domain, Expr, Graph, PlanOptions, PlanValues, Reduce, ReshapeDim, SymShapeError,
    TensorId,
};

fn graph() -> (Graph, Expr, Expr) {
    let mut d = Domain::new();
    let seq = d.symbol("seq", 1, 512).unwrap();
    let past = d.symbol("past", 0, 511).unwrap();
    d.constrain_sum_at_most(&["seq", "past"], 512).unwrap();
    (Graph::new(d), seq, past)
}

fn c(v: i64) -> Expr {
    Expr::constant(v)
}

fn shape_err(r: Result<TensorId, SymShapeError>, op: &str, needles: &[&str]) {
    match r {
        Err(e @ SymShapeError::Shape { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with(op), "expected op `{op}` in: {msg}");
            for n in needles {
                assert!(msg.contains(n), "expected `{n}` in: {msg}");
            }
        }
        other => panic!("expected a shape error from {op}, got {other:?}"),
    }
}

#[test]
fn inferred_shapes_match_concrete_evaluation() {
    let (mut g, seq, past) = graph();
    let kv = &seq + &past;
    let x = g
        .input("x", &[seq.clone(), c(6), c(16)], DType::F32)
        .unwrap();
    let k = g
        .input("k", &[kv.clone(), c(2), c(16)], DType::F32)
        .unwrap();
    let t = g.transpose("t", x, 0, 1).unwrap(); // [6, seq, 16]
    let p = g.permute("p", x, &[2, 0, 1]).unwrap(); // [16, seq, 6]
    let r = g
        .reshape("r", x, &[ReshapeDim::Infer, ReshapeDim::Size(c(32))])
        .unwrap(); // [3*seq, 32]
    let cat = g.concat("cat", &[x, x, x], 0).unwrap(); // [3*seq, 6, 16]
    let sl = g.slice("sl", cat, 0, &seq, &(&seq * 2)).unwrap(); // [2*seq, 6, 16]
    let red = g.reduce("red", sl, Reduce::Max, -1, true).unwrap(); // [2*seq, 6, 1]
    let bc = g.add("bc", sl, red).unwrap(); // broadcast -> [2*seq, 6, 16]
    let att = g.attention("att", x, k, k).unwrap(); // [seq, 6, 16]
    let sc = g.attention_scores("sc", x, k, DType::F32).unwrap(); // [6, seq, kv]
    let mm = g.matmul("mm", t, p).unwrap_err(); // [6, seq, 16] @ [16, seq, 6]: 16 vs seq
    assert!(mm.to_string().contains("inner dims differ: 16"), "{mm}");
    let p2 = g.input("p2", &[c(6), c(6), c(8)], DType::F32).unwrap();
    let mm = g.matmul("mm", p, p2).unwrap_err(); // batch 16 vs 6
    assert!(
        mm.to_string().contains("cannot broadcast axis 0: 16 vs 6"),
        "{mm}"
    );
    let a = g
        .input("a", &[c(4), seq.clone(), c(16)], DType::F32)
        .unwrap();
    let b = g
        .input("b", &[c(1), c(16), kv.clone()], DType::F32)
        .unwrap();
    let mm = g.matmul("mm", a, b).unwrap(); // [4, seq, kv]
    let sm = g.softmax("sm", mm, -1).unwrap();
    let ids = g
        .input("ids", std::slice::from_ref(&seq), DType::I32)
        .unwrap();
    let table = g.input("table", &[c(100), c(8)], DType::F16).unwrap();
    let emb = g.embedding("emb", table, ids).unwrap(); // [seq, 8]
    let gat = g.gather("gat", x, 1, ids).unwrap(); // [seq, seq, 16]
    type Reference = Box<dyn Fn(i64, i64) -> Vec<i64>>;
    let expect: Vec<(TensorId, Reference)> = vec![
        (t, Box::new(|s, _| vec![6, s, 16])),
        (p, Box::new(|s, _| vec![16, s, 6])),
        (r, Box::new(|s, _| vec![3 * s, 32])),
        (cat, Box::new(|s, _| vec![3 * s, 6, 16])),
        (sl, Box::new(|s, _| vec![2 * s, 6, 16])),
        (red, Box::new(|s, _| vec![2 * s, 6, 1])),
        (bc, Box::new(|s, _| vec![2 * s, 6, 16])),
        (att, Box::new(|s, _| vec![s, 6, 16])),
        (sc, Box::new(|s, q| vec![6, s, s + q])),
        (mm, Box::new(|s, q| vec![4, s, s + q])),
        (sm, Box::new(|s, q| vec![4, s, s + q])),
        (emb, Box::new(|s, _| vec![s, 8])),
        (gat, Box::new(|s, _| vec![s, s, 16])),
    ];
    for t in expect.iter().map(|e| e.0) {
        g.mark_output(t).unwrap();
    }
    let plan = g.plan(PlanOptions::default()).unwrap();
    let mut v = PlanValues::default();
    let mut rng = rand::rng();
    for _ in 0..100 {
        let s = rng.random_range(1..=512);
        let q = rng.random_range(0..=512 - s);
        plan.evaluate_into(&plan.bind(&[("seq", s), ("past", q)]).unwrap(), &mut v)
            .unwrap();
        for (t, f) in &expect {
            assert_eq!(
                plan.dims(&v, *t).unwrap(),
                f(s, q),
                "{}",
                g.tensor(*t).unwrap().name
            );
        }
    }
}

#[test]
fn rule_violations_name_the_op_and_expressions() {
    let (mut g, seq, past) = graph();
    let x = g.input("x", &[seq.clone(), c(64)], DType::F16).unwrap();
    let w = g.input("w", &[c(32), c(63)], DType::F16).unwrap();
    shape_err(g.linear("proj", x, w), "linear `proj`", &["64", "63"]);
    let y = g.input("y", &[past.clone(), c(64)], DType::F16).unwrap();
    shape_err(g.add("sum", x, y), "add `sum`", &["seq", "past"]);
    shape_err(g.matmul("mm", x, x), "matmul `mm`", &["64", "seq"]);
    // seq*64 elements cannot become [seq + 1, 64] for any seq.
    shape_err(
        g.reshape(
            "bad",
            x,
            &[ReshapeDim::Size(&seq + 1), ReshapeDim::Size(c(64))],
        ),
        "reshape `bad`",
        &["seq + 1", "64*seq"],
    );
    shape_err(
        g.reshape("odd", x, &[ReshapeDim::Infer, ReshapeDim::Size(c(3))]),
        "reshape `odd`",
        &["not divisible", "3"],
    );
    shape_err(g.slice("sl", x, 0, &c(1), &seq), "slice `sl`", &["seq + 1"]);
    shape_err(
        g.slice("sl2", x, 0, &(&seq - 2), &c(1)),
        "slice `sl2`",
        &["seq - 2"],
    );
    shape_err(
        g.concat("cat", &[x, y], 1),
        "concat `cat`",
        &["seq", "past"],
    );
    shape_err(g.permute("perm", x, &[0, 0]), "permute `perm`", &["[0, 0]"]);
    let q = g
        .input("q", &[seq.clone(), c(6), c(8)], DType::F16)
        .unwrap();
    let k = g
        .input("k", &[&seq + &past, c(4), c(8)], DType::F16)
        .unwrap();
    shape_err(
        g.attention("attn", q, k, k),
        "attention `attn`",
        &["6", "4"],
    );
    let table = g.input("rope", &[c(511), c(8)], DType::F16).unwrap();
    // positions past .. past + seq reach 512 > 511 rows.
    shape_err(
        g.rotary("rot", q, table, &past),
        "rotary `rot`",
        &["511", "past + seq"],
    );
    let big = g.input("rope2", &[c(512), c(8)], DType::F16).unwrap();
    assert!(g.rotary("rot_ok", q, big, &past).is_ok());
    let nw = g.input("nw", &[c(63)], DType::F16).unwrap();
    shape_err(
        g.rms_norm("norm", x, nw),
        "rms_norm `norm`",
        &["[63]", "64"],
    );
    let fid = g
        .input("fid", std::slice::from_ref(&seq), DType::F32)
        .unwrap();
    shape_err(g.gather("g", x, 0, fid), "gather `g`", &["i32"]);
    shape_err(g.softmax("sm", x, 2), "softmax `sm`", &["axis 2"]);
    let cache = g.input("cache", &[c(512), c(64)], DType::F16).unwrap();
    shape_err(
        g.write_into("store", cache, x, 0, &(&past + 1)),
        "write_into `store`",
        &["past + seq + 1"],
    );
    assert!(g.write_into("store_ok", cache, x, 0, &past).is_ok());
    shape_err(
        g.narrow("nar", cache, 1, &c(0), &c(2)),
        "narrow `nar`",
        &["axis 1"],
    );
    // Dims must be provably non-negative and use declared symbols.
    assert!(matches!(
        g.input("neg", &[&seq - 2], DType::F16),
        Err(SymShapeError::Shape { .. })
    ));
    assert!(g
        .input("unknown", &[Expr::sym("batch")], DType::F16)
        .unwrap_err()
        .to_string()
        .contains("batch"));
    assert!(matches!(
        g.shape(TensorId::from_index(10_000)),
        Err(SymShapeError::UnknownTensor(10_000))
    ));
}

#[test]
fn unprovable_sizes_are_kept_apart_and_provable_ones_share() {
    let (mut g, seq, past) = graph();
    let a_in = g
        .input("a_in", std::slice::from_ref(&seq), DType::F32)
        .unwrap();
    let b_in = g
        .input("b_in", std::slice::from_ref(&past), DType::F32)
        .unwrap();
    // a [seq] dies before b [past] is made; neither size dominates the other, so no sharing.
    let a = g.unary("neg", "a", a_in).unwrap();
    let a2 = g.unary("neg", "a2", a).unwrap();
    let b = g.unary("neg", "b", b_in).unwrap();
    let b2 = g.unary("neg", "b2", b).unwrap();
    // c [2*seq] dominates a and may take a's buffer once a is dead.
    let cc = g.concat("c", &[a2, a2], 0).unwrap();
    let out = g.unary("neg", "out", cc).unwrap();
    g.mark_output(b2).unwrap();
    g.mark_output(out).unwrap();
    let plan = g.plan(PlanOptions::default()).unwrap();
    assert_ne!(
        plan.buffer_of(a),
        plan.buffer_of(b),
        "seq vs past sizes cannot share"
    );
    assert_eq!(
        plan.buffer_of(a),
        plan.buffer_of(cc),
        "2*seq >= seq: a's buffer grows for c"
    );
    let buf = plan.buffer_of(a).unwrap();
    assert_eq!(plan.buffers()[buf].size.to_string(), "8*seq");
}

#[test]
fn bad_domains_and_bindings_are_errors() {
    let mut d = Domain::new();
    d.symbol("seq", 1, 4).unwrap();
    assert!(matches!(
        d.constrain_sum_at_most(&["seq"], 0),
        Err(SymShapeError::InfeasibleConstraint { .. })
    ));
    assert!(matches!(
        d.constrain_sum_at_most(&["nope"], 3),
        Err(SymShapeError::UnknownSymbol(_))
    ));
    let mut g = Graph::new(d);
    let x = g.input("x", &[Expr::sym("seq")], DType::F32).unwrap();
    let y = g.unary("neg", "y", x).unwrap();
    g.mark_output(y).unwrap();
    let plan = g.plan(PlanOptions::default()).unwrap();
    assert!(plan.bind(&[("past", 1)]).is_err());
    assert!(plan.bind(&[("seq", 1), ("past", 1)]).is_err());
    assert!(matches!(
        plan.evaluate(&[5]),
        Err(SymShapeError::OutOfRange { .. })
    ));
    assert!(matches!(
        plan.evaluate(&[1, 2]),
        Err(SymShapeError::WrongBindingCount { .. })
    ));
    assert!(g.plan(PlanOptions { alignment: 3 }).is_err());
    let dims = symshape::models::DecoderDims {
        layers: 1,
        hidden: 8,
        heads: 3,
        kv_heads: 2,
        head_dim: 2,
        ffn: 8,
        vocab: 5,
        max_ctx: 8,
        dtype_bytes: 2,
    };
    assert!(matches!(
        symshape::models::llama_decoder(&dims),
        Err(SymShapeError::InvalidDims(_))
    ));
    let dims = symshape::models::DecoderDims {
        heads: 2,
        dtype_bytes: 3,
        ..dims
    };
    assert!(matches!(
        symshape::models::llama_decoder(&dims),
        Err(SymShapeError::InvalidDims(_))
    ));
}
