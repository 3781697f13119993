//! GGUF models: ggml block decoding against gguf-py, the exact Q4 → M0E4 import, tiny llama/qwen2/gemma files
//! compared with the same weights loaded from Hugging Face folders, and malformed files.

#![allow(clippy::unwrap_used)]

mod load_common;

use engine::gguf::{self, q4_m0e4, GgmlType, GgufFile};
use half::f16;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/data")
        .join(name)
}

/// Every supported type decodes exactly as gguf-py (llama.cpp's own numpy implementation) does, bit for bit:
/// the Rust decoder performs the same f32 operations in the same order as ggml's `dequantize_row_*`, and so
/// does gguf-py, so no tolerance is needed (fixture written by fixtures/scripts/make_ggml_quant_refs.py).
#[test]
fn every_supported_type_decodes_bitwise_like_gguf_py() {
    let f = GgufFile::open(&fixture("ggml_quant_refs.gguf")).unwrap();
    let types = [
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K",
    ];
    for ty in types {
        let q = f.tensor(&format!("{ty}.q")).unwrap();
        assert_eq!(q.ggml_type.to_string(), ty);
        let want = gguf::dequantize(
            f.tensor(&format!("{ty}.ref")).unwrap(),
            f.data(f.tensor(&format!("{ty}.ref")).unwrap()),
        )
        .unwrap();
        let got = gguf::dequantize(q, f.data(q)).unwrap();
        assert_eq!(got.len(), 256, "{ty}");
        assert!(
            want.iter().any(|&x| x != 0.0),
            "{ty}: reference is all zeros"
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{ty} element {i}: {g} vs gguf-py {w}"
            );
        }
    }
}

