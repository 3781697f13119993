//! Shape inference rules for the operators of a decoder-only transformer.
//!
//! Each method checks its rule symbolically (dims equal as canonical polynomials, bounds proven on
//! the domain) and records the op; a rule that cannot be shown to hold for every value of the
//! symbols is an error naming the op, the node and the expressions.

use crate::error::SymShapeError;
use crate::expr::Expr;
use crate::graph::{DType, Graph, Shape, TensorId};

/// One target dim of a reshape: a given expression, or inferred from the element count.
#[derive(Debug, Clone)]
pub enum ReshapeDim {
    /// This exact size.
    Size(Expr),
    /// Whatever makes the element counts equal (at most one per reshape).
    Infer,
}

/// Reduction kinds; all reduce one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Σ
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum.
    Max,
}

fn err(op: &'static str, node: &str, reason: impl Into<String>) -> SymShapeError {
    SymShapeError::shape(op, node, reason)
}

/// The one form every rule check takes: `Ok` when `holds`, else the op's error. The reason is a
/// closure so its message is only formatted when the check fails.
fn ensure(
    holds: bool,
    op: &'static str,
    node: &str,
    reason: impl FnOnce() -> String,
) -> Result<(), SymShapeError> {
    if holds {
        Ok(())
    } else {
        Err(err(op, node, reason()))
    }
}

fn axis_index(
    op: &'static str,
    node: &str,
    axis: isize,
    rank: usize,
) -> Result<usize, SymShapeError> {
    let r = rank as isize;
    let a = if axis < 0 { axis + r } else { axis };
    ensure(a >= 0 && a < r, op, node, || {
        format!("axis {axis} out of range for rank {rank}")
    })?;
    Ok(a as usize)
}

/// How [`Graph::slice`] and [`Graph::narrow`] take a window of one axis.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Window {
    /// A materialised copy, along any axis.
    Slice,
    /// A view aliasing its input, along axis 0 only (the only axis that stays contiguous).
    Narrow,
}

impl Window {
    fn op(self) -> &'static str {
        match self {
            Window::Slice => "slice",
            Window::Narrow => "narrow",
        }
    }
}

fn one() -> Expr {
    Expr::constant(1)
}

impl Graph {
    fn info(&self, t: TensorId) -> Result<(Shape, DType), SymShapeError> {
        let i = self.tensor(t)?;
        Ok((i.shape.clone(), i.dtype))
    }

    fn same(&self, a: &Expr, b: &Expr) -> bool {
        self.domain.proves_eq(a, b)
    }

    /// `a @ b` over the last two axes, leading (batch) axes broadcast: `[.., m, k] @ [.., k, n]`.
    pub fn matmul(
        &mut self,
        name: &str,
        a: TensorId,
        b: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "matmul";
        let ((sa, dt), (sb, _)) = (self.info(a)?, self.info(b)?);
        ensure(sa.rank() >= 2 && sb.rank() >= 2, OP, name, || {
            format!("needs rank >= 2, got {sa} and {sb}")
        })?;
        let (m, k1) = (&sa.0[sa.rank() - 2], &sa.0[sa.rank() - 1]);
        let (k2, n) = (&sb.0[sb.rank() - 2], &sb.0[sb.rank() - 1]);
        ensure(self.same(k1, k2), OP, name, || {
            format!("inner dims differ: {k1} (of {sa}) vs {k2} (of {sb})")
        })?;
        let batch =
            self.broadcast_dims(OP, name, &sa.0[..sa.rank() - 2], &sb.0[..sb.rank() - 2])?;
        let mut dims = batch;
        dims.push(m.clone());
        dims.push(n.clone());
        self.push_op(OP, name, &[a, b], Shape(dims), dt, None)
    }

