//! The README's phone tables are what [`phone_plan_markdown`] computes today, and its shape-only footprint is the
//! engine's [`Footprint::of_model`] on real (synthetic) models of several shapes.
#![allow(clippy::unwrap_used)]

use bench::end_to_end::{synthetic_model, BenchArch};
use bench::phone_plan::{footprint_of_shapes, phone_plan_markdown, plan_models};
use engine::gpu::Footprint;
use fp4::GroupSize;
use kvcache::KvDtype;

#[test]
fn the_shape_only_footprint_is_the_engines() {
    let small = |arch: BenchArch, hidden, ffn, heads, kv_heads, head_dim, tied| {
        let mut c = arch.config(Some(2));
        let s = &mut c.shape;
        (s.hidden, s.ffn, s.heads, s.kv_heads, s.head_dim, s.vocab) =
            (hidden, ffn, heads, kv_heads, head_dim, 300);
        c.tied_embeddings = tied;
        c
    };
    let configs = [
        small(BenchArch::Qwen15_4b, 128, 352, 4, 2, 32, false),
        small(BenchArch::Gemma2b, 64, 172, 2, 1, 64, true),
        small(BenchArch::Llama2_7b, 96, 256, 3, 3, 32, false),
        // q/k norms, and post norms with and without them.
        small(BenchArch::Qwen3_1_7b, 64, 128, 2, 1, 32, true),
        small(BenchArch::Gemma2_2b, 64, 128, 2, 1, 32, true),
        small(BenchArch::Gemma3_1b, 64, 128, 2, 1, 32, true),
    ];
    for c in configs {
        let model = synthetic_model(&c, GroupSize::G32, 1, false).unwrap();
        for kv in [KvDtype::F16, KvDtype::F32] {
            assert_eq!(
                footprint_of_shapes(&c, kv).unwrap(),
                Footprint::of_model(&model, kv, engine::gpu::GpuOptions::default().max_chunk)
                    .unwrap(),
                "{:?}",
                c.shape
            );
        }
    }
    for m in plan_models() {
        m.config.validate().unwrap();
    }
}

#[test]
fn the_readme_tables_are_the_generated_ones() {
    let table = phone_plan_markdown().unwrap();
    for name in [
        "adreno-750",
        "phone-min",
        "Gemma-2B",
        "Qwen3-1.7B",
        "Gemma-2-2B (see below)",
        "Llama-3.2-1B",
    ] {
        assert!(table.contains(name), "{name}");
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let (start, end) = ("<!-- phone-plan:start -->\n", "<!-- phone-plan:end -->");
    let from = readme
        .find(start)
        .expect("README lacks the phone-plan markers")
        + start.len();
    let to = readme[from..].find(end).unwrap() + from;
    assert_eq!(
        &readme[from..to],
        table,
        "README.md is stale: run scripts/update-phone-plan (it writes `tlite devices --phone-plan` between the markers)"
    );
}
