//! GGUF metadata values and typed access to them with errors that name the key.

use std::fmt;

/// One metadata value. Arrays keep their elements as values (GGUF allows arrays of any type, nested ones too).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `UINT8` .. `UINT64`, widened.
    Uint(u64),
    /// `INT8` .. `INT64`, widened.
    Int(i64),
    /// `FLOAT32` or `FLOAT64`.
    Float(f64),
    /// `BOOL`.
    Bool(bool),
    /// `STRING` (invalid UTF-8 replaced by U+FFFD).
    Str(String),
    /// `ARRAY`.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Uint(_) => "an unsigned integer",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a number",
            Self::Bool(_) => "a boolean",
            Self::Str(_) => "a string",
            Self::Array(_) => "an array",
        }
    }

    /// The value as a non-negative integer (signed values accepted when non-negative).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Uint(v) => Some(v),
            Self::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::Uint(v) => i64::try_from(v).ok(),
            Self::Int(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a float (integers accepted).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Float(v) => Some(v),
            Self::Uint(v) => Some(v as f64),
            Self::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for MetaValue {
    /// Values as a user would write them (no Rust debug syntax); long arrays are summarised.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uint(v) => write!(f, "{v}"),
            Self::Int(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::Str(s) if s.chars().count() > 60 => {
                write!(f, "{:?}…", s.chars().take(60).collect::<String>())
            }
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Array(a) if a.len() > 8 => write!(f, "[{} values]", a.len()),
            Self::Array(a) => {
                write!(f, "[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
        }
    }
}
