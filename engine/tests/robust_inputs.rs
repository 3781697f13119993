//! Corrupted model files, configs and tokenizers: every load returns (an error, or a model when the corruption is
//! harmless) and none panics. Each case runs under `catch_unwind`; a test fails listing every case that panicked.

#![allow(clippy::unwrap_used)]

mod load_common;

use engine::model::{load, load_config, tlite_format, LoadOptions, WeightFormat};
use engine::tokenizer::Tokenizer;
use fixtures::ops::RopeStyle;
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::{generate, write_llama2c, write_tiny_hf_model, TinySpec};
use load_common::{llama2_tokenizer, stories260k, tmp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Runs cases and remembers the ones that panicked.
#[derive(Default)]
struct Cases {
    ran: usize,
    panicked: Vec<String>,
}

impl Cases {
    fn run(&mut self, name: impl Into<String>, f: impl FnOnce()) {
        self.ran += 1;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            self.panicked.push(format!("{}: {msg}", name.into()));
        }
    }

    fn finish(self, what: &str) {
        eprintln!(
            "{what}: {} cases, {} panicked",
            self.ran,
            self.panicked.len()
        );
        assert!(
            self.panicked.is_empty(),
            "{what}: {} of {} cases panicked:\n{}",
            self.panicked.len(),
            self.ran,
            self.panicked.join("\n")
        );
    }
}

/// Loads `path` every way a user can (config only, full load as f16, full load as M0E4); results are ignored,
/// only panics count.
fn load_all_ways(path: &Path) {
    let _ = load_config(path);
    let _ = load(path, &LoadOptions::default());
    let _ = load(
        path,
        &LoadOptions {
            quantize: WeightFormat::M0e4 {
                group: fp4::GroupSize::G32,
            },
            keep_embeddings_f16: false,
        },
    );
}

/// Offsets to cut a file of `len` bytes at: every byte of the first `dense`, then `spread` more across the file.
fn cuts(len: usize, dense: usize, spread: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..dense.min(len)).collect();
    v.extend((1..=spread).map(|i| len * i / (spread + 1)));
    v.push(len.saturating_sub(1));
    v.sort_unstable();
    v.dedup();
    v
}

/// Values a 32-bit header field is replaced by.
const I32_VALUES: [i32; 9] = [0, 1, -1, 2, 3, i32::MIN, i32::MAX, 1 << 24, 1 << 16];

fn llama2c_checkpoint(path: &Path) -> Vec<u8> {
    write_llama2c(
        &generate(&TinySpec::llama2c(), RopeStyle::Interleaved),
        path,
    )
    .unwrap();
    std::fs::read(path).unwrap()
}

/// Header fields set to 0, negative and huge values, truncations, and seeded byte flips of a llama2.c checkpoint.
fn corrupt_llama2c(cases: &mut Cases, label: &str, good: &[u8], path: &Path, flips: usize) {
    for field in 0..7 {
        for v in I32_VALUES {
            let mut b = good.to_vec();
            b[4 * field..4 * field + 4].copy_from_slice(&v.to_le_bytes());
            std::fs::write(path, &b).unwrap();
            cases.run(format!("{label}: header field {field} = {v}"), || {
                load_all_ways(path)
            });
        }
    }
    for cut in cuts(good.len(), 40, 12) {
        std::fs::write(path, &good[..cut]).unwrap();
        cases.run(format!("{label}: truncated at {cut}"), || {
            load_all_ways(path)
        });
    }
    let mut rng = StdRng::seed_from_u64(0x2c2c);
    for i in 0..flips {
        let mut b = good.to_vec();
        let at = rng.random_range(0..28);
        b[at] ^= 1 << rng.random_range(0..8);
        std::fs::write(path, &b).unwrap();
        cases.run(format!("{label}: flip {i} at byte {at}"), || {
            load_all_ways(path)
        });
    }
}

#[test]
fn corrupted_llama2c_checkpoints_never_panic() {
    let dir = tmp();
    let path = dir.path().join("model.bin");
    let good = llama2c_checkpoint(&path);
    let mut cases = Cases::default();
    corrupt_llama2c(&mut cases, "tiny", &good, &path, 60);
    let stories = stories260k();
    let good = std::fs::read(&stories).unwrap();
    let path = dir.path().join("stories.bin");
    corrupt_llama2c(&mut cases, "stories260K", &good, &path, 20);
    cases.finish("llama2.c");
}

