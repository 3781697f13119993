//! Encoding and decoding the session file laid out in the module comment of [`super`].

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use kvcache::KvDtype;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    atomic, ModelIdentity, SessionFileError, FORMAT_VERSION, MAGIC, OLDEST_READABLE_VERSION,
    RING_FREE_VERSION,
};
use crate::chat_template::{ChatMessage, Role};
use crate::context_shift::ShiftedOut;
use crate::gpu::KvImageShape;

/// Magic, version and header length.
const PREFIX_LEN: usize = 8 + 4 + 8;
/// A SHA-256.
const DIGEST_LEN: usize = 32;
/// Keys first, then values, in every layer.
const PARTS: [&str; 2] = ["keys", "values"];

/// What is saved: borrowed from a live session.
#[derive(Debug, Clone, Copy)]
pub struct SessionContents<'a> {
    /// The model that computed the cache.
    pub identity: ModelIdentity,
    /// The model's file name, for messages only.
    pub model_name: &'a str,
    /// Shape of the packed cache that follows.
    pub kv: KvImageShape,
    /// Token ids in the cache, one per position.
    pub tokens: &'a [u32],
    /// The conversation.
    pub messages: &'a [ChatMessage],
    /// Messages dropped so far to fit the context.
    pub forgotten: usize,
    /// What context shifts dropped from the cache.
    pub shifted_out: &'a ShiftedOut,
}

/// A session file's header, its checksum verified and its fields checked against each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHeader {
    /// The model that computed the cache.
    pub identity: ModelIdentity,
    /// The model's file name when saved (for messages only).
    pub model_name: String,
    /// Shape of the saved cache.
    pub kv: KvImageShape,
    /// Token ids in the cache, one per position.
    pub tokens: Vec<u32>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Messages dropped so far to fit the context.
    pub forgotten: usize,
    /// What context shifts dropped from the cache (empty in files of format version 1).
    pub shifted_out: ShiftedOut,
    /// SHA-256 of each block.
    blocks: Vec<[u8; DIGEST_LEN]>,
}

/// The header as JSON. Unknown fields are refused: a change of the format is a new version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderJson {
    model: String,
    model_name: String,
    kv_dtype: String,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: usize,
    tokens: Vec<u32>,
    messages: Vec<MessageJson>,
    forgotten: usize,
    /// Absent in version 1 files and when no shift dropped anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shifted_out: Option<ShiftedOutJson>,
    /// Version 3: the first position the sliding-window layers' ring caches held (absent, 0: all positions).
    #[serde(default, skip_serializing_if = "is_zero")]
    local_from: usize,
    blocks: Vec<String>,
}

fn is_zero(x: &usize) -> bool {
    *x == 0
}

/// The kept start of the cache and the tokens dropped after it by context shifts, oldest first.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShiftedOutJson {
    keep: usize,
    tokens: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageJson {
    role: String,
    content: String,
}

fn sha256(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from lower-case or upper-case hex, or `None`.
pub(super) fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn dtype_name(dtype: KvDtype) -> &'static str {
    match dtype {
        KvDtype::F16 => "f16",
        KvDtype::F32 => "f32",
    }
}

/// Bytes of one block and of all blocks, checked (the shape may come from a file).
fn block_sizes(kv: &KvImageShape) -> Option<(usize, usize)> {
    Some((
        usize::try_from(kv.part_bytes()?).ok()?,
        usize::try_from(kv.total_bytes()?).ok()?,
    ))
}

/// The digest of every block of `blocks`, `count` blocks of `part` bytes each.
fn block_digests(blocks: &[u8], part: usize, count: usize) -> Vec<[u8; DIGEST_LEN]> {
    if part == 0 {
        return vec![sha256(&[]); count];
    }
    blocks.par_chunks(part).map(sha256).collect()
}