    /// `x @ wᵀ` with `w` stored `[out, in]` as in PyTorch/Hugging Face: `[.., in] → [.., out]`.
    pub fn linear(
        &mut self,
        name: &str,
        x: TensorId,
        w: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "linear";
        let ((sx, dt), (sw, _)) = (self.info(x)?, self.info(w)?);
        ensure(sx.rank() >= 1 && sw.rank() == 2, OP, name, || {
            format!("needs x of rank >= 1 and a [out, in] weight, got {sx} and {sw}")
        })?;
        let k = &sx.0[sx.rank() - 1];
        ensure(self.same(k, &sw.0[1]), OP, name, || {
            format!(
                "in-features differ: x {sx} has {k}, weight {sw} has {}",
                sw.0[1]
            )
        })?;
        let mut dims = sx.0[..sx.rank() - 1].to_vec();
        dims.push(sw.0[0].clone());
        self.push_op(OP, name, &[x, w], Shape(dims), dt, None)
    }

    fn broadcast_dims(
        &self,
        op: &'static str,
        node: &str,
        a: &[Expr],
        b: &[Expr],
    ) -> Result<Vec<Expr>, SymShapeError> {
        let rank = a.len().max(b.len());
        let mut out = Vec::with_capacity(rank);
        for i in 0..rank {
            let da = if i + a.len() >= rank {
                a[i + a.len() - rank].clone()
            } else {
                one()
            };
            let db = if i + b.len() >= rank {
                b[i + b.len() - rank].clone()
            } else {
                one()
            };
            if self.same(&da, &db) || db == one() {
                out.push(da);
            } else if da == one() {
                out.push(db);
            } else {
                return Err(err(
                    op,
                    node,
                    format!("cannot broadcast axis {i}: {da} vs {db} (neither equal nor 1)"),
                ));
            }
        }
        Ok(out)
    }

    /// Elementwise binary op (`add`, `mul`, …) with NumPy broadcasting; dims must be identical
    /// expressions or the constant 1.
    pub fn elementwise(
        &mut self,
        op: &'static str,
        name: &str,
        a: TensorId,
        b: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        let ((sa, dt), (sb, _)) = (self.info(a)?, self.info(b)?);
        let dims = self.broadcast_dims(op, name, &sa.0, &sb.0)?;
        self.push_op(op, name, &[a, b], Shape(dims), dt, None)
    }

    /// `a + b`, broadcasting.
    pub fn add(&mut self, name: &str, a: TensorId, b: TensorId) -> Result<TensorId, SymShapeError> {
        self.elementwise("add", name, a, b)
    }

    /// `a * b`, broadcasting.
    pub fn mul(&mut self, name: &str, a: TensorId, b: TensorId) -> Result<TensorId, SymShapeError> {
        self.elementwise("mul", name, a, b)
    }

    /// Elementwise unary op (`silu`, `gelu`, `cast`…); same shape.
    pub fn unary(
        &mut self,
        op: &'static str,
        name: &str,
        x: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        let (s, dt) = self.info(x)?;
        self.push_op(op, name, &[x], s, dt, None)
    }

    /// A view with new dims; element counts must be equal as polynomials. The output aliases `x`.
    pub fn reshape(
        &mut self,
        name: &str,
        x: TensorId,
        dims: &[ReshapeDim],
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "reshape";
        let (s, dt) = self.info(x)?;
        let total = s.numel();
        let infer: Vec<usize> = dims
            .iter()
            .enumerate()
            .filter(|(_, d)| matches!(d, ReshapeDim::Infer))
            .map(|(i, _)| i)
            .collect();
        ensure(infer.len() <= 1, OP, name, || {
            "more than one inferred dim".into()
        })?;
        let known = dims.iter().fold(one(), |acc, d| match d {
            ReshapeDim::Size(e) => acc * e,
            ReshapeDim::Infer => acc,
        });
        let mut out: Vec<Expr> = Vec::with_capacity(dims.len());
        let inferred = match infer.first() {
            Some(_) => Some(total.div_exact(&known).ok_or_else(|| {
                err(
                    OP,
                    name,
                    format!("element count {total} of {s} is not divisible by {known}"),
                )
            })?),
            None => None,
        };
        for d in dims {
            out.push(match d {
                ReshapeDim::Size(e) => e.clone(),
                ReshapeDim::Infer => inferred.clone().unwrap_or_else(one),
            });
        }
        let new = Shape(out);
        ensure(self.same(&new.numel(), &total), OP, name, || {
            format!(
                "element counts differ: {s} has {total}, target {new} has {}",
                new.numel()
            )
        })?;
        self.push_op(OP, name, &[x], new, dt, Some(x))
    }

