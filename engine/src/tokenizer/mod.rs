//! Tokenisation through the tokenizers crate (`tokenizer.json`), plus llama2.c's `tokenizer.bin` format.
//!
//! `tokenizer.bin` is SentencePiece's vocabulary exported by llama2.c: `i32 max_token_length`, then per token
//! `f32 score, i32 len, len bytes` (the SentencePiece `▁` already replaced by a space, bytes as `<0xXX>` pieces).
//! Encoding follows llama2.c (and SentencePiece BPE): a dummy-prefix space, one piece per UTF-8 character with
//! byte fallback, then repeatedly merge the adjacent pair whose concatenation has the highest score.

mod encode_with;
mod gguf_build;
mod gguf_pre;
mod gguf_vocab;
mod hf_export;
mod hf_settings;
mod piece;

pub use encode_with::EncodeOptions;

use crate::EngineError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A tokenizer of either supported format.
#[derive(Debug)]
pub struct Tokenizer {
    inner: Inner,
    source: PathBuf,
    special: SpecialTokens,
    /// A copy of a `tokenizers` pipeline that leaves special tokens in text unparsed, made on first use
    /// ([`Tokenizer::encode_with`]).
    literal: OnceLock<Box<tokenizers::Tokenizer>>,
    /// The vocabulary size, counted once: the `tokenizers` crate counts added tokens by cloning the whole vocabulary
    /// map, and decoding checks ids against the size on every streamed token.
    vocab_len: OnceLock<usize>,
}

/// What a model's tokenizer files say about special tokens and the conversation format.
///
/// Filled from GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`) or from a folder's
/// `tokenizer_config.json` / `tokenizer.json`; the generator and the chat session follow it instead of guessing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Prepend BOS to a prompt (GGUF `add_bos_token`, `tokenizer_config.json` `add_bos_token`, or the
    /// post-processor of `tokenizer.json`).
    pub add_bos: bool,
    /// Append EOS to an encoded text (rare; GGUF `add_eos_token`).
    pub add_eos: bool,
    /// Beginning-of-sequence id, if the vocabulary has one.
    pub bos: Option<u32>,
    /// Ids that end generation: end of sequence, end of turn, end of message.
    pub end_ids: Vec<u32>,
    /// The model's own Jinja chat template, if it ships one.
    pub chat_template: Option<String>,
}

#[derive(Debug)]
enum Inner {
    Hf(Box<tokenizers::Tokenizer>),
    Llama2c(Llama2cTokenizer),
}

impl Tokenizer {
    /// Loads `tokenizer.json` (Hugging Face) or a llama2.c `tokenizer.bin` (any other file name ending `.bin`).
    pub fn from_file(path: &Path) -> Result<Self, EngineError> {
        let (inner, special) = if path.extension().is_some_and(|e| e == "bin") {
            let t = Llama2cTokenizer::from_file(path)?;
            let special = hf_settings::llama2c(t.pieces.len());
            (Inner::Llama2c(t), special)
        } else {
            if !path.is_file() {
                return Err(EngineError::io(
                    path,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                ));
            }
            let t = tokenizers::Tokenizer::from_file(path)
                .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
            let special = hf_settings::read(path, &t)?;
            (Inner::Hf(Box::new(t)), special)
        };
        Ok(Self {
            inner,
            source: path.to_path_buf(),
            special,
            literal: OnceLock::new(),
            vocab_len: OnceLock::new(),
        })
    }

    /// What the tokenizer files say about special tokens and chat.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// The tokenizer of a model: a GGUF file's own vocabulary, else `tokenizer.json`, else `tokenizer.bin`, in the
    /// model folder (or beside a llama2.c checkpoint).
    pub fn for_model(model_path: &Path) -> Result<Self, EngineError> {
        if model_path.is_file() && crate::gguf::is_gguf(model_path) {
            return Self::from_gguf(&crate::gguf::GgufFile::open(model_path)?);
        }
        let dir = crate::model::tokenizer_dir(model_path);
        for name in ["tokenizer.json", "tokenizer.bin"] {
            let p = dir.join(name);
            if p.is_file() {
                return Self::from_file(&p);
            }
        }
        Err(EngineError::Tokenizer(format!(
            "{}: no tokenizer.json or tokenizer.bin found beside the model (llama2.c checkpoints need their tokenizer.bin copied next to them)",
            dir.display()
        )))
    }

