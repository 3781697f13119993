//! What can be wrong with a session file, each case naming the file and the problem.

use std::path::PathBuf;

use crate::EngineError;

/// Why a session file cannot be read, or its cache not used.
#[derive(Debug, thiserror::Error)]
pub enum SessionFileError {
    /// Reading or writing the file failed.
    #[error("session {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not start with the session magic: it is something else.
    #[error("{path} is not a tlite session file (it does not start with `TLITESES`)")]
    NotASessionFile {
        /// The file.
        path: PathBuf,
    },
    /// The file was written in a format version this build does not read.
    #[error(
        "session {path} has format version {found}; this tlite reads versions 1 to {supported}"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The file ends before what its header announces (an interrupted copy, a full disk).
    #[error("session {path} is truncated: {expected} bytes expected, {actual} present")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header announces.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The file goes on after what its header announces.
    #[error("session {path} has {extra} bytes after its last block: it is damaged")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes too many.
        extra: u64,
    },
    /// The header does not match its checksum: nothing in the file can be trusted.
    #[error("session {path}: the header fails its SHA-256 checksum: the file is damaged")]
    HeaderDamaged {
        /// The file.
        path: PathBuf,
    },
    /// The header checks, but its contents are malformed or contradict each other.
    #[error("session {path}: malformed header: {message}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A block of the cache fails its checksum; the conversation in the header is intact.
    #[error("session {path}: the {part} of layer {layer} fail their SHA-256 checksum: the cache is damaged")]
    KvDamaged {
        /// The file.
        path: PathBuf,
        /// The layer.
        layer: usize,
        /// "keys" or "values".
        part: &'static str,
    },
    /// The session was saved with another model (or the same model stored differently on the device).
    #[error(
        "session {path} was saved with another model ({saved_with}, identity {saved}) than this one ({current}); \
         its cache does not apply"
    )]
    OtherModel {
        /// The file.
        path: PathBuf,
        /// The model's file name when it was saved.
        saved_with: String,
        /// Its identity, hex (shortened).
        saved: String,
        /// This model's identity, hex (shortened).
        current: String,
    },
    /// The saved cache has another element type or shape than this model's cache.
    #[error("session {path} holds a KV cache of {saved}, but this model's cache is {current}")]
    KvLayout {
        /// The file.
        path: PathBuf,
        /// The saved cache's type and shape.
        saved: String,
        /// This cache's.
        current: String,
    },
    /// The saved cache holds more positions than this run's context.
    #[error(
        "session {path} holds {positions} positions, more than this run's context of {context} (--ctx): its \
         cache does not fit"
    )]
    ContextTooSmall {
        /// The file.
        path: PathBuf,
        /// Positions saved.
        positions: usize,
        /// This run's context.
        context: usize,
    },
    /// The engine failed while reading or restoring the cache (device, identity of the model files).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl SessionFileError {
    /// An [`SessionFileError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the file is not a session this build can read at all (another kind of file, a newer format):
    /// it must not be overwritten, since it may hold something of value that is not ours to replace.
    pub fn is_foreign(&self) -> bool {
        matches!(
            self,
            Self::NotASessionFile { .. } | Self::UnsupportedVersion { .. }
        )
    }
}
