//! The engine's shape plan per step: `StepPlan::evaluate` (every activation's dims for one `(seq, past)`, checked
//! against the domain), which every `GpuModel::step` calls before enqueueing; and, printed once, the activation
//! bytes the plan allocates for every `tlite bench --arch` shape beside the hand-sized scratch it replaced.

use std::hint::black_box;

use bench::end_to_end::{ActivationFigures, BenchArch};
use criterion::{criterion_group, criterion_main, Criterion};
use engine::gpu::StepPlan;

const ARCHS: [&str; 5] = [
    "llama2-7b",
    "gemma-2b",
    "qwen1.5-4b",
    "chatglm2-6b",
    "smollm2-135m",
];
/// `tlite bench`'s default prefill chunk, and the engine's default `max_chunk`.
const CHUNK: usize = 256;
const CTX: usize = 4096;

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn bench(c: &mut Criterion) {
    println!("activations at ctx {CTX}, chunk {CHUNK} (and chunk 1):");
    for name in ARCHS {
        let Ok(arch) = name.parse::<BenchArch>() else {
            continue;
        };
        let config = arch.config(None);
        let started = std::time::Instant::now();
        let (Ok(f), Ok(one)) = (
            ActivationFigures::of(&config, CTX, CHUNK),
            ActivationFigures::of(&config, CTX, 1),
        ) else {
            eprintln!("plan bench: planning {name} failed");
            continue;
        };
        println!(
            "  {name:<13} plan {:>8.2} MiB in {} buffers vs hand-sized {:>8.2} MiB ({:+.1} %); chunk 1: {:.2} vs {:.2} MiB; planned twice in {:.0} ms",
            mib(f.plan_bytes),
            f.plan_buffers,
            mib(f.scratch_bytes),
            100.0 * (f.plan_bytes as f64 / f.scratch_bytes as f64 - 1.0),
            mib(one.plan_bytes),
            mib(one.scratch_bytes),
            started.elapsed().as_secs_f64() * 1e3,
        );
    }
    for name in ["llama2-7b", "smollm2-135m"] {
        let Ok(arch) = name.parse::<BenchArch>() else {
            continue;
        };
        let Ok(mut plan) = StepPlan::new(&arch.config(None), CTX, CHUNK) else {
            eprintln!("plan bench: planning {name} failed");
            continue;
        };
        let mut past = 0usize;
        c.bench_function(&format!("plan/step_plan_evaluate_{name}_decode"), |b| {
            b.iter(|| {
                past = (past + 1) % (CTX - 1);
                black_box(plan.evaluate(black_box(1), black_box(past)).ok())
            })
        });
        c.bench_function(&format!("plan/step_plan_evaluate_{name}_prefill"), |b| {
            b.iter(|| black_box(plan.evaluate(black_box(CHUNK), black_box(1024)).ok()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
