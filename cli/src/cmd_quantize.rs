//! `tlite quantize <in> <out>`: quantise a model to M0E4 once, ahead of time, into a folder that loads with no
//! conversion at all.

use anyhow::Context;
use engine::model::{self, LoadOptions, TensorData, WeightFormat};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Arguments of this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source model: a Hugging Face folder or a llama2.c `.bin` checkpoint.
    pub input: PathBuf,
    /// Output folder (created; files in it are overwritten).
    pub output: PathBuf,
    /// M0E4 group size along the input dimension: 32, 64 or 128.
    #[arg(long, default_value_t = 32)]
    pub group: usize,
    /// Keep the embedding and the output head in f16 instead of M0E4.
    #[arg(long)]
    pub keep_embeddings_f16: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let group = fp4::GroupSize::try_from(args.group)?;
    if model::source_kind(&args.input)? == model::SourceKind::Tlite {
        anyhow::bail!(
            "{} is already a tlite quantised folder",
            args.input.display()
        );
    }
    let opts = LoadOptions {
        quantize: WeightFormat::M0e4 { group },
        keep_embeddings_f16: args.keep_embeddings_f16,
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
    model::tlite_format::save(&loaded, model::tokenizer_dir(&args.input), &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    bar.finish_with_message("done");

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
    println!(
        "{}: {} layers, {:.2} MiB of weights (M0E4 group {group}) in {:.1}s",
        args.output.display(),
        loaded.config.layers,
        w.bytes() as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );
    if !kept.is_empty() {
        println!(
            "{} matrices kept in f16 (embeddings on request, or input width not a multiple of {group}): {}",
            kept.len(),
            kept.join(", ")
        );
    }
    Ok(())
}
