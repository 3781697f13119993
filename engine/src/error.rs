//! The engine's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A model file or folder is malformed or inconsistent.
    #[error("model: {0}")]
    Model(String),
    /// `model_type` (or a checkpoint format) tlite does not run.
    #[error("unsupported architecture: {0}")]
    UnsupportedArchitecture(String),
    /// The configuration's numbers contradict each other.
    #[error("invalid model config: {0}")]
    InvalidConfig(String),
    /// Reading a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A safetensors file is malformed or truncated.
    #[error("{path}: malformed safetensors: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors crate said.
        message: String,
    },
    /// A GGUF file is malformed, or its metadata contradicts what tlite needs.
    #[error("{path}: GGUF: {message}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field, key or tensor.
        message: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{path}: missing tensor `{tensor}`")]
    MissingTensor {
        /// The file (or folder) searched.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
    },
    /// A tensor's shape disagrees with the config.
    #[error("{path}: tensor `{tensor}` has shape {actual:?} but the config needs {expected:?}")]
    TensorShape {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What the config implies.
        expected: Vec<usize>,
        /// What the file holds.
        actual: Vec<usize>,
    },
    /// A tensor's element type is not f32, f16 or bf16 (or the M0E4 parts' types).
    #[error("{path}: tensor `{tensor}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// A file ends before the data its header announces.
    #[error("{path}: file is truncated: {message}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was expected.
        message: String,
    },
    /// Packing or unpacking M0E4 weights failed.
    #[error(transparent)]
    Fp4(#[from] fp4::Fp4Error),
    /// The tokenizer could not be loaded or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A token id is not in the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// Sampling parameters or logits were refused.
    #[error(transparent)]
    Sampling(#[from] crate::sampling::SamplingError),
    /// The OpenCL runtime failed (no device, out of memory, build failure).
    #[error("OpenCL: {0}")]
    Cl(#[from] clkernels::runtime::ClError),
    /// A kernel launcher refused its arguments or failed.
    #[error("kernel: {0}")]
    Kernel(#[from] clkernels::kernels::KernelError),
    /// The KV cache refused a step (full, too large for the device) or its backend failed.
    #[error("KV cache: {0}")]
    KvCache(#[from] kvcache::KvError),
    /// The prompt (with what is already in the cache) does not fit the context.
    #[error("prompt of {prompt} tokens does not fit the context of {context} tokens (already cached: {cached})")]
    PromptTooLong {
        /// Tokens of the prompt that must be run.
        prompt: usize,
        /// Tokens kept in the cache before it.
        cached: usize,
        /// Context size.
        context: usize,
    },
    /// A generation option is out of range (e.g. `max_tokens` = 0).
    #[error("invalid generation option: {0}")]
    InvalidOption(String),
    /// The model does not fit the device's memory, its budget (`--mem-budget`) or its largest allocation; says
    /// what needs how much and what to change.
    #[error("device memory: {0}")]
    DeviceMemory(String),
    /// The GPU forward pass cannot run this model (a feature the kernels lack).
    #[error("unsupported by the GPU forward pass: {0}")]
    Unsupported(String),
}

impl EngineError {
    /// An [`EngineError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
