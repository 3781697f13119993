//! The crate's one error type: every message names the operation and the expressions involved.

/// Everything that can go wrong while declaring symbols, inferring shapes, planning or evaluating.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymShapeError {
    /// A shape rule of an operator does not hold.
    #[error("{op} `{node}`: {reason}")]
    Shape {
        /// Operator kind, e.g. `matmul`.
        op: &'static str,
        /// The name given to the node.
        node: String,
        /// What failed, with the expressions.
        reason: String,
    },
    /// A symbol used in an expression is not declared in the domain.
    #[error("symbol `{0}` is not declared in the domain")]
    UnknownSymbol(String),
    /// A symbol was declared twice.
    #[error("symbol `{0}` is declared twice")]
    DuplicateSymbol(String),
    /// A declared range is empty.
    #[error("symbol `{symbol}` has an empty range {lo}..={hi}")]
    EmptyRange {
        /// The symbol.
        symbol: String,
        /// Lower bound.
        lo: i64,
        /// Upper bound.
        hi: i64,
    },
    /// A constraint no point of the box satisfies.
    #[error("constraint `{constraint}` cannot hold for any declared value")]
    InfeasibleConstraint {
        /// The constraint.
        constraint: String,
    },
    /// A tensor id that does not belong to this graph.
    #[error("tensor id {0} does not belong to this graph")]
    UnknownTensor(usize),
    /// An evaluation point outside a symbol's range.
    #[error("{symbol} = {value} is outside its range {lo}..={hi}")]
    OutOfRange {
        /// The symbol.
        symbol: String,
        /// The value given.
        value: i64,
        /// Lower bound.
        lo: i64,
        /// Upper bound.
        hi: i64,
    },
    /// An evaluation point violating a constraint.
    #[error("constraint `{constraint}` violated: the sum is {sum}")]
    ConstraintViolated {
        /// The constraint.
        constraint: String,
        /// The sum at the point.
        sum: i64,
    },
    /// Wrong number of values for the symbol slots.
    #[error("expected {expected} symbol values, got {got}")]
    WrongBindingCount {
        /// Slots in the domain.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A size expression could exceed `i64` on the domain, so it cannot be evaluated safely.
    #[error("size `{expr}` of `{what}` may exceed i64 on the declared domain")]
    TooLarge {
        /// The tensor or buffer.
        what: String,
        /// Its expression.
        expr: String,
    },
    /// Invalid model dimensions passed to a model builder.
    #[error("invalid model dimensions: {0}")]
    InvalidDims(String),
}

impl SymShapeError {
    pub(crate) fn shape(op: &'static str, node: &str, reason: impl Into<String>) -> Self {
        SymShapeError::Shape {
            op,
            node: node.to_owned(),
            reason: reason.into(),
        }
    }
}
