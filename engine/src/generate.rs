//! The generation loop: prefill in chunks, decode, stream tokens, stop.
//!
//! [`Generator`] drives any [`LanguageModel`] (the OpenCL forward pass in [`crate::gpu`], or a reference in tests)
//! with any [`TextCodec`]. It keeps the token ids that are in the model's KV cache; a new prompt that starts with
//! them only runs the rest, which is how `tlite chat` keeps the cache between turns (the template re-renders the
//! whole conversation, and only the new turn is prefilled). When the cache is full it shifts the context
//! ([`crate::context_shift`]) and goes on, remembering the dropped tokens so later prompts still match.

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::context_shift::{drop_block, ShiftedOut, DEFAULT_KEEP};
pub use crate::context_shift::{ContextShifts, OnContextFull};
use crate::model::ModelConfig;
use crate::sampling::{Sampler, SamplingParams};
use crate::EngineError;

/// What a forward step must hand back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Nothing: an intermediate prefill chunk (no logits are computed).
    Nothing,
    /// The arg-max of the last position's logits, chosen on the device (one `u32` read back).
    Argmax,
    /// The last position's full logits (read back for sampling on the CPU).
    Logits,
}

/// What a forward step handed back.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutput {
    /// Nothing was asked.
    Nothing,
    /// The arg-max token.
    Token(u32),
    /// The last position's logits, `vocab` values.
    Logits(Vec<f32>),
}

/// What a model needs to sample the next token itself, the way [`Sampler`] would.
#[derive(Debug, Clone, Copy)]
pub struct DrawRequest<'a> {
    /// The chain's settings (validated).
    pub params: &'a SamplingParams,
    /// The distinct tokens the repetition penalty applies to (empty when it is off).
    pub penalised: &'a [u32],
    /// Where in `[0, 1)` the draw falls, from the generator's random stream; `None` at temperature 0.
    pub uniform: Option<f32>,
}

/// A decoder with a KV cache: what the generation loop needs from a forward pass.
pub trait LanguageModel {
    /// The model's shapes.
    fn config(&self) -> &ModelConfig;
    /// Positions the cache holds at most.
    fn context_len(&self) -> usize;
    /// Positions currently in the cache.
    fn cached_len(&self) -> usize;
    /// The longest step [`LanguageModel::step`] accepts (prefill chunks are cut to it).
    fn max_step_tokens(&self) -> usize;
    /// Drops cached positions from `len` on (moves no data). A model that cannot keep exactly `len` positions
    /// ([`LanguageModel::can_truncate`] says false) may drop more, down to none: [`LanguageModel::cached_len`]
    /// says what it kept.
    fn truncate(&mut self, len: usize) -> Result<(), EngineError>;
    /// Whether [`LanguageModel::truncate`]`(len)` keeps exactly `len` positions (a sliding-window ring cache no
    /// longer holds the window before an old position).
    fn can_truncate(&self, _len: usize) -> bool {
        true
    }
    /// Appends `tokens` at the end of the cache and returns what `want` asks about the last one.
    fn step(&mut self, tokens: &[u32], want: Want) -> Result<StepOutput, EngineError>;
    /// Appends `tokens` and chooses the next token as `draw` says ([`StepOutput::Token`]), or hands back the last
    /// position's logits ([`StepOutput::Logits`]) for the caller to sample on the host with the same numbers. This
    /// default always hands back the logits; the GPU model samples on the device.
    fn step_sampled(
        &mut self,
        tokens: &[u32],
        draw: &DrawRequest<'_>,
    ) -> Result<StepOutput, EngineError> {
        let _ = draw;
        self.step(tokens, Want::Logits)
    }
    /// Peak device memory this model has used, in bytes (0 when unknown).
    fn peak_device_bytes(&self) -> u64 {
        0
    }
    /// Context shift: drops cached positions `[keep, keep + drop)` and moves the later ones down, so that they read
    /// as if they had been run at their new positions (the keys re-rotated), making room without running anything
    /// again. Returns `false`, changing nothing, where the model cannot; after an error the cache may have been
    /// cut back to its first `keep` positions ([`LanguageModel::cached_len`] says).
    fn shift_context(&mut self, _keep: usize, _drop: usize) -> Result<bool, EngineError> {
        Ok(false)
    }
}

/// Text to token ids and back, and what the tokenizer says about BOS and the end of a reply.
pub trait TextCodec {
    /// Token ids of `text`, the texts of special tokens in it standing for their ids (a rendered chat template
    /// writes `<|im_start|>`); no BOS: the generator adds it.
    fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError>;
    /// Text of `ids`, special tokens left out.
    fn decode(&self, ids: &[u32]) -> Result<String, EngineError>;
    /// The id of a token written exactly as `token`, if the vocabulary has one.
    fn token_id(&self, token: &str) -> Option<u32>;
    /// The text of `id` if it is a special token: stop strings see it (`<|im_end|>`), the user never does.
    fn special_text(&self, _id: u32) -> Option<String> {
        None
    }
    /// Whether a prompt starts with BOS, as the tokenizer's settings say (overridden by
    /// [`GenerateOptions::add_bos`]).
    fn adds_bos(&self) -> bool {
        true
    }
    /// The tokenizer's BOS id; the model config's is used when this is `None`.
    fn bos_id(&self) -> Option<u32> {
        None
    }
    /// Ids that end a reply besides the model config's EOS ids (end of turn, end of message).
    fn end_ids(&self) -> Vec<u32> {
        Vec::new()
    }
}

