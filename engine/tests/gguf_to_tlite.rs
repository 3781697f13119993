//! A GGUF file turned into a tlite folder keeps everything: its vocabulary written as `tokenizer.json` +
//! `tokenizer_config.json` reloads to a tokenizer that gives the same ids and the same [`SpecialTokens`]
//! (llama.cpp's vocabulary fixtures, xz-compressed in fixtures/vocab), and the re-quantisation error of each
//! source type is measured against the file's own decoded weights (issue 15: K-quants included).

#![allow(clippy::unwrap_used)]

use engine::gguf::{self, GgmlType, GgufFile};
use engine::model::{self, tlite_format, LoadOptions, WeightFormat};
use engine::tokenizer::{EncodeOptions, Tokenizer};
use fixtures::gguf_models::tiny_gguf_with_q6_k;
use std::path::{Path, PathBuf};

fn vocab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vocab")
}

/// Unpacks `ggml-vocab-NAME.gguf.xz` into `dir` and loads its tokenizer.
fn load_gguf_vocab(name: &str, dir: &Path) -> Tokenizer {
    let packed = std::fs::read(vocab_dir().join(format!("ggml-vocab-{name}.gguf.xz"))).unwrap();
    let mut raw = Vec::new();
    lzma_rs::xz_decompress(&mut packed.as_slice(), &mut raw).unwrap();
    let path = dir.join(format!("ggml-vocab-{name}.gguf"));
    std::fs::write(&path, raw).unwrap();
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap()
}

/// The test texts of a vocabulary's `.inp` file, split as llama.cpp's `test-tokenizer-0.cpp` splits them.
fn texts(name: &str) -> Vec<String> {
    let inp =
        std::fs::read_to_string(vocab_dir().join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    inp.split("\n__ggml_vocab_test__\n")
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Writes `t` as a folder's two tokenizer files and reads them back.
fn round_trip(t: &Tokenizer, dir: &Path) -> Tokenizer {
    std::fs::write(dir.join("tokenizer.json"), t.to_hf_json().unwrap()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        t.to_hf_config_json().unwrap(),
    )
    .unwrap();
    Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap()
}

fn check_round_trip(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = load_gguf_vocab(name, tmp.path());
    let folder = tmp.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let back = round_trip(&gguf, &folder);
    assert_eq!(back.special(), gguf.special(), "{name}: special tokens");
    assert_eq!(back.vocab_size(), gguf.vocab_size(), "{name}");
    // Texts that hold every end token, so special-token parsing is exercised on each vocabulary.
    let mut all = texts(name);
    assert!(all.len() > 10, "{name}: {} texts", all.len());
    for &id in &gguf.special().end_ids {
        let t = gguf.id_to_token(id).unwrap();
        all.push(format!("Hi{t} there{t}\n"));
    }
    let mut compared = 0;
    for text in &all {
        for add_special in [false, true] {
            for parse_special in [false, true] {
                let opts = EncodeOptions {
                    add_special,
                    parse_special,
                };
                let want = gguf.encode_with(text, opts).unwrap();
                let got = back.encode_with(text, opts).unwrap();
                assert_eq!(got, want, "{name}: {text:?} with {opts:?}");
                compared += 1;
            }
        }
    }
    eprintln!(
        "{name}: {compared} encodings equal, end ids {:?}",
        gguf.special().end_ids
    );
}

#[test]
fn llama_spm_vocabulary_survives_the_folder() {
    check_round_trip("llama-spm");
}

#[test]
fn llama_bpe_vocabulary_survives_the_folder() {
    check_round_trip("llama-bpe");
}

#[test]
fn gpt_2_vocabulary_survives_the_folder() {
    check_round_trip("gpt-2");
}

#[test]
fn qwen2_vocabulary_survives_the_folder() {
    check_round_trip("qwen2");
}

/// llama.cpp stops on tokens no Hugging Face setting names (Qwen2's vocabulary fixture has one beyond `eos_token`
/// and the end-of-turn markers); without the written list the folder would stop on fewer, so the list is what
/// keeps them, and a damaged list is an error naming the key.
#[test]
fn end_token_list_is_what_keeps_every_end_id() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = load_gguf_vocab("qwen2", tmp.path());
    let folder = tmp.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    round_trip(&gguf, &folder);
    let cfg_path = folder.join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    let obj = cfg.as_object_mut().unwrap();

    obj.remove("tlite_end_tokens");
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let derived = Tokenizer::from_file(&folder.join("tokenizer.json")).unwrap();
    assert!(
        derived.special().end_ids.len() < gguf.special().end_ids.len(),
        "the derivation alone already keeps {:?}; this test no longer shows the list is needed",
        gguf.special().end_ids
    );

    for bad in [
        serde_json::json!(["<|not a token|>"]),
        serde_json::json!("<|im_end|>"),
        serde_json::json!([7]),
    ] {
        cfg["tlite_end_tokens"] = bad.clone();
        std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
        let e = Tokenizer::from_file(&folder.join("tokenizer.json")).unwrap_err();
        assert!(e.to_string().contains("tlite_end_tokens"), "{bad}: {e}");
    }
}

#[test]
fn a_llama2c_tokenizer_has_no_tokenizer_json_form() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bin = 8i32.to_le_bytes().to_vec();
    for p in ["<unk>", "\n<s>\n", "\n</s>\n", "a"] {
        bin.extend(0f32.to_le_bytes());
        bin.extend((p.len() as i32).to_le_bytes());
        bin.extend(p.as_bytes());
    }
    let path = tmp.path().join("tokenizer.bin");
    std::fs::write(&path, bin).unwrap();
    let t = Tokenizer::from_file(&path).unwrap();
    for e in [
        t.to_hf_json().unwrap_err(),
        t.to_hf_config_json().unwrap_err(),
    ] {
        assert!(e.to_string().contains("llama2.c"), "{e}");
    }
}

