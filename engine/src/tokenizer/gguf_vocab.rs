//! The vocabulary a GGUF file describes in `tokenizer.ggml.*` metadata, read and checked.
//!
//! Every array is checked against the token list (equal lengths, ids in range, known token types) and every error
//! names the metadata key, so a damaged file is reported rather than half-loaded. What the metadata leaves unsaid
//! (whether to add BOS, which tokens end a turn) is decided as llama.cpp's `llama-vocab.cpp` decides it, because
//! GGUF files are written for llama.cpp and only say what differs from its defaults.

use super::gguf_pre::PreTokenizer;
use super::SpecialTokens;
use crate::gguf::{GgufFile, MetaValue};
use crate::EngineError;
use std::collections::HashMap;

/// `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenType {
    /// 0: written by old converters; treated as normal text.
    Undefined,
    /// 1.
    Normal,
    /// 2: `<unk>`; matched in text only when special tokens are parsed.
    Unknown,
    /// 3: `<s>`, `<|im_end|>`…; matched in text only when special tokens are parsed.
    Control,
    /// 4: added words that are always matched whole in text.
    UserDefined,
    /// 5.
    Unused,
    /// 6: SentencePiece `<0xXX>` byte fallback.
    Byte,
}

impl TokenType {
    fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Undefined,
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }

    /// Tokens that llama.cpp splits out of text only when asked to parse special tokens.
    pub fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::Unknown)
    }
}

/// Which algorithm `tokenizer.ggml.model` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VocabKind {
    /// `gpt2`: byte-level BPE with ranked merges.
    Bpe(PreTokenizer),
    /// `llama`: SentencePiece BPE, pieces merged by score, spaces as `▁`, bytes as `<0xXX>`.
    Spm {
        /// Prefix each text with a space (`tokenizer.ggml.add_space_prefix`, default true).
        add_space_prefix: bool,
    },
}

/// A validated GGUF vocabulary.
#[derive(Debug, Clone)]
pub(crate) struct GgufVocab {
    pub kind: VocabKind,
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
    /// SentencePiece scores (zeros when absent).
    pub scores: Vec<f32>,
    /// BPE merges in rank order (empty for SentencePiece).
    pub merges: Vec<(String, String)>,
    pub unk: Option<u32>,
    /// End-of-sequence id, appended when `special.add_eos`.
    pub eos: Option<u32>,
    pub special: SpecialTokens,
}

