//! The memory planner: lifetimes from the op order, buffers shared only where a proof allows.
//!
//! Every activation occupies one buffer for the ops `[produced, last read]` (inclusive, so an op
//! never writes into a buffer one of its inputs still uses). A buffer is reused by a later tensor
//! only when its occupants are dead and either `size ≥ bytes` or `bytes ≥ size` is proven on the
//! whole domain ([`Domain::proves_ge`]); in the second case the buffer grows to the new tensor's
//! expression, which still covers the earlier occupants by transitivity. When neither is proven
//! the tensor gets a buffer of its own. Buffers are laid out back to back in one arena.

use std::collections::HashMap;

use crate::domain::Domain;
use crate::error::SymShapeError;
use crate::eval::Program;
use crate::expr::Expr;
use crate::graph::{Graph, Storage, TensorId};

/// Planner settings.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Byte alignment of each buffer's start in the arena (a power of two).
    pub alignment: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { alignment: 256 }
    }
}

/// One reusable buffer.
#[derive(Debug, Clone)]
pub struct BufferPlan {
    /// Size in bytes; proven ≥ each occupant's bytes on the domain.
    pub size: Expr,
    /// Occupants, in the order they use the buffer.
    pub tensors: Vec<TensorId>,
}

/// Where a tensor lives for one concrete point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Buffer index in [`MemoryPlan::buffers`].
    pub buffer: usize,
    /// Byte offset of the tensor in the arena.
    pub offset: u64,
    /// The tensor's bytes at this point.
    pub bytes: u64,
}

/// Concrete values of a plan at one point, filled by [`MemoryPlan::evaluate_into`].
#[derive(Debug, Clone, Default)]
pub struct PlanValues {
    exprs: Vec<i64>,
    /// Arena offset of each buffer.
    pub buffer_offsets: Vec<u64>,
    /// Bytes of each buffer (before alignment padding).
    pub buffer_bytes: Vec<u64>,
    /// Total arena bytes including padding.
    pub arena_bytes: u64,
}

/// A memory plan for a [`Graph`], with its compiled evaluator.
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    domain: Domain,
    alignment: u64,
    buffers: Vec<BufferPlan>,
    /// Per tensor: buffer of its storage root (`None` for external memory).
    placement: Vec<Option<usize>>,
    /// Per tensor: `[first op, last op]` of its storage root, for activations.
    lifetimes: Vec<Option<(usize, usize)>>,
    /// Per tensor: index of its bytes expression, and of each dim, in `program`.
    bytes_slot: Vec<u32>,
    dim_slots: Vec<Vec<u32>>,
    buffer_slot: Vec<u32>,
    program: Program,
    peak: Expr,
    naive: Expr,
}

struct Interner {
    map: HashMap<Expr, u32>,
    list: Vec<(String, Expr)>,
}

impl Interner {
    fn get(&mut self, what: &str, e: &Expr) -> u32 {
        if let Some(i) = self.map.get(e) {
            return *i;
        }
        let i = self.list.len() as u32;
        self.map.insert(e.clone(), i);
        self.list.push((what.to_owned(), e.clone()));
        i
    }
}

