//! BOS, chat templates and stopping as the model's own files say: real templates rendered exactly, BOS added only
//! where the tokenizer asks for it and never twice, generation ended by end-of-turn ids and by stop strings that
//! see special tokens.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use engine::chat_template::{ChatFormat, ChatMessage, ChatTemplate, JinjaTemplate, Role};
use engine::generate::{
    GenerateOptions, Generator, LanguageModel, StepOutput, StopReason, TextCodec, Want,
};
use engine::model::{ModelConfig, ModelShape};
use engine::tokenizer::Tokenizer;
use engine::EngineError;

/// SmolLM2-135M-Instruct's template, as its GGUF stores it (`tokenizer.chat_template`).
const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Qwen2's template, as llama.cpp's `ggml-vocab-qwen2.gguf` stores it.
const QWEN2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Meta-Llama-3-8B-Instruct's `tokenizer_config.json` template (it writes `bos_token` itself).
const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// Gemma's instruct template (gemma-7b-it, gemma-2-*-it): no system role, strict alternation.
const GEMMA: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

/// Llama-2-7b-chat-hf's template: Python's `.strip()` and Jinja string escapes (`'\n'` written as backslash-n).
const LLAMA2: &str = r#"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"#;

/// llama.cpp's test conversation (tests/test-chat-template.cpp).
fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "You are a helpful assistant"),
        ChatMessage::new(Role::User, "Hello"),
        ChatMessage::new(Role::Assistant, "Hi there"),
        ChatMessage::new(Role::User, "Who are you"),
        ChatMessage::new(Role::Assistant, "   I am an assistant   "),
        ChatMessage::new(Role::User, "Another question"),
    ]
}

fn render(source: &str, bos: &str, eos: &str, messages: &[ChatMessage]) -> String {
    JinjaTemplate::new(source, bos, eos)
        .unwrap()
        .render(messages, true)
        .unwrap()
}

