//! Causal grouped-query attention over the `kvcache` layout and the in-place K/V append (`attention.cl`).
//!
//! K and V are read where the cache keeps them: a [`KvOperand`] is a cache buffer (or sub-buffer) plus the
//! [`kvcache::KvView`] that says where the heads and positions are, so attention needs no copy of the cache and the
//! append writes each step's K (rotated) and V straight into the step's write view. In decode,
//! [`Attention::enqueue_with_fresh`] does the rotary and the append inside the attention launch itself.
//!
//! A short decode is bound by latency, not bandwidth, so [`Attention::plan`] picks the kernel by context length:
//! one 256-wide work-group per head while the whole context is one block of loads (no partial results to
//! merge), and beyond that the context split across 64-wide groups of the same kernel, about four per compute
//! unit; the older position-per-work-item kernel serves prefill and layouts the row kernel cannot read. Measured on the H100 only (bench/RESULTS.md); on phones the wide build
//! is skipped where local memory is 32 KiB.

use std::marker::PhantomData;
use std::sync::Mutex;

use kvcache::{KvDtype, KvView};
use opencl3::memory::ClMem;
use opencl3::types::cl_mem;

use super::rope::{HeadsLayout, RopeConfig};
use super::{check_len, program_source, shape_error, to_u32, Arg, KernelError, LockedKernel};
use crate::runtime::{DeviceBuffer, DeviceKind, Gpu};

const SOURCE: crate::runtime::ProgramSource = program_source!("attention", "attention.cl");

/// Work-items per attention work-group (positions scored at once by `attn_partial`).
const ATT_WG: usize = 64;
/// Rows of K and of V each `attn_rows` work-item loads per block (`ATT_ROWS`).
const ROWS_PER_ITEM: usize = 8;
/// Work-groups per compute unit Auto splits a decode into for `attn_rows` (the split policy's 8 suits
/// `attn_partial`): it holds a block's loads in registers, so fewer of its groups fit a unit, and at 8 its groups
/// spill into a second wave. H100, 32 heads x 128 (bench/RESULTS.md): at 4 per unit it beats `attn_partial` at
/// every context measured, 512 to 4096 positions (34.8 against 40.3 us at 4096).
const ROWS_GROUPS_PER_UNIT: usize = 4;
/// The one-group-per-head build of `attn_rows`: work-items per group and rows per work-item per block.
const WIDE_WG: usize = 256;
const WIDE_ROWS_PER_ITEM: usize = 16;
/// Local memory the wide build needs, rounded up (its arrays are ~31 KiB, sized for head_dim 32 and 256).
const WIDE_LOCAL_BYTES: u64 = 36 << 10;
/// Most splits of one (token, head) (`ATT_MAX_SPLITS`: the merge keeps each split's maximum and sum in local
/// memory).
const MAX_SPLITS: usize = 256;
/// Largest head dimension the kernels hold in local memory.
pub const MAX_HEAD_DIM: usize = 256;

/// How decode (few query rows) splits the context across work-groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPolicy {
    /// Split until there are about this many work-groups per compute unit.
    pub groups_per_unit: usize,
    /// Fewest positions per split (splits are whole multiples of this).
    pub min_chunk: usize,
}

impl Default for SplitPolicy {
    fn default() -> Self {
        // H100 sweep (bench/RESULTS.md): 8 groups per unit took ctx-4096 decode from 45.5 to 41.0 us; 2 and 16
        // were slower; 192 positions were ~11 us whatever the policy (latency-bound).
        SplitPolicy {
            groups_per_unit: 8,
            min_chunk: 32,
        }
    }
}

