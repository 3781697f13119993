//! A model's own Jinja chat template, rendered through minijinja the way Hugging Face's `apply_chat_template`
//! renders it: `trim_blocks` and `lstrip_blocks` on, Python string methods available (`.strip()`,
//! `.startswith()`, ...), `raise_exception` and `strftime_now` defined, and `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token` in the context.

use minijinja::{context, Environment, Error, ErrorKind, Value};

use super::ChatMessage;
use crate::EngineError;

/// Name the template is stored under inside its environment.
const NAME: &str = "chat_template";

/// Bound on template work, so a hostile template (a loop over `range(10**9)`) ends with an error instead of
/// hanging the chat. Real templates use a few thousand units per conversation.
const FUEL: u64 = 5_000_000;

/// A compiled chat template with the special-token texts it is rendered with.
#[derive(Debug)]
pub struct JinjaTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl JinjaTemplate {
    /// Compiles `source`. `bos_token` and `eos_token` are the texts of the model's BOS and EOS tokens (empty when it
    /// has none); templates that write `bos_token` produce it as text, which tokenises back to the BOS id.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_error("configuring the template engine", &e))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", super::strftime::strftime_now);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| template_error("compiling", &e))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Renders a conversation. With `add_generation_prompt` the text ends where the assistant's reply begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| template_error("loading", &e))?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(|e| template_error("rendering", &e))
    }
}

/// `raise_exception(msg)`: how Hugging Face templates refuse a conversation (Gemma: "System role not supported").
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// The error with minijinja's own description (kind, detail and template line), not its debug form.
fn template_error(what: &str, e: &Error) -> EngineError {
    let mut message = format!("chat template: {what} failed: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    EngineError::Tokenizer(message)
}
