//! The built-in conversation formats of the supported families: the fallback for a model that ships no Jinja
//! template, or whose template does not render, and the source of each family's stop strings.
//!
//! The family is recognised from the template text when present, else the tokenizer's special tokens, else the
//! architecture. The rendered text never includes the BOS token: the generator adds it, once, at the start.

use super::{ChatMessage, Role};
use crate::model::Architecture;

/// The conversation formats tlite knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// Llama 2 chat: `[INST] <<SYS>>…<</SYS>> … [/INST]`, turns closed by `</s><s>`.
    Llama2,
    /// Llama 3 instruct: `<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>`.
    Llama3,
    /// ChatML (Qwen2): `<|im_start|>role\n…<|im_end|>\n`.
    ChatMl,
    /// Gemma: `<start_of_turn>user\n…<end_of_turn>\n`, the model speaks as `model`, no system role.
    Gemma,
    /// Mistral instruct: `[INST] … [/INST]`, no system role (it is folded into the first user turn).
    Mistral,
    /// Phi-3 / Phi-3.5: `<|user|>\n…<|end|>\n`, the model speaks as `assistant`.
    Phi3,
    /// ChatGLM3 as llama.cpp writes it: `[gMASK]sop` once, then `<|role|>\n content` per turn, no end tag.
    ChatGlm3,
    /// No chat format (base models such as the TinyStories ones): turns are joined by blank lines.
    Plain,
}

impl ChatTemplate {
    /// Chooses the format: the `chat_template` of `tokenizer_config.json` decides when present; otherwise the
    /// tokenizer's special tokens (`has_token`), otherwise the architecture. A model with neither a template nor
    /// any chat special token and a Llama architecture is taken as a base model (`Plain`) unless `[INST]`-style
    /// chat is likely (a Llama 2 vocabulary has no dedicated tokens for it, so the template text is the only sign).
    pub fn detect(
        arch: Architecture,
        template_source: Option<&str>,
        has_token: impl Fn(&str) -> bool,
    ) -> Self {
        if let Some(src) = template_source {
            if src.contains("<|im_start|>") {
                return Self::ChatMl;
            }
            if src.contains("<|start_header_id|>") {
                return Self::Llama3;
            }
            if src.contains("<start_of_turn>") {
                return Self::Gemma;
            }
            if src.contains("<|user|>") && src.contains("<|end|>") {
                return Self::Phi3;
            }
            if src.contains("[gMASK]") || src.contains("<|observation|>") {
                return Self::ChatGlm3;
            }
            if src.contains("<<SYS>>") {
                return Self::Llama2;
            }
            if src.contains("[INST]") {
                return match arch {
                    Architecture::Llama => Self::Llama2,
                    _ => Self::Mistral,
                };
            }
        }
        if has_token("<|im_start|>") {
            return Self::ChatMl;
        }
        if has_token("<|start_header_id|>") {
            return Self::Llama3;
        }
        if has_token("<start_of_turn>") {
            return Self::Gemma;
        }
        if has_token("[INST]") {
            return Self::Mistral;
        }
        if has_token("<|user|>") && has_token("<|end|>") {
            return Self::Phi3;
        }
        if has_token("<|observation|>") {
            return Self::ChatGlm3;
        }
        match (arch, template_source.is_some()) {
            // SmolLM3's template is ChatML too.
            (Architecture::Qwen2 | Architecture::Qwen3 | Architecture::SmolLm3, _) => Self::ChatMl,
            (Architecture::Gemma | Architecture::Gemma2 | Architecture::Gemma3, _) => Self::Gemma,
            (Architecture::Mistral, _) => Self::Mistral,
            (Architecture::Phi3, _) => Self::Phi3,
            (Architecture::ChatGlm, _) => Self::ChatGlm3,
            (Architecture::Llama, true) => Self::Llama2,
            (Architecture::Llama, false) => Self::Plain,
        }
    }