#[test]
fn smollm2_template_renders_chatml_with_its_default_system_turn() {
    let msgs = [ChatMessage::new(
        Role::User,
        "What is the capital of France?",
    )];
    assert_eq!(
        render(SMOLLM2, "<|im_start|>", "<|im_end|>", &msgs),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let without_prompt = JinjaTemplate::new(SMOLLM2, "", "")
        .unwrap()
        .render(&conversation()[..2], false)
        .unwrap();
    assert_eq!(
        without_prompt,
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    );
}

#[test]
fn qwen2_template_keeps_every_turn_verbatim() {
    assert_eq!(
        render(QWEN2, "", "<|endoftext|>", &conversation()),
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n\
         <|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n\
         <|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

#[test]
fn llama3_template_writes_bos_and_trims() {
    assert_eq!(
        render(LLAMA3, "<|begin_of_text|>", "<|eot_id|>", &conversation()),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

#[test]
fn gemma_template_renders_and_refuses_a_system_turn() {
    assert_eq!(
        render(GEMMA, "<bos>", "<eos>", &conversation()[1..]),
        "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n\
         <start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant<end_of_turn>\n\
         <start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n"
    );
    let err = JinjaTemplate::new(GEMMA, "<bos>", "<eos>")
        .unwrap()
        .render(&conversation(), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("System role not supported"), "{err}");
    assert!(!err.contains("Error {"), "debug text leaked: {err}");
    // The session's format falls back on the built-in Gemma format, which folds the system text into the first turn.
    let format = ChatFormat::from_source(Some(GEMMA), "<bos>", "<eos>", ChatTemplate::Gemma);
    assert!(format.uses_model_template());
    assert_eq!(
        format.render(&conversation(), true),
        ChatTemplate::Gemma.render(&conversation(), true)
    );
    assert!(format
        .render(&conversation()[1..], true)
        .starts_with("<bos><start_of_turn>user\nHello"));
}

#[test]
fn llama2_template_uses_python_string_methods() {
    assert_eq!(
        render(LLAMA2, "<s>", "</s>", &conversation()),
        "<s>[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s>\
         <s>[INST] Who are you [/INST] I am an assistant </s><s>[INST] Another question [/INST]"
    );
}

#[test]
fn each_rendering_extends_the_previous_one() {
    // The KV cache of one turn is reused by the next only as far as the new rendering starts like the old one.
    for (name, source, skip_system) in [
        ("smollm2", SMOLLM2, false),
        ("qwen2", QWEN2, false),
        ("llama3", LLAMA3, false),
        ("gemma", GEMMA, true),
        ("llama2", LLAMA2, false),
    ] {
        let convo = &conversation()[usize::from(skip_system)..];
        let t = JinjaTemplate::new(source, "<s>", "</s>").unwrap();
        let mut last = String::new();
        for end in (0..convo.len()).filter(|&i| convo[i].role == Role::User) {
            let now = t.render(&convo[..=end], true).unwrap();
            assert!(
                now.starts_with(&last),
                "{name}: {last:?} is not a prefix of {now:?}"
            );
            last = now;
        }
    }
}

#[test]
fn a_template_that_does_not_compile_falls_back_with_the_error_named() {
    let err = JinjaTemplate::new("{% for m in messages %}", "", "")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("chat template") && err.contains("compiling"),
        "{err}"
    );
    let format = ChatFormat::from_source(Some("{% if %}"), "", "", ChatTemplate::ChatMl);
    assert!(!format.uses_model_template());
    assert_eq!(
        format.render(&conversation()[1..2], true),
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    );
    // A runaway template ends with an error instead of hanging the chat.
    let spin = JinjaTemplate::new("{% for i in range(100000000) %}x{% endfor %}", "", "").unwrap();
    assert!(spin.render(&conversation(), true).is_err());
}

// ---- The tokenizer's settings, through a real `tokenizer.json` ----

/// The tiny test tokenizer plus ChatML's special tokens, saved in `dir` with `config` as `tokenizer_config.json`
/// (none when `None`); `post_processor` keeps or drops its BOS-prepending post-processor.
fn write_tokenizer(
    dir: &Path,
    config: Option<serde_json::Value>,
    post_processor: bool,
) -> Tokenizer {
    let mut tok = fixtures::tiny_models::tiny_tokenizer().unwrap();
    tok.add_special_tokens(&[
        tokenizers::AddedToken::from("<|im_start|>", true),
        tokenizers::AddedToken::from("<|im_end|>", true),
    ]);
    if !post_processor {
        tok.with_post_processor(None::<tokenizers::processors::PostProcessorWrapper>);
    }
    let path = dir.join("tokenizer.json");
    tok.save(&path, false).unwrap();
    if let Some(c) = config {
        std::fs::write(dir.join("tokenizer_config.json"), c.to_string()).unwrap();
    }
    Tokenizer::from_file(&path).unwrap()
}

fn smollm2_like(dir: &Path) -> Tokenizer {
    write_tokenizer(
        dir,
        Some(serde_json::json!({
            "add_bos_token": false,
            "bos_token": {"content": "<|im_start|>", "special": true},
            "eos_token": "<|im_end|>",
            "chat_template": SMOLLM2,
        })),
        true,
    )
}

#[test]
fn tokenizer_config_decides_bos_eos_and_template() {
    let dir = tempfile::tempdir().unwrap();
    let tok = smollm2_like(dir.path());
    let (start, end) = (
        tok.token_to_id("<|im_start|>").unwrap(),
        tok.token_to_id("<|im_end|>").unwrap(),
    );
    let s = tok.special();
    // The config's `false` wins over the post-processor that would prepend `<s>`.
    assert!(!s.add_bos && !s.add_eos);
    assert_eq!(s.bos, Some(start));
    assert_eq!(s.end_ids, vec![end]);
    assert_eq!(s.chat_template.as_deref(), Some(SMOLLM2));

    // Silent config: the post-processor decides, and names the BOS.
    let dir = tempfile::tempdir().unwrap();
    let tok = write_tokenizer(
        dir.path(),
        Some(serde_json::json!({"eos_token": "</s>"})),
        true,
    );
    assert!(tok.special().add_bos);
    assert_eq!(tok.special().bos, Some(1));
    // `</s>` first (the EOS), then the end-of-turn tokens the vocabulary has.
    assert_eq!(tok.special().end_ids, vec![2, end]);
    assert_eq!(tok.special().chat_template, None);
    let dir = tempfile::tempdir().unwrap();
    let tok = write_tokenizer(dir.path(), None, false);
    assert!(!tok.special().add_bos);

    // A list of named templates; a `chat_template.jinja` file beside the tokenizer.
    let dir = tempfile::tempdir().unwrap();
    let list = serde_json::json!({"chat_template": [
        {"name": "tool_use", "template": "tools"},
        {"name": "default", "template": QWEN2},
    ]});
    let tok = write_tokenizer(dir.path(), Some(list), true);
    assert_eq!(tok.special().chat_template.as_deref(), Some(QWEN2));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chat_template.jinja"), LLAMA3).unwrap();
    let tok = write_tokenizer(dir.path(), None, true);
    assert_eq!(tok.special().chat_template.as_deref(), Some(LLAMA3));
}

#[test]
fn a_malformed_tokenizer_config_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut tok = fixtures::tiny_models::tiny_tokenizer().unwrap();
    tok.add_special_tokens(&[tokenizers::AddedToken::from("<|im_end|>", true)]);
    let path = dir.path().join("tokenizer.json");
    tok.save(&path, false).unwrap();
    for bad in ["{\"add_bos_token\": tru", "[1, 2]"] {
        std::fs::write(dir.path().join("tokenizer_config.json"), bad).unwrap();
        let err = Tokenizer::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("tokenizer_config.json"), "{err}");
    }
}

#[test]
fn llama2c_vocabularies_add_bos_one_and_end_on_two() {
    // A llama2.c `tokenizer.bin`: max length, then per piece `f32 score, i32 len, bytes`.
    let mut bin = 8i32.to_le_bytes().to_vec();
    for piece in ["<unk>", "\n<s>\n", "\n</s>\n", " ", "H", "i", " H", " Hi"] {
        bin.extend(0f32.to_le_bytes());
        bin.extend((piece.len() as i32).to_le_bytes());
        bin.extend(piece.as_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.bin");
    std::fs::write(&path, bin).unwrap();
    let tok = Tokenizer::from_file(&path).unwrap();
    let s = tok.special();
    assert!(s.add_bos);
    assert_eq!((s.bos, s.end_ids.as_slice()), (Some(1), [2].as_slice()));
    // `</s><s>` written by the Llama 2 format become EOS and BOS; stop strings see them as text.
    let ids = tok.encode("Hi</s><s>Hi", false).unwrap();
    assert_eq!(ids, vec![7, 2, 1, 7]);
    assert_eq!(tok.decode(&ids).unwrap(), "Hi Hi");
    assert_eq!(tok.decode_with_special(&ids).unwrap(), "Hi</s><s> Hi");
    assert_eq!(tok.special_token_text(2).as_deref(), Some("</s>"));
    assert_eq!(tok.special_token_text(7), None);
}

// ---- Generation with a real tokenizer and a scripted model ----

/// The bundled tiny Llama's config (`fixtures/models/default`): the fields generation never reads.
fn tiny_llama_config() -> ModelConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/default");
    engine::model::load_config(&dir).unwrap()
}

/// Answers every step with the next token of `reply`, whatever the prompt; records the prompt it was given.
struct Scripted {
    config: ModelConfig,
    reply: Vec<u32>,
    cache: Vec<u32>,
    prompt_len: Option<usize>,
}

impl Scripted {
    fn new(reply: Vec<u32>) -> Self {
        let base = tiny_llama_config();
        Self {
            config: ModelConfig {
                shape: ModelShape {
                    vocab: 400,
                    max_ctx: 256,
                    ..base.shape
                },
                bos: Some(1),
                eos: vec![2],
                ..base
            },
            reply,
            cache: Vec::new(),
            prompt_len: None,
        }
    }
}

impl LanguageModel for Scripted {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn context_len(&self) -> usize {
        self.config.shape.max_ctx
    }
    fn cached_len(&self) -> usize {
        self.cache.len()
    }
    fn max_step_tokens(&self) -> usize {
        256
    }
    fn truncate(&mut self, len: usize) -> Result<(), EngineError> {
        self.cache.truncate(len);
        Ok(())
    }
    fn step(&mut self, tokens: &[u32], want: Want) -> Result<StepOutput, EngineError> {
        self.cache.extend_from_slice(tokens);
        let prompt_len = *self.prompt_len.get_or_insert(self.cache.len());
        let next = self
            .reply
            .get(self.cache.len() - prompt_len)
            .copied()
            .unwrap_or(2);
        Ok(match want {
            Want::Nothing => StepOutput::Nothing,
            _ => StepOutput::Token(next),
        })
    }
}

/// The tokenizer with its end-of-turn ids hidden, so only a stop string can end the reply.
struct NoEndIds<'a>(&'a Tokenizer);

impl TextCodec for NoEndIds<'_> {
    fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        TextCodec::encode(self.0, text)
    }
    fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        TextCodec::decode(self.0, ids)
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.0.token_id(token)
    }
    fn special_text(&self, id: u32) -> Option<String> {
        self.0.special_text(id)
    }
    fn adds_bos(&self) -> bool {
        self.0.adds_bos()
    }
}

