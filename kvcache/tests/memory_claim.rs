//! The paper's memory claim: a sub-tensor cache keeps one copy of the KV cache, while a "copy-out" design (past KV as
//! input, a separate present KV as output, as in ONNX-exported models) keeps two and copies the past every step.
//!
//! Both designs run the same simulated generation on the counting host backend; the figures are printed (run with
//! `--nocapture`) and checked against the closed forms.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{random_tokens, view_data, Dims, TokenKv};
use kvcache::{
    FullPolicy, HostBuffer, HostStorage, KvConfig, KvDtype, KvLayout, KvModelShape, KvPart,
    KvSequence, KvStorage, LayerBuffers,
};

/// The copy-out baseline: per layer, a past and a present buffer of the same layout; each step copies the past into
/// the present, writes the new tokens after it, and the present becomes the next step's past.
struct CopyOut {
    past: Vec<LayerBuffers<HostBuffer>>,
    present: Vec<LayerBuffers<HostBuffer>>,
    layout: KvLayout,
    len: usize,
}

impl CopyOut {
    fn new(storage: &HostStorage, config: &KvConfig) -> Self {
        let bytes = config.buffer_bytes().unwrap();
        let alloc = || {
            (0..config.shape.layers)
                .map(|_| LayerBuffers {
                    key: storage.allocate(bytes).unwrap(),
                    value: storage.allocate(bytes).unwrap(),
                })
                .collect::<Vec<_>>()
        };
        CopyOut {
            past: alloc(),
            present: alloc(),
            layout: config.layout(),
            len: 0,
        }
    }

    fn step(&mut self, storage: &HostStorage, dims: &Dims, tokens: &[TokenKv]) {
        let elem = self.layout.dtype.bytes();
        let write = self.layout.positions_view(self.len, tokens.len());
        for (layer, (past, present)) in self.past.iter().zip(&self.present).enumerate() {
            for (part, src, dst) in [
                (KvPart::Key, &past.key, &present.key),
                (KvPart::Value, &past.value, &present.value),
            ] {
                if self.len > 0 {
                    for head in 0..self.layout.kv_heads {
                        let at = self.layout.element_index(head, 0) * elem;
                        let len = (self.len * self.layout.head_dim) as u64 * elem;
                        storage.copy_between(src, at, dst, at, len).unwrap();
                    }
                }
                storage
                    .write_view(dst, &write, &view_data(dims, tokens, layer, part))
                    .unwrap();
            }
        }
        std::mem::swap(&mut self.past, &mut self.present);
        self.len += tokens.len();
    }
}

#[test]
fn one_copy_instead_of_two() {
    // stories260K's attention shape: 5 layers, 4 kv heads of 8, context 512; f16 storage.
    let dims = Dims {
        layers: 5,
        kv_heads: 4,
        head_dim: 8,
        dtype: KvDtype::F16,
    };
    let shape = KvModelShape {
        layers: dims.layers,
        kv_heads: dims.kv_heads,
        head_dim: dims.head_dim,
        dtype: dims.dtype,
    };
    let config = KvConfig::new(shape, 512).unwrap();
    let total = config.total_bytes().unwrap();
    let pos_bytes = shape.position_bytes_total().unwrap();

    let sub_storage = Arc::new(HostStorage::unlimited());
    let mut seq =
        KvSequence::new(Arc::clone(&sub_storage), config.clone(), FullPolicy::Error).unwrap();
    let copy_storage = HostStorage::unlimited();
    let mut copy_out = CopyOut::new(&copy_storage, &config);

    // A 64-token prompt, then 448 decode steps: the cache ends full.
    let mut expected_copy_out_bytes = 0u64;
    let mut n = 64;
    let mut seed = 1u64;
    while seq.len() < 512 {
        let tokens = random_tokens(&dims, n, seed);
        seed += 1;
        expected_copy_out_bytes += seq.len() as u64 * pos_bytes;
        let step = seq.begin_step(n).unwrap();
        common::write_step(&sub_storage, &seq, &dims, &step, &tokens);
        seq.commit(step).unwrap();
        copy_out.step(&copy_storage, &dims, &tokens);
        n = 1;
    }
    // Both designs end with the same cache contents (the baseline is a fair one).
    let full = config.layout().positions_view(0, 512);
    for layer in 0..dims.layers {
        for part in KvPart::BOTH {
            let ours = sub_storage
                .read_view(seq.buffer(layer, part).unwrap(), &full)
                .unwrap();
            let past = &copy_out.past[layer];
            let theirs_buffer = match part {
                KvPart::Key => &past.key,
                KvPart::Value => &past.value,
            };
            assert_eq!(ours, copy_storage.read_view(theirs_buffer, &full).unwrap());
        }
    }

    let sub = sub_storage.counters();
    let copy = copy_storage.counters();
    println!("KV cache, 5 layers x 4 kv heads x 8 x 512 positions, f16; 1 + 448 steps:");
    println!(
        "  sub-tensor (this crate): {:>9} bytes allocated, {:>10} bytes copied",
        sub.bytes_allocated, sub.bytes_copied
    );
    println!(
        "  copy-out (past + present): {:>7} bytes allocated, {:>10} bytes copied",
        copy.bytes_allocated, copy.bytes_copied
    );
    assert_eq!(sub.bytes_allocated, total);
    assert_eq!(copy.bytes_allocated, 2 * total);
    assert_eq!(
        config
            .plan(&kvcache::MemoryLimits {
                max_alloc_bytes: u64::MAX,
                budget_bytes: u64::MAX
            })
            .unwrap()
            .copy_out_total_bytes,
        copy.bytes_allocated
    );
    assert_eq!(sub.bytes_copied, 0);
    assert_eq!(copy.bytes_copied, expected_copy_out_bytes);
    // Both wrote each new position exactly once.
    assert_eq!(sub.bytes_written, copy.bytes_written);
}
