//! Sessions on disk with a tiny model on the OpenCL device: a saved chat resumes with its cache byte for byte and
//! the next step's logits bit-identical to continuing in memory; every kind of damage or mismatch is an error
//! naming it, and a chat resumed from such a file answers exactly what a chat that never had a cache answers.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use engine::context_shift::ShiftedOut;
use engine::generate::{GenerateOptions, LanguageModel, StepOutput, Want};
use engine::gpu::GpuOptions;
use engine::model::WeightFormat;
use engine::session::{Session, SessionOptions};
use engine::session_file::{Resumed, SessionFileError};
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::{write_hf_folder, StoreDtype, TinySpec};
use kvcache::KvDtype;

fn options(kv_dtype: KvDtype, max_ctx: usize) -> SessionOptions {
    SessionOptions {
        weights: WeightFormat::M0e4 {
            group: fp4::GroupSize::G32,
        },
        keep_embeddings_f16: true,
        gpu: GpuOptions {
            max_ctx: Some(max_ctx),
            max_chunk: 16,
            kv_dtype,
            ..GpuOptions::default()
        },
    }
}

fn open(dir: &Path, kv_dtype: KvDtype, max_ctx: usize) -> Session {
    Session::open(dir, &options(kv_dtype, max_ctx)).unwrap()
}

fn turn() -> GenerateOptions {
    GenerateOptions {
        max_tokens: 6,
        ..GenerateOptions::default()
    }
}

fn tiny(dir: &Path, seed_offset: u64) -> PathBuf {
    let spec = TinySpec::for_arch(RefArch::Qwen2);
    let spec = TinySpec {
        seed: spec.seed + seed_offset,
        ..spec
    };
    let path = dir.join(format!("model-{seed_offset}"));
    write_hf_folder(&spec, &path, StoreDtype::F32, 1).unwrap();
    path
}

fn logits_bits(session: &mut Session, token: u32) -> Vec<u32> {
    match session
        .generator
        .model_mut()
        .step(&[token], Want::Logits)
        .unwrap()
    {
        StepOutput::Logits(l) => l.iter().map(|v| v.to_bits()).collect(),
        other => panic!("asked for logits, got {other:?}"),
    }
}

#[test]
fn a_resumed_chat_continues_exactly_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), 0);
    let file = dir.path().join("chat.session");

    let mut a = open(&model, KvDtype::F16, 128);
    a.set_system("be brief");
    a.chat_turn("hello there", &turn(), |_| {}).unwrap();
    let saved = a.save_to(&file).unwrap();
    assert_eq!(saved.positions, a.cached_len());
    assert!(saved.positions > 10);

    // Resumed into a session with another context: the cache is packed without the context's stride. The
    // context still holds the next turn whole, so neither chat has to shift or drop an exchange and both run the
    // same tokens.
    let mut b = open(&model, KvDtype::F16, 120);
    match b.resume_from(&file).unwrap() {
        Resumed::Cache {
            positions,
            messages,
        } => {
            assert_eq!(positions, saved.positions);
            assert_eq!(messages, 3);
        }
        Resumed::Conversation { reason, .. } => panic!("the cache was refused: {reason}"),
    }
    assert_eq!(b.history(), a.history());
    assert_eq!(b.generator.cached_tokens(), a.generator.cached_tokens());
    assert_eq!(
        b.generator.model().read_kv().unwrap(),
        a.generator.model().read_kv().unwrap()
    );

    // The next turn prefills only its own message and answers what the uninterrupted chat answers.
    let next_a = a.chat_turn("and then?", &turn(), |_| {}).unwrap();
    let next_b = b.chat_turn("and then?", &turn(), |_| {}).unwrap();
    assert_eq!(next_b.tokens, next_a.tokens);
    assert_eq!(next_b.timings.prefill_tokens, next_a.timings.prefill_tokens);
    // Part of the prompt came from the restored cache: without it the whole prompt (the cache now holds it and
    // all generated tokens but the last) would have run.
    let prompt_len = b.generator.cached_tokens().len() + 1 - next_b.tokens.len();
    assert!(next_b.timings.prefill_tokens < prompt_len);

    // Saved again and resumed once more: the next step's logits are bit-identical to continuing in memory, and
    // differ from those of a session without the history (the check can fail).
    b.save_to(&file).unwrap();
    let mut c = open(&model, KvDtype::F16, 128);
    assert!(matches!(
        c.resume_from(&file).unwrap(),
        Resumed::Cache { .. }
    ));
    let token = 42;
    let in_memory = logits_bits(&mut a, token);
    assert_eq!(logits_bits(&mut c, token), in_memory);
    c.reset_chat().unwrap();
    assert_ne!(logits_bits(&mut c, token), in_memory);
}

