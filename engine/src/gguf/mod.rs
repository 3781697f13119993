//! GGUF, the file format of llama.cpp: a memory-mapped reader with a validated header.
//!
//! [`GgufFile::open`] maps the file and parses its header ([`header::parse`]); tensor data stays in the map and is
//! borrowed by [`GgufFile::data`]. Typed metadata getters return errors that name the key. What a model's tensors
//! mean (names, q/k layout, quantised blocks) is for [`crate::model`]; the vocabulary for [`crate::tokenizer`].

mod dequant;
mod ggml_type;
pub mod header;
mod kquants;
pub mod q4_m0e4;
mod value;

pub use dequant::{dequantize, is_supported};
pub use ggml_type::GgmlType;
pub use header::{Header, TensorInfo};
pub use value::MetaValue;

use crate::EngineError;
use memmap2::Mmap;
use std::path::{Path, PathBuf};

/// True when the file at `path` starts with the GGUF magic.
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

/// An open GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    header: Header,
}

impl GgufFile {
    /// Maps and validates `path`.
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        let file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        // SAFETY: the map is read-only; tlite never writes a model while it is loaded. A concurrent writer truncating
        // the file could fault, the documented memmap2 caveat every mmap-based loader accepts.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?;
        let header = header::parse(&map).map_err(|message| EngineError::Gguf {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            header,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The bytes of a tensor (checked to lie inside the file when the header was parsed).
    pub fn data(&self, tensor: &TensorInfo) -> &[u8] {
        &self.map[tensor.start..tensor.start + tensor.len]
    }

    /// The tensor `name`, or [`EngineError::MissingTensor`].
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo, EngineError> {
        self.header
            .tensor(name)
            .ok_or_else(|| EngineError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// An error about metadata `key`.
    pub fn meta_error(&self, key: &str, message: impl std::fmt::Display) -> EngineError {
        EngineError::Gguf {
            path: self.path.clone(),
            message: format!("metadata `{key}` {message}"),
        }
    }

    /// The raw value of metadata `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.header.get(key)
    }

    fn typed<T>(
        &self,
        key: &str,
        want: &str,
        convert: impl Fn(&MetaValue) -> Option<T>,
    ) -> Result<Option<T>, EngineError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => convert(v).map(Some).ok_or_else(|| {
                self.meta_error(key, format!("must be {want}, but it is {} ({v})", v.kind()))
            }),
        }
    }

    /// Metadata `key` as a non-negative integer that fits `usize`, if present.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, EngineError> {
        self.typed(key, "a non-negative integer", |v| {
            v.as_u64().and_then(|x| usize::try_from(x).ok())
        })
    }

    /// Metadata `key` as a non-negative integer; absent is an error.
    pub fn usize(&self, key: &str) -> Result<usize, EngineError> {
        self.opt_usize(key)?
            .ok_or_else(|| self.meta_error(key, "is missing"))
    }

    /// Metadata `key` as a token id (fits u32), if present.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, EngineError> {
        self.typed(key, "a token id", |v| {
            v.as_u64().and_then(|x| u32::try_from(x).ok())
        })
    }

    /// Metadata `key` as a float, if present.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, EngineError> {
        self.typed(key, "a number", |v| v.as_f64().map(|x| x as f32))
    }

    /// Metadata `key` as a boolean, if present.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, EngineError> {
        self.typed(key, "true or false", MetaValue::as_bool)
    }

    /// Metadata `key` as a string, if present.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, EngineError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Str(s)) => Ok(Some(s)),
            Some(v) => {
                Err(self.meta_error(key, format!("must be a string, but it is {}", v.kind())))
            }
        }
    }

    /// Metadata `key` as an array whose every element `convert` accepts, if present.
    pub fn opt_array<T>(
        &self,
        key: &str,
        want: &str,
        convert: impl Fn(&MetaValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>, EngineError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let items = v.as_array().ok_or_else(|| {
            self.meta_error(
                key,
                format!("must be an array of {want}, but it is {}", v.kind()),
            )
        })?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                convert(item).ok_or_else(|| {
                    self.meta_error(
                        key,
                        format!(
                            "element {i} must be {want}, but it is {} ({item})",
                            item.kind()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}
