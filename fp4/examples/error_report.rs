//! Error of M0E4 against symmetric and asymmetric INT4 and against FP16 rounding, on Gaussian
//! and heavy-tailed (Student-t) weights and on stories260K's real weights:
//! `cargo run -p fp4 --release --example error_report [path/to/stories260K.bin]`.
use fp4::baseline::{quantize_int4_asymmetric, quantize_int4_symmetric};
use fp4::stats::{error_stats, round_trip_f16};
use fp4::{quantize_m0e4, quantize_m0e4_with, GroupSize, MatrixShape, SearchEffort};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, StudentT};
use std::error::Error;

type Res<T> = Result<T, Box<dyn Error>>;

/// Quantises a matrix in some format and returns the weights it dequantises to.
type Dequantiser = Box<dyn Fn(&[f32], MatrixShape) -> Res<Vec<f32>>>;

/// One named weight matrix.
struct Tensor {
    name: String,
    shape: MatrixShape,
    data: Vec<f32>,
}

/// Every format compared: name, bits per weight, and a function returning the dequantised weights.
fn methods() -> Vec<(&'static str, f64, Dequantiser)> {
    let minmax = SearchEffort {
        steps: 1,
        refits: 0,
    };
    vec![
        (
            "FP16 rounding",
            16.0,
            Box::new(|w, _| Ok(round_trip_f16(w))),
        ),
        (
            "INT4 symmetric G32 (Q4_0)",
            4.5,
            Box::new(|w, s| Ok(quantize_int4_symmetric(w, s, GroupSize::G32)?.dequantize())),
        ),
        (
            "INT4 asym min/max G32 (Q4_1)",
            5.0,
            Box::new(move |w, s| {
                Ok(quantize_int4_asymmetric(w, s, GroupSize::G32, minmax)?.dequantize())
            }),
        ),
        (
            "INT4 asym searched G32",
            5.0,
            Box::new(|w, s| {
                Ok(
                    quantize_int4_asymmetric(w, s, GroupSize::G32, SearchEffort::default())?
                        .dequantize(),
                )
            }),
        ),
        (
            "M0E4 min/max G32",
            5.0,
            Box::new(move |w, s| {
                Ok(fp4::reference::dequantize(&quantize_m0e4_with(
                    w,
                    s,
                    GroupSize::G32,
                    minmax,
                )?))
            }),
        ),
        (
            "M0E4 searched G32",
            5.0,
            Box::new(|w, s| {
                Ok(fp4::reference::dequantize(&quantize_m0e4(
                    w,
                    s,
                    GroupSize::G32,
                )?))
            }),
        ),
        (
            "M0E4 searched G64",
            4.5,
            Box::new(|w, s| {
                Ok(fp4::reference::dequantize(&quantize_m0e4(
                    w,
                    s,
                    GroupSize::G64,
                )?))
            }),
        ),
        (
            "M0E4 searched G128",
            4.25,
            Box::new(|w, s| {
                Ok(fp4::reference::dequantize(&quantize_m0e4(
                    w,
                    s,
                    GroupSize::G128,
                )?))
            }),
        ),
    ]
}

/// Prints one table comparing every format on `tensors` (only those whose columns fit the group size).
fn table(title: &str, tensors: &[Tensor]) -> Res<()> {
    println!("\n### {title}\n");
    println!("| format | bits/weight | RMS error | RMS / RMS(w) | max abs error | max / max|w| |");
    println!("|---|---|---|---|---|---|");
    let max_w = tensors
        .iter()
        .flat_map(|t| t.data.iter())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    for (name, bits, f) in methods() {
        let group = if name.contains("G128") {
            128
        } else if name.contains("G64") {
            64
        } else {
            32
        };
        let (mut exact, mut approx) = (Vec::new(), Vec::new());
        for t in tensors.iter().filter(|t| t.shape.cols % group == 0) {
            exact.extend_from_slice(&t.data);
            approx.extend(f(&t.data, t.shape)?);
        }
        if exact.is_empty() {
            println!("| {name} | {bits} | n/a | n/a | n/a | n/a |");
            continue;
        }
        let e = error_stats(&exact, &approx);
        println!(
            "| {name} | {bits} | {:.3e} | {:.4} | {:.3e} | {:.4} |",
            e.rms,
            e.rel_rms,
            e.max_abs,
            e.max_abs / f64::from(max_w)
        );
    }
    Ok(())
}

fn synthetic(seed: u64, sample: impl Fn(&mut rand::rngs::StdRng) -> f32) -> Tensor {
    let shape = MatrixShape::new(1024, 4096);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Tensor {
        name: "synthetic".into(),
        shape,
        data: (0..shape.len()).map(|_| sample(&mut rng)).collect(),
    }
}

