//! `Session`: a tiny Hugging Face folder (weights, tokenizer.json) loaded, placed on the device, used for text
//! generation and for chat turns that keep the KV cache.
#![allow(clippy::unwrap_used)]

use engine::chat_template::ChatTemplate;
use engine::generate::{GenerateOptions, StopReason};
use engine::gpu::GpuOptions;
use engine::model::WeightFormat;
use engine::session::{Session, SessionOptions};
use fixtures::reference_model::{ModelShape, RefArch};
use fixtures::tiny_models::{write_hf_folder, StoreDtype, TinySpec};
use kvcache::KvDtype;

fn open(dir: &std::path::Path) -> Session {
    open_with_context(dir, 128)
}

fn open_with_context(dir: &std::path::Path, max_ctx: usize) -> Session {
    let options = SessionOptions {
        weights: WeightFormat::M0e4 {
            group: fp4::GroupSize::G32,
        },
        keep_embeddings_f16: true,
        gpu: GpuOptions {
            max_ctx: Some(max_ctx),
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

/// A conversation longer than the context keeps going: the oldest exchanges are dropped (the system prompt
/// stays), the rest is prefilled again, and the reply after a drop is exactly the reply a fresh session gives to
/// the kept conversation.
#[test]
fn a_chat_longer_than_the_context_drops_its_oldest_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    // The tiny tokenizer spends about 40 tokens on one short exchange in ChatML: 400 positions hold several.
    let context = 400;
    let qwen2 = TinySpec::for_arch(RefArch::Qwen2);
    let spec = TinySpec {
        shape: ModelShape {
            max_ctx: context,
            ..qwen2.shape
        },
        ..qwen2
    };
    write_hf_folder(&spec, dir.path(), StoreDtype::F32, 1).unwrap();
    let mut a = open_with_context(dir.path(), context);
    a.set_system("be brief");
    let turn = GenerateOptions {
        max_tokens: 8,
        ..GenerateOptions::default()
    };
    let mut first_drop = None;
    let mut last = None;
    for i in 0..16 {
        let before = a.forgotten_messages();
        let kept = a.history().to_vec();
        let user = format!("hi {i}");
        let out = a
            .chat_turn(&user, &turn, |_| {})
            .unwrap_or_else(|e| panic!("turn {i} failed: {e}"));
        assert!(
            a.cached_len() <= context,
            "cache {} > {context}",
            a.cached_len()
        );
        if a.forgotten_messages() > before {
            first_drop.get_or_insert(i);
            last = Some((kept, user, out.tokens.clone()));
        }
    }
    let i = first_drop.expect("16 turns never filled the context");
    assert!(
        i > 1,
        "turn {i} dropped messages although the context was nearly empty"
    );
    assert_eq!(a.forgotten_messages() % 2, 0, "whole exchanges are dropped");
    assert_eq!(
        a.history()[0].content,
        "be brief",
        "the system prompt is kept"
    );

    // The last turn that dropped messages, replayed on a fresh session from the same conversation: the drop and
    // the re-prefill must give the same reply as computing it from scratch.
    let (kept, user, tokens) = last.unwrap();
    let mut b = open_with_context(dir.path(), context);
    b.set_history(kept);
    let fresh = b.chat_turn(&user, &turn, |_| {}).unwrap();
    assert_eq!(fresh.tokens, tokens);
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