/// Options of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Tokens to generate at most. Must be at least 1 ([`EngineError::InvalidOption`] otherwise).
    pub max_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
    /// Generation stops when the text contains one of these; the stop string itself is not returned.
    pub stop_strings: Vec<String>,
    /// Prompt tokens per prefill step (0: the model's maximum); long prompts are cut so a step never holds the GPU
    /// long.
    pub prefill_chunk: usize,
    /// Prepend the BOS token to the prompt: `None` follows the tokenizer ([`TextCodec::adds_bos`]); either way a
    /// prompt whose text already starts with BOS does not get a second one.
    pub add_bos: Option<bool>,
    /// Extra token ids that end generation besides the model's EOS ids (e.g. a chat template's end of turn).
    pub extra_eos: Vec<u32>,
    /// What happens when the context is full: by default a context shift keeps generation going.
    pub on_context_full: OnContextFull,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            sampling: SamplingParams::greedy(),
            stop_strings: Vec::new(),
            prefill_chunk: 0,
            add_bos: None,
            extra_eos: Vec::new(),
            on_context_full: OnContextFull::default(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The model emitted an end-of-sequence token.
    Eos,
    /// The text reached this stop string.
    StopString(String),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full and shifting it was off ([`OnContextFull::Stop`]), or impossible (a model that cannot,
    /// or nothing left after the kept start to drop).
    ContextFull,
}

/// Timing figures of one generation (and of the load, when the caller fills it in).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Model load and upload time.
    pub load: Duration,
    /// Prompt tokens actually run (cached ones are not counted).
    pub prefill_tokens: usize,
    /// Time spent on them, up to and including the first generated token.
    pub prefill: Duration,
    /// Tokens generated after the first.
    pub decode_tokens: usize,
    /// Time spent on them.
    pub decode: Duration,
    /// Peak device memory, bytes (0 when unknown).
    pub peak_device_bytes: u64,
}

impl Timings {
    /// Prompt tokens per second.
    pub fn prefill_tok_s(&self) -> f64 {
        rate(self.prefill_tokens, self.prefill)
    }

    /// Generated tokens per second (after the first).
    pub fn decode_tok_s(&self) -> f64 {
        rate(self.decode_tokens, self.decode)
    }
}

fn rate(tokens: usize, time: Duration) -> f64 {
    if time.is_zero() {
        0.0
    } else {
        tokens as f64 / time.as_secs_f64()
    }
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (without the stop string).
    pub text: String,
    /// The generated token ids (including a final EOS, if one stopped generation).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop: StopReason,
    /// Context shifts made on the way (none when everything fitted).
    pub shifts: ContextShifts,
    /// Figures.
    pub timings: Timings,
}

/// A model, its tokenizer and the token ids held in its KV cache.
#[derive(Debug)]
pub struct Generator<M, T> {
    model: M,
    codec: T,
    /// Token ids whose keys and values are in the cache, in order.
    cached: Vec<u32>,
    /// Tokens context shifts dropped from between the cache's kept start and the rest.
    shifted_out: ShiftedOut,
    /// Load time, copied into every generation's timings.
    load_time: Duration,
}

impl<M: LanguageModel, T: TextCodec> Generator<M, T> {
    /// Wraps a model whose cache is empty (or is emptied here).
    pub fn new(mut model: M, codec: T) -> Result<Self, EngineError> {
        model.truncate(0)?;
        Ok(Self {
            model,
            codec,
            cached: Vec::new(),
            shifted_out: ShiftedOut::default(),
            load_time: Duration::ZERO,
        })
    }

