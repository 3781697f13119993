//! The forward pass under every bundled device profile (issue 22): each architecture's tiny model generates the
//! reference's greedy tokens on the host device narrowed to each phone's limits and extensions; the memory sum
//! the budget uses is what the model really allocates; and a budget too small is an error naming the numbers.
//!
//! `scripts/test-profiles` runs the other end-to-end tests (`gen_gpu`, `gen_session`, `smollm2_reference`) under
//! each profile through `TLITE_DEVICE_PROFILE`.
#![allow(clippy::unwrap_used)]

mod load_common;

use std::path::Path;

use clkernels::runtime::{DeviceProfile, Gpu, GpuOptions as OpenOptions, ProfileChoice};
use engine::generate::{GenerateOptions, Generator, LanguageModel, TextCodec};
use engine::gpu::{Footprint, GpuModel, GpuOptions, MemBudget, PROGRAM_ALLOWANCE_BYTES};
use engine::model::{self, LoadOptions, Model, WeightFormat};
use engine::EngineError;
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::{write_hf_folder, StoreDtype, TinySpec};
use kvcache::KvDtype;
use rand::{Rng, SeedableRng};

const ARCHS: [RefArch; 4] = [
    RefArch::Llama,
    RefArch::Mistral,
    RefArch::Qwen2,
    RefArch::Gemma,
];
const M0E4: WeightFormat = WeightFormat::M0e4 {
    group: fp4::GroupSize::G32,
};

fn open(profile: ProfileChoice) -> Gpu {
    Gpu::open_with(&OpenOptions {
        profile,
        ..OpenOptions::default()
    })
    .expect("an OpenCL device (PoCL on the dev box)")
}

fn tiny(arch: RefArch, dir: &Path, format: WeightFormat) -> Model {
    write_hf_folder(&TinySpec::for_arch(arch), dir, StoreDtype::F32, 1).unwrap();
    model::load(
        dir,
        &LoadOptions {
            quantize: format,
            keep_embeddings_f16: true,
        },
    )
    .unwrap()
}

/// The tiny models' tokenizer as a codec.
struct Tok(tokenizers::Tokenizer);

impl TextCodec for Tok {
    fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        Ok(self
            .0
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }
    fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.0
            .decode(ids, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.0.token_to_id(token)
    }
}

/// f32 products and an f32 cache, so the greedy tokens are the reference's (as in `gen_gpu`).
fn options() -> GpuOptions {
    GpuOptions {
        max_chunk: 8,
        kv_dtype: KvDtype::F32,
        max_ctx: Some(64),
        half_products: false,
        ..GpuOptions::default()
    }
}

#[test]
fn every_architecture_generates_the_reference_under_every_profile() {
    let dir = tempfile::tempdir().unwrap();
    let models: Vec<(RefArch, Model)> = ARCHS
        .iter()
        .map(|&arch| {
            let sub = dir.path().join(format!("{arch:?}"));
            (arch, tiny(arch, &sub, M0E4))
        })
        .collect();
    let host = open(ProfileChoice::Off);
    for profile in DeviceProfile::bundled().unwrap() {
        let gpu = open(ProfileChoice::Use(Box::new(profile.clone())));
        let caps = gpu.caps();
        assert_eq!(caps.profile.as_deref(), Some(profile.name.as_str()));
        let (limits, _) = profile.limits_in_effect().unwrap();
        assert!(caps.max_alloc_bytes <= limits.max_alloc_bytes.unwrap());
        assert!(caps.local_mem_bytes <= limits.local_mem_bytes.unwrap());
        assert!(caps.max_work_group_size <= limits.max_work_group_size.unwrap());
        assert!(caps.extensions.iter().all(|e| profile.has_extension(e)));
        assert!(caps.extensions.iter().all(|e| host.caps().has_extension(e)));
        for (i, (arch, m)) in models.iter().enumerate() {
            let reference = load_common::to_ref(m);
            let gpu_model = GpuModel::with_gpu(gpu.clone(), m, &options())
                .unwrap_or_else(|e| panic!("{} {arch:?}: {e}", profile.name));
            let mut g = Generator::new(
                gpu_model,
                Tok(fixtures::tiny_models::tiny_tokenizer().unwrap()),
            )
            .unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(22 + i as u64);
            let prompt: Vec<u32> = (0..12)
                .map(|_| rng.random_range(0..m.config.shape.vocab as u32))
                .collect();
            let opts = GenerateOptions {
                max_tokens: 6,
                prefill_chunk: 5,
                ..GenerateOptions::default()
            };
            let out = g.generate_from_tokens(&prompt, &opts, |_| {}).unwrap();
            assert_eq!(
                out.tokens,
                reference.greedy(&prompt, out.tokens.len()),
                "{} {arch:?}",
                profile.name
            );
        }
    }
}