/// The real SmolLM2 Q4_1 file (fetched and cached by `scripts/fetch-default-model`, as the demo does): every Q4_1
/// weight imported into M0E4 is within half an f16 ulp of its offset of llama.cpp's `d*q + m`; prints the fraction
/// that is bit-identical.
#[test]
fn smollm2_q4_1_imports_within_half_an_offset_ulp() {
    let path = fixtures::downloads::smollm2_gguf().unwrap();
    let f = GgufFile::open(&path).unwrap();
    let (mut tensors, mut total, mut exact, mut exact_offsets) = (0, 0usize, 0usize, 0usize);
    for t in f
        .header()
        .tensors
        .iter()
        .filter(|t| t.ggml_type == GgmlType::Q4_1)
    {
        let [rows, cols] = t.shape()[..] else {
            panic!("{} is not a matrix", t.name)
        };
        let m = q4_m0e4::import(t.ggml_type, f.data(t), rows, cols).unwrap();
        let got = fp4::reference::dequantize(&m);
        let want = gguf::dequantize(t, f.data(t)).unwrap();
        for (g, (block, (w, (x, b)))) in f
            .data(t)
            .chunks_exact(20)
            .zip(
                want.chunks_exact(32)
                    .zip(got.chunks_exact(32).zip(m.offsets())),
            )
            .enumerate()
        {
            let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
            let mm = f16::from_le_bytes([block[2], block[3]]).to_f32();
            let half_ulp = ulp(*b) / 2.0;
            // The offset exactly as the formula wants it, in f64 (exact for two f16 inputs).
            exact_offsets +=
                usize::from(f64::from(b.to_f32()) == f64::from(mm) - 16.0 * f64::from(d));
            for (k, (&w, &x)) in w.iter().zip(x).enumerate() {
                // f32 rounding of the M0E4 product and sum on top of the offset's f16 rounding.
                let tol =
                    half_ulp + 2.0 * f32::EPSILON * (w.abs() + b.to_f32().abs() + 16.0 * d.abs());
                assert!(
                    (w - x).abs() <= tol,
                    "{} group {g} element {k}: {x} vs {w} (tol {tol})",
                    t.name
                );
                exact += usize::from(w.to_bits() == x.to_bits());
            }
        }
        tensors += 1;
        total += want.len();
    }
    eprintln!(
        "{tensors} Q4_1 tensors, {total} weights: {exact} ({:.4} %) bit-identical to d*q + m (d*q is exact in \
         f32, so fused or not makes no difference); {exact_offsets} of {} offsets m - 16d exact in f16",
        100.0 * exact as f64 / total as f64,
        total / 32
    );
    assert!(tensors > 0);

    // The whole model loads through the engine, its Q4_1 matrices imported, with SmolLM2's configuration.
    let started = std::time::Instant::now();
    let m = load(&path, &opts(M0E4_G32)).unwrap();
    eprintln!(
        "loaded as M0E4 G32 in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let c = &m.config;
    assert_eq!(
        (
            c.shape.hidden,
            c.shape.layers,
            c.shape.heads,
            c.shape.kv_heads,
            c.shape.head_dim,
            c.shape.vocab
        ),
        (576, 30, 9, 3, 64, 49152)
    );
    assert_eq!(
        (c.arch, c.rope_style, c.tied_embeddings),
        (Architecture::Llama, RopeStyle::Interleaved, true)
    );
    assert!(matches!(m.weights.layers[0].wq.data, TensorData::M0e4(_)));
    let f16m = load(&path, &opts(WeightFormat::F16)).unwrap();
    assert!(matches!(f16m.weights.layers[0].wq.data, TensorData::F16(_)));
}

use engine::model::{
    load, load_config, source_kind, Architecture, LoadOptions, RopeScaling, RopeStyle, SourceKind,
    TensorData, WeightFormat,
};
use engine::EngineError;
use fixtures::gguf_models::{
    gguf_model_parts, parts_to_bytes, unpermute_rows, write_gguf_model, write_hf_twin, MatrixType,
};
use fixtures::gguf_writer::{GgufTensor, GgufValue};
use fixtures::reference_model::RefArch;
use fixtures::tiny_models::TinySpec;
use load_common::{rel_diff, rel_rms, tmp, to_ref};

const PROMPT: [u32; 6] = [1, 40, 310, 77, 5, 260];
const ARCHS: [RefArch; 4] = [
    RefArch::Llama,
    RefArch::Mistral,
    RefArch::Qwen2,
    RefArch::Gemma,
];

fn opts(quantize: WeightFormat) -> LoadOptions {
    LoadOptions {
        quantize,
        keep_embeddings_f16: false,
    }
}

const M0E4_G32: WeightFormat = WeightFormat::M0e4 {
    group: fp4::GroupSize::G32,
};

/// A tiny model of `arch` as a GGUF file and as an f32 Hugging Face folder holding the same (decoded) weights.
fn twins(arch: RefArch, ty: MatrixType) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tmp();
    let spec = TinySpec::for_arch(arch);
    let gguf_path = dir.path().join("model.gguf");
    let model = write_gguf_model(&spec, &gguf_path, ty).unwrap();
    let hf = dir.path().join("hf");
    write_hf_twin(&spec, &model, &hf).unwrap();
    (dir, gguf_path, hf)
}

