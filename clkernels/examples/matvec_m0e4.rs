//! One M0E4 mat-vec `y = W·x` on the first OpenCL device, checked against the CPU reference and timed:
//! `cargo run -p clkernels --release --example matvec_m0e4 -- [rows] [cols]` (default 4096 x 4096).
//!
//! `TLITE_DEVICE` picks the device (an index or a name substring, as `tlite devices` lists them).

use std::error::Error;
use std::time::Instant;

use clkernels::kernels::matvec::{DeviceM0e4, MatvecM0e4};
use clkernels::kernels::Residual;
use clkernels::runtime::{DeviceBuffer, Gpu};
use fp4::{quantize_m0e4, GroupSize, MatrixShape};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

fn arg(n: usize, default: usize) -> Result<usize, Box<dyn Error>> {
    match std::env::args().nth(n) {
        Some(s) => Ok(s
            .parse()
            .map_err(|e| format!("argument {n} ({s:?}): {e}"))?),
        None => Ok(default),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let (rows, cols) = (arg(1, 4096)?, arg(2, 4096)?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let normal = Normal::new(0.0f32, 0.02)?;
    let weights: Vec<f32> = (0..rows * cols).map(|_| normal.sample(&mut rng)).collect();
    let x: Vec<f32> = (0..cols).map(|_| normal.sample(&mut rng) * 50.0).collect();
    let w = quantize_m0e4(&weights, MatrixShape::new(rows, cols), GroupSize::G32)?;

    let gpu = Gpu::open_default()?;
    println!("device: {}", gpu.caps().name);
    let started = Instant::now();
    let matvec = MatvecM0e4::new(&gpu)?;
    println!(
        "program ready in {:.0} ms (built, or loaded from the binary cache)",
        started.elapsed().as_secs_f64() * 1e3
    );
    let w_dev = DeviceM0e4::upload(&gpu, &w)?;
    let x_dev = DeviceBuffer::from_slice(&gpu, &x)?;
    let mut y_dev = DeviceBuffer::<f32>::new(&gpu, rows)?;

    matvec.enqueue(&w_dev, &x_dev, &mut y_dev, Residual::None)?;
    let y = y_dev.read(&gpu)?;
    let expected = fp4::reference::matvec(&w, &x)?;
    let (mut max_err, mut max_ref) = (0.0f32, 0.0f32);
    for (a, b) in y.iter().zip(&expected) {
        max_err = max_err.max((a - b).abs());
        max_ref = max_ref.max(b.abs());
    }
    println!(
        "{rows} x {cols}, G=32: max |gpu - reference| = {max_err:.2e} (largest |y| = {max_ref:.3})"
    );
    if max_err > 1e-3 * (1.0 + max_ref) {
        return Err(format!("the device result differs from the reference by {max_err}").into());
    }

    let launches = 50;
    let started = Instant::now();
    for _ in 0..launches {
        matvec.enqueue(&w_dev, &x_dev, &mut y_dev, Residual::None)?;
    }
    gpu.finish()?;
    let per_launch = started.elapsed().as_secs_f64() / f64::from(launches);
    let bytes = w.packed_bytes() + 4 * (rows + cols);
    println!(
        "{:.1} µs per launch (wall clock, {launches} launches), {:.1} GB/s of weights and vectors",
        per_launch * 1e6,
        bytes as f64 / per_launch / 1e9
    );
    Ok(())
}