/// Weight matrices of a llama2.c checkpoint (rms-norm vectors and RoPE tables skipped).
fn llama2c(path: &str) -> Res<Vec<Tensor>> {
    let bytes = std::fs::read(path)?;
    let ints: Vec<i32> = bytes
        .get(..28)
        .ok_or("file shorter than its header")?
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let [dim, hidden, layers, heads, kv_heads, vocab, _seq] = ints[..] else {
        return Err("bad header".into());
    };
    let (dim, hidden, layers, heads, kv_heads) = (
        dim as usize,
        hidden as usize,
        layers as usize,
        heads as usize,
        kv_heads as usize,
    );
    let (shared, vocab) = (vocab > 0, vocab.unsigned_abs() as usize);
    let kv_dim = dim * kv_heads / heads;
    let floats: Vec<f32> = bytes[28..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut at = 0usize;
    let mut take = |n: usize| -> Res<Vec<f32>> {
        let s = floats
            .get(at..at + n)
            .ok_or("checkpoint is truncated")?
            .to_vec();
        at += n;
        Ok(s)
    };
    let mut out = Vec::new();
    let push_layers =
        |out: &mut Vec<Tensor>, name: &str, rows: usize, cols: usize, all: Vec<f32>| {
            for (l, chunk) in all.chunks_exact(rows * cols).enumerate() {
                out.push(Tensor {
                    name: format!("layers.{l}.{name}"),
                    shape: MatrixShape::new(rows, cols),
                    data: chunk.to_vec(),
                });
            }
        };
    out.push(Tensor {
        name: "token_embedding".into(),
        shape: MatrixShape::new(vocab, dim),
        data: take(vocab * dim)?,
    });
    take(layers * dim)?; // rms_att
    push_layers(&mut out, "wq", dim, dim, take(layers * dim * dim)?);
    push_layers(&mut out, "wk", kv_dim, dim, take(layers * kv_dim * dim)?);
    push_layers(&mut out, "wv", kv_dim, dim, take(layers * kv_dim * dim)?);
    push_layers(&mut out, "wo", dim, dim, take(layers * dim * dim)?);
    take(layers * dim)?; // rms_ffn
    push_layers(&mut out, "w1", hidden, dim, take(layers * hidden * dim)?);
    push_layers(&mut out, "w2", dim, hidden, take(layers * dim * hidden)?);
    push_layers(&mut out, "w3", hidden, dim, take(layers * hidden * dim)?);
    take(dim)?; // rms_final
    let seq = ints[6] as usize;
    take(seq * (dim / heads) / 2 * 2)?; // freq_cis real and imaginary parts
    if !shared {
        out.push(Tensor {
            name: "wcls".into(),
            shape: MatrixShape::new(vocab, dim),
            data: take(vocab * dim)?,
        });
    }
    Ok(out)
}

fn main() -> Res<()> {
    println!("## M0E4 vs INT4 vs FP16: quantisation error (groups along the input dimension)");
    let normal = Normal::new(0.0f32, 0.02)?;
    table(
        "Gaussian N(0, 0.02²), 1024×4096",
        &[synthetic(1, |r| normal.sample(r))],
    )?;
    let t5 = StudentT::new(5.0f32)?;
    table(
        "Student-t ν=5 × 0.02, 1024×4096",
        &[synthetic(2, |r| 0.02 * t5.sample(r))],
    )?;
    let t3 = StudentT::new(3.0f32)?;
    table(
        "Student-t ν=3 × 0.02 (heavier tails), 1024×4096",
        &[synthetic(3, |r| 0.02 * t3.sample(r))],
    )?;

    let default_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/models/stories260K/stories260K.bin"
    );
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default_path.to_string());
    match llama2c(&path) {
        Ok(tensors) => {
            let total: usize = tensors.iter().map(|t| t.shape.len()).sum();
            let fits = |g: usize| {
                tensors
                    .iter()
                    .filter(|t| t.shape.cols % g == 0)
                    .map(|t| t.shape.len())
                    .sum::<usize>()
            };
            println!("\nstories260K: {} matrices, {total} weights; G=32/64 cover {} weights, G=128 covers {}.", tensors.len(), fits(32), fits(128));
            for t in tensors.iter().filter(|t| t.shape.cols % 32 != 0) {
                println!(
                    "  not quantisable (cols {} not a multiple of 32): {} {}x{}",
                    t.shape.cols, t.name, t.shape.rows, t.shape.cols
                );
            }
            table(
                "stories260K real weights (all matrices with cols % G == 0)",
                &tensors,
            )?;
        }
        Err(e) => println!("\n(stories260K skipped: {path}: {e})"),
    }
    Ok(())
}