#[test]
fn the_budget_sum_is_what_the_model_allocates() {
    let gpu = open(ProfileChoice::Off);
    for format in [WeightFormat::F16, M0E4] {
        for arch in ARCHS {
            let dir = tempfile::tempdir().unwrap();
            let m = tiny(arch, dir.path(), format);
            let gm = GpuModel::with_gpu(gpu.clone(), &m, &options()).unwrap();
            let choice = gm.context_choice();
            let footprint = Footprint::of_model(&m, KvDtype::F32, 8).unwrap();
            assert_eq!(choice.ctx, 64);
            assert_eq!(choice.needs, footprint.needs(64, 8));
            assert_eq!(
                choice.needs.total() - PROGRAM_ALLOWANCE_BYTES,
                gm.device_bytes(),
                "{arch:?} {format:?}"
            );
            assert_eq!(
                footprint.weights,
                gm.weights().bytes() as u64,
                "{arch:?} {format:?}: weights"
            );
        }
    }
}

#[test]
fn a_budget_too_small_is_an_error_naming_the_numbers_and_the_default_fits_a_phone() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(RefArch::Qwen2, dir.path(), M0E4);
    let gpu = open(ProfileChoice::Use(Box::new(
        DeviceProfile::phone_min().unwrap(),
    )));
    let small = GpuOptions {
        mem_budget: MemBudget::Bytes(1 << 20),
        ..options()
    };
    let e = GpuModel::with_gpu(gpu.clone(), &m, &small)
        .unwrap_err()
        .to_string();
    for part in [
        "memory budget is 1.0 MiB",
        "weights",
        "KV cache",
        "programs 16.0 MiB",
    ] {
        assert!(e.contains(part), "{part}: {e}");
    }
    // The default budget: the model's whole context, 75% of phone-min's 1862 MiB being far more than it needs.
    let default = GpuOptions {
        max_ctx: None,
        ..options()
    };
    let gm = GpuModel::with_gpu(gpu, &m, &default).unwrap();
    assert_eq!(gm.context_len(), m.config.shape.max_ctx);
    let line = gm.context_choice().to_string();
    assert!(line.contains("the model's maximum"), "{line}");
    assert!(line.contains("75% of 1.82 GiB global memory"), "{line}");
    assert!(line.contains("(as phone-min)"), "{line}");
}

/// SmolLM2-135M at its 8192 context takes about 300 MiB (issue 22): a 200 MiB budget gets a shorter context, chosen
/// as the largest that fits.
#[test]
fn smollm2_gets_the_largest_context_its_budget_holds() {
    let path = fixtures::downloads::smollm2_gguf().unwrap();
    let m = model::load(
        &path,
        &LoadOptions {
            quantize: M0E4,
            keep_embeddings_f16: true,
        },
    )
    .unwrap();
    let gpu = open(ProfileChoice::Use(Box::new(
        DeviceProfile::named("adreno-750").unwrap(),
    )));
    let opts = GpuOptions {
        max_ctx: None,
        mem_budget: MemBudget::Bytes(200 << 20),
        ..GpuOptions::default()
    };
    let gm = GpuModel::with_gpu(gpu, &m, &opts).unwrap();
    let choice = gm.context_choice();
    let footprint = Footprint::of_model(&m, KvDtype::F16, 256).unwrap();
    assert!(choice.ctx < m.config.shape.max_ctx, "{choice}");
    assert!(choice.needs.total() <= 200 << 20);
    assert!(footprint.needs(choice.ctx + 1, 256).total() > 200 << 20);
    assert_eq!(gm.context_len(), choice.ctx);
    eprintln!("{choice}");
}

/// A layer weight larger than the phone's largest allocation is refused before upload, naming the tensor (only the
/// embedding and the output head are split over several buffers: `split_weights.rs`).
#[test]
fn a_weight_over_the_largest_allocation_is_named_before_upload() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(RefArch::Llama, dir.path(), WeightFormat::F16);
    let largest = Footprint::of_model(&m, KvDtype::F32, 8)
        .unwrap()
        .largest_weight;
    let json = format!(
        r#"{{"short_name": "tiny-alloc", "max_mem_alloc_size": {}}}"#,
        largest.bytes - 1
    );
    let profile = DeviceProfile::from_json(&json, "test").unwrap();
    let gpu = open(ProfileChoice::Use(Box::new(profile)));
    match GpuModel::with_gpu(gpu, &m, &options()) {
        Err(EngineError::DeviceMemory(e)) => {
            assert!(
                e.contains(&format!("the weight buffer {}", largest.name)),
                "{e}"
            );
            assert!(e.contains("(as tiny-alloc) allows at most"), "{e}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!(
            "a {} byte buffer passed a smaller max allocation",
            largest.bytes
        ),
    }
}
