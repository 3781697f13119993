//! Byte-level BPE pre-tokenisation as llama.cpp chooses it from `tokenizer.ggml.pre`.
//!
//! A GGUF file names its pre-tokenizer instead of storing it; llama.cpp's `llama-vocab.cpp` maps the name to a list
//! of regexes applied one after another, each splitting the pieces the previous one left (matches and the text
//! between them both become pieces). The tables below copy those regexes and that mapping for the families tlite
//! runs, so the ids agree with llama.cpp and with the models' own Hugging Face tokenizers. Other names are an error
//! rather than a silent fallback: a wrong split still produces plausible ids, only worse text.

/// GPT-2's word split; also the second stage of several others.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3 (tiktoken cl100k style), with llama.cpp's case-insensitive contractions spelled out.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2: as Llama 3 but one digit per piece.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// OpenAI's o200k split (`gpt-4o`: Phi-4-mini), as its `tokenizer.json` writes it; llama.cpp runs an equivalent
/// rewrite of it, since its own regex engine lacks the letter-case classes.
const O200K: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a byte-level BPE vocabulary splits text before merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreTokenizer {
    /// Regexes applied in order (llama.cpp `regex_exprs`).
    pub regexes: Vec<&'static str>,
    /// A piece that is itself a token is taken whole, without merging (llama.cpp `ignore_merges`).
    pub ignore_merges: bool,
    /// Whether llama.cpp adds BOS for this pre-tokenizer when `tokenizer.ggml.add_bos_token` is absent.
    pub default_add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre` = `name` (absent: `default`), or `None` when tlite
    /// does not know the name.
    pub fn for_name(name: Option<&str>) -> Option<Self> {
        let plain = |regexes: Vec<&'static str>| Self {
            regexes,
            ignore_merges: false,
            default_add_bos: false,
        };
        let pre = match name.unwrap_or("default") {
            "default" => plain(vec![
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2,
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ]),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => Self {
                regexes: vec![LLAMA3],
                ignore_merges: true,
                default_add_bos: true,
            },
            // ChatGLM4's split is Llama 3's regex without ignore_merges (llama.cpp's CHATGLM4).
            "dbrx" | "smaug-bpe" | "chatglm-bpe" | "glm4" => plain(vec![LLAMA3]),
            "gpt-4o" | "llama4" => plain(vec![O200K]),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "mpt" | "olmo" | "jais" | "exaone4" => {
                plain(vec![GPT2])
            }
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => plain(vec![QWEN2]),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => plain(vec![r"\p{N}", GPT2]),
            "falcon" => plain(vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"]),
            _ => return None,
        };
        Some(pre)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_map_as_in_llama_cpp() {
        assert_eq!(
            PreTokenizer::for_name(None),
            PreTokenizer::for_name(Some("default"))
        );
        let l3 = PreTokenizer::for_name(Some("llama-bpe")).unwrap();
        assert!(l3.ignore_merges && l3.default_add_bos);
        assert_eq!(l3.regexes, vec![LLAMA3]);
        assert_eq!(
            PreTokenizer::for_name(Some("qwen2")).unwrap().regexes,
            vec![QWEN2]
        );
        assert_eq!(
            PreTokenizer::for_name(Some("smollm")).unwrap().regexes,
            vec![r"\p{N}", GPT2]
        );
        let glm = PreTokenizer::for_name(Some("chatglm-bpe")).unwrap();
        assert!(!glm.ignore_merges && !glm.default_add_bos);
        assert_eq!(glm.regexes, vec![LLAMA3]);
        assert_eq!(
            PreTokenizer::for_name(Some("gpt-4o")).unwrap().regexes,
            vec![O200K]
        );
        assert!(PreTokenizer::for_name(Some("no-such-pre")).is_none());
    }

    #[test]
    fn every_regex_compiles() {
        for name in [
            "default",
            "llama-bpe",
            "dbrx",
            "gpt-2",
            "qwen2",
            "smollm",
            "falcon",
            "gpt-4o",
        ] {
            for re in PreTokenizer::for_name(Some(name)).unwrap().regexes {
                fancy_regex_compiles(re);
            }
        }
    }

    /// o200k keeps a word's case run and its contraction together and takes digits three at a time.
    #[test]
    fn o200k_splits_as_its_tokenizer_json_does() {
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::SplitDelimiterBehavior;
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer as _};
        let split = Split::new(
            SplitPattern::Regex(O200K.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .unwrap();
        let mut text = PreTokenizedString::from("HelloWorld's 12345");
        split.pre_tokenize(&mut text).unwrap();
        let pieces: Vec<String> = text
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(s, _, _)| s.to_string())
            .collect();
        assert_eq!(pieces, ["Hello", "World's", " ", "123", "45"]);
    }

    fn fancy_regex_compiles(re: &str) {
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::SplitDelimiterBehavior;
        Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .unwrap_or_else(|e| panic!("{re}: {e}"));
    }
}
