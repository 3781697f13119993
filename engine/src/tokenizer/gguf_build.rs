//! A `tokenizers` pipeline that tokenises a [`GgufVocab`] exactly as llama.cpp does.
//!
//! Byte-level BPE: llama.cpp's regex stages become `Split` pre-tokenizers (each keeps matches and gaps as pieces, as
//! `unicode_regex_split` does), then GPT-2's byte-to-character map, then ranked merges.
//! SentencePiece: llama.cpp merges the adjacent pair whose concatenation is the highest-scoring token, leftmost
//! first on ties. A BPE model ranks exactly those merges when every split of every token into two tokens is listed
//! in order of the whole token's score (the conversion Hugging Face's `LlamaConverter` makes); a space prefix and
//! `▁` for spaces are normalisers, and characters outside the vocabulary fall back to `<0xXX>` tokens.
//! Control and unknown tokens are added as special tokens (matched in text only while special tokens are parsed),
//! user-defined ones as plain added tokens (always matched), both on the raw text as llama.cpp matches them.

use super::gguf_vocab::{GgufVocab, TokenType, VocabKind};
use super::{Inner, Tokenizer as Tlite};
use crate::gguf::GgufFile;
use crate::EngineError;
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, DecoderWrapper, SplitDelimiterBehavior, Tokenizer};

impl Tlite {
    /// The tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata, with its special tokens, BOS/EOS
    /// rules, end-of-generation ids and chat template.
    pub fn from_gguf(g: &GgufFile) -> Result<Self, EngineError> {
        let vocab = GgufVocab::read(g)?;
        let tokenizer = build(&vocab, &g.path().display().to_string())?;
        Ok(Self {
            inner: Inner::Hf(Box::new(tokenizer)),
            source: g.path().to_path_buf(),
            special: vocab.special,
            literal: std::sync::OnceLock::new(),
            vocab_len: std::sync::OnceLock::new(),
        })
    }
}

/// Builds the tokenizer; `source` names the file in errors.
pub(crate) fn build(v: &GgufVocab, source: &str) -> Result<Tokenizer, EngineError> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        EngineError::Tokenizer(format!("{source}: {what}: {e}"))
    };
    let vocab: Vocab = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut tokenizer = match &v.kind {
        VocabKind::Bpe(pre) => {
            let model = BPE::builder()
                .vocab_and_merges(vocab, v.merges.clone())
                .ignore_merges(pre.ignore_merges)
                .build()
                .map_err(|e| err("building the BPE model from tokenizer.ggml.merges", &e))?;
            let mut stages = Vec::with_capacity(pre.regexes.len() + 1);
            for re in &pre.regexes {
                let split = Split::new(
                    SplitPattern::Regex((*re).to_owned()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| err("compiling a pre-tokenizer regex", &e))?;
                stages.push(split.into());
            }
            stages.push(ByteLevel::new(false, false, false).into());
            let mut t = Tokenizer::new(model);
            t.with_pre_tokenizer(Some(PreSequence::new(stages)));
            t.with_decoder(Some(ByteLevel::new(false, false, false)));
            t
        }
        VocabKind::Spm { add_space_prefix } => {
            let mut builder = BPE::builder()
                .vocab_and_merges(vocab, spm_merges(v))
                .byte_fallback(true)
                .fuse_unk(true);
            if let Some(unk) = v.unk {
                builder = builder.unk_token(v.tokens[unk as usize].clone());
            }
            let model = builder
                .build()
                .map_err(|e| err("building the SentencePiece model", &e))?;
            let space =
                Replace::new(" ", "▁").map_err(|e| err("building the space normaliser", &e))?;
            let mut normalizers = Vec::new();
            if *add_space_prefix {
                normalizers.push(Prepend::new("▁".into()).into());
            }
            normalizers.push(space.into());
            let unspace =
                Replace::new("▁", " ").map_err(|e| err("building the space decoder", &e))?;
            let mut decoders: Vec<DecoderWrapper> = vec![
                unspace.into(),
                ByteFallback::new().into(),
                Fuse::new().into(),
            ];
            if *add_space_prefix {
                decoders.push(Strip::new(' ', 1, 0).into());
            }
            let mut t = Tokenizer::new(model);
            t.with_normalizer(Some(NormalizerSequence::new(normalizers)));
            t.with_decoder(Some(DecoderSequence::new(decoders)));
            t
        }
    };

    let added = |special: bool| {
        v.types
            .iter()
            .enumerate()
            .filter(|&(_, t)| {
                if special {
                    t.is_special()
                } else {
                    *t == TokenType::UserDefined
                }
            })
            .map(|(i, _)| AddedToken::from(v.tokens[i].clone(), special).normalized(false))
            .collect::<Vec<_>>()
    };
    tokenizer.add_special_tokens(&added(true));
    tokenizer.add_tokens(&added(false));

    let s = &v.special;
    let mut single = Vec::new();
    let mut specials = Vec::new();
    for (name, id, wanted) in [("BOS", s.bos, s.add_bos), ("EOS", v.eos, s.add_eos)] {
        if let (true, Some(id)) = (wanted, id) {
            single.push(name);
            specials.push(
                SpecialToken::new(name.into(), vec![id], vec![v.tokens[id as usize].clone()])
                    .map_err(|e| err("building the BOS/EOS template", &e))?,
            );
        }
    }
    if !specials.is_empty() {
        let template = |seq: &str| {
            let mut parts = Vec::new();
            if s.add_bos {
                parts.push("BOS".to_owned());
            }
            parts.push(seq.to_owned());
            if s.add_eos {
                parts.push("EOS".to_owned());
            }
            parts.join(" ")
        };
        let post = TemplateProcessing::builder()
            .try_single(template("$A"))
            .and_then(|b| b.try_pair(format!("{} {}", template("$A"), template("$B:1"))))
            .map_err(|e| err("building the BOS/EOS template", &e))?
            .special_tokens(specials)
            .build()
            .map_err(|e| err("building the BOS/EOS template", &e))?;
        tokenizer.with_post_processor(Some(post));
    }
    Ok(tokenizer)
}

/// SentencePiece merges: every split of every token into two tokens, the whole token's score deciding the rank
/// (highest first), ties kept in id order.
fn spm_merges(v: &GgufVocab) -> Vec<(String, String)> {
    let index: HashMap<&str, u32> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let mut ranked: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, piece) in v.tokens.iter().enumerate() {
        let mut local = Vec::new();
        for (split, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(split);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                local.push((v.scores[id], id as u32, li, ri));
            }
        }
        local.sort_by_key(|&(_, _, l, r)| (l, r));
        ranked.extend(local);
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
        .into_iter()
        .map(|(_, _, l, r)| (v.tokens[l as usize].clone(), v.tokens[r as usize].clone()))
        .collect()
}
