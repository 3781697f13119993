//! Causal grouped-query attention over the `kvcache` layout and the in-place K/V append (`attention.cl`).
//!
//! K and V are read where the cache keeps them: a [`KvOperand`] is a cache buffer (or sub-buffer) plus the
//! [`kvcache::KvView`] that says where the heads and positions are, so attention needs no copy of the cache and the
//! append writes each step's K (rotated) and V straight into the step's write view. In decode,
//! [`Attention::enqueue_with_fresh`] does the rotary and the append inside the attention launch itself.
//!
//! The folder keeps each concern apart: `choose.rs` picks the kernel and the context split (pure, unit-tested
//! without a device), `params.rs` checks a call and turns it into the kernel's `#[repr(C)]` parameter struct
//! (pure too), `builds.rs` compiles the kernels, and [`Attention`] here only ties them together and launches.
//!
//! On a Mali, or under a Mali device profile, decode runs `vendor/mali_attention.cl` instead, which uses no local
//! memory (see [`AttentionKernel::Mali`]); it has run on PoCL and Oclgrind only, never on a Mali.

mod builds;
mod choose;
mod operands;
mod params;

use std::sync::Mutex;

use kvcache::KvView;

use self::builds::{AttentionBuild, AttentionBuilds};
use self::choose::{choose_attention_plan, split_plan, AttentionDevice, PlanInputs};
pub use self::choose::{
    decode_attention_choice, AttentionKernel, AttentionPlan, AttentionWalk, SplitPolicy,
    MAX_HEAD_DIM,
};
pub(crate) use self::operands::kv_ring;
pub use self::operands::{AttentionScores, AttentionShape, FreshToken, KvOperand};
use self::params::{check_attention, check_kv_write, check_qkv_rope_write, AttnParams, QkvParts};
use super::rope::{HeadsLayout, RopeConfig};
use super::vector_width::VectorWidth;
use super::{shape_error, to_u32, Arg, KernelError};
use crate::runtime::{DeviceBuffer, Gpu};

/// Device buffers the split kernels keep their partial results in, grown to the largest call so far.
struct Scratch {
    ml: Option<DeviceBuffer<f32>>,
    o: Option<DeviceBuffer<f32>>,
    /// Per (token, head): how many splits have finished (zero between launches; the merging work-group resets
    /// its counter).
    counters: Option<DeviceBuffer<u32>>,
    /// The rotated query heads `attn_mali_stage` writes for `attn_mali`.
    mali_q: Option<DeviceBuffer<f32>>,
}

impl Scratch {
    /// The kernels' `part_ml`, `part_o` and `counters` arguments for a call of `groups` (token, head) pairs in
    /// `splits` splits of `head_dim`-wide outputs: the scratch buffers (grown as needed), or `out` as a stand-in
    /// the kernels never touch when there is one split.
    fn args(
        &mut self,
        gpu: &Gpu,
        groups: usize,
        splits: usize,
        head_dim: usize,
        out: &DeviceBuffer<f32>,
    ) -> Result<[Arg<'static>; 3], KernelError> {
        if splits <= 1 {
            return Ok([out.into(), out.into(), out.into()]);
        }
        grow(gpu, &mut self.ml, groups * splits * 2)?;
        grow(gpu, &mut self.o, groups * splits * head_dim)?;
        if self.counters.as_ref().is_none_or(|b| b.len() < groups) {
            self.counters = Some(DeviceBuffer::from_slice(gpu, &vec![0u32; groups])?);
        }
        match (&self.ml, &self.o, &self.counters) {
            (Some(ml), Some(o), Some(c)) => Ok([ml.into(), o.into(), c.into()]),
            _ => Err(shape_error(
                "attention",
                "scratch buffers missing after allocation",
            )),
        }
    }
}

fn grow(gpu: &Gpu, slot: &mut Option<DeviceBuffer<f32>>, len: usize) -> Result<(), KernelError> {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = Some(DeviceBuffer::new(gpu, len.max(1))?);
    }
    Ok(())
}

/// Attention and K/V-append launcher.
pub struct Attention {
    gpu: Gpu,
    device: AttentionDevice,
    builds: AttentionBuilds,
    split: SplitPolicy,
    walk: AttentionWalk,
    scratch: Mutex<Scratch>,
}

impl std::fmt::Debug for Attention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attention").finish_non_exhaustive()
    }
}

