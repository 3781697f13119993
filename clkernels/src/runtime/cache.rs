//! The on-disk cache of compiled program binaries. Phones spend seconds compiling kernels at every start; a cached
//! binary loads in milliseconds. Entries are keyed by device, driver, source and options, written atomically, and
//! checked (magic, key, length, checksum) before use: anything that does not match is rebuilt, never trusted.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"TLITEPB1";
const HEADER_LEN: usize = 8 + 32 + 32 + 8;

/// Where compiled programs are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// `$TLITE_CACHE_DIR`, else the platform cache directory (`~/.cache/tlite/programs`), else a temp directory.
    #[default]
    Default,
    /// This directory.
    Dir(PathBuf),
    /// No on-disk cache (programs are still shared in memory by one [`crate::runtime::Gpu`]).
    Disabled,
}

impl CachePolicy {
    /// The directory this policy names, if any.
    pub fn resolve(&self) -> Option<PathBuf> {
        match self {
            CachePolicy::Disabled => None,
            CachePolicy::Dir(dir) => Some(dir.clone()),
            CachePolicy::Default => Some(default_cache_dir()),
        }
    }
}

/// `$TLITE_CACHE_DIR`, else `<platform cache dir>/tlite/programs`, else `<temp dir>/tlite-programs`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TLITE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match dirs::cache_dir() {
        Some(dir) => dir.join("tlite").join("programs"),
        None => std::env::temp_dir().join("tlite-programs"),
    }
}

/// The identity of one compiled program: a digest of everything that changes the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Digests device name, driver and OpenCL versions, build options and source.
    pub fn new(device_identity: &[&str], options: &str, source: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"tlite program cache v1\0");
        for part in device_identity {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hasher.update(options.as_bytes());
        hasher.update([0]);
        hasher.update(source.as_bytes());
        CacheKey(hasher.finalize().into())
    }

    /// Lower-case hex, used as the file name.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Why a cache entry was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No file for this key.
    Missing,
    /// The file exists but could not be read.
    Unreadable(String),
    /// The file is not a valid entry for this key (wrong magic, key, length or checksum).
    Invalid(&'static str),
}

/// An on-disk binary cache rooted at one directory.
#[derive(Debug, Clone)]
pub struct BinaryCache {
    dir: PathBuf,
}

impl BinaryCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BinaryCache { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an entry for `key` lives in.
    pub fn path_for(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.clbin", key.hex()))
    }

    /// Loads and verifies the entry for `key`.
    pub fn load(&self, key: &CacheKey) -> Result<Vec<u8>, Rejection> {
        let path = self.path_for(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Rejection::Missing),
            Err(e) => return Err(Rejection::Unreadable(format!("{}: {e}", path.display()))),
        };
        decode(key, &bytes)
            .map(<[u8]>::to_vec)
            .map_err(Rejection::Invalid)
    }

    /// Stores `binary` for `key` atomically (temp file in the same directory, then rename).
    pub fn store(&self, key: &CacheKey, binary: &[u8]) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path_for(key);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = self
            .dir
            .join(format!(".{}.{}.{nanos}.tmp", key.hex(), std::process::id()));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&encode(key, binary))?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| path)
    }

    /// Deletes the entry for `key` (after the driver rejected it).
    pub fn remove(&self, key: &CacheKey) {
        let _ = std::fs::remove_file(self.path_for(key));
    }

    /// The marker saying `key` was built here before on a driver that caches programs itself (see
    /// [`crate::runtime::Capabilities::driver_caches_programs`]): no binary, only the knowledge that the driver's
    /// cache should answer, so the user is not told that kernels are compiling when they are not.
    fn marker_for(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.built", key.hex()))
    }

    /// Whether [`BinaryCache::mark_built`] was called for `key`.
    pub fn is_marked_built(&self, key: &CacheKey) -> bool {
        self.marker_for(key).is_file()
    }

    /// Records that `key` was built (an empty file; creating it is atomic enough, a lost marker costs one notice).
    pub fn mark_built(&self, key: &CacheKey) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::File::create(self.marker_for(key)).map(drop)
    }
}

