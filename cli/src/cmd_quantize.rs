//! `tlite quantize <in> <out>`: quantise a model to M0E4 once, ahead of time, into a folder that loads with no
//! conversion at all.
//!
//! Nothing is lost: the output may not be, contain or lie inside the input, an existing output is replaced only
//! when it is a previous tlite output (or empty), and the new folder appears whole or not at all.

use anyhow::Context;
use engine::model::{self, tlite_format, LoadOptions, SourceKind, TensorData, WeightFormat};
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

    let opts = LoadOptions {
        quantize: WeightFormat::M0e4 { group },
        keep_embeddings_f16: !args.quantize_embeddings,
    };
    let config = model::load_config(&args.input)?;
    let bar = ProgressBar::new(config.layers as u64 + 2);
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
    let saved = tlite_format::save_to(&loaded, tokenizer_dir.as_deref(), &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    bar.finish_with_message("done");
    report(&args.output, &loaded, group, started.elapsed())?;
    if !saved.has_vocabulary {
        // Not an error: the weights are good, and a tokenizer file can be put beside them afterwards.
        let why = if tokenizer_dir.is_none() {
            "the source keeps its vocabulary inside the file and tlite folders do not carry it yet"
        } else {
            "the source has no tokenizer.json, tokenizer.model or tokenizer.bin beside it"
        };
        eprintln!(
            "note: {} has no tokenizer ({why}); copy the model's tokenizer.json into it before generating",
            args.output.display()
        );
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
        loaded.config.layers,
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