impl Attention {
    /// Builds the kernels for both cache element types.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Self::with_defines(gpu, &[])
    }

    /// As [`Attention::new`], with extra compiler defines for every program (the vendor compile checks use
    /// `TLITE_COMPILE_CHECK` and stand-in capability defines).
    pub fn with_defines(gpu: &Gpu, extra: &[(&str, &str)]) -> Result<Self, KernelError> {
        let device = AttentionDevice::from_caps(gpu.caps());
        Self::build(
            gpu,
            device,
            extra,
            device.wants_mali().then_some(device.mali_width),
        )
    }

    /// As [`Attention::with_defines`], and with the Mali kernel (`attn_mali`) built at `width` whatever the device:
    /// for testing it on other devices and comparing widths. [`AttentionWalk::Mali`] selects it.
    pub fn with_mali_width(
        gpu: &Gpu,
        width: VectorWidth,
        extra: &[(&str, &str)],
    ) -> Result<Self, KernelError> {
        Self::build(
            gpu,
            AttentionDevice::from_caps(gpu.caps()),
            extra,
            Some(width),
        )
    }

    fn build(
        gpu: &Gpu,
        device: AttentionDevice,
        extra: &[(&str, &str)],
        mali: Option<VectorWidth>,
    ) -> Result<Self, KernelError> {
        Ok(Attention {
            gpu: gpu.clone(),
            device,
            builds: AttentionBuilds::new(gpu, &device, extra, mali)?,
            split: SplitPolicy::default(),
            walk: device.default_walk(),
            scratch: Mutex::new(Scratch {
                ml: None,
                o: None,
                counters: None,
                mali_q: None,
            }),
        })
    }

    /// Replaces the decode split policy (for tuning; the default suits the devices measured so far).
    pub fn set_split_policy(&mut self, policy: SplitPolicy) {
        self.split = policy.at_least_one();
    }

    /// Chooses the context-walking kernel (for comparison; the default, `Auto` or `Positions` on a CPU device,
    /// suits the devices measured so far).
    pub fn set_walk(&mut self, walk: AttentionWalk) {
        self.walk = walk;
    }

    /// Whether this device runs the one-group-per-head build (256-wide groups and 36 KiB of local memory).
    pub fn has_wide(&self) -> bool {
        self.builds.has_wide()
    }

    /// The vector width of the Mali kernel where this launcher built it (on a Mali, under a Mali profile, or
    /// through [`Attention::with_mali_width`]).
    pub fn mali_width(&self) -> Option<VectorWidth> {
        self.builds.mali_width()
    }

    fn plan_inputs(&self) -> PlanInputs {
        PlanInputs {
            compute_units: self.device.compute_units,
            walk: self.walk,
            split: self.split,
            has_wide: self.has_wide(),
            mali: self.mali_width(),
        }
    }

    /// How a call of `shape` over caches laid out as `view`, with a sliding `window` if any, is run: the splits
    /// cover only the positions the call reads.
    pub fn plan(
        &self,
        shape: &AttentionShape,
        view: &KvView,
        window: Option<usize>,
    ) -> AttentionPlan {
        choose_attention_plan(&self.plan_inputs(), shape, view, window)
    }

    /// How many context splits the split kernels cut a call of `shape` into (see [`Attention::plan`] for what a
    /// call actually runs).
    pub fn splits(&self, shape: &AttentionShape) -> usize {
        split_plan(&self.plan_inputs(), shape, None, self.split.groups_per_unit).0
    }

    /// Enqueues `out = softmax(q·kᵀ·scale, causal) · v`.
    ///
    /// `q` holds the queries at `q_layout` (heads = `shape.heads`, seq = `shape.seq`; the q part of a fused QKV
    /// output works as is). `k` and `v` are read views of the cache starting at position 0 and covering at least
    /// `past + seq` positions of `kv_heads` heads (a ring view only with a sliding window, in
    /// [`Attention::enqueue_with_fresh`]). `out` is `[seq][heads][head_dim]`.
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
        let scores = AttentionScores::scaled(scale);
        self.enqueue_with_fresh(q, q_layout, None, k, v, shape, scores, out)
    }

    /// As [`Attention::enqueue`], and with `fresh` (decode only) for a token whose K and V are not in the cache
    /// yet, doing in the same launch what [`Attention::enqueue_qkv_rope_write`] would do first: q is rotated as
    /// it is read from the fused QKV output `q`, the token's key (rotated) and value are taken from it at
    /// `fresh.k` / `fresh.v` rather than from the cache, and they are written into the cache at position
    /// `shape.past`. So a decode layer needs one launch fewer. With `fresh`, `shape.seq` must be 1, `k` and `v`
    /// are read views covering `past + 1` positions (the new one included), and the rotary embedding uses a plain
    /// theta (frequency tables are not supported here).
    ///
    /// `scores` also carries what Gemma needs beyond a scale: soft-capped scores and a sliding window.
    #[allow(clippy::too_many_arguments)] // each argument is a distinct typed operand; bundling them hides nothing
    pub fn enqueue_with_fresh(
        &self,
        q: &DeviceBuffer<f32>,
        q_layout: HeadsLayout,
        fresh: Option<FreshToken>,
        k: KvOperand<'_>,
        v: KvOperand<'_>,
        shape: AttentionShape,
        scores: AttentionScores,
        out: &mut DeviceBuffer<f32>,
    ) -> Result<(), KernelError> {
        const K: &str = "attention";
        let mut params =
            check_attention(q.len(), q_layout, fresh, &k, &v, shape, scores, out.len())?;
        let plan = self.plan(&shape, &k.view, scores.window);
        params.chunk = to_u32(K, "chunk", plan.chunk)?;
        params.splits = to_u32(K, "splits", plan.splits)?;
        let build = AttentionBuild {
            kernel: plan.kernel,
            dtype: k.view.dtype,
        };
        let kernel = self.builds.attention(build).ok_or_else(|| {
            shape_error(
                K,
                "the chosen attention build is not available on this device",
            )
        })?;
        // Held until the launch is enqueued: the scratch buffers are its arguments.
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let groups = shape.seq * shape.heads;
        let [ml, o, counters] =
            scratch.args(&self.gpu, groups, plan.splits, shape.head_dim, out)?;
        if plan.kernel == AttentionKernel::Mali {
            return self.enqueue_mali(
                &mut scratch,
                q,
                (k, v),
                shape,
                params,
                [ml, o, counters],
                out,
                kernel,
            );
        }
        let args = [
            q.into(),
            Arg::Mem(k.mem),
            Arg::Mem(v.mem),
            (&*out).into(),
            ml,
            o,
            counters,
            Arg::params(&params),
        ];
        let wg = plan.kernel.work_group();
        kernel.launch(
            &self.gpu,
            &args,
            &[wg * plan.splits, shape.heads, shape.seq],
            Some(&[wg, 1, 1]),
        )
    }

    /// The Mali plan's launches: with a fresh token, `attn_mali_stage` first (q rotated into a buffer of its own,
    /// the token's K and V into the cache), then `attn_mali` over the cache alone.
    #[allow(clippy::too_many_arguments)] // the checked call's parts, passed on as they are
    fn enqueue_mali(
        &self,
        scratch: &mut Scratch,
        q: &DeviceBuffer<f32>,
        (k, v): (KvOperand<'_>, KvOperand<'_>),
        shape: AttentionShape,
        mut params: AttnParams,
        [ml, o, counters]: [Arg<'static>; 3],
        out: &DeviceBuffer<f32>,
        kernel: &super::LockedKernel,
    ) -> Result<(), KernelError> {
        const K: &str = "attention (Mali)";
        let mut rotated = None;
        if params.fresh != 0 {
            let stage = self
                .builds
                .mali_stage(k.view.dtype)
                .ok_or_else(|| shape_error(K, "the Mali build is not available"))?;
            let len = shape.heads * shape.head_dim;
            if scratch.mali_q.as_ref().is_none_or(|b| b.len() < len) {
                scratch.mali_q = Some(DeviceBuffer::new(&self.gpu, len.max(1))?);
            }
            let qr = scratch
                .mali_q
                .as_ref()
                .ok_or_else(|| shape_error(K, "rotated-query buffer missing after allocation"))?;
            let args = [
                q.into(),
                Arg::Mem(k.mem),
                Arg::Mem(v.mem),
                qr.into(),
                out.into(),
                out.into(),
                out.into(),
                Arg::params(&params),
            ];
            let kv_heads = shape.heads / (params.group.max(1) as usize);
            stage.launch(
                &self.gpu,
                &args,
                &[shape.head_dim, shape.heads + kv_heads, 1],
                None,
            )?;
            params.fresh = 0;
            params.q_off = 0;
            params.q_stride = to_u32(K, "q_stride", len)?;
            rotated = Some(qr);
        }
        let args = [
            rotated.map_or_else(|| q.into(), Arg::from),
            Arg::Mem(k.mem),
            Arg::Mem(v.mem),
            out.into(),
            ml,
            o,
            counters,
            Arg::params(&params),
        ];
        let wg = AttentionKernel::Mali.work_group();
        let items = (shape.heads * params.splits as usize).next_multiple_of(wg);
        kernel.launch(&self.gpu, &args, &[items, shape.seq], Some(&[wg, 1]))
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
        let Some(params) = check_kv_write(src.len(), src_layout, &dst, rope, first_position)?
        else {
            return Ok(());
        };
        let w = dst.view;
        let args = [src.into(), Arg::Mem(dst.mem), Arg::params(&params)];
        self.builds.kv_write(w.dtype).launch(
            &self.gpu,
            &args,
            &[w.head_dim, w.heads, w.positions],
            None,
        )
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
        let parts = QkvParts {
            qkv_len: qkv.len(),
            q,
            k,
            v,
            k_dst: &k_dst,
            v_dst: &v_dst,
        };
        let Some(params) = check_qkv_rope_write(&parts, rope, first_position)? else {
            return Ok(());
        };
        let args = [
            (&*qkv).into(),
            Arg::Mem(k_dst.mem),
            Arg::Mem(v_dst.mem),
            Arg::params(&params),
        ];
        self.builds.qkv_rope_write(k_dst.view.dtype).launch(
            &self.gpu,
            &args,
            &[k_dst.view.head_dim, q.heads + 2 * k.heads, k.seq],
            None,
        )
    }
}
