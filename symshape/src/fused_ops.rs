//! Ops of fused-kernel runtimes: updates in place and attention straight from a packed q|k|v tensor.
//!
//! A runtime whose kernels add a projection into the residual stream, add a bias, rotate or gate where the data
//! already lies allocates nothing for the result. Recording those as in-place ops (the output aliases the updated
//! tensor) keeps the updated tensor live across them, so the planner never reuses its memory while a later op still
//! reads it, and never plans a buffer the runtime does not have.

use crate::error::SymShapeError;
use crate::expr::Expr;
use crate::graph::{Graph, Shape, TensorId};

impl Graph {
    /// `target` updated in place by an op of kind `op` that also reads `reads` (a bias add, a rotation, a gated
    /// activation): same shape and dtype, the output aliases `target`.
    pub fn update_in_place(
        &mut self,
        op: &'static str,
        name: &str,
        target: TensorId,
        reads: &[TensorId],
    ) -> Result<TensorId, SymShapeError> {
        let info = self.tensor(target)?;
        let (shape, dtype) = (info.shape.clone(), info.dtype);
        let mut inputs = Vec::with_capacity(reads.len() + 1);
        inputs.push(target);
        inputs.extend_from_slice(reads);
        self.push_op(op, name, &inputs, shape, dtype, Some(target))
    }

    /// `acc += x @ wᵀ` in place (a projection whose kernel adds into the residual stream): the linear rule of
    /// [`Graph::linear`], and its result must have `acc`'s shape. The output aliases `acc`.
    pub fn linear_into(
        &mut self,
        name: &str,
        x: TensorId,
        w: TensorId,
        acc: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "linear_into";
        let (sx, sw, sa) = (
            self.shape(x)?.clone(),
            self.shape(w)?.clone(),
            self.tensor(acc)?.clone(),
        );
        let in_features = sx.0.last();
        let fits = sw.rank() == 2
            && in_features.is_some_and(|k| self.domain.proves_eq(k, &sw.0[1]))
            && sa.shape.rank() == sx.rank()
            && sx.0[..sx.rank() - 1]
                .iter()
                .zip(&sa.shape.0)
                .all(|(a, b)| self.domain.proves_eq(a, b))
            && sa
                .shape
                .0
                .last()
                .is_some_and(|o| self.domain.proves_eq(o, &sw.0[0]));
        if !fits {
            return Err(SymShapeError::shape(
                OP,
                name,
                format!(
                    "x {sx} times the [out, in] weight {sw} does not give the accumulator's shape {}",
                    sa.shape
                ),
            ));
        }
        self.push_op(OP, name, &[acc, x, w], sa.shape, sa.dtype, Some(acc))
    }

    /// Fused attention reading the queries from a packed `qkv [s, (h + 2 kvh) · d]` (the layout of one stacked
    /// q|k|v projection) and the keys and values from `k [t, kvh, d]`, `v [t, kvh, d]` (the cache, with the new
    /// positions already written) → `[s, h, d]`. `heads` must be a multiple of the keys' `kvh`.
    pub fn attention_packed_qkv(
        &mut self,
        name: &str,
        qkv: TensorId,
        k: TensorId,
        v: TensorId,
        heads: i64,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "attention_packed_qkv";
        let (sq, sk, sv) = (
            self.shape(qkv)?.clone(),
            self.shape(k)?.clone(),
            self.shape(v)?.clone(),
        );
        let dtype = self.tensor(qkv)?.dtype;
        if sq.rank() != 2 || sk.rank() != 3 || sv.rank() != 3 || sk != sv {
            return Err(SymShapeError::shape(
                OP,
                name,
                format!("needs qkv [s, width], k and v [t, kvh, d] alike; got {sq}, {sk}, {sv}"),
            ));
        }
        let (kvh, d) = (&sk.0[1], &sk.0[2]);
        let groups = kvh
            .as_constant()
            .is_some_and(|kvh| kvh > 0 && heads > 0 && i128::from(heads) % kvh == 0);
        let width = (kvh * 2 + heads) * d;
        if !groups || !self.domain.proves_eq(&sq.0[1], &width) {
            return Err(SymShapeError::shape(
                OP,
                name,
                format!(
                    "{heads} query heads over kv heads {kvh} of width {d} need a packed width of {width}, got {}",
                    sq.0[1]
                ),
            ));
        }
        let dims = vec![sq.0[0].clone(), Expr::constant(heads), d.clone()];
        self.push_op(OP, name, &[qkv, k, v], Shape(dims), dtype, None)
    }
}
