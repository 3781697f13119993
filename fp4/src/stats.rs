//! Error statistics for comparing a quantised matrix with the weights it came from.

/// RMS and worst-case error of an approximation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorStats {
    /// Root mean square of `approx - exact`.
    pub rms: f64,
    /// Largest `|approx - exact|`.
    pub max_abs: f64,
    /// `rms` divided by the RMS of `exact` (signal), so distributions of any scale compare.
    pub rel_rms: f64,
}

/// Error of `approx` against `exact` (same length; extra elements of either are ignored).
pub fn error_stats(exact: &[f32], approx: &[f32]) -> ErrorStats {
    let mut se = 0.0f64;
    let mut ss = 0.0f64;
    let mut max_abs = 0.0f64;
    for (&e, &a) in exact.iter().zip(approx) {
        let d = f64::from(a) - f64::from(e);
        se += d * d;
        ss += f64::from(e) * f64::from(e);
        max_abs = max_abs.max(d.abs());
    }
    let n = exact.len().min(approx.len()).max(1) as f64;
    let rms = (se / n).sqrt();
    let signal = (ss / n).sqrt();
    ErrorStats {
        rms,
        max_abs,
        rel_rms: if signal > 0.0 { rms / signal } else { 0.0 },
    }
}

/// Each value rounded to f16 and back: the FP16 storage baseline.
pub fn round_trip_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}
