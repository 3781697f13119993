//! Model configuration and weights: Hugging Face folders, llama2.c checkpoints, tlite quantised folders.
//!
//! [`load`] looks at the path: a file is a llama2.c checkpoint; a folder with `config.json` is a Hugging Face
//! folder, or a tlite quantised folder when its safetensors metadata says so (then nothing is re-processed).

mod config;
mod weights;

pub use config::{Activation, Architecture, ModelConfig, RopeScaling, RopeStyle};
pub use weights::{LayerWeights, LoadOptions, Model, ModelWeights, Tensor, TensorData, WeightFormat};

use crate::EngineError;
use std::path::Path;

/// Loads a model from a Hugging Face folder, a llama2.c `.bin` checkpoint or a tlite quantised folder.
pub fn load(path: &Path, _opts: &LoadOptions) -> Result<Model, EngineError> {
    Err(EngineError::Model(format!("{}: loading is not built yet", path.display())))
}
