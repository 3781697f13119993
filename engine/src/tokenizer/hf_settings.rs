//! What a Hugging Face folder says about BOS, EOS and chat, gathered into [`SpecialTokens`]; and the fixed
//! settings of llama2.c vocabularies.
//!
//! `tokenizer_config.json` decides where it speaks (`add_bos_token`, `add_eos_token`, `bos_token`, `eos_token`,
//! `chat_template`); where it is silent about BOS, the `tokenizer.json` post-processor decides (a Llama-style
//! `TemplateProcessing` prepends BOS, a GPT-2/Qwen/SmolLM byte-level one does not), which is what transformers
//! itself would do. A missing `tokenizer_config.json` is normal; a malformed one is an error naming it.
//!
//! End of generation: `eos_token` plus the end-of-turn markers the vocabulary holds as special tokens, unless the
//! file lists them all under [`END_TOKENS_KEY`] (tlite writes that list when it turns a GGUF into a folder, since
//! llama.cpp stops on tokens, such as `</s>` or fill-in-the-middle markers, that no Hugging Face setting names).

use std::path::Path;

use serde_json::Value;

use super::SpecialTokens;
use crate::EngineError;

/// Token texts that end a turn in the chat formats tlite knows; any that the vocabulary holds as a special token
/// ends generation, whatever `eos_token` says (Llama 3 Instruct folders name `<|end_of_text|>` as EOS, but a reply
/// ends with `<|eot_id|>`).
const END_OF_TURN: [&str; 7] = [
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
];

/// `tokenizer_config.json` key: every token (by text, in order) that ends generation. When present it is the
/// whole list, replacing what `eos_token` and [`END_OF_TURN`] would give; each must be in the vocabulary.
pub(super) const END_TOKENS_KEY: &str = "tlite_end_tokens";

/// llama2.c's SentencePiece vocabulary: BOS is id 1 and always added, EOS is id 2, no chat template.
pub(super) fn llama2c(vocab: usize) -> SpecialTokens {
    SpecialTokens {
        add_bos: vocab > 1,
        add_eos: false,
        bos: (vocab > 1).then_some(1),
        end_ids: if vocab > 2 { vec![2] } else { Vec::new() },
        chat_template: None,
    }
}

/// The special-token settings of the folder holding `tokenizer_json` (already loaded as `tok`).
pub(super) fn read(
    tokenizer_json: &Path,
    tok: &tokenizers::Tokenizer,
) -> Result<SpecialTokens, EngineError> {
    let dir = tokenizer_json.parent().unwrap_or(Path::new("."));
    let config_path = dir.join("tokenizer_config.json");
    let config = read_config(&config_path)?;
    let field = |key: &str| config.as_ref().and_then(|c| c.get(key));
    let special_id = |key: &str| {
        field(key)
            .and_then(token_text)
            .and_then(|t| tok.token_to_id(t))
    };

    let (prepends, prepended) = post_processor_prefix(tok);
    let bos = special_id("bos_token").or(prepended);
    let add_bos = match field("add_bos_token").and_then(Value::as_bool) {
        Some(b) => b,
        None => prepends,
    };
    let add_eos = field("add_eos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let end_ids = match field(END_TOKENS_KEY) {
        Some(list) => listed_end_ids(list, tok, &config_path)?,
        None => derived_end_ids(special_id("eos_token"), tok),
    };

    let chat_template = match field("chat_template") {
        Some(v) => template_source(v),
        None => None,
    }
    .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());

    Ok(SpecialTokens {
        add_bos,
        add_eos,
        bos,
        end_ids,
        chat_template,
    })
}

/// EOS first (chat templates get its text as `eos_token`), then the end-of-turn markers held as special tokens.
fn derived_end_ids(eos: Option<u32>, tok: &tokenizers::Tokenizer) -> Vec<u32> {
    let mut end_ids: Vec<u32> = eos.into_iter().collect();
    let specials = tok.get_added_tokens_decoder();
    for text in END_OF_TURN {
        if let Some(id) = tok.token_to_id(text) {
            let is_special = specials.get(&id).is_some_and(|t| t.special);
            if is_special && !end_ids.contains(&id) {
                end_ids.push(id);
            }
        }
    }
    end_ids
}

/// The ids of an [`END_TOKENS_KEY`] list; anything but a list of vocabulary tokens is an error naming the file,
/// since a silently shorter list would let generation run past the end of a turn.
fn listed_end_ids(
    list: &Value,
    tok: &tokenizers::Tokenizer,
    path: &Path,
) -> Result<Vec<u32>, EngineError> {
    let bad = |what: String| {
        EngineError::Tokenizer(format!("{}: `{END_TOKENS_KEY}` {what}", path.display()))
    };
    let items = list
        .as_array()
        .ok_or_else(|| bad("is not a list of token texts".into()))?;
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let text = token_text(item)
            .ok_or_else(|| bad(format!("holds {item}, which is not a token text")))?;
        let id = tok
            .token_to_id(text)
            .ok_or_else(|| bad(format!("names {text:?}, which is not in the vocabulary")))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// `tokenizer_config.json` as JSON, `None` when the folder has none.
fn read_config(path: &Path) -> Result<Option<Value>, EngineError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    let json: Value = serde_json::from_slice(&bytes).map_err(|source| EngineError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    if !json.is_object() {
        return Err(EngineError::Tokenizer(format!(
            "{}: expected a JSON object",
            path.display()
        )));
    }
    Ok(Some(json))
}

/// The text of a token entry: a plain string or an `AddedToken` object (`{"content": "<s>", ...}`).
fn token_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// `chat_template`: a string, or a list of named templates of which `default` (else the first) is the chat one.
fn template_source(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or(list.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// Whether the post-processor puts a token before the text, and which: found by encoding a probe with and
/// without special tokens, so every post-processor kind (template, sequence, Roberta, BERT) is read alike.
fn post_processor_prefix(tok: &tokenizers::Tokenizer) -> (bool, Option<u32>) {
    let (Ok(with), Ok(without)) = (tok.encode("a", true), tok.encode("a", false)) else {
        return (false, None);
    };
    let (with, without) = (with.get_ids(), without.get_ids());
    match with.split_first() {
        Some((&first, rest)) if rest.starts_with(without) && without.first() != Some(&first) => {
            (true, Some(first))
        }
        _ => (false, None),
    }
}
