//! The op list: tensors with symbolic shapes, and the operators that produce them.
//!
//! Shape rules live in [`crate::rules`]; this file only records what was built, so that the
//! planner can read lifetimes from the order of operations.

use crate::domain::Domain;
use crate::error::SymShapeError;
use crate::expr::Expr;
use std::fmt;

/// Element type; only its size matters to the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    BF16,
    /// 32-bit signed integer (token ids, positions).
    I32,
    /// 8-bit integer or packed bytes.
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> i64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }
}

/// Handle of a tensor in one [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub(crate) usize);

impl TensorId {
    /// The index of the tensor in [`Graph::tensors`].
    pub fn index(self) -> usize {
        self.0
    }

    /// The id of the tensor at `index` in [`Graph::tensors`] (checked when used).
    pub fn from_index(index: usize) -> Self {
        TensorId(index)
    }
}

/// A symbolic shape: one expression per axis, outermost first.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Expr>);

impl Shape {
    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Product of the dims.
    pub fn numel(&self) -> Expr {
        self.0.iter().fold(Expr::constant(1), |acc, d| acc * d)
    }

    /// The dims.
    pub fn dims(&self) -> &[Expr] {
        &self.0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Where a tensor's memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Owned by the caller (weights, KV cache, token ids); never placed by the planner.
    External,
    /// Produced by an op; placed in a planned buffer.
    Activation,
    /// A view of another tensor's memory (reshape, sub-tensor write); the root is given.
    Alias(TensorId),
}

/// One tensor of the graph.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Name for messages and lookups.
    pub name: String,
    /// Symbolic shape.
    pub shape: Shape,
    /// Element type.
    pub dtype: DType,
    /// Memory origin.
    pub storage: Storage,
    /// Index in [`Graph::ops`] of the producing op (`None` for external inputs).
    pub producer: Option<usize>,
}

impl TensorInfo {
    /// Size in bytes, as an expression.
    pub fn bytes(&self) -> Expr {
        self.shape.numel() * self.dtype.size_bytes()
    }
}

/// One operator application.
#[derive(Debug, Clone)]
pub struct OpNode {
    /// Operator kind, e.g. `matmul`.
    pub kind: &'static str,
    /// Node name.
    pub name: String,
    /// Tensors read.
    pub inputs: Vec<TensorId>,
    /// Tensors written.
    pub outputs: Vec<TensorId>,
}

/// A dynamic-shape graph in execution order, over a [`Domain`] of symbols.
#[derive(Debug, Clone)]
pub struct Graph {
    pub(crate) domain: Domain,
    pub(crate) tensors: Vec<TensorInfo>,
    pub(crate) ops: Vec<OpNode>,
    pub(crate) outputs: Vec<TensorId>,
}

impl Graph {
    /// An empty graph whose shapes may use the symbols of `domain`.
    pub fn new(domain: Domain) -> Self {
        Graph {
            domain,
            tensors: Vec::new(),
            ops: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// The symbol domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// All tensors; a [`TensorId`] indexes this slice.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Ops in execution order.
    pub fn ops(&self) -> &[OpNode] {
        &self.ops
    }

    /// Tensors marked as graph outputs (kept alive to the end).
    pub fn outputs(&self) -> &[TensorId] {
        &self.outputs
    }

    /// The tensor's description.
    pub fn tensor(&self, t: TensorId) -> Result<&TensorInfo, SymShapeError> {
        self.tensors
            .get(t.0)
            .ok_or(SymShapeError::UnknownTensor(t.0))
    }

    /// The tensor's shape.
    pub fn shape(&self, t: TensorId) -> Result<&Shape, SymShapeError> {
        Ok(&self.tensor(t)?.shape)
    }

    /// The first tensor with this name.
    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.tensors
            .iter()
            .position(|t| t.name == name)
            .map(TensorId)
    }

    /// Declares a caller-owned tensor (weights, cache, ids). Dims must be provably ≥ 0.
    pub fn input(
        &mut self,
        name: &str,
        dims: &[Expr],
        dtype: DType,
    ) -> Result<TensorId, SymShapeError> {
        let shape = Shape(dims.to_vec());
        self.check_dims("input", name, &shape)?;
        self.tensors.push(TensorInfo {
            name: name.to_owned(),
            shape,
            dtype,
            storage: Storage::External,
            producer: None,
        });
        Ok(TensorId(self.tensors.len() - 1))
    }

    /// Keeps `t` alive until the end of the graph (e.g. logits).
    pub fn mark_output(&mut self, t: TensorId) -> Result<(), SymShapeError> {
        self.tensor(t)?;
        if !self.outputs.contains(&t) {
            self.outputs.push(t);
        }
        Ok(())
    }

    pub(crate) fn check_dims(
        &self,
        op: &'static str,
        node: &str,
        shape: &Shape,
    ) -> Result<(), SymShapeError> {
        for (axis, d) in shape.0.iter().enumerate() {
            if d.is_overflowed() {
                return Err(SymShapeError::shape(
                    op,
                    node,
                    format!("dim {axis} overflowed i128"),
                ));
            }
            self.domain
                .check_symbols(d)
                .map_err(|e| SymShapeError::shape(op, node, e.to_string()))?;
            if !self.domain.proves_nonnegative(d) {
                return Err(SymShapeError::shape(
                    op,
                    node,
                    format!("dim {axis} = {d} is not provably >= 0 on the domain"),
                ));
            }
        }
        Ok(())
    }

    /// The root tensor whose memory `t` uses.
    pub fn storage_root(&self, t: TensorId) -> TensorId {
        match self.tensors.get(t.0).map(|i| i.storage) {
            Some(Storage::Alias(root)) => root,
            _ => t,
        }
    }

    /// Records an op with one output; `alias_of` makes the output a view of that tensor's memory.
    pub(crate) fn push_op(
        &mut self,
        kind: &'static str,
        name: &str,
        inputs: &[TensorId],
        shape: Shape,
        dtype: DType,
        alias_of: Option<TensorId>,
    ) -> Result<TensorId, SymShapeError> {
        for t in inputs {
            self.tensor(*t)?;
        }
        self.check_dims(kind, name, &shape)?;
        let storage = match alias_of {
            Some(base) => Storage::Alias(self.storage_root(base)),
            None => Storage::Activation,
        };
        let id = TensorId(self.tensors.len());
        self.tensors.push(TensorInfo {
            name: name.to_owned(),
            shape,
            dtype,
            storage,
            producer: Some(self.ops.len()),
        });
        self.ops.push(OpNode {
            kind,
            name: name.to_owned(),
            inputs: inputs.to_vec(),
            outputs: vec![id],
        });
        Ok(id)
    }
}