/// Which kernel walks the context. All give the same results; they differ in how loads are ordered and in
/// whether splits of the context need merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionWalk {
    /// For one-token steps where the cache layout allows it: [`AttentionKernel::WideRows`] when the whole
    /// context is one block of it, else [`AttentionKernel::Rows`] split into about 4 work-groups per compute unit
    /// (the split policy's `min_chunk` still applies; its `groups_per_unit` is for `attn_partial`); prefill and
    /// layouts `attn_rows` cannot take use `attn_partial`. On the H100 (32 heads x 128, bench/RESULTS.md): 192
    /// positions 14.6 / 10.3 / 9.0 us (`attn_partial` / split rows / wide), 1024 positions 20.7 / 17.3 / 25.4,
    /// 4096 positions 40.3 / 34.8 / 82.7.
    #[default]
    Auto,
    /// Split `attn_rows` wherever the cache layout allows it, prefill included.
    Rows,
    /// One 256-wide `attn_rows` work-group per (token, head) and no split, wherever the layout and the device
    /// allow it (else as `Rows`).
    WideRows,
    /// Always `attn_partial`: a work-item scores whole key rows and the values are loaded after each block's
    /// softmax (the kernel before `attn_rows`; kept for layouts `attn_rows` cannot take and for comparison).
    Positions,
}

/// The kernel a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// `attn_partial`, `splits` work-groups per (token, head).
    Positions,
    /// `attn_rows` at 64 work-items, `splits` work-groups per (token, head).
    Rows,
    /// `attn_rows` at 256 work-items, one work-group per (token, head) (`splits` is 1).
    WideRows,
}

/// How a call is run: which kernel, and into how many splits the context is cut (merged in the same launch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionPlan {
    /// The kernel.
    pub kernel: AttentionKernel,
    /// Work-groups per (token, head), each over `chunk` positions.
    pub splits: usize,
    /// Positions per split.
    pub chunk: usize,
}

