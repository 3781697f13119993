//! The `tlite bench-kernels` table: the figures every row is compared with ([`Baseline`]), one [`Row`] per
//! case, and the header and row layout.

use std::fmt;

use clkernels::kernels::KernelError;
use clkernels::runtime::Gpu;

use super::{cases, time_case, Case, QueuedTimer, SuiteOptions, Timing, QUEUED_LAUNCHES};

/// Figures a row is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// Measured copy bandwidth, GB/s.
    pub copy_gbps: f64,
    /// Device time of the smallest kernel, µs (the per-launch floor of the driver's events).
    pub floor_us: f64,
    /// Wall-clock time per launch of the smallest kernel launched back to back without events, µs.
    pub floor_pipe_us: f64,
    /// Device time per launch of the smallest kernel queued behind a long copy, µs: the per-launch floor of a
    /// decode step, where the host enqueues ahead of the device and no launch has an event.
    pub floor_queued_us: f64,
}

impl Baseline {
    /// Times the launch floor (a 32-float add) in the three ways the table times every case, with `queued`
    /// for the queued time. `gpu` must have been opened with profiling.
    pub fn measure(
        gpu: &Gpu,
        copy_gbps: f64,
        queued: &mut QueuedTimer,
        warmup: usize,
        iters: usize,
    ) -> Result<Self, KernelError> {
        let floor_opts = SuiteOptions {
            filter: vec!["launch_floor".into()],
            ..SuiteOptions::default()
        };
        let (mut floor_us, mut floor_pipe_us, mut floor_queued_us) = (0.0, 0.0, 0.0);
        for mut case in cases(gpu, &floor_opts)? {
            let t = time_case(gpu, &mut case, warmup, iters)?;
            (floor_us, floor_pipe_us) = (t.micros, t.pipe_micros);
            floor_queued_us = queued.micros(&mut case, QUEUED_LAUNCHES)?;
        }
        Ok(Baseline {
            copy_gbps,
            floor_us,
            floor_pipe_us,
            floor_queued_us,
        })
    }
}

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<20} {:<34} {:<30} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>9} {:>6}",
        "kernel",
        "shape",
        "config",
        "us(dev)",
        "us(span)",
        "us(pipe)",
        "us(queue)",
        "GB/s",
        "%copy",
        "%copy-s",
        "%copy-p",
        "%copy-q",
        "%copy-n",
        "%copy-qn",
        "GFLOP/s",
        "%peak"
    )
}

/// One line of the table: a case's timings beside the reference figures.
#[derive(Debug, Clone)]
pub struct Row {
    /// Kernel name.
    pub name: String,
    /// Shape in words.
    pub shape: String,
    /// Launch configuration in words.
    pub config: String,
    /// The case's timings.
    pub timing: Timing,
    /// Device µs per launch queued behind a long copy.
    pub queued_us: f64,
    /// % of the copy bandwidth by device time, by span and by pipelined wall clock.
    pub copy_percent: [f64; 3],
    /// % of the copy bandwidth by queued time (`None` where the queued time is lost in the copy's own spread).
    pub copy_queued_percent: Option<f64>,
    /// % of the copy bandwidth net of the event floor and of the queued floor (`None` for the floor case itself,
    /// or where nothing is left after the floor): diagnostics of the kernel body.
    pub net_percent: [Option<f64>; 2],
    /// GFLOP/s, for cases that count FLOPs.
    pub gflops: Option<f64>,
    /// % of the given peak FLOP/s.
    pub peak_percent: Option<f64>,
}

impl Row {
    /// The row of `case` timed as `timing` and `queued_us` (µs per queued launch), against `baseline` and the
    /// device's `peak_gflops` when given.
    pub fn new(
        case: &Case,
        timing: Timing,
        queued_us: f64,
        baseline: &Baseline,
        peak_gflops: Option<f64>,
    ) -> Self {
        let copy = baseline.copy_gbps;
        let percent = |micros: f64| 100.0 * case.bytes / (micros.max(1e-9) * 1e3) / copy;
        let net = |micros: f64, floor: f64| {
            let left = micros - floor;
            (case.name != "launch_floor" && left > 0.0)
                .then(|| 100.0 * case.bytes / (left * 1e3) / copy)
        };
        let counts_flops = case.flops > 0.0;
        Row {
            name: case.name.clone(),
            shape: case.shape.clone(),
            config: case.config.clone(),
            copy_percent: [
                100.0 * timing.gbps / copy,
                percent(timing.span_micros),
                percent(timing.pipe_micros),
            ],
            copy_queued_percent: (queued_us > 0.0)
                .then(|| 100.0 * case.bytes / (queued_us * 1e3) / copy),
            net_percent: [
                net(timing.micros, baseline.floor_us),
                net(queued_us, baseline.floor_queued_us),
            ],
            gflops: counts_flops.then_some(timing.gflops),
            peak_percent: peak_gflops
                .filter(|_| counts_flops)
                .map(|p| 100.0 * timing.gflops / p),
            timing,
            queued_us,
        }
    }
}

