//! `tlite quantize <in> <out>`: quantise a model to M0E4 once, ahead of time, into a folder that loads with no
//! conversion at all.
//!
//! Nothing is lost: the output may not be, contain or lie inside the input, an existing output is replaced only
//! when it is a previous tlite output (or empty), and the new folder appears whole or not at all.

use anyhow::Context;
use engine::gguf::GgufFile;
use engine::model::{self, tlite_format, LoadOptions, SourceKind, TensorData, WeightFormat};
use engine::tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source model: a Hugging Face folder, a llama2.c `.bin` checkpoint or a GGUF file.
    pub input: PathBuf,
    /// Output folder: created, or replaced if it holds an earlier `tlite quantize` output (anything else is refused).
    pub output: PathBuf,
    /// M0E4 group size along the input dimension: 32, 64 or 128.
    #[arg(long, default_value_t = 32)]
    pub group: usize,
    /// Quantise the embedding and the output head too (by default they stay f16, as `tlite generate` keeps them:
    /// on small models a 4-bit head multiplies the logits' error many times).
    #[arg(long)]
    pub quantize_embeddings: bool,
    /// Kept for scripts written before embeddings stayed f16 by default; has no effect.
    #[arg(long, hide = true)]
    pub keep_embeddings_f16: bool,
}

/// The folder tokenizer files are copied from: the model folder, or the folder of a llama2.c checkpoint. GGUF
/// files (and anything else that is one file) carry their vocabulary inside and have none.
fn tokenizer_source(input: &Path, kind: SourceKind) -> Option<PathBuf> {
    match kind {
        SourceKind::HuggingFace => Some(input.to_path_buf()),
        SourceKind::Llama2c => Some(model::tokenizer_dir(input).to_path_buf()),
        _ => None,
    }
}