/// One cache buffer as a kernel operand: the `cl_mem` (whole buffer or sub-buffer) and the view into it.
#[derive(Debug, Clone, Copy)]
pub struct KvOperand<'a> {
    mem: cl_mem,
    bytes: usize,
    view: KvView,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> KvOperand<'a> {
    /// A view into an OpenCL buffer (a [`crate::kv_storage::ClKvBuffer`] or a sub-buffer region).
    pub fn new<T>(
        buffer: &'a opencl3::memory::Buffer<T>,
        view: KvView,
    ) -> Result<Self, KernelError> {
        let bytes = buffer
            .size()
            .map_err(|e| crate::runtime::ClError::from_code("clGetMemObjectInfo", e.0))?;
        Ok(KvOperand {
            mem: buffer.get(),
            bytes,
            view,
            _borrow: PhantomData,
        })
    }

    /// A view into a buffer whose size the caller already knows (the KV storage keeps it, so a step need not ask
    /// the driver with `clGetMemObjectInfo` for every layer).
    pub(crate) fn from_sized_mem(mem: cl_mem, bytes: usize, view: KvView) -> Self {
        KvOperand {
            mem,
            bytes,
            view,
            _borrow: PhantomData,
        }
    }

    /// A view into a typed device buffer (tests and tools that keep K/V outside a `kvcache` sequence).
    pub fn from_device_buffer<T: bytemuck::Pod>(buffer: &'a DeviceBuffer<T>, view: KvView) -> Self {
        KvOperand {
            mem: buffer.raw().get(),
            bytes: buffer.byte_len(),
            view,
            _borrow: PhantomData,
        }
    }

    /// The view.
    pub fn view(&self) -> &KvView {
        &self.view
    }

    /// The buffer to pass as the kernel argument (other launchers of the crate take cache operands too).
    pub(crate) fn mem(&self) -> cl_mem {
        self.mem
    }

    pub(crate) fn check(&self, kernel: &'static str, what: &str) -> Result<(), KernelError> {
        let end = self.view.end_elems() * self.view.dtype.bytes();
        if end > self.bytes as u64 {
            return Err(shape_error(
                kernel,
                format!(
                    "{what} view ends at byte {end} but its buffer has {} bytes",
                    self.bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Shape of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// New query tokens (1 in decode).
    pub seq: usize,
    /// Tokens already in the cache; query `t` attends positions `0..=past + t`.
    pub past: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (a divisor of `heads`).
    pub kv_heads: usize,
    /// Head dimension (at most [`MAX_HEAD_DIM`]).
    pub head_dim: usize,
}

struct Scratch {
    ml: Option<DeviceBuffer<f32>>,
    o: Option<DeviceBuffer<f32>>,
    /// Per (token, head): how many splits have finished (zero between launches; the merging work-group resets
    /// its counter).
    counters: Option<DeviceBuffer<u32>>,
}

/// The decode token [`Attention::enqueue_with_fresh`] takes from the fused QKV output: where its key and value heads
/// are, and the rotary embedding to apply to q and k.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreshToken {
    /// Its key heads in the QKV buffer.
    pub k: HeadsLayout,
    /// Its value heads in the QKV buffer.
    pub v: HeadsLayout,
    /// Rotary embedding of q and k (position `past`).
    pub rope: RopeConfig,
}

/// Attention and K/V-append launcher.
pub struct Attention {
    gpu: Gpu,
    partial_f32: LockedKernel,
    partial_f16: LockedKernel,
    rows_f32: LockedKernel,
    rows_f16: LockedKernel,
    /// The 256-wide `attn_rows` (f32, f16 cache), where the device runs groups that wide (see [`wide_kernels`]).
    wide: Option<(LockedKernel, LockedKernel)>,
    write_f32: LockedKernel,
    write_f16: LockedKernel,
    fused_write_f32: LockedKernel,
    fused_write_f16: LockedKernel,
    split: SplitPolicy,
    walk: AttentionWalk,
    scratch: Mutex<Scratch>,
}

impl std::fmt::Debug for Attention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attention").finish_non_exhaustive()
    }
}

/// `attn_rows` needs rows on 8-element boundaries (16- or 32-byte loads) and `head_dim / 8` work-items per row,
/// at least 4, dividing the work-group (64 or 256 work-items: the same condition).
fn rows_fit(head_dim: usize, view: &KvView) -> bool {
    let vg = head_dim / 8;
    let aligned = [
        head_dim as u64,
        view.offset_elems,
        view.head_stride_elems,
        view.position_stride_elems,
    ]
    .iter()
    .all(|x| x % 8 == 0);
    aligned && vg >= 4 && ATT_WG.is_multiple_of(vg)
}

/// The wide `attn_rows` builds (f32, f16 cache), or `None` where the device cannot run them: fewer than 256
/// work-items per group, too little local memory (phones have 32 KiB), or a driver that refuses or shrinks the
/// build. Decode then splits the context as before.
fn wide_kernels(
    gpu: &Gpu,
    build: impl Fn(bool) -> Result<LockedKernel, KernelError>,
) -> Option<(LockedKernel, LockedKernel)> {
    let caps = gpu.caps();
    if caps.max_work_group_size < WIDE_WG || caps.local_mem_bytes < WIDE_LOCAL_BYTES {
        return None;
    }
    let runs_wide = |k: &LockedKernel| matches!(k.max_work_group_size(gpu), 0 | WIDE_WG..);
    match (build(false), build(true)) {
        (Ok(f32), Ok(f16)) if runs_wide(&f32) && runs_wide(&f16) => Some((f32, f16)),
        (Ok(_), Ok(_)) => None,
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!(%err, "the one-group-per-head attention build failed; decode splits the context");
            None
        }
    }
}

/// One build's defines: work-group size, `attn_rows` rows per work-item, f16 or f32 cache, then the rest.
fn program_defines<'a>(
    work_group: &'a str,
    rows_per_item: &'a str,
    f16: bool,
    common: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut d = vec![("ATT_WG", work_group), ("ATT_ROWS", rows_per_item)];
    d.extend_from_slice(common);
    if f16 {
        d.push(("KV_F16", "1"));
    }
    d.extend_from_slice(extra);
    d
}

/// Positions one block of an `attn_rows` build covers (all loaded at once).
fn rows_block(head_dim: usize, work_group: usize, rows_per_item: usize) -> usize {
    work_group / (head_dim / 8).max(1) * rows_per_item
}

fn grow(gpu: &Gpu, slot: &mut Option<DeviceBuffer<f32>>, len: usize) -> Result<(), KernelError> {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = Some(DeviceBuffer::new(gpu, len.max(1))?);
    }
    Ok(())
}

