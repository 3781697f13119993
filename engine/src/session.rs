//! Everything `tlite generate` and `tlite chat` need, composed: find the model, load and upload it, open its
//! tokenizer and chat template, and run turns that keep the KV cache. Saving a chat to disk and resuming it
//! (`Session::save_to`, `Session::resume_from`) live in [`crate::session_file`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::chat_template::{ChatFormat, ChatMessage, ChatTemplate, Role};
use crate::context_shift::{OnContextFull, DEFAULT_KEEP};
use crate::generate::{GenerateOptions, Generation, Generator, LanguageModel};
use crate::gpu::{GpuModel, GpuOptions};
use crate::model::{self, LoadOptions, WeightFormat};
use crate::session_file::{ModelIdentity, WeightsIdentity};
use crate::tokenizer::Tokenizer;
use crate::EngineError;

/// Where the bundled tiny model lives, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = "fixtures/models/default";

/// File name of the default model in tlite's model cache, as `scripts/fetch-default-model` writes it.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// tlite's model cache: `$TLITE_MODELS_DIR`, else `$XDG_CACHE_HOME/tlite/models`, else `~/.cache/tlite/models`
/// (the folder `scripts/fetch-default-model` fills).
pub fn models_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TLITE_MODELS_DIR") {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("tlite").join("models"))
}

/// The model used when none is named: `$TLITE_DEFAULT_MODEL`; else SmolLM2-135M-Instruct in the model cache, once
/// `scripts/fetch-default-model` (or `scripts/run-demo`) has put it there; else the bundled tiny model (random
/// weights: it shows the pipeline but prints gibberish), found under the current folder, beside the executable's
/// repository (`<repo>/target/<profile>/tlite`) or under the source tree this binary was built from. The error
/// lists every place searched.
pub fn default_model_path() -> Result<PathBuf, EngineError> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("TLITE_DEFAULT_MODEL") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(dir) = models_dir() {
        candidates.push(dir.join(DEFAULT_MODEL_FILE));
    }
    candidates.push(PathBuf::from(DEFAULT_MODEL_DIR));
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            candidates.push(up.join(DEFAULT_MODEL_DIR));
        }
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DEFAULT_MODEL_DIR),
    );
    if let Some(found) = candidates.iter().find(|p| p.exists()) {
        return Ok(found.clone());
    }
    let searched: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(EngineError::Model(format!(
        "no model given and no default model was found (searched: {}); run scripts/fetch-default-model or pass \
         --model <file or folder>",
        searched.join(", ")
    )))
}

/// How to load and place a model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionOptions {
    /// Storage of the linear layers after loading (a tlite quantised folder is used as stored).
    pub weights: WeightFormat,
    /// Keep the embedding and output head in f16 when quantising.
    pub keep_embeddings_f16: bool,
    /// Device, priority, context and step size.
    pub gpu: GpuOptions,
}

/// A loaded model on the device with its tokenizer and chat template.
#[derive(Debug)]
pub struct Session {
    /// The generation loop over the device model.
    pub generator: Generator<GpuModel, Tokenizer>,
    /// The built-in family format of the model: the fallback when its own template is missing or fails, and the
    /// source of stop strings.
    pub template: ChatTemplate,
    /// The model's own template with that fallback behind it.
    chat: ChatFormat,
    /// Model load and upload time.
    pub load_time: Duration,
    /// Where the model came from.
    pub model_path: PathBuf,
    history: Vec<ChatMessage>,
    pub(crate) forgotten: usize,
    /// How the weights were placed, for the model's identity.
    pub(crate) weights: WeightsIdentity,
    /// The model's identity, computed on first use (saving or resuming a session) and kept for this load.
    pub(crate) identity: std::sync::OnceLock<ModelIdentity>,
}

