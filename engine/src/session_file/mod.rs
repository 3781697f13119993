//! Sessions on disk: a chat's KV cache with its token history and conversation, so that a resumed chat answers
//! without prefilling its history again. [`crate::session::Session::save_to`] and
//! [`crate::session::Session::resume_from`] are the API; this module also exposes the pieces (the file format,
//! the reader, the model identity) for tools.
//!
//! # The file (format version 2)
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `TLITESES` |
//! | 4 | format version, `u32` little-endian |
//! | 8 | header length `H`, `u64` little-endian |
//! | `H` | header, UTF-8 JSON (below) |
//! | 32 | SHA-256 of every byte before it (magic, version, length, header) |
//! | … | `2 * layers` blocks: layer 0 keys, layer 0 values, layer 1 keys…, each `kv_heads * positions * head_dim` elements of `kv_dtype`, packed `[kv_head][position][dim]` |
//!
//! The file ends exactly after the last block. The header holds the model's identity ([`ModelIdentity`], hex),
//! the model's file name (for messages only), the KV dtype, `layers`, `kv_heads`, `head_dim`, `positions`, the
//! token ids in the cache (`tokens`, one per position), the conversation (`messages`, role and content, and
//! `forgotten`, how many were dropped to fit the context), what context shifts dropped from the cache (`shifted_out`:
//! the kept start `keep` and the dropped `tokens`, absent when nothing was dropped; new in version 2, so that a chat
//! resumed after a shift still matches its whole history against the shifted cache and prefills only the new turn),
//! and the SHA-256 of every block (`blocks`, hex). Version 1 files (no `shifted_out`) are still read.
//!
//! Every byte is covered by a SHA-256: the header by the digest after it, each block by its digest in the header.
//! One digest per block rather than one over the whole file lets the blocks be checked in parallel (hashing tens
//! of megabytes on one core would cost a good part of the prefill it replaces) and lets an error name the damaged
//! layer; and because the header checks on its own, a file whose cache is damaged still gives back its
//! conversation, which the chat then prefills again.
//!
//! Elements are stored as the device holds them: IEEE half or single floats, little-endian (every OpenCL device
//! tlite runs on is little-endian). Only the used positions are stored, never the preallocated context, so a
//! session saved with one `--ctx` restores into any context that holds its positions.
//!
//! # What is refused
//!
//! Every length read from the file is checked against the file's size before anything is allocated. A file that
//! is not a session file, of another format version, shorter or longer than its header says, or whose header or
//! blocks fail their checksums is an error naming the problem ([`SessionFileError`]). A session saved with another
//! model (another [`ModelIdentity`]), with another KV dtype or shape, or holding more positions than the context
//! is refused for its cache: its conversation is kept and prefilled again. A cache is never used unless every check
//! passed, so a resumed chat never produces text from a wrong cache.
//!
//! Files are written atomically ([`write_session`]): a temporary file beside the target, fsynced, renamed onto
//! it, and the folder fsynced; a crash leaves the previous session or the new one, never a mix.
//!
//! # What it costs
//!
//! A restore maps the file (the cache goes from the page cache to the device without a copy into the process),
//! checks the blocks in parallel, computes the model's identity meanwhile if this load has not yet, and copies
//! every layer's keys and values to the device in one rectangular copy each, waited for once. A save rewrites
//! the whole file: its size grows with the history (2 x layers x kv_heads x head_dim x element bytes per
//! position), and appending only the new positions would need a format that grows in place.

mod atomic;
mod error;
mod format;
mod identity;
mod resume;

pub use error::SessionFileError;
pub use format::{decode, write_session, KvBytes, SessionContents, SessionHeader, SessionReader};
pub use identity::{ModelIdentity, WeightsIdentity, SAMPLES, SAMPLE_BYTES};
pub use resume::{Resumed, Saved};

/// The first bytes of every session file.
pub const MAGIC: [u8; 8] = *b"TLITESES";

/// The newest format version this build writes and reads. Version 3 adds `local_from` (the sliding-window layers'
/// ring caches held only their latest positions); a file without it is written as version 2, which older builds
/// read.
pub const FORMAT_VERSION: u32 = 3;

/// The version written when no ring cache lacks positions (the same bytes as before version 3).
pub const RING_FREE_VERSION: u32 = 2;

/// The oldest format version this build reads. Version 1 lacks `shifted_out`: its cache is matched as is.
pub const OLDEST_READABLE_VERSION: u32 = 1;