/// A figure with one decimal, or "-" where there is none.
fn or_dash(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.timing;
        write!(
            f,
            "{:<20} {:<34} {:<30} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.1} {:>6.1} {:>7.1} {:>7.1} {:>7} {:>7} {:>8} {:>9} {:>6}",
            self.name,
            self.shape,
            self.config,
            t.micros,
            t.span_micros,
            t.pipe_micros,
            self.queued_us,
            t.gbps,
            self.copy_percent[0],
            self.copy_percent[1],
            self.copy_percent[2],
            or_dash(self.copy_queued_percent),
            or_dash(self.net_percent[0]),
            or_dash(self.net_percent[1]),
            or_dash(self.gflops),
            or_dash(self.peak_percent)
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{header, Baseline, Case, Row, Timing};

    fn case(name: &str, bytes: f64, flops: f64) -> Case {
        Case {
            name: name.into(),
            shape: "4096x4096 G32".into(),
            config: "wg 64".into(),
            bytes,
            flops,
            run: Box::new(|| Ok(())),
        }
    }

    fn timing(micros: f64, span_micros: f64, pipe_micros: f64, bytes: f64, flops: f64) -> Timing {
        Timing {
            micros,
            span_micros,
            pipe_micros,
            gbps: bytes / (micros * 1e3),
            gflops: flops / (micros * 1e3),
        }
    }

    const BASE: Baseline = Baseline {
        copy_gbps: 2000.0,
        floor_us: 2.0,
        floor_pipe_us: 3.0,
        floor_queued_us: 1.0,
    };

    #[test]
    fn a_row_compares_each_time_with_the_copy_bandwidth() {
        // 10 MB: 5 us at 2000 GB/s is 100 %; 10 us 50 %; 20 us 25 %; 8 us 62.5 %.
        let (bytes, flops) = (10e6, 4e6);
        let c = case("matvec_m0e4", bytes, flops);
        let row = Row::new(
            &c,
            timing(10.0, 20.0, 8.0, bytes, flops),
            6.0,
            &BASE,
            Some(800.0),
        );
        let [dev, span, pipe] = row.copy_percent;
        assert!(
            (dev - 50.0).abs() < 1e-9 && (span - 25.0).abs() < 1e-9 && (pipe - 62.5).abs() < 1e-9
        );
        // Queued 6 us: 10 MB / 6 us; net of the floors, 8 us and 5 us are left.
        let q = row.copy_queued_percent.unwrap();
        assert!((q - 100.0 * 5.0 / 6.0).abs() < 1e-9, "{q}");
        let [net, net_q] = row.net_percent;
        assert!((net.unwrap() - 62.5).abs() < 1e-9 && (net_q.unwrap() - 100.0).abs() < 1e-9);
        // 4 MFLOP in 10 us: 400 GFLOP/s, half of an 800 GFLOP/s peak.
        assert!((row.gflops.unwrap() - 400.0).abs() < 1e-9);
        assert!((row.peak_percent.unwrap() - 50.0).abs() < 1e-9);
        let line = row.to_string();
        assert!(
            line.starts_with("matvec_m0e4") && line.contains(" 50.0 ") && line.contains(" 62.5 ")
        );
        assert_eq!(line.len(), header().len(), "{line}\n{}", header());
    }

    #[test]
    fn figures_without_meaning_are_dashes() {
        let c = case("launch_floor", 384.0, 0.0);
        let row = Row::new(
            &c,
            timing(2.0, 2.5, 3.0, 384.0, 0.0),
            0.0,
            &BASE,
            Some(100.0),
        );
        assert_eq!(row.net_percent, [None, None]);
        assert_eq!(
            (row.copy_queued_percent, row.gflops, row.peak_percent),
            (None, None, None)
        );
        // A case no slower than the floor has nothing left to net.
        let c = case("rope", 1e3, 0.0);
        let row = Row::new(&c, timing(1.5, 2.0, 2.0, 1e3, 0.0), 0.5, &BASE, None);
        assert_eq!(row.net_percent, [None, None]);
        assert!(row.to_string().trim_end().ends_with("-      -"), "{row}");
    }
}