impl Graph {
    /// Plans the activations' memory (see the module docs) and compiles the evaluator.
    pub fn plan(&self, options: PlanOptions) -> Result<MemoryPlan, SymShapeError> {
        if !options.alignment.is_power_of_two() {
            return Err(SymShapeError::InvalidDims(format!(
                "alignment {} is not a power of two",
                options.alignment
            )));
        }
        let n = self.tensors.len();
        let end = self.ops.len();
        // Lifetimes of storage roots.
        let mut life: Vec<Option<(usize, usize)>> = vec![None; n];
        for (i, t) in self.tensors.iter().enumerate() {
            if t.storage == Storage::Activation {
                let p = t.producer.unwrap_or(0);
                life[i] = Some((p, p));
            }
        }
        let extend = |life: &mut Vec<Option<(usize, usize)>>, t: TensorId, at: usize| {
            let root = self.storage_root(t);
            if let Some(Some((_, last))) = life.get_mut(root.0) {
                *last = (*last).max(at);
            }
        };
        for (k, op) in self.ops.iter().enumerate() {
            for t in op.inputs.iter().chain(&op.outputs) {
                extend(&mut life, *t, k);
            }
        }
        for t in &self.outputs {
            extend(&mut life, *t, end);
        }

        // Greedy placement in production order.
        let d = &self.domain;
        let mut buffers: Vec<BufferPlan> = Vec::new();
        let mut busy_until: Vec<usize> = Vec::new();
        let mut placement: Vec<Option<usize>> = vec![None; n];
        for (i, (tensor, span)) in self.tensors.iter().zip(&life).enumerate() {
            let Some((first, last)) = *span else { continue };
            let bytes = tensor.bytes();
            let corner = |e: &Expr| d.at_upper_corner(e).unwrap_or(i128::MAX);
            let free: Vec<usize> = (0..buffers.len())
                .filter(|b| busy_until[*b] < first)
                .collect();
            let fits = free
                .iter()
                .copied()
                .filter(|b| d.proves_ge(&buffers[*b].size, &bytes))
                .min_by_key(|b| corner(&buffers[*b].size));
            let grows = || {
                free.iter()
                    .copied()
                    .filter(|b| d.proves_ge(&bytes, &buffers[*b].size))
                    .max_by_key(|b| corner(&buffers[*b].size))
            };
            let b = match fits.or_else(grows) {
                Some(b) => {
                    if !d.proves_ge(&buffers[b].size, &bytes) {
                        buffers[b].size = bytes.clone();
                    }
                    b
                }
                None => {
                    buffers.push(BufferPlan {
                        size: bytes.clone(),
                        tensors: Vec::new(),
                    });
                    busy_until.push(0);
                    buffers.len() - 1
                }
            };
            buffers[b].tensors.push(TensorId(i));
            busy_until[b] = last;
            placement[i] = Some(b);
        }

        // Aliases share their root's buffer and lifetime.
        let mut lifetimes = vec![None; n];
        for (i, lifetime) in lifetimes.iter_mut().enumerate() {
            let root = self.storage_root(TensorId(i)).0;
            placement[i] = placement[root];
            *lifetime = life[root];
        }

        let peak = buffers
            .iter()
            .fold(Expr::constant(0), |acc, b| acc + &b.size);
        let naive = (0..n)
            .filter(|i| self.tensors[*i].storage == Storage::Activation)
            .fold(Expr::constant(0), |acc, i| acc + self.tensors[i].bytes());

        let mut interner = Interner {
            map: HashMap::new(),
            list: Vec::new(),
        };
        let mut bytes_slot = Vec::with_capacity(n);
        let mut dim_slots = Vec::with_capacity(n);
        for t in &self.tensors {
            bytes_slot.push(interner.get(&t.name, &t.bytes()));
            dim_slots.push(t.shape.0.iter().map(|e| interner.get(&t.name, e)).collect());
        }
        let buffer_slot = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| interner.get(&format!("buffer {i}"), &b.size))
            .collect();
        interner.get("peak", &peak);
        let program = Program::compile(d, &interner.list)?;

        Ok(MemoryPlan {
            domain: self.domain.clone(),
            alignment: options.alignment,
            buffers,
            placement,
            lifetimes,
            bytes_slot,
            dim_slots,
            buffer_slot,
            program,
            peak,
            naive,
        })
    }
}

impl MemoryPlan {
    /// The symbol domain; [`Domain::ranges`] gives the slot order of `evaluate`'s input.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The buffers.
    pub fn buffers(&self) -> &[BufferPlan] {
        &self.buffers
    }

    /// The buffer holding `t` (its storage root's), or `None` for external memory.
    pub fn buffer_of(&self, t: TensorId) -> Option<usize> {
        self.placement.get(t.0).copied().flatten()
    }

