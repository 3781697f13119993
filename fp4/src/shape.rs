//! Typed matrix shapes and group sizes, so nobody passes loose integers around.

use crate::Fp4Error;

/// Shape of a weight matrix in the PyTorch `nn.Linear` layout: `rows` = output features N,
/// `cols` = input features K, `y = W·x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatrixShape {
    /// Output features (N).
    pub rows: usize,
    /// Input features (K); groups run along this dimension.
    pub cols: usize,
}

impl MatrixShape {
    /// A shape of `rows` × `cols`.
    pub const fn new(rows: usize, cols: usize) -> Self {
        Self { rows, cols }
    }

    /// Number of weights, `rows * cols`.
    ///
    /// # Panics
    /// When `rows * cols` overflows `usize` (rather than wrapping to a wrong count in release
    /// builds). It cannot for a shape that passed [`MatrixShape::check_groupable`], which every
    /// packed matrix's shape did; use [`MatrixShape::checked_len`] on shapes from outside.
    pub const fn len(&self) -> usize {
        match self.checked_len() {
            Some(n) => n,
            None => panic!("MatrixShape::len: rows * cols overflows usize"),
        }
    }

    /// Number of weights, `rows * cols`, or `None` when that overflows `usize`.
    pub const fn checked_len(&self) -> Option<usize> {
        self.rows.checked_mul(self.cols)
    }

    /// Number of weights, or [`Fp4Error::ShapeOverflow`] when `rows * cols` overflows `usize`.
    pub(crate) fn try_len(&self) -> Result<usize, Fp4Error> {
        self.checked_len().ok_or(Fp4Error::ShapeOverflow {
            rows: self.rows,
            cols: self.cols,
        })
    }

    /// True when the matrix holds no weight (decided without the product, so it never overflows).
    pub const fn is_empty(&self) -> bool {
        self.rows == 0 || self.cols == 0
    }

    /// Checks that this shape can be packed with groups of `group`: not empty, `rows * cols`
    /// countable in `usize`, and `cols` a multiple of the group size.
    pub fn check_groupable(&self, group: GroupSize) -> Result<(), Fp4Error> {
        if self.is_empty() {
            return Err(Fp4Error::EmptyShape {
                rows: self.rows,
                cols: self.cols,
            });
        }
        self.try_len()?;
        if !self.cols.is_multiple_of(group.len()) {
            return Err(Fp4Error::ColsNotMultipleOfGroup {
                cols: self.cols,
                group: group.len(),
            });
        }
        Ok(())
    }
}

/// Number of consecutive weights along K that share one scale and one offset.
///
/// Only 32, 64 and 128 exist because a GPU work-item reads codes 16 bytes (32 codes) at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GroupSize {
    /// 32 weights per group: one 16-byte load of codes (the default; llama.cpp's Q4_0 shape).
    #[default]
    G32,
    /// 64 weights per group: two 16-byte loads.
    G64,
    /// 128 weights per group: four 16-byte loads.
    G128,
}

impl GroupSize {
    /// All supported group sizes, smallest first.
    pub const ALL: [GroupSize; 3] = [GroupSize::G32, GroupSize::G64, GroupSize::G128];

    /// Number of weights in one group.
    pub const fn len(self) -> usize {
        match self {
            GroupSize::G32 => 32,
            GroupSize::G64 => 64,
            GroupSize::G128 => 128,
        }
    }

    /// Always false; present because clippy pairs `len` with `is_empty`.
    pub const fn is_empty(self) -> bool {
        false
    }

    /// Bytes of packed codes in one group (two codes per byte).
    pub const fn code_bytes(self) -> usize {
        self.len() / 2
    }
}

impl TryFrom<usize> for GroupSize {
    type Error = Fp4Error;

    fn try_from(value: usize) -> Result<Self, Self::Error> {
        match value {
            32 => Ok(GroupSize::G32),
            64 => Ok(GroupSize::G64),
            128 => Ok(GroupSize::G128),
            other => Err(Fp4Error::InvalidGroupSize(other)),
        }
    }
}

impl std::fmt::Display for GroupSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.len())
    }
}