/// llama, Mistral (written as llama), qwen2 and gemma GGUFs of every matrix type load with the family's config
/// and the same weights as their Hugging Face twin, and give the same logits through the reference forward pass.
///
/// Exact: every matrix except llama's q and k equals the twin's bit for bit (both loaders decode the same ggml
/// formula); llama's q/k equal it after undoing the converter's row permutation; gemma's norms are the twin's
/// plus one. Logits agree to 1e-5 of their largest magnitude, not bitwise: with the permuted q/k and
/// interleaved rope the attention dot products sum in another order, llama's rope frequencies come from
/// `rope_freqs` divisors instead of the llama3 formula (about one f32 ulp apart), and gemma's `1 + w` is summed
/// at another place.
#[test]
fn tiny_gguf_models_match_their_hugging_face_twins() {
    for arch in ARCHS {
        for ty in MatrixType::ALL {
            let (_dir, g, hf) = twins(arch, ty);
            assert_eq!(source_kind(&g).unwrap(), SourceKind::Gguf);
            let m = load(&g, &opts(WeightFormat::F32)).unwrap();
            let t = load(&hf, &opts(WeightFormat::F32)).unwrap();
            let (c, tc) = (&m.config, &t.config);
            assert_eq!(load_config(&g).unwrap(), *c);
            let what = format!("{arch:?} {ty:?}");
            assert_eq!(c.shape, tc.shape, "{what}");
            assert_eq!(
                (c.norm_eps, c.rope_theta, c.tied_embeddings, c.qkv_bias),
                (tc.norm_eps, tc.rope_theta, tc.tied_embeddings, tc.qkv_bias),
                "{what}"
            );
            assert_eq!(
                (c.activation, c.embed_scale, c.bos, &c.eos),
                (tc.activation, tc.embed_scale, tc.bos, &tc.eos),
                "{what}"
            );
            let llama = matches!(arch, RefArch::Llama | RefArch::Mistral);
            assert_eq!(
                c.arch,
                if llama { Architecture::Llama } else { tc.arch },
                "{what}"
            );
            assert_eq!(
                c.rope_style,
                if llama {
                    RopeStyle::Interleaved
                } else {
                    RopeStyle::HalfSplit
                },
                "{what}"
            );
            assert!(
                !c.norm_plus_one,
                "{what}: the converter already added 1 to gemma's norms"
            );
            assert_eq!(tc.norm_plus_one, arch == RefArch::Gemma);
            assert_eq!(
                matches!(c.rope_scaling, Some(RopeScaling::PerFrequency { .. })),
                arch == RefArch::Llama,
                "{what}: the tiny Llama carries llama3 scaling as rope_freqs"
            );
            let inv = c.rope_inv_freqs();
            for (a, b) in inv.iter().zip(tc.rope_inv_freqs()) {
                assert!(
                    (a - b).abs() <= 2e-7 * b.abs(),
                    "{what}: rope frequency {a} vs {b}"
                );
            }

            let (gw, tw) = (to_ref(&m).weights, to_ref(&t).weights);
            assert_eq!(gw.embedding, tw.embedding, "{what}");
            assert_eq!(gw.lm_head, tw.lm_head, "{what}");
            let plus_one = |v: &[f32]| -> Vec<f32> {
                v.iter()
                    .map(|x| if arch == RefArch::Gemma { x + 1.0 } else { *x })
                    .collect()
            };
            assert_eq!(gw.final_norm, plus_one(&tw.final_norm), "{what}");
            for (gl, tl) in gw.layers.iter().zip(&tw.layers) {
                let (wq, wk) = if llama {
                    (
                        unpermute_rows(&gl.wq, c.shape.heads, c.shape.hidden),
                        unpermute_rows(&gl.wk, c.shape.kv_heads, c.shape.hidden),
                    )
                } else {
                    (gl.wq.clone(), gl.wk.clone())
                };
                assert_eq!((&wq, &wk), (&tl.wq, &tl.wk), "{what}");
                if llama {
                    assert_ne!(gl.wq, tl.wq, "{what}: q must be stored permuted");
                }
                assert_eq!(
                    (&gl.wv, &gl.wo, &gl.w_gate, &gl.w_up, &gl.w_down),
                    (&tl.wv, &tl.wo, &tl.w_gate, &tl.w_up, &tl.w_down),
                    "{what}"
                );
                assert_eq!((&gl.bq, &gl.bk, &gl.bv), (&tl.bq, &tl.bk, &tl.bv), "{what}");
                assert_eq!(gl.attn_norm, plus_one(&tl.attn_norm), "{what}");
                assert_eq!(gl.ffn_norm, plus_one(&tl.ffn_norm), "{what}");
            }
            let want = to_ref(&t).forward(&PROMPT);
            let d = rel_diff(&want, &to_ref(&m).forward(&PROMPT));
            assert!(d < 1e-5, "{what}: logits differ by {d} of their range");
        }
    }
}

/// The converter's permutation is what makes interleaved rope right: the same GGUF read with half-split rope
/// (as if the rows were not permuted) gives clearly different logits, so the test above can fail.
#[test]
fn llama_gguf_with_the_wrong_rope_style_disagrees() {
    let (_dir, g, hf) = twins(RefArch::Llama, MatrixType::F32);
    let want = to_ref(&load(&hf, &opts(WeightFormat::F32)).unwrap()).forward(&PROMPT);
    let mut m = load(&g, &opts(WeightFormat::F32)).unwrap();
    m.config.rope_style = RopeStyle::HalfSplit;
    let d = rel_diff(&want, &to_ref(&m).forward(&PROMPT));
    assert!(d > 1e-2, "wrong rope style only moved logits by {d}");
}

