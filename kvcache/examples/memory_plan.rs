//! Prints the KV cache size of a few models, one copy (sub-tensor) against two (copy-out), and the largest context
//! that fits typical phone limits.
//!
//! `cargo run -p tlite-kvcache --example memory_plan`

use kvcache::{KvConfig, KvDtype, KvError, KvModelShape, MemoryLimits};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn main() -> Result<(), KvError> {
    let models = [
        ("stories260K", 5, 4, 8, 512),
        ("Llama 2 7B", 32, 32, 128, 4096),
        ("Gemma 2B", 18, 1, 256, 8192),
        ("Qwen2 1.5B", 28, 2, 128, 32768),
        ("Llama 3 8B", 32, 8, 128, 8192),
    ];
    let phone = MemoryLimits {
        max_alloc_bytes: 256 << 20,
        budget_bytes: 2 << 30,
    };
    println!(
        "{:<12} {:>7} {:>12} {:>14} {:>12}  largest ctx (256 MiB alloc cap, 2 GiB budget)",
        "model", "ctx", "buffer MiB", "sub-tensor MiB", "copy-out MiB"
    );
    for (name, layers, kv_heads, head_dim, ctx) in models {
        let shape = KvModelShape {
            layers,
            kv_heads,
            head_dim,
            dtype: KvDtype::F16,
        };
        let config = KvConfig::new(shape, ctx)?;
        let unlimited = MemoryLimits {
            max_alloc_bytes: u64::MAX,
            budget_bytes: u64::MAX,
        };
        let plan = config.plan(&unlimited)?;
        println!(
            "{name:<12} {ctx:>7} {:>12.2} {:>14.2} {:>12.2}  {}",
            mib(plan.buffer_bytes),
            mib(plan.total_bytes),
            mib(plan.copy_out_total_bytes),
            shape.largest_fitting_ctx(&phone)?
        );
    }
    Ok(())
}