    /// Renders a conversation. With `add_generation_prompt` the text ends where the assistant's reply begins.
    pub fn render(self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        match self {
            Self::Llama2 => render_inst(messages, add_generation_prompt, true),
            Self::Mistral => render_inst(messages, add_generation_prompt, false),
            Self::Llama3 => render_tagged(
                messages,
                add_generation_prompt,
                |role| {
                    format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n",
                        role_name(role, "assistant")
                    )
                },
                "<|eot_id|>",
                true,
            ),
            Self::ChatMl => render_tagged(
                messages,
                add_generation_prompt,
                |role| format!("<|im_start|>{}\n", role_name(role, "assistant")),
                "<|im_end|>\n",
                true,
            ),
            Self::Gemma => render_tagged(
                messages,
                add_generation_prompt,
                |role| format!("<start_of_turn>{}\n", role_name(role, "model")),
                "<end_of_turn>\n",
                false,
            ),
            Self::Phi3 => render_tagged(
                messages,
                add_generation_prompt,
                |role| format!("<|{}|>\n", role_name(role, "assistant")),
                "<|end|>\n",
                true,
            ),
            Self::ChatGlm3 => {
                let mut out = String::from("[gMASK]sop");
                for m in messages {
                    out.push_str(&format!(
                        "<|{}|>\n {}",
                        role_name(m.role, "assistant"),
                        m.content
                    ));
                }
                if add_generation_prompt {
                    out.push_str("<|assistant|>");
                }
                out
            }
            Self::Plain => {
                let mut out = messages
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n\n");
                if add_generation_prompt && !out.is_empty() {
                    out.push_str("\n\n");
                }
                out
            }
        }
    }

    /// Text that ends the assistant's turn, to stop on even when the model does not emit an EOS token for it.
    pub fn stop_strings(self) -> &'static [&'static str] {
        match self {
            Self::Llama2 | Self::Mistral => &["</s>", "[INST]"],
            Self::Llama3 => &["<|eot_id|>", "<|start_header_id|>"],
            Self::ChatMl => &["<|im_end|>", "<|im_start|>"],
            Self::Gemma => &["<end_of_turn>", "<start_of_turn>"],
            Self::Phi3 => &["<|end|>", "<|user|>"],
            Self::ChatGlm3 => &["<|user|>", "<|observation|>"],
            Self::Plain => &[],
        }
    }

    /// The special tokens whose ids also end a turn (added to the model's EOS ids when they exist).
    pub fn end_of_turn_tokens(self) -> &'static [&'static str] {
        match self {
            Self::Llama3 => &["<|eot_id|>"],
            Self::ChatMl => &["<|im_end|>"],
            Self::Gemma => &["<end_of_turn>"],
            Self::Phi3 => &["<|end|>"],
            Self::ChatGlm3 => &["<|user|>", "<|observation|>"],
            Self::Llama2 | Self::Mistral | Self::Plain => &[],
        }
    }
}

fn role_name(role: Role, assistant: &'static str) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => assistant,
    }
}

/// Formats with a header per turn; a format without a system role folds the system text into the first user turn.
fn render_tagged(
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    header: impl Fn(Role) -> String,
    end: &str,
    has_system_role: bool,
) -> String {
    let mut out = String::new();
    let mut pending_system: Option<&str> = None;
    for m in messages {
        if m.role == Role::System && !has_system_role {
            pending_system = Some(&m.content);
            continue;
        }
        out.push_str(&header(m.role));
        if m.role == Role::User {
            if let Some(sys) = pending_system.take() {
                out.push_str(sys);
                out.push_str("\n\n");
            }
        }
        out.push_str(&m.content);
        out.push_str(end);
    }
    if add_generation_prompt {
        out.push_str(&header(Role::Assistant));
    }
    out
}

