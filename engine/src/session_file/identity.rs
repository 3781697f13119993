//! Which model a KV cache was computed by, as one SHA-256.
//!
//! The digest covers the model's configuration (architecture, shapes, rotary settings, special tokens), the
//! identity of its weights, its tokenizer, and how the weights were stored on the device (a cache computed with
//! f16 weights is not the cache of the same model in M0E4). The weights' identity depends on the source:
//!
//! - **tlite folder**: the per-tensor SHA-256s and the configuration digest it already stores (checked against
//!   the weights at every load), so nothing is read twice.
//! - **GGUF file**: its header and tensor infos (every byte before the tensor data: metadata, vocabulary, names,
//!   types, shapes, offsets), the file's length, and sampled ranges of the data.
//! - **Hugging Face folder**: `config.json`, the shard index if any, and per safetensors file its header (names,
//!   dtypes, shapes, offsets), its length and sampled ranges of the data.
//! - **llama2.c checkpoint**: its header, its length and sampled ranges.
//!
//! Sampling ([`SAMPLES`] ranges of [`SAMPLE_BYTES`], spread evenly over the data, or all of it when smaller) keeps
//! the cost to about a megabyte read per file, whatever the model's size. That is enough because this is not a
//! security boundary: it stops a cache computed by a different model from being used by mistake. A different model
//! (another checkpoint, fine-tune or quantisation) differs in its header, its length or in practically every
//! sampled range, since training and quantisation change weights everywhere; a file edited only between the sampled
//! ranges, keeping its length, is a deliberate act the digest does not try to catch.
//!
//! The tokenizer is covered by the source's header for GGUF (its vocabulary lives there); otherwise by the whole
//! tokenizer file and `tokenizer_config.json` beside it, if present. The device, the `--ctx` and the KV element
//! type are not part of the identity: the saved cache is packed the same way on every device and for every
//! context, and its element type and shape are checked on their own.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::model::{self, LoadOptions, ModelConfig, SourceKind};
use crate::EngineError;

/// Sampled ranges per weights file.
pub const SAMPLES: u64 = 16;
/// Bytes per sampled range.
pub const SAMPLE_BYTES: u64 = 64 << 10;

/// A SHA-256 naming the model a KV cache was computed by (see the module comment for what it covers).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelIdentity([u8; 32]);

impl std::fmt::Debug for ModelIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelIdentity({})", self.to_hex())
    }
}

/// How the weights were stored on the device, the part of the identity that is not in the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsIdentity {
    /// As stored in the source (a tlite folder is used as it is, whatever the load options).
    AsStored,
    /// Converted at load as these options say.
    Converted(LoadOptions),
}

impl WeightsIdentity {
    /// What `options` do to the model at `path` (nothing, for a tlite folder).
    pub fn for_source(path: &Path, options: LoadOptions) -> Result<Self, EngineError> {
        Ok(match model::source_kind(path)? {
            SourceKind::Tlite => Self::AsStored,
            _ => Self::Converted(options),
        })
    }
}

/// Feeds one named, length-prefixed field to the digest, so no two different field lists hash the same.
fn field(h: &mut Sha256, name: &str, bytes: &[u8]) {
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

impl ModelIdentity {
    /// The identity of the model at `path` (loaded with `config`, its tokenizer read from `tokenizer_source`, its
    /// weights stored as `weights` says). Reads about a megabyte per weights file, plus headers and tokenizer.
    pub fn of(
        path: &Path,
        config: &ModelConfig,
        tokenizer_source: &Path,
        weights: WeightsIdentity,
    ) -> Result<Self, EngineError> {
        let mut h = Sha256::new();
        field(&mut h, "tlite model identity", b"1");
        let config_json = serde_json::to_vec(config)
            .map_err(|e| EngineError::Model(format!("the model config does not serialise: {e}")))?;
        field(&mut h, "config", &config_json);
        field(&mut h, "weights storage", format!("{weights:?}").as_bytes());
        let kind = model::source_kind(path)?;
        field(&mut h, "source", format!("{kind:?}").as_bytes());
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e: std::io::Error| EngineError::io(p, e)
        };
        match kind {
            SourceKind::Gguf => {
                let head = match gguf_data_start(path).map_err(io(path))? {
                    Some(start) => start,
                    // Not what the scan expects (the loader accepted it): ask the full parser.
                    None => crate::gguf::GgufFile::open(path)?.header().data_start as u64,
                };
                hash_sampled(&mut h, path, head).map_err(io(path))?;
            }
            SourceKind::Llama2c => hash_sampled(&mut h, path, 4096).map_err(io(path))?,
            SourceKind::Tlite => {
                let cfg = path.join("config.json");
                let json: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(&cfg).map_err(io(&cfg))?,
                )
                .map_err(|source| EngineError::Json {
                    path: cfg.clone(),
                    source,
                })?;
                for key in ["tlite_format", "sha256"] {
                    // serde_json prints objects with sorted keys: the text is canonical.
                    let text = json.get(key).map(|v| v.to_string()).unwrap_or_default();
                    field(&mut h, key, text.as_bytes());
                }
            }
            SourceKind::HuggingFace => {
                for name in ["config.json", "model.safetensors.index.json"] {
                    let p = path.join(name);
                    if p.is_file() {
                        field(&mut h, name, &std::fs::read(&p).map_err(io(&p))?);
                    }
                }
                let mut shards: Vec<_> = std::fs::read_dir(path)
                    .map_err(io(path))?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                    .collect();
                shards.sort();
                for shard in &shards {
                    let name = shard.file_name().unwrap_or_default().to_string_lossy();
                    field(&mut h, "shard", name.as_bytes());
                    let head = safetensors_head(shard).map_err(io(shard))?;
                    hash_sampled(&mut h, shard, head).map_err(io(shard))?;
                }
            }
        }
        if kind != SourceKind::Gguf {
            field(
                &mut h,
                "tokenizer",
                &std::fs::read(tokenizer_source).map_err(io(tokenizer_source))?,
            );
            let settings = model::tokenizer_dir(path).join("tokenizer_config.json");
            if settings.is_file() {
                field(
                    &mut h,
                    "tokenizer settings",
                    &std::fs::read(&settings).map_err(io(&settings))?,
                );
            }
        }
        Ok(Self(h.finalize().into()))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }

    /// Parses [`ModelIdentity::to_hex`]'s text.
    pub fn from_hex(text: &str) -> Option<Self> {
        super::format::from_hex(text).map(Self)
    }

    /// An identity from raw digest bytes (tests, tools).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// Where a GGUF file's tensor data starts, found by walking its header without building it: the full parse