/// Tokenizer files made for the output folder: (name, contents).
type TokenizerFiles = Vec<(&'static str, Vec<u8>)>;

/// A GGUF file's vocabulary as `tokenizer.json` and `tokenizer_config.json`, so the folder tokenizes exactly as
/// the file does. Read before the (long) weight load. A file with no vocabulary, or one tlite cannot read, gives
/// no files and the reason: the weights are still good, as for a Hugging Face folder without a tokenizer, and the
/// note printed at the end says what is missing.
fn gguf_tokenizer_files(gguf: &GgufFile) -> anyhow::Result<Result<TokenizerFiles, String>> {
    if gguf.opt_str("tokenizer.ggml.model")?.is_none() {
        return Ok(Err(
            "the GGUF file carries no tokenizer.ggml.* vocabulary".into()
        ));
    }
    let t = match Tokenizer::from_gguf(gguf) {
        Ok(t) => t,
        Err(e) => return Ok(Err(format!("its vocabulary cannot be read: {e}"))),
    };
    Ok(Ok(vec![
        ("tokenizer.json", t.to_hf_json()?.into_bytes()),
        ("tokenizer_config.json", t.to_hf_config_json()?.into_bytes()),
    ]))
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let group = fp4::GroupSize::try_from(args.group)?;
    let kind = model::source_kind(&args.input)?;
    if kind == SourceKind::Tlite {
        anyhow::bail!(
            "{} is already a tlite quantised folder",
            args.input.display()
        );
    }
    let tokenizer_dir = tokenizer_source(&args.input, kind);
    // Checked before the (long) load so a wrong output costs nothing; the folder is checked again when written.
    // The folder first, so that `quantize dir/model.bin dir` is told "is the input", the plainest of the reasons.
    let mut inputs: Vec<&Path> = tokenizer_dir.iter().map(PathBuf::as_path).collect();
    inputs.push(&args.input);
    tlite_format::check_output(&inputs, &args.output)?;
    let gguf = match kind {
        SourceKind::Gguf => Some(GgufFile::open(&args.input)?),
        _ => None,
    };
    let (generated, no_vocabulary) = match &gguf {
        Some(g) => match gguf_tokenizer_files(g)? {
            Ok(files) => (files, None),
            Err(why) => (Vec::new(), Some(why)),
        },
        None => (Vec::new(), None),
    };

    let opts = LoadOptions {
        quantize: WeightFormat::M0e4 { group },
        keep_embeddings_f16: !args.quantize_embeddings,
    };
    let config = model::load_config(&args.input)?;
    let bar = ProgressBar::new(config.shape.layers as u64 + 2);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({elapsed})")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    bar.set_message("quantising");
    let started = std::time::Instant::now();
    let loaded =
        model::load_with_progress(&args.input, &opts, &|done, _| bar.set_position(done as u64))
            .with_context(|| format!("loading {}", args.input.display()))?;
    bar.set_message("writing");
    let generated: Vec<(&str, &[u8])> = generated.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let saved = tlite_format::save_to(&loaded, tokenizer_dir.as_deref(), &generated, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    bar.finish_with_message("done");
    report(&args.output, &loaded, group, started.elapsed())?;
    if let Some(g) = &gguf {
        let errors = tlite_format::gguf_requant_errors(g, &loaded)
            .with_context(|| format!("comparing with {}", args.input.display()))?;
        report_source_errors(&errors)?;
    }
    if !saved.has_vocabulary {
        // Not an error: the weights are good, and a tokenizer file can be put beside them afterwards.
        let why = match (no_vocabulary, &tokenizer_dir) {
            (Some(why), _) => why,
            (None, None) => "the source has no vocabulary tlite can write".to_string(),
            (None, Some(_)) => {
                "the source has no tokenizer.json, tokenizer.model or tokenizer.bin beside it"
                    .into()
            }
        };
        eprintln!(
            "note: {} has no tokenizer ({why}); copy the model's tokenizer.json into it before generating",
            args.output.display()
        );
    }
    Ok(())
}

/// One line per source ggml type of a GGUF input: how many matrices and weights it held and the relative RMS
/// error of what the folder stores against the file's own decoded weights (issue 15: K-quants are dequantised and
/// quantised again, so their line shows what that cost; Q4_0/Q4_1 keep their codes and scales and differ only by
/// the f16 rounding of their offsets).
fn report_source_errors(errors: &[tlite_format::SourceTypeError]) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    for e in errors {
        let stored = match (e.m0e4_tensors, e.tensors - e.m0e4_tensors) {
            (_, 0) => "M0E4".to_string(),
            (0, _) => "f16".to_string(),
            (q, h) => format!("{q} M0E4, {h} f16"),
        };
        writeln!(
            o,
            "source {}: {} tensors, {} weights -> {stored}, relative RMS error {:.3e} against the dequantised source",
            e.source, e.tensors, e.weights, e.relative_rms
        )?;
    }
    Ok(())
}

/// Prints what was written; stdout errors (a closed pipe) are returned, not panicked on.
fn report(
    out: &Path,
    loaded: &model::Model,
    group: fp4::GroupSize,
    elapsed: std::time::Duration,
) -> std::io::Result<()> {
    let w = &loaded.weights;
    let mut tensors: Vec<(String, &model::Tensor)> = vec![("embedding".into(), &w.embedding)];
    tensors.extend(w.lm_head.as_ref().map(|t| ("lm_head".into(), t)));
    for (i, l) in w.layers.iter().enumerate() {
        for (n, t) in [("wq", &l.wq), ("wk", &l.wk), ("wv", &l.wv), ("wo", &l.wo)] {
            tensors.push((format!("layers.{i}.{n}"), t));
        }
        for (n, t) in [
            ("w_gate", &l.w_gate),
            ("w_up", &l.w_up),
            ("w_down", &l.w_down),
        ] {
            tensors.push((format!("layers.{i}.{n}"), t));
        }
    }
    let kept: Vec<String> = tensors
        .iter()
        .filter(|(_, t)| matches!(t.data, TensorData::F16(_)))
        .map(|(n, t)| format!("{n} {:?}", t.shape))
        .collect();
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "{}: {} layers, {:.2} MiB of weights (M0E4 group {group}) in {:.1}s",
        out.display(),
        loaded.config.shape.layers,
        w.bytes() as f64 / (1024.0 * 1024.0),
        elapsed.as_secs_f64()
    )?;
    if !kept.is_empty() {
        writeln!(
            o,
            "{} matrices kept in f16 (embedding and head unless --quantize-embeddings, or input width not a \
             multiple of {group}): {}",
            kept.len(),
            kept.join(", ")
        )?;
    }
    Ok(())
}
