//! Every program and variant the launchers build compiles with an empty compiler log on the test device (PoCL here,
//! any device through `TLITE_DEVICE`). A warning is a defect: PoCL also prints "1 warning generated." straight to
//! the process's stderr, into the user's terminal, where no log routing can catch it, and NVIDIA's compiler prints
//! its warnings only to the process's output (its build log stays empty). So the test also captures the process's
//! stdout and stderr (file descriptors 1 and 2) while the programs build, and all must be silent.

#![allow(clippy::unwrap_used)]

mod common;

use clkernels::kernels::attention::Attention;
use clkernels::kernels::elementwise::Elementwise;
use clkernels::kernels::embedding::Embedding;
use clkernels::kernels::matmul::{MatmulConfig, MatmulF16, MatmulM0e4};
use clkernels::kernels::matvec::{MatvecConfig, MatvecF16, MatvecM0e4, MatvecVendorKernel};
use clkernels::kernels::norm::Norm;
use clkernels::kernels::rope::{Rope, RopeShift};
use clkernels::kernels::sampling::Sampling;
use clkernels::kernels::vector_width::VectorWidth;
use clkernels::runtime::{CachePolicy, Gpu, GpuOptions, ProgramSource};
use common::{ADRENO_STAND_INS, KHR_SUBGROUP_STAND_INS, NVIDIA_STAND_INS};
use kvcache::KvDtype;

/// A device that really compiles: no tlite cache, and PoCL's own cache off (a cache hit has no log to check).
fn compiling_gpu() -> Gpu {
    // Set before this test binary's first OpenCL call, when PoCL reads it; the file holds one test, so no other
    // thread reads the environment meanwhile.
    std::env::set_var("POCL_KERNEL_CACHE", "0");
    Gpu::open_with(&GpuOptions {
        cache: CachePolicy::Disabled,
        ..GpuOptions::default()
    })
    .expect("an OpenCL device is needed for the kernel tests (PoCL on CI)")
}

/// Geometries beside the device's own, so every define combination a launcher can build is compiled here too.
fn matvec_configs(gpu: &Gpu) -> Vec<MatvecConfig> {
    let device = MatvecConfig::for_gpu(gpu);
    // The GPU kernel family (matvec.cl) in every variant; CPU devices launch matvec/cpu.cl by default.
    let base = MatvecConfig {
        cpu: None,
        ..device
    };
    let wg = base.work_group;
    vec![
        device,
        base,
        // NVIDIA's shape: tall and long variants, unrolling, a short plain build, packed f16.
        MatvecConfig {
            tall_rows_per_group: 16.min(wg),
            x_local_chunks: 32,
            long_x_local_chunks: 64,
            unroll: 2,
            short_unroll: 1,
            nv_half2: true,
            ..base
        },
        // Adreno/Mali's: no activation staging, f16 products.
        MatvecConfig {
            x_local_chunks: 0,
            half_math: true,
            ..base
        },
        // The Mali build (vendor/mali.cl), with and without half products.
        MatvecConfig {
            vendor_kernel: MatvecVendorKernel::Mali,
            rows_per_group: 2,
            x_local_chunks: 0,
            half_math: true,
            ..base
        },
        MatvecConfig {
            vendor_kernel: MatvecVendorKernel::Mali,
            rows_per_group: 1,
            x_local_chunks: 0,
            half_math: false,
            ..base
        },
        // The Mali build at its narrower vector widths (the ones above take the device's, 4 on PoCL).
        MatvecConfig {
            vendor_kernel: MatvecVendorKernel::Mali,
            rows_per_group: 2,
            x_local_chunks: 0,
            vector_width: VectorWidth::new(1).unwrap(),
            ..base
        },
        MatvecConfig {
            vendor_kernel: MatvecVendorKernel::Mali,
            rows_per_group: 2,
            x_local_chunks: 0,
            half_math: true,
            vector_width: VectorWidth::new(2).unwrap(),
            ..base
        },
        // The Adreno image build, with its buffer builds beside it.
        MatvecConfig {
            vendor_kernel: MatvecVendorKernel::AdrenoImage,
            image_max_pixels: u64::MAX,
            x_local_chunks: 0,
            ..base
        },
    ]
}

fn matmul_configs(gpu: &Gpu) -> Vec<MatmulConfig> {
    let base = MatmulConfig::for_gpu(gpu);
    vec![
        base,
        MatmulConfig {
            vec: !base.vec,
            work_m: 4,
            work_n: 4,
            ..base
        },
    ]
}

/// The process's stdout and stderr (descriptors 1 and 2) redirected into one temporary file until
/// [`OutputCapture::finish`].
struct OutputCapture {
    saved: [i32; 2],
    file: std::fs::File,
}

impl OutputCapture {
    fn start() -> Self {
        use std::os::fd::AsRawFd;
        let file = tempfile::tempfile().unwrap();
        let saved = [1, 2].map(|fd| {
            // SAFETY: plain descriptor duplication; `fd` is restored from the copy in `finish`.
            let copy = unsafe { libc::dup(fd) };
            assert!(copy >= 0, "dup({fd}) failed");
            assert!(
                unsafe { libc::dup2(file.as_raw_fd(), fd) } >= 0,
                "dup2 failed"
            );
            copy
        });
        Self { saved, file }
    }