    /// Reorders axes: output axis `i` is input axis `perm[i]`. Materialised (a copy kernel).
    pub fn permute(
        &mut self,
        name: &str,
        x: TensorId,
        perm: &[usize],
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "permute";
        let (s, dt) = self.info(x)?;
        let mut seen = vec![false; s.rank()];
        ensure(perm.len() == s.rank(), OP, name, || {
            format!("permutation {perm:?} has the wrong length for {s}")
        })?;
        for &p in perm {
            ensure(p < s.rank() && !seen[p], OP, name, || {
                format!("{perm:?} is not a permutation of 0..{}", s.rank())
            })?;
            seen[p] = true;
        }
        let dims = perm.iter().map(|&p| s.0[p].clone()).collect();
        self.push_op(OP, name, &[x], Shape(dims), dt, None)
    }

    /// Swaps two axes (a [`Graph::permute`]).
    pub fn transpose(
        &mut self,
        name: &str,
        x: TensorId,
        a: usize,
        b: usize,
    ) -> Result<TensorId, SymShapeError> {
        let rank = self.shape(x)?.rank();
        ensure(a < rank && b < rank, "transpose", name, || {
            format!("axes {a}, {b} out of range for rank {rank}")
        })?;
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(a, b);
        self.permute(name, x, &perm)
    }

    /// Joins tensors along `axis`; all other dims must be equal.
    pub fn concat(
        &mut self,
        name: &str,
        xs: &[TensorId],
        axis: isize,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "concat";
        let first = xs.first().ok_or_else(|| err(OP, name, "no inputs"))?;
        let (s0, dt) = self.info(*first)?;
        let ax = axis_index(OP, name, axis, s0.rank())?;
        let mut dims = s0.0.clone();
        for t in &xs[1..] {
            let (s, _) = self.info(*t)?;
            ensure(s.rank() == s0.rank(), OP, name, || {
                format!("ranks differ: {s0} vs {s}")
            })?;
            self.check_other_axes(OP, name, &s0, &s, ax, |i, a, b| {
                format!("axis {i} differs: {a} vs {b}")
            })?;
            dims[ax] = &dims[ax] + &s.0[ax];
        }
        self.push_op(OP, name, xs, Shape(dims), dt, None)
    }

    /// Checks that shapes `a` and `b` (of equal rank) agree on every axis except `skip`, the one
    /// being joined or written along; `mismatch(i, a_i, b_i)` words the first axis that differs.
    fn check_other_axes(
        &self,
        op: &'static str,
        name: &str,
        a: &Shape,
        b: &Shape,
        skip: usize,
        mismatch: impl Fn(usize, &Expr, &Expr) -> String,
    ) -> Result<(), SymShapeError> {
        for i in (0..a.rank()).filter(|&i| i != skip) {
            ensure(self.same(&a.0[i], &b.0[i]), op, name, || {
                mismatch(i, &a.0[i], &b.0[i])
            })?;
        }
        Ok(())
    }

    /// `x[.., start .. start + len, ..]` along `axis`; `0 ≤ start` and `start + len ≤ dim` must be
    /// provable on the domain. Materialised.
    pub fn slice(
        &mut self,
        name: &str,
        x: TensorId,
        axis: isize,
        start: &Expr,
        len: &Expr,
    ) -> Result<TensorId, SymShapeError> {
        self.window(Window::Slice, name, x, axis, start, len)
    }

