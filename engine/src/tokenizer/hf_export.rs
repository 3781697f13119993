//! A tokenizer written out as the files of a Hugging Face folder, so that a model whose vocabulary lives inside
//! another file (a GGUF) can travel as a folder that [`Tokenizer::for_model`] reads back unchanged.
//!
//! `tokenizer.json` is the `tokenizers` pipeline itself; `tokenizer_config.json` holds what
//! [`super::hf_settings`] reads back into [`SpecialTokens`](super::SpecialTokens), including the full list of
//! end-of-generation tokens (llama.cpp stops on more tokens than the `eos_token` and the end-of-turn markers
//! hf_settings derives, such as `</s>` or fill-in-the-middle tokens, and none of them may be lost).

use super::hf_settings::END_TOKENS_KEY;
use super::{Inner, Tokenizer};
use crate::EngineError;
use serde_json::{Map, Value};

impl Tokenizer {
    /// The `tokenizer.json` text of this tokenizer. Only tokenizers built on the `tokenizers` crate (read from a
    /// `tokenizer.json` or a GGUF file) have one; a llama2.c `tokenizer.bin` is an error, as that file is its
    /// only form.
    pub fn to_hf_json(&self) -> Result<String, EngineError> {
        let t = self.hf_pipeline()?;
        t.to_string(true).map_err(|e| {
            EngineError::Tokenizer(format!(
                "{}: writing it as tokenizer.json failed: {e}",
                self.source.display()
            ))
        })
    }

    /// The `tokenizer_config.json` text that, beside [`Tokenizer::to_hf_json`]'s file, makes the folder's
    /// [`Tokenizer::special`] equal this tokenizer's: `add_bos_token`, `add_eos_token`, `bos_token`, `eos_token`
    /// (the first end id, as both GGUF and Hugging Face settings order it), every end id by text, and the chat
    /// template. Tokens are named by text, as Hugging Face names them; a token whose text does not lead back to
    /// its id is an error rather than a silently different setting.
    pub fn to_hf_config_json(&self) -> Result<String, EngineError> {
        self.hf_pipeline()?;
        let text = |id: u32| -> Result<Value, EngineError> {
            let t = self.id_to_token(id)?;
            if self.token_to_id(&t) != Some(id) {
                return Err(EngineError::Tokenizer(format!(
                    "{}: token {id} ({t:?}) cannot be named by its text, which leads to {:?}",
                    self.source.display(),
                    self.token_to_id(&t)
                )));
            }
            Ok(Value::String(t))
        };
        let s = &self.special;
        let mut c = Map::new();
        c.insert("add_bos_token".into(), Value::Bool(s.add_bos));
        c.insert("add_eos_token".into(), Value::Bool(s.add_eos));
        if let Some(bos) = s.bos {
            c.insert("bos_token".into(), text(bos)?);
        }
        if let Some(&eos) = s.end_ids.first() {
            c.insert("eos_token".into(), text(eos)?);
        }
        let ends = s
            .end_ids
            .iter()
            .map(|&id| text(id))
            .collect::<Result<Vec<_>, _>>()?;
        c.insert(END_TOKENS_KEY.into(), Value::Array(ends));
        if let Some(t) = &s.chat_template {
            c.insert("chat_template".into(), Value::String(t.clone()));
        }
        serde_json::to_string_pretty(&Value::Object(c)).map_err(|e| {
            EngineError::Tokenizer(format!(
                "{}: writing tokenizer_config.json failed: {e}",
                self.source.display()
            ))
        })
    }

    fn hf_pipeline(&self) -> Result<&tokenizers::Tokenizer, EngineError> {
        match &self.inner {
            Inner::Hf(t) => Ok(t),
            Inner::Llama2c(_) => Err(EngineError::Tokenizer(format!(
                "{}: a llama2.c tokenizer.bin has no tokenizer.json form; copy the tokenizer.bin itself",
                self.source.display()
            ))),
        }
    }
}
