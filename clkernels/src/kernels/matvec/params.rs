//! The scalar arguments of the mat-vec kernels (`matvec.cl` and `cpu.cl` alike) as `#[repr(C)]` structs, each
//! mirroring a `typedef struct` of `params.cl` field for field (every field is 4 bytes, so both sides lay them out
//! alike), and the checks that turn a call into them. Pure: a call is checked without a device.

use bytemuck::{Pod, Zeroable};
use fp4::MatrixShape;

use super::super::norm::RmsNormParams;
use super::super::{check_count, shape_error, to_u32, GatedActivation, KernelError};
use super::weights::{chunks_per_group_shift, WeightDims};

/// `mv_params` of the four M0E4 kernels.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
pub(super) struct MvParams {
    pub rows: u32,
    /// 32-code chunks per row (`cols / 32`).
    pub chunks: u32,
    /// `log2(G / 32)`.
    pub cpg_shift: u32,
    /// Plain and normed: 0 `y = W·x`, 1 `+ residual`, 2 `+ y` (see `Residual`). Gate+up: unused.
    pub res_mode: u32,
    /// Gate+up: the activation (`GatedActivation::code`). Otherwise unused.
    pub act: u32,
    /// Normed: the RMSNorm's epsilon and weight offset. Otherwise unused.
    pub eps: f32,
    pub w_off: f32,
}

/// `mv_f16_params` of `matvec_f16`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
pub(super) struct MvF16Params {
    pub rows: u32,
    pub cols: u32,
    pub res_mode: u32,
}

/// One M0E4 mat-vec call in the terms its checks need: the weights (and the up weights with the activation),
/// how many values x, the norm weight, the residual and the output hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct M0e4Call {
    pub w: WeightDims,
    pub up: Option<(WeightDims, GatedActivation)>,
    pub x_len: usize,
    /// The norm weight's length and the norm's parameters.
    pub norm: Option<(usize, RmsNormParams)>,
    /// `Residual::mode`, and the separate residual's length for `Residual::Add`.
    pub res_mode: u32,
    pub residual_len: Option<usize>,
    pub out_len: usize,
}

/// Checks one weight matrix against x and the output; returns `(rows, chunks)`.
fn check_weight(
    w: &WeightDims,
    x_len: usize,
    y_len: usize,
    y_name: &str,
) -> Result<(u32, u32), KernelError> {
    const K: &str = "matvec_m0e4";
    let MatrixShape { rows, cols } = w.shape;
    w.shape
        .check_groupable(w.group)
        .map_err(|e| shape_error(K, e.to_string()))?;
    let groups = rows * (cols / w.group.len());
    if w.codes < rows * cols / 2 || w.scales < groups {
        return Err(shape_error(
            K,
            "weight buffers are shorter than the matrix shape",
        ));
    }
    if w.offsets < w.scales.min(groups) {
        return Err(shape_error(
            K,
            "offset buffer is shorter than the matrix shape",
        ));
    }
    check_count(K, "x", x_len, cols)?;
    if y_len < rows {
        return Err(shape_error(
            K,
            format!("{y_name} buffer has {y_len} elements but W has {rows} rows"),
        ));
    }
    Ok((to_u32(K, "rows", rows)?, to_u32(K, "cols / 32", cols / 32)?))
}

/// Checks an M0E4 call and returns its parameters.
pub(super) fn check_m0e4(call: &M0e4Call) -> Result<MvParams, KernelError> {
    const K: &str = "matvec_m0e4";
    let w = &call.w;
    if let Some((up, _)) = &call.up {
        if w.shape != up.shape || w.group != up.group {
            return Err(shape_error(
                "matvec_m0e4_gate_up",
                format!(
                    "gate is {}x{} (group {}) but up is {}x{} (group {})",
                    w.shape.rows, w.shape.cols, w.group, up.shape.rows, up.shape.cols, up.group
                ),
            ));
        }
    }
    let (rows, chunks) = check_weight(w, call.x_len, call.out_len, "y")?;
    if let Some((up, _)) = &call.up {
        check_weight(up, call.x_len, call.out_len, "out")?;
    }
    if let Some((nw_len, _)) = call.norm {
        check_count(K, "norm weight", nw_len, w.shape.cols)?;
    }
    if let Some(len) = call.residual_len {
        check_count(K, "residual", len, w.shape.rows)?;
    }
    let (eps, w_off) = call
        .norm
        .map_or((0.0, 0.0), |(_, p)| (p.eps, p.weight_offset));
    Ok(MvParams {
        rows,
        chunks,
        cpg_shift: chunks_per_group_shift(w.group),
        res_mode: call.res_mode,
        act: call.up.map_or(0, |(_, act)| act.code()),
        eps,
        w_off,
    })
}