/// Q4_0 and Q4_1 matrices become M0E4 G32 without re-quantisation: the same codes, scales exactly 16d, and every
/// weight within half an f16 ulp of its offset (plus f32 rounding) of llama.cpp's `d*q + m` / `d*(q-8)`.
#[test]
fn q4_matrices_import_into_m0e4_exactly() {
    for ty in [MatrixType::Q4_0, MatrixType::Q4_1] {
        for arch in [RefArch::Llama, RefArch::Qwen2] {
            let (_dir, g, _hf) = twins(arch, ty);
            let f32m = load(&g, &opts(WeightFormat::F32)).unwrap();
            let q = load(&g, &opts(M0E4_G32)).unwrap();
            let file = GgufFile::open(&g).unwrap();
            let pairs = [
                (
                    "token_embd.weight",
                    &q.weights.embedding,
                    &f32m.weights.embedding,
                ),
                (
                    "blk.0.attn_q.weight",
                    &q.weights.layers[0].wq,
                    &f32m.weights.layers[0].wq,
                ),
                (
                    "blk.1.ffn_down.weight",
                    &q.weights.layers[1].w_down,
                    &f32m.weights.layers[1].w_down,
                ),
            ];
            let (mut n, mut exact) = (0usize, 0usize);
            for (name, qt, ft) in pairs {
                let TensorData::M0e4(m) = &qt.data else {
                    panic!("{name} {ty:?} is {}", qt.dtype_name())
                };
                let info = file.tensor(name).unwrap();
                let bytes = file.data(info);
                let bb = if ty == MatrixType::Q4_1 { 20 } else { 18 };
                let got = qt.to_f32();
                let want = ft.to_f32();
                for (g_i, block) in bytes.chunks_exact(bb).enumerate() {
                    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                    assert_eq!(
                        m.scales()[g_i].to_f32(),
                        16.0 * d,
                        "{name} group {g_i}: scale"
                    );
                    let (row, col0) = (
                        g_i / (m.shape().cols / 32),
                        (g_i % (m.shape().cols / 32)) * 32,
                    );
                    let b = m.offsets()[g_i];
                    for k in 0..32 {
                        let code = if k < 16 {
                            block[bb - 16 + k] & 0xF
                        } else {
                            block[bb - 16 + k - 16] >> 4
                        };
                        assert_eq!(
                            m.code(row, col0 + k),
                            code,
                            "{name} group {g_i} element {k}: code"
                        );
                        let (x, w) = (got[g_i * 32 + k], want[g_i * 32 + k]);
                        let tol = ulp(b) / 2.0
                            + 2.0 * f32::EPSILON * (w.abs() + b.to_f32().abs() + 16.0 * d.abs());
                        assert!(
                            (x - w).abs() <= tol,
                            "{name} {ty:?} group {g_i} element {k}: {x} vs {w}"
                        );
                        n += 1;
                        exact += usize::from(x.to_bits() == w.to_bits());
                    }
                }
            }
            eprintln!("{arch:?} {ty:?}: {exact} of {n} weights bit-identical to the ggml formula");
            // Rounding the offsets to f16 moves a weight by at most half an f16 ulp of |b| (Q4_0: |b| = 24|d|, so
            // about 1.2 % of one quantisation step d): an f16-sized perturbation. f16 storage of f32 weights moves
            // these logits by up to 5e-3 of their range (load_models.rs); allow twice that.
            let want = to_ref(&f32m).forward(&PROMPT);
            let d = rel_diff(&want, &to_ref(&q).forward(&PROMPT));
            assert!(d < 1e-2, "{arch:?} {ty:?}: M0E4 import moved logits by {d}");
        }
    }
}