/// allocates every vocabulary string (tens of milliseconds for a large vocabulary, paid again when a chat
/// resumes), while this only follows lengths. `None` when the bytes are not a header this walk understands.
fn gguf_data_start(path: &Path) -> std::io::Result<Option<u64>> {
    let file = File::open(path)?;
    // SAFETY: read-only map of a model file; tlite never writes a model while it is loaded (the loader's own
    // caveat: a concurrent writer truncating the file could fault).
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    Ok(GgufWalk {
        bytes: &map,
        pos: 0,
    }
    .data_start())
}

/// A cursor over a GGUF header that only skips.
struct GgufWalk<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl GgufWalk<'_> {
    fn skip(&mut self, n: u64) -> Option<()> {
        let end = self.pos.checked_add(usize::try_from(n).ok()?)?;
        (end <= self.bytes.len()).then(|| self.pos = end)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.bytes.get(self.pos..self.pos.checked_add(4)?)?;
        self.pos += 4;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.bytes.get(self.pos..self.pos.checked_add(8)?)?;
        self.pos += 8;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// A string's bytes.
    fn string(&mut self) -> Option<&[u8]> {
        let len = self.u64()?;
        let start = self.pos;
        self.skip(len)?;
        self.bytes.get(start..self.pos)
    }

    /// Skips one value of GGUF type `ty`.
    fn value(&mut self, ty: u32, depth: usize) -> Option<()> {
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => self.string().map(|_| ()),
            9 if depth < 4 => {
                let elem = self.u32()?;
                let count = self.u64()?;
                let fixed = match elem {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                };
                match fixed {
                    Some(size) => self.skip(count.checked_mul(size)?),
                    None => (0..count).try_for_each(|_| self.value(elem, depth + 1)),
                }
            }
            _ => None,
        }
    }

    fn data_start(mut self) -> Option<u64> {
        if self.bytes.get(..4)? != b"GGUF" {
            return None;
        }
        self.pos = 4;
        if !matches!(self.u32()?, 2 | 3) {
            return None;
        }
        let tensors = self.u64()?;
        let kvs = self.u64()?;
        let mut alignment = 32u64;
        for _ in 0..kvs {
            let key = self.string()?;
            let is_alignment = key == b"general.alignment";
            let ty = self.u32()?;
            if is_alignment && ty == 4 {
                alignment = u64::from(self.u32()?);
            } else {
                self.value(ty, 0)?;
            }
        }
        for _ in 0..tensors {
            self.string()?;
            let dims = self.u32()?;
            self.skip(u64::from(dims).checked_mul(8)?)?;
            self.skip(4 + 8)?;
        }
        let pos = self.pos as u64;
        (alignment > 0).then(|| pos.div_ceil(alignment) * alignment)
    }
}

/// Bytes of a safetensors file's length prefix and JSON header (all of them when the prefix claims more).
fn safetensors_head(path: &Path) -> std::io::Result<u64> {
    let mut n = [0u8; 8];
    File::open(path)?.read_exact(&mut n)?;
    Ok(u64::from_le_bytes(n).saturating_add(8))
}

