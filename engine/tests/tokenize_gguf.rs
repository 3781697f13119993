//! GGUF vocabularies against llama.cpp's own tokenizer test vectors.
//!
//! `fixtures/vocab/` holds llama.cpp's vocabulary-only GGUF files (xz-compressed: 16 MB raw, about 3.4 MB packed)
//! with its `test-tokenizer-0` inputs and expected ids (MIT, LICENSE-llama.cpp). The expected ids come from
//! llama.cpp and the models' Hugging Face tokenizers, not from tlite. Texts are split and tokenised as
//! `test-tokenizer-0.cpp` does: chunks between "\n__ggml_vocab_test__\n", no BOS/EOS, special tokens not parsed.

#![allow(clippy::unwrap_used)]

use engine::gguf::GgufFile;
use engine::tokenizer::{EncodeOptions, Tokenizer};
use fixtures::gguf_writer::{gguf_bytes, GgufValue};
use std::path::{Path, PathBuf};

const LITERAL: EncodeOptions = EncodeOptions {
    add_special: false,
    parse_special: false,
};

fn vocab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vocab")
}

/// Unpacks `ggml-vocab-NAME.gguf.xz` into a temporary folder and loads its tokenizer.
fn load(name: &str) -> (tempfile::TempDir, Tokenizer) {
    let packed = std::fs::read(vocab_dir().join(format!("ggml-vocab-{name}.gguf.xz"))).unwrap();
    let mut raw = Vec::new();
    lzma_rs::xz_decompress(&mut packed.as_slice(), &mut raw).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("ggml-vocab-{name}.gguf"));
    std::fs::write(&path, raw).unwrap();
    let t = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    (dir, t)
}