    /// A view of `x[start .. start + len]` along axis 0 (no copy; the output aliases `x`), as used
    /// to read the filled prefix of a preallocated KV cache. Only axis 0 keeps the view
    /// contiguous, so other axes are refused; use [`Graph::slice`] for those.
    pub fn narrow(
        &mut self,
        name: &str,
        x: TensorId,
        axis: isize,
        start: &Expr,
        len: &Expr,
    ) -> Result<TensorId, SymShapeError> {
        self.window(Window::Narrow, name, x, axis, start, len)
    }

    /// The rule [`Graph::slice`] and [`Graph::narrow`] share: `start .. start + len` must lie
    /// inside the axis on the whole domain; they differ only in aliasing and allowed axes.
    fn window(
        &mut self,
        kind: Window,
        name: &str,
        x: TensorId,
        axis: isize,
        start: &Expr,
        len: &Expr,
    ) -> Result<TensorId, SymShapeError> {
        let op = kind.op();
        let (s, dt) = self.info(x)?;
        let ax = axis_index(op, name, axis, s.rank())?;
        ensure(kind == Window::Slice || ax == 0, op, name, || {
            format!("only axis 0 gives a contiguous view, got axis {axis} of {s}")
        })?;
        let end = start + len;
        let nonnegative =
            self.domain.proves_nonnegative(start) && self.domain.proves_nonnegative(len);
        ensure(nonnegative, op, name, || {
            format!("start {start} and length {len} must be provably >= 0")
        })?;
        ensure(self.domain.proves_ge(&s.0[ax], &end), op, name, || {
            format!("end {end} may exceed dim {} of {s}", s.0[ax])
        })?;
        let mut dims = s.0.clone();
        dims[ax] = len.clone();
        let alias = (kind == Window::Narrow).then_some(x);
        self.push_op(op, name, &[x], Shape(dims), dt, alias)
    }

    /// Rows of `x` along `axis` picked by integer `ids`: `x[.., ids, ..]`, the ids' shape
    /// replacing that axis.
    pub fn gather(
        &mut self,
        name: &str,
        x: TensorId,
        axis: isize,
        ids: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "gather";
        let ((s, dt), (si, di)) = (self.info(x)?, self.info(ids)?);
        ensure(di == DType::I32, OP, name, || {
            format!("ids must be i32, got {di:?}")
        })?;
        let ax = axis_index(OP, name, axis, s.rank())?;
        let mut dims = s.0[..ax].to_vec();
        dims.extend(si.0.iter().cloned());
        dims.extend(s.0[ax + 1..].iter().cloned());
        self.push_op(OP, name, &[x, ids], Shape(dims), dt, None)
    }

    /// Embedding lookup: `table [vocab, d]`, `ids [..]` → `[.., d]`.
    pub fn embedding(
        &mut self,
        name: &str,
        table: TensorId,
        ids: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        let st = self.shape(table)?;
        ensure(st.rank() == 2, "embedding", name, || {
            format!("table must be [vocab, d], got {st}")
        })?;
        self.gather(name, table, 0, ids)
    }

    fn norm(
        &mut self,
        op: &'static str,
        name: &str,
        x: TensorId,
        params: &[TensorId],
    ) -> Result<TensorId, SymShapeError> {
        let (s, dt) = self.info(x)?;
        let last =
            s.0.last()
                .cloned()
                .ok_or_else(|| err(op, name, "input has rank 0"))?;
        for p in params {
            let sp = self.shape(*p)?;
            ensure(
                sp.rank() == 1 && self.same(&sp.0[0], &last),
                op,
                name,
                || format!("parameter {sp} must be [{last}] to match {s}"),
            )?;
        }
        let mut inputs = vec![x];
        inputs.extend_from_slice(params);
        self.push_op(op, name, &inputs, s, dt, None)
    }

    /// RMSNorm over the last axis with weight `[d]`.
    pub fn rms_norm(
        &mut self,
        name: &str,
        x: TensorId,
        weight: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        self.norm("rms_norm", name, x, &[weight])
    }

    /// LayerNorm over the last axis with weight and bias `[d]`.
    pub fn layer_norm(
        &mut self,
        name: &str,
        x: TensorId,
        weight: TensorId,
        bias: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        self.norm("layer_norm", name, x, &[weight, bias])
    }

