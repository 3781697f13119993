//! Embeddings and output heads larger than the device's largest allocation (issue 22, item 2): with a profile whose
//! `max_mem_alloc_size` is below the tiny models' embedding, the embedding and any untied head are stored in several
//! buffers, and every step's logits equal, bit for bit, those of the same model in one buffer each (the same kernels
//! run in the same order on each row; only the buffers differ). Both runs share every other limit (phone-min's), so
//! nothing else the engine chooses differs between them.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use clkernels::runtime::{DeviceProfile, Gpu, GpuOptions as OpenOptions, ProfileChoice};
use engine::generate::{LanguageModel, StepOutput, Want};
use engine::gpu::{Footprint, GpuModel, GpuOptions};
use engine::model::{self, LoadOptions, Model, WeightFormat};
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::{write_hf_folder, StoreDtype, TinySpec};
use kvcache::KvDtype;
use rand::{Rng, SeedableRng};

const M0E4: WeightFormat = WeightFormat::M0e4 {
    group: fp4::GroupSize::G32,
};

/// A device that allows `max_alloc` bytes per buffer and phone-min's values for every other limit.
fn device(max_alloc: u64) -> Gpu {
    let json =
        format!(r#"{{"short_name": "alloc-{max_alloc}", "max_mem_alloc_size": {max_alloc}}}"#);
    let profile = DeviceProfile::from_json(&json, "test").unwrap();
    Gpu::open_with(&OpenOptions {
        profile: ProfileChoice::Use(Box::new(profile)),
        ..OpenOptions::default()
    })
    .expect("an OpenCL device (PoCL on the dev box)")
}

fn tiny(arch: RefArch, dir: &Path, format: WeightFormat, keep_f16: bool) -> Model {
    // A vocabulary large enough that even an M0E4 table outweighs the activations' arena, which must fit one
    // allocation too.
    let spec = TinySpec::for_arch(arch);
    let spec = TinySpec {
        shape: symshape::models::ModelShape {
            vocab: 8192,
            ..spec.shape
        },
        ..spec
    };
    write_hf_folder(&spec, dir, StoreDtype::F32, 1).unwrap();
    model::load(
        dir,
        &LoadOptions {
            quantize: format,
            keep_embeddings_f16: keep_f16,
        },
    )
    .unwrap()
}

fn options() -> GpuOptions {
    GpuOptions {
        max_chunk: 8,
        kv_dtype: KvDtype::F32,
        max_ctx: Some(64),
        half_products: false,
        ..GpuOptions::default()
    }
}

fn logits(out: StepOutput) -> Vec<u32> {
    match out {
        StepOutput::Logits(v) => {
            assert!(v.iter().all(|x| x.is_finite()));
            v.iter().map(|x| x.to_bits()).collect()
        }
        other => panic!("asked for logits, got {other:?}"),
    }
}

/// The largest allocation that holds every buffer but the embedding and head: the largest layer weight, a layer's
/// KV buffer at 64 positions, the activations' arena, and 8 KiB.
fn tight_limit(m: &Model) -> u64 {
    let chunk = 8; // the max_chunk of `device`'s options
    let f = Footprint::of_model(m, KvDtype::F32, chunk).unwrap();
    f.largest_weight
        .bytes
        .max(f.kv_buffer_per_position * 64)
        .max(f.activations.arena_bytes(chunk, 64))
        .max(8 << 10)
}

#[test]
fn split_embeddings_and_heads_give_the_unsplit_logits_exactly() {
    let roomy = device(1 << 30);
    let mut split_seen = (false, false);
    // f16 tables with M0E4 layers (the phone default), M0E4 tables, and all f16.
    for (format, keep_f16) in [(M0E4, true), (M0E4, false), (WeightFormat::F16, true)] {
        for arch in [RefArch::Llama, RefArch::Qwen2, RefArch::Gemma] {
            let what = format!("{arch:?} {format:?} keep_f16={keep_f16}");
            let dir = tempfile::tempdir().unwrap();
            let m = tiny(arch, dir.path(), format, keep_f16);
            let tight = device(tight_limit(&m));
            let mut whole = GpuModel::with_gpu(roomy.clone(), &m, &options()).unwrap();
            let mut split =
                GpuModel::with_gpu(tight, &m, &options()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(!whole.weights().embedding.is_split(), "{what}");
            assert!(split.weights().embedding.is_split(), "{what}");
            assert!(split.weights().head().is_split(), "{what}");
            split_seen.0 |= split.weights().head.is_some();
            split_seen.1 |= split.weights().embedding.is_m0e4();

            let mut rng = rand::rngs::StdRng::seed_from_u64(2 + arch as u64);
            let vocab = m.config.shape.vocab as u32;
            // Ids from every part of the table, the first and last rows included.
            let mut prompt: Vec<u32> = (0..5).map(|_| rng.random_range(0..vocab)).collect();
            prompt.extend([0, vocab - 1]);
            let a = logits(whole.step(&prompt, Want::Logits).unwrap());
            let b = logits(split.step(&prompt, Want::Logits).unwrap());
            assert_eq!(a, b, "{what}: prefill");
            for _ in 0..3 {
                let token = [rng.random_range(0..vocab)];
                let a = logits(whole.step(&token, Want::Logits).unwrap());
                let b = logits(split.step(&token, Want::Logits).unwrap());
                assert_eq!(a, b, "{what}: decode");
            }
            // The greedy choice made on the device reads the split head's logits too.
            let (a, b) = (
                whole.step(&[1], Want::Argmax).unwrap(),
                split.step(&[1], Want::Argmax).unwrap(),
            );
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{what}: argmax");
        }
    }
    assert!(split_seen.0, "no untied head was split");
    assert!(split_seen.1, "no M0E4 table was split");
}
