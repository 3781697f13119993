//! Which attention kernel runs a call, and how the context is split: pure functions of a few device figures, the
//! call's shape and the cache layout, so every case is enumerated by the unit tests below without a device.
//!
//! A short decode is bound by latency, not bandwidth: one 256-wide work-group per head while the whole context is
//! one block of loads (no partial results to merge), beyond that the context split across 64-wide groups of the
//! same kernel, about four per compute unit; the older position-per-work-item kernel serves prefill and layouts the
//! row kernel cannot read. Measured on the H100 only (bench/RESULTS.md); on phones the wide build is skipped where
//! local memory is 32 KiB. On a Mali (the device's family, or the phone a device profile names) decode runs
//! `attn_mali` instead (`vendor/mali_attention.cl`: no local memory, one split per work-item), never measured on
//! a Mali; it falls back to the portable kernels for a head size its vector width does not divide.

use kvcache::KvView;

use super::AttentionShape;
use crate::kernels::vector_width::{VectorWidth, WidthSource};
use crate::runtime::{Capabilities, DeviceKind, VendorFamily};

/// Work-items per work-group of `attn_partial` and of the split `attn_rows` (`ATT_WG`).
pub(super) const ATT_WG: usize = 64;
/// Rows of K and of V each split `attn_rows` work-item loads per block (`ATT_ROWS`).
pub(super) const ROWS_PER_ITEM: usize = 8;
/// Work-groups per compute unit Auto splits a decode into for `attn_rows` (the split policy's 8 suits
/// `attn_partial`): it holds a block's loads in registers, so fewer of its groups fit a unit, and at 8 its groups
/// spill into a second wave. H100, 32 heads x 128 (bench/RESULTS.md): at 4 per unit it beats `attn_partial` at
/// every context measured, 512 to 4096 positions.
const ROWS_GROUPS_PER_UNIT: usize = 4;
/// The one-group-per-head build of `attn_rows`: work-items per group and rows per work-item per block.
pub(super) const WIDE_WG: usize = 256;
pub(super) const WIDE_ROWS_PER_ITEM: usize = 16;
/// Local memory the wide build needs, rounded up (its arrays are ~31 KiB, sized for head_dim 32 and 256).
const WIDE_LOCAL_BYTES: u64 = 36 << 10;
/// Most splits of one (token, head) (`ATT_MAX_SPLITS`: the merge keeps each split's maximum and sum in local
/// memory).
pub(super) const MAX_SPLITS: usize = 256;
/// Largest head dimension the kernels hold in local memory.
pub const MAX_HEAD_DIM: usize = 256;
/// Work-items per work-group of `attn_mali` (`MALI_ATT_WG`; each owns one split, so only occupancy depends on it).
pub(super) const MALI_WG: usize = 64;
/// Positions `attn_mali` scores per block (`MALI_ATT_BLOCK`, its private score array); its splits are multiples.
pub(super) const MALI_BLOCK: usize = 16;
/// Work-items per compute unit `attn_mali`'s splits aim at (a starting point; nothing has run on a Mali).
const MALI_ITEMS_PER_UNIT: usize = 256;

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
        // H100 sweep (bench/RESULTS.md): 8 groups per unit was fastest at ctx 4096; 2 and 16 were slower; 192
        // positions took the same whatever the policy (latency-bound).
        SplitPolicy {
            groups_per_unit: 8,
            min_chunk: 32,
        }
    }
}