    /// `[first op, last op]` during which `t`'s storage is live (`None` for external memory).
    pub fn lifetime(&self, t: TensorId) -> Option<(usize, usize)> {
        self.lifetimes.get(t.0).copied().flatten()
    }

    /// Σ buffer sizes: the arena's bytes before alignment padding, as an expression.
    pub fn peak_bytes(&self) -> &Expr {
        &self.peak
    }

    /// Σ bytes of all activations: what giving every activation its own buffer would cost.
    pub fn naive_bytes(&self) -> &Expr {
        &self.naive
    }

    /// Number of distinct expressions the evaluator computes per call.
    pub fn compiled_expression_count(&self) -> usize {
        self.program.len()
    }

    /// Symbol values in slot order from `(name, value)` pairs; every symbol must be given.
    pub fn bind(&self, values: &[(&str, i64)]) -> Result<Vec<i64>, SymShapeError> {
        let mut out = Vec::with_capacity(self.domain.ranges().len());
        for r in self.domain.ranges() {
            let v = values
                .iter()
                .find(|(n, _)| *n == r.symbol.name())
                .ok_or_else(|| {
                    SymShapeError::UnknownSymbol(format!("{} (no value given)", r.symbol))
                })?;
            out.push(v.1);
        }
        if values.len() != out.len() {
            return Err(SymShapeError::WrongBindingCount {
                expected: out.len(),
                got: values.len(),
            });
        }
        Ok(out)
    }

    /// Evaluates every size, dim and offset for symbol values in slot order, reusing `out`'s
    /// storage (no allocation after the first call). This is the per-step path.
    pub fn evaluate_into(&self, slots: &[i64], out: &mut PlanValues) -> Result<(), SymShapeError> {
        self.domain.check_point(slots)?;
        out.exprs.resize(self.program.len(), 0);
        self.program.run(slots, &mut out.exprs);
        out.buffer_offsets.resize(self.buffers.len(), 0);
        out.buffer_bytes.resize(self.buffers.len(), 0);
        let mask = self.alignment - 1;
        let mut offset = 0u64;
        for (b, slot) in self.buffer_slot.iter().enumerate() {
            // Sizes are proven ≥ 0 on the domain (they are products of non-negative dims).
            let bytes = out.exprs[*slot as usize].max(0) as u64;
            out.buffer_offsets[b] = offset;
            out.buffer_bytes[b] = bytes;
            offset += (bytes + mask) & !mask;
        }
        out.arena_bytes = offset;
        Ok(())
    }

    /// [`MemoryPlan::evaluate_into`] into fresh storage.
    pub fn evaluate(&self, slots: &[i64]) -> Result<PlanValues, SymShapeError> {
        let mut v = PlanValues::default();
        self.evaluate_into(slots, &mut v)?;
        Ok(v)
    }

    /// Where activation `t` lives at the evaluated point (`None` for external memory).
    pub fn location(&self, values: &PlanValues, t: TensorId) -> Option<Location> {
        let buffer = self.buffer_of(t)?;
        Some(Location {
            buffer,
            offset: *values.buffer_offsets.get(buffer)?,
            bytes: self.tensor_bytes(values, t)?,
        })
    }

    /// Bytes of `t` at the evaluated point.
    pub fn tensor_bytes(&self, values: &PlanValues, t: TensorId) -> Option<u64> {
        let slot = *self.bytes_slot.get(t.0)?;
        values.exprs.get(slot as usize).map(|v| (*v).max(0) as u64)
    }

    /// Concrete dim `axis` of `t` at the evaluated point.
    pub fn dim(&self, values: &PlanValues, t: TensorId, axis: usize) -> Option<i64> {
        let slot = *self.dim_slots.get(t.0)?.get(axis)?;
        values.exprs.get(slot as usize).copied()
    }

    /// Concrete dims of `t` at the evaluated point.
    pub fn dims(&self, values: &PlanValues, t: TensorId) -> Option<Vec<i64>> {
        let slots = self.dim_slots.get(t.0)?;
        slots
            .iter()
            .map(|s| values.exprs.get(*s as usize).copied())
            .collect()
    }
}
