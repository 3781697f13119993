//! Plans a Llama-2-7B-shaped decoder over the symbols `seq` and `past` and prints what the plan gives a runtime:
//! `cargo run -p symshape --release --example llama_plan`.
//!
//! Planning runs once; afterwards each step's sizes and offsets come from one call to the compiled evaluator.

use std::time::Instant;

use symshape::models::{llama_decoder, DecoderDims};
use symshape::{PlanValues, SymShapeError};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn main() -> Result<(), SymShapeError> {
    let dims = DecoderDims {
        layers: 32,
        hidden: 4096,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        ffn: 11008,
        vocab: 32000,
        max_ctx: 4096,
        dtype_bytes: 2,
    };
    let started = Instant::now();
    let model = llama_decoder(&dims)?;
    let plan = &model.plan;
    println!(
        "planned {} tensors into {} buffers in {:.1} ms ({} distinct compiled expressions)",
        model.graph.tensors().len(),
        plan.buffers().len(),
        started.elapsed().as_secs_f64() * 1e3,
        plan.compiled_expression_count()
    );
    println!("peak activation bytes:  {}", plan.peak_bytes());
    println!("without reuse it would be: {}", plan.naive_bytes());
    for (i, buffer) in plan.buffers().iter().enumerate() {
        println!(
            "buffer {i}: {} bytes, {} tensors",
            buffer.size,
            buffer.tensors.len()
        );
    }

    let mut values = PlanValues::default();
    println!(
        "\n{:>6} {:>6} {:>12} {:>16}",
        "seq", "past", "arena MiB", "q dims (layer 0)"
    );
    for (seq, past) in [(1, 0), (1, 4095), (128, 0), (512, 1024), (4096, 0)] {
        model.evaluate_into(seq, past, &mut values)?;
        let q = plan.dims(&values, model.layers[0].q).unwrap_or_default();
        println!(
            "{seq:>6} {past:>6} {:>12.1} {:>16}",
            mib(values.arena_bytes),
            format!("{q:?}")
        );
    }

    let steps = 100_000;
    let started = Instant::now();
    for i in 0..steps {
        model.evaluate_into(1, i % 4095, &mut values)?;
    }
    let per_step = started.elapsed().as_secs_f64() / f64::from(steps as u32);
    println!(
        "\nper-step evaluation (all sizes and offsets): {:.0} ns",
        per_step * 1e9
    );

    let (bytes, seq, past) = model.arena_bytes_at_max_context()?;
    println!(
        "largest arena over the whole domain: {:.1} MiB at seq = {seq}, past = {past}",
        mib(bytes)
    );
    Ok(())
}