    /// The file this tokenizer was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Number of tokens, special tokens included.
    pub fn vocab_size(&self) -> usize {
        *self.vocab_len.get_or_init(|| match &self.inner {
            Inner::Hf(t) => t.get_vocab_size(true),
            Inner::Llama2c(t) => t.pieces.len(),
        })
    }

    /// Fails when the tokenizer can produce ids the model has no embedding for.
    pub fn check_model_vocab(&self, model_vocab: usize) -> Result<(), EngineError> {
        if self.vocab_size() > model_vocab {
            return Err(EngineError::Tokenizer(format!(
                "{}: {} tokens, but the model's vocabulary has only {model_vocab}",
                self.source.display(),
                self.vocab_size()
            )));
        }
        Ok(())
    }

    /// Encodes `text`; the texts of special tokens in it (`<|im_start|>`, `<s>`) become their ids, as a rendered
    /// chat template needs. With `add_special`, the tokenizer's own special tokens are added (Llama-style
    /// `tokenizer.json` files prepend BOS; llama2.c prepends BOS id 1); the generator does not ask for them, it
    /// follows [`SpecialTokens::add_bos`] itself.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        match &self.inner {
            Inner::Hf(t) => {
                let enc = t.encode(text, add_special).map_err(|e| {
                    EngineError::Tokenizer(format!(
                        "{}: encoding failed: {e}",
                        self.source.display()
                    ))
                })?;
                Ok(enc.get_ids().to_vec())
            }
            Inner::Llama2c(t) => t.encode_with_controls(text, add_special),
        }
    }

    /// Decodes `ids` to text (special tokens left out). Ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.decode_inner(ids, false)
    }

    /// Decodes `ids` with special tokens written out (`<|im_end|>`, `</s>`), for matching stop strings.
    pub fn decode_with_special(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.decode_inner(ids, true)
    }

    fn decode_inner(&self, ids: &[u32], with_special: bool) -> Result<String, EngineError> {
        let vocab = self.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange { id, vocab });
        }
        match &self.inner {
            Inner::Hf(t) => t.decode(ids, !with_special).map_err(|e| {
                EngineError::Tokenizer(format!("{}: decoding failed: {e}", self.source.display()))
            }),
            Inner::Llama2c(t) => Ok(t.decode_all(ids, with_special)),
        }
    }

    /// The text of `id` when it is a special token (one that [`Tokenizer::decode`] leaves out), else `None`.
    pub fn special_token_text(&self, id: u32) -> Option<String> {
        let plain = self.decode(&[id]).ok()?;
        let with = self.decode_with_special(&[id]).ok()?;
        (plain.is_empty() && !with.is_empty()).then_some(with)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Hf(t) => t.token_to_id(token),
            Inner::Llama2c(t) => t.index.get(token.as_bytes()).copied(),
        }
    }

    /// The token string of an id; `TokenOutOfRange` if there is none.
    pub fn id_to_token(&self, id: u32) -> Result<String, EngineError> {
        let out = match &self.inner {
            Inner::Hf(t) => t.id_to_token(id),
            Inner::Llama2c(t) => t
                .pieces
                .get(id as usize)
                .map(|p| String::from_utf8_lossy(&p.bytes).into_owned()),
        };
        out.ok_or(EngineError::TokenOutOfRange {
            id,
            vocab: self.vocab_size(),
        })
    }

    /// A streaming decoder: feed ids one at a time, get the text they add.
    pub fn stream(&self) -> TokenStream<'_> {
        TokenStream {
            tokenizer: self,
            ids: Vec::new(),
            emitted: 0,
        }
    }
}

/// Incremental detokenisation that never splits a UTF-8 character or a merged word boundary.
///
/// It decodes the whole sequence each time and returns what is new, holding back text that ends in an
/// incomplete character (shown by decoders as U+FFFD) until the next token completes it.
#[derive(Debug)]
pub struct TokenStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl TokenStream<'_> {
    /// Adds one id; returns the newly completed text (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String, EngineError> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}')
            || text.len() < self.emitted
            || !text.is_char_boundary(self.emitted)
        {
            return Ok(String::new());
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(new)
    }

    /// Every id pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

/// One vocabulary entry of `tokenizer.bin`.
#[derive(Debug, Clone)]
struct Piece {
    bytes: Vec<u8>,
    score: f32,
}

/// llama2.c's SentencePiece-style BPE tokenizer.
#[derive(Debug)]
pub struct Llama2cTokenizer {
    pieces: Vec<Piece>,
    index: HashMap<Vec<u8>, u32>,
    /// Id of `<0x00>`; byte `b` is `byte_base + b` (3 in Llama's vocabulary).
    byte_base: Option<u32>,
}