    /// Rotary position embedding on `x [.., seq, heads, head_dim]` for positions
    /// `pos_start .. pos_start + seq`, using a `[rows, head_dim]` table of cos|sin halves.
    /// `head_dim` must be even and `rows ≥ pos_start + seq` provable.
    pub fn rotary(
        &mut self,
        name: &str,
        x: TensorId,
        table: TensorId,
        pos_start: &Expr,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "rotary";
        let ((s, dt), (st, _)) = (self.info(x)?, self.info(table)?);
        ensure(s.rank() >= 3 && st.rank() == 2, OP, name, || {
            format!(
                "needs x [.., seq, heads, head_dim] and table [rows, head_dim], got {s} and {st}"
            )
        })?;
        let hd = &s.0[s.rank() - 1];
        let seq = &s.0[s.rank() - 3];
        let even = matches!(hd.as_constant(), Some(c) if c % 2 == 0);
        ensure(even, OP, name, || {
            format!("head_dim {hd} must be an even constant")
        })?;
        ensure(self.same(&st.0[1], hd), OP, name, || {
            format!("table width {} differs from head_dim {hd}", st.0[1])
        })?;
        let end = pos_start + seq;
        ensure(self.domain.proves_ge(&st.0[0], &end), OP, name, || {
            format!(
                "table rows {} may be fewer than positions end {end}",
                st.0[0]
            )
        })?;
        self.push_op(OP, name, &[x, table], s, dt, None)
    }

    fn gqa_groups(
        &self,
        op: &'static str,
        name: &str,
        heads: &Expr,
        kv_heads: &Expr,
    ) -> Result<(), SymShapeError> {
        heads.div_exact(kv_heads).map(|_| ()).ok_or_else(|| {
            err(
                op,
                name,
                format!("query heads {heads} are not a multiple of kv heads {kv_heads}"),
            )
        })
    }

    /// Fused attention with grouped KV heads: `q [s, h, d]`, `k [t, kvh, d]`, `v [t, kvh, dv]`
    /// → `[s, h, dv]`, with `h` a multiple of `kvh`.
    pub fn attention(
        &mut self,
        name: &str,
        q: TensorId,
        k: TensorId,
        v: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "attention";
        let ((sq, dt), (sk, _), (sv, _)) = (self.info(q)?, self.info(k)?, self.info(v)?);
        ensure(
            sq.rank() == 3 && sk.rank() == 3 && sv.rank() == 3,
            OP,
            name,
            || format!("needs q [s, h, d], k [t, kvh, d], v [t, kvh, dv]; got {sq}, {sk}, {sv}"),
        )?;
        self.check_qk(OP, name, &sq, &sk)?;
        let kv_match = self.same(&sk.0[0], &sv.0[0]) && self.same(&sk.0[1], &sv.0[1]);
        ensure(kv_match, OP, name, || {
            format!("k {sk} and v {sv} differ in length or heads")
        })?;
        let dims = vec![sq.0[0].clone(), sq.0[1].clone(), sv.0[2].clone()];
        self.push_op(OP, name, &[q, k, v], Shape(dims), dt, None)
    }

    fn check_qk(
        &self,
        op: &'static str,
        name: &str,
        sq: &Shape,
        sk: &Shape,
    ) -> Result<(), SymShapeError> {
        ensure(self.same(&sq.0[2], &sk.0[2]), op, name, || {
            format!("head dims differ: q {sq} vs k {sk}")
        })?;
        self.gqa_groups(op, name, &sq.0[1], &sk.0[1])
    }

    /// Attention scores with grouped KV heads: `q [s, h, d]`, `k [t, kvh, d]` → `[h, s, t]`
    /// (stored as `dtype`, usually f32).
    pub fn attention_scores(
        &mut self,
        name: &str,
        q: TensorId,
        k: TensorId,
        dtype: DType,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "attention_scores";
        let ((sq, _), (sk, _)) = (self.info(q)?, self.info(k)?);
        ensure(sq.rank() == 3 && sk.rank() == 3, OP, name, || {
            format!("needs q [s, h, d] and k [t, kvh, d]; got {sq}, {sk}")
        })?;
        self.check_qk(OP, name, &sq, &sk)?;
        let dims = vec![sq.0[1].clone(), sq.0[0].clone(), sk.0[0].clone()];
        self.push_op(OP, name, &[q, k], Shape(dims), dtype, None)
    }