impl SplitPolicy {
    /// The policy with both figures at least 1.
    pub(super) fn at_least_one(self) -> Self {
        SplitPolicy {
            groups_per_unit: self.groups_per_unit.max(1),
            min_chunk: self.min_chunk.max(1),
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
    /// layouts `attn_rows` cannot take use `attn_partial`. On the H100 (32 heads x 128, bench/RESULTS.md) the wide
    /// build is fastest at 192 positions and split rows from 1024 on.
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
    /// `attn_mali` wherever it is built and its vector width divides the head size, prefill included; else as
    /// `Auto`. (`Auto` takes it for one-token steps on a Mali.)
    Mali,
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
    /// `attn_mali` (`vendor/mali_attention.cl`): one work-item per split of a (token, head), no local memory.
    Mali,
}

impl AttentionKernel {
    /// Work-items per work-group of its build.
    pub(super) fn work_group(self) -> usize {
        match self {
            AttentionKernel::Positions | AttentionKernel::Rows => ATT_WG,
            AttentionKernel::WideRows => WIDE_WG,
            AttentionKernel::Mali => MALI_WG,
        }
    }
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

/// The device figures the choice depends on, read once from [`Capabilities`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AttentionDevice {
    /// GPU, CPU, ...: a CPU device pays for `attn_rows`' wide groups and local-memory staging as loops and copies.
    pub kind: DeviceKind,
    /// Compute units, which the splits aim to fill.
    pub compute_units: usize,
    /// `CL_DEVICE_MAX_WORK_GROUP_SIZE`.
    pub max_work_group_size: usize,
    /// `CL_DEVICE_LOCAL_MEM_SIZE` in bytes.
    pub local_mem_bytes: u64,
    /// The family the variants are chosen for: the device's, or the phone's under a profile.
    pub family: VendorFamily,
    /// The width `attn_mali` is built at where it is built.
    pub mali_width: VectorWidth,
}

impl AttentionDevice {
    pub(super) fn from_caps(caps: &Capabilities) -> Self {
        AttentionDevice {
            kind: caps.kind,
            compute_units: (caps.compute_units as usize).max(1),
            max_work_group_size: caps.max_work_group_size,
            local_mem_bytes: caps.local_mem_bytes,
            family: caps.target_family(),
            mali_width: VectorWidth::for_caps(caps).0,
        }
    }

    /// Whether to build `attn_mali`: a Mali (or a Mali profile, also on a CPU device, so that profile runs execute
    /// the phone's kernel) that runs its 64-wide groups.
    pub(super) fn wants_mali(&self) -> bool {
        self.family == VendorFamily::Mali && self.max_work_group_size >= MALI_WG
    }

    /// Whether to try the wide builds at all: 256 work-items per group and 36 KiB of local memory (phones have
    /// 32 KiB). The driver may still refuse or shrink them, which the launcher checks on the built kernels.
    pub(super) fn fits_wide_build(&self) -> bool {
        self.max_work_group_size >= WIDE_WG && self.local_mem_bytes >= WIDE_LOCAL_BYTES
    }

    /// The walk a launcher starts with: `attn_partial` measured faster on a CPU device at every context
    /// (bench/RESULTS.md), `Auto` elsewhere.
    pub(super) fn default_walk(&self) -> AttentionWalk {
        if self.kind == DeviceKind::Cpu {
            AttentionWalk::Positions
        } else {
            AttentionWalk::Auto
        }
    }
}

/// The kernel a one-token step runs on `caps` (under a device profile, on the profile's phone) and why, for the
/// phone plan and `tlite devices`: `attn_mali` on a Mali, else `attn_rows` (wide while the context is one block
/// where the device runs the wide build, else split), or `attn_partial` on a CPU device without a profile.
pub fn decode_attention_choice(caps: &Capabilities) -> (AttentionKernel, String) {
    let device = AttentionDevice::from_caps(caps);
    if device.wants_mali() {
        let (width, source) = VectorWidth::for_caps(caps);
        let source = match source {
            WidthSource::Preferred => "the preferred float width",
            WidthSource::Native => "the native float width",
            WidthSource::Default => "the default; no float width reported",
        };
        return (
            AttentionKernel::Mali,
            format!(
                "attn_mali: no local memory, one split per work-item, {width} loads ({source})"
            ),
        );
    }
    if caps.profile.is_none() && device.default_walk() == AttentionWalk::Positions {
        return (
            AttentionKernel::Positions,
            "attn_partial (a CPU device)".to_string(),
        );
    }
    if device.fits_wide_build() {
        (
            AttentionKernel::WideRows,
            "attn_rows: one 256-wide group per head over a short context, split beyond".to_string(),
        )
    } else {
        (
            AttentionKernel::Rows,
            "split attn_rows (the wide build needs 36 KiB of local memory and 256-wide groups)"
                .to_string(),
        )
    }
}

/// What a plan depends on beside the call itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PlanInputs {
    /// Compute units of the device (at least 1).
    pub compute_units: usize,
    /// The walk asked for.
    pub walk: AttentionWalk,
    /// The split policy (figures at least 1).
    pub split: SplitPolicy,
    /// Whether the wide builds exist on this device.
    pub has_wide: bool,
    /// The width `attn_mali` is built at, `None` where it is not built.
    pub mali: Option<VectorWidth>,
}

/// Positions a call reads: from the first key of its first token (the start of that token's sliding window, or
/// 0) to its last token's own position. The kernels split these, not the whole context, so a windowed layer's
/// decode costs its window whatever the context.
pub(super) fn keys_read(shape: &AttentionShape, window: Option<usize>) -> usize {
    match window {
        Some(w) if w > 0 => w.min(shape.past + 1) + shape.seq - 1,
        _ => shape.past + shape.seq,
    }
}

/// How a call of `shape` (sliding `window`, if any) over caches laid out as `view` is run.
pub(super) fn choose_attention_plan(
    inputs: &PlanInputs,
    shape: &AttentionShape,
    view: &KvView,
    window: Option<usize>,
) -> AttentionPlan {
    let n_keys = keys_read(shape, window);
    let split_at = |kernel, groups_per_unit| {
        let (splits, chunk) = split_plan(inputs, shape, window, groups_per_unit);
        AttentionPlan {
            kernel,
            splits,
            chunk,
        }
    };
    let split = |kernel| split_at(kernel, inputs.split.groups_per_unit);
    let wide = AttentionPlan {
        kernel: AttentionKernel::WideRows,
        splits: 1,
        chunk: n_keys,
    };
    let mali_fits = inputs
        .mali
        .is_some_and(|w| shape.head_dim.is_multiple_of(w.floats()));
    match inputs.walk {
        AttentionWalk::Auto if shape.seq == 1 && mali_fits => {
            return mali_plan(inputs, shape, window)
        }
        AttentionWalk::Mali if mali_fits => return mali_plan(inputs, shape, window),
        _ => {}
    }
    if !rows_fit(shape.head_dim, view) {
        return split(AttentionKernel::Positions);
    }
    match inputs.walk {
        AttentionWalk::Auto | AttentionWalk::Mali if shape.seq == 1 => {
            if inputs.has_wide && n_keys <= rows_block(shape.head_dim, WIDE_WG, WIDE_ROWS_PER_ITEM)
            {
                wide
            } else {
                split_at(AttentionKernel::Rows, ROWS_GROUPS_PER_UNIT)
            }
        }
        AttentionWalk::Auto | AttentionWalk::Mali | AttentionWalk::Positions => {
            split(AttentionKernel::Positions)
        }
        AttentionWalk::Rows => split(AttentionKernel::Rows),
        AttentionWalk::WideRows if inputs.has_wide => wide,
        AttentionWalk::WideRows => split(AttentionKernel::Rows),
    }
}

/// `(splits, positions per split)` of the positions the call reads ([`keys_read`]) aiming at `groups_per_unit`
/// work-groups per compute unit. One work-group walks
/// its positions serially, so a decode step with few heads splits even a short context until there are about that
/// many work-groups per unit (32 heads on a 132-unit H100 at 192 positions: 6 splits of 32 instead of one
/// work-group per head), at the price of the merge the last split does.
pub(super) fn split_plan(
    inputs: &PlanInputs,
    shape: &AttentionShape,
    window: Option<usize>,
    groups_per_unit: usize,
) -> (usize, usize) {
    let n_keys = keys_read(shape, window);
    let target = groups_per_unit * inputs.compute_units.max(1);
    let groups = shape.seq * shape.heads;
    if groups >= target {
        return (1, n_keys);
    }
    let wanted = target.div_ceil(groups.max(1));
    let min_chunk = inputs.split.min_chunk.max(1);
    let chunk = n_keys
        .div_ceil(wanted.min(MAX_SPLITS))
        .next_multiple_of(min_chunk)
        .max(min_chunk);
    match n_keys.div_ceil(chunk) {
        0 | 1 => (1, n_keys),
        splits => (splits, chunk),
    }
}

/// `attn_mali`'s plan: splits until about [`MALI_ITEMS_PER_UNIT`] work-items per compute unit, but no more than
/// about the square root of twice the context, where the merge (one work-item reading every split's output row)
/// costs about what one split's walk over its keys and values does; chunks are whole blocks.
fn mali_plan(inputs: &PlanInputs, shape: &AttentionShape, window: Option<usize>) -> AttentionPlan {
    let n_keys = keys_read(shape, window);
    let groups = (shape.seq * shape.heads).max(1);
    let wanted = (MALI_ITEMS_PER_UNIT * inputs.compute_units.max(1)).div_ceil(groups);
    let balanced = (2 * n_keys).isqrt();
    let splits = wanted.min(balanced).clamp(1, MAX_SPLITS);
    let chunk = n_keys.div_ceil(splits).next_multiple_of(MALI_BLOCK);
    let (splits, chunk) = match n_keys.div_ceil(chunk) {
        0 | 1 => (1, n_keys),
        splits => (splits, chunk),
    };
    AttentionPlan {
        kernel: AttentionKernel::Mali,
        splits,
        chunk,
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

/// Positions one block of an `attn_rows` build covers (all loaded at once).
fn rows_block(head_dim: usize, work_group: usize, rows_per_item: usize) -> usize {
    work_group / (head_dim / 8).max(1) * rows_per_item
}

#[cfg(test)]
mod tests {
    use kvcache::{KvDtype, KvLayout};

    use super::*;

    fn shape(seq: usize, past: usize, heads: usize, head_dim: usize) -> AttentionShape {
        AttentionShape {
            seq,
            past,
            heads,
            kv_heads: 1,
            head_dim,
        }
    }

    fn view(head_dim: usize, positions: usize) -> KvView {
        KvLayout {
            kv_heads: 1,
            max_ctx: positions.max(1),
            head_dim,
            dtype: KvDtype::F16,
        }
        .positions_view(0, positions)
    }

    fn inputs(compute_units: usize, walk: AttentionWalk, has_wide: bool) -> PlanInputs {
        PlanInputs {
            compute_units,
            walk,
            split: SplitPolicy::default(),
            has_wide,
            mali: None,
        }
    }

    fn device(kind: DeviceKind, max_work_group_size: usize, local_kib: u64) -> AttentionDevice {
        AttentionDevice {
            kind,
            compute_units: 16,
            max_work_group_size,
            local_mem_bytes: local_kib << 10,
            family: VendorFamily::Other,
            mali_width: VectorWidth::DEFAULT,
        }
    }

    #[test]
    fn wide_builds_need_256_work_items_and_36_kib() {
        assert!(device(DeviceKind::Gpu, 1024, 48).fits_wide_build());
        assert!(device(DeviceKind::Gpu, 256, 36).fits_wide_build());
        // A phone's 32 KiB of local memory, or groups capped below 256.
        assert!(!device(DeviceKind::Gpu, 1024, 32).fits_wide_build());
        assert!(!device(DeviceKind::Gpu, 128, 64).fits_wide_build());
    }

    #[test]
    fn cpu_devices_start_with_the_position_walk() {
        assert_eq!(
            device(DeviceKind::Cpu, 4096, 256).default_walk(),
            AttentionWalk::Positions
        );
        for kind in [DeviceKind::Gpu, DeviceKind::Accelerator, DeviceKind::Other] {
            assert_eq!(device(kind, 1024, 48).default_walk(), AttentionWalk::Auto);
        }
    }

    #[test]
    fn auto_decode_is_wide_while_the_context_is_one_block_then_split_rows() {
        // head_dim 128: 16 work-items per row, 256 / 16 * 16 = 256 positions per wide block.
        let i = inputs(132, AttentionWalk::Auto, true);
        for past in [0, 100, 255] {
            let plan =
                choose_attention_plan(&i, &shape(1, past, 32, 128), &view(128, past + 1), None);
            assert_eq!(
                plan,
                AttentionPlan {
                    kernel: AttentionKernel::WideRows,
                    splits: 1,
                    chunk: past + 1
                }
            );
        }
        let plan = choose_attention_plan(&i, &shape(1, 256, 32, 128), &view(128, 257), None);
        assert_eq!(plan.kernel, AttentionKernel::Rows);
        // Rows aim at 4 groups per unit: 528 groups over 32 heads -> 17 splits wanted; 4097 positions in chunks
        // of 256 (a multiple of 32) -> 17 splits.
        let long = choose_attention_plan(&i, &shape(1, 4096, 32, 128), &view(128, 4097), None);
        assert_eq!(
            (long.kernel, long.splits, long.chunk),
            (AttentionKernel::Rows, 17, 256)
        );
        // Without the wide builds a short decode splits rows too.
        let no_wide = inputs(132, AttentionWalk::Auto, false);
        let short = choose_attention_plan(&no_wide, &shape(1, 100, 32, 128), &view(128, 101), None);
        assert_eq!(short.kernel, AttentionKernel::Rows);
    }

    #[test]
    fn prefill_and_unaligned_layouts_take_the_position_kernel() {
        let i = inputs(8, AttentionWalk::Auto, true);
        let prefill = choose_attention_plan(&i, &shape(37, 0, 4, 64), &view(64, 37), None);
        assert_eq!(prefill.kernel, AttentionKernel::Positions);
        // head_dim 36 is not a multiple of 8; 16 gives 2 work-items per row (fewer than 4); 24 gives 3, which
        // does not divide 64. Every walk then falls back to attn_partial.
        for head_dim in [36, 16, 24] {
            for walk in [
                AttentionWalk::Auto,
                AttentionWalk::Rows,
                AttentionWalk::WideRows,
                AttentionWalk::Positions,
            ] {
                let plan = choose_attention_plan(
                    &inputs(8, walk, true),
                    &shape(1, 50, 4, head_dim),
                    &view(head_dim, 51),
                    None,
                );
                assert_eq!(
                    plan.kernel,
                    AttentionKernel::Positions,
                    "{head_dim} {walk:?}"
                );
            }
        }
        // A cache view that starts off an 8-element boundary.
        let mut odd = view(64, 51);
        odd.offset_elems += 4;
        let plan = choose_attention_plan(&i, &shape(1, 50, 4, 64), &odd, None);
        assert_eq!(plan.kernel, AttentionKernel::Positions);
    }

    #[test]
    fn forced_walks_are_kept_where_the_layout_allows() {
        let (s, v) = (shape(4, 100, 2, 64), view(64, 104));
        let kernel =
            |walk, has_wide| choose_attention_plan(&inputs(8, walk, has_wide), &s, &v, None).kernel;
        assert_eq!(kernel(AttentionWalk::Rows, true), AttentionKernel::Rows);
        assert_eq!(
            kernel(AttentionWalk::Positions, true),
            AttentionKernel::Positions
        );
        assert_eq!(
            kernel(AttentionWalk::WideRows, true),
            AttentionKernel::WideRows
        );
        assert_eq!(
            kernel(AttentionWalk::WideRows, false),
            AttentionKernel::Rows
        );
        let wide = choose_attention_plan(&inputs(8, AttentionWalk::WideRows, true), &s, &v, None);
        assert_eq!((wide.splits, wide.chunk), (1, 104));
    }

    #[test]
    fn splits_fill_the_device_within_the_merge_limit() {
        let i = inputs(132, AttentionWalk::Positions, false);
        // Enough (token, head) groups already: no split.
        assert_eq!(split_plan(&i, &shape(64, 0, 32, 128), None, 8), (1, 64));
        // 32 heads at 192 positions on 132 units, 8 per unit: 33 splits wanted, chunks of 32 -> 6 splits.
        assert_eq!(split_plan(&i, &shape(1, 191, 32, 128), None, 8), (6, 32));
        // A tiny context stays whole.
        assert_eq!(split_plan(&i, &shape(1, 10, 32, 128), None, 8), (1, 11));
        // A greedy policy is capped at MAX_SPLITS.
        let greedy = PlanInputs {
            split: SplitPolicy {
                groups_per_unit: 100_000,
                min_chunk: 1,
            },
            ..i
        };
        let (splits, chunk) = split_plan(&greedy, &shape(1, 100_000, 4, 64), None, 100_000);
        assert!((2..=MAX_SPLITS).contains(&splits), "{splits}");
        assert!(splits * chunk >= 100_001 && (splits - 1) * chunk < 100_001);
        // Every split plan covers the context exactly once, chunks a multiple of min_chunk.
        for past in [0, 1, 31, 32, 33, 700, 5000] {
            for heads in [1, 2, 7, 32] {
                for units in [1, 4, 132] {
                    let i = inputs(units, AttentionWalk::Auto, false);
                    let (splits, chunk) = split_plan(&i, &shape(1, past, heads, 64), None, 8);
                    let n = past + 1;
                    assert!((1..=MAX_SPLITS).contains(&splits));
                    assert!(
                        splits * chunk >= n && (splits - 1) * chunk < n,
                        "{past} {heads} {units}"
                    );
                    assert!(splits == 1 || chunk % 32 == 0);
                }
            }
        }
    }

    #[test]
    fn windowed_calls_split_only_the_keys_they_read() {
        // Decode: the window's keys; prefill: from the first token's window start to the last token.
        assert_eq!(keys_read(&shape(1, 10_000, 8, 128), Some(512)), 512);
        assert_eq!(keys_read(&shape(1, 100, 8, 128), Some(512)), 101);
        assert_eq!(keys_read(&shape(64, 10_000, 8, 128), Some(512)), 575);
        assert_eq!(keys_read(&shape(64, 10_000, 8, 128), None), 10_064);
        let i = inputs(132, AttentionWalk::Auto, true);
        let long = shape(1, 30_000, 32, 128);
        let (splits, chunk) = split_plan(&i, &long, Some(256), 4);
        assert!(
            splits * chunk >= 256 && (splits - 1) * chunk < 256,
            "{splits} x {chunk}"
        );
        // A 256-key window is one wide block at any context.
        let plan = choose_attention_plan(&i, &long, &view(128, 30_001), Some(256));
        assert_eq!(
            plan,
            AttentionPlan {
                kernel: AttentionKernel::WideRows,
                splits: 1,
                chunk: 256
            }
        );
    }

    #[test]
    fn mali_devices_and_profiles_build_attn_mali() {
        let mali = |kind, max_wg| AttentionDevice {
            family: VendorFamily::Mali,
            ..device(kind, max_wg, 32)
        };
        assert!(mali(DeviceKind::Gpu, 1024).wants_mali());
        // A Mali profile on a CPU device runs the phone's kernel too.
        assert!(mali(DeviceKind::Cpu, 4096).wants_mali());
        assert!(!mali(DeviceKind::Gpu, 32).wants_mali());
        for family in [
            VendorFamily::Adreno,
            VendorFamily::Nvidia,
            VendorFamily::Pocl,
        ] {
            let d = AttentionDevice {
                family,
                ..device(DeviceKind::Gpu, 1024, 48)
            };
            assert!(!d.wants_mali(), "{family:?}");
        }
    }

    #[test]
    fn mali_decode_takes_attn_mali_where_the_width_divides_the_head() {
        let mali = |walk, width| PlanInputs {
            mali: VectorWidth::new(width),
            ..inputs(7, walk, false)
        };
        let auto4 = mali(AttentionWalk::Auto, 4);
        let plan = choose_attention_plan(&auto4, &shape(1, 1023, 32, 128), &view(128, 1024), None);
        // 1792 work-items over 32 heads want 56 splits; sqrt(2048) = 45 caps them; chunks of 23 -> 32 positions.
        assert_eq!(
            plan,
            AttentionPlan {
                kernel: AttentionKernel::Mali,
                splits: 32,
                chunk: 32
            }
        );
        // Off the row kernels' 8-element layout it still runs (head_dim 36 at width 4 or 2), but not at a width
        // that does not divide the head (36 / 8 would need width 8, which is never built; 6 at width 4).
        assert_eq!(
            choose_attention_plan(&auto4, &shape(1, 50, 4, 36), &view(36, 51), None).kernel,
            AttentionKernel::Mali
        );
        assert_eq!(
            choose_attention_plan(&auto4, &shape(1, 50, 4, 6), &view(6, 51), None).kernel,
            AttentionKernel::Positions
        );
        assert_eq!(
            choose_attention_plan(
                &mali(AttentionWalk::Auto, 2),
                &shape(1, 50, 4, 6),
                &view(6, 51),
                None
            )
            .kernel,
            AttentionKernel::Mali
        );
        // Prefill keeps the portable kernels under Auto; the forced walk takes attn_mali there too.
        let prefill = shape(37, 0, 4, 64);
        assert_eq!(
            choose_attention_plan(&auto4, &prefill, &view(64, 37), None).kernel,
            AttentionKernel::Positions
        );
        let forced =
            choose_attention_plan(&mali(AttentionWalk::Mali, 4), &prefill, &view(64, 37), None);
        assert_eq!(forced.kernel, AttentionKernel::Mali);
        // Without the Mali build the forced walk is Auto.
        let none = inputs(7, AttentionWalk::Mali, false);
        assert_eq!(
            choose_attention_plan(&none, &shape(1, 100, 4, 64), &view(64, 101), None).kernel,
            AttentionKernel::Rows
        );
    }

    #[test]
    fn mali_splits_cover_the_context_in_whole_blocks_and_stay_near_its_square_root() {
        for past in [0, 1, 15, 16, 17, 300, 4095, 100_000] {
            for heads in [1, 8, 32] {
                for units in [1, 7, 16] {
                    let i = PlanInputs {
                        mali: Some(VectorWidth::DEFAULT),
                        ..inputs(units, AttentionWalk::Auto, false)
                    };
                    let plan = mali_plan(&i, &shape(1, past, heads, 64), None);
                    let n = past + 1;
                    assert!((1..=MAX_SPLITS).contains(&plan.splits));
                    assert!(plan.splits * plan.chunk >= n && (plan.splits - 1) * plan.chunk < n);
                    assert!(
                        plan.splits == 1 || plan.chunk.is_multiple_of(MALI_BLOCK),
                        "{plan:?}"
                    );
                    assert!(plan.splits <= (2 * n).isqrt().max(1), "{past} {plan:?}");
                }
            }
        }
    }

    #[test]
    fn each_kernel_names_its_work_group() {
        assert_eq!(AttentionKernel::Positions.work_group(), ATT_WG);
        assert_eq!(AttentionKernel::Rows.work_group(), ATT_WG);
        assert_eq!(AttentionKernel::WideRows.work_group(), WIDE_WG);
        assert_eq!(AttentionKernel::Mali.work_group(), MALI_WG);
    }
}