    /// Records how long loading took, to be reported with every generation.
    pub fn set_load_time(&mut self, load: Duration) {
        self.load_time = load;
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, mutably (e.g. to run steps directly in tests).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// The tokenizer.
    pub fn codec(&self) -> &T {
        &self.codec
    }

    /// Token ids currently in the cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Tokens context shifts have dropped since the cache was last emptied (or cut back into its kept start).
    pub fn shifted_out_tokens(&self) -> usize {
        self.shifted_out.len()
    }

    /// Takes `tokens` as what the model's cache holds, after the cache was filled from outside (a session restored
    /// from disk), so that a prompt starting with them reuses it; `shifted_out` is what context shifts had dropped
    /// from that cache (so a prompt holding the whole history still reuses it). Refused unless the cache holds
    /// exactly that many positions and the kept start lies inside them.
    pub fn adopt_cached(
        &mut self,
        tokens: Vec<u32>,
        shifted_out: ShiftedOut,
    ) -> Result<(), EngineError> {
        if tokens.len() != self.model.cached_len() {
            return Err(EngineError::InvalidOption(format!(
                "{} token ids for a cache of {} positions",
                tokens.len(),
                self.model.cached_len()
            )));
        }
        if let Some((keep, _)) = shifted_out.dropped() {
            if keep > tokens.len() {
                return Err(EngineError::InvalidOption(format!(
                    "a kept start of {keep} tokens in a cache of {}",
                    tokens.len()
                )));
            }
        }
        self.cached = tokens;
        self.shifted_out = shifted_out;
        Ok(())
    }

    /// What context shifts dropped from the cache, for saving with it (see [`Generator::adopt_cached`]).
    pub fn shifted_out(&self) -> &ShiftedOut {
        &self.shifted_out
    }

    /// Forgets the cache.
    pub fn reset(&mut self) -> Result<(), EngineError> {
        self.model.truncate(0)?;
        self.cached.clear();
        self.shifted_out.clear();
        Ok(())
    }

    /// Token ids of a prompt as the model sees it: BOS first when `add_bos` (or, when `None`, the tokenizer) asks
    /// for it, the model has one and the text does not already start with it (a chat template that writes
    /// `bos_token` itself, as Llama 3's does).
    pub fn prompt_tokens(
        &self,
        prompt: &str,
        add_bos: Option<bool>,
    ) -> Result<Vec<u32>, EngineError> {
        let text = self.codec.encode(prompt)?;
        let add = add_bos.unwrap_or_else(|| self.codec.adds_bos());
        let bos = self.codec.bos_id().or(self.model.config().bos);
        let mut ids = Vec::with_capacity(text.len() + 1);
        if let Some(bos) = bos.filter(|&b| add && text.first() != Some(&b)) {
            ids.push(bos);
        }
        ids.extend(text);
        Ok(ids)
    }

    /// Generates a continuation of `prompt`, streaming text pieces to `on_text` as they become complete UTF-8.
    ///
    /// The cached tokens that start the prompt are reused (tokens a context shift dropped still count as seen);
    /// the rest is prefilled in chunks. When the context fills up, [`GenerateOptions::on_context_full`] decides.
    /// `max_tokens` = 0 is an [`EngineError::InvalidOption`]; a prompt whose new part does not fit beside what
    /// cannot be dropped (all of a fresh prompt) is [`EngineError::PromptTooLong`].
    pub fn generate(
        &mut self,
        prompt: &str,
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation, EngineError> {
        let ids = self.prompt_tokens(prompt, options.add_bos)?;
        self.generate_from_tokens(&ids, options, on_text)
    }

    /// As [`Generator::generate`], from token ids (checked against the vocabulary).
    pub fn generate_from_tokens(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation, EngineError> {
        if options.max_tokens == 0 {
            return Err(EngineError::InvalidOption(
                "max_tokens must be at least 1".into(),
            ));
        }
        if prompt.is_empty() {
            return Err(EngineError::InvalidOption(
                "the prompt has no tokens (and the model no BOS token)".into(),
            ));
        }
        let vocab = self.model.config().shape.vocab;
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange { id, vocab });
        }
        let mut sampler = Sampler::new(options.sampling.clone())?;
        let context = self.model.context_len();

        // Reuse what the cache has seen of the prompt; at least the last prompt token must run to produce logits.
        let mut reuse = self
            .shifted_out
            .reuse(&self.cached, prompt, prompt.len() - 1);
        if reuse.cached < self.cached.len() && !self.model.can_truncate(reuse.cached) {
            // The model cannot go back that far exactly (its ring caches lost the window): run it all again.
            self.model.truncate(0)?;
            self.cached.clear();
            self.shifted_out.clear();
            reuse = self
                .shifted_out
                .reuse(&self.cached, prompt, prompt.len() - 1);
        }
        let fresh = prompt.len() - reuse.prompt;
        // Shifts keep the start the earlier ones kept while their dropped run is still part of the history.
        let keep = options
            .on_context_full
            .keep(context, DEFAULT_KEEP)
            .map(|k| match self.shifted_out.keep() {
                Some(earlier) if reuse.keeps_gap => earlier,
                _ => k,
            });
        // What no shift may drop has to fit beside the new tokens.
        let fixed = keep.map_or(reuse.cached, |k| reuse.cached.min(k));
        if fixed + fresh > context {
            return Err(EngineError::PromptTooLong {
                prompt: fresh,
                cached: reuse.cached,
                context,
            });
        }
        if reuse.cached < self.cached.len() {
            self.model.truncate(reuse.cached)?;
            self.cached.truncate(reuse.cached);
        }
        if !reuse.keeps_gap {
            self.shifted_out.clear();
        }

        let mut eos: Vec<u32> = self.model.config().eos.clone();
        eos.extend(self.codec.end_ids());
        eos.extend(&options.extra_eos);
        // Plain greedy asks for the device's arg-max; anything else asks the model to sample (on the device where
        // it can) with a number from the sampler's stream, kept in `uniform` for a host fallback.
        let greedy = options.sampling.is_plain_greedy();
        let mut uniform = None;
        let mut timings = Timings {
            load: self.load_time,
            ..Timings::default()
        };

        // Prefill, in chunks a shift can always make room for.
        let started = Instant::now();
        let mut shifts = ContextShifts::default();
        let chunk = match options.prefill_chunk {
            0 => self.model.max_step_tokens(),
            n => n.min(self.model.max_step_tokens()),
        }
        .min(context - keep.unwrap_or(0))
        .max(1);
        let todo = &prompt[reuse.prompt..];
        let mut output = StepOutput::Nothing;
        for (i, part) in todo.chunks(chunk).enumerate() {
            let last = (i + 1) * chunk >= todo.len();
            if !self.make_room(part.len(), keep, &mut shifts)? {
                // The check above rules this out unless the model cannot shift.
                return Err(EngineError::PromptTooLong {
                    prompt: todo.len(),
                    cached: reuse.cached,
                    context,
                });
            }
            output = if last {
                self.choose_next(part, greedy, &mut sampler, &mut uniform)?
            } else {
                self.step(part, Want::Nothing)?
            };
        }
        timings.prefill_tokens = todo.len();

        // Decode.
        let context_ids = &prompt[prompt.len().saturating_sub(4)..];
        let mut stream = TextStream::new(context_ids.to_vec(), &options.stop_strings);
        let mut generated = Vec::new();
        let mut decode_started = None;
        let stop = loop {
            let token = match output {
                StepOutput::Token(t) => t,
                StepOutput::Logits(ref logits) => {
                    sampler.sample_at(logits, &self.cached, uniform.unwrap_or(0.0))?
                }
                StepOutput::Nothing => {
                    return Err(EngineError::InvalidOption(
                        "the model returned no output for the last token".into(),
                    ))
                }
            };
            if decode_started.is_none() {
                timings.prefill = started.elapsed();
                decode_started = Some(Instant::now());
            }
            generated.push(token);
            if eos.contains(&token) {
                break StopReason::Eos;
            }
            if let Some(s) = stream.push(token, &self.codec, &mut on_text)? {
                break StopReason::StopString(s);
            }
            if generated.len() >= options.max_tokens {
                break StopReason::MaxTokens;
            }
            if !self.make_room(1, keep, &mut shifts)? {
                break StopReason::ContextFull;
            }
            output = self.choose_next(&[token], greedy, &mut sampler, &mut uniform)?;
            timings.decode_tokens += 1;
        };
        stream.finish(&mut on_text);
        if let Some(t) = decode_started {
            timings.decode = t.elapsed();
        }
        timings.peak_device_bytes = self.model.peak_device_bytes();
        Ok(Generation {
            text: stream.visible_text(),
            tokens: generated,
            stop,
            shifts,
            timings,
        })
    }

    /// Makes room for `n` more tokens: nothing to do while they fit; otherwise a context shift keeping the first
    /// `keep` cached tokens (`None`: shifting is off). Returns whether they fit now.
    fn make_room(
        &mut self,
        n: usize,
        keep: Option<usize>,
        shifts: &mut ContextShifts,
    ) -> Result<bool, EngineError> {
        let len = self.cached.len();
        let context = self.model.context_len();
        if len + n <= context {
            return Ok(true);
        }
        let Some(keep) = keep else {
            return Ok(false);
        };
        let Some(drop) = drop_block(len, keep, len + n - context) else {
            return Ok(false);
        };
        match self.model.shift_context(keep, drop) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                // The model may have cut its cache back to the kept start: realign with what it holds.
                let held = self.model.cached_len();
                if held < self.cached.len() {
                    self.cached.truncate(held);
                    if held <= keep {
                        self.shifted_out.clear();
                    }
                }
                return Err(e);
            }
        }
        self.shifted_out.record(&mut self.cached, keep, drop);
        shifts.shifts += 1;
        shifts.dropped += drop;
        shifts.kept = keep;
        tracing::debug!(keep, drop, cached = self.cached.len(), "context shift");
        Ok(true)
    }

    /// Runs `tokens` and asks for the next token: the device's arg-max when `greedy`, else a draw at the next
    /// number of `sampler`'s stream (left in `uniform` in case the model hands the logits back).
    fn choose_next(
        &mut self,
        tokens: &[u32],
        greedy: bool,
        sampler: &mut Sampler,
        uniform: &mut Option<f32>,
    ) -> Result<StepOutput, EngineError> {
        if greedy {
            return self.step(tokens, Want::Argmax);
        }
        *uniform = sampler.next_uniform();
        let params = sampler.params();
        // The penalty window as the host sampler will see it: the cache plus this step's tokens.
        let from_cache = params.repeat_window.min(self.cached.len());
        let mut recent = self.cached[self.cached.len() - from_cache..].to_vec();
        recent.extend_from_slice(tokens);
        let penalised = params.penalised_tokens(&recent);
        let draw = DrawRequest {
            params,
            penalised: &penalised,
            uniform: *uniform,
        };
        let out = self.model.step_sampled(tokens, &draw);
        self.settle(tokens, out)
    }

    fn step(&mut self, tokens: &[u32], want: Want) -> Result<StepOutput, EngineError> {
        let out = self.model.step(tokens, want);
        self.settle(tokens, out)
    }

    /// Records a step's tokens as cached when it ran.
    fn settle(
        &mut self,
        tokens: &[u32],
        out: Result<StepOutput, EngineError>,
    ) -> Result<StepOutput, EngineError> {
        match out {
            Ok(o) => {
                self.cached.extend_from_slice(tokens);
                Ok(o)
            }
            Err(e) => {
                // The model may have cached part of the step; realign with what we know it holds.
                let _ = self.model.truncate(self.cached.len());
                Err(e)
            }
        }
    }
}