impl Attention {
    /// Builds the kernels for both cache element types.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Self::with_defines(gpu, &[])
    }

    /// As [`Attention::new`], with extra compiler defines for kernel experiments and diagnostics (e.g.
    /// `ATT_DIAG_NO_KV`, `ATT_DIAG_NO_MERGE`, whose results are wrong by design; see `attention.cl`).
    pub fn with_defines(gpu: &Gpu, extra: &[(&str, &str)]) -> Result<Self, KernelError> {
        let wg = ATT_WG.to_string();
        let hd = MAX_HEAD_DIM.to_string();
        let splits = MAX_SPLITS.to_string();
        let rows = ROWS_PER_ITEM.to_string();
        let (wide_wg, wide_rows) = (WIDE_WG.to_string(), WIDE_ROWS_PER_ITEM.to_string());
        let common = [
            ("ATT_MAX_HD", hd.as_str()),
            ("ATT_MAX_SPLITS", splits.as_str()),
        ];
        let build = |wg, rows, f16| program_defines(wg, rows, f16, &common, extra);
        let base = build(wg.as_str(), rows.as_str(), false);
        let f16 = build(wg.as_str(), rows.as_str(), true);
        // The softmax's work-group maximum and sum through warp shuffles where NVIDIA's compiler takes them.
        let shuffled = |defines: &[(&str, &str)], name| {
            LockedKernel::build_with_warp_shuffle(gpu, &SOURCE, defines, name, true)
                .map(|(kernel, _)| kernel)
        };
        Ok(Attention {
            gpu: gpu.clone(),
            partial_f32: shuffled(&base, "attn_partial")?,
            partial_f16: shuffled(&f16, "attn_partial")?,
            rows_f32: shuffled(&base, "attn_rows")?,
            rows_f16: shuffled(&f16, "attn_rows")?,
            wide: wide_kernels(gpu, |f16| {
                shuffled(
                    &build(wide_wg.as_str(), wide_rows.as_str(), f16),
                    "attn_rows",
                )
            }),
            write_f32: LockedKernel::build(gpu, &SOURCE, &base, "kv_write")?,
            write_f16: LockedKernel::build(gpu, &SOURCE, &f16, "kv_write")?,
            fused_write_f32: LockedKernel::build(gpu, &SOURCE, &base, "qkv_rope_write")?,
            fused_write_f16: LockedKernel::build(gpu, &SOURCE, &f16, "qkv_rope_write")?,
            split: SplitPolicy::default(),
            // A CPU device pays for attn_rows' wide groups and local-memory staging as loops and copies;
            // attn_partial measured faster there at every context (bench/RESULTS.md).
            walk: if gpu.caps().kind == DeviceKind::Cpu {
                AttentionWalk::Positions
            } else {
                AttentionWalk::Auto
            },
            scratch: Mutex::new(Scratch {
                ml: None,
                o: None,
                counters: None,
            }),
        })
    }

    /// Replaces the decode split policy (for tuning; the default suits the devices measured so far).
    pub fn set_split_policy(&mut self, policy: SplitPolicy) {
        self.split = SplitPolicy {
            groups_per_unit: policy.groups_per_unit.max(1),
            min_chunk: policy.min_chunk.max(1),
        };
    }

    /// Chooses the context-walking kernel (for comparison; the default, `Auto` or `Positions` on a CPU device,
    /// suits the devices measured so far).
    pub fn set_walk(&mut self, walk: AttentionWalk) {
        self.walk = walk;
    }

    /// Whether this device runs the one-group-per-head build (256-wide groups and 36 KiB of local memory).
    pub fn has_wide(&self) -> bool {
        self.wide.is_some()
    }

    /// How a call of `shape` over caches laid out as `view` is run.
    pub fn plan(&self, shape: &AttentionShape, view: &KvView) -> AttentionPlan {
        let n_keys = shape.past + shape.seq;
        // `kernel` over the context split into about `groups_per_unit` work-groups per compute unit.
        let split_at = |kernel, groups_per_unit| {
            let (splits, chunk) = self.split_plan_at(shape, groups_per_unit);
            AttentionPlan {
                kernel,
                splits,
                chunk,
            }
        };
        let split = |kernel| split_at(kernel, self.split.groups_per_unit);
        let wide = AttentionPlan {
            kernel: AttentionKernel::WideRows,
            splits: 1,
            chunk: n_keys,
        };
        if !rows_fit(shape.head_dim, view) {
            return split(AttentionKernel::Positions);
        }
        let has_wide = self.has_wide();
        match self.walk {
            AttentionWalk::Auto if shape.seq == 1 => {
                if has_wide && n_keys <= rows_block(shape.head_dim, WIDE_WG, WIDE_ROWS_PER_ITEM) {
                    wide
                } else {
                    split_at(AttentionKernel::Rows, ROWS_GROUPS_PER_UNIT)
                }
            }
            AttentionWalk::Auto | AttentionWalk::Positions => split(AttentionKernel::Positions),
            AttentionWalk::Rows => split(AttentionKernel::Rows),
            AttentionWalk::WideRows if has_wide => wide,
            AttentionWalk::WideRows => split(AttentionKernel::Rows),
        }
    }

    /// How many context splits the split kernels cut a call of `shape` into (see [`Attention::plan`] for what a
    /// call actually runs).
    pub fn splits(&self, shape: &AttentionShape) -> usize {
        self.split_plan(shape).0
    }

    /// `(splits, positions per split)`. One work-group walks its positions serially, so a decode step with few
    /// heads splits even a short context until there are about `groups_per_unit` work-groups per compute unit
    /// (32 heads on a 132-unit H100 at 192 positions: 6 splits of 32 instead of one work-group per head), at the
    /// price of the merge the last split does.
    fn split_plan(&self, shape: &AttentionShape) -> (usize, usize) {
        self.split_plan_at(shape, self.split.groups_per_unit)
    }

    /// As `split_plan`, aiming at `groups_per_unit` work-groups per compute unit.
    fn split_plan_at(&self, shape: &AttentionShape, groups_per_unit: usize) -> (usize, usize) {
        let n_keys = shape.past + shape.seq;
        let target = groups_per_unit * self.gpu.caps().compute_units.max(1) as usize;
        let groups = shape.seq * shape.heads;
        if groups >= target {
            return (1, n_keys);
        }
        let wanted = target.div_ceil(groups.max(1));
        let chunk = n_keys
            .div_ceil(wanted.min(MAX_SPLITS))
            .next_multiple_of(self.split.min_chunk)
            .max(self.split.min_chunk);
        match n_keys.div_ceil(chunk) {
            0 | 1 => (1, n_keys),
            splits => (splits, chunk),
        }
    }

    /// Enqueues `out = softmax(q·kᵀ·scale, causal) · v`.
    ///
    /// `q` holds the queries at `q_layout` (heads = `shape.heads`, seq = `shape.seq`; the q part of a fused QKV
    /// output works as is). `k` and `v` are read views of the cache starting at position 0 and covering at least
    /// `past + seq` positions of `kv_heads` heads. `out` is `[seq][heads][head_dim]`.
    #[allow(clippy::too_many_arguments)] // each argument is a distinct typed operand; bundling them hides nothing
    pub fn enqueue(
        &self,
        q: &DeviceBuffer<f32>,
        q_layout: HeadsLayout,
        k: KvOperand<'_>,
        v: KvOperand<'_>,
        shape: AttentionShape,
        scale: f32,
        out: &mut DeviceBuffer<f32>,
    ) -> Result<(), KernelError> {
        self.enqueue_with_fresh(q, q_layout, None, k, v, shape, scale, out)
    }

    /// As [`Attention::enqueue`], and with `fresh` (decode only) for a token whose K and V are not in the cache
    /// yet, doing in the same launch what [`Attention::enqueue_qkv_rope_write`] would do first: q is rotated as
    /// it is read from the fused QKV output `q`, the token's key (rotated) and value are taken from it at
    /// `fresh.k` / `fresh.v` rather than from the cache, and they are written into the cache at position
    /// `shape.past`. So a decode layer needs one launch fewer. With `fresh`, `shape.seq` must be 1, `k` and `v`
    /// are read views covering `past + 1` positions (the new one included), and the rotary embedding uses a plain
    /// theta (frequency tables are not supported here).
    #[allow(clippy::too_many_arguments)] // each argument is a distinct typed operand; bundling them hides nothing
    pub fn enqueue_with_fresh(
        &self,
        q: &DeviceBuffer<f32>,
        q_layout: HeadsLayout,
        fresh: Option<FreshToken>,
        k: KvOperand<'_>,
        v: KvOperand<'_>,
        shape: AttentionShape,
        scale: f32,
        out: &mut DeviceBuffer<f32>,
    ) -> Result<(), KernelError> {
        const K: &str = "attention";
        let AttentionShape {
            seq,
            past,
            heads,
            kv_heads,
            head_dim,
        } = shape;
        if seq == 0 || heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(shape_error(
                K,
                format!("bad shape {shape:?} (heads must be a multiple of kv_heads)"),
            ));
        }
        if head_dim == 0 || head_dim > MAX_HEAD_DIM {
            return Err(shape_error(
                K,
                format!("head_dim {head_dim} must be in 1..={MAX_HEAD_DIM}"),
            ));
        }
        if q_layout.heads != heads || q_layout.seq != seq {
            return Err(shape_error(
                K,
                format!("q layout {q_layout:?} does not match {shape:?}"),
            ));
        }
        check_len(K, "q", q, q_layout.end(head_dim))?;
        check_len(K, "out", out, seq * heads * head_dim)?;
        let kv = k.view;
        for (name, op) in [("k", &k), ("v", &v)] {
            op.check(K, name)?;
            let w = op.view;
            if w.first_position != 0
                || w.positions < past + seq
                || w.heads != kv_heads
                || w.head_dim != head_dim
            {
                return Err(shape_error(
                    K,
                    format!("{name} view {w:?} must start at position 0 and cover {} positions of {kv_heads} heads of {head_dim}", past + seq),
                ));
            }
            if (
                w.offset_elems,
                w.head_stride_elems,
                w.position_stride_elems,
                w.dtype,
            ) != (
                kv.offset_elems,
                kv.head_stride_elems,
                kv.position_stride_elems,
                kv.dtype,
            ) {
                return Err(shape_error(K, "k and v views differ in layout"));
            }
        }
        let fresh_args = match fresh {
            None => [
                0u32.into(),
                0u32.into(),
                0u32.into(),
                0u32.into(),
                0.0f32.into(),
                0u32.into(),
            ],
            Some(f) => {
                if seq != 1 {
                    return Err(shape_error(
                        K,
                        format!("a fresh token needs a one-token step, not {seq}"),
                    ));
                }
                f.rope.validate(K)?;
                for (name, l) in [("fresh k", &f.k), ("fresh v", &f.v)] {
                    if l.heads != kv_heads || l.seq != 1 || l.token_stride != q_layout.token_stride
                    {
                        return Err(shape_error(
                            K,
                            format!("{name} layout {l:?} is not the {kv_heads}-head part of q's fused QKV row"),
                        ));
                    }
                    check_len(K, name, q, l.end(head_dim))?;
                }
                if f.rope.head_dim != head_dim {
                    return Err(shape_error(K, "rope head_dim differs from the attention's"));
                }
                [
                    1u32.into(),
                    to_u32(K, "k offset", f.k.offset)?.into(),
                    to_u32(K, "v offset", f.v.offset)?.into(),
                    to_u32(K, "rotary_dim", f.rope.rotary_dim)?.into(),
                    f.rope.log2_theta().into(),
                    f.rope.style.code().into(),
                ]
            }
        };
        let plan = self.plan(&shape, &kv);
        let AttentionPlan { splits, chunk, .. } = plan;
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if splits > 1 {
            grow(&self.gpu, &mut scratch.ml, seq * heads * splits * 2)?;
            grow(&self.gpu, &mut scratch.o, seq * heads * splits * head_dim)?;
            if scratch
                .counters
                .as_ref()
                .is_none_or(|b| b.len() < seq * heads)
            {
                scratch.counters = Some(DeviceBuffer::from_slice(
                    &self.gpu,
                    &vec![0u32; seq * heads],
                )?);
            }
        }
        let (ml_arg, o_arg, count_arg): (Arg, Arg, Arg) =
            match (&scratch.ml, &scratch.o, &scratch.counters) {
                (Some(ml), Some(o), Some(c)) if splits > 1 => (ml.into(), o.into(), c.into()),
                _ => ((&*out).into(), (&*out).into(), (&*out).into()),
            };
        let args = [
            q.into(),
            to_u32(K, "q offset", q_layout.offset)?.into(),
            to_u32(K, "q token stride", q_layout.token_stride)?.into(),
            Arg::Mem(k.mem),
            Arg::Mem(v.mem),
            to_u32(K, "kv offset", kv.offset_elems as usize)?.into(),
            to_u32(K, "head stride", kv.head_stride_elems as usize)?.into(),
            to_u32(K, "position stride", kv.position_stride_elems as usize)?.into(),
            (&*out).into(),
            ml_arg,
            o_arg,
            count_arg,
            to_u32(K, "past", past)?.into(),
            to_u32(K, "heads", heads)?.into(),
            to_u32(K, "group", heads / kv_heads)?.into(),
            to_u32(K, "head_dim", head_dim)?.into(),
            to_u32(K, "chunk", chunk)?.into(),
            to_u32(K, "splits", splits)?.into(),
            scale.into(),
        ];
        let args: Vec<Arg> = args.into_iter().chain(fresh_args).collect();
        let (kernel, wg) = match (plan.kernel, kv.dtype) {
            (AttentionKernel::Positions, KvDtype::F16) => (&self.partial_f16, ATT_WG),
            (AttentionKernel::Positions, KvDtype::F32) => (&self.partial_f32, ATT_WG),
            (AttentionKernel::Rows, KvDtype::F16) => (&self.rows_f16, ATT_WG),
            (AttentionKernel::Rows, KvDtype::F32) => (&self.rows_f32, ATT_WG),
            (AttentionKernel::WideRows, dtype) => {
                let (f32, f16) = self
                    .wide
                    .as_ref()
                    .ok_or_else(|| shape_error(K, "the wide attention build is not available"))?;
                match dtype {
                    KvDtype::F16 => (f16, WIDE_WG),
                    KvDtype::F32 => (f32, WIDE_WG),
                }
            }
        };
        kernel.launch(
            &self.gpu,
            &args,
            &[wg * splits, heads, seq],
            Some(&[wg, 1, 1]),
        )?;
        Ok(())
    }

    /// Writes `src_layout.seq` new tokens of `src_layout.heads` K or V heads into the cache view `dst` (a
    /// step's write view), rotating them first when `rope` is given (K: token `t` at position
    /// `first_position + t`; V: pass `None`). Converts to the cache's element type on the way.
    pub fn enqueue_kv_write(
        &self,
        src: &DeviceBuffer<f32>,
        src_layout: HeadsLayout,
        dst: KvOperand<'_>,
        rope: Option<RopeConfig>,
        first_position: usize,
    ) -> Result<(), KernelError> {
        const K: &str = "kv_write";
        let w = dst.view;
        dst.check(K, "destination")?;
        if w.heads != src_layout.heads || w.positions != src_layout.seq {
            return Err(shape_error(
                K,
                format!("destination view {w:?} does not match the source {src_layout:?}"),
            ));
        }
        check_len(K, "src", src, src_layout.end(w.head_dim))?;
        let (rotary_dim, log2_theta, style) = match rope {
            Some(r) => {
                r.validate(K)?;
                if r.head_dim != w.head_dim {
                    return Err(shape_error(K, "rope head_dim differs from the cache's"));
                }
                (r.rotary_dim, r.log2_theta(), r.style.code())
            }
            None => (0, 0.0, 0),
        };
        if w.positions == 0 {
            return Ok(());
        }
        let args = [
            src.into(),
            to_u32(K, "src offset", src_layout.offset)?.into(),
            to_u32(K, "src token stride", src_layout.token_stride)?.into(),
            Arg::Mem(dst.mem),
            to_u32(K, "dst offset", w.offset_elems as usize)?.into(),
            to_u32(K, "head stride", w.head_stride_elems as usize)?.into(),
            to_u32(K, "position stride", w.position_stride_elems as usize)?.into(),
            to_u32(K, "head_dim", w.head_dim)?.into(),
            to_u32(K, "rotary_dim", rotary_dim)?.into(),
            log2_theta.into(),
            to_u32(K, "first_position", first_position)?.into(),
            style.into(),
        ];
        let kernel = match w.dtype {
            KvDtype::F16 => &self.write_f16,
            KvDtype::F32 => &self.write_f32,
        };
        kernel.launch(&self.gpu, &args, &[w.head_dim, w.heads, w.positions], None)
    }

    /// The step's rotary and cache append in one launch: rotates the q heads of `qkv` in place (as
    /// [`super::rope::Rope::enqueue`] does), writes the K heads rotated into `k_dst` and the V heads into `v_dst`
    /// (as two [`Attention::enqueue_kv_write`] calls do), token `t` at position `first_position + t`.
    ///
    /// `q`, `k` and `v` are the three parts of a fused QKV output (one token stride); `k_dst` and `v_dst` are the
    /// step's write views of the K and V cache buffers, with one layout.
    #[allow(clippy::too_many_arguments)] // each argument is a distinct typed operand; bundling them hides nothing
    pub fn enqueue_qkv_rope_write(
        &self,
        qkv: &mut DeviceBuffer<f32>,
        q: HeadsLayout,
        k: HeadsLayout,
        v: HeadsLayout,
        k_dst: KvOperand<'_>,
        v_dst: KvOperand<'_>,
        rope: RopeConfig,
        first_position: usize,
    ) -> Result<(), KernelError> {
        const K: &str = "qkv_rope_write";
        k_dst.check(K, "K destination")?;
        v_dst.check(K, "V destination")?;
        let (kw, vw) = (k_dst.view, v_dst.view);
        if (
            kw.offset_elems,
            kw.head_stride_elems,
            kw.position_stride_elems,
            kw.positions,
            kw.heads,
            kw.head_dim,
            kw.dtype,
        ) != (
            vw.offset_elems,
            vw.head_stride_elems,
            vw.position_stride_elems,
            vw.positions,
            vw.heads,
            vw.head_dim,
            vw.dtype,
        ) {
            return Err(shape_error(K, "K and V destination views differ in layout"));
        }
        if q.token_stride != k.token_stride
            || k.token_stride != v.token_stride
            || q.seq != k.seq
            || k.seq != v.seq
            || k.heads != v.heads
        {
            return Err(shape_error(
                K,
                format!("q {q:?}, k {k:?} and v {v:?} are not the parts of one fused QKV output"),
            ));
        }
        if kw.heads != k.heads || kw.positions != k.seq {
            return Err(shape_error(
                K,
                format!("destination view {kw:?} does not match the source {k:?}"),
            ));
        }
        rope.validate(K)?;
        if rope.head_dim != kw.head_dim {
            return Err(shape_error(K, "rope head_dim differs from the cache's"));
        }
        let head_dim = kw.head_dim;
        for (name, l) in [("q", &q), ("k", &k), ("v", &v)] {
            check_len(K, name, qkv, l.end(head_dim))?;
        }
        if k.seq == 0 {
            return Ok(());
        }
        let args = [
            (&*qkv).into(),
            to_u32(K, "q offset", q.offset)?.into(),
            to_u32(K, "k offset", k.offset)?.into(),
            to_u32(K, "v offset", v.offset)?.into(),
            to_u32(K, "token stride", q.token_stride)?.into(),
            Arg::Mem(k_dst.mem),
            Arg::Mem(v_dst.mem),
            to_u32(K, "dst offset", kw.offset_elems as usize)?.into(),
            to_u32(K, "head stride", kw.head_stride_elems as usize)?.into(),
            to_u32(K, "position stride", kw.position_stride_elems as usize)?.into(),
            to_u32(K, "head_dim", head_dim)?.into(),
            to_u32(K, "rotary_dim", rope.rotary_dim)?.into(),
            rope.log2_theta().into(),
            to_u32(K, "first_position", first_position)?.into(),
            rope.style.code().into(),
            to_u32(K, "heads", q.heads)?.into(),
            to_u32(K, "kv_heads", k.heads)?.into(),
        ];
        let kernel = match kw.dtype {
            KvDtype::F16 => &self.fused_write_f16,
            KvDtype::F32 => &self.fused_write_f32,
        };
        kernel.launch(
            &self.gpu,
            &args,
            &[head_dim, q.heads + 2 * k.heads, k.seq],
            None,
        )
    }
}
