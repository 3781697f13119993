//! The one error type of the crate: every way outside input can be wrong, named.

/// Everything that can go wrong when packing, unpacking, storing or loading M0E4 weights.
#[derive(Debug, thiserror::Error)]
pub enum Fp4Error {
    /// Group sizes are fixed by the GPU kernels (one 16-byte load per 32 codes).
    #[error("unsupported group size {0}: M0E4 groups must be 32, 64 or 128 elements")]
    InvalidGroupSize(
        /// The group size asked for.
        usize,
    ),
    /// Groups run along the input dimension and never straddle rows.
    #[error("matrix has {cols} columns, which is not a multiple of the group size {group}")]
    ColsNotMultipleOfGroup {
        /// Columns (input features) of the matrix.
        cols: usize,
        /// The group size asked for.
        group: usize,
    },
    /// A matrix needs at least one row and one column.
    #[error("matrix shape {rows}x{cols} is empty")]
    EmptyShape {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
    },
    /// `rows * cols` does not fit in `usize`, so no buffer could hold the matrix.
    #[error("matrix shape {rows}x{cols} has more elements than usize can count")]
    ShapeOverflow {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
    },
    /// The flat weight slice does not hold `rows * cols` elements.
    #[error("weights have {actual} elements but shape {rows}x{cols} needs {expected}")]
    LengthMismatch {
        /// Rows of the shape.
        rows: usize,
        /// Columns of the shape.
        cols: usize,
        /// `rows * cols`.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// NaN or infinity cannot be represented by any scale and offset.
    #[error("weight at row {row}, column {col} is not finite ({value})")]
    NonFinite {
        /// Row of the weight.
        row: usize,
        /// Column of the weight.
        col: usize,
        /// The NaN or infinity found.
        value: f32,
    },
    /// The group's values are too large for an f16 scale or offset.
    #[error("group {group_index} of row {row} spans [{min}, {max}], which needs a scale or offset beyond the f16 range")]
    OutOfF16Range {
        /// Row of the group.
        row: usize,
        /// Index of the group within its row.
        group_index: usize,
        /// Smallest weight of the group.
        min: f32,
        /// Largest weight of the group.
        max: f32,
    },
    /// One of the packed arrays has the wrong number of elements for the shape.
    #[error("packed `{part}` has {actual} elements but the shape needs {expected}")]
    PartLength {
        /// `codes`, `scales` or `offsets`.
        part: &'static str,
        /// Elements the shape and group size need.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// The vector multiplied by a matrix does not have `cols` elements.
    #[error("input vector has {actual} elements but the matrix has {expected} columns")]
    VectorLength {
        /// Columns of the matrix.
        expected: usize,
        /// Elements of the vector.
        actual: usize,
    },
    /// A safetensors file could not be read or written by the safetensors crate.
    #[error("safetensors error in {path}: {message}")]
    Safetensors {
        /// The file (or `<in-memory safetensors>`).
        path: String,
        /// What the safetensors crate reported.
        message: String,
    },
    /// A safetensors file is well-formed but is not an M0E4 file this crate can load.
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: String,
        /// What is wrong, naming the tensor where there is one.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}
