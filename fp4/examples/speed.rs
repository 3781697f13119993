//! Quantise throughput of every search effort on a 4096×4096 Gaussian matrix:
//! `cargo run -p fp4 --release --example speed`.
//!
//! Prints wall-clock throughput and throughput per CPU-second of this process (from
//! `/proc/self/stat`), since the dev box's two cores are often shared with other builds.
use fp4::{quantize_m0e4_with, GroupSize, MatrixShape, SearchEffort};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::time::Instant;

/// User + system CPU seconds of this process so far (Linux), or `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shape = MatrixShape::new(4096, 4096);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let normal = Normal::new(0.0f32, 0.02)?;
    let w: Vec<f32> = (0..shape.len()).map(|_| normal.sample(&mut rng)).collect();
    let efforts = [(1, 0), (1, 1), (1, 2), (2, 1), (2, 2), (3, 2), (5, 3)];
    println!("effort (steps,refits) | G | wall M weights/s | M weights per CPU-s | rel RMS error");
    for (steps, refits) in efforts {
        let effort = SearchEffort { steps, refits };
        for group in GroupSize::ALL {
            let reps = 4;
            let (t, c0) = (Instant::now(), cpu_seconds());
            let mut m = None;
            for _ in 0..reps {
                m = Some(quantize_m0e4_with(&w, shape, group, effort)?);
            }
            let wall = t.elapsed().as_secs_f64() / reps as f64;
            let cpu = cpu_seconds().zip(c0).map(|(a, b)| (a - b) / reps as f64);
            let Some(m) = m else { continue };
            let e = fp4::stats::error_stats(&w, &fp4::reference::dequantize(&m));
            let per_cpu = cpu.map_or("n/a".to_string(), |c| {
                format!("{:.0}", shape.len() as f64 / c / 1e6)
            });
            println!(
                "({steps},{refits}) | {group} | {:.0} | {per_cpu} | {:.5}",
                shape.len() as f64 / wall / 1e6,
                e.rel_rms
            );
        }
    }
    Ok(())
}