/// The (text, expected ids) pairs of a vocabulary's `.inp`/`.out` files, split as `test-tokenizer-0.cpp` splits them.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let inp =
        std::fs::read_to_string(vocab_dir().join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out =
        std::fs::read_to_string(vocab_dir().join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(p) => {
                texts.push(rest[..p].to_owned());
                rest = &rest[p + sep.len()..];
            }
            None => {
                texts.push(rest.to_owned());
                rest = "";
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{name}: .inp and .out disagree on the number of tests"
    );
    texts.into_iter().zip(ids).collect()
}

/// Tokenises every case; fails listing each mismatch, and says how many lines passed.
fn check_vocab(name: &str) -> Tokenizer {
    let (_dir, t) = load(name);
    let cases = cases(name);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = t.encode_with(text, LITERAL).unwrap();
        if &got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    eprintln!(
        "{name}: {}/{} lines pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    t
}

#[test]
fn llama_spm_matches_llama_cpp() {
    let t = check_vocab("llama-spm");
    let s = t.special();
    assert!(s.add_bos && !s.add_eos);
    assert_eq!(s.bos, Some(1));
    assert_eq!(s.end_ids, vec![2]);
    // BOS comes from the metadata; `<s>` in text is plain text unless specials are parsed.
    assert_eq!(t.encode("Hello", true).unwrap(), vec![1, 15043]);
    let plain = t.encode_with("<s>Hello", LITERAL).unwrap();
    assert!(!plain.contains(&1), "{plain:?}");
    let parsed = t
        .encode_with(
            "<s>Hello",
            EncodeOptions {
                add_special: false,
                parse_special: true,
            },
        )
        .unwrap();
    // llama.cpp prefixes a space to the text after a special token: "▁Hello" = 15043.
    assert_eq!(parsed, vec![1, 15043]);
}

#[test]
fn llama_bpe_matches_llama_cpp() {
    let t = check_vocab("llama-bpe");
    let s = t.special();
    // No add_bos_token key: llama.cpp's default for the llama-bpe pre-tokenizer is to add BOS.
    assert!(s.add_bos);
    assert_eq!(s.bos, Some(128000));
    assert!(
        s.end_ids.contains(&128001) && s.end_ids.contains(&128009),
        "{:?}",
        s.end_ids
    );
    assert_eq!(t.encode("Hello", true).unwrap(), vec![128000, 9906]);
}

#[test]
fn gpt2_matches_llama_cpp() {
    let t = check_vocab("gpt-2");
    let s = t.special();
    assert!(!s.add_bos && !s.add_eos);
    assert_eq!(s.end_ids, vec![50256]);
    assert_eq!(
        t.encode("Hello", true).unwrap(),
        t.encode("Hello", false).unwrap()
    );
}

#[test]
fn qwen2_matches_llama_cpp() {
    let t = check_vocab("qwen2");
    let s = t.special();
    assert!(!s.add_bos);
    assert!(s
        .chat_template
        .as_deref()
        .is_some_and(|c| c.contains("<|im_start|>")));
    let im_end = t.token_to_id("<|im_end|>").unwrap();
    assert!(
        s.end_ids.contains(&151643) && s.end_ids.contains(&im_end),
        "{:?}",
        s.end_ids
    );
    let chat = "<|im_start|>user\nHi<|im_end|>";
    let parsed = t
        .encode_with(
            chat,
            EncodeOptions {
                add_special: false,
                parse_special: true,
            },
        )
        .unwrap();
    assert_eq!(parsed.first(), Some(&151644));
    assert_eq!(parsed.last(), Some(&im_end));
    let literal = t.encode_with(chat, LITERAL).unwrap();
    assert!(
        !literal.contains(&151644) && !literal.contains(&im_end),
        "{literal:?}"
    );
    // User-defined tokens (type 4) are matched even when specials are not parsed, as in llama.cpp.
    let pad = t.token_to_id("[PAD151646]").unwrap();
    assert_eq!(
        t.encode_with("a[PAD151646]", LITERAL).unwrap(),
        vec![64, pad]
    );
}

/// Decoding gives back every test text (byte-level BPE loses nothing).
#[test]
fn byte_level_decode_round_trips() {
    let (_dir, t) = load("gpt-2");
    for (text, ids) in cases("gpt-2") {
        assert_eq!(t.decode(&ids).unwrap(), text);
    }
}

/// The bytes `piece` gives for each token concatenate to the text (as llama-tokenize's listing would).
#[test]
fn pieces_concatenate_to_the_text() {
    for name in ["gpt-2", "llama-spm"] {
        let (_dir, t) = load(name);
        for (text, ids) in cases(name) {
            let bytes: Vec<u8> = ids.iter().flat_map(|&id| t.piece(id).unwrap()).collect();
            // SentencePiece adds one leading space to a text.
            let want = if name == "llama-spm" && !text.is_empty() {
                format!(" {text}")
            } else {
                text.clone()
            };
            assert_eq!(String::from_utf8(bytes).unwrap(), want, "{name}: {text:?}");
        }
    }
}

/// A tiny byte-level vocabulary's metadata, to corrupt one key at a time.
fn tiny_meta() -> Vec<(&'static str, GgufValue)> {
    let strs = |v: &[&str]| GgufValue::Strs(v.iter().map(|s| s.to_string()).collect());
    vec![
        ("general.architecture", GgufValue::Str("llama".into())),
        ("tokenizer.ggml.model", GgufValue::Str("gpt2".into())),
        ("tokenizer.ggml.pre", GgufValue::Str("gpt-2".into())),
        (
            "tokenizer.ggml.tokens",
            strs(&["a", "b", "ab", "<|endoftext|>"]),
        ),
        (
            "tokenizer.ggml.token_type",
            GgufValue::I32s(vec![1, 1, 1, 3]),
        ),
        ("tokenizer.ggml.merges", strs(&["a b"])),
        ("tokenizer.ggml.eos_token_id", GgufValue::U32(3)),
    ]
}

fn from_meta(meta: &[(&str, GgufValue)]) -> Result<Tokenizer, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.gguf");
    std::fs::write(&path, gguf_bytes(meta, &[])).unwrap();
    let g = GgufFile::open(&path).map_err(|e| e.to_string())?;
    Tokenizer::from_gguf(&g).map_err(|e| e.to_string())
}

fn with(key: &'static str, value: GgufValue) -> Vec<(&'static str, GgufValue)> {
    let mut m: Vec<_> = tiny_meta().into_iter().filter(|(k, _)| *k != key).collect();
    m.push((key, value));
    m
}

#[test]
fn tiny_vocabulary_merges_and_ends() {
    let t = from_meta(&tiny_meta()).unwrap();
    assert_eq!(t.encode_with("ab", LITERAL).unwrap(), vec![2]);
    assert_eq!(t.encode_with("ba", LITERAL).unwrap(), vec![1, 0]);
    assert_eq!(t.special().end_ids, vec![3]);
}

#[test]
fn bad_metadata_is_an_error_naming_the_key() {
    let strs = |v: &[&str]| GgufValue::Strs(v.iter().map(|s| s.to_string()).collect());
    let bad = [
        (
            with("tokenizer.ggml.token_type", GgufValue::I32s(vec![1, 1, 1])),
            "tokenizer.ggml.token_type",
        ),
        (
            with(
                "tokenizer.ggml.token_type",
                GgufValue::I32s(vec![1, 1, 9, 3]),
            ),
            "tokenizer.ggml.token_type",
        ),
        (
            with("tokenizer.ggml.eos_token_id", GgufValue::U32(4)),
            "tokenizer.ggml.eos_token_id",
        ),
        (
            with("tokenizer.ggml.bos_token_id", GgufValue::Str("x".into())),
            "tokenizer.ggml.bos_token_id",
        ),
        (
            with("tokenizer.ggml.pre", GgufValue::Str("klingon".into())),
            "klingon",
        ),
        (
            with("tokenizer.ggml.model", GgufValue::Str("t5".into())),
            "tokenizer.ggml.model",
        ),
        (
            with("tokenizer.ggml.merges", strs(&["a c"])),
            "tokenizer.ggml.merges",
        ),
        (
            with("tokenizer.ggml.merges", strs(&["ab"])),
            "tokenizer.ggml.merges",
        ),
        (
            with("tokenizer.ggml.tokens", strs(&["a", "b", "a", "x"])),
            "tokenizer.ggml.tokens",
        ),
        (
            with("tokenizer.ggml.scores", GgufValue::F32s(vec![0.0])),
            "tokenizer.ggml.scores",
        ),
        (
            with("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
            "tokenizer.ggml.bos_token_id",
        ),
        (
            tiny_meta()
                .into_iter()
                .filter(|(k, _)| *k != "tokenizer.ggml.tokens")
                .collect(),
            "tokenizer.ggml.tokens",
        ),
    ];
    for (meta, key) in bad {
        let err = from_meta(&meta)
            .err()
            .unwrap_or_else(|| panic!("{key}: accepted"));
        assert!(err.contains(key), "{key}: {err}");
    }
}

/// SmolLM2's GGUF (`tokenizer.ggml.pre` = smollm) against llama.cpp's prompt ids in the committed reference. The
/// model is fetched and cached by `scripts/fetch-default-model`, as the demo does.
#[test]
fn smollm2_prompt_ids_match_llama_cpp() {
    let path = fixtures::downloads::smollm2_gguf().unwrap();
    let t = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let reference =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/refs/smollm2/reference.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reference).unwrap()).unwrap();
    assert!(!t.special().add_bos);
    for case in json["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let want: Vec<u32> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let opts = EncodeOptions {
            add_special: true,
            parse_special: true,
        };
        assert_eq!(t.encode_with(prompt, opts).unwrap(), want, "{prompt:?}");
    }
}

/// `for_model` on a GGUF file reads the file's own vocabulary, not a tokenizer.json beside it.
#[test]
fn for_model_reads_the_gguf_vocabulary() {
    let (dir, _) = load("gpt-2");
    let path = dir.path().join("ggml-vocab-gpt-2.gguf");
    std::fs::write(dir.path().join("tokenizer.json"), "not json").unwrap();
    let t = Tokenizer::for_model(&path).unwrap();
    assert_eq!(t.source(), path);
    assert_eq!(t.encode("Hello world", false).unwrap(), vec![15496, 995]);
}

/// llama2.c vocabularies: `<s>` in text is BOS only when special tokens are parsed.
#[test]
fn llama2c_parses_special_tokens_only_on_request() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models/llama2-tokenizer/tokenizer.bin");
    let t = Tokenizer::from_file(&bin).unwrap();
    let parse = EncodeOptions {
        add_special: false,
        parse_special: true,
    };
    assert_eq!(t.encode_with("<s>Hello", parse).unwrap(), vec![1, 15043]);
    let literal = t.encode_with("<s>Hello", LITERAL).unwrap();
    assert!(!literal.contains(&1), "{literal:?}");
}