/// Other options convert through the ordinary paths: embeddings kept f16 on request, other groups and other
/// types re-quantised with the fp4 quantiser (close to, not equal to, the file's values).
#[test]
fn other_load_options_convert_gguf_weights() {
    let (_dir, g, _hf) = twins(RefArch::Qwen2, MatrixType::Q4_1);
    let keep = load(
        &g,
        &LoadOptions {
            quantize: M0E4_G32,
            keep_embeddings_f16: true,
        },
    )
    .unwrap();
    assert!(matches!(keep.weights.embedding.data, TensorData::F16(_)));
    assert!(matches!(
        keep.weights.layers[0].wq.data,
        TensorData::M0e4(_)
    ));
    let g64 = load(
        &g,
        &opts(WeightFormat::M0e4 {
            group: fp4::GroupSize::G64,
        }),
    )
    .unwrap();
    let TensorData::M0e4(m) = &g64.weights.layers[0].w_up.data else {
        panic!("not M0E4")
    };
    assert_eq!(m.group(), fp4::GroupSize::G64);
    let f16m = load(&g, &opts(WeightFormat::F16)).unwrap();
    assert!(matches!(
        f16m.weights.layers[0].w_up.data,
        TensorData::F16(_)
    ));
    assert!(matches!(
        f16m.weights.layers[0].attn_norm.data,
        TensorData::F32(_)
    ));
    let want = to_ref(&load(&g, &opts(WeightFormat::F32)).unwrap()).forward(&PROMPT);
    assert!(rel_diff(&want, &to_ref(&f16m).forward(&PROMPT)) < 5e-3);
    // Re-quantising 4-bit weights to 4 bits with other groups adds a second rounding: ~10-20 % of logits.
    assert!(rel_rms(&want, &to_ref(&g64).forward(&PROMPT)) < 0.3);
    let (_d2, q8, _) = twins(RefArch::Gemma, MatrixType::Q8_0);
    let m = load(&q8, &opts(M0E4_G32)).unwrap();
    assert!(matches!(m.weights.layers[0].wq.data, TensorData::M0e4(_)));
}

/// The distance from |x| to the next f16.
fn ulp(x: f16) -> f32 {
    let a = f16::from_bits(x.to_bits() & 0x7FFF);
    f16::from_bits(a.to_bits() + 1).to_f32() - a.to_f32()
}

/// A valid tiny model's metadata, tensors and bytes.
fn valid_parts() -> (Vec<(String, GgufValue)>, Vec<GgufTensor>) {
    let (meta, tensors, _) =
        gguf_model_parts(&TinySpec::for_arch(RefArch::Qwen2), MatrixType::Q4_1);
    (meta, tensors)
}

/// Byte position just after tensor `name`'s name in the header (its dimension count).
fn after_tensor_name(bytes: &[u8], name: &str) -> usize {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend(name.as_bytes());
    bytes
        .windows(pat.len())
        .position(|w| w == pat.as_slice())
        .unwrap()
        + pat.len()
}

/// Byte positions of tensor `name`'s type id and data offset fields.
fn type_and_offset_at(bytes: &[u8], name: &str) -> (usize, usize) {
    let p = after_tensor_name(bytes, name);
    let n_dims = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap()) as usize;
    let ty = p + 4 + 8 * n_dims;
    (ty, ty + 4)
}

fn parse_err(bytes: &[u8]) -> String {
    gguf::header::parse(bytes).unwrap_err()
}

fn load_err(bytes: &[u8]) -> EngineError {
    let dir = tmp();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, bytes).unwrap();
    load(&p, &opts(WeightFormat::F16)).unwrap_err()
}

#[test]
fn truncated_files_are_errors_at_every_length() {
    let (meta, tensors) = valid_parts();
    let bytes = parts_to_bytes(&meta, &tensors);
    let header = gguf::header::parse(&bytes).unwrap();
    let last_end = header
        .tensors
        .iter()
        .map(|t| t.start + t.len)
        .max()
        .unwrap();
    // Every length inside the header, then strides through the data, up to one byte short of the last tensor.
    let lengths = (0..header.data_start)
        .chain((header.data_start..last_end).step_by(211))
        .chain([last_end - 1]);
    for len in lengths {
        let e = parse_err(&bytes[..len]);
        assert!(
            e.contains("file ends")
                || e.contains("past the end")
                || e.contains("remain")
                || e.contains("cannot fit"),
            "length {len}: {e}"
        );
    }
    let e = load_err(&bytes[..last_end - 1]).to_string();
    assert!(
        e.contains("bad.gguf") && e.contains("run past the end"),
        "{e}"
    );
}

