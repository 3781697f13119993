//! Embedded program sources and the build options derived from a device's capabilities.

use crate::runtime::{Capabilities, ClError};

/// An OpenCL C program embedded in the binary, e.g. `ProgramSource { name: "matmul", source: include_str!("matmul.cl") }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramSource {
    /// A short name used in errors and logs.
    pub name: &'static str,
    /// The OpenCL C source.
    pub source: &'static str,
}

/// Where a program returned by [`crate::runtime::Gpu::program_with_origin`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildOrigin {
    /// Compiled from source now.
    Compiled,
    /// Loaded from a verified on-disk binary.
    DiskCache,
    /// Already built by this [`crate::runtime::Gpu`].
    Memory,
}

/// Counts of program builds by origin, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildStats {
    /// Programs compiled from source.
    pub compiled: usize,
    /// Programs loaded from the on-disk cache.
    pub disk_hits: usize,
    /// Requests answered from memory.
    pub memory_hits: usize,
    /// On-disk entries found invalid or rejected by the driver (then rebuilt).
    pub rejected_entries: usize,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_value(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\'))
}

/// The compiler options: capability defines, then `extra_defines` (validated so nothing can break the option line).
pub fn build_options(
    caps: &Capabilities,
    extra_defines: &[(&str, &str)],
) -> Result<String, ClError> {
    let mut options = Vec::new();
    for (name, value) in caps.defines() {
        options.push(format!("-D {name}={value}"));
    }
    for &(name, value) in extra_defines {
        if !valid_name(name) {
            return Err(ClError::InvalidDefine {
                define: name.to_string(),
                reason: "names must be C identifiers",
            });
        }
        if !valid_value(value) {
            return Err(ClError::InvalidDefine {
                define: format!("{name}={value}"),
                reason: "values must be printable ASCII without spaces, quotes or backslashes",
            });
        }
        options.push(if value.is_empty() {
            format!("-D {name}")
        } else {
            format!("-D {name}={value}")
        });
    }
    Ok(options.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn define_validation() {
        assert!(valid_name("TILE_M"));
        assert!(valid_name("_x1"));
        assert!(!valid_name("1X"));
        assert!(!valid_name("A B"));
        assert!(!valid_name(""));
        assert!(valid_value("16"));
        assert!(valid_value("(1.0f/3)"));
        assert!(valid_value(""));
        assert!(!valid_value("1 -cl-fast"));
        assert!(!valid_value("a\0"));
    }
}
