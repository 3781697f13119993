//! Turning a conversation into the prompt text a model was trained on.
//!
//! A model's own Jinja template (`tokenizer.chat_template` in GGUF, `chat_template` in `tokenizer_config.json`)
//! is rendered as Hugging Face renders it ([`JinjaTemplate`]); the built-in family formats ([`ChatTemplate`]) are only
//! the fallback, for models that ship no template or whose template fails on a conversation. [`ChatFormat`] puts
//! the two together.

mod builtin;
mod jinja;
mod strftime;

pub use builtin::ChatTemplate;
pub use jinja::JinjaTemplate;

use std::sync::atomic::{AtomicBool, Ordering};

/// One speaker of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions that frame the whole conversation.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role as chat templates name it (`messages[i].role`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// The model's template when it has a usable one, with the built-in family format behind it.
#[derive(Debug)]
pub struct ChatFormat {
    model: Option<JinjaTemplate>,
    family: ChatTemplate,
    /// A failing template is reported once per session, not on every turn.
    warned: AtomicBool,
}

impl ChatFormat {
    /// `model` is the model's own template (already compiled), `family` the built-in format to fall back on.
    pub fn new(model: Option<JinjaTemplate>, family: ChatTemplate) -> Self {
        Self {
            model,
            family,
            warned: AtomicBool::new(false),
        }
    }

    /// Compiles the model's template source; one that does not compile is reported (a warning naming the error)
    /// and the built-in format is used instead.
    pub fn from_source(
        source: Option<&str>,
        bos_token: &str,
        eos_token: &str,
        family: ChatTemplate,
    ) -> Self {
        let model = source.and_then(|src| match JinjaTemplate::new(src, bos_token, eos_token) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(
                    "the model's chat template does not compile ({e}); using the built-in {family:?} format"
                );
                None
            }
        });
        Self::new(model, family)
    }

    /// The built-in family format (fallback, and the source of stop strings and end-of-turn tokens).
    pub fn family(&self) -> ChatTemplate {
        self.family
    }

    /// Whether the model's own template is in use.
    pub fn uses_model_template(&self) -> bool {
        self.model.is_some()
    }

    /// Renders the conversation with the model's template, or with the built-in format when the template fails on
    /// it (a `raise_exception`, say: Gemma's template refuses a system message, which the built-in format folds
    /// into the first user turn).
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        if let Some(t) = &self.model {
            match t.render(messages, add_generation_prompt) {
                Ok(text) => return text,
                Err(e) => {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "the model's chat template failed ({e}); using the built-in {:?} format",
                            self.family
                        );
                    }
                }
            }
        }
        self.family.render(messages, add_generation_prompt)
    }
}