/// Feeds the file's length, its first `head` bytes whole and [`SAMPLES`] ranges of the rest to the digest (the
/// whole rest when it is no larger than the samples).
fn hash_sampled(h: &mut Sha256, path: &Path, head: u64) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let head = head.min(len);
    h.update(b"sampled file");
    h.update(len.to_le_bytes());
    h.update(head.to_le_bytes());
    copy_range(h, &mut file, 0, head)?;
    let data = len - head;
    if data <= SAMPLES * SAMPLE_BYTES {
        return copy_range(h, &mut file, head, data);
    }
    for i in 0..SAMPLES {
        let at = head + i * (data - SAMPLE_BYTES) / (SAMPLES - 1);
        h.update(at.to_le_bytes());
        copy_range(h, &mut file, at, SAMPLE_BYTES)?;
    }
    Ok(())
}

/// Feeds `len` bytes of `file` from `at` to the digest.
fn copy_range(h: &mut Sha256, file: &mut File, at: u64, len: u64) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(at))?;
    let copied = std::io::copy(&mut Read::by_ref(file).take(len), h)?;
    if copied != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the file shrank while it was read",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn digest_of(path: &Path, head: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        hash_sampled(&mut h, path, head).unwrap();
        h.finalize().into()
    }

    /// A byte changed in the head or inside a sampled range changes the digest; a small file is hashed whole.
    #[test]
    fn sampled_digest_sees_the_head_the_samples_and_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.bin");
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let head = 1000u64;
        let len = head + 40 * SAMPLE_BYTES + 123;
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        std::fs::write(&path, &bytes).unwrap();
        let base = digest_of(&path, head);
        let data = len - head;
        let sample_at = |i: u64| head + i * (data - SAMPLE_BYTES) / (SAMPLES - 1);
        let flips = [
            0,
            head - 1,
            sample_at(0),
            sample_at(7) + SAMPLE_BYTES / 2,
            len - 1,
        ];
        for at in flips {
            let mut changed = bytes.clone();
            changed[at as usize] ^= 0x10;
            std::fs::write(&path, &changed).unwrap();
            assert_ne!(digest_of(&path, head), base, "a flip at {at} went unseen");
        }
        // Between two samples nothing is read: by design (see the module comment).
        let mut changed = bytes.clone();
        changed[(sample_at(3) + SAMPLE_BYTES + 10) as usize] ^= 1;
        std::fs::write(&path, &changed).unwrap();
        assert_eq!(digest_of(&path, head), base);
        // One byte more.
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert_ne!(digest_of(&path, head), base);
        // A small file: every byte counts.
        let small: Vec<u8> = bytes[..(SAMPLE_BYTES * 3) as usize].to_vec();
        std::fs::write(&path, &small).unwrap();
        let small_base = digest_of(&path, 10);
        let mut changed = small.clone();
        changed[(SAMPLE_BYTES * 2 + 5) as usize] ^= 1;
        std::fs::write(&path, &changed).unwrap();
        assert_ne!(digest_of(&path, 10), small_base);
    }

    /// The header walk finds the data where the full parser does, on tiny GGUF files of every matrix type and on
    /// the default model when it has been fetched.
    #[test]
    fn gguf_walk_agrees_with_the_parser() {
        use fixtures::gguf_models::{write_gguf_model, MatrixType};
        use fixtures::reference_model::RefArch;
        use fixtures::tiny_models::TinySpec;
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, ty) in [
            MatrixType::F32,
            MatrixType::F16,
            MatrixType::Q8_0,
            MatrixType::Q4_1,
        ]
        .into_iter()
        .enumerate()
        {
            let arch = [
                RefArch::Llama,
                RefArch::Qwen2,
                RefArch::Gemma,
                RefArch::Mistral,
            ][i];
            let path = dir.path().join(format!("{i}.gguf"));
            write_gguf_model(&TinySpec::for_arch(arch), &path, ty).unwrap();
            paths.push(path);
        }
        if let Some(models) = crate::session::models_dir() {
            let default = models.join(crate::session::DEFAULT_MODEL_FILE);
            if default.is_file() {
                paths.push(default);
            }
        }
        for path in paths {
            let parsed = crate::gguf::GgufFile::open(&path)
                .unwrap()
                .header()
                .data_start as u64;
            assert_eq!(
                gguf_data_start(&path).unwrap(),
                Some(parsed),
                "{}",
                path.display()
            );
        }
        // Not a GGUF header, or one cut short: no answer rather than a wrong one.
        let path = dir.path().join("0.gguf");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len().min(200)]).unwrap();
        assert_eq!(gguf_data_start(&path).unwrap(), None);
        std::fs::write(&path, b"GGML....").unwrap();
        assert_eq!(gguf_data_start(&path).unwrap(), None);
    }

    #[test]
    fn hex_round_trip() {
        let id = ModelIdentity::from_bytes([0xab; 32]);
        assert_eq!(ModelIdentity::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ModelIdentity::from_hex("ab"), None);
        assert_eq!(ModelIdentity::from_hex(&"zz".repeat(32)), None);
    }
}
