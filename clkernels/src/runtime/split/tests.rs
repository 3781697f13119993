//! The split planner at the bundled profiles' real limits and at made-up ones.
#![allow(clippy::unwrap_used)]

use rand::{Rng, SeedableRng};

use super::*;
use crate::runtime::DeviceProfile;

/// Gemma 2B's vocabulary and the bytes of one f16 embedding row (hidden 2048).
const GEMMA_VOCAB: usize = 256_000;
const GEMMA_F16_ROW: u64 = 2048 * 2;

fn limits_of(profile: &DeviceProfile) -> SplitLimits {
    let (l, _) = profile.limits_in_effect().unwrap();
    SplitLimits {
        max_alloc_bytes: l.max_alloc_bytes.unwrap(),
        base_addr_align_bits: l.base_addr_align_bits.unwrap(),
    }
}

/// Every invariant a plan must keep: parts cover the rows in order, each fits, boundaries aligned.
fn check(split: &RowSplit, rows: usize, row_bytes: u64, limits: SplitLimits) {
    let mut next = 0;
    let align = u64::from(limits.base_addr_align_bits / 8).max(1);
    for p in split.parts() {
        assert_eq!(p.first, next, "{split:?}");
        assert!(p.rows > 0);
        if limits.max_alloc_bytes > 0 {
            assert!(p.rows as u64 * row_bytes <= limits.max_alloc_bytes, "{p:?}");
        }
        if split.is_split() {
            assert_eq!(p.first % ROW_QUANTUM, 0, "{p:?}");
            assert_eq!((p.first as u64 * 4) % align, 0, "{p:?}");
        }
        next += p.rows;
    }
    assert_eq!(next, rows);
}

/// Gemma 2's 2B model: the same vocabulary at hidden 2304, an f16 embedding of 1.18 GB.
const GEMMA2_F16_ROW: u64 = 2304 * 2;

#[test]
fn embeddings_split_exactly_where_one_allocation_is_too_small() {
    // Gemma 2B's f16 embedding is 1_048_576_000 bytes: 0.98 GiB, just inside the 1 GiB of the Adreno 750 and
    // phone-min. Gemma 2 2B's, 1_179_648_000 bytes, is not.
    for row_bytes in [GEMMA_F16_ROW, GEMMA2_F16_ROW] {
        let bytes = GEMMA_VOCAB as u64 * row_bytes;
        for profile in DeviceProfile::bundled().unwrap() {
            let limits = limits_of(&profile);
            let split = RowSplit::plan(GEMMA_VOCAB, row_bytes, limits).unwrap();
            check(&split, GEMMA_VOCAB, row_bytes, limits);
            assert_eq!(
                split.is_split(),
                bytes > limits.max_alloc_bytes,
                "{}: {bytes} bytes against {}",
                profile.name,
                limits.max_alloc_bytes
            );
            if split.is_split() {
                // Just over one allocation: two nearly equal parts.
                assert_eq!(split.parts().len(), 2, "{}", profile.name);
                let (a, b) = (split.parts()[0].rows, split.parts()[1].rows);
                assert!(a.abs_diff(b) <= limits.quantum(), "{a} {b}");
            }
        }
    }
    let named = |n: &str, row_bytes| {
        RowSplit::plan(
            GEMMA_VOCAB,
            row_bytes,
            limits_of(&DeviceProfile::named(n).unwrap()),
        )
        .unwrap()
        .is_split()
    };
    assert!(!named("adreno-750", GEMMA_F16_ROW));
    assert!(named("adreno-750", GEMMA2_F16_ROW));
    assert!(named("phone-min", GEMMA2_F16_ROW));
    assert!(
        !named("mali-g610-mc6", GEMMA2_F16_ROW),
        "7.3 GiB allocations"
    );
    // Half the Adreno 750's limit (a driver that keeps some back) splits Gemma 2B's in two.
    let half = SplitLimits {
        max_alloc_bytes: 1 << 29,
        base_addr_align_bits: 1024,
    };
    let split = RowSplit::plan(GEMMA_VOCAB, GEMMA_F16_ROW, half).unwrap();
    check(&split, GEMMA_VOCAB, GEMMA_F16_ROW, half);
    assert_eq!(split.parts().len(), 2);
}

#[test]
fn tensors_that_fit_stay_whole_under_every_profile() {
    // M0E4 Gemma embedding codes (1 KiB a row), Llama 3.2 1B's and Qwen3 1.7B's f16 embeddings.
    for (rows, row_bytes) in [
        (GEMMA_VOCAB, 1024),
        (128_256, 2048 * 2),
        (151_936, 2048 * 2),
    ] {
        for profile in DeviceProfile::bundled().unwrap() {
            let split = RowSplit::plan(rows, row_bytes, limits_of(&profile)).unwrap();
            assert_eq!(split, RowSplit::whole(rows), "{} {rows}", profile.name);
        }
    }
}

#[test]
fn an_unknown_limit_never_splits_and_an_impossible_one_is_an_error() {
    let unknown = SplitLimits {
        max_alloc_bytes: 0,
        base_addr_align_bits: 0,
    };
    assert!(!RowSplit::plan(1 << 20, 1 << 20, unknown)
        .unwrap()
        .is_split());
    let tiny = SplitLimits {
        max_alloc_bytes: 4096,
        base_addr_align_bits: 1024,
    };
    let e = RowSplit::plan(1000, 128, tiny).unwrap_err();
    assert_eq!(e.quantum, 64);
    assert_eq!(e.block, 64 * 128);
    let text = e.to_string();
    assert!(text.contains("8192") && text.contains("4096"), "{text}");
}

#[test]
fn the_quantum_follows_the_alignment() {
    let q = |bits| {
        SplitLimits {
            max_alloc_bytes: 1,
            base_addr_align_bits: bits,
        }
        .quantum()
    };
    assert_eq!(q(0), 64);
    assert_eq!(q(1024), 64); // 128 bytes: 32 f32 outputs
    assert_eq!(q(4096), 128); // 512 bytes: 128 f32 outputs
    assert_eq!(q(8 * 1000), 1000 * 64 / 8); // 1000 bytes: 250 outputs, lcm(64, 250)
}

#[test]
fn random_plans_keep_every_invariant() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    for _ in 0..2000 {
        let rows = rng.random_range(1..100_000);
        let row_bytes = rng.random_range(1..5000u64);
        let limits = SplitLimits {
            max_alloc_bytes: rng.random_range(0..(rows as u64 * row_bytes * 2)),
            base_addr_align_bits: 8 << rng.random_range(0..10),
        };
        match RowSplit::plan(rows, row_bytes, limits) {
            Ok(split) => check(&split, rows, row_bytes, limits),
            Err(e) => assert!(e.block > limits.max_alloc_bytes),
        }
    }
}
