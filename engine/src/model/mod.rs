//! Model configuration and weights: Hugging Face folders, GGUF files, llama2.c checkpoints, tlite quantised
//! folders.
//!
//! [`load`] looks at the path: a file starting with the GGUF magic is a GGUF model (`gguf.rs` says which
//! conventions of llama.cpp's converter it follows); any other file is a llama2.c checkpoint; a folder whose
//! `config.json` carries `tlite_format` is a tlite quantised folder (read with no conversion at all); any other
//! folder with a `config.json` is a Hugging Face folder. Every tensor is checked against the config (present,
//! shape, dtype) and errors name the file and the tensor.
//!
//! Rotary convention: Hugging Face checkpoints store q/k for the half-split `rotate_half` form and llama2.c ones for
//! the interleaved form; the weights are never permuted, [`ModelConfig::rope_style`] records which one applies.

mod config;
mod convert;
mod finite;
mod gguf;
mod hf;
mod hf_rope_params;
mod llama2c;
mod progress;
mod st_files;
pub mod tlite_format;
mod weights;

pub use config::{
    Activation, Architecture, ModelConfig, ModelShape, RopeScaling, RopeStyle, SlidingWindow,
};
pub use llama2c::Llama2cHeader;
pub use weights::{
    LayerWeights, LoadOptions, Model, ModelWeights, Tensor, TensorData, WeightFormat,
};

use crate::EngineError;
use std::path::Path;

/// The kinds of model source [`load`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A Hugging Face folder (`config.json` + safetensors).
    HuggingFace,
    /// A llama2.c checkpoint file.
    Llama2c,
    /// A folder written by `tlite quantize`.
    Tlite,
    /// A GGUF file (llama.cpp's format), recognised by its magic.
    Gguf,
}

/// Tells what `path` holds, without loading weights.
pub fn source_kind(path: &Path) -> Result<SourceKind, EngineError> {
    if path.is_file() {
        if crate::gguf::is_gguf(path) {
            return Ok(SourceKind::Gguf);
        }
        if path
            .extension()
            .is_some_and(|e| e == "safetensors" || e == "json")
        {
            return Err(EngineError::Model(format!(
                "{}: pass the model folder (config.json + safetensors), not one of its files",
                path.display()
            )));
        }
        return Ok(SourceKind::Llama2c);
    }
    if !path.is_dir() {
        return Err(EngineError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    if !path.join("config.json").is_file() {
        return Err(EngineError::Model(format!(
            "{}: a model folder needs a config.json (or pass a llama2.c .bin file)",
            path.display()
        )));
    }
    Ok(if tlite_format::is_tlite_folder(path) {
        SourceKind::Tlite
    } else {
        SourceKind::HuggingFace
    })
}

/// Loads a model from a Hugging Face folder, a GGUF file, a llama2.c `.bin` checkpoint or a tlite quantised folder.
///
/// A tlite folder is returned exactly as stored; `opts` applies to the others.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model, EngineError> {
    load_with_progress(path, opts, &|_, _| {})
}

/// [`load`], calling `progress(done, total)` as layers complete (for progress bars).
pub fn load_with_progress(
    path: &Path,
    opts: &LoadOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Model, EngineError> {
    let model = match source_kind(path)? {
        SourceKind::Llama2c => llama2c::load_file(path, opts, progress),
        SourceKind::Tlite => tlite_format::load_folder(path, progress),
        SourceKind::HuggingFace => hf::load_folder(path, opts, progress),
        SourceKind::Gguf => gguf::load_file(path, opts, progress),
    }?;
    finite::check_model(&model, path)?;
    Ok(model)
}

/// Parses only the configuration of a model source (cheap: no weight is read).
pub fn load_config(path: &Path) -> Result<ModelConfig, EngineError> {
    match source_kind(path)? {
        SourceKind::Llama2c => {
            let mut head = [0u8; 28];
            let mut f = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
            let n = llama2c::read_up_to(&mut f, &mut head).map_err(|e| EngineError::io(path, e))?;
            Llama2cHeader::parse(path, &head[..n])?.config(path)
        }
        SourceKind::Tlite => Ok(tlite_format::load_folder_config(path)?),
        SourceKind::HuggingFace => hf::parse_config(path),
        SourceKind::Gguf => gguf::load_config(path),
    }
}

/// The folder holding a model's tokenizer files: the folder itself, or the folder of a llama2.c checkpoint.
pub fn tokenizer_dir(path: &Path) -> &Path {
    if path.is_file() {
        path.parent().unwrap_or(Path::new("."))
    } else {
        path
    }
}