#[test]
fn a_chat_resumed_after_a_context_shift_still_prefills_only_its_new_turn() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), 0);
    let file = dir.path().join("chat.session");
    let context = 128;
    let mut a = open(&model, KvDtype::F32, context);
    a.set_system("be brief");
    let mut i = 0;
    while a.generator.shifted_out_tokens() == 0 {
        assert!(i < 40, "no context shift after {i} turns");
        a.chat_turn(&format!("hello {i}"), &turn(), |_| {}).unwrap();
        i += 1;
    }
    a.save_to(&file).unwrap();
    let mut b = open(&model, KvDtype::F32, context);
    assert!(matches!(
        b.resume_from(&file).unwrap(),
        Resumed::Cache { .. }
    ));
    assert_eq!(
        b.generator.shifted_out_tokens(),
        a.generator.shifted_out_tokens()
    );

    // A chat resumed without the record of the dropped run (what format version 1 gave): its history no longer
    // matches the cache after the kept start.
    let mut c = open(&model, KvDtype::F32, context);
    assert!(matches!(
        c.resume_from(&file).unwrap(),
        Resumed::Cache { .. }
    ));
    let cached = c.generator.cached_tokens().to_vec();
    c.generator
        .adopt_cached(cached, ShiftedOut::default())
        .unwrap();

    // The resumed chat matches the whole history across the dropped run, as the uninterrupted one does: both run
    // the same part of the prompt and answer the same. Without the record the history does not fit beside the
    // kept start, so that chat has to drop its oldest exchanges and prefill the rest again.
    let next_a = a.chat_turn("and then?", &turn(), |_| {}).unwrap();
    let next_b = b.chat_turn("and then?", &turn(), |_| {}).unwrap();
    c.chat_turn("and then?", &turn(), |_| {}).unwrap();
    assert_eq!(next_b.tokens, next_a.tokens);
    assert_eq!(next_b.timings.prefill_tokens, next_a.timings.prefill_tokens);
    assert_eq!(b.forgotten_messages(), 0);
    assert!(c.forgotten_messages() > 0);
}

/// What the chat answers next when nothing is cached: the reply a resumed chat must give whatever its file held.
fn fresh_reply(model: &Path, history: &[engine::chat_template::ChatMessage]) -> Vec<u32> {
    let mut s = open(model, KvDtype::F16, 128);
    s.set_history(history.to_vec());
    s.chat_turn("go on", &turn(), |_| {}).unwrap().tokens
}

/// Whether an error is the one a case expects.
type IsExpected = fn(&SessionFileError) -> bool;

/// Resumes `bytes` written as a session file; the result and the session after it.
fn resume_bytes(
    session: &mut Session,
    dir: &Path,
    bytes: &[u8],
) -> Result<Resumed, SessionFileError> {
    let path = dir.join("damaged.session");
    std::fs::write(&path, bytes).unwrap();
    session.reset_chat().unwrap();
    session.set_history(Vec::new());
    session.resume_from(&path)
}