/// `[INST]` formats: Llama 2 wraps the system text in `<<SYS>>`, Mistral prepends it to the first user turn.
fn render_inst(messages: &[ChatMessage], add_generation_prompt: bool, sys_tags: bool) -> String {
    let mut out = String::new();
    let mut system: Option<&str> = None;
    let mut open_turns = 0usize;
    for m in messages {
        match m.role {
            Role::System => system = Some(&m.content),
            Role::User => {
                if open_turns > 0 {
                    // Every turn after the first starts with a fresh BOS, as the reference template writes it.
                    out.push_str("<s>");
                }
                out.push_str("[INST] ");
                if let Some(sys) = system.take() {
                    if sys_tags {
                        out.push_str(&format!("<<SYS>>\n{sys}\n<</SYS>>\n\n"));
                    } else {
                        out.push_str(&format!("{sys}\n\n"));
                    }
                }
                out.push_str(m.content.trim());
                out.push_str(" [/INST]");
                open_turns += 1;
            }
            Role::Assistant => {
                out.push(' ');
                out.push_str(m.content.trim());
                out.push_str(" </s>");
            }
        }
    }
    // `[INST]` formats end the prompt with `[/INST]` whether or not a reply is requested.
    let _ = add_generation_prompt;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convo() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "Hi"),
            ChatMessage::new(Role::Assistant, "Hello!"),
            ChatMessage::new(Role::User, "Name a colour."),
        ]
    }

    #[test]
    fn llama2_matches_the_reference_template() {
        assert_eq!(
            ChatTemplate::Llama2.render(&convo(), true),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Name a colour. [/INST]"
        );
    }

    #[test]
    fn mistral_folds_the_system_prompt() {
        assert_eq!(
            ChatTemplate::Mistral.render(&convo(), true),
            "[INST] Be brief.\n\nHi [/INST] Hello! </s><s>[INST] Name a colour. [/INST]"
        );
    }

    #[test]
    fn llama3_headers() {
        assert_eq!(
            ChatTemplate::Llama3.render(&convo()[1..2], true),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn chatml_keeps_the_system_turn() {
        assert_eq!(
            ChatTemplate::ChatMl.render(&convo()[..2], true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            ChatTemplate::ChatMl
                .render(&convo()[..2], false)
                .matches("<|im_start|>")
                .count(),
            2
        );
    }

    #[test]
    fn gemma_speaks_as_model_and_has_no_system_role() {
        let text = ChatTemplate::Gemma.render(&convo(), true);
        assert_eq!(
            text,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn phi3_and_chatglm3_match_their_reference_templates() {
        // Phi-3's tokenizer_config.json template, and llama.cpp's LLM_CHAT_TEMPLATE_CHATGLM_3.
        assert_eq!(
            ChatTemplate::Phi3.render(&convo()[..2], true),
            "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
        );
        assert_eq!(
            ChatTemplate::ChatGlm3.render(&convo()[..3], false),
            "[gMASK]sop<|system|>\n Be brief.<|user|>\n Hi<|assistant|>\n Hello!"
        );
        let none = |_: &str| false;
        assert_eq!(
            ChatTemplate::detect(Architecture::Phi3, None, none),
            ChatTemplate::Phi3
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::ChatGlm, None, none),
            ChatTemplate::ChatGlm3
        );
    }

    #[test]
    fn a_conversation_extends_its_previous_rendering() {
        // The generator keeps the KV cache of the common prefix between turns, so each rendering must extend the last.
        for t in [
            ChatTemplate::Llama2,
            ChatTemplate::Llama3,
            ChatTemplate::ChatMl,
            ChatTemplate::Gemma,
            ChatTemplate::Phi3,
            ChatTemplate::ChatGlm3,
        ] {
            let mut history = convo()[..2].to_vec();
            let first = t.render(&history, true);
            history.push(ChatMessage::new(Role::Assistant, "Hello!"));
            history.push(ChatMessage::new(Role::User, "More"));
            let second = t.render(&history, true);
            assert!(
                second.starts_with(&first),
                "{t:?}: {first:?} is not a prefix of {second:?}"
            );
        }
    }

    #[test]
    fn detection() {
        let none = |_: &str| false;
        let jinja_chatml = "{% for m in messages %}<|im_start|>{{ m.role }}";
        assert_eq!(
            ChatTemplate::detect(Architecture::Llama, Some(jinja_chatml), none),
            ChatTemplate::ChatMl
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::Llama, Some("<<SYS>> [INST]"), none),
            ChatTemplate::Llama2
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::Mistral, Some("[INST]"), none),
            ChatTemplate::Mistral
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::Llama, None, |t| t == "<|start_header_id|>"),
            ChatTemplate::Llama3
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::Qwen2, None, none),
            ChatTemplate::ChatMl
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::SmolLm3, None, none),
            ChatTemplate::ChatMl
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::Gemma, None, none),
            ChatTemplate::Gemma
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::Mistral, None, none),
            ChatTemplate::Mistral
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::Llama, None, none),
            ChatTemplate::Plain
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::Llama, Some("{{ x }}"), none),
            ChatTemplate::Llama2
        );
    }

    #[test]
    fn plain_joins_turns() {
        let msgs = [ChatMessage::new(Role::User, "Once upon a time")];
        assert_eq!(
            ChatTemplate::Plain.render(&msgs, true),
            "Once upon a time\n\n"
        );
        assert!(ChatTemplate::Plain.stop_strings().is_empty());
    }
}
