//! `Session`: a tiny Hugging Face folder (weights, tokenizer.json) loaded, placed on the device, used for text
//! generation and for chat turns that keep the KV cache.
#![allow(clippy::unwrap_used)]

use engine::chat_template::ChatTemplate;
use engine::chat_template::{ChatMessage, Role};
use engine::generate::{GenerateOptions, OnContextFull, StopReason};
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

/// Without context shifts, a conversation longer than the context keeps going: the oldest exchanges are dropped
/// (the system prompt stays), the rest is prefilled again, and the reply after a drop is exactly the reply a fresh
/// session gives to the kept conversation.
#[test]
fn a_chat_longer_than_the_context_drops_its_oldest_exchanges_without_shifting() {
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
        on_context_full: OnContextFull::Stop,
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

/// With context shifts (the default) a conversation several times the context goes on without reading its history
/// again: each turn runs only what the re-rendered conversation adds to the previous turn's prompt, no message is
/// dropped, and the cache still starts with the system prompt.
#[test]
fn a_chat_longer_than_the_context_shifts_and_never_reads_its_history_again() {
    let dir = tempfile::tempdir().unwrap();
    let context = 160;
    let base = TinySpec::for_arch(RefArch::Qwen2);
    let spec = TinySpec {
        shape: ModelShape {
            max_ctx: context,
            ..base.shape
        },
        ..base
    };
    write_hf_folder(&spec, dir.path(), StoreDtype::F32, 1).unwrap();
    let mut a = open_with_context(dir.path(), context);
    let system = "be brief and kind";
    a.set_system(system);
    let turn = GenerateOptions {
        max_tokens: 8,
        ..GenerateOptions::default()
    };
    let prompt_of = |a: &Session, history: &[ChatMessage]| {
        a.generator
            .prompt_tokens(&a.render_chat(history), None)
            .unwrap()
    };
    let mut shifts = 0;
    let mut previous: Option<Vec<u32>> = None;
    for i in 0..16 {
        let mut next = a.history().to_vec();
        next.push(ChatMessage::new(Role::User, format!("hi {i}")));
        let prompt = prompt_of(&a, &next);
        let out = a
            .chat_turn(&format!("hi {i}"), &turn, |_| {})
            .unwrap_or_else(|e| panic!("turn {i} failed: {e}"));
        // The previous prompt was run, and its reply: the new prompt starts with the former, so at most what it
        // adds runs (and one token, which must run for the logits).
        if let Some(previous) = &previous {
            assert!(prompt.starts_with(&previous[..previous.len() - 1]));
            let added = prompt.len() - previous.len() + 1;
            assert!(
                out.timings.prefill_tokens <= added,
                "turn {i} ran {} tokens; its prompt added {added}",
                out.timings.prefill_tokens
            );
        }
        assert!(a.cached_len() <= context);
        shifts += out.shifts.shifts;
        if out.shifts.shifts > 0 {
            let kept = &a.generator.cached_tokens()[..out.shifts.kept];
            let text = a.generator.codec().decode_with_special(kept).unwrap();
            assert!(
                text.contains(system),
                "the kept start {text:?} lost the system prompt"
            );
        }
        previous = Some(prompt);
    }
    let total = previous.map_or(0, |p| p.len());
    assert!(total > 2 * context, "16 turns took only {total} tokens");
    assert!(shifts >= 2, "{shifts} shifts");
    assert_eq!(a.forgotten_messages(), 0);
    assert_eq!(a.history().len(), 1 + 2 * 16);
    assert!(a.generator.shifted_out_tokens() > 0);
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