    /// Restores stdout and stderr and returns what was written to them meanwhile.
    fn finish(mut self) -> String {
        use std::io::{Read, Seek};
        for (fd, copy) in [1, 2].into_iter().zip(self.saved) {
            // SAFETY: `copy` is the descriptor `start` duplicated from `fd`.
            unsafe {
                libc::dup2(copy, fd);
                libc::close(copy);
            }
        }
        let mut text = String::new();
        self.file.rewind().unwrap();
        self.file.read_to_string(&mut text).unwrap();
        text
    }
}

/// NVIDIA's OpenCL compiler (driver 580) logs "Warning: Function K is a kernel, so overriding noinline attribute. The
/// function may be inlined when called." for every kernel of every program, whatever the source says: it is the
/// driver's note about its own lowering, not a property of tlite's kernels, and it only ever reaches the debug log.
const NVIDIA_KERNEL_NOTE: &str = "is a kernel, so overriding noinline attribute";

/// A build log without the lines no kernel source can avoid (see [`NVIDIA_KERNEL_NOTE`]).
fn source_messages(log: &str) -> String {
    log.lines()
        .filter(|line| !line.contains(NVIDIA_KERNEL_NOTE) && !line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_program_builds_without_compiler_messages() {
    let gpu = compiling_gpu();

    // The check can fail: a `#warning` reaches compiler_messages or stderr.
    let probe = ProgramSource {
        name: "warning_probe",
        source: "#warning \"probe\"\nkernel void k(global float* x) { x[0] = 1.0f; }",
    };
    let capture = OutputCapture::start();
    gpu.program(&probe, &[]).unwrap();
    let probe_stderr = capture.finish();
    let messages = gpu.compiler_messages();
    assert!(
        messages.iter().any(|m| m.log.contains("probe")) || probe_stderr.contains("warning"),
        "a #warning was reported neither in the build log nor on stderr: {messages:?}, {probe_stderr:?}"
    );
    let probes = messages.len();
    let capture = OutputCapture::start();

    for config in matvec_configs(&gpu) {
        MatvecM0e4::with_config(&gpu, config).unwrap();
        MatvecF16::with_config(&gpu, config).unwrap();
        for stand_ins in [
            &KHR_SUBGROUP_STAND_INS[..],
            &ADRENO_STAND_INS[..],
            &NVIDIA_STAND_INS[..],
        ] {
            MatvecM0e4::with_defines(&gpu, config, stand_ins).unwrap();
        }
    }
    MatvecM0e4::new(&gpu).unwrap();
    MatvecF16::new(&gpu).unwrap();
    for config in matmul_configs(&gpu) {
        MatmulM0e4::with_config(&gpu, config).unwrap();
    }
    MatmulF16::new(&gpu).unwrap();
    Attention::new(&gpu).unwrap();
    for stand_ins in [
        &KHR_SUBGROUP_STAND_INS[..],
        &ADRENO_STAND_INS[..],
        &NVIDIA_STAND_INS[..],
    ] {
        Attention::with_defines(&gpu, stand_ins).unwrap();
    }
    // The Mali attention build (vendor/mali_attention.cl) at every width, plain and with the Mali stand-ins.
    for width in VectorWidth::ALL {
        Attention::with_mali_width(&gpu, width, &[]).unwrap();
        Attention::with_mali_width(&gpu, width, &KHR_SUBGROUP_STAND_INS).unwrap();
    }
    // The benchmark diagnostics (diag.cl) with the defines that switch them on.
    MatvecM0e4::with_diagnostics(
        &gpu,
        MatvecConfig {
            cpu: None,
            ..MatvecConfig::for_gpu(&gpu)
        },
        &[("MV_DIAG_CHEAP_DOT", "1"), ("MV_DIAG_TIMES", "1")],
    )
    .unwrap();
    Norm::new(&gpu).unwrap();
    Rope::new(&gpu).unwrap();
    for dtype in [KvDtype::F32, KvDtype::F16] {
        RopeShift::new(&gpu, dtype).unwrap();
    }
    Embedding::new(&gpu).unwrap();
    Sampling::new(&gpu).unwrap();
    for stand_ins in [&KHR_SUBGROUP_STAND_INS[..], &ADRENO_STAND_INS[..]] {
        Sampling::with_defines(&gpu, stand_ins).unwrap();
    }
    Elementwise::new(&gpu).unwrap();

    let stderr = capture.finish();
    assert!(
        !stderr.contains("warning") && !stderr.contains("error"),
        "the OpenCL compiler printed while the programs built on {}:\n{stderr}",
        gpu.caps().name
    );
    let stats = gpu.build_stats();
    let messages: Vec<_> = gpu.compiler_messages()[probes..]
        .iter()
        .filter_map(|m| {
            let log = source_messages(&m.log);
            (!log.is_empty()).then(|| format!("{} ({}):\n{log}", m.program, m.options))
        })
        .collect();
    let report = &messages;
    assert!(
        messages.is_empty(),
        "{} of {} programs built with compiler messages on {}:\n{}",
        messages.len(),
        stats.compiled - probes,
        gpu.caps().name,
        report.join("\n\n")
    );
    eprintln!(
        "{} programs built without compiler messages on {}",
        stats.compiled - probes,
        gpu.caps().name
    );
}