/// Rewrites the JSON header of a safetensors file, keeping the data as it was.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = header.to_string().into_bytes();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    out
}

/// Safetensors shapes, offsets and dtypes replaced by implausible values; truncations; seeded flips in the header.
fn corrupt_safetensors(cases: &mut Cases, label: &str, folder: &Path, file: &str) {
    let path = folder.join(file);
    let good = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let names: Vec<String> = {
        let h: Value = serde_json::from_slice(&good[8..8 + n]).unwrap();
        let mut v: Vec<String> = h
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "__metadata__")
            .cloned()
            .collect();
        v.sort();
        v
    };
    let huge = json!(u64::MAX);
    let edits: Vec<(&str, Value, Value)> = vec![
        ("shape", json!([0]), Value::Null),
        ("shape", json!([0, u64::MAX]), Value::Null),
        ("shape", json!([u64::MAX, u64::MAX]), Value::Null),
        ("shape", json!([1u64 << 40, 1u64 << 40]), Value::Null),
        ("shape", json!([]), Value::Null),
        ("shape", json!([1, 2, 3, 4, 5]), Value::Null),
        ("shape", json!([-1, 4]), Value::Null),
        ("shape", json!("wide"), Value::Null),
        ("data_offsets", json!([0, u64::MAX]), Value::Null),
        ("data_offsets", json!([u64::MAX, 0]), Value::Null),
        ("data_offsets", json!([0, 0]), huge.clone()),
        ("dtype", json!("I64"), Value::Null),
        ("dtype", json!("U8"), Value::Null),
        ("dtype", json!("BOOL"), Value::Null),
        ("dtype", json!("F8_E4M3"), Value::Null),
        ("dtype", json!("NOPE"), Value::Null),
    ];
    let pick: Vec<&String> = names.iter().step_by((names.len() / 6).max(1)).collect();
    for name in &pick {
        for (key, value, _) in &edits {
            let b = with_header(&good, |h| h[name.as_str()][*key] = value.clone());
            std::fs::write(&path, &b).unwrap();
            cases.run(format!("{label}: `{name}`.{key} = {value}"), || {
                load_all_ways(folder)
            });
        }
    }
    for cut in cuts(good.len(), 24, 30) {
        std::fs::write(&path, &good[..cut]).unwrap();
        cases.run(format!("{label}: {file} truncated at {cut}"), || {
            load_all_ways(folder)
        });
    }
    for v in [0u64, 1, 7, u64::MAX, 1 << 40, n as u64 + 1, n as u64 - 1] {
        let mut b = good.clone();
        b[..8].copy_from_slice(&v.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        cases.run(format!("{label}: header length {v}"), || {
            load_all_ways(folder)
        });
    }
    let mut rng = StdRng::seed_from_u64(0x5afe);
    for i in 0..80 {
        let mut b = good.clone();
        let at = rng.random_range(8..8 + n);
        b[at] = rng.random();
        std::fs::write(&path, &b).unwrap();
        cases.run(format!("{label}: header byte {at} replaced ({i})"), || {
            load_all_ways(folder)
        });
    }
    std::fs::write(&path, &good).unwrap();
}

/// Every config.json key set to 0, negative, huge, a float, a string, null, a list and an object.
fn corrupt_config(cases: &mut Cases, label: &str, folder: &Path, keys: &[&str], at: &[&str]) {
    let path = folder.join("config.json");
    let good: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let values = [
        json!(0),
        json!(-1),
        json!(1),
        json!(3),
        json!(1u64 << 24),
        json!(1u64 << 27),
        json!(u32::MAX),
        json!(1u64 << 40),
        json!(u64::MAX),
        json!(1.5),
        json!(1e300),
        json!(-1e300),
        json!("64"),
        Value::Null,
        json!([1, 2]),
        json!({"a": 1}),
        json!(true),
    ];
    for key in keys {
        for v in &values {
            let mut j = good.clone();
            let mut obj = &mut j;
            for part in at {
                obj = &mut obj[*part];
            }
            obj[*key] = v.clone();
            std::fs::write(&path, j.to_string()).unwrap();
            cases.run(format!("{label}: {}{key} = {v}", at.join(".")), || {
                load_all_ways(folder)
            });
        }
    }
    for cut in cuts(good.to_string().len(), 0, 10) {
        std::fs::write(&path, &good.to_string().as_bytes()[..cut]).unwrap();
        cases.run(format!("{label}: config.json truncated at {cut}"), || {
            load_all_ways(folder)
        });
    }
    std::fs::write(&path, good.to_string()).unwrap();
}

