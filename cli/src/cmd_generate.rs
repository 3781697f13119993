//! `tlite generate`: one prompt, streamed continuation. The model, sampling and device options are shared with
//! `tlite chat` (see [`SessionArgs`]).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clkernels::runtime::{DeviceSelector, ProfileChoice, QueuePriority};
use engine::generate::{GenerateOptions, Generation, LanguageModel, OnContextFull, StopReason};
use engine::gpu::{GpuOptions, MemBudget};
use engine::model::WeightFormat;
use engine::sampling::SamplingParams;
use engine::session::{default_model_path, Session, SessionOptions};

/// Which model, how it is stored, and where it runs.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Model: a GGUF file, a Hugging Face folder, a llama2.c `.bin` checkpoint or a `tlite quantize` folder
    /// (default: $TLITE_DEFAULT_MODEL, else SmolLM2-135M-Instruct once scripts/fetch-default-model has cached it,
    /// else the bundled tiny model with random weights).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weight storage on the device: m0e4 (4-bit) or f16.
    #[arg(long, default_value = "m0e4", value_parser = ["m0e4", "f16"])]
    pub weights: String,
    /// M0E4 group size (32, 64 or 128).
    #[arg(long, default_value_t = 32)]
    pub group: usize,
    /// Quantise the embedding and output head too (by default they stay f16).
    #[arg(long)]
    pub quantize_embeddings: bool,
    /// OpenCL device: index or name substring (default: $TLITE_DEVICE, else the first GPU).
    #[arg(long)]
    pub device: Option<String>,
    /// GPU queue priority: low (the default, so the UI keeps the GPU), normal or high.
    #[arg(long, default_value = "low")]
    pub priority: QueuePriority,
    /// Treat the device as this phone, lowering its limits and removing the extensions the phone lacks: a bundled
    /// profile (adreno-740, adreno-750, adreno-830, mali-g610-mc6, mali-g710, phone-min), the path of a profile
    /// JSON file, or none (default: $TLITE_DEVICE_PROFILE). `tlite devices --profile NAME` shows what changes.
    #[arg(long, value_name = "NAME|FILE")]
    pub device_profile: Option<String>,
    /// Context to allocate the KV cache for (default: the largest that fits --mem-budget, at most the model's
    /// own maximum).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Device memory the model may take, weights, KV cache, activations and programs together: a share of the
    /// device's global memory (75%) or a size (1.5GiB, 800MiB). Checked before anything is allocated.
    #[arg(long, default_value = "75%", value_name = "SHARE|SIZE")]
    pub mem_budget: MemBudget,
    /// Prompt tokens per prefill step (long prompts are prefilled in chunks of this).
    #[arg(long, default_value_t = 256)]
    pub prefill_chunk: usize,
    /// Multiply the decode mat-vecs in f32 even where f16 products are faster (NVIDIA, devices with
    /// cl_khr_fp16): slower, but each mat-vec exact to f32 rounding instead of ~2e-3.
    #[arg(long)]
    pub f32_matvec: bool,
}

impl ModelArgs {
    /// Loads the model, its tokenizer and its template, and places it on the device.
    pub fn open(&self) -> anyhow::Result<Session> {
        let path = match &self.model {
            Some(p) => p.clone(),
            None => default_model_path()?,
        };
        let weights = match self.weights.as_str() {
            "f16" => WeightFormat::F16,
            _ => WeightFormat::M0e4 {
                group: fp4::GroupSize::try_from(self.group)?,
            },
        };
        if self.prefill_chunk == 0 {
            anyhow::bail!("--prefill-chunk must be at least 1");
        }
        let profile = match &self.device_profile {
            Some(text) => ProfileChoice::parse(text)?,
            None => ProfileChoice::FromEnv,
        };
        let options = SessionOptions {
            weights,
            keep_embeddings_f16: !self.quantize_embeddings,
            gpu: GpuOptions {
                device: match &self.device {
                    Some(d) => DeviceSelector::parse(d),
                    None => DeviceSelector::from_env(),
                },
                priority: self.priority,
                profile,
                max_ctx: self.ctx,
                mem_budget: self.mem_budget,
                max_chunk: self.prefill_chunk,
                half_products: !self.f32_matvec,
                ..GpuOptions::default()
            },
        };
        let session = Session::open(&path, &options)
            .with_context(|| format!("loading {}", path.display()))?;
        // The load line: what context was chosen, why, and what it takes of which budget.
        eprintln!(
            "{}: {}",
            path.display(),
            session.generator.model().context_choice()
        );
        Ok(session)
    }
}