fn encode(key: &CacheKey, binary: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + binary.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&Sha256::digest(binary));
    out.extend_from_slice(&(binary.len() as u64).to_le_bytes());
    out.extend_from_slice(binary);
    out
}

fn decode<'a>(key: &CacheKey, bytes: &'a [u8]) -> Result<&'a [u8], &'static str> {
    if bytes.len() < HEADER_LEN {
        return Err("shorter than its header");
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if &header[..8] != MAGIC {
        return Err("wrong magic (not a tlite program binary or an older format)");
    }
    if header[8..40] != key.0 {
        return Err("stored for another device, driver, source or options");
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[72..80]);
    if u64::from_le_bytes(len) != payload.len() as u64 {
        return Err("truncated or padded");
    }
    if header[40..72] != Sha256::digest(payload)[..] {
        return Err("checksum mismatch (corrupt)");
    }
    if payload.is_empty() {
        return Err("empty binary");
    }
    Ok(payload)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::RngCore;

    fn random_binary(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        rand::rng().fill_bytes(&mut v);
        v
    }

    #[test]
    fn entries_round_trip_and_any_damage_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BinaryCache::new(dir.path().join("nested"));
        let key = CacheKey::new(&["dev", "drv 1"], "-D A=1", "kernel void k() {}");
        assert_eq!(cache.load(&key), Err(Rejection::Missing));
        let binary = random_binary(4096);
        let path = cache.store(&key, &binary).unwrap();
        assert_eq!(cache.load(&key).unwrap(), binary);
        // No temp files are left behind.
        let names: Vec<_> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");

        let good = std::fs::read(&path).unwrap();
        // Flip one payload byte: checksum mismatch.
        let mut corrupt = good.clone();
        let i = HEADER_LEN + (rand::rng().next_u32() as usize % binary.len());
        corrupt[i] ^= 0x5a;
        std::fs::write(&path, &corrupt).unwrap();
        assert!(matches!(cache.load(&key), Err(Rejection::Invalid(r)) if r.contains("checksum")));
        // Truncate.
        std::fs::write(&path, &good[..good.len() - 10]).unwrap();
        assert!(matches!(cache.load(&key), Err(Rejection::Invalid(r)) if r.contains("truncated")));
        std::fs::write(&path, &good[..20]).unwrap();
        assert!(matches!(cache.load(&key), Err(Rejection::Invalid(_))));
        // An entry written for another key but placed under this name (stale) is rejected.
        let other = CacheKey::new(&["dev", "drv 2"], "-D A=1", "kernel void k() {}");
        assert_ne!(other, key);
        std::fs::write(&path, encode(&other, &binary)).unwrap();
        assert!(matches!(cache.load(&key), Err(Rejection::Invalid(r)) if r.contains("another")));
    }

    #[test]
    fn markers_are_per_key_and_separate_from_binaries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BinaryCache::new(dir.path().join("m"));
        let key = CacheKey::new(&["dev"], "-D A=1", "src");
        let other = CacheKey::new(&["dev"], "-D A=2", "src");
        assert!(!cache.is_marked_built(&key));
        cache.mark_built(&key).unwrap();
        assert!(cache.is_marked_built(&key));
        assert!(!cache.is_marked_built(&other));
        // A marker is not a binary.
        assert_eq!(cache.load(&key), Err(Rejection::Missing));
    }

    #[test]
    fn keys_change_with_every_input() {
        let base = CacheKey::new(&["dev", "drv"], "-D A=1", "src");
        assert_ne!(base, CacheKey::new(&["dev2", "drv"], "-D A=1", "src"));
        assert_ne!(base, CacheKey::new(&["dev", "drv2"], "-D A=1", "src"));
        assert_ne!(base, CacheKey::new(&["dev", "drv"], "-D A=2", "src"));
        assert_ne!(base, CacheKey::new(&["dev", "drv"], "-D A=1", "src "));
        assert_eq!(base, CacheKey::new(&["dev", "drv"], "-D A=1", "src"));
    }
}