impl Llama2cTokenizer {
    /// Parses a `tokenizer.bin`.
    pub fn from_file(path: &Path) -> Result<Self, EngineError> {
        let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
        Self::parse(path, &bytes)
    }

    fn parse(path: &Path, b: &[u8]) -> Result<Self, EngineError> {
        let trunc = |what: String| EngineError::Truncated {
            path: path.to_path_buf(),
            message: what,
        };
        let i32_at = |p: usize| {
            b.get(p..p + 4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        };
        let max_len = i32_at(0).ok_or_else(|| trunc("no max_token_length header".into()))?;
        if max_len <= 0 {
            return Err(EngineError::Tokenizer(format!(
                "{}: max_token_length {max_len} is invalid",
                path.display()
            )));
        }
        let mut pos = 4;
        let mut pieces = Vec::new();
        while pos < b.len() {
            let n = pieces.len();
            let score = b
                .get(pos..pos + 4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .ok_or_else(|| trunc(format!("token {n}: score cut off")))?;
            let len = i32_at(pos + 4).ok_or_else(|| trunc(format!("token {n}: length cut off")))?;
            if len < 0 || len > max_len {
                return Err(EngineError::Tokenizer(format!(
                    "{}: token {n} has length {len}, outside 0..={max_len}",
                    path.display()
                )));
            }
            let start = pos + 8;
            let bytes = b
                .get(start..start + len as usize)
                .ok_or_else(|| trunc(format!("token {n}: {len} bytes announced, file ends")))?
                .to_vec();
            pieces.push(Piece { bytes, score });
            pos = start + len as usize;
        }
        if pieces.is_empty() {
            return Err(EngineError::Tokenizer(format!(
                "{}: no tokens",
                path.display()
            )));
        }
        let mut index = HashMap::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            // First occurrence wins, as in llama2.c's sorted lookup of unique pieces.
            index.entry(p.bytes.clone()).or_insert(i as u32);
        }
        // Byte fallback needs all 256 byte pieces in a row after `<0x00>`; a vocabulary without them has none.
        let byte_base = index.get(b"<0x00>".as_slice()).copied().filter(|&base| {
            (0..=255u8).all(|b| {
                let id = base as usize + usize::from(b);
                pieces
                    .get(id)
                    .is_some_and(|p| p.bytes == format!("<0x{b:02X}>").as_bytes())
            })
        });
        Ok(Self {
            pieces,
            index,
            byte_base,
        })
    }

    fn is_control(&self, id: u32) -> bool {
        self.pieces.get(id as usize).is_some_and(|p| {
            let t = p.bytes.trim_ascii();
            t == b"<s>" || t == b"</s>"
        })
    }

    /// Encodes like llama2.c's `encode(text, bos, eos=0)`.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, EngineError> {
        let mut ids: Vec<u32> = Vec::with_capacity(text.len() + 2);
        if add_bos {
            ids.push(1);
        }
        if text.is_empty() {
            return Ok(ids);
        }
        let mut toks: Vec<u32> = Vec::with_capacity(text.len() + 1);
        if let Some(&space) = self.index.get(b" ".as_slice()) {
            toks.push(space);
        }
        let mut buf = [0u8; 4];
        for ch in text.chars() {
            let s = ch.encode_utf8(&mut buf).as_bytes();
            if let Some(&id) = self.index.get(s) {
                toks.push(id);
                continue;
            }
            let base = self.byte_base.ok_or_else(|| {
                EngineError::Tokenizer(format!(
                    "character {ch:?} is not in the vocabulary and it has no byte tokens"
                ))
            })?;
            for &byte in s {
                toks.push(base + u32::from(byte));
            }
        }
        // Merge the best-scoring adjacent pair until none merges (O(n²), fine for prompts).
        let mut scratch = Vec::with_capacity(2 * usize::from(u8::MAX));
        loop {
            let mut best: Option<(f32, usize, u32)> = None;
            for i in 0..toks.len().saturating_sub(1) {
                scratch.clear();
                scratch.extend_from_slice(&self.pieces[toks[i] as usize].bytes);
                scratch.extend_from_slice(&self.pieces[toks[i + 1] as usize].bytes);
                if let Some(&id) = self.index.get(scratch.as_slice()) {
                    let score = self.pieces[id as usize].score;
                    if best.is_none_or(|(s, _, _)| score > s) {
                        best = Some((score, i, id));
                    }
                }
            }
            let Some((_, i, id)) = best else { break };
            toks[i] = id;
            toks.remove(i + 1);
        }
        ids.extend(toks);
        Ok(ids)
    }

