//! [`matvec_timeline`]: where one cold mat-vec launch's time goes, from timestamps each work-group records
//! (NVIDIA only), for `tlite bench-kernels --mv-timeline`.

use clkernels::kernels::matvec::{MatvecConfig, MatvecM0e4};
use clkernels::kernels::{KernelError, Residual};
use clkernels::runtime::{DeviceBuffer, Gpu};
use fp4::GroupSize;

use super::data::{cold_copies, synthetic_m0e4, Xorshift};

/// The mat-vec shapes (rows, cols) of a 7B decode step: the square projections, up, down, and the fused QKV.
pub const TIMELINE_SHAPES: [(usize, usize); 4] =
    [(4096, 4096), (4096, 11008), (11008, 4096), (12288, 4096)];

/// Where one mat-vec launch's time goes, from per-work-group timestamps (NVIDIA only; see
/// [`matvec_timeline`]). Times in microseconds from the first work-group's start.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Work-groups recorded.
    pub groups: usize,
    /// First start to last end.
    pub span_us: f64,
    /// Work-group start times: 10th, 50th, 90th percentile and last.
    pub starts_us: [f64; 4],
    /// Work-group end times: first, 10th, 50th, 90th percentile and last.
    pub ends_us: [f64; 5],
    /// Median work-group time staging x, in its dot products (loads included), reducing and storing.
    pub phases_us: [f64; 3],
    /// Compute units (streaming multiprocessors) that ran work-groups.
    pub units: usize,
    /// The most work-groups any one unit ran.
    pub max_groups_per_unit: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Times one cold launch of the `rows`x`cols` G32 mat-vec from inside: the kernel is built with `MV_DIAG_TIMES`
/// (plus `defines`), so each work-group records its start, the end of its x staging, of its dot products and of
/// its store. Returns `None` where that build does not record (not NVIDIA, or no inline PTX). The median of
/// `runs` launches' spans is reported, with that launch's breakdown.
pub fn matvec_timeline(
    gpu: &Gpu,
    config: Option<MatvecConfig>,
    defines: &[(&str, &str)],
    rows: usize,
    cols: usize,
    runs: usize,
) -> Result<Option<Timeline>, KernelError> {
    let mut all: Vec<(&str, &str)> = defines.to_vec();
    all.push(("MV_DIAG_TIMES", "1"));
    let config = config.unwrap_or_else(|| MatvecConfig::for_gpu(gpu));
    let mv = MatvecM0e4::with_diagnostics(gpu, config, &all)?;
    let mut rng = Xorshift(0x5DEE_CE66_D1CE_4E5B);
    let ws = cold_copies(gpu, &synthetic_m0e4(&mut rng, rows, cols, GroupSize::G32)?)?;
    let x = DeviceBuffer::from_slice(gpu, &rng.floats(cols))?;
    // Room for eight words per work-group at one row per group, the most any geometry launches.
    let mut y = DeviceBuffer::<f32>::new(gpu, rows + 8 * rows)?;
    let mut lines = Vec::new();
    for run in 0..runs.max(1) + 2 {
        y.fill_bytes(gpu, 0)?;
        mv.enqueue(&ws[run % ws.len()], &x, &mut y, Residual::None)?;
        let ys = y.read(gpu)?;
        let words: &[u32] = bytemuck::cast_slice(&ys[rows..]);
        let recs: Vec<&[u32]> = words
            .chunks_exact(8)
            .take_while(|r| r[0] != 0 || r[1] != 0)
            .collect();
        if recs.is_empty() {
            return Ok(None);
        }
        // Two warm-up launches (program load, first touch) are not kept.
        if run >= 2 {
            lines.push(summarise(&recs));
        }
    }
    lines.sort_by(|a, b| a.span_us.total_cmp(&b.span_us));
    Ok(lines.get(lines.len() / 2).cloned())
}

