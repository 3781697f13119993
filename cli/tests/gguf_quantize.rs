//! `tlite quantize model.gguf out/` writes a complete folder: the GGUF's vocabulary comes along as
//! `tokenizer.json` + `tokenizer_config.json`, the folder tokenizes and greedy-generates exactly as the GGUF does
//! (on PoCL here), and the error report names each source type, K-quants included (issue 15).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use engine::model::{self, LoadOptions, TensorData, WeightFormat};
use engine::tokenizer::{EncodeOptions, Tokenizer};
use fixtures::gguf_models::tiny_gguf_with_q6_k;
use std::process::{Command, Output};

fn tlite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlite"))
        .args(args)
        .output()
        .expect("run tlite")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A chat template the tiny GGUF carries, so the folder's tokenizer_config.json must carry it too.
const CHAT_TEMPLATE: &str = "{% for m in messages %}{{ m.content }}{% endfor %}";

#[test]
fn quantized_gguf_folder_tokenizes_and_generates_as_the_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny.gguf");
    std::fs::write(&gguf, tiny_gguf_with_q6_k(Some(CHAT_TEMPLATE))).unwrap();
    let out = tmp.path().join("out");
    let (g, o) = (gguf.to_str().unwrap(), out.to_str().unwrap());

    let q = tlite(&["quantize", g, o]);
    let (stdout, stderr) = (text(&q.stdout), text(&q.stderr));
    assert!(q.status.success(), "{stderr}");
    assert!(!stderr.contains("note:"), "{stderr}");
    for line in [
        "source Q6_K: 1 tensors, 16384 weights -> M0E4, relative RMS error",
        "source Q4_0: 15 tensors,",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }

    // The same tokenizer, special tokens and chat template included.
    let from_gguf = Tokenizer::for_model(&gguf).unwrap();
    let from_folder = Tokenizer::for_model(&out).unwrap();
    assert_eq!(from_folder.special(), from_gguf.special());
    assert!(from_gguf.special().chat_template.is_some());
    for t in [
        "Once upon a time, Lily saw a ball.</s><s> Tom",
        "ünïcode ✓ 123",
    ] {
        for parse_special in [false, true] {
            let opts = EncodeOptions {
                add_special: true,
                parse_special,
            };
            assert_eq!(
                from_folder.encode_with(t, opts).unwrap(),
                from_gguf.encode_with(t, opts).unwrap(),
                "{t:?}"
            );
        }
    }

    // The same weights, bit for bit, as loading the GGUF for generation gives.
    let opts = LoadOptions {
        quantize: WeightFormat::M0e4 {
            group: fp4::GroupSize::G32,
        },
        keep_embeddings_f16: true,
    };
    let (a, b) = (
        model::load(&gguf, &opts).unwrap(),
        model::load(&out, &opts).unwrap(),
    );
    let down = |m: &model::Model| match &m.weights.layers[0].w_down.data {
        TensorData::M0e4(x) => fp4::reference::dequantize(x),
        other => panic!("w_down stored as {other:?}"),
    };
    assert_eq!(down(&a), down(&b));

    // Greedy generation through the binary, from each.
    let generate = |model: &str| {
        let r = tlite(&[
            "generate",
            "--model",
            model,
            "--prompt",
            "Once upon a time",
            "--max-tokens",
            "24",
            "--temperature",
            "0",
        ]);
        assert!(r.status.success(), "{model}: {}", text(&r.stderr));
        text(&r.stdout)
    };
    let (want, got) = (generate(g), generate(o));
    assert!(!want.trim().is_empty(), "the GGUF generated nothing");
    assert_eq!(got, want);
}