fn reply_then(tok: &Tokenizer, text: &str, end: &[u32]) -> Vec<u32> {
    let mut ids = tok.encode(text, false).unwrap();
    ids.extend_from_slice(end);
    ids.extend(tok.encode(" and more", false).unwrap());
    ids
}

#[test]
fn a_chatml_prompt_gets_no_bos_and_the_reply_ends_at_im_end() {
    let dir = tempfile::tempdir().unwrap();
    let tok = smollm2_like(dir.path());
    let (start, end) = (
        tok.token_to_id("<|im_start|>").unwrap(),
        tok.token_to_id("<|im_end|>").unwrap(),
    );
    let format = ChatFormat::from_source(
        tok.special().chat_template.as_deref(),
        "<|im_start|>",
        "<|im_end|>",
        ChatTemplate::ChatMl,
    );
    let prompt = format.render(&[ChatMessage::new(Role::User, "Hi")], true);
    let reply = reply_then(&tok, "Hello there", &[end]);
    let mut g = Generator::new(Scripted::new(reply), tok).unwrap();

    let ids = g.prompt_tokens(&prompt, None).unwrap();
    assert_eq!(
        ids[0], start,
        "the prompt starts with the template's <|im_start|>"
    );
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 0, "no <s> added");
    assert_eq!(
        ids.iter().filter(|&&i| i == start).count(),
        3,
        "three turns open, each once: {ids:?}"
    );

    let mut shown = String::new();
    let out = g
        .generate(&prompt, &GenerateOptions::default(), |s| shown.push_str(s))
        .unwrap();
    assert_eq!(out.stop, StopReason::Eos);
    assert_eq!(out.tokens.last(), Some(&end));
    assert_eq!(
        (out.text.as_str(), shown.as_str()),
        ("Hello there", "Hello there")
    );
}