/// Texts llama.cpp treats as end of generation whatever the metadata says (`special_eog_ids`).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle tokens llama.cpp also stops on, found by text when their id key is absent: (key, texts).
const FIM_EOG: &[(&str, &[&str])] = &[
    (
        "tokenizer.ggml.fim_pad_token_id",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];

impl GgufVocab {
    /// Reads and validates the vocabulary of `g`.
    pub fn read(g: &GgufFile) -> Result<Self, EngineError> {
        const MODEL: &str = "tokenizer.ggml.model";
        const TOKENS: &str = "tokenizer.ggml.tokens";
        let model = g
            .opt_str(MODEL)?
            .ok_or_else(|| g.meta_error(MODEL, "is missing: the file carries no tokenizer"))?;
        let kind = match model {
            "gpt2" => {
                let pre = g.opt_str("tokenizer.ggml.pre")?;
                let pre = PreTokenizer::for_name(pre).ok_or_else(|| {
                    g.meta_error(
                        "tokenizer.ggml.pre",
                        format!(
                            "names the pre-tokenizer {:?}, which tlite does not know (it knows default, gpt-2, llama-bpe, qwen2, smollm and their aliases)",
                            pre.unwrap_or_default()
                        ),
                    )
                })?;
                VocabKind::Bpe(pre)
            }
            "llama" => VocabKind::Spm {
                add_space_prefix: g.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true),
            },
            other => {
                return Err(g.meta_error(
                    MODEL,
                    format!("is {other:?}; tlite reads only \"llama\" (SentencePiece) and \"gpt2\" (byte-level BPE) vocabularies"),
                ))
            }
        };

        let mut tokens = g
            .opt_array(TOKENS, "strings", |v| v.as_str().map(str::to_owned))?
            .ok_or_else(|| g.meta_error(TOKENS, "is missing"))?;
        if tokens.is_empty() {
            return Err(g.meta_error(TOKENS, "is empty"));
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(g.meta_error(
                TOKENS,
                format!("has {} tokens, more than ids can number", tokens.len()),
            ));
        }
        let n = tokens.len();
        let same_len = |key: &str, len: usize| {
            if len == n {
                Ok(())
            } else {
                Err(g.meta_error(key, format!("has {len} elements but {TOKENS} has {n}")))
            }
        };

        let scores = match g.opt_array("tokenizer.ggml.scores", "numbers", |v| {
            v.as_f64().map(|x| x as f32)
        })? {
            Some(s) => {
                same_len("tokenizer.ggml.scores", s.len())?;
                s
            }
            None => vec![0.0; n],
        };
        let mut types =
            match g.opt_array("tokenizer.ggml.token_type", "token types 0 to 6", |v| {
                v.as_i64().and_then(TokenType::from_code)
            })? {
                Some(t) => {
                    same_len("tokenizer.ggml.token_type", t.len())?;
                    t
                }
                None => vec![TokenType::Normal; n],
            };

        // Empty pieces get a placeholder and duplicates are refused, as llama.cpp does.
        let mut index = HashMap::with_capacity(n);
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
            if let Some(first) = index.insert(t.clone(), i as u32) {
                return Err(
                    g.meta_error(TOKENS, format!("holds {t:?} twice, at ids {first} and {i}"))
                );
            }
        }

        let merges = match &kind {
            VocabKind::Bpe(_) => read_merges(g, &index)?,
            VocabKind::Spm { .. } => Vec::new(),
        };

        let id_key = |key: &str| -> Result<Option<u32>, EngineError> {
            match g.opt_u32(key)? {
                Some(id) if id as usize >= n => Err(g.meta_error(
                    key,
                    format!("is {id}, outside the vocabulary of {n} tokens"),
                )),
                other => Ok(other),
            }
        };
        // llama.cpp's defaults for SentencePiece (<unk> 0, <s> 1, </s> 2); byte-level BPE files always name theirs
        // (llama.cpp's fallback there, id 11, is a comma in GPT-2 and is not copied).
        let spm_default = |id: u32| {
            matches!(kind, VocabKind::Spm { .. })
                .then_some(id)
                .filter(|&i| (i as usize) < n)
        };
        let bos = id_key("tokenizer.ggml.bos_token_id")?.or(spm_default(1));
        let eos = id_key("tokenizer.ggml.eos_token_id")?.or(spm_default(2));
        let unk = id_key("tokenizer.ggml.unknown_token_id")?.or(spm_default(0));
        let eot = id_key("tokenizer.ggml.eot_token_id")?;
        let eom = id_key("tokenizer.ggml.eom_token_id")?;

        let default_add_bos = match &kind {
            VocabKind::Bpe(pre) => pre.default_add_bos,
            VocabKind::Spm { .. } => true,
        };
        let add_bos = g
            .opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_add_bos);
        let add_eos = g.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(g.meta_error(
                "tokenizer.ggml.add_bos_token",
                "is true, but tokenizer.ggml.bos_token_id is not set",
            ));
        }
        if add_eos && eos.is_none() {
            return Err(g.meta_error(
                "tokenizer.ggml.add_eos_token",
                "is true, but tokenizer.ggml.eos_token_id is not set",
            ));
        }

        let mut end_ids = Vec::new();
        let mut push_end = |id: u32, types: &mut Vec<TokenType>| {
            if !end_ids.contains(&id) {
                end_ids.push(id);
            }
            // llama.cpp overrides the type of end tokens that were not marked control.
            let t = &mut types[id as usize];
            if !t.is_special() {
                *t = TokenType::Control;
            }
        };
        for id in [eos, eot, eom].into_iter().flatten() {
            push_end(id, &mut types);
        }
        for &(key, texts) in FIM_EOG {
            let id = match id_key(key)? {
                Some(id) => Some(id),
                None => texts.iter().filter_map(|t| index.get(*t).copied()).min(),
            };
            if let Some(id) = id {
                push_end(id, &mut types);
            }
        }
        let mut by_text: Vec<u32> = EOG_TEXTS
            .iter()
            .filter_map(|t| index.get(*t).copied())
            .collect();
        by_text.sort_unstable();
        for id in by_text {
            push_end(id, &mut types);
        }
        // llama.cpp's exceptions: with gpt-oss's `<|return|>` and `<|call|>` (or solar-open's `<|calls|>` and
        // `<|flush|>`), `<|end|>` ends a message, not the answer; with gemma 4's `<|tool_response>`, `</s>` is text.
        let has = |t: &str, ends: &[u32]| index.get(t).is_some_and(|id| ends.contains(id));
        let oss = has("<|return|>", &end_ids) && has("<|call|>", &end_ids);
        let solar = has("<|calls|>", &end_ids) && has("<|flush|>", &end_ids);
        if oss || solar {
            if let Some(&end) = index.get("<|end|>") {
                end_ids.retain(|&id| id != end);
                types[end as usize] = TokenType::UserDefined;
            }
        }
        if has("<|tool_response>", &end_ids) {
            if let Some(&s) = index.get("</s>") {
                end_ids.retain(|&id| id != s);
                types[s as usize] = TokenType::Normal;
            }
        }
        // llama.cpp's gpt-oss rule: these are always rendered and matched, never control.
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = index.get(t) {
                types[id as usize] = TokenType::UserDefined;
            }
        }

        let chat_template = g.opt_str("tokenizer.chat_template")?.map(str::to_owned);
        Ok(Self {
            kind,
            tokens,
            types,
            scores,
            merges,
            unk,
            eos,
            special: SpecialTokens {
                add_bos,
                add_eos,
                bos,
                end_ids,
                chat_template,
            },
        })
    }
}

/// `tokenizer.ggml.merges`: "left right" pairs split at the first space after the first byte, as llama.cpp does
/// (a left part may itself be a space); both parts and their concatenation must be tokens.
fn read_merges(
    g: &GgufFile,
    index: &HashMap<String, u32>,
) -> Result<Vec<(String, String)>, EngineError> {
    const KEY: &str = "tokenizer.ggml.merges";
    let raw = g
        .opt_array(KEY, "strings", |v: &MetaValue| {
            v.as_str().map(str::to_owned)
        })?
        .ok_or_else(|| g.meta_error(KEY, "is missing (a gpt2 vocabulary needs its merges)"))?;
    raw.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(p, _)| p)
                .ok_or_else(|| {
                    g.meta_error(
                        KEY,
                        format!("element {i} ({m:?}) has no space between its two parts"),
                    )
                })?;
            let (left, right) = (&m[..split], &m[split + 1..]);
            for part in [left, right, &format!("{left}{right}")] {
                if !index.contains_key(part) {
                    return Err(g.meta_error(
                        KEY,
                        format!("element {i} ({m:?}) uses {part:?}, which is not a token"),
                    ));
                }
            }
            Ok((left.to_owned(), right.to_owned()))
        })
        .collect()
}