    /// Weighted sum of values: `p [h, s, t]`, `v [t, kvh, dv]` → `[s, h, dv]` in `v`'s dtype.
    pub fn attention_values(
        &mut self,
        name: &str,
        p: TensorId,
        v: TensorId,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "attention_values";
        let ((sp, _), (sv, dt)) = (self.info(p)?, self.info(v)?);
        ensure(sp.rank() == 3 && sv.rank() == 3, OP, name, || {
            format!("needs p [h, s, t] and v [t, kvh, dv]; got {sp}, {sv}")
        })?;
        ensure(self.same(&sp.0[2], &sv.0[0]), OP, name, || {
            format!("key lengths differ: p {sp} vs v {sv}")
        })?;
        self.gqa_groups(OP, name, &sp.0[0], &sv.0[1])?;
        let dims = vec![sp.0[1].clone(), sp.0[0].clone(), sv.0[2].clone()];
        self.push_op(OP, name, &[p, v], Shape(dims), dt, None)
    }

    /// Softmax along `axis`; same shape.
    pub fn softmax(
        &mut self,
        name: &str,
        x: TensorId,
        axis: isize,
    ) -> Result<TensorId, SymShapeError> {
        let (s, dt) = self.info(x)?;
        axis_index("softmax", name, axis, s.rank())?;
        self.push_op("softmax", name, &[x], s, dt, None)
    }

    /// Reduces `axis` (kept as size 1 when `keep_dim`).
    pub fn reduce(
        &mut self,
        name: &str,
        x: TensorId,
        kind: Reduce,
        axis: isize,
        keep_dim: bool,
    ) -> Result<TensorId, SymShapeError> {
        let op = match kind {
            Reduce::Sum => "reduce_sum",
            Reduce::Mean => "reduce_mean",
            Reduce::Max => "reduce_max",
        };
        let (s, dt) = self.info(x)?;
        let ax = axis_index(op, name, axis, s.rank())?;
        let mut dims = s.0.clone();
        if keep_dim {
            dims[ax] = one();
        } else {
            dims.remove(ax);
        }
        self.push_op(op, name, &[x], Shape(dims), dt, None)
    }

    /// Writes `new` into `dest` at `offset` along `axis` in place (a sub-tensor write, e.g. new
    /// keys into the KV cache). Other dims must match and `offset + len ≤ dim` must be provable.
    /// The output is `dest` itself (an alias), so later readers depend on the write.
    pub fn write_into(
        &mut self,
        name: &str,
        dest: TensorId,
        new: TensorId,
        axis: isize,
        offset: &Expr,
    ) -> Result<TensorId, SymShapeError> {
        const OP: &str = "write_into";
        let ((sd, dt), (sn, dn)) = (self.info(dest)?, self.info(new)?);
        ensure(dt == dn && sd.rank() == sn.rank(), OP, name, || {
            format!("dest {sd} {dt:?} and new {sn} {dn:?} differ in rank or dtype")
        })?;
        let ax = axis_index(OP, name, axis, sd.rank())?;
        self.check_other_axes(OP, name, &sd, &sn, ax, |i, d, n| {
            format!("axis {i} differs: dest {d} vs new {n}")
        })?;
        let end = offset + &sn.0[ax];
        let inside =
            self.domain.proves_nonnegative(offset) && self.domain.proves_ge(&sd.0[ax], &end);
        ensure(inside, OP, name, || {
            format!(
                "rows {offset} .. {end} may fall outside dest dim {}",
                sd.0[ax]
            )
        })?;
        self.push_op(OP, name, &[dest, new], sd, dt, Some(dest))
    }
}