#[test]
fn the_stop_string_im_end_sees_the_special_token() {
    let dir = tempfile::tempdir().unwrap();
    let tok = smollm2_like(dir.path());
    let end = tok.token_to_id("<|im_end|>").unwrap();
    let reply = reply_then(&tok, "Hello there", &[end]);
    let mut g = Generator::new(Scripted::new(reply), NoEndIds(&tok)).unwrap();
    let opts = GenerateOptions {
        stop_strings: vec!["<|im_end|>".into()],
        ..GenerateOptions::default()
    };
    let mut shown = String::new();
    let out = g
        .generate("<|im_start|>user\nHi", &opts, |s| shown.push_str(s))
        .unwrap();
    assert_eq!(out.stop, StopReason::StopString("<|im_end|>".into()));
    assert_eq!(
        (out.text.as_str(), shown.as_str()),
        ("Hello there", "Hello there")
    );
    // Without the stop string the special token is left out of the text and generation runs on.
    let reply = reply_then(&tok, "Hello there", &[end]);
    let mut g = Generator::new(Scripted::new(reply), NoEndIds(&tok)).unwrap();
    let out = g
        .generate("<|im_start|>user\nHi", &GenerateOptions::default(), |_| {})
        .unwrap();
    assert_eq!(out.text, "Hello there and more");
}

#[test]
fn bos_is_added_where_the_tokenizer_says_and_never_twice() {
    let dir = tempfile::tempdir().unwrap();
    let tok = write_tokenizer(
        dir.path(),
        Some(serde_json::json!({"add_bos_token": true, "bos_token": "<s>", "eos_token": "</s>"})),
        true,
    );
    let hi = tok.encode("Hi", false).unwrap();
    let g = Generator::new(Scripted::new(Vec::new()), tok).unwrap();
    let with_bos: Vec<u32> = [1].into_iter().chain(hi.iter().copied()).collect();
    assert_eq!(g.prompt_tokens("Hi", None).unwrap(), with_bos);
    // A template that writes `bos_token` (Llama 3, Gemma) gets no second one.
    assert_eq!(g.prompt_tokens("<s>Hi", None).unwrap(), with_bos);
    let llama3 = render(LLAMA3, "<s>", "</s>", &[ChatMessage::new(Role::User, "Hi")]);
    let ids = g.prompt_tokens(&llama3, None).unwrap();
    assert_eq!((ids[0], ids[1] != 1), (1, true), "{ids:?}");
    // The caller's override still works both ways.
    assert_eq!(g.prompt_tokens("Hi", Some(false)).unwrap(), hi);
}
