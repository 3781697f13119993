//! Cases of the matrix products: the decode mat-vecs (M0E4 plain, with the norm folded in, gate+up; the f16
//! head) and the prefill M0E4 mat-mat.

use std::rc::Rc;

use clkernels::kernels::matmul::MatmulM0e4;
use clkernels::kernels::matvec::{
    DeviceF16Matrix, DeviceM0e4, MatvecConfig, MatvecF16, MatvecM0e4,
};
use clkernels::kernels::norm::RmsNormParams;
use clkernels::kernels::{GatedActivation, KernelError, Residual};
use clkernels::runtime::{DeviceBuffer, Gpu};
use fp4::{GroupSize, MatrixShape};
use half::f16;

use super::Dims;
use crate::kernels::data::{cold_copies, synthetic_m0e4, Xorshift};
use crate::kernels::{Case, SuiteOptions};

/// Llama's RMSNorm parameters, for the cases with the norm folded in.
const NORM: RmsNormParams = RmsNormParams {
    eps: 1e-5,
    weight_offset: 0.0,
};

/// The M0E4 mat-vec geometry in words, as the table's config column shows it.
fn matvec_config_text(mv: &MatvecM0e4) -> String {
    let cfg = mv.config();
    match cfg.cpu {
        Some(g) => format!("cpu rows {} wg {}", g.rows_per_item, g.work_group),
        None => format!(
            "wg {} rows {}{}{}{}{}{}{}",
            cfg.work_group,
            cfg.rows_per_group,
            if cfg.half_math { " half" } else { "" },
            if mv.uses_warp_shuffle() { " shfl" } else { "" },
            if cfg.x_local_chunks > 0 {
                format!(" xl{}", cfg.x_local_chunks)
            } else {
                String::new()
            },
            if cfg.unroll > 1 {
                format!(" u{}", cfg.unroll)
            } else {
                String::new()
            },
            match cfg.short_unroll {
                0 => String::new(),
                n if n == cfg.unroll => String::new(),
                n => format!(" su{n}"),
            },
            if cfg.nv_half2 { " h2" } else { "" }
        ),
    }
}

/// The M0E4 mat-vecs of a decode layer, each cycling through cold copies of its weights.
pub(super) fn matvec_m0e4(
    gpu: &Gpu,
    opts: &SuiteOptions,
    dims: Dims,
    rng: &mut Xorshift,
    out: &mut Vec<Case>,
) -> Result<(), KernelError> {
    let names = ["matvec_m0e4", "matvec_m0e4_normed", "matvec_m0e4_gate_up"];
    if !names.iter().any(|n| opts.wants(n)) {
        return Ok(());
    }
    let Dims { hidden, ffn, .. } = dims;
    let config = opts.matvec.unwrap_or_else(|| MatvecConfig::for_gpu(gpu));
    let defines = opts.matvec_define_pairs();
    let mv = Rc::new(MatvecM0e4::with_diagnostics(gpu, config, &defines)?);
    let cfg_text = matvec_config_text(&mv);
    if opts.wants("matvec_m0e4") {
        for (rows, cols, group) in [
            (hidden, hidden, GroupSize::G32),
            (hidden, ffn, GroupSize::G32),
            (ffn, hidden, GroupSize::G32),
            (hidden, hidden, GroupSize::G128),
        ] {
            if !cols.is_multiple_of(group.len()) {
                continue; // e.g. G128 on SmolLM2's 576-wide rows
            }
            let ws = cold_copies(gpu, &synthetic_m0e4(rng, rows, cols, group)?)?;
            let x = DeviceBuffer::from_slice(gpu, &rng.floats(cols))?;
            let mut y = DeviceBuffer::<f32>::new(gpu, rows)?;
            let bytes = (ws[0].bytes() + cols * 4 + rows * 4) as f64;
            let mv = mv.clone();
            let mut i = 0;
            out.push(Case {
                name: "matvec_m0e4".into(),
                shape: format!("{rows}x{cols} G{}", group.len()),
                config: cfg_text.clone(),
                bytes,
                flops: 2.0 * (rows * cols) as f64,
                run: Box::new(move || {
                    i = (i + 1) % ws.len();
                    mv.enqueue(&ws[i], &x, &mut y, Residual::None)
                }),
            });
        }
    }
    if opts.wants("matvec_m0e4_normed") {
        // What a 7B decode step runs first in each layer: the attention RMSNorm folded into the QKV mat-vec.
        let ws = cold_copies(
            gpu,
            &synthetic_m0e4(rng, 3 * hidden, hidden, GroupSize::G32)?,
        )?;
        let x = DeviceBuffer::from_slice(gpu, &rng.floats(hidden))?;
        let nw = DeviceBuffer::from_slice(gpu, &rng.floats(hidden))?;
        let mut y = DeviceBuffer::<f32>::new(gpu, 3 * hidden)?;
        let bytes = (ws[0].bytes() + hidden * 8 + 3 * hidden * 4) as f64;
        let mv = mv.clone();
        let mut i = 0;
        out.push(Case {
            name: "matvec_m0e4_normed".into(),
            shape: format!("{}x{hidden} G32 (QKV)", 3 * hidden),
            config: cfg_text.clone(),
            bytes,
            flops: 2.0 * (3 * hidden * hidden) as f64,
            run: Box::new(move || {
                i = (i + 1) % ws.len();
                mv.enqueue_normed(&ws[i], &x, &nw, NORM, &mut y, Residual::None)
            }),
        });
    }
    if opts.wants("matvec_m0e4_gate_up") {
        let gs = cold_copies(gpu, &synthetic_m0e4(rng, ffn, hidden, GroupSize::G32)?)?;
        let us = cold_copies(gpu, &synthetic_m0e4(rng, ffn, hidden, GroupSize::G32)?)?;
        let x = DeviceBuffer::from_slice(gpu, &rng.floats(hidden))?;
        let mut y = DeviceBuffer::<f32>::new(gpu, ffn)?;
        let nw = DeviceBuffer::from_slice(gpu, &rng.floats(hidden))?;
        let bytes = (gs[0].bytes() + us[0].bytes() + hidden * 8 + ffn * 4) as f64;
        let mut i = 0;
        // With the feed-forward RMSNorm folded in, as decode runs it.
        out.push(Case {
            name: "matvec_m0e4_gate_up".into(),
            shape: format!("2x {ffn}x{hidden} G32 normed"),
            config: cfg_text,
            bytes,
            flops: 4.0 * (ffn * hidden) as f64,
            run: Box::new(move || {
                // Each copy list alone exceeds the cache, so the pair does too.
                i = (i + 1) % gs.len();
                let (g, u) = (&gs[i], &us[i]);
                mv.enqueue_gate_up_normed(g, u, &x, &nw, NORM, &mut y, GatedActivation::Silu)
            }),
        });
    }
    Ok(())
}