impl Session {
    /// Loads the model at `path` (folder or llama2.c `.bin`), its tokenizer, and places it on the device.
    pub fn open(path: &Path, options: &SessionOptions) -> Result<Self, EngineError> {
        let started = Instant::now();
        // Checked first: a missing model would otherwise surface as the tokenizer lookup's "no tokenizer found".
        std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
        let tokenizer = Tokenizer::for_model(path)?;
        let load = LoadOptions {
            quantize: options.weights,
            keep_embeddings_f16: options.keep_embeddings_f16,
        };
        let model = model::load(path, &load)?;
        let weights = WeightsIdentity::for_source(path, load)?;
        tokenizer.check_model_vocab(model.config.shape.vocab)?;
        let source = tokenizer.special().chat_template.clone();
        let template = ChatTemplate::detect(model.config.arch, source.as_deref(), |t| {
            tokenizer.token_to_id(t).is_some()
        });
        let token_text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.id_to_token(id).ok())
                .unwrap_or_default()
        };
        let bos_token = token_text(tokenizer.special().bos.or(model.config.bos));
        let eos_token = token_text(
            tokenizer
                .special()
                .end_ids
                .first()
                .or(model.config.eos.first())
                .copied(),
        );
        let chat = ChatFormat::from_source(source.as_deref(), &bos_token, &eos_token, template);
        let gpu_model = GpuModel::load(&model, &options.gpu)?;
        drop(model);
        let mut generator = Generator::new(gpu_model, tokenizer)?;
        let load_time = started.elapsed();
        generator.set_load_time(load_time);
        Ok(Self {
            generator,
            template,
            chat,
            load_time,
            model_path: path.to_path_buf(),
            history: Vec::new(),
            forgotten: 0,
            weights,
            identity: std::sync::OnceLock::new(),
        })
    }

    /// Whether turns are rendered with the model's own Jinja template (else the built-in format).
    pub fn uses_model_template(&self) -> bool {
        self.chat.uses_model_template()
    }

    /// The conversation as the model's template (or the fallback) renders it, ending where the reply begins.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> String {
        self.chat.render(messages, true)
    }

    /// Token ids of the chat template's end-of-turn markers that this vocabulary has.
    pub fn end_of_turn_ids(&self) -> Vec<u32> {
        self.template
            .end_of_turn_tokens()
            .iter()
            .filter_map(|t| self.generator.codec().token_to_id(t))
            .collect()
    }

    /// Sets the system prompt of the conversation (before its first turn).
    pub fn set_system(&mut self, system: &str) {
        self.history.retain(|m| m.role != Role::System);
        self.history
            .insert(0, ChatMessage::new(Role::System, system));
    }

    /// Forgets the conversation (and the cache).
    pub fn reset_chat(&mut self) -> Result<(), EngineError> {
        self.history.retain(|m| m.role == Role::System);
        self.forgotten = 0;
        self.generator.reset()
    }

    /// One chat turn: renders the whole conversation with the template (only the part not already in the KV cache
    /// runs), streams the reply, and records it.
    ///
    /// With a context shift (the default, [`GenerateOptions::on_context_full`]) a conversation longer than the
    /// context keeps going: shifts drop the oldest tokens after the system prompt (the tokens it renders to, unless
    /// a `keep` is named) and the generator still matches the re-rendered conversation against everything it has
    /// seen, so no turn reads the history again. Without one, or when the new turn cannot fit beside what is kept,
    /// the oldest exchanges are dropped and the rest prefilled again ([`Session::forgotten_messages`]).
    pub fn chat_turn(
        &mut self,
        user: &str,
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation, EngineError> {
        self.history.push(ChatMessage::new(Role::User, user));
        let mut opts = options.clone();
        opts.stop_strings
            .extend(self.template.stop_strings().iter().map(|s| s.to_string()));
        opts.extra_eos.extend(self.end_of_turn_ids());
        let shifted = match self.shifting_turn(&mut opts, &mut on_text) {
            Ok(attempt) => attempt,
            Err(e) => {
                self.history.pop();
                return Err(e);
            }
        };
        let result = match shifted {
            Some(result) => result,
            None => self.dropping_turn(&opts, on_text),
        };
        match result {
            Ok(out) => {
                self.history
                    .push(ChatMessage::new(Role::Assistant, out.text.trim()));
                Ok(out)
            }
            Err(e) => {
                self.history.pop();
                Err(e)
            }
        }
    }

    /// The turn over the whole conversation, shifting the context as needed; `None` (nothing run, nothing shown)
    /// when shifting is off or the new turn does not fit beside what a shift keeps.
    fn shifting_turn(
        &mut self,
        opts: &mut GenerateOptions,
        on_text: &mut impl FnMut(&str),
    ) -> Result<Option<Result<Generation, EngineError>>, EngineError> {
        let OnContextFull::Shift { keep } = opts.on_context_full else {
            return Ok(None);
        };
        let prompt = self.chat.render(&self.history, true);
        let tokens = self.generator.prompt_tokens(&prompt, opts.add_bos)?;
        let keep = match keep {
            Some(k) => k,
            None => self.system_prompt_tokens(&tokens, opts.add_bos)?,
        };
        opts.on_context_full = OnContextFull::Shift { keep: Some(keep) };
        match self.generator.generate_from_tokens(&tokens, opts, on_text) {
            Err(EngineError::PromptTooLong { .. }) => Ok(None),
            other => Ok(Some(other)),
        }
    }

    /// The turn over the newest exchanges that fit, the oldest dropped (`fit_history`).
    fn dropping_turn(
        &mut self,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation, EngineError> {
        let (forgotten, prompt) = self.fit_history(opts)?;
        self.forgotten += forgotten;
        if forgotten > 0 {
            tracing::info!(
                messages = forgotten,
                "chat context full: the oldest messages were dropped and the rest is prefilled again"
            );
        }
        self.generator.generate_from_tokens(&prompt, opts, on_text)
    }

    /// Tokens the conversation's system messages render to, where `prompt` (the whole conversation) starts with
    /// them: what a shift keeps in a chat. Without a system message, [`DEFAULT_KEEP`].
    fn system_prompt_tokens(
        &self,
        prompt: &[u32],
        add_bos: Option<bool>,
    ) -> Result<usize, EngineError> {
        let system: Vec<ChatMessage> = self
            .history
            .iter()
            .take_while(|m| m.role == Role::System)
            .cloned()
            .collect();
        if system.is_empty() {
            return Ok(DEFAULT_KEEP);
        }
        let text = self.chat.render(&system, false);
        let tokens = self.generator.prompt_tokens(&text, add_bos)?;
        let common = tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        Ok(common.max(DEFAULT_KEEP))
    }

    /// Replaces the conversation (a saved chat restored, say). The cache is kept: the next turn reuses whatever
    /// prefix of it the new conversation still starts with.
    pub fn set_history(&mut self, messages: Vec<ChatMessage>) {
        self.history = messages;
    }

    /// The conversation as the next turn will render it (after any messages dropped to fit the context).
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    /// Messages dropped from the start of the conversation so far to keep it inside the context.
    pub fn forgotten_messages(&self) -> usize {
        self.forgotten
    }

    /// Drops the oldest exchanges (never the system prompt, never the newest message) until the rendered
    /// conversation leaves room for the reply: `max_tokens` positions, at most half the context. Returns how many
    /// messages went and the token ids of the conversation as it now renders (the turn's prompt, so it is rendered
    /// and tokenised once per turn). The conversation then no longer starts like the cached tokens, so the next
    /// generation truncates the cache to the common prefix (the system prompt) and prefills the rest again: slower
    /// for one turn, but exact (the kept messages see no trace of the dropped ones, which a context shift's kept
    /// keys still carry). Used when shifting is off, or the new turn does not fit beside what a shift keeps.
    /// When even the newest message alone does not fit, nothing more is dropped and generation reports the prompt
    /// as too long.
    fn fit_history(&mut self, options: &GenerateOptions) -> Result<(usize, Vec<u32>), EngineError> {
        let context = self.generator.model().context_len();
        let reserve = options.max_tokens.clamp(1, (context / 2).max(1));
        let mut dropped = 0;
        loop {
            let prompt = self.chat.render(&self.history, true);
            let tokens = self.generator.prompt_tokens(&prompt, options.add_bos)?;
            if tokens.len() + reserve <= context {
                return Ok((dropped, tokens));
            }
            // Drop the first exchange: the first non-system message and any non-user messages after it, so the
            // conversation still opens with a user turn (some templates insist on alternation).
            let Some(first) = self.history.iter().position(|m| m.role != Role::System) else {
                return Ok((dropped, tokens));
            };
            let mut end = first + 1;
            while end < self.history.len() && self.history[end].role != Role::User {
                end += 1;
            }
            if end >= self.history.len() {
                // Only the newest message is left after the system prompt.
                return Ok((dropped, tokens));
            }
            self.history.drain(first..end);
            dropped += end - first;
        }
    }

    /// Positions in the KV cache (for showing how much context is left).
    pub fn cached_len(&self) -> usize {
        self.generator.model().cached_len()
    }
}