/// Writes `contents` and the packed cache `kv` (as [`crate::gpu::GpuModel::read_kv`] gives it) to `path`,
/// atomically. Returns the file's size.
pub fn write_session(
    path: &Path,
    contents: &SessionContents<'_>,
    kv: &[u8],
) -> Result<u64, SessionFileError> {
    let shape = &contents.kv;
    let bad = |message: String| SessionFileError::BadHeader {
        path: path.to_path_buf(),
        message,
    };
    let (part, total) = block_sizes(shape).ok_or_else(|| bad("the cache is too large".into()))?;
    if kv.len() != total {
        return Err(bad(format!(
            "the cache has {} bytes, but {} positions take {total}",
            kv.len(),
            shape.positions
        )));
    }
    if contents.tokens.len() != shape.positions {
        return Err(bad(format!(
            "{} token ids for a cache of {} positions",
            contents.tokens.len(),
            shape.positions
        )));
    }
    let header = HeaderJson {
        model: contents.identity.to_hex(),
        model_name: contents.model_name.to_string(),
        kv_dtype: dtype_name(shape.dtype).into(),
        layers: shape.layers,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
        positions: shape.positions,
        tokens: contents.tokens.to_vec(),
        messages: contents
            .messages
            .iter()
            .map(|m| MessageJson {
                role: m.role.as_str().into(),
                content: m.content.clone(),
            })
            .collect(),
        forgotten: contents.forgotten,
        shifted_out: contents
            .shifted_out
            .dropped()
            .map(|(keep, tokens)| ShiftedOutJson {
                keep,
                tokens: tokens.to_vec(),
            }),
        local_from: shape.local_from,
        blocks: block_digests(kv, part, 2 * shape.layers)
            .iter()
            .map(|d| hex(d))
            .collect(),
    };
    let json = serde_json::to_vec(&header).map_err(|e| bad(e.to_string()))?;
    let mut head = Vec::with_capacity(PREFIX_LEN + json.len() + DIGEST_LEN);
    head.extend_from_slice(&MAGIC);
    // Version 3 only where it says something older readers cannot know (ring caches' missing positions).
    let version = if shape.local_from > 0 {
        FORMAT_VERSION
    } else {
        RING_FREE_VERSION
    };
    head.extend_from_slice(&version.to_le_bytes());
    head.extend_from_slice(&(json.len() as u64).to_le_bytes());
    head.extend_from_slice(&json);
    let digest = sha256(&head);
    head.extend_from_slice(&digest);
    atomic::write_file(path, &[&head, kv])?;
    Ok((head.len() + kv.len()) as u64)
}

/// Where the header ends, from the prefix: checks the magic, the version and that the announced header (and its
/// digest) lies inside a file of `file_len` bytes. `prefix` may be shorter than [`PREFIX_LEN`] for a short file.
fn parse_prefix(path: &Path, prefix: &[u8], file_len: u64) -> Result<usize, SessionFileError> {
    let magic_seen = &prefix[..prefix.len().min(MAGIC.len())];
    if magic_seen != &MAGIC[..magic_seen.len()] || prefix.is_empty() {
        return Err(SessionFileError::NotASessionFile {
            path: path.to_path_buf(),
        });
    }
    let truncated = |expected: u64| SessionFileError::Truncated {
        path: path.to_path_buf(),
        expected,
        actual: file_len,
    };
    if prefix.len() < PREFIX_LEN {
        return Err(truncated(PREFIX_LEN as u64));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&prefix[8..12]);
    let version = u32::from_le_bytes(version);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(SessionFileError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&prefix[12..20]);
    let header_len = u64::from_le_bytes(len);
    let header_end = header_len
        .checked_add((PREFIX_LEN + DIGEST_LEN) as u64)
        .ok_or_else(|| truncated(u64::MAX))?;
    if header_end > file_len {
        return Err(truncated(header_end));
    }
    // At most the file's size, which was read or is about to be.
    usize::try_from(header_len).map_err(|_| truncated(header_end))
}

