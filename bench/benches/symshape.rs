//! Per-step cost of the symshape evaluator: every size, dim and offset of a planned 32-layer
//! Llama-2-7B-shaped decoder for one concrete (seq, past).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use symshape::models::{llama_decoder, DecoderDims};
use symshape::PlanValues;

fn dims() -> DecoderDims {
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

fn bench(c: &mut Criterion) {
    let started = std::time::Instant::now();
    let Ok(model) = llama_decoder(&dims()) else {
        eprintln!("symshape bench: building the decoder plan failed");
        return;
    };
    let plan_time = started.elapsed();
    let plan = &model.plan;
    println!(
        "symshape: 32-layer plan built in {:.1} ms: {} tensors, {} ops, {} buffers, {} compiled expressions",
        plan_time.as_secs_f64() * 1e3,
        model.graph.tensors().len(),
        model.graph.ops().len(),
        plan.buffers().len(),
        plan.compiled_expression_count()
    );
    let mut values = PlanValues::default();
    let mut step = 0i64;
    c.bench_function("symshape/evaluate_plan_llama7b_32_layers_decode", |b| {
        b.iter(|| {
            step = (step + 1) % 4000;
            let r = model.evaluate_into(black_box(1), black_box(step), &mut values);
            black_box((&r, values.arena_bytes));
        })
    });
    c.bench_function("symshape/evaluate_plan_llama7b_32_layers_prefill", |b| {
        b.iter(|| {
            let r = model.evaluate_into(black_box(512), black_box(0), &mut values);
            black_box((&r, values.arena_bytes));
        })
    });
    // Reading every activation's location after one evaluation (what an engine does per step).
    let slots = model.slots(1, 100);
    if plan.evaluate_into(&slots, &mut values).is_ok() {
        let ids: Vec<_> = (0..model.graph.tensors().len())
            .map(symshape::TensorId::from_index)
            .collect();
        c.bench_function("symshape/evaluate_and_locate_all_tensors_32_layers", |b| {
            b.iter(|| {
                let _ = plan.evaluate_into(black_box(&slots), &mut values);
                let mut acc = 0u64;
                for t in &ids {
                    if let Some(l) = plan.location(&values, *t) {
                        acc = acc.wrapping_add(l.offset ^ l.bytes);
                    }
                }
                black_box(acc)
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