/// Turns generated tokens into text pieces: waits while the text ends in an incomplete UTF-8 sequence, holds back
/// text that could be the start of a stop string, and cuts at the first stop string. Special tokens' texts are
/// part of the text stop strings are matched against, but are never handed out.
#[derive(Debug)]
struct TextStream {
    /// Tokens before the pending ones, decoded with them so leading spaces come out right.
    context: Vec<u32>,
    /// Generated tokens not yet turned into text.
    pending: Vec<u32>,
    /// All text produced so far (including any held back, and special tokens' texts).
    text: String,
    /// Byte ranges of `text` written by special tokens, in order: seen by stop strings, never shown.
    hidden: Vec<Range<usize>>,
    /// Bytes of `text` already handed to the callback.
    emitted: usize,
    stops: Vec<String>,
}

impl TextStream {
    fn new(context: Vec<u32>, stops: &[String]) -> Self {
        Self {
            context,
            pending: Vec::new(),
            text: String::new(),
            hidden: Vec::new(),
            emitted: 0,
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
        }
    }

    /// Adds a token; returns the stop string if the text now contains one (the text is cut before it).
    fn push(
        &mut self,
        token: u32,
        codec: &impl TextCodec,
        on_text: &mut impl FnMut(&str),
    ) -> Result<Option<String>, EngineError> {
        if let Some(special) = codec.special_text(token) {
            self.absorb_pending(codec, true)?;
            let start = self.text.len();
            self.text.push_str(&special);
            self.hidden.push(start..self.text.len());
        } else {
            self.pending.push(token);
            if !self.absorb_pending(codec, false)? {
                return Ok(None);
            }
        }

        let search_from = self
            .emitted
            .saturating_sub(self.stops.iter().map(String::len).max().unwrap_or(0));
        let search_from = floor_char_boundary(&self.text, search_from);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|at| (search_from + at, s))
            })
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = hit {
            let stop = stop.clone();
            self.text.truncate(at);
            self.hidden.retain(|r| r.start < at);
            if let Some(last) = self.hidden.last_mut() {
                last.end = last.end.min(at);
            }
            self.emit_to(self.text.len(), on_text);
            return Ok(Some(stop));
        }
        // Hold back the longest tail that could still grow into a stop string.
        let held = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.text, s))
            .max()
            .unwrap_or(0);
        self.emit_to(self.text.len() - held, on_text);
        Ok(None)
    }

    /// Turns the pending tokens into text; returns `false` (and waits) while they end in an incomplete character,
    /// unless `force`.
    fn absorb_pending(&mut self, codec: &impl TextCodec, force: bool) -> Result<bool, EngineError> {
        if self.pending.is_empty() {
            return Ok(true);
        }
        let base = codec.decode(&self.context)?;
        let mut all = self.context.clone();
        all.extend(&self.pending);
        let full = codec.decode(&all)?;
        // An incomplete multi-byte character decodes as U+FFFD; wait for the bytes that complete it (bounded, so a
        // genuinely invalid sequence still comes out).
        if !force && full.ends_with('\u{FFFD}') && self.pending.len() < 8 {
            return Ok(false);
        }
        let new = match full.strip_prefix(base.as_str()) {
            Some(rest) => rest.to_string(),
            None => {
                let common = base
                    .char_indices()
                    .zip(full.chars())
                    .take_while(|((_, a), b)| a == b)
                    .count();
                full.chars().skip(common).collect()
            }
        };
        self.text.push_str(&new);
        let keep_from = all.len().saturating_sub(4);
        self.context = all.split_off(keep_from);
        self.pending.clear();
        Ok(true)
    }

    /// Hands out the shown part of `text[emitted..end]`.
    fn emit_to(&mut self, end: usize, on_text: &mut impl FnMut(&str)) {
        let end = floor_char_boundary(&self.text, end);
        if end > self.emitted {
            let piece = visible(&self.text, &self.hidden, self.emitted..end);
            if !piece.is_empty() {
                on_text(&piece);
            }
            self.emitted = end;
        }
    }

    /// Hands over whatever was held back (generation ended without completing a stop string).
    fn finish(&mut self, on_text: &mut impl FnMut(&str)) {
        self.emit_to(self.text.len(), on_text);
    }

    /// The text as shown: without special tokens' texts.
    fn visible_text(&self) -> String {
        visible(&self.text, &self.hidden, 0..self.text.len())
    }
}

