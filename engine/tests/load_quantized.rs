//! A folder written by `tlite quantize` (model::tlite_format::save) loads back bit-identical with no processing.

#![allow(clippy::unwrap_used)]

mod load_common;

use engine::model::{
    load, source_kind, tlite_format, LoadOptions, SourceKind, TensorData, WeightFormat,
};
use engine::tokenizer::Tokenizer;
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::write_tiny_hf_model;
use load_common::{stories260k, tmp};

#[test]
fn quantised_folder_round_trips_exactly_for_every_arch() {
    for arch in [
        RefArch::Llama,
        RefArch::Mistral,
        RefArch::Qwen2,
        RefArch::Gemma,
        RefArch::Qwen3,
        RefArch::Gemma2,
        RefArch::Gemma3,
        RefArch::SmolLm3,
    ] {
        let src = tmp();
        write_tiny_hf_model(arch, src.path()).unwrap();
        let opts = LoadOptions {
            quantize: WeightFormat::M0e4 {
                group: fp4::GroupSize::G32,
            },
            keep_embeddings_f16: true,
        };
        let q = load(src.path(), &opts).unwrap();
        let out = tmp();
        tlite_format::save(&q, src.path(), out.path()).unwrap();
        assert_eq!(source_kind(out.path()).unwrap(), SourceKind::Tlite);
        // Options are ignored for a tlite folder: what was written is what comes back, to the bit.
        let back = load(
            out.path(),
            &LoadOptions {
                quantize: WeightFormat::F32,
                keep_embeddings_f16: false,
            },
        )
        .unwrap();
        assert_eq!(back, q, "{arch:?}");
        assert!(matches!(
            back.weights.layers[0].wq.data,
            TensorData::M0e4(_)
        ));
        assert!(matches!(back.weights.embedding.data, TensorData::F16(_)));
        // Tokenizer and generation config travel with the weights.
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ] {
            assert_eq!(
                std::fs::read(out.path().join(f)).unwrap(),
                std::fs::read(src.path().join(f)).unwrap()
            );
        }
        let tok = Tokenizer::for_model(out.path()).unwrap();
        assert_eq!(
            tok.decode(&tok.encode("a tiny test", true).unwrap())
                .unwrap(),
            "a tiny test"
        );
    }
}

#[test]
fn quantised_stories260k_round_trips_with_f16_fallback() {
    let opts = LoadOptions {
        quantize: WeightFormat::M0e4 {
            group: fp4::GroupSize::G64,
        },
        keep_embeddings_f16: false,
    };
    let q = load(&stories260k(), &opts).unwrap();
    let out = tmp();
    tlite_format::save(&q, out.path(), out.path()).unwrap();
    let back = load(out.path(), &LoadOptions::default()).unwrap();
    assert_eq!(back, q);
    assert!(matches!(
        back.weights.layers[0].w_down.data,
        TensorData::F16(_)
    ));
    match &back.weights.embedding.data {
        TensorData::M0e4(m) => assert_eq!(m.group(), fp4::GroupSize::G64),
        other => panic!("embedding stored as {other:?}"),
    }
}

#[test]
fn damaged_quantised_folder_is_a_clear_error() {
    let src = tmp();
    write_tiny_hf_model(RefArch::Qwen2, src.path()).unwrap();
    let opts = LoadOptions {
        quantize: WeightFormat::M0e4 {
            group: fp4::GroupSize::G32,
        },
        keep_embeddings_f16: false,
    };
    let q = load(src.path(), &opts).unwrap();
    let out = tmp();
    tlite_format::save(&q, src.path(), out.path()).unwrap();
    let st = out.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() - 10]).unwrap();
    let e = load(out.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    let cfg = out.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("\"tlite_format\": {}", tlite_format::FORMAT_VERSION),
        "\"tlite_format\": 99",
    );
    std::fs::write(&cfg, text).unwrap();
    let e = load(out.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("tlite_format"), "{e}");
}

#[test]
fn saving_an_f32_model_is_refused_instead_of_rounded() {
    let src = tmp();
    write_tiny_hf_model(RefArch::Llama, src.path()).unwrap();
    let m = load(
        src.path(),
        &LoadOptions {
            quantize: WeightFormat::F32,
            keep_embeddings_f16: false,
        },
    )
    .unwrap();
    let out = tmp();
    let e = tlite_format::save(&m, src.path(), out.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("f16 cannot hold exactly"), "{e}");
}