#[test]
fn corrupt_header_fields_are_named() {
    let (meta, tensors) = valid_parts();
    let good = parts_to_bytes(&meta, &tensors);
    let patched = |at: usize, with: &[u8]| {
        let mut b = good.clone();
        b[at..at + with.len()].copy_from_slice(with);
        b
    };
    assert!(parse_err(&patched(0, b"GGUG")).contains("not a GGUF file"));
    assert!(parse_err(&patched(4, &7u32.to_le_bytes())).contains("version 7"));
    assert!(parse_err(&patched(8, &u64::MAX.to_le_bytes())).contains("tensor count"));
    assert!(parse_err(&patched(16, &(1u64 << 40).to_le_bytes())).contains("metadata count"));
    assert!(parse_err(&patched(24, &(u64::MAX - 3).to_le_bytes())).contains("metadata key #0"));
    let (ty, off) = type_and_offset_at(&good, "blk.0.attn_v.weight");
    let e = parse_err(&patched(ty, &4u32.to_le_bytes()));
    assert!(
        e.contains("blk.0.attn_v.weight") && e.contains("type id 4"),
        "{e}"
    );
    let e = parse_err(&patched(off, &1u64.to_le_bytes()));
    assert!(
        e.contains("blk.0.attn_v.weight") && e.contains("alignment"),
        "{e}"
    );
    let e = parse_err(&patched(off, &(1u64 << 50).to_le_bytes()));
    assert!(
        e.contains("blk.0.attn_v.weight") && e.contains("past the end"),
        "{e}"
    );
    // Point attn_v at attn_k's data: two tensors share bytes.
    let (_, k_off) = type_and_offset_at(&good, "blk.0.attn_k.weight");
    let e = parse_err(&patched(off, &good[k_off..k_off + 8]));
    assert!(
        e.contains("overlap") && e.contains("blk.0.attn_v.weight"),
        "{e}"
    );
    let mut bad_align = meta.clone();
    bad_align.push(("general.alignment".into(), GgufValue::U32(3)));
    let e = parse_err(&parts_to_bytes(&bad_align, &tensors));
    assert!(e.contains("general.alignment"), "{e}");
}

