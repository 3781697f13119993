//! Encoding with an explicit choice about special tokens written in the text.
//!
//! llama.cpp separates two questions: whether to add the model's BOS/EOS (`add_special`) and whether text such as
//! `<|im_end|>` is the control token or plain characters (`parse_special`). Chat prompts need the control tokens;
//! user text and llama.cpp's own tokenizer tests (`test-tokenizer-0`, parse_special = false) need the characters.
//! Added tokens that are not special (GGUF token type 4, user-defined) are matched either way, as in llama.cpp
//! and Hugging Face `tokenizers`.

use super::{Inner, Tokenizer};
use crate::EngineError;

/// How [`Tokenizer::encode_with`] treats special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Add what the tokenizer adds around a text (BOS, EOS) when its model asks for it.
    pub add_special: bool,
    /// Read special-token text (`<s>`, `<|im_start|>`) in the input as those tokens.
    pub parse_special: bool,
}

impl Tokenizer {
    /// Encodes `text` as `opts` says. In llama2.c vocabularies the special tokens are `<s>` and `</s>`.
    pub fn encode_with(&self, text: &str, opts: EncodeOptions) -> Result<Vec<u32>, EngineError> {
        let t = match &self.inner {
            Inner::Hf(t) => t,
            Inner::Llama2c(_) if opts.parse_special => return self.encode(text, opts.add_special),
            Inner::Llama2c(t) => return t.encode(text, opts.add_special),
        };
        // `tokenizers` keeps this choice as a setting of the whole pipeline, so the other setting is a copy.
        let literal = !opts.parse_special;
        let t = if t.get_encode_special_tokens() == literal {
            t
        } else {
            self.literal.get_or_init(|| {
                let mut copy = t.clone();
                copy.set_encode_special_tokens(literal);
                copy
            })
        };
        let enc = t.encode(text, opts.add_special).map_err(|e| {
            EngineError::Tokenizer(format!("{}: encoding failed: {e}", self.source.display()))
        })?;
        Ok(enc.get_ids().to_vec())
    }
}