#[test]
fn requantisation_error_is_reported_per_source_type_k_quants_included() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tiny.gguf");
    std::fs::write(&path, tiny_gguf_with_q6_k(None)).unwrap();
    let m = model::load(
        &path,
        &LoadOptions {
            quantize: WeightFormat::M0e4 {
                group: fp4::GroupSize::G32,
            },
            keep_embeddings_f16: true,
        },
    )
    .unwrap();
    let file = GgufFile::open(&path).unwrap();
    let errors = tlite_format::gguf_requant_errors(&file, &m).unwrap();
    let of = |ty: GgmlType| errors.iter().find(|e| e.source == ty).unwrap();

    // The Q6_K tensor: dequantised and quantised again, its error computed here on its own.
    let q6 = of(GgmlType::Q6_K);
    assert_eq!((q6.tensors, q6.weights, q6.m0e4_tensors), (1, 64 * 256, 1));
    let info = file.tensor("blk.0.ffn_down.weight").unwrap();
    let source = gguf::dequantize(info, file.data(info)).unwrap();
    assert!(source.iter().any(|&x| x != 0.0));
    let again = fp4::reference::dequantize(
        &fp4::quantize_m0e4(&source, fp4::MatrixShape::new(64, 256), fp4::GroupSize::G32).unwrap(),
    );
    let err: f64 = again
        .iter()
        .zip(&source)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let norm: f64 = source.iter().map(|&b| f64::from(b).powi(2)).sum();
    let want = (err / norm).sqrt();
    assert!(want > 1e-3, "a 6-bit source in 4 bits must lose something");
    assert!(
        (q6.relative_rms - want).abs() <= 1e-9 * want.max(1.0),
        "reported {} vs {want}",
        q6.relative_rms
    );

    // Q4_0 imports exactly (within half an f16 ulp of each group's offset); the rest of the layers' matrices.
    let q4 = of(GgmlType::Q4_0);
    assert_eq!(
        q4.tensors,
        2 * 7 - 1 + 2,
        "7 per layer, less the Q6_K one, + embedding and head"
    );
    assert!(q4.relative_rms < 1e-3, "Q4_0 import: {}", q4.relative_rms);
    assert!(q4.m0e4_tensors < q4.tensors, "embedding and head stay f16");
    assert_eq!(errors.len(), 2, "{errors:?}");
}