const HF_KEYS: [&str; 20] = [
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "partial_rotary_factor",
    "tie_word_embeddings",
    "attention_bias",
    "bos_token_id",
    "eos_token_id",
    "model_type",
    "hidden_act",
    "sliding_window",
    "use_sliding_window",
    "rope_scaling",
];

#[test]
fn corrupted_hf_folders_never_panic() {
    let mut cases = Cases::default();
    for arch in [RefArch::Llama, RefArch::Gemma] {
        let dir = tmp();
        write_tiny_hf_model(arch, dir.path()).unwrap();
        let label = format!("{arch:?}");
        corrupt_config(&mut cases, &label, dir.path(), &HF_KEYS, &[]);
        if arch == RefArch::Llama {
            corrupt_config(
                &mut cases,
                &label,
                dir.path(),
                &[
                    "factor",
                    "low_freq_factor",
                    "high_freq_factor",
                    "original_max_position_embeddings",
                    "rope_type",
                ],
                &["rope_scaling"],
            );
            corrupt_safetensors(&mut cases, &label, dir.path(), "model.safetensors");
        }
        for (file, text) in [
            (
                "generation_config.json",
                r#"{"eos_token_id": [4294967296]}"#,
            ),
            ("generation_config.json", r#"{"bos_token_id": 1e9}"#),
            ("generation_config.json", "[1,"),
            (
                "model.safetensors.index.json",
                r#"{"weight_map": {"x": "../x.safetensors"}}"#,
            ),
            ("model.safetensors.index.json", r#"{"weight_map": []}"#),
            (
                "model.safetensors.index.json",
                r#"{"weight_map": {"x": "absent.safetensors"}}"#,
            ),
        ] {
            let p = dir.path().join(file);
            std::fs::write(&p, text).unwrap();
            cases.run(format!("{label}: {file} = {text}"), || {
                load_all_ways(dir.path())
            });
            std::fs::remove_file(&p).unwrap();
        }
    }
    cases.finish("Hugging Face folder");
}

#[test]
fn corrupted_tlite_folders_never_panic() {
    let src = tmp();
    write_tiny_hf_model(RefArch::Qwen2, src.path()).unwrap();
    let model = load(
        src.path(),
        &LoadOptions {
            quantize: WeightFormat::M0e4 {
                group: fp4::GroupSize::G32,
            },
            keep_embeddings_f16: false,
        },
    )
    .unwrap();
    let out = tmp();
    tlite_format::save(&model, src.path(), out.path()).unwrap();
    let mut cases = Cases::default();
    corrupt_config(
        &mut cases,
        "tlite",
        out.path(),
        &[
            "hidden",
            "ffn",
            "layers",
            "heads",
            "kv_heads",
            "head_dim",
            "vocab",
            "max_ctx",
            "norm_eps",
            "rope_theta",
            "rope_style",
            "rope_scaling",
            "partial_rotary",
            "bos",
            "eos",
            "embed_scale",
            "arch",
        ],
        &["tlite_config"],
    );
    corrupt_config(
        &mut cases,
        "tlite",
        out.path(),
        &["tlite_format", "tlite_config"],
        &[],
    );
    corrupt_safetensors(&mut cases, "tlite", out.path(), "model.safetensors");
    cases.finish("tlite folder");
}

/// Loads a tokenizer and, if that works, encodes and decodes with it.
fn use_tokenizer(path: &Path) {
    if let Ok(t) = Tokenizer::from_file(path) {
        for text in ["Once upon a time", "é€😀 \u{0}\n", ""] {
            if let Ok(ids) = t.encode(text, true) {
                let _ = t.decode(&ids);
            }
        }
        let _ = t.decode(&[0, 1, 2, u32::MAX]);
        let _ = t.id_to_token(u32::MAX);
        let mut s = t.stream();
        for id in 0..8 {
            let _ = s.push(id);
        }
    }
}

fn tokenizer_bin(pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = 16i32.to_le_bytes().to_vec();
    for (i, p) in pieces.iter().enumerate() {
        out.extend((-(i as f32)).to_le_bytes());
        out.extend((p.len() as i32).to_le_bytes());
        out.extend(*p);
    }
    out
}

#[test]
fn corrupted_tokenizers_never_panic() {
    let dir = tmp();
    let bin = dir.path().join("tokenizer.bin");
    let mut cases = Cases::default();
    // Hand-made vocabularies whose byte pieces are incomplete or out of place.
    let vocabs: Vec<Vec<&[u8]>> = vec![
        vec![b"<unk>", b"<0x00>"],
        vec![b"<unk>", b"<s>", b"</s>", b"<0x00>", b"<0x01>", b" ", b"a"],
        vec![b"<0x00>"],
        vec![b""],
        vec![b" ", b" ", b"  "],
    ];
    for (i, v) in vocabs.iter().enumerate() {
        std::fs::write(&bin, tokenizer_bin(v)).unwrap();
        cases.run(format!("hand-made tokenizer.bin {i}"), || {
            use_tokenizer(&bin)
        });
    }
    let (real, _) = llama2_tokenizer();
    let good = std::fs::read(&real).unwrap();
    for v in I32_VALUES {
        let mut b = good.clone();
        b[..4].copy_from_slice(&v.to_le_bytes());
        std::fs::write(&bin, &b).unwrap();
        cases.run(format!("tokenizer.bin max_token_length = {v}"), || {
            use_tokenizer(&bin)
        });
    }
    for cut in cuts(good.len(), 16, 8) {
        std::fs::write(&bin, &good[..cut]).unwrap();
        cases.run(format!("tokenizer.bin truncated at {cut}"), || {
            use_tokenizer(&bin)
        });
    }
    let mut rng = StdRng::seed_from_u64(0x70c);
    for i in 0..12 {
        let mut b = good.clone();
        for _ in 0..8 {
            let at = rng.random_range(0..b.len());
            b[at] = rng.random();
        }
        std::fs::write(&bin, &b).unwrap();
        cases.run(format!("tokenizer.bin random bytes ({i})"), || {
            use_tokenizer(&bin)
        });
    }
    // tokenizer.json: truncated and with fields of the wrong kind.
    let hf = tmp();
    write_tiny_hf_model(RefArch::Mistral, hf.path()).unwrap();
    let json_path = hf.path().join("tokenizer.json");
    let good = std::fs::read_to_string(&json_path).unwrap();
    let parsed: Value = serde_json::from_str(&good).unwrap();
    for cut in cuts(good.len(), 0, 10) {
        std::fs::write(&json_path, &good.as_bytes()[..cut]).unwrap();
        cases.run(format!("tokenizer.json truncated at {cut}"), || {
            use_tokenizer(&json_path)
        });
    }
    let edits: Vec<(&str, &str, Value)> = vec![
        ("model", "vocab", json!({})),
        ("model", "vocab", json!({"a": u64::MAX})),
        ("model", "vocab", json!({"a": 4000000000u64, "b": 0})),
        ("model", "merges", json!([["x", "y"]])),
        ("model", "merges", json!(["a"])),
        ("model", "type", json!("WordPiece")),
        ("model", "unk_token", json!("<missing>")),
        (
            "",
            "added_tokens",
            json!([{"id": u32::MAX, "content": "x"}]),
        ),
        ("", "added_tokens", json!([])),
        ("", "decoder", Value::Null),
        ("", "pre_tokenizer", json!({"type": "Split"})),
    ];
    for (outer, key, v) in edits {
        let mut j = parsed.clone();
        if outer.is_empty() {
            j[key] = v.clone();
        } else {
            j[outer][key] = v.clone();
        }
        std::fs::write(&json_path, j.to_string()).unwrap();
        cases.run(format!("tokenizer.json {outer}.{key} = {v}"), || {
            use_tokenizer(&json_path)
        });
    }
    cases.finish("tokenizer");
}

/// Sampling options straight from the command line and logits with infinities, extremes and ties.
#[test]
fn extreme_sampling_inputs_never_panic() {
    use engine::sampling::{Sampler, SamplingParams};
    let mut cases = Cases::default();
    let floats = [
        0.0,
        -0.0,
        1e-45,
        0.5,
        1.0,
        2.0,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -1.0,
    ];
    let logit_sets: Vec<Vec<f32>> = vec![
        vec![],
        vec![f32::NEG_INFINITY; 4],
        vec![f32::INFINITY, 0.0, f32::INFINITY],
        vec![f32::MAX, f32::MIN, 0.0],
        vec![1e-45, -1e-45, 0.0, 0.0],
        vec![f32::NAN, 1.0],
        (0..50).map(|i| (i % 7) as f32).collect(),
    ];
    let mut rng = StdRng::seed_from_u64(0x5a);
    for i in 0..400 {
        let mut f = || floats[rng.random_range(0..floats.len())];
        let params = SamplingParams {
            temperature: f(),
            top_k: [0, 1, 3, usize::MAX][i % 4],
            top_p: f(),
            min_p: f(),
            repeat_penalty: f(),
            repeat_window: [0, 1, 64, usize::MAX][(i / 4) % 4],
            seed: i as u64,
        };
        let logits = logit_sets[i % logit_sets.len()].clone();
        let uniform = f();
        cases.run(format!("{params:?} on {logits:?}"), || {
            if let Ok(mut s) = Sampler::new(params.clone()) {
                let _ = s.sample(&logits, &[0, 1, 2, u32::MAX]);
                let _ = s.sample_at(&logits, &[], uniform);
            }
        });
    }
    cases.finish("sampling");
}

/// The errors the checks above produce name the file and the field, not just "invalid".
#[test]
fn size_errors_name_the_file_and_the_field() {
    let dir = tmp();
    write_tiny_hf_model(RefArch::Mistral, dir.path()).unwrap();
    let cfg = dir.path().join("config.json");
    let good = std::fs::read_to_string(&cfg).unwrap();
    let set = |key: &str, v: Value| {
        let mut j: Value = serde_json::from_str(&good).unwrap();
        j[key] = v;
        std::fs::write(&cfg, j.to_string()).unwrap();
        load(dir.path(), &LoadOptions::default())
            .unwrap_err()
            .to_string()
    };
    let e = set("num_hidden_layers", json!(u64::MAX));
    assert!(e.contains("config.json") && e.contains("layers"), "{e}");
    let e = set("head_dim", json!(1u64 << 32));
    assert!(e.contains("config.json") && e.contains("head_dim"), "{e}");
    std::fs::write(&cfg, &good).unwrap();
    let mut c = load_config(dir.path()).unwrap();
    (c.shape.hidden, c.shape.ffn) = (1 << 30, 1 << 30);
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("ffn x hidden") && e.contains("elements"), "{e}");
    // Plausible but false: the files hold 2 layers, the config claims 2^20.
    let e = set("num_hidden_layers", json!(1 << 20));
    assert!(e.contains("model.layers.1048575"), "{e}");
    let e = set(
        "rope_scaling",
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0}),
    );
    assert!(e.contains("high_freq_factor"), "{e}");

    // llama2.c: every field plausible on its own, the product beyond any file.
    let path = dir.path().join("model.bin");
    let mut b = llama2c_checkpoint(&path);
    for (field, v) in [
        (0, 1 << 24),
        (1, 1 << 24),
        (2, 1 << 24),
        (3, 1 << 12),
        (4, 1 << 12),
    ] {
        b[4 * field..4 * field + 4].copy_from_slice(&i32::to_le_bytes(v));
    }
    std::fs::write(&path, &b).unwrap();
    let e = load(&path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.bin"), "{e}");

    // tokenizer.bin whose `<0x00>` is not followed by the other 255 byte pieces: no byte fallback, a clear error.
    let bin = dir.path().join("tokenizer.bin");
    std::fs::write(&bin, tokenizer_bin(&[b"<unk>", b"<0x00>", b" ", b"a"])).unwrap();
    let t = Tokenizer::from_file(&bin).unwrap();
    assert!(t.encode("a", false).is_ok());
    let e = t.encode("aé", false).unwrap_err().to_string();
    assert!(e.contains("no byte tokens"), "{e}");
}