#[test]
fn model_level_problems_are_named() {
    let (meta, tensors) = valid_parts();
    let set = |key: &str, v: Option<GgufValue>| {
        let mut m: Vec<_> = meta.iter().filter(|(k, _)| k != key).cloned().collect();
        if let Some(v) = v {
            m.push((key.to_string(), v));
        }
        parts_to_bytes(&m, &tensors)
    };
    let e = load_err(&set(
        "general.architecture",
        Some(GgufValue::Str("mamba".into())),
    ));
    assert!(
        matches!(&e, EngineError::UnsupportedArchitecture(a) if a.contains("mamba")),
        "{e}"
    );
    let e = load_err(&set("qwen2.embedding_length", None)).to_string();
    assert!(
        e.contains("qwen2.embedding_length") && e.contains("missing"),
        "{e}"
    );
    let e = load_err(&set(
        "qwen2.block_count",
        Some(GgufValue::Str("two".into())),
    ))
    .to_string();
    assert!(e.contains("qwen2.block_count"), "{e}");
    let e = load_err(&set("qwen2.rope.dimension_count", Some(GgufValue::U32(33)))).to_string();
    assert!(e.contains("qwen2.rope.dimension_count"), "{e}");
    let e = load_err(&set("qwen2.block_count", Some(GgufValue::U32(3)))).to_string();
    assert!(e.contains("blk.2.attn_norm.weight"), "{e}");

    let without: Vec<GgufTensor> = tensors
        .iter()
        .filter(|t| t.name != "blk.1.ffn_down.weight")
        .cloned()
        .collect();
    let e = load_err(&parts_to_bytes(&meta, &without));
    assert!(
        matches!(&e, EngineError::MissingTensor { tensor, .. } if tensor == "blk.1.ffn_down.weight"),
        "{e}"
    );

    let mut reshaped = tensors.clone();
    let k = reshaped
        .iter_mut()
        .find(|t| t.name == "blk.0.attn_k.weight")
        .unwrap();
    k.dims = vec![k.dims[0] * 2, k.dims[1] / 2];
    let e = load_err(&parts_to_bytes(&meta, &reshaped));
    assert!(
        matches!(&e, EngineError::TensorShape { tensor, expected, .. }
            if tensor == "blk.0.attn_k.weight" && expected == &vec![32, 64]),
        "{e}"
    );

    // A type ggml defines but tlite does not decode (Q5_0: 22 bytes per 32 weights).
    let mut q5 = tensors.clone();
    let up = q5
        .iter_mut()
        .find(|t| t.name == "blk.0.ffn_up.weight")
        .unwrap();
    up.ggml_type = 6;
    up.bytes = vec![0; (up.dims[0] * up.dims[1] / 32 * 22) as usize];
    let e = load_err(&parts_to_bytes(&meta, &q5)).to_string();
    assert!(
        e.contains("blk.0.ffn_up.weight") && e.contains("Q5_0"),
        "{e}"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random bytes behind a valid magic and version never panic the parser.
        #[test]
        fn random_headers_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512), version in 2u32..4) {
            let mut b = b"GGUF".to_vec();
            b.extend(version.to_le_bytes());
            b.extend(tail);
            let _ = gguf::header::parse(&b);
        }

        /// Up to eight random byte changes anywhere in a valid file never panic the parser; where it still
        /// parses, every tensor lies inside the file.
        #[test]
        fn mutated_files_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
        ) {
            let (meta, tensors) = valid_parts();
            let mut b = parts_to_bytes(&meta, &tensors);
            for (at, v) in edits {
                let i = at.index(b.len());
                b[i] = v;
            }
            if let Ok(h) = gguf::header::parse(&b) {
                for t in &h.tensors {
                    prop_assert!(t.start + t.len <= b.len());
                }
            }
        }
    }

    /// Mutations of the header (where the fields are) also go through the whole loader without a panic.
    #[test]
    fn mutated_headers_load_without_panic() {
        let (meta, tensors) = valid_parts();
        let good = parts_to_bytes(&meta, &tensors);
        let data_start = gguf::header::parse(&good).unwrap().data_start;
        let dir = tmp();
        let p = dir.path().join("m.gguf");
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..60 {
            let mut b = good.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % data_start;
                b[i] = (seed >> 32) as u8;
            }
            std::fs::write(&p, &b).unwrap();
            let _ = load(&p, &opts(M0E4_G32));
        }
    }
}

