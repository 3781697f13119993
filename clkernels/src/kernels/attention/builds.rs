//! The builds of `attention.cl` an [`super::Attention`] holds: for each cache element type, `attn_partial`, the
//! split and (where the device runs it) the wide `attn_rows`, `kv_write` and `qkv_rope_write`; on a Mali (or under
//! a Mali profile) also `attn_mali` and `attn_mali_stage` (`vendor/mali_attention.cl`).

use kvcache::KvDtype;

use super::super::{program_source, KernelError, LockedKernel};
use super::choose::{
    AttentionDevice, AttentionKernel, ATT_WG, MALI_BLOCK, MALI_WG, MAX_HEAD_DIM, MAX_SPLITS,
    ROWS_PER_ITEM, WIDE_ROWS_PER_ITEM, WIDE_WG,
};
use crate::kernels::vector_width::VectorWidth;
use crate::runtime::{Gpu, ProgramSource};

const SOURCE: ProgramSource = program_source!("attention", "attention/attention.cl");
/// The Mali program: `attention.cl` (its parameter struct and cache macros) and the Mali kernels after it.
const MALI_SOURCE: ProgramSource = program_source!(
    "attention_mali",
    "attention/attention.cl",
    "vendor/mali_attention.cl"
);

/// One kernel of one build, as a plan and a cache type name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AttentionBuild {
    /// The kernel the plan chose.
    pub kernel: AttentionKernel,
    /// The cache's element type.
    pub dtype: KvDtype,
}

/// A kernel built once per cache element type.
#[derive(Debug)]
struct PerDtype {
    f32: LockedKernel,
    f16: LockedKernel,
}

impl PerDtype {
    fn build(
        make: impl Fn(bool) -> Result<LockedKernel, KernelError>,
    ) -> Result<Self, KernelError> {
        Ok(PerDtype {
            f32: make(false)?,
            f16: make(true)?,
        })
    }

    fn get(&self, dtype: KvDtype) -> &LockedKernel {
        match dtype {
            KvDtype::F32 => &self.f32,
            KvDtype::F16 => &self.f16,
        }
    }
}

/// The ten kernels of one launcher.
#[derive(Debug)]
pub(super) struct AttentionBuilds {
    partial: PerDtype,
    rows: PerDtype,
    /// The 256-wide `attn_rows`, where the device runs groups that wide (see [`wide_builds`]).
    wide: Option<PerDtype>,
    write: PerDtype,
    fused_write: PerDtype,
    /// `attn_mali` and `attn_mali_stage`, where built.
    mali: Option<MaliBuilds>,
}

/// The Mali build at one vector width.
#[derive(Debug)]
struct MaliBuilds {
    width: VectorWidth,
    attend: PerDtype,
    stage: PerDtype,
}

/// One program's defines: work-group size, `attn_rows` rows per work-item, f16 or f32 cache, then the rest.
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

/// Whether a kernel whose driver-reported group limit is `max_work_group_size` (0: not reported) runs the wide
/// build's 256 work-items.
fn runs_wide(max_work_group_size: usize) -> bool {
    matches!(max_work_group_size, 0 | WIDE_WG..)
}

/// The wide builds, or `None` where the device cannot run them: too few work-items per group or too little local
/// memory, or a driver that refuses or shrinks the build. Decode then splits the context instead.
fn wide_builds(
    gpu: &Gpu,
    device: &AttentionDevice,
    build: impl Fn(bool) -> Result<LockedKernel, KernelError>,
) -> Option<PerDtype> {
    if !device.fits_wide_build() {
        return None;
    }
    match PerDtype::build(build) {
        Ok(w)
            if runs_wide(w.f32.max_work_group_size(gpu))
                && runs_wide(w.f16.max_work_group_size(gpu)) =>
        {
            Some(w)
        }
        Ok(_) => None,
        Err(err) => {
            tracing::warn!(%err, "the one-group-per-head attention build failed; decode splits the context");
            None
        }
    }
}