    /// Encodes with `<s>` and `</s>` in the text standing for BOS and EOS (a Llama 2 chat template's `</s><s>`
    /// between turns); the text between them is encoded as llama.cpp does after a special token, each fragment
    /// with its own dummy-prefix space.
    fn encode_with_controls(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, EngineError> {
        let mut ids = self.encode("", add_bos)?;
        let mut rest = text;
        while !rest.is_empty() {
            let next = [("<s>", 1u32), ("</s>", 2u32)]
                .into_iter()
                .filter(|&(mark, id)| {
                    self.pieces
                        .get(id as usize)
                        .is_some_and(|p| p.bytes.trim_ascii() == mark.as_bytes())
                })
                .filter_map(|(mark, id)| rest.find(mark).map(|at| (at, mark, id)))
                .min_by_key(|&(at, _, _)| at);
            let Some((at, mark, id)) = next else {
                ids.extend(self.encode(rest, false)?);
                break;
            };
            if at > 0 {
                ids.extend(self.encode(&rest[..at], false)?);
            }
            ids.push(id);
            rest = &rest[at + mark.len()..];
        }
        Ok(ids)
    }

    /// Decodes ids (already range-checked); the dummy-prefix space of the first piece is dropped, control tokens
    /// are left out (or written as `<s>`, `</s>` with `controls`), invalid UTF-8 becomes U+FFFD.
    fn decode_all(&self, ids: &[u32], controls: bool) -> String {
        let mut out: Vec<u8> = Vec::new();
        let mut first = true;
        for &id in ids {
            if self.is_control(id) {
                if controls {
                    out.extend_from_slice(self.pieces[id as usize].bytes.trim_ascii());
                }
                continue;
            }
            match self.byte_base {
                Some(base) if id >= base && id - base < 256 => out.push((id - base) as u8),
                _ => {
                    let bytes = self
                        .pieces
                        .get(id as usize)
                        .map_or(&[][..], |p| p.bytes.as_slice());
                    out.extend_from_slice(if first {
                        bytes.strip_prefix(b" ").unwrap_or(bytes)
                    } else {
                        bytes
                    });
                }
            }
            first = false;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A small hand-made vocabulary: specials, all 256 byte tokens, a few merges with scores.
    fn tiny_bin() -> Vec<u8> {
        let mut v: Vec<(Vec<u8>, f32)> = vec![
            (b"<unk>".to_vec(), 0.0),
            (b"\n<s>\n".to_vec(), 0.0),
            (b"\n</s>\n".to_vec(), 0.0),
        ];
        v.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>").into_bytes(), 0.0)));
        for (i, p) in [" ", "a", "b", "c", " a", "ab", " ab", "abc", " abc"]
            .iter()
            .enumerate()
        {
            v.push((p.as_bytes().to_vec(), -(i as f32)));
        }
        let mut out = 16i32.to_le_bytes().to_vec();
        for (p, s) in v {
            out.extend(s.to_le_bytes());
            out.extend((p.len() as i32).to_le_bytes());
            out.extend(p);
        }
        out
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let t = Llama2cTokenizer::parse(Path::new("t.bin"), &tiny_bin()).unwrap();
        let id = |s: &str| t.index[s.as_bytes()];
        // " abc": " "+"a" → " a" (score -4) beats "ab" (-5); then " a"+"b" → " ab"; then " ab"+"c" → " abc".
        assert_eq!(t.encode("abc", true).unwrap(), vec![1, id(" abc")]);
        // 'é' is not a piece: two byte tokens.
        let ids = t.encode("aé", false).unwrap();
        assert_eq!(ids, vec![id(" a"), 3 + 0xC3, 3 + 0xA9]);
        assert_eq!(t.decode_all(&ids, false), "aé");
        assert_eq!(t.decode_all(&[1, id(" abc"), id("a"), 2], false), "abca");
        assert_eq!(t.decode_all(&[1, id(" abc"), 2], true), "<s>abc</s>");
        // Control texts in the text become their ids; each fragment gets its own dummy-prefix space.
        assert_eq!(
            t.encode_with_controls("abc</s><s>abc", false).unwrap(),
            vec![id(" abc"), 2, 1, id(" abc")]
        );
    }

    #[test]
    fn truncated_file_is_an_error() {
        let b = tiny_bin();
        let err = Llama2cTokenizer::parse(Path::new("t.bin"), &b[..b.len() - 2]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