/// Checks the header's digest and parses it; `head` is the prefix, the header and its digest.
fn parse_header(path: &Path, head: &[u8]) -> Result<SessionHeader, SessionFileError> {
    let (covered, digest) = head.split_at(head.len() - DIGEST_LEN);
    if sha256(covered) != digest {
        return Err(SessionFileError::HeaderDamaged {
            path: path.to_path_buf(),
        });
    }
    let bad = |message: String| SessionFileError::BadHeader {
        path: path.to_path_buf(),
        message,
    };
    let json: HeaderJson =
        serde_json::from_slice(&covered[PREFIX_LEN..]).map_err(|e| bad(e.to_string()))?;
    let identity = ModelIdentity::from_hex(&json.model)
        .ok_or_else(|| bad(format!("`model` is not a SHA-256 in hex: {:?}", json.model)))?;
    let dtype = match json.kv_dtype.as_str() {
        "f16" => KvDtype::F16,
        "f32" => KvDtype::F32,
        other => return Err(bad(format!("unknown `kv_dtype` {other:?}"))),
    };
    if json.layers == 0 || json.kv_heads == 0 || json.head_dim == 0 {
        return Err(bad(format!(
            "a cache needs at least one layer, head and dimension (got {} x {} x {})",
            json.layers, json.kv_heads, json.head_dim
        )));
    }
    if json.tokens.len() != json.positions {
        return Err(bad(format!(
            "{} token ids for a cache of {} positions",
            json.tokens.len(),
            json.positions
        )));
    }
    let shifted_out = match json.shifted_out {
        None => ShiftedOut::default(),
        Some(s) if s.keep > json.tokens.len() => {
            return Err(bad(format!(
                "a kept start of {} tokens in a cache of {} positions",
                s.keep,
                json.tokens.len()
            )))
        }
        Some(s) => ShiftedOut::from_dropped(s.keep, s.tokens),
    };
    if json.layers.checked_mul(2) != Some(json.blocks.len()) {
        return Err(bad(format!(
            "{} block checksums for {} layers",
            json.blocks.len(),
            json.layers
        )));
    }
    let blocks = json
        .blocks
        .iter()
        .map(|b| from_hex::<DIGEST_LEN>(b))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("a block checksum is not a SHA-256 in hex".into()))?;
    let messages = json
        .messages
        .into_iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => return Err(bad(format!("unknown message role {other:?}"))),
            };
            Ok(ChatMessage::new(role, m.content))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let kv = KvImageShape {
        layers: json.layers,
        kv_heads: json.kv_heads,
        head_dim: json.head_dim,
        dtype,
        positions: json.positions,
        local_from: json.local_from,
    };
    if json.local_from > json.positions {
        return Err(bad(format!(
            "ring caches held from position {} in a cache of {} positions",
            json.local_from, json.positions
        )));
    }
    block_sizes(&kv).ok_or_else(|| bad("the cache's size overflows".into()))?;
    Ok(SessionHeader {
        identity,
        model_name: json.model_name,
        kv,
        tokens: json.tokens,
        messages,
        forgotten: json.forgotten,
        shifted_out,
        blocks,
    })
}

impl SessionHeader {
    /// Bytes the whole file must have: the header part `head_len` plus every block.
    fn file_len(&self, head_len: usize) -> Option<u64> {
        self.kv.total_bytes()?.checked_add(head_len as u64)
    }

    /// Checks every block of `blocks` against its digest (in parallel); the error names the first damaged one.
    fn verify_blocks(&self, path: &Path, blocks: &[u8]) -> Result<(), SessionFileError> {
        let (part, _) = block_sizes(&self.kv).ok_or_else(|| SessionFileError::BadHeader {
            path: path.to_path_buf(),
            message: "the cache's size overflows".into(),
        })?;
        let have = block_digests(blocks, part, self.blocks.len());
        match have.iter().zip(&self.blocks).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(SessionFileError::KvDamaged {
                path: path.to_path_buf(),
                layer: i / 2,
                part: PARTS[i % 2],
            }),
        }
    }
}