impl AttentionBuilds {
    /// Builds every kernel with `extra` defines added to each program (compile checks use them), and the Mali
    /// kernels at `mali`'s width where given.
    pub(super) fn new(
        gpu: &Gpu,
        device: &AttentionDevice,
        extra: &[(&str, &str)],
        mali: Option<VectorWidth>,
    ) -> Result<Self, KernelError> {
        let wg = ATT_WG.to_string();
        let hd = MAX_HEAD_DIM.to_string();
        let splits = MAX_SPLITS.to_string();
        let rows = ROWS_PER_ITEM.to_string();
        let (wide_wg, wide_rows) = (WIDE_WG.to_string(), WIDE_ROWS_PER_ITEM.to_string());
        let common = [
            ("ATT_MAX_HD", hd.as_str()),
            ("ATT_MAX_SPLITS", splits.as_str()),
        ];
        let defines = |wg, rows, f16| program_defines(wg, rows, f16, &common, extra);
        let split = |f16| defines(wg.as_str(), rows.as_str(), f16);
        // The softmax's work-group maximum and sum through warp shuffles where NVIDIA's compiler takes them.
        let shuffled = |defines: &[(&str, &str)], name| {
            LockedKernel::build_with_nv_ptx(gpu, &SOURCE, defines, name, true)
                .map(|(kernel, _)| kernel)
        };
        let plain = |f16, name| LockedKernel::build(gpu, &SOURCE, &split(f16), name);
        let (mali_wg, mali_block) = (MALI_WG.to_string(), MALI_BLOCK.to_string());
        let mali = mali
            .map(|width| {
                let mali_defines = |f16| {
                    let mut d = split(f16);
                    d.extend([
                        ("MALI_VW", width.define_value()),
                        ("MALI_ATT_WG", mali_wg.as_str()),
                        ("MALI_ATT_BLOCK", mali_block.as_str()),
                    ]);
                    d
                };
                let mali_kernel =
                    |f16, name| LockedKernel::build(gpu, &MALI_SOURCE, &mali_defines(f16), name);
                Ok::<_, KernelError>(MaliBuilds {
                    width,
                    attend: PerDtype::build(|f16| mali_kernel(f16, "attn_mali"))?,
                    stage: PerDtype::build(|f16| mali_kernel(f16, "attn_mali_stage"))?,
                })
            })
            .transpose()?;
        Ok(AttentionBuilds {
            mali,
            partial: PerDtype::build(|f16| shuffled(&split(f16), "attn_partial"))?,
            rows: PerDtype::build(|f16| shuffled(&split(f16), "attn_rows"))?,
            wide: wide_builds(gpu, device, |f16| {
                shuffled(
                    &defines(wide_wg.as_str(), wide_rows.as_str(), f16),
                    "attn_rows",
                )
            }),
            write: PerDtype::build(|f16| plain(f16, "kv_write"))?,
            fused_write: PerDtype::build(|f16| plain(f16, "qkv_rope_write"))?,
        })
    }

    /// Whether the wide builds exist.
    pub(super) fn has_wide(&self) -> bool {
        self.wide.is_some()
    }

    /// The attention kernel of `build`, `None` for a wide or Mali build this device does not have.
    pub(super) fn attention(&self, build: AttentionBuild) -> Option<&LockedKernel> {
        let kernels = match build.kernel {
            AttentionKernel::Positions => &self.partial,
            AttentionKernel::Rows => &self.rows,
            AttentionKernel::WideRows => self.wide.as_ref()?,
            AttentionKernel::Mali => &self.mali.as_ref()?.attend,
        };
        Some(kernels.get(build.dtype))
    }

    /// The width of the Mali build, `None` where it is not built.
    pub(super) fn mali_width(&self) -> Option<VectorWidth> {
        self.mali.as_ref().map(|m| m.width)
    }

    /// `attn_mali_stage` for a cache of `dtype`, `None` where the Mali build is not built.
    pub(super) fn mali_stage(&self, dtype: KvDtype) -> Option<&LockedKernel> {
        self.mali.as_ref().map(|m| m.stage.get(dtype))
    }

    /// `kv_write` for a cache of `dtype`.
    pub(super) fn kv_write(&self, dtype: KvDtype) -> &LockedKernel {
        self.write.get(dtype)
    }

    /// `qkv_rope_write` for a cache of `dtype`.
    pub(super) fn qkv_rope_write(&self, dtype: KvDtype) -> &LockedKernel {
        self.fused_write.get(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_builds_need_drivers_that_run_256_items() {
        assert!(runs_wide(0), "a driver that does not say is trusted");
        assert!(runs_wide(256) && runs_wide(1024));
        assert!(!runs_wide(128) && !runs_wide(255));
    }

    #[test]
    fn program_defines_name_the_build() {
        let d = program_defines("64", "8", true, &[("ATT_MAX_HD", "256")], &[("X", "1")]);
        assert_eq!(
            d,
            [
                ("ATT_WG", "64"),
                ("ATT_ROWS", "8"),
                ("ATT_MAX_HD", "256"),
                ("KV_F16", "1"),
                ("X", "1")
            ]
        );
        assert!(!program_defines("64", "8", false, &[], &[]).contains(&("KV_F16", "1")));
    }
}
