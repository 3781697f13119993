//! The budget arithmetic on hand-made footprints: what a context needs, the largest that fits, and the errors.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A SmolLM2-135M-like model: 30 layers, 3 KV heads of 64 f16 values, so 23 040 bytes of KV cache per position.
fn smol() -> Footprint {
    Footprint {
        weights: 100 * MIB,
        largest_weight: NamedBuffer {
            name: "layers.0.w_up".into(),
            bytes: 28 * MIB,
        },
        kv_per_position: 2 * 30 * 3 * 64 * 2,
        kv_buffer_per_position: 3 * 64 * 2,
        kv_rings: None,
        activations: ActivationSizes::affine(200_000, 30_000),
        programs: PROGRAM_ALLOWANCE_BYTES,
    }
}

fn device(global_mem: u64, max_alloc: u64) -> DeviceMemory {
    DeviceMemory {
        device: "Phone GPU (as test)".into(),
        global_mem,
        max_alloc,
    }
}

fn request(requested: Option<usize>, budget: MemBudget) -> ContextRequest {
    ContextRequest {
        requested,
        model_max: 8192,
        max_chunk: 256,
        budget,
    }
}

#[test]
fn needs_add_every_part() {
    let f = smol();
    let n = f.needs(1024, 256);
    assert_eq!(n.kv_cache, 1024 * 23_040);
    assert_eq!(n.activations, 200_000 + 256 * 30_000);
    assert_eq!(
        n.total(),
        100 * MIB + 1024 * 23_040 + 200_000 + 256 * 30_000 + PROGRAM_ALLOWANCE_BYTES
    );
    let text = n.to_string();
    for part in [
        "weights 100.0 MiB",
        "KV cache 22.5 MiB for 1024 tokens",
        "programs 16.0 MiB",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
}

#[test]
fn the_default_context_is_the_models_maximum_when_it_fits() {
    let c = choose_context(
        &smol(),
        &device(8 * GIB, GIB),
        &request(None, MemBudget::default()),
    )
    .unwrap();
    assert_eq!(
        (c.ctx, c.reason, c.max_chunk),
        (8192, ContextReason::ModelMaximum, 256)
    );
    assert_eq!(c.budget_bytes, Some(6 * GIB));
    let line = c.to_string();
    assert!(
        line.contains("context 8192 tokens (the model's maximum"),
        "{line}"
    );
    assert!(
        line.contains("75% of 8.00 GiB global memory of Phone GPU (as test)"),
        "{line}"
    );
}

#[test]
fn a_small_budget_gets_the_largest_context_that_fits() {
    let f = smol();
    let budget = MemBudget::Bytes(200 * MIB);
    let c = choose_context(&f, &device(8 * GIB, GIB), &request(None, budget)).unwrap();
    assert_eq!(c.reason, ContextReason::Budget);
    assert!(f.needs(c.ctx, 256).total() <= 200 * MIB);
    assert!(f.needs(c.ctx + 1, 256).total() > 200 * MIB);
    let line = c.to_string();
    assert!(
        line.contains("the largest that fits the memory budget; the model allows 8192"),
        "{line}"
    );
    assert!(line.contains("200.0 MiB (--mem-budget"), "{line}");
}

#[test]
fn the_largest_allocation_caps_the_context_too() {
    let f = smol();
    // One K buffer of 384 bytes per position may take 1 MiB: 2730 positions.
    let c = choose_context(
        &f,
        &device(8 * GIB, MIB),
        &request(None, MemBudget::default()),
    );
    // The largest weight (28 MiB) does not fit 1 MiB either: that is the error.
    let e = c.unwrap_err().to_string();
    assert!(
        e.contains("layers.0.w_up takes 28.0 MiB") && e.contains("at most 1.0 MiB"),
        "{e}"
    );
    let mut small = f.clone();
    small.largest_weight.bytes = MIB / 2;
    let c = choose_context(
        &small,
        &device(8 * GIB, MIB),
        &request(None, MemBudget::default()),
    )
    .unwrap();
    assert_eq!((c.ctx, c.reason), (2730, ContextReason::MaxAllocation));
    assert!(c
        .to_string()
        .contains("per-layer KV buffers fit one allocation of 1.0 MiB"));
    // Asked for more: the buffers are named, and so is the budget when that does not fit either.
    let asked = |budget| request(Some(4096), budget);
    let e = choose_context(&small, &device(8 * GIB, MIB), &asked(MemBudget::default()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a context of 4096 tokens needs per-layer KV buffers of 1.5 MiB"),
        "{e}"
    );
    assert!(e.contains("lower --ctx to at most 2730"), "{e}");
    let e = choose_context(&small, &device(8 * GIB, MIB), &asked(MemBudget::Bytes(MIB)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("memory budget is 1.0 MiB") && e.contains("4096 tokens need per-layer"),
        "{e}"
    );
}

#[test]
fn a_requested_context_that_does_not_fit_is_an_error_naming_the_numbers() {
    let f = smol();
    let e = choose_context(
        &f,
        &device(GIB, GIB),
        &request(Some(8192), MemBudget::Bytes(200 * MIB)),
    )
    .unwrap_err()
    .to_string();
    let fit = choose_context(
        &f,
        &device(GIB, GIB),
        &request(None, MemBudget::Bytes(200 * MIB)),
    )
    .unwrap()
    .ctx;
    let total = size(f.needs(8192, 256).total());
    for part in [
        format!("needs {total}"),
        "weights 100.0 MiB".to_string(),
        "KV cache 180.0 MiB for 8192 tokens".to_string(),
        "memory budget is 200.0 MiB".to_string(),
        format!("lower --ctx to at most {fit}"),
    ] {
        assert!(e.contains(&part), "{part}: {e}");
    }
    // Nothing fits at all.
    let e = choose_context(
        &f,
        &device(GIB, GIB),
        &request(Some(16), MemBudget::Bytes(10 * MIB)),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not even one token of context fits"), "{e}");
    let e = choose_context(
        &f,
        &device(GIB, GIB),
        &request(None, MemBudget::Bytes(10 * MIB)),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("not even one token") && e.contains("for 1 tokens"),
        "{e}"
    );
}

#[test]
fn requests_are_kept_or_capped_at_the_models_maximum() {
    let f = smol();
    let d = device(8 * GIB, GIB);
    let c = choose_context(&f, &d, &request(Some(100), MemBudget::default())).unwrap();
    assert_eq!(
        (c.ctx, c.reason, c.max_chunk),
        (100, ContextReason::Requested, 100)
    );
    let c = choose_context(&f, &d, &request(Some(100_000), MemBudget::default())).unwrap();
    assert_eq!((c.ctx, c.reason), (8192, ContextReason::ModelMaximum));
    assert!(c.to_string().contains("100000 was requested"), "{c}");
    assert!(choose_context(&f, &d, &request(Some(0), MemBudget::default())).is_err());
}

#[test]
fn a_device_that_does_not_say_is_not_checked_by_share() {
    let f = smol();
    let c = choose_context(&f, &device(0, 0), &request(None, MemBudget::default())).unwrap();
    assert_eq!((c.ctx, c.budget_bytes), (8192, None));
    // An explicit size still applies.
    let c = choose_context(
        &f,
        &device(0, 0),
        &request(None, MemBudget::Bytes(150 * MIB)),
    )
    .unwrap();
    assert!(c.ctx < 8192);
}

proptest! {
    /// Whatever the sizes, the chosen context fits, one more does not (unless it is the maximum), and a request
    /// succeeds exactly when it fits.
    #[test]
    fn the_choice_is_the_largest_that_fits(
        weights in 0u64..(2 * GIB),
        kv_buffer in 1u64..100_000,
        layers in 1u64..100,
        per_token in 0u64..1_000_000,
        budget in 1u64..(4 * GIB),
        max_alloc in 1u64..(2 * GIB),
        model_max in 1usize..200_000,
        chunk in 1usize..1024,
        asked in 1usize..300_000,
    ) {
        let f = Footprint {
            weights,
            largest_weight: NamedBuffer { name: "w".into(), bytes: 1 },
            kv_per_position: 2 * layers * kv_buffer,
            kv_buffer_per_position: kv_buffer,
            kv_rings: None,
            activations: ActivationSizes::affine(1000, per_token),
            programs: PROGRAM_ALLOWANCE_BYTES,
        };
        let d = device(8 * GIB, max_alloc);
        let req = ContextRequest { requested: None, model_max, max_chunk: chunk, budget: MemBudget::Bytes(budget) };
        let fits = |ctx: usize| {
            f.needs(ctx, chunk.min(ctx)).total() <= budget && kv_buffer * ctx as u64 <= max_alloc
        };
        match choose_context(&f, &d, &req) {
            Ok(c) => {
                prop_assert!(fits(c.ctx));
                prop_assert!(c.ctx == model_max || !fits(c.ctx + 1));
                prop_assert_eq!(c.max_chunk, chunk.min(c.ctx));
            }
            Err(_) => prop_assert!(!fits(1)),
        }
        let asked_req = ContextRequest { requested: Some(asked), ..req };
        prop_assert_eq!(choose_context(&f, &d, &asked_req).is_ok(), fits(asked.min(model_max)));
    }
}

/// Ring layers count at their ring: the KV bytes and the largest buffer follow the window, and a budget that
/// holds the full caches to some context holds the ringed model to a longer one.
#[test]
fn ring_layers_count_at_their_ring() {
    let rings = KvRingFootprint {
        window: 512,
        ring_layers: 25,
        layers: 30,
    };
    let ringed = Footprint {
        kv_rings: Some(rings),
        ..smol()
    };
    let per_layer = 2 * 3 * 64 * 2;
    // At 8192 positions, steps of 256: 5 full layers of 8192 and 25 rings of 767.
    assert_eq!(
        ringed.kv_bytes(8192, 256),
        per_layer * (5 * 8192 + 25 * 767)
    );
    // A ring no smaller than the context is the context.
    assert_eq!(ringed.kv_bytes(600, 256), smol().kv_bytes(600, 256));
    assert_eq!(ringed.kv_largest_buffer(8192, 256), 3 * 64 * 2 * 8192);
    let all_rings = Footprint {
        kv_rings: Some(KvRingFootprint {
            ring_layers: 30,
            ..rings
        }),
        ..smol()
    };
    assert_eq!(all_rings.kv_largest_buffer(8192, 256), 3 * 64 * 2 * 767);
    assert_eq!(
        ringed.clone().without_rings().kv_bytes(8192, 256),
        smol().kv_bytes(8192, 256)
    );
    let budget = MemBudget::Bytes(400 * MIB);
    let mut req = request(None, budget);
    req.model_max = 1 << 20;
    let dev = device(4 * GIB, GIB);
    let full = choose_context(&smol(), &dev, &req).unwrap();
    let ring = choose_context(&ringed, &dev, &req).unwrap();
    assert!(
        ring.ctx > 2 * full.ctx,
        "rings {} vs full {}",
        ring.ctx,
        full.ctx
    );
    assert!(ring.needs.total() <= 400 * MIB);
}