/// Checks an f16 mat-vec of a `shape` matrix (`w_len` values) and returns its parameters.
pub(super) fn check_f16(
    shape: MatrixShape,
    w_len: usize,
    x_len: usize,
    y_len: usize,
    res_mode: u32,
    residual_len: Option<usize>,
) -> Result<MvF16Params, KernelError> {
    const K: &str = "matvec_f16";
    let MatrixShape { rows, cols } = shape;
    if !cols.is_multiple_of(8) {
        return Err(shape_error(
            K,
            format!("cols = {cols} is not a multiple of 8"),
        ));
    }
    check_count(K, "w", w_len, rows * cols)?;
    check_count(K, "x", x_len, cols)?;
    check_count(K, "y", y_len, rows)?;
    if let Some(len) = residual_len {
        check_count(K, "residual", len, rows)?;
    }
    Ok(MvF16Params {
        rows: to_u32(K, "rows", rows)?,
        cols: to_u32(K, "cols", cols)?,
        res_mode,
    })
}

#[cfg(test)]
mod tests {
    use fp4::GroupSize;

    use super::*;

    fn dims(rows: usize, cols: usize, group: GroupSize) -> WeightDims {
        let groups = rows * cols / group.len();
        WeightDims {
            shape: MatrixShape::new(rows, cols),
            group,
            codes: rows * cols / 2,
            scales: groups,
            offsets: groups,
        }
    }

    fn call(w: WeightDims) -> M0e4Call {
        M0e4Call {
            w,
            up: None,
            x_len: w.shape.cols,
            norm: None,
            res_mode: 0,
            residual_len: None,
            out_len: w.shape.rows,
        }
    }

    #[test]
    fn struct_sizes_match_the_kernels_field_counts() {
        assert_eq!(std::mem::size_of::<MvParams>(), 7 * 4);
        assert_eq!(std::mem::size_of::<MvF16Params>(), 3 * 4);
    }

    #[test]
    fn calls_become_parameters() {
        let norm = RmsNormParams {
            eps: 1e-6,
            weight_offset: 1.0,
        };
        let normed = M0e4Call {
            norm: Some((256, norm)),
            res_mode: 1,
            residual_len: Some(40),
            ..call(dims(40, 256, GroupSize::G128))
        };
        assert_eq!(
            check_m0e4(&normed).ok(),
            Some(MvParams {
                rows: 40,
                chunks: 8,
                cpg_shift: 2,
                res_mode: 1,
                act: 0,
                eps: 1e-6,
                w_off: 1.0,
            })
        );
        let w = dims(24, 64, GroupSize::G64);
        let gate_up = M0e4Call {
            up: Some((w, GatedActivation::GeluTanh)),
            ..call(w)
        };
        let p = check_m0e4(&gate_up).expect("a valid gate+up");
        assert_eq!((p.rows, p.chunks, p.cpg_shift, p.act), (24, 2, 1, 1));
        let f = check_f16(MatrixShape::new(5, 24), 120, 24, 5, 2, None).expect("a valid f16 call");
        assert_eq!(
            f,
            MvF16Params {
                rows: 5,
                cols: 24,
                res_mode: 2
            }
        );
    }

    #[test]
    fn calls_that_do_not_fit_are_refused() {
        let w = dims(40, 256, GroupSize::G32);
        assert!(check_m0e4(&call(w)).is_ok());
        let short = |f: fn(&mut M0e4Call)| {
            let mut c = call(w);
            f(&mut c);
            check_m0e4(&c).is_err()
        };
        assert!(short(|c| c.x_len -= 1));
        assert!(short(|c| c.out_len -= 1));
        assert!(short(|c| c.w.codes -= 1));
        assert!(short(|c| c.w.scales -= 1));
        assert!(short(|c| c.w.offsets -= 1));
        assert!(short(|c| c.residual_len = Some(39)));
        assert!(short(|c| {
            c.norm = Some((
                255,
                RmsNormParams {
                    eps: 1e-5,
                    weight_offset: 0.0,
                },
            ))
        }));
        // Columns that are not whole groups.
        assert!(check_m0e4(&call(dims(4, 48, GroupSize::G32))).is_err());
        // A gate and an up matrix of different shapes or groups.
        let other = dims(40, 256, GroupSize::G64);
        let mismatched = M0e4Call {
            up: Some((other, GatedActivation::Silu)),
            ..call(w)
        };
        assert!(check_m0e4(&mismatched).is_err());
        // f16: columns not a multiple of 8, short buffers.
        assert!(check_f16(MatrixShape::new(5, 20), 100, 20, 5, 0, None).is_err());
        assert!(check_f16(MatrixShape::new(5, 24), 119, 24, 5, 0, None).is_err());
        assert!(check_f16(MatrixShape::new(5, 24), 120, 24, 4, 0, None).is_err());
        assert!(check_f16(MatrixShape::new(5, 24), 120, 24, 5, 1, Some(4)).is_err());
    }
}