fn summarise(recs: &[&[u32]]) -> Timeline {
    let start = |r: &[u32]| (u64::from(r[1]) << 32) | u64::from(r[0]);
    let t0 = recs.iter().map(|r| start(r)).min().unwrap_or(0);
    let mut starts: Vec<f64> = recs.iter().map(|r| (start(r) - t0) as f64 * 1e-3).collect();
    let mut ends: Vec<f64> = recs
        .iter()
        .map(|r| (start(r) - t0 + u64::from(r[2])) as f64 * 1e-3)
        .collect();
    // Clock cycles to ns from the whole records (the SM clock is not the timer's).
    let (ns, cycles): (f64, f64) = recs.iter().fold((0.0, 0.0), |(a, b), r| {
        (a + f64::from(r[2]), b + f64::from(r[5]))
    });
    let us_per_cycle = if cycles > 0.0 {
        ns / cycles * 1e-3
    } else {
        0.0
    };
    let phase = |f: &dyn Fn(&[u32]) -> f64| {
        let mut v: Vec<f64> = recs.iter().map(|r| f(r) * us_per_cycle).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    };
    let phases_us = [
        phase(&|r| f64::from(r[3])),
        phase(&|r| f64::from(r[4].saturating_sub(r[3]))),
        phase(&|r| f64::from(r[5].saturating_sub(r[4]))),
    ];
    starts.sort_by(f64::total_cmp);
    ends.sort_by(f64::total_cmp);
    let mut per_unit = std::collections::HashMap::new();
    for r in recs {
        *per_unit.entry(r[6]).or_insert(0usize) += 1;
    }
    Timeline {
        groups: recs.len(),
        span_us: ends.last().copied().unwrap_or(0.0),
        starts_us: [
            percentile(&starts, 0.1),
            percentile(&starts, 0.5),
            percentile(&starts, 0.9),
            starts.last().copied().unwrap_or(0.0),
        ],
        ends_us: [
            ends.first().copied().unwrap_or(0.0),
            percentile(&ends, 0.1),
            percentile(&ends, 0.5),
            percentile(&ends, 0.9),
            ends.last().copied().unwrap_or(0.0),
        ],
        phases_us,
        units: per_unit.len(),
        max_groups_per_unit: per_unit.values().copied().max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::summarise;

    /// Records as the kernel writes them: start (lo, hi), duration ns, staged / dotted / ended cycles, unit.
    fn rec(start_ns: u64, dur_ns: u32, cycles: [u32; 3], unit: u32) -> [u32; 8] {
        let [staged, dotted, ended] = cycles;
        [
            start_ns as u32,
            (start_ns >> 32) as u32,
            dur_ns,
            staged,
            dotted,
            ended,
            unit,
            0,
        ]
    }

    #[test]
    fn timeline_summary_reads_the_records() {
        // Two units, three groups; 2 cycles per ns in every record, so phases convert exactly.
        let base = 5u64 << 32;
        let recs = [
            rec(base + 1_000, 4_000, [2_000, 6_000, 8_000], 3),
            rec(base, 2_000, [1_000, 3_000, 4_000], 3),
            rec(base + 500, 3_000, [1_000, 5_000, 6_000], 7),
        ];
        let views: Vec<&[u32]> = recs.iter().map(|r| &r[..]).collect();
        let t = summarise(&views);
        assert_eq!(t.groups, 3);
        assert_eq!((t.units, t.max_groups_per_unit), (2, 2));
        assert!((t.span_us - 5.0).abs() < 1e-9, "span {}", t.span_us);
        assert_eq!(t.starts_us[3], 1.0);
        assert_eq!(t.ends_us[0], 2.0);
        // Medians over the groups at 2 cycles per ns: staging 2000/1000/1000 -> 1000 cycles, dots
        // 4000/2000/4000 -> 4000, reduce and store 2000/1000/1000 -> 1000.
        assert!((t.phases_us[0] - 0.5).abs() < 1e-9, "{:?}", t.phases_us);
        assert!((t.phases_us[1] - 2.0).abs() < 1e-9, "{:?}", t.phases_us);
        assert!((t.phases_us[2] - 0.5).abs() < 1e-9, "{:?}", t.phases_us);
    }
}
