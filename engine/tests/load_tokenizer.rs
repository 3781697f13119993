//! Tokenizers: the llama2.c `tokenizer.bin` against the SentencePiece `tokenizer.model` it was exported from,
//! and the tiny models' `tokenizer.json`.

#![allow(clippy::unwrap_used)]

mod load_common;

use engine::tokenizer::Tokenizer;
use engine::EngineError;
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::{write_tiny_hf_model, BOS, TINY_VOCAB};
use load_common::tmp;

/// Reads one protobuf varint.
fn varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
    }
    v
}

/// The `(piece, score)` list of a SentencePiece `ModelProto` (field 1: repeated SentencePiece {1: piece, 2: score}).
fn sentencepiece_pieces(b: &[u8]) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos);
        match key & 7 {
            0 => {
                varint(b, &mut pos);
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = varint(b, &mut pos) as usize;
                let body = &b[pos..pos + len];
                pos += len;
                if key >> 3 == 1 {
                    let (mut piece, mut score, mut p) = (String::new(), 0.0f32, 0);
                    while p < body.len() {
                        let k = varint(body, &mut p);
                        match (k >> 3, k & 7) {
                            (1, 2) => {
                                let l = varint(body, &mut p) as usize;
                                piece = String::from_utf8(body[p..p + l].to_vec()).unwrap();
                                p += l;
                            }
                            (2, 5) => {
                                score = f32::from_le_bytes(body[p..p + 4].try_into().unwrap());
                                p += 4;
                            }
                            (_, 0) => {
                                varint(body, &mut p);
                            }
                            (_, 5) => p += 4,
                            (_, 2) => {
                                let l = varint(body, &mut p) as usize;
                                p += l;
                            }
                            other => panic!("unexpected wire type {other:?}"),
                        }
                    }
                    out.push((piece, score));
                }
            }
            w => panic!("unexpected wire type {w}"),
        }
    }
    out
}

fn llama2_paths() -> (std::path::PathBuf, std::path::PathBuf) {
    load_common::llama2_tokenizer()
}

#[test]
fn llama2_bin_matches_sentencepiece_model_vocabulary() {
    let (bin, model) = llama2_paths();
    let tok = Tokenizer::from_file(&bin).unwrap();
    let pieces = sentencepiece_pieces(&std::fs::read(model).unwrap());
    assert_eq!(pieces.len(), 32000);
    assert_eq!(tok.vocab_size(), 32000);
    // Same pieces at the same ids (llama2.c exported `▁` as a space).
    for id in [29871u32, 15043, 3186, 450, 2, 1000, 31999] {
        let (p, _) = &pieces[id as usize];
        let expect = if id == 2 {
            "\n</s>\n".to_string()
        } else {
            p.replace('\u{2581}', " ")
        };
        assert_eq!(tok.id_to_token(id).unwrap(), expect, "id {id}");
    }

    // "Hello" is one piece, `▁Hello`, at the id the SentencePiece model gives it.
    let hello = tok.encode("Hello", false).unwrap();
    let want = pieces
        .iter()
        .position(|(p, _)| p == "\u{2581}Hello")
        .unwrap() as u32;
    assert_eq!(hello, vec![want]);
    // Published Llama 2 ids: "Hello world" → [1, 15043, 3186].
    assert_eq!(
        tok.encode("Hello world", true).unwrap(),
        vec![1, 15043, 3186]
    );
    // Every piece the encoder emits concatenates back to the dummy-prefixed text.
    let text = "Once upon a time, a tiny robot found 42 shiny pebbles.";
    let ids = tok.encode(text, false).unwrap();
    let joined: String = ids.iter().map(|&i| pieces[i as usize].0.clone()).collect();
    assert_eq!(joined.replace('\u{2581}', " "), format!(" {text}"));
}

#[test]
fn llama2_bin_round_trips_text_and_bytes() {
    let (bin, _) = llama2_paths();
    let tok = Tokenizer::from_file(&bin).unwrap();
    for text in [
        "Hello",
        "The quick brown fox jumps over the lazy dog.",
        "  two spaces\tand\ttabs\nnew line",
        "x",
    ] {
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids[0], 1);
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    // Characters outside the vocabulary fall back to <0xXX> byte pieces and still round-trip.
    let text = "emoji 🦀 and ŋ";
    let ids = tok.encode(text, false).unwrap();
    assert!(ids.iter().any(|&i| (3..259).contains(&i)), "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // Streaming decode emits the same text, never half a character.
    let mut stream = tok.stream();
    let streamed: String = ids.iter().map(|&i| stream.push(i).unwrap()).collect();
    assert_eq!(streamed, text);
}

#[test]
fn tiny_tokenizer_json_loads_for_the_model_folder() {
    let dir = tmp();
    write_tiny_hf_model(RefArch::Gemma, dir.path()).unwrap();
    let tok = Tokenizer::for_model(dir.path()).unwrap();
    assert_eq!(tok.vocab_size(), TINY_VOCAB);
    tok.check_model_vocab(TINY_VOCAB).unwrap();
    assert!(tok.check_model_vocab(TINY_VOCAB - 1).is_err());
    let ids = tok.encode("Lily saw the sun.", true).unwrap();
    assert_eq!(ids[0], BOS);
    assert_eq!(tok.decode(&ids).unwrap(), "Lily saw the sun.");
}

#[test]
fn bad_ids_and_missing_files_are_clear_errors() {
    let (bin, _) = llama2_paths();
    let tok = Tokenizer::from_file(&bin).unwrap();
    match tok.decode(&[1, 32000]) {
        Err(EngineError::TokenOutOfRange {
            id: 32000,
            vocab: 32000,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        tok.id_to_token(40000),
        Err(EngineError::TokenOutOfRange { .. })
    ));
    assert_eq!(tok.token_to_id("no such token"), None);
    let dir = tmp();
    let err = Tokenizer::for_model(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no tokenizer.json or tokenizer.bin"), "{err}");
    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    let err = Tokenizer::for_model(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}