/// Decodes a whole session file held in memory: its header and its packed cache, every checksum verified.
pub fn decode<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(SessionHeader, &'a [u8]), SessionFileError> {
    let file_len = bytes.len() as u64;
    let header_len = parse_prefix(path, &bytes[..bytes.len().min(PREFIX_LEN)], file_len)?;
    let head_len = PREFIX_LEN + header_len + DIGEST_LEN;
    let header = parse_header(path, &bytes[..head_len])?;
    check_len(path, &header, head_len, file_len)?;
    let blocks = &bytes[head_len..];
    header.verify_blocks(path, blocks)?;
    Ok((header, blocks))
}

/// Checks that the file has exactly the bytes its header announces.
fn check_len(
    path: &Path,
    header: &SessionHeader,
    head_len: usize,
    file_len: u64,
) -> Result<(), SessionFileError> {
    let expected = header
        .file_len(head_len)
        .ok_or_else(|| SessionFileError::BadHeader {
            path: path.to_path_buf(),
            message: "the cache's size overflows".into(),
        })?;
    if file_len < expected {
        return Err(SessionFileError::Truncated {
            path: path.to_path_buf(),
            expected,
            actual: file_len,
        });
    }
    if file_len > expected {
        return Err(SessionFileError::TrailingBytes {
            path: path.to_path_buf(),
            extra: file_len - expected,
        });
    }
    Ok(())
}

/// A session file whose header has been read and verified; the cache is read only when asked for, so a file whose
/// cache cannot be used still gives back its conversation.
#[derive(Debug)]
pub struct SessionReader {
    path: PathBuf,
    file: File,
    file_len: u64,
    head_len: usize,
    header: SessionHeader,
}

impl SessionReader {
    /// Opens `path` and reads and verifies its header (not its cache).
    pub fn open(path: &Path) -> Result<Self, SessionFileError> {
        let io = |e| SessionFileError::io(path, e);
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut prefix = Vec::with_capacity(PREFIX_LEN);
        (&mut file)
            .take(PREFIX_LEN as u64)
            .read_to_end(&mut prefix)
            .map_err(io)?;
        let header_len = parse_prefix(path, &prefix, file_len)?;
        let head_len = PREFIX_LEN + header_len + DIGEST_LEN;
        // No larger than the file (checked by `parse_prefix`).
        let mut head = prefix;
        head.resize(head_len, 0);
        file.read_exact(&mut head[PREFIX_LEN..]).map_err(io)?;
        let header = parse_header(path, &head)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            file_len,
            head_len,
            header,
        })
    }

    /// The verified header.
    pub fn header(&self) -> &SessionHeader {
        &self.header
    }

    /// The header, giving up the file.
    pub fn into_header(self) -> SessionHeader {
        self.header
    }

    /// Maps the packed cache and checks every block against its checksum (in parallel).
    pub fn read_kv(&self) -> Result<KvBytes, SessionFileError> {
        check_len(&self.path, &self.header, self.head_len, self.file_len)?;
        // SAFETY: the map is read-only. tlite replaces session files by renaming a new file onto them, never by
        // writing into them, so its own saves cannot change or truncate a mapped file; another program truncating
        // it could fault, the documented memmap2 caveat the GGUF loader accepts too.
        let map = unsafe { memmap2::Mmap::map(&self.file) }
            .map_err(|e| SessionFileError::io(&self.path, e))?;
        if map.len() as u64 != self.file_len {
            // The file changed size after it was opened.
            return Err(SessionFileError::Truncated {
                path: self.path.clone(),
                expected: self.file_len,
                actual: map.len() as u64,
            });
        }
        let kv = KvBytes {
            map,
            start: self.head_len,
        };
        self.header.verify_blocks(&self.path, &kv)?;
        Ok(kv)
    }
}

/// A session's packed cache, mapped from its file (no copy: it goes from the page cache to the device).
#[derive(Debug)]
pub struct KvBytes {
    map: memmap2::Mmap,
    start: usize,
}

impl std::ops::Deref for KvBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map[self.start..]
    }
}