/// How tokens are chosen and when generation stops.
#[derive(Debug, clap::Args)]
pub struct SamplingArgs {
    /// Tokens to generate at most (at least 1).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Softmax temperature; 0 is greedy (chosen on the device).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling mass (1: off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens below this fraction of the most likely one's probability (0: off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Penalty on tokens seen in the last --repeat-window tokens (1: off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Tokens the repetition penalty looks back over.
    #[arg(long, default_value_t = 64)]
    pub repeat_window: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the text contains this (repeatable). Special tokens count as their text, so `<|im_end|>`
    /// works; the model's end-of-turn tokens stop generation without it.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Start the prompt with the BOS token: auto follows the model's tokenizer settings (`add_bos_token`); a
    /// prompt that already starts with BOS never gets a second one.
    #[arg(long, default_value = "auto", value_parser = ["auto", "yes", "no"])]
    pub bos: String,
    /// Print load time, prefill and decode speed and device memory to stderr.
    #[arg(long)]
    pub timings: bool,
    /// When the context is full: `on` drops the oldest tokens after the first --keep and goes on (the kept keys
    /// are re-rotated in place on the device, nothing is read again); `off` stops there (and chat drops its
    /// oldest exchanges and reads the rest again).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub context_shift: String,
    /// Tokens at the start of the context a shift never drops (default: 4 for generate, the system prompt for
    /// chat; at most half the context).
    #[arg(long)]
    pub keep: Option<usize>,
}

impl SamplingArgs {
    /// The engine's options.
    pub fn options(&self, prefill_chunk: usize) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                repeat_window: self.repeat_window,
                seed: self.seed,
            },
            stop_strings: self.stop.clone(),
            prefill_chunk,
            add_bos: match self.bos.as_str() {
                "yes" => Some(true),
                "no" => Some(false),
                _ => None,
            },
            on_context_full: match self.context_shift.as_str() {
                "off" => OnContextFull::Stop,
                _ => OnContextFull::Shift { keep: self.keep },
            },
            ..GenerateOptions::default()
        }
    }
}

/// The options `generate` and `chat` share, flattened into each so both parse and open a model the same way.
#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

impl SessionArgs {
    /// Opens the model ([`ModelArgs::open`]) and turns the sampling flags into the engine's options.
    pub fn open(&self) -> anyhow::Result<(Session, GenerateOptions)> {
        let session = self.model.open()?;
        Ok((session, self.sampling.options(self.model.prefill_chunk)))
    }
}

/// Arguments of this subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The prompt.
    #[arg(long)]
    prompt: String,
    #[command(flatten)]
    session: SessionArgs,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (mut session, options) = args.session.open()?;
    let mut stdout = std::io::stdout().lock();
    // The prompt is echoed with the first piece, so a refused prompt prints only the error.
    let mut echoed = false;
    let out = session
        .generator
        .generate(&args.prompt, &options, |piece| {
            if !echoed {
                let _ = write!(stdout, "{}", args.prompt);
                echoed = true;
            }
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        })?;
    if !echoed {
        write!(stdout, "{}", args.prompt)?;
    }
    writeln!(stdout)?;
    print_context_note(&out, session.generator.model().context_len(), &options);
    if args.session.sampling.timings {
        print_timings(&out);
    }
    Ok(())
}

/// One line on stderr when the context filled up during a generation: what the shifts dropped, or that it
/// stopped there and why.
pub fn print_context_note(out: &Generation, context: usize, options: &GenerateOptions) {
    let s = out.shifts;
    if s.shifts > 0 {
        eprintln!(
            "(context of {context} tokens full: {} shift{} dropped the {} oldest tokens after the first {}; the \
             rest stayed on the device)",
            s.shifts,
            if s.shifts == 1 { "" } else { "s" },
            s.dropped,
            s.kept
        );
    }
    if out.stop == StopReason::ContextFull {
        match options.on_context_full {
            OnContextFull::Stop => eprintln!(
                "(stopped: the context of {context} tokens is full; --context-shift on goes on by dropping the \
                 oldest tokens)"
            ),
            OnContextFull::Shift { .. } => {
                eprintln!("(stopped: the context of {context} tokens is full and could not be shifted)")
            }
        }
    }
}

/// The `--timings` report, on stderr so stdout stays the text.
pub fn print_timings(out: &Generation) {
    let t = &out.timings;
    eprintln!(
        "load {:.2} s | prefill {} tok in {:.3} s = {:.1} tok/s | decode {} tok in {:.3} s = {:.1} tok/s | \
         device memory {:.1} MiB | stop: {:?} | context shifts: {}",
        t.load.as_secs_f64(),
        t.prefill_tokens,
        t.prefill.as_secs_f64(),
        t.prefill_tok_s(),
        t.decode_tokens,
        t.decode.as_secs_f64(),
        t.decode_tok_s(),
        t.peak_device_bytes as f64 / (1024.0 * 1024.0),
        out.stop,
        out.shifts.shifts
    );
}