/// `text[range]` without the parts inside `hidden` (sorted, disjoint ranges on character boundaries).
fn visible(text: &str, hidden: &[Range<usize>], range: Range<usize>) -> String {
    let mut out = String::new();
    let mut at = range.start;
    for h in hidden {
        if h.end <= at || h.start >= range.end {
            continue;
        }
        if h.start > at {
            out.push_str(&text[at..h.start]);
        }
        at = at.max(h.end);
    }
    if at < range.end {
        out.push_str(&text[at..range.end]);
    }
    out
}

/// Length of the longest proper suffix of `text` that is a prefix of `stop`.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop
                    .as_bytes()
                    .starts_with(&text.as_bytes()[text.len() - n..])
        })
        .unwrap_or(0)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl TextCodec for crate::tokenizer::Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        crate::tokenizer::Tokenizer::encode(self, text, false)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        crate::tokenizer::Tokenizer::decode(self, ids)
    }

    fn token_id(&self, token: &str) -> Option<u32> {
        self.token_to_id(token)
    }

    fn special_text(&self, id: u32) -> Option<String> {
        self.special_token_text(id)
    }

    fn adds_bos(&self) -> bool {
        self.special().add_bos
    }

    fn bos_id(&self) -> Option<u32> {
        self.special().bos
    }

    fn end_ids(&self) -> Vec<u32> {
        self.special().end_ids.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::ModelShape;

    /// The bundled tiny Llama's config (`fixtures/models/default`) with the vocabulary, context, bos (1) and eos
    /// (2) these tests script; the remaining fields, which generation never reads, are that model's.
    fn config(vocab: usize) -> ModelConfig {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/default");
        let base = crate::model::load_config(&dir).unwrap();
        ModelConfig {
            shape: ModelShape {
                vocab,
                max_ctx: 32,
                ..base.shape
            },
            bos: Some(1),
            eos: vec![2],
            ..base
        }
    }

    /// Predicts `script[len]` (the token at the next position) as a one-hot logit, recording every step it runs.
    struct Scripted {
        config: ModelConfig,
        script: Vec<u32>,
        cache: Vec<u32>,
        steps: Vec<usize>,
        max_step: usize,
        /// How far back a truncation stays exact (as ring caches allow); `None`: any.
        exact_back: Option<usize>,
    }

    impl LanguageModel for Scripted {
        fn config(&self) -> &ModelConfig {
            &self.config
        }
        fn context_len(&self) -> usize {
            self.config.shape.max_ctx
        }
        fn cached_len(&self) -> usize {
            self.cache.len()
        }
        fn max_step_tokens(&self) -> usize {
            self.max_step
        }
        fn truncate(&mut self, len: usize) -> Result<(), EngineError> {
            let keep = if self.can_truncate(len) { len } else { 0 };
            self.cache.truncate(keep);
            Ok(())
        }
        fn can_truncate(&self, len: usize) -> bool {
            self.exact_back
                .is_none_or(|b| self.cache.len().saturating_sub(len) <= b)
        }
        fn step(&mut self, tokens: &[u32], want: Want) -> Result<StepOutput, EngineError> {
            assert!(tokens.len() <= self.max_step);
            self.cache.extend_from_slice(tokens);
            self.steps.push(tokens.len());
            let next = self.script.get(self.cache.len()).copied().unwrap_or(2);
            let mut logits = vec![0.0; self.config.shape.vocab];
            logits[next as usize] = 10.0;
            Ok(match want {
                Want::Nothing => StepOutput::Nothing,
                Want::Argmax => StepOutput::Token(next),
                Want::Logits => StepOutput::Logits(logits),
            })
        }
    }

    /// Byte-level codec: id < 256 is that byte; 256 is the text "STOP"; 257 is the special token "<end>".
    #[derive(Default)]
    struct Bytes {
        /// The tokenizer says prompts get no BOS.
        no_bos: bool,
        /// End-of-turn ids the tokenizer names.
        end: Vec<u32>,
    }

    impl TextCodec for Bytes {
        fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
            let mut bytes = Vec::new();
            for &id in ids {
                match id {
                    0..=255 => bytes.push(id as u8),
                    256 => bytes.extend_from_slice(b"STOP"),
                    _ => {}
                }
            }
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        fn token_id(&self, _: &str) -> Option<u32> {
            None
        }
        fn special_text(&self, id: u32) -> Option<String> {
            (id == 257).then(|| "<end>".to_string())
        }
        fn adds_bos(&self) -> bool {
            !self.no_bos
        }
        fn end_ids(&self) -> Vec<u32> {
            self.end.clone()
        }
    }

    fn generator(prompt: &str, continuation: &[u32]) -> Generator<Scripted, Bytes> {
        generator_with(prompt, continuation, Bytes::default())
    }

    fn generator_with(
        prompt: &str,
        continuation: &[u32],
        codec: Bytes,
    ) -> Generator<Scripted, Bytes> {
        let mut script = vec![1];
        script.extend(prompt.bytes().map(u32::from));
        script.extend_from_slice(continuation);
        let model = Scripted {
            config: config(258),
            script,
            cache: Vec::new(),
            steps: Vec::new(),
            max_step: 4,
            exact_back: None,
        };
        Generator::new(model, codec).unwrap()
    }

    fn run(
        g: &mut Generator<Scripted, Bytes>,
        prompt: &str,
        opts: &GenerateOptions,
    ) -> (Generation, Vec<String>) {
        let mut pieces = Vec::new();
        let out = g
            .generate(prompt, opts, |s| pieces.push(s.to_string()))
            .unwrap();
        (out, pieces)
    }

    #[test]
    fn streams_multibyte_characters_whole() {
        let cont: Vec<u32> = "héllo €".bytes().map(u32::from).chain([2]).collect();
        let mut g = generator("ab", &cont);
        let (out, pieces) = run(&mut g, "ab", &GenerateOptions::default());
        assert_eq!(out.text, "héllo €");
        assert_eq!(out.stop, StopReason::Eos);
        assert_eq!(pieces.concat(), "héllo €");
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        assert!(
            pieces.contains(&"é".to_string()) && pieces.contains(&"€".to_string()),
            "{pieces:?}"
        );
    }

    #[test]
    fn stops_on_stop_string_without_emitting_it() {
        let cont: Vec<u32> = "one ST two"
            .bytes()
            .map(u32::from)
            .chain([256])
            .chain(b"x".map(u32::from))
            .collect();
        let mut g = generator("p", &cont);
        let opts = GenerateOptions {
            stop_strings: vec!["STOP".into()],
            ..GenerateOptions::default()
        };
        let (out, pieces) = run(&mut g, "p", &opts);
        assert_eq!(out.stop, StopReason::StopString("STOP".into()));
        assert_eq!(out.text, "one ST two");
        assert_eq!(pieces.concat(), "one ST two");
        // A held-back "ST" that never became "STOP" is flushed at the end.
        let (out, pieces) = run(
            &mut generator("p", b"xxST".map(u32::from).as_slice()),
            "p",
            &opts,
        );
        assert_eq!((out.text.as_str(), out.stop), ("xxST", StopReason::Eos));
        assert_eq!(pieces.concat(), "xxST");
    }

    #[test]
    fn max_tokens_and_zero() {
        let mut g = generator("q", &b"abcdef".map(u32::from));
        let (out, _) = run(
            &mut g,
            "q",
            &GenerateOptions {
                max_tokens: 3,
                ..GenerateOptions::default()
            },
        );
        assert_eq!(
            (out.text.as_str(), out.stop),
            ("abc", StopReason::MaxTokens)
        );
        let err = g.generate(
            "q",
            &GenerateOptions {
                max_tokens: 0,
                ..GenerateOptions::default()
            },
            |_| {},
        );
        assert!(matches!(err, Err(EngineError::InvalidOption(_))), "{err:?}");
    }

    #[test]
    fn chunked_prefill_and_prefix_reuse() {
        let mut g = generator("0123456789", &b"ab".map(u32::from));
        let opts = GenerateOptions {
            max_tokens: 2,
            prefill_chunk: 3,
            ..GenerateOptions::default()
        };
        run(&mut g, "0123456789", &opts);
        // BOS + 10 prompt tokens in chunks of 3, then one decode step.
        assert_eq!(g.model().steps, vec![3, 3, 3, 2, 1]);
        assert_eq!(g.cached_tokens().len(), 12);
        // The same prompt again runs only its last token.
        g.model_mut().steps.clear();
        let (out, _) = run(&mut g, "0123456789", &opts);
        assert_eq!(g.model().steps, vec![1, 1]);
        assert_eq!(out.timings.prefill_tokens, 1);
        assert_eq!(out.text, "ab");
    }

    /// A model that cannot go back far exactly (sliding-window ring caches) is cleared, and the whole prompt runs
    /// again rather than attending what the rings overwrote.
    #[test]
    fn a_truncation_the_model_cannot_keep_runs_the_prompt_again() {
        let mut g = generator("0123456789", &b"ab".map(u32::from));
        let opts = GenerateOptions {
            max_tokens: 2,
            prefill_chunk: 3,
            ..GenerateOptions::default()
        };
        run(&mut g, "0123456789", &opts);
        g.model_mut().exact_back = Some(1);
        g.model_mut().steps.clear();
        let (out, _) = run(&mut g, "0123", &opts);
        // BOS + 4 prompt tokens from the start in chunks of 3, then one decode step; an exact truncation would
        // have run only the last prompt token.
        assert_eq!(g.model().steps, vec![3, 2, 1]);
        assert_eq!(out.timings.prefill_tokens, 5);
        assert_eq!(&g.cached_tokens()[..5], &[1, 48, 49, 50, 51]);
        assert_eq!(g.model().cache, g.cached_tokens());
    }

    #[test]
    fn sampling_path_reads_logits() {
        let mut g = generator("z", &b"hi".map(u32::from));
        let sampling = SamplingParams {
            temperature: 0.7,
            top_k: 5,
            seed: 3,
            ..SamplingParams::greedy()
        };
        let (out, _) = run(
            &mut g,
            "z",
            &GenerateOptions {
                sampling,
                max_tokens: 2,
                ..GenerateOptions::default()
            },
        );
        assert_eq!(out.text, "hi");
    }

    #[test]
    fn bad_prompts_are_refused() {
        let mut g = generator("", &[]);
        let long = "x".repeat(40);
        assert!(matches!(
            g.generate(&long, &GenerateOptions::default(), |_| {}),
            Err(EngineError::PromptTooLong { context: 32, .. })
        ));
        assert!(matches!(
            g.generate_from_tokens(&[1, 999], &GenerateOptions::default(), |_| {}),
            Err(EngineError::TokenOutOfRange {
                id: 999,
                vocab: 258
            })
        ));
        let opts = GenerateOptions {
            add_bos: Some(false),
            ..GenerateOptions::default()
        };
        assert!(matches!(
            g.generate("", &opts, |_| {}),
            Err(EngineError::InvalidOption(_))
        ));
    }

    #[test]
    fn context_full_ends_generation() {
        let mut g = generator("", &[b'a'.into(); 64]);
        let prompt = "y".repeat(29);
        let (out, _) = run(
            &mut g,
            &prompt,
            &GenerateOptions {
                max_tokens: 100,
                ..GenerateOptions::default()
            },
        );
        assert_eq!(out.stop, StopReason::ContextFull);
        assert_eq!(g.cached_tokens().len(), 32);
    }

    /// `text` as byte ids followed by `extra`.
    fn ids(text: &str, extra: &[u32]) -> Vec<u32> {
        text.bytes()
            .map(u32::from)
            .chain(extra.iter().copied())
            .collect()
    }

    #[test]
    fn stop_strings_see_special_tokens_the_user_does_not() {
        // "<end>" comes as a special token: the stop string matches its text, nothing of it is shown.
        let opts = GenerateOptions {
            stop_strings: vec!["<end>".into()],
            ..GenerateOptions::default()
        };
        let mut g = generator("p", &ids("ab", &[257, b'x'.into()]));
        let (out, pieces) = run(&mut g, "p", &opts);
        assert_eq!(out.stop, StopReason::StopString("<end>".into()));
        assert_eq!((out.text.as_str(), pieces.concat().as_str()), ("ab", "ab"));
        // A stop string that starts in the text and ends in the special token's text.
        let opts = GenerateOptions {
            stop_strings: vec!["b<en".into()],
            ..GenerateOptions::default()
        };
        let (out, pieces) = run(&mut generator("p", &ids("ab", &[257])), "p", &opts);
        assert_eq!(out.stop, StopReason::StopString("b<en".into()));
        assert_eq!((out.text.as_str(), pieces.concat().as_str()), ("a", "a"));
        // Without a stop string a special token mid-reply is left out of the text.
        let (out, pieces) = run(
            &mut generator("p", &ids("ab", &[257, b'c'.into()])),
            "p",
            &GenerateOptions::default(),
        );
        assert_eq!(
            (out.text.as_str(), pieces.concat().as_str()),
            ("abc", "abc")
        );
    }

    #[test]
    fn the_tokenizers_end_of_turn_ids_stop_generation() {
        let codec = Bytes {
            end: vec![257],
            ..Bytes::default()
        };
        let mut g = generator_with("p", &ids("hi", &[257, b'x'.into()]), codec);
        let (out, pieces) = run(&mut g, "p", &GenerateOptions::default());
        assert_eq!(out.stop, StopReason::Eos);
        assert_eq!(out.tokens, ids("hi", &[257]));
        assert_eq!((out.text.as_str(), pieces.concat().as_str()), ("hi", "hi"));
        // Without the codec naming it, the same script runs on.
        let (out, _) = run(
            &mut generator("p", &ids("hi", &[257, b'x'.into()])),
            "p",
            &GenerateOptions::default(),
        );
        assert_eq!(out.text, "hix");
    }

    #[test]
    fn bos_follows_the_tokenizer_and_is_never_doubled() {
        let g = generator("", &[]);
        assert_eq!(g.prompt_tokens("hi", None).unwrap(), ids("\u{1}hi", &[]));
        // Text that already starts with BOS (a template writing `bos_token`) keeps its single BOS.
        assert_eq!(
            g.prompt_tokens("\u{1}hi", None).unwrap(),
            ids("\u{1}hi", &[])
        );
        assert_eq!(g.prompt_tokens("hi", Some(false)).unwrap(), ids("hi", &[]));
        let no_bos = Bytes {
            no_bos: true,
            ..Bytes::default()
        };
        let g = generator_with("", &[], no_bos);
        assert_eq!(g.prompt_tokens("hi", None).unwrap(), ids("hi", &[]));
        assert_eq!(
            g.prompt_tokens("hi", Some(true)).unwrap(),
            ids("\u{1}hi", &[])
        );
    }

    #[test]
    fn a_prompt_that_rewrites_the_cached_text_is_prefilled_from_where_it_differs() {
        // A chat template that does not extend its previous rendering: the second prompt shares only "abc".
        let mut g = generator("abcdef", &ids("XY", &[]));
        let opts = GenerateOptions {
            max_tokens: 2,
            ..GenerateOptions::default()
        };
        run(&mut g, "abcdef", &opts);
        g.model_mut().steps.clear();
        let (out, _) = run(&mut g, "abcxyz", &opts);
        // BOS + "abc" are kept; "xyz" is prefilled (one step of 3), then one decode step.
        assert_eq!(g.model().steps, vec![3, 1]);
        assert_eq!(out.timings.prefill_tokens, 3);
        assert_eq!(&g.cached_tokens()[..7], ids("\u{1}abcxyz", &[]).as_slice());
        assert_eq!(g.model().cache, g.cached_tokens());
    }

    /// Answers each step with a token that depends only on the last one (so a shift cannot change it), refuses
    /// steps past its context as the device model does, and shifts like it when allowed.
    struct Shifting {
        config: ModelConfig,
        cache: Vec<u32>,
        steps: Vec<usize>,
        shifts: Vec<(usize, usize)>,
        can_shift: bool,
    }

    impl Shifting {
        fn new(can_shift: bool) -> Self {
            Self {
                config: config(258),
                cache: Vec::new(),
                steps: Vec::new(),
                shifts: Vec::new(),
                can_shift,
            }
        }
    }

    /// The token `Shifting` predicts after `last`: never BOS or EOS.
    fn after(last: u32) -> u32 {
        3 + (last + 1) % 250
    }

    impl LanguageModel for Shifting {
        fn config(&self) -> &ModelConfig {
            &self.config
        }
        fn context_len(&self) -> usize {
            self.config.shape.max_ctx
        }
        fn cached_len(&self) -> usize {
            self.cache.len()
        }
        fn max_step_tokens(&self) -> usize {
            4
        }
        fn truncate(&mut self, len: usize) -> Result<(), EngineError> {
            self.cache.truncate(len);
            Ok(())
        }
        fn step(&mut self, tokens: &[u32], want: Want) -> Result<StepOutput, EngineError> {
            if self.cache.len() + tokens.len() > self.config.shape.max_ctx {
                return Err(EngineError::PromptTooLong {
                    prompt: tokens.len(),
                    cached: self.cache.len(),
                    context: self.config.shape.max_ctx,
                });
            }
            self.cache.extend_from_slice(tokens);
            self.steps.push(tokens.len());
            let next = after(*tokens.last().unwrap());
            let mut logits = vec![0.0; self.config.shape.vocab];
            logits[next as usize] = 10.0;
            Ok(match want {
                Want::Nothing => StepOutput::Nothing,
                Want::Argmax => StepOutput::Token(next),
                Want::Logits => StepOutput::Logits(logits),
            })
        }
        fn shift_context(&mut self, keep: usize, drop: usize) -> Result<bool, EngineError> {
            if !self.can_shift {
                return Ok(false);
            }
            assert!(drop > 0 && keep + drop <= self.cache.len(), "{keep} {drop}");
            self.cache.drain(keep..keep + drop);
            self.shifts.push((keep, drop));
            Ok(true)
        }
    }

    fn shifting(can_shift: bool) -> Generator<Shifting, Bytes> {
        Generator::new(Shifting::new(can_shift), Bytes::default()).unwrap()
    }

    fn long(max_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            max_tokens,
            ..GenerateOptions::default()
        }
    }

    #[test]
    fn a_full_context_shifts_and_generation_runs_on_without_prefilling_again() {
        let mut g = shifting(true);
        let out = g.generate("0123456789", &long(100), |_| {}).unwrap();
        assert_eq!((out.stop, out.tokens.len()), (StopReason::MaxTokens, 100));
        // BOS + 10 prompt tokens in steps of 4, then one token per step: nothing ran twice.
        let m = g.model();
        assert_eq!(m.steps[..3], [4, 4, 3]);
        assert!(m.steps[3..].iter().all(|&n| n == 1));
        assert_eq!(m.steps.len(), 3 + 99);
        assert_eq!(out.timings.prefill_tokens, 11);
        // Each shift keeps the first 4 (the default) and drops half of the 28 after them.
        assert!(m.shifts.len() >= 5, "{:?}", m.shifts);
        assert!(m.shifts.iter().all(|&s| s == (4, 14)), "{:?}", m.shifts);
        assert_eq!(
            out.shifts,
            ContextShifts {
                shifts: m.shifts.len(),
                dropped: 14 * m.shifts.len(),
                kept: 4
            }
        );
        assert_eq!(m.cache, g.cached_tokens());
        assert_eq!(g.cached_tokens()[..4], ids("\u{1}012", &[]));
        assert!(g.cached_tokens().len() <= 32);
        assert_eq!(g.shifted_out_tokens(), out.shifts.dropped);
        for pair in out.tokens.windows(2) {
            assert_eq!(pair[1], after(pair[0]));
        }
    }

    #[test]
    fn a_named_keep_is_kept() {
        let mut g = shifting(true);
        let opts = GenerateOptions {
            on_context_full: OnContextFull::Shift { keep: Some(8) },
            ..long(60)
        };
        let out = g.generate("0123456789", &opts, |_| {}).unwrap();
        assert_eq!(out.stop, StopReason::MaxTokens);
        assert!(g.model().shifts.iter().all(|&s| s == (8, 12)));
        assert_eq!(g.cached_tokens()[..8], ids("\u{1}0123456", &[]));
    }

    #[test]
    fn without_shifting_a_full_context_stops_generation() {
        let opts = GenerateOptions {
            on_context_full: OnContextFull::Stop,
            ..long(100)
        };
        let mut g = shifting(true);
        let out = g.generate("0123456789", &opts, |_| {}).unwrap();
        assert_eq!(out.stop, StopReason::ContextFull);
        assert_eq!((g.cached_tokens().len(), out.shifts.shifts), (32, 0));
        // A model that cannot shift stops there too, whatever the options say.
        let mut g = shifting(false);
        let out = g.generate("0123456789", &long(100), |_| {}).unwrap();
        assert_eq!(out.stop, StopReason::ContextFull);
        assert_eq!(g.cached_tokens().len(), 32);
    }

    #[test]
    fn a_prompt_that_repeats_shifted_out_tokens_runs_only_its_new_end() {
        let mut g = shifting(true);
        let first = g.generate("0123456789", &long(60), |_| {}).unwrap();
        assert!(g.shifted_out_tokens() > 0);
        // Everything so far (the last token was chosen but never run) and two new tokens: three tokens run.
        let mut seen = ids("\u{1}0123456789", &first.tokens);
        seen.extend(ids("xy", &[]));
        g.model_mut().steps.clear();
        let second = g.generate_from_tokens(&seen, &long(40), |_| {}).unwrap();
        assert_eq!(second.timings.prefill_tokens, 3);
        assert_eq!(g.model().steps[0], 3);
        assert_eq!(g.model().cache, g.cached_tokens());
        assert_eq!(second.tokens[0], after(u32::from(b'y')));

        // New tokens that cannot fit beside the kept start are refused, and the cache is left as it was.
        let before = g.cached_tokens().to_vec();
        let mut too_long = seen.clone();
        too_long.extend(second.tokens.iter().copied());
        too_long.extend(ids(&"z".repeat(29), &[]));
        assert!(matches!(
            g.generate_from_tokens(&too_long, &long(4), |_| {}),
            Err(EngineError::PromptTooLong { context: 32, .. })
        ));
        assert_eq!(g.cached_tokens(), before.as_slice());

        // A prompt that parts from the history inside the dropped run reuses only the kept start.
        let mut other = seen[..11].to_vec();
        other[6] = u32::from(b'!');
        let third = g.generate_from_tokens(&other, &long(4), |_| {}).unwrap();
        assert_eq!(third.timings.prefill_tokens, 11 - 4);
        assert_eq!(g.shifted_out_tokens(), 0);
        assert_eq!(g.cached_tokens()[..11], other[..]);
        assert_eq!(g.model().cache, g.cached_tokens());
    }

    #[test]
    fn suffix_prefix() {
        assert_eq!(longest_suffix_prefix("abcST", "STOP"), 2);
        assert_eq!(longest_suffix_prefix("abc", "STOP"), 0);
        assert_eq!(longest_suffix_prefix("é", "éx"), 2);
    }
}