#[test]
fn damage_and_mismatches_are_named_and_never_give_wrong_text() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), 0);
    let file = dir.path().join("chat.session");
    let mut a = open(&model, KvDtype::F16, 128);
    a.chat_turn("hello there", &turn(), |_| {}).unwrap();
    a.save_to(&file).unwrap();
    let good = std::fs::read(&file).unwrap();
    let history = a.history().to_vec();
    let expected = fresh_reply(&model, &history);

    let mut b = open(&model, KvDtype::F16, 128);
    // The file is intact: it resumes (the baseline the damaged copies are compared with).
    assert!(matches!(
        resume_bytes(&mut b, dir.path(), &good).unwrap(),
        Resumed::Cache { .. }
    ));

    // Damage the header can detect by itself: nothing is restored, the session is left empty.
    let header_len = u64::from_le_bytes(good[12..20].try_into().unwrap()) as usize;
    let head_end = 20 + header_len + 32;
    let mut cases: Vec<(&str, Vec<u8>, IsExpected)> = Vec::new();
    let mut flipped = good.clone();
    flipped[40] ^= 0x01;
    cases.push(("a flipped header byte", flipped, |e| {
        matches!(e, SessionFileError::HeaderDamaged { .. })
    }));
    let mut flipped = good.clone();
    flipped[head_end - 1] ^= 0x80;
    cases.push(("a flipped header digest", flipped, |e| {
        matches!(e, SessionFileError::HeaderDamaged { .. })
    }));
    let mut magic = good.clone();
    magic[0] = b'X';
    cases.push(("a wrong magic", magic, |e| {
        matches!(e, SessionFileError::NotASessionFile { .. }) && e.is_foreign()
    }));
    let mut version = good.clone();
    version[8] = 9;
    cases.push(("another version", version, |e| {
        matches!(e, SessionFileError::UnsupportedVersion { found: 9, .. }) && e.is_foreign()
    }));
    for cut in [0, 5, 19, 30, head_end - 1] {
        cases.push(("a file cut inside its header", good[..cut].to_vec(), |e| {
            matches!(
                e,
                SessionFileError::Truncated { .. } | SessionFileError::NotASessionFile { .. }
            )
        }));
    }
    for (what, bytes, is_expected) in cases {
        let err = match resume_bytes(&mut b, dir.path(), &bytes) {
            Err(e) => e,
            Ok(r) => panic!("{what}: resumed as {r:?}"),
        };
        assert!(is_expected(&err), "{what}: {err}");
        assert!(err.to_string().contains("damaged.session"), "{what}: {err}");
        assert_eq!(b.cached_len(), 0, "{what}");
        assert!(b.history().is_empty(), "{what}");
    }

    // Damage in the cache: the conversation comes back, the cache stays empty, the reply is the fresh one.
    let layers = 2;
    let mut cases: Vec<(&str, Vec<u8>, String)> = Vec::new();
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x04;
    cases.push((
        "a flipped byte in the last block",
        flipped,
        format!("the values of layer {} fail", layers - 1),
    ));
    let mut flipped = good.clone();
    flipped[head_end] ^= 0x01;
    cases.push((
        "a flipped byte in the first block",
        flipped,
        "the keys of layer 0 fail".into(),
    ));
    cases.push((
        "a file cut inside its cache",
        good[..good.len() - 7].to_vec(),
        "is truncated".into(),
    ));
    let mut longer = good.clone();
    longer.extend_from_slice(b"junk");
    cases.push((
        "bytes after the cache",
        longer,
        "4 bytes after its last block".into(),
    ));
    for (what, bytes, message) in cases {
        match resume_bytes(&mut b, dir.path(), &bytes).unwrap() {
            Resumed::Conversation { messages, reason } => {
                assert_eq!(messages, history.len(), "{what}");
                assert!(reason.to_string().contains(&message), "{what}: {reason}");
            }
            Resumed::Cache { .. } => panic!("{what}: the damaged cache was used"),
        }
        assert_eq!(b.cached_len(), 0, "{what}");
        assert_eq!(b.history(), &history[..], "{what}");
        let reply = b.chat_turn("go on", &turn(), |_| {}).unwrap();
        assert_eq!(reply.tokens, expected, "{what}");
    }
}

#[test]
fn a_cache_from_another_model_dtype_or_context_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), 0);
    let other = tiny(dir.path(), 1);
    let file = dir.path().join("chat.session");
    let mut a = open(&model, KvDtype::F16, 128);
    a.chat_turn("hello there", &turn(), |_| {}).unwrap();
    a.save_to(&file).unwrap();
    let positions = a.cached_len();
    let history = a.history().to_vec();

    let refused = |mut s: Session, what: &str, check: &dyn Fn(&SessionFileError) -> bool| {
        match s.resume_from(&file).unwrap() {
            Resumed::Conversation { reason, .. } => assert!(check(&reason), "{what}: {reason}"),
            Resumed::Cache { .. } => panic!("{what}: the cache was used"),
        }
        assert_eq!(s.cached_len(), 0, "{what}");
        assert_eq!(s.history(), &history[..], "{what}");
        s
    };
    // The same shapes and tokenizer, other weights.
    let mut s = refused(open(&other, KvDtype::F16, 128), "other weights", &|e| {
        matches!(e, SessionFileError::OtherModel { .. })
    });
    assert_eq!(
        s.chat_turn("go on", &turn(), |_| {}).unwrap().tokens,
        fresh_reply(&other, &history)
    );
    // The same files placed differently on the device.
    let f16_weights = SessionOptions {
        weights: WeightFormat::F16,
        ..options(KvDtype::F16, 128)
    };
    refused(
        Session::open(&model, &f16_weights).unwrap(),
        "f16 weights",
        &|e| matches!(e, SessionFileError::OtherModel { .. }),
    );
    refused(open(&model, KvDtype::F32, 128), "an f32 cache", &|e| {
        matches!(e, SessionFileError::KvLayout { .. }) && e.to_string().contains("f16")
    });
    let mut s = refused(
        open(&model, KvDtype::F16, positions - 1),
        "a smaller context",
        &|e| matches!(e, SessionFileError::ContextTooSmall { .. }),
    );
    // The conversation is read again into what fits.
    assert!(s.chat_turn("go on", &turn(), |_| {}).is_ok());
}
