//! Element type of the cache.

/// Element type in which keys and values are stored.
///
/// f16 halves the cache; f32 exists for devices and tests where f16 storage is unwanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvDtype {
    /// IEEE half precision (2 bytes).
    F16,
    /// IEEE single precision (4 bytes).
    F32,
}

impl KvDtype {
    /// Bytes of one element.
    pub const fn bytes(self) -> u64 {
        match self {
            KvDtype::F16 => 2,
            KvDtype::F32 => 4,
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvDtype::F16 => "f16",
            KvDtype::F32 => "f32",
        })
    }
}
