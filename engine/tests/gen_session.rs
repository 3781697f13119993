//! `Session`: a tiny Hugging Face folder (weights, tokenizer.json) loaded, placed on the device, used for text
//! generation and for chat turns that keep the KV cache.
#![allow(clippy::unwrap_used)]

use engine::chat_template::ChatTemplate;
use engine::generate::{GenerateOptions, StopReason};
use engine::gpu::GpuOptions;
use engine::model::WeightFormat;
use engine::session::{Session, SessionOptions};
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::{write_hf_folder, StoreDtype, TinySpec};
use kvcache::KvDtype;

fn open(dir: &std::path::Path) -> Session {
    let options = SessionOptions {
        weights: WeightFormat::M0e4 {
            group: fp4::GroupSize::G32,
        },
        keep_embeddings_f16: true,
        gpu: GpuOptions {
            max_ctx: Some(128),
            max_chunk: 16,
            kv_dtype: KvDtype::F32,
            ..GpuOptions::default()
        },
    };
    Session::open(dir, &options).unwrap()
}

#[test]
fn text_generation_and_chat_turns_reuse_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("TLITE_KEEP_TINY");
    let path = keep
        .as_ref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().to_path_buf());
    write_hf_folder(
        &TinySpec::for_arch(RefArch::Qwen2),
        &path,
        StoreDtype::F32,
        1,
    )
    .unwrap();
    let mut a = open(&path);
    assert_eq!(a.template, ChatTemplate::ChatMl);

    // Plain generation streams exactly the text it returns.
    let opts = GenerateOptions {
        max_tokens: 12,
        prefill_chunk: 5,
        ..GenerateOptions::default()
    };
    let mut streamed = String::new();
    let out = a
        .generator
        .generate("the cat sat on", &opts, |s| streamed.push_str(s))
        .unwrap();
    assert_eq!(streamed, out.text);
    assert!(!out.tokens.is_empty());
    assert!(out.timings.prefill_tokens > 1 && out.timings.peak_device_bytes > 0);

    // Two chat turns: the second prefills only what the cache does not hold.
    a.reset_chat().unwrap();
    let turn = GenerateOptions {
        max_tokens: 8,
        ..GenerateOptions::default()
    };
    a.chat_turn("hello there", &turn, |_| {}).unwrap();
    let cached_after_first = a.cached_len();
    let second = a.chat_turn("and then?", &turn, |_| {}).unwrap();
    let prompt_len = a.generator.cached_tokens().len() - second.timings.decode_tokens;
    assert!(cached_after_first > 0);
    assert!(
        second.timings.prefill_tokens < prompt_len,
        "turn 2 prefilled {} of {prompt_len} tokens",
        second.timings.prefill_tokens
    );

    // The same conversation on a fresh session (nothing cached) gives the same reply.
    let mut b = open(&path);
    b.chat_turn("hello there", &turn, |_| {}).unwrap();
    b.generator.reset().unwrap();
    let fresh = b.chat_turn("and then?", &turn, |_| {}).unwrap();
    assert_eq!(fresh.tokens, second.tokens);
    assert!(matches!(
        second.stop,
        StopReason::MaxTokens | StopReason::Eos | StopReason::StopString(_)
    ));
}

#[test]
fn a_missing_model_path_is_named_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model");
    let err = match Session::open(&missing, &SessionOptions::default()) {
        Ok(_) => panic!("opening a missing model succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("no-such-model") && err.contains("No such file"),
        "{err}"
    );
}