/// A phi3 GGUF file as llama.cpp's converter writes one: the Mistral tiny model's tensors with q|k|v fused into
/// `attn_qkv`, gate|up into `ffn_up` (gate rows first), partial rotary in `rope.dimension_count`, and longrope as
/// `rope_factors_short` / `rope_factors_long` tensors with `rope.scaling.attn_factor` and
/// `rope.scaling.original_context_length` (the q/k rows stay as the llama file stores them: only the cut is
/// checked here; arch_refs runs phi3's NEOX rotary against llama.cpp). It loads as the unfused file does (weights
/// equal bit for bit), with
/// the longrope tables, context and factor as written and a sliding window capping the context. A file with one
/// table only is refused naming both.
#[test]
fn a_phi3_file_with_fused_tensors_and_longrope_loads_as_the_unfused_one() {
    use engine::model::{Architecture, LoadOptions, RopeScaling, WeightFormat};
    use fixtures::gguf_models::{gguf_model_parts, parts_to_bytes, MatrixType};
    use fixtures::gguf_writer::{GgufTensor, GgufValue};
    use fixtures::reference_model::RefArch;
    use fixtures::tiny_models::TinySpec;

    let spec = TinySpec::for_arch(RefArch::Mistral);
    let (meta, tensors, _) = gguf_model_parts(&spec, MatrixType::F16);
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.gguf");
    std::fs::write(&plain, parts_to_bytes(&meta, &tensors)).unwrap();

    let rot = 12;
    let short: Vec<f32> = (0..rot / 2).map(|i| 1.0 + 0.25 * i as f32).collect();
    let long: Vec<f32> = (0..rot / 2).map(|i| 2.0 + i as f32).collect();
    let phi3 = |with_long: bool, window: u32| {
        let mut m: Vec<(String, GgufValue)> = meta
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("general.architecture", _) => (k.clone(), GgufValue::Str("phi3".into())),
                ("llama.rope.dimension_count", _) => (
                    "phi3.rope.dimension_count".into(),
                    GgufValue::U32(rot as u32),
                ),
                _ => (k.replace("llama.", "phi3."), v.clone()),
            })
            .collect();
        m.push(("phi3.rope.scaling.attn_factor".into(), GgufValue::F32(1.19)));
        m.push((
            "phi3.rope.scaling.original_context_length".into(),
            GgufValue::U32(32),
        ));
        m.push((
            "phi3.attention.sliding_window".into(),
            GgufValue::U32(window),
        ));
        let find = |n: &str| tensors.iter().find(|t| t.name == n).unwrap();
        let stack = |name: String, parts: &[&GgufTensor]| GgufTensor {
            name,
            dims: vec![
                parts[0].dims[0],
                parts.iter().map(|p| p.dims[1]).sum::<u64>(),
            ],
            ggml_type: parts[0].ggml_type,
            bytes: parts.iter().flat_map(|p| p.bytes.clone()).collect(),
        };
        let mut t: Vec<GgufTensor> = Vec::new();
        for x in &tensors {
            let n = &x.name;
            if n.ends_with("attn_q.weight") {
                let k = n.replace("attn_q", "attn_k");
                let v = n.replace("attn_q", "attn_v");
                t.push(stack(
                    n.replace("attn_q", "attn_qkv"),
                    &[x, find(&k), find(&v)],
                ));
            } else if n.ends_with("ffn_gate.weight") {
                let up = n.replace("ffn_gate", "ffn_up");
                t.push(stack(up.clone(), &[x, find(&up)]));
            } else if !["attn_k.weight", "attn_v.weight", "ffn_up.weight"]
                .iter()
                .any(|s| n.ends_with(s))
            {
                t.push(x.clone());
            }
        }
        t.push(GgufTensor::f32(
            "rope_factors_short.weight",
            &[short.len() as u64],
            &short,
        ));
        if with_long {
            t.push(GgufTensor::f32(
                "rope_factors_long.weight",
                &[long.len() as u64],
                &long,
            ));
        }
        parts_to_bytes(&m, &t)
    };
    let fused = dir.path().join("phi3.gguf");
    std::fs::write(&fused, phi3(true, 0)).unwrap();
    let opts = LoadOptions {
        quantize: WeightFormat::F16,
        keep_embeddings_f16: false,
    };
    let a = engine::model::load(&plain, &opts).unwrap();
    let b = engine::model::load(&fused, &opts).unwrap();
    assert_eq!(b.config.arch, Architecture::Phi3);
    assert_eq!(b.config.rotary_dim(), rot);
    assert_eq!(b.config.shape, a.config.shape, "window 0 caps nothing");
    assert_eq!(
        b.config.rope_scaling,
        Some(RopeScaling::LongRope {
            short_factors: short.clone(),
            long_factors: long.clone(),
            original_max_ctx: 32,
            attn_factor: 1.19,
        })
    );
    assert_eq!(b.weights, a.weights, "the cut tensors are the unfused ones");
    assert_ne!(
        b.config.rope_inv_freqs_for(32),
        b.config.rope_inv_freqs_for(33),
        "the table changes past the pre-training context"
    );

    // The sliding window masks every layer (as Mistral's does) instead of capping the context.
    std::fs::write(&fused, phi3(true, 40)).unwrap();
    let windowed = engine::model::load(&fused, &opts).unwrap().config;
    assert_eq!(windowed.shape.max_ctx, 128);
    let window = windowed.sliding_window.as_ref().unwrap();
    assert_eq!(window.window, 40);
    assert!(window.local_layers.iter().all(|&l| l));
    std::fs::write(&fused, phi3(false, 0)).unwrap();
    let e = engine::model::load(&fused, &opts).unwrap_err().to_string();
    assert!(e.contains("rope_factors_long"), "{e}");
}
