//! Property test: append / speculative accept (commit, then truncate) / cancel / truncate / clear / context shift
//! against a naive `Vec` model of the sequence. Exact comparison: the model's values are pre-rounded to the storage
//! dtype.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{check_view, random_tokens, write_step, Dims, TokenKv};
use kvcache::{
    ContextShift, FullPolicy, HostStorage, KvConfig, KvDtype, KvError, KvModelShape, KvSequence,
    StorageLimits,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Begin a step of `n` tokens, write them, commit `accept` of them (all when `accept >= n`), or cancel.
    Step {
        n: usize,
        accept: usize,
        cancel: bool,
        seed: u64,
    },
    /// Roll back to `frac` of the current length.
    Truncate {
        frac: f64,
    },
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..12, 0usize..14, prop::bool::weighted(0.1), any::<u64>())
            .prop_map(|(n, accept, cancel, seed)| Op::Step { n, accept, cancel, seed }),
        2 => (0.0f64..1.0).prop_map(|frac| Op::Truncate { frac }),
        1 => Just(Op::Clear),
    ]
}

fn policy(max_ctx: usize) -> impl Strategy<Value = FullPolicy> {
    prop_oneof![
        Just(FullPolicy::Error),
        (0..max_ctx, 0usize..8).prop_map(|(keep_first, drop_at_least)| {
            FullPolicy::Shift(ContextShift {
                keep_first,
                drop_at_least,
            })
        }),
    ]
}

fn case() -> impl Strategy<Value = (Dims, usize, u64, FullPolicy, Vec<Op>)> {
    (
        1usize..3,
        1usize..4,
        prop::sample::select(vec![1usize, 3, 4, 8]),
        prop::bool::ANY,
        4usize..40,
        prop::sample::select(vec![0u64, 16, 64, 128, 4096]),
    )
        .prop_flat_map(|(layers, kv_heads, head_dim, f16, max_ctx, align)| {
            let dims = Dims {
                layers,
                kv_heads,
                head_dim,
                dtype: if f16 { KvDtype::F16 } else { KvDtype::F32 },
            };
            (
                Just(dims),
                Just(max_ctx),
                Just(align),
                policy(max_ctx),
                prop::collection::vec(op(), 1..40),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sequence_matches_naive_model((dims, max_ctx, align, policy, ops) in case()) {
        let storage = Arc::new(HostStorage::new(StorageLimits {
            max_alloc_bytes: u64::MAX,
            sub_region_align_bytes: align,
        }));
        let shape = KvModelShape {
            layers: dims.layers,
            kv_heads: dims.kv_heads,
            head_dim: dims.head_dim,
            dtype: dims.dtype,
        };
        let config = KvConfig::new(shape, max_ctx).unwrap();
        let mut seq = KvSequence::new(Arc::clone(&storage), config, policy).unwrap();
        let mut model: Vec<TokenKv> = Vec::new();
        let mut expected_copied = 0u64;
        let pos_bytes = shape.position_bytes_total().unwrap();

        for op in ops {
            match op {
                Op::Step { n, accept, cancel, seed } => {
                    let fits = model.len() + n <= max_ctx;
                    let result = seq.begin_step(n);
                    let step = match (policy, fits) {
                        (_, true) | (FullPolicy::Shift(_), false) => match (policy, result) {
                            (FullPolicy::Shift(s), Err(KvError::StepTooLarge { .. })) => {
                                prop_assert!(!fits && n > max_ctx - s.keep_first);
                                continue;
                            }
                            (_, r) => r.unwrap(),
                        },
                        (FullPolicy::Error, false) => {
                            prop_assert!(matches!(result, Err(KvError::Full { .. })), "{result:?}");
                            continue;
                        }
                    };
                    // Naive model of the shift: drop [k, k + d) and close the gap.
                    if let FullPolicy::Shift(s) = policy {
                        if !fits {
                            let needed = model.len() + n - max_ctx;
                            let d = s.drop_at_least.max(needed).min(model.len() - s.keep_first);
                            model.drain(s.keep_first..s.keep_first + d);
                            let report = step.shift().unwrap();
                            prop_assert_eq!(report.dropped, d);
                            prop_assert_eq!(report.keep_first, s.keep_first);
                            prop_assert_eq!(report.rerotate_slots(), s.keep_first..model.len());
                            let moved = (model.len() - s.keep_first) as u64 * pos_bytes;
                            prop_assert_eq!(report.bytes_copied, moved);
                            expected_copied += moved;
                        } else {
                            prop_assert!(step.shift().is_none());
                        }
                    }
                    prop_assert_eq!(step.start(), model.len());
                    prop_assert_eq!(step.write_view().first_position, model.len());
                    let tokens = random_tokens(&dims, n, seed);
                    write_step(&storage, &seq, &dims, &step, &tokens);
                    // The step's read view covers the old tokens and the new ones.
                    let mut with_new = model.clone();
                    with_new.extend(tokens.iter().cloned());
                    check_view(&storage, &seq, &dims, &step.read_view(), &with_new);
                    // A second step cannot begin while this one is open.
                    let busy = seq.begin_step(1).is_err();
                    prop_assert!(busy);
                    if cancel {
                        seq.cancel(step).unwrap();
                    } else if accept >= n {
                        seq.commit(step).unwrap();
                        model = with_new;
                    } else {
                        // A speculative step of which only `accept` tokens were verified.
                        let start = step.start();
                        seq.commit(step).unwrap();
                        seq.truncate(start + accept).unwrap();
                        model.extend(tokens.into_iter().take(accept));
                    }
                }
                Op::Truncate { frac } => {
                    let to = (model.len() as f64 * frac) as usize;
                    seq.truncate(to).unwrap();
                    model.truncate(to);
                    let too_long = seq.truncate(model.len() + 1);
                    let refused = matches!(too_long, Err(KvError::TruncateBeyondLength { .. }));
                    prop_assert!(refused);
                }
                Op::Clear => {
                    seq.clear().unwrap();
                    model.clear();
                }
            }
            prop_assert_eq!(seq.len(), model.len());
            check_view(&storage, &seq, &dims, &seq.committed_view(), &model);
        }
        // Only context shifts copy, and exactly the moved tail.
        prop_assert_eq!(storage.counters().bytes_copied, expected_copied);
        prop_assert_eq!(seq.stats().bytes_copied, expected_copied);
    }
}
