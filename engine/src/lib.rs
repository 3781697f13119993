//! Thin engine composing `symshape`, `fp4`, `kvcache` and `clkernels` into Llama-family generation.
//!
//! `model` loads configs and weights (Hugging Face folders, llama2.c checkpoints, tlite's own quantised folders);
//! `tokenizer` wraps the tokenizers crate; `gpu` runs the forward pass with the OpenCL kernels; `sampling`,
//! `chat_template` and `generate` turn logits into streamed text (`context_shift` keeps it going past a full
//! context); `session` puts them together for the CLI (model lookup, load, chat turns that keep the KV cache);
//! `session_file` saves and restores a chat with its KV cache.

pub mod chat_template;
pub mod context_shift;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod gpu;
pub mod model;
pub mod sampling;
pub mod session;
pub mod session_file;
pub mod tokenizer;

pub use error::EngineError;