/// The f16 output head of an untied model (vocabulary rows).
pub(super) fn matvec_f16(
    gpu: &Gpu,
    opts: &SuiteOptions,
    dims: Dims,
    rng: &mut Xorshift,
    out: &mut Vec<Case>,
) -> Result<(), KernelError> {
    if !opts.wants("matvec_f16") {
        return Ok(());
    }
    let Dims { hidden, vocab, .. } = dims;
    let config = opts.matvec.unwrap_or_else(|| MatvecConfig::for_gpu(gpu));
    let mv = MatvecF16::with_config(gpu, config)?;
    let cfg_text = match config.cpu {
        Some(g) => format!("cpu rows {} wg {}", g.rows_per_item, g.work_group),
        None => format!("wg {} rows {}", config.work_group, config.rows_per_group),
    };
    let data: Vec<f16> = (0..vocab * hidden)
        .map(|_| f16::from_f32(rng.unit() * 0.05))
        .collect();
    let w = DeviceF16Matrix::upload(gpu, &data, MatrixShape::new(vocab, hidden))?;
    let x = DeviceBuffer::from_slice(gpu, &rng.floats(hidden))?;
    let mut y = DeviceBuffer::<f32>::new(gpu, vocab)?;
    out.push(Case {
        name: "matvec_f16".into(),
        shape: format!("{vocab}x{hidden}"),
        config: cfg_text,
        bytes: (vocab * hidden * 2 + hidden * 4 + vocab * 4) as f64,
        flops: 2.0 * (vocab * hidden) as f64,
        run: Box::new(move || mv.enqueue(&w, &x, &mut y, Residual::None)),
    });
    Ok(())
}

/// The prefill M0E4 mat-mat of a square projection.
pub(super) fn matmul_m0e4(
    gpu: &Gpu,
    opts: &SuiteOptions,
    dims: Dims,
    rng: &mut Xorshift,
    out: &mut Vec<Case>,
) -> Result<(), KernelError> {
    if !opts.wants("matmul_m0e4") {
        return Ok(());
    }
    let Dims { hidden, seq, .. } = dims;
    let mm = match opts.matmul {
        Some(c) => MatmulM0e4::with_config(gpu, c)?,
        None => MatmulM0e4::new(gpu)?,
    };
    let c = mm.config();
    let w = DeviceM0e4::upload(gpu, &synthetic_m0e4(rng, hidden, hidden, GroupSize::G32)?)?;
    let x = DeviceBuffer::from_slice(gpu, &rng.floats(seq * hidden))?;
    let mut y = DeviceBuffer::<f32>::new(gpu, seq * hidden)?;
    out.push(Case {
        name: "matmul_m0e4".into(),
        shape: format!("seq {seq} x {hidden}x{hidden} G32"),
        config: format!(
            "tile {}x{} per-item {}x{}{}",
            c.tile_m,
            c.tile_n,
            c.work_m,
            c.work_n,
            if c.vec { " vec" } else { "" }
        ),
        bytes: (w.bytes() + seq * hidden * 8) as f64,
        flops: 2.0 * (seq * hidden * hidden) as f64,
        run: Box::new(move || mm.enqueue(&w, &x, seq, &mut y, Residual::None)),
    });
    Ok(())
}
