//! Memory-mapped safetensors files (one or many shards) with a tensor-name index, read with clear errors.

use crate::EngineError;
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// One mapped file and its parsed header.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    map: Mmap,
    header_len: usize,
    meta: Metadata,
}

/// A set of safetensors shards, searchable by tensor name.
#[derive(Debug)]
pub(crate) struct SafetensorsSet {
    shards: Vec<Shard>,
    by_name: HashMap<String, usize>,
    folder: PathBuf,
}

/// A raw tensor: where it came from, its dtype, shape and little-endian bytes (borrowed from the map).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawTensor<'a> {
    pub path: &'a Path,
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

fn map_file(path: &Path) -> Result<Mmap, EngineError> {
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    // SAFETY: the map is read-only; tlite never writes model files while they are loaded. A concurrent writer
    // truncating the file could fault, which is the documented memmap2 caveat every mmap-based loader accepts.
    unsafe { Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))
}

impl SafetensorsSet {
    /// Opens the shards of a model folder: those listed by `model.safetensors.index.json` when present,
    /// otherwise every `*.safetensors` file in the folder.
    pub fn open_folder(folder: &Path) -> Result<Self, EngineError> {
        let index_path = folder.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| EngineError::io(&index_path, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| EngineError::Json {
                    path: index_path.clone(),
                    source: e,
                })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    EngineError::Model(format!("{}: no `weight_map` object", index_path.display()))
                })?;
            let mut names: Vec<String> = Vec::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    EngineError::Model(format!(
                        "{}: weight_map entry `{tensor}` is not a string",
                        index_path.display()
                    ))
                })?;
                if file.contains('/') || file.contains('\\') || file.contains("..") {
                    return Err(EngineError::Model(format!(
                        "{}: shard name `{file}` must be a plain file name",
                        index_path.display()
                    )));
                }
                if !names.iter().any(|n| n == file) {
                    names.push(file.to_string());
                }
            }
            names.sort();
            names.into_iter().map(|n| folder.join(n)).collect()
        } else {
            let mut v: Vec<PathBuf> = std::fs::read_dir(folder)
                .map_err(|e| EngineError::io(folder, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && p.is_file())
                .collect();
            v.sort();
            v
        };
        if files.is_empty() {
            return Err(EngineError::Model(format!(
                "{}: no *.safetensors file",
                folder.display()
            )));
        }
        Self::open_files(folder, &files)
    }

    /// Opens the given shard files.
    pub fn open_files(folder: &Path, files: &[PathBuf]) -> Result<Self, EngineError> {
        let mut shards = Vec::with_capacity(files.len());
        let mut by_name = HashMap::new();
        for path in files {
            let map = map_file(path)?;
            let (header_len, meta) =
                SafeTensors::read_metadata(&map).map_err(|e| EngineError::Safetensors {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            for name in meta.tensors().keys() {
                if let Some(prev) = by_name.insert(name.clone(), shards.len()) {
                    let prev: &Shard = &shards[prev];
                    return Err(EngineError::Model(format!(
                        "tensor `{name}` appears in both {} and {}",
                        prev.path.display(),
                        path.display()
                    )));
                }
            }
            shards.push(Shard {
                path: path.clone(),
                map,
                header_len,
                meta,
            });
        }
        Ok(Self {
            shards,
            by_name,
            folder: folder.to_path_buf(),
        })
    }

    /// The tensor `name`, or a "missing tensor" error naming the folder.
    pub fn get(&self, name: &str) -> Result<RawTensor<'_>, EngineError> {
        let idx = *self
            .by_name
            .get(name)
            .ok_or_else(|| EngineError::MissingTensor {
                path: self.folder.clone(),
                tensor: name.to_string(),
            })?;
        let shard = &self.shards[idx];
        let info: &TensorInfo =
            shard
                .meta
                .info(name)
                .ok_or_else(|| EngineError::MissingTensor {
                    path: shard.path.clone(),
                    tensor: name.to_string(),
                })?;
        let start = 8 + shard.header_len + info.data_offsets.0;
        let end = 8 + shard.header_len + info.data_offsets.1;
        let bytes = shard
            .map
            .get(start..end)
            .ok_or_else(|| EngineError::Truncated {
                path: shard.path.clone(),
                message: format!("tensor `{name}` lies beyond the end of the file"),
            })?;
        Ok(RawTensor {
            path: &shard.path,
            name: self.key(name),
            dtype: info.dtype,
            shape: &info.shape,
            bytes,
        })
    }

    fn key(&self, name: &str) -> &str {
        self.by_name
            .get_key_value(name)
            .map_or("", |(k, _)| k.as_str())
    }
}

impl RawTensor<'_> {
    /// Fails unless the shape equals `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<(), EngineError> {
        if self.shape == expected {
            Ok(())
        } else {
            Err(EngineError::TensorShape {
                path: self.path.to_path_buf(),
                tensor: self.name.to_string(),
                expected: expected.to_vec(),
                actual: self.shape.to_vec(),
            })
        }
    }

    fn bad_dtype(&self) -> EngineError {
        EngineError::UnsupportedDtype {
            path: self.path.to_path_buf(),
            tensor: self.name.to_string(),
            dtype: format!("{:?}", self.dtype),
        }
    }

    /// The elements widened to f32 (f32, f16 and bf16 files).
    pub fn to_f32(self) -> Result<Vec<f32>, EngineError> {
        let b = self.bytes;
        Ok(match self.dtype {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => return Err(self.bad_dtype()),
        })
    }

    /// The elements as f16 (copied for f16 files; rounded for f32/bf16, failing on values beyond f16's range).
    pub fn to_f16(self) -> Result<Vec<f16>, EngineError> {
        if self.dtype == Dtype::F16 {
            return Ok(self
                .bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect());
        }
        let v = self.to_f32()?;
        f32_to_f16_checked(&v).map_err(|value| {
            EngineError::Model(format!(
                "{}: tensor `{}` holds {value}, beyond the f16 range; load it as f32",
                self.path.display(),
                self.name
            ))
        })
    }
}

/// Rounds to f16; `Err(value)` with the first finite value that overflows.
pub(crate) fn f32_to_f16_checked(v: &[f32]) -> Result<Vec<f16>, f32> {
    v.iter()
        .map(|&x| {
            let h = f16::from_f32(x);
            if h.is_infinite() && x.is_finite() {
                Err(x)
            } else {
                Ok(h)
            }
        })
        .collect()
}
