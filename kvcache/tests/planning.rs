//! Capacity planning against a brute-force search, and the errors it gives.
#![allow(clippy::unwrap_used)]

use kvcache::{KvConfig, KvDtype, KvError, KvModelShape, MemoryLimits};
use proptest::prelude::*;

fn shape() -> impl Strategy<Value = KvModelShape> {
    (1usize..80, 1usize..64, 1usize..512, prop::bool::ANY).prop_map(
        |(layers, kv_heads, head_dim, f16)| KvModelShape {
            layers,
            kv_heads,
            head_dim,
            dtype: if f16 { KvDtype::F16 } else { KvDtype::F32 },
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The largest fitting context fits; one more position does not.
    #[test]
    fn largest_fitting_ctx_is_tight(
        shape in shape(),
        max_alloc in 1u64..(1 << 32),
        budget in 1u64..(1 << 36),
    ) {
        let limits = MemoryLimits { max_alloc_bytes: max_alloc, budget_bytes: budget };
        let largest = shape.largest_fitting_ctx(&limits).unwrap();
        // Naive: bytes counted element by element.
        let buffer = |ctx: usize| (shape.kv_heads * ctx * shape.head_dim) as u64 * shape.dtype.bytes();
        let fits = |ctx: usize| buffer(ctx) <= max_alloc && 2 * shape.layers as u64 * buffer(ctx) <= budget;
        prop_assert!(!fits(largest + 1));
        if largest > 0 {
            prop_assert!(fits(largest));
            let plan = KvConfig::new(shape, largest).unwrap().plan(&limits).unwrap();
            prop_assert_eq!(plan.buffer_bytes, buffer(largest));
            prop_assert_eq!(plan.total_bytes, 2 * shape.layers as u64 * buffer(largest));
            prop_assert_eq!(plan.copy_out_total_bytes, 2 * plan.total_bytes);
            prop_assert_eq!(plan.buffers, 2 * shape.layers);
            prop_assert!(plan.sequences_in_budget >= 1);
        }
        let over = KvConfig::new(shape, largest + 1).unwrap().plan(&limits);
        let refused = matches!(over, Err(KvError::BufferTooLarge { .. } | KvError::OverBudget { .. }));
        prop_assert!(refused);
    }
}

#[test]
fn llama2_7b_on_a_phone_allocation_cap() {
    // Llama 2 7B: 32 layers, 32 kv heads, head_dim 128, f16. A 256 MiB cap allows 32768 positions per buffer;
    // a 2 GiB budget allows 4096 positions for the whole cache.
    let shape = KvModelShape {
        layers: 32,
        kv_heads: 32,
        head_dim: 128,
        dtype: KvDtype::F16,
    };
    let limits = MemoryLimits {
        max_alloc_bytes: 256 << 20,
        budget_bytes: 2 << 30,
    };
    let config = KvConfig::new(shape, 4096).unwrap();
    let plan = config.plan(&limits).unwrap();
    assert_eq!(plan.buffer_bytes, 32 << 20);
    assert_eq!(plan.total_bytes, 2 << 30);
    assert_eq!(shape.largest_fitting_ctx(&limits).unwrap(), 4096);
    let err = KvConfig::new(shape, 65536)
        .unwrap()
        .plan(&limits)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            KvError::BufferTooLarge {
                largest_fitting_ctx: 32768,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("268435456") && text.contains("32768"),
        "{text}"
    );
}

#[test]
fn zero_sizes_and_overflow_are_refused() {
    let ok = KvModelShape {
        layers: 1,
        kv_heads: 1,
        head_dim: 1,
        dtype: KvDtype::F32,
    };
    assert!(matches!(
        KvConfig::new(ok, 0),
        Err(KvError::InvalidConfig {
            field: "max_ctx",
            ..
        })
    ));
    assert!(matches!(
        KvConfig::new(KvModelShape { kv_heads: 0, ..ok }, 8),
        Err(KvError::InvalidConfig {
            field: "kv_heads",
            ..
        })
    ));
    let huge = KvModelShape {
        layers: usize::MAX / 2,
        kv_heads: usize::MAX / 2,
        head_dim: 2,
        dtype: KvDtype::F32,
    };
    assert!(matches!(
        KvConfig::new(huge, usize::MAX),
        Err(KvError::SizeOverflow { .. })
    ));
}
