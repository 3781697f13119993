//! The per-kernel benchmark cases shared by `tlite bench-kernels` and the criterion bench (`bench/benches/kernels.rs`).
//!
//! Each [`Case`] owns its device buffers (synthetic data of real model shapes) and a closure that enqueues one launch;
//! [`time_case`] runs warm-ups, then `iters` launches back to back on a profiling queue and reports the device time
//! from the events (the runtime's own queue has profiling off), then times `iters` more launches without events by
//! the wall clock, as a decode step issues them. Bandwidth counts the bytes a kernel must read and write
//! once (weights, activations, outputs); [`copy_bandwidth`] measures `clEnqueueCopyBuffer` on a large buffer (read +
//! written bytes) as the roofline the mat-vec is compared with.

use std::time::Instant;

use fp4::{GroupSize, M0e4Matrix, MatrixShape};
use half::f16;
use kvcache::{KvDtype, KvLayout};
use opencl3::command_queue::{CommandQueue, CL_QUEUE_PROFILING_ENABLE};
use opencl3::event::Event;
use opencl3::memory::ClMem;

use super::attention::{
    Attention, AttentionKernel, AttentionShape, AttentionWalk, FreshToken, KvOperand, SplitPolicy,
};
use super::matmul::{MatmulConfig, MatmulM0e4};
use super::matvec::{DeviceF16Matrix, DeviceM0e4, MatvecConfig, MatvecF16, MatvecM0e4};
use super::norm::{Norm, RmsNormParams, RowsShape};
use super::rope::{HeadsLayout, Rope, RopeConfig, RopeStyle};
use super::sampling::Sampling;
use super::{profile, GatedActivation, KernelError, Residual};
use crate::runtime::{ClError, ClResultExt, DeviceBuffer, Gpu};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    /// Substrings of case names to keep (all when empty).
    pub filter: Vec<String>,
    /// Mat-vec geometry (the vendor default when `None`).
    pub matvec: Option<MatvecConfig>,
    /// Mat-mat tiling (the vendor default when `None`).
    pub matmul: Option<MatmulConfig>,
    /// Use small shapes (for slow CPU devices and CI smoke runs).
    pub small: bool,
    /// Model dimensions (hidden, feed-forward, vocabulary) of the mat-vec and mat-mat shapes, instead of a 7B
    /// Llama's or `small`'s; e.g. SmolLM2-135M's (576, 1536, 49152).
    pub dims: Option<(usize, usize, usize)>,
    /// Extra compiler defines for the mat-vec program, `NAME` or `NAME=VALUE` (kernel experiments and diagnostics, e.g.
    /// `MV_DIAG_CHEAP_DOT`, which replaces the dequantising dot by one multiply to show whether a shape is bound
    /// by arithmetic or by memory; its results are wrong by design).
    pub matvec_defines: Vec<String>,
    /// Decode attention split policy (the default when `None`).
    pub attention_split: Option<SplitPolicy>,
    /// Attention kernel choice (the default when `None`).
    pub attention_walk: Option<AttentionWalk>,
    /// Extra compiler defines for the attention program, as `matvec_defines` (e.g. `ATT_DIAG_NO_KV`).
    pub attention_defines: Vec<String>,
    /// Decode attention contexts to time (192 and a long one when empty).
    pub attention_contexts: Vec<usize>,
    /// Attention heads as (query heads, KV heads, head dim) (a 7B model's 32 x 32 x 128 when `None`).
    pub attention_heads: Option<(usize, usize, usize)>,
}

impl SuiteOptions {
    /// `matvec_defines` as (name, value) pairs: `NAME=VALUE`, or `NAME` meaning `NAME=1`.
    pub fn matvec_define_pairs(&self) -> Vec<(&str, &str)> {
        define_pairs(&self.matvec_defines)
    }

    /// `attention_defines` as (name, value) pairs.
    pub fn attention_define_pairs(&self) -> Vec<(&str, &str)> {
        define_pairs(&self.attention_defines)
    }
}

fn define_pairs(defines: &[String]) -> Vec<(&str, &str)> {
    defines
        .iter()
        .map(|d| d.split_once('=').unwrap_or((d.as_str(), "1")))
        .collect()
}

/// One benchmark case.
pub struct Case {
    /// Kernel name, e.g. `matvec_m0e4`.
    pub name: String,
    /// Shape, e.g. `4096x11008 G32`.
    pub shape: String,
    /// Launch configuration in words.
    pub config: String,
    /// Bytes one launch must move (read + written).
    pub bytes: f64,
    /// Floating-point operations of one launch (0 when bandwidth is the measure).
    pub flops: f64,
    run: Box<dyn FnMut() -> Result<(), KernelError>>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl Case {
    /// Enqueues one launch (does not wait).
    pub fn enqueue(&mut self) -> Result<(), KernelError> {
        (self.run)()
    }
}

/// A measured case.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Mean device microseconds per launch, from profiling events (all kernels of the launch summed).
    pub micros: f64,
    /// Device span per launch: (end of the last event - start of the first) / launches, i.e. steady-state
    /// throughput of back-to-back launches including the gaps between kernels but not any per-event overhead
    /// that overlaps the next kernel.
    pub span_micros: f64,
    /// Wall-clock microseconds per launch of `iters` launches enqueued back to back without events, between two
    /// `clFinish`: the cost of the kernel inside a decode step, where no launch asks for an event (when the host
    /// enqueues faster than the device runs, this is device time including the gaps between kernels).
    pub pipe_micros: f64,
    /// GB/s (1e9 bytes) from [`Case::bytes`] and the device time.
    pub gbps: f64,
    /// GFLOP/s from [`Case::flops`] and the device time.
    pub gflops: f64,
}

/// A command queue with profiling enabled on the device of `gpu`.
fn profiling_queue(gpu: &Gpu) -> Result<CommandQueue, KernelError> {
    let at_least_2 = gpu
        .caps()
        .opencl_version_number
        .is_some_and(|v| v.major >= 2);
    let queue = if at_least_2 {
        // SAFETY: the device belongs to the context.
        unsafe {
            CommandQueue::create_with_properties(
                gpu.context(),
                gpu.device().id(),
                CL_QUEUE_PROFILING_ENABLE,
                0,
            )
        }
        .cl_call("clCreateCommandQueueWithProperties")?
    } else {
        // SAFETY: the device belongs to the context.
        #[allow(deprecated)]
        let q = unsafe {
            CommandQueue::create(gpu.context(), gpu.device().id(), CL_QUEUE_PROFILING_ENABLE)
        }
        .cl_call("clCreateCommandQueue")?;
        q
    };
    Ok(queue)
}

fn device_seconds(events: &[Event]) -> Result<f64, KernelError> {
    let mut ns = 0u64;
    for e in events {
        let (start, end) = profile::device_times(e)?;
        ns += end.saturating_sub(start);
    }
    Ok(ns as f64 * 1e-9)
}

/// Runs `warmup` launches, then `iters` timed launches on a profiling queue, and reports the mean device time per
/// launch and the device span (profiling events), and the wall-clock time per launch of `iters` launches without
/// events (see [`Timing::pipe_micros`]).
pub fn time_case(
    gpu: &Gpu,
    case: &mut Case,
    warmup: usize,
    iters: usize,
) -> Result<Timing, KernelError> {
    let queue = profiling_queue(gpu)?;
    let iters = iters.max(1);
    profile::start(queue.get());
    let run = (|| -> Result<Vec<Event>, KernelError> {
        for _ in 0..warmup {
            case.enqueue()?;
        }
        queue.finish().cl_call("clFinish")?;
        drop(profile::stop());
        profile::start(queue.get());
        for _ in 0..iters {
            case.enqueue()?;
        }
        queue.finish().cl_call("clFinish")?;
        Ok(profile::stop())
    })();
    let events = match run {
        Ok(r) => r,
        Err(e) => {
            drop(profile::stop());
            return Err(e);
        }
    };
    let secs = device_seconds(&events)? / iters as f64;
    let span = match (events.first(), events.last()) {
        (Some(first), Some(last)) => {
            let (start, _) = profile::device_times(first)?;
            let (_, end) = profile::device_times(last)?;
            end.saturating_sub(start) as f64 * 1e-9 / iters as f64
        }
        _ => 0.0,
    };
    let pipe = pipelined_seconds(&queue, case, iters)?;
    Ok(Timing {
        pipe_micros: pipe * 1e6,
        micros: secs * 1e6,
        span_micros: span * 1e6,
        gbps: case.bytes / secs / 1e9,
        gflops: case.flops / secs / 1e9,
    })
}

/// Mean wall-clock seconds per launch of `iters` launches without events (after one untimed launch).
fn pipelined_seconds(
    queue: &CommandQueue,
    case: &mut Case,
    iters: usize,
) -> Result<f64, KernelError> {
    profile::start_without_events(queue.get());
    let run = (|| -> Result<f64, KernelError> {
        case.enqueue()?;
        queue.finish().cl_call("clFinish")?;
        let start = Instant::now();
        for _ in 0..iters {
            case.enqueue()?;
        }
        queue.finish().cl_call("clFinish")?;
        Ok(start.elapsed().as_secs_f64() / iters as f64)
    })();
    drop(profile::stop());
    run
}

/// Times launches with the device, not the host, setting the pace: they are queued behind one long copy (which
/// the device needs longer for than the host needs to enqueue them), and the copy's own time, measured alone, is
/// subtracted. Back-to-back launches timed by the wall clock alone ([`Timing::pipe_micros`]) measure the host's
/// enqueue rate instead when a kernel is shorter than its enqueue. The copy's buffers are allocated once and
/// serve every case.
pub struct QueuedTimer {
    queue: CommandQueue,
    src: DeviceBuffer<u8>,
    dst: DeviceBuffer<u8>,
}

impl std::fmt::Debug for QueuedTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedTimer")
            .field("copy_bytes", &self.src.len())
            .finish_non_exhaustive()
    }
}

impl QueuedTimer {
    /// A timer whose launches wait behind a copy of `copy_bytes` bytes.
    pub fn new(gpu: &Gpu, copy_bytes: usize) -> Result<Self, KernelError> {
        Ok(QueuedTimer {
            queue: profiling_queue(gpu)?,
            src: DeviceBuffer::new(gpu, copy_bytes)?,
            dst: DeviceBuffer::new(gpu, copy_bytes)?,
        })
    }

    /// Device microseconds per launch of `case`, `launches` launches queued behind the copy; the least of three
    /// runs.
    pub fn micros(&self, case: &mut Case, launches: usize) -> Result<f64, KernelError> {
        let queue = &self.queue;
        let copy = || enqueue_copy(queue, &self.src, &self.dst).map(drop);
        profile::start_without_events(queue.get());
        let run = (|| -> Result<f64, KernelError> {
            case.enqueue()?;
            copy()?;
            queue.finish().cl_call("clFinish")?;
            let (mut alone, mut queued) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..3 {
                let start = Instant::now();
                copy()?;
                queue.finish().cl_call("clFinish")?;
                alone = alone.min(start.elapsed().as_secs_f64());
                let start = Instant::now();
                copy()?;
                for _ in 0..launches {
                    case.enqueue()?;
                }
                queue.finish().cl_call("clFinish")?;
                queued = queued.min(start.elapsed().as_secs_f64());
            }
            Ok((queued - alone).max(0.0) / launches.max(1) as f64 * 1e6)
        })();
        drop(profile::stop());
        run
    }
}

/// Enqueues a copy of all of `src` into `dst` (of at least its length) on `queue`.
fn enqueue_copy(
    queue: &CommandQueue,
    src: &DeviceBuffer<u8>,
    dst: &DeviceBuffer<u8>,
) -> Result<Event, ClError> {
    if dst.len() < src.len() {
        return Err(ClError::LengthMismatch {
            call: "enqueue_copy",
            expected: src.len(),
            got: dst.len(),
        });
    }
    // SAFETY: two live buffers on the queue's context, the destination at least as long as the copied bytes.
    let event = unsafe {
        cl3::command_queue::enqueue_copy_buffer(
            queue.get(),
            src.raw().get(),
            dst.raw().get(),
            0,
            0,
            src.byte_len(),
            0,
            std::ptr::null(),
        )
    }
    .cl_call("clEnqueueCopyBuffer")?;
    Ok(Event::new(event))
}

/// Device-to-device copy bandwidth in GB/s (bytes read + bytes written) of `clEnqueueCopyBuffer` on a buffer of
/// `bytes` bytes, from profiling events.
pub fn copy_bandwidth(gpu: &Gpu, bytes: usize, iters: usize) -> Result<f64, KernelError> {
    let queue = profiling_queue(gpu)?;
    let src = DeviceBuffer::<u8>::new(gpu, bytes)?;
    let dst = DeviceBuffer::<u8>::new(gpu, bytes)?;
    let copy = || enqueue_copy(&queue, &src, &dst);
    copy()?;
    copy()?;
    queue.finish().cl_call("clFinish")?;
    let iters = iters.max(1);
    let mut events = Vec::with_capacity(iters);
    for _ in 0..iters {
        events.push(copy()?);
    }
    queue.finish().cl_call("clFinish")?;
    let secs = device_seconds(&events)? / iters as f64;
    Ok(2.0 * bytes as f64 / secs / 1e9)
}

/// A small deterministic generator (xorshift) so the suite needs no `rand` and runs the same everywhere.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
}

/// A random M0E4 matrix built directly from random codes (quantising tens of millions of weights would dominate).
fn synthetic_m0e4(
    rng: &mut Xorshift,
    rows: usize,
    cols: usize,
    group: GroupSize,
) -> Result<M0e4Matrix, KernelError> {
    let codes: Vec<u8> = (0..rows * cols / 2).map(|_| rng.next() as u8).collect();
    let groups = rows * cols / group.len();
    let scales: Vec<f16> = (0..groups)
        .map(|_| f16::from_f32(0.01 + 0.005 * rng.unit()))
        .collect();
    let offsets: Vec<f16> = (0..groups)
        .map(|_| f16::from_f32(-0.015 + 0.005 * rng.unit()))
        .collect();
    M0e4Matrix::from_parts(MatrixShape::new(rows, cols), group, codes, scales, offsets)
        .map_err(|e| super::shape_error("bench_suite", e.to_string()))
}

/// Bytes of weight copies a mat-vec case cycles through: more than any last-level cache (the H100's L2 is 50 MB),
/// so every launch reads its weights from memory, as a decode step does (each matrix is read once per token).
/// Without the copies, a matrix that fits the L2 is re-read from it by back-to-back launches and looks faster
/// than it is in a step.
const COLD_WORKING_SET: usize = 256 << 20;

/// `m` uploaded as many times as [`COLD_WORKING_SET`] asks (at least once, at most 32).
fn cold_copies(gpu: &Gpu, m: &M0e4Matrix) -> Result<Vec<DeviceM0e4>, KernelError> {
    let first = DeviceM0e4::upload(gpu, m)?;
    let n = (COLD_WORKING_SET / first.bytes().max(1)).clamp(1, 32);
    let mut copies = vec![first];
    for _ in 1..n {
        copies.push(DeviceM0e4::upload(gpu, m)?);
    }
    Ok(copies)
}

/// Llama's RMSNorm parameters, for the cases with the norm folded in.
const NORM: RmsNormParams = RmsNormParams {
    eps: 1e-5,
    weight_offset: 0.0,
};

fn wanted(opts: &SuiteOptions, name: &str) -> bool {
    opts.filter.is_empty() || opts.filter.iter().any(|f| name.contains(f.as_str()))
}

/// Builds the cases `opts` selects: the mat-vec and mat-mat shapes of a 7B Llama plus the smaller kernels.
pub fn cases(gpu: &Gpu, opts: &SuiteOptions) -> Result<Vec<Case>, KernelError> {
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();
    let (hidden, ffn, vocab, seq) = match (opts.dims, opts.small) {
        (Some((hidden, ffn, vocab)), small) => (hidden, ffn, vocab, if small { 64 } else { 512 }),
        (None, true) => (512, 1376, 4000, 64),
        (None, false) => (4096, 11008, 32000, 512),
    };

    if wanted(opts, "launch_floor") {
        let ew = super::elementwise::Elementwise::new(gpu)?;
        let a = DeviceBuffer::from_slice(gpu, &rng.floats(32))?;
        let mut o = DeviceBuffer::<f32>::new(gpu, 32)?;
        out.push(Case {
            name: "launch_floor".into(),
            shape: "add of 32 floats".into(),
            config: "the smallest kernel: per-launch floor".into(),
            bytes: 384.0,
            flops: 0.0,
            run: Box::new(move || ew.add(&a, &a, &mut o, 32)),
        });
    }

    let mv_names = ["matvec_m0e4", "matvec_m0e4_normed", "matvec_m0e4_gate_up"];
    if mv_names.iter().any(|n| wanted(opts, n)) {
        let config = opts.matvec.unwrap_or_else(|| MatvecConfig::for_gpu(gpu));
        let defines = opts.matvec_define_pairs();
        let mv = std::rc::Rc::new(MatvecM0e4::with_defines(gpu, config, &defines)?);
        let cfg = mv.config();
        let cfg_text = match cfg.cpu {
            Some(g) => format!("cpu rows {} wg {}", g.rows_per_item, g.work_group),
            None => format!(
                "wg {} rows {}{}{}{}{}{}{}{}",
                cfg.work_group,
                cfg.rows_per_group,
                if cfg.half_math { " half" } else { "" },
                if mv.uses_warp_shuffle() { " shfl" } else { "" },
                if cfg.fp_dequant { " fpdq" } else { "" },
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
        };
        if wanted(opts, "matvec_m0e4") {
            for (rows, cols, group) in [
                (hidden, hidden, GroupSize::G32),
                (hidden, ffn, GroupSize::G32),
                (ffn, hidden, GroupSize::G32),
                (hidden, hidden, GroupSize::G128),
            ] {
                if !cols.is_multiple_of(group.len()) {
                    continue; // e.g. G128 on SmolLM2's 576-wide rows
                }
                let ws = cold_copies(gpu, &synthetic_m0e4(&mut rng, rows, cols, group)?)?;
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
        if wanted(opts, "matvec_m0e4_normed") {
            // What a 7B decode step runs first in each layer: the attention RMSNorm folded into the QKV mat-vec.
            let ws = cold_copies(
                gpu,
                &synthetic_m0e4(&mut rng, 3 * hidden, hidden, GroupSize::G32)?,
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
        if wanted(opts, "matvec_m0e4_gate_up") {
            let gs = cold_copies(gpu, &synthetic_m0e4(&mut rng, ffn, hidden, GroupSize::G32)?)?;
            let us = cold_copies(gpu, &synthetic_m0e4(&mut rng, ffn, hidden, GroupSize::G32)?)?;
            let x = DeviceBuffer::from_slice(gpu, &rng.floats(hidden))?;
            let mut y = DeviceBuffer::<f32>::new(gpu, ffn)?;
            let nw = DeviceBuffer::from_slice(gpu, &rng.floats(hidden))?;
            let bytes = (gs[0].bytes() + us[0].bytes() + hidden * 8 + ffn * 4) as f64;
            let mv = mv.clone();
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
    }

    if wanted(opts, "matvec_f16") {
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
    }

    if wanted(opts, "matmul_m0e4") {
        let mm = match opts.matmul {
            Some(c) => MatmulM0e4::with_config(gpu, c)?,
            None => MatmulM0e4::new(gpu)?,
        };
        let c = mm.config();
        let w = DeviceM0e4::upload(
            gpu,
            &synthetic_m0e4(&mut rng, hidden, hidden, GroupSize::G32)?,
        )?;
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
    }

    if wanted(opts, "rmsnorm") {
        let norm = Norm::new(gpu)?;
        let x = DeviceBuffer::from_slice(gpu, &rng.floats(seq * hidden))?;
        let w = DeviceBuffer::from_slice(gpu, &rng.floats(hidden))?;
        let mut y = DeviceBuffer::<f32>::new(gpu, seq * hidden)?;
        let shape = RowsShape {
            rows: seq,
            dim: hidden,
        };
        let p = RmsNormParams {
            eps: 1e-5,
            weight_offset: 0.0,
        };
        out.push(Case {
            name: "rmsnorm".into(),
            shape: format!("{seq}x{hidden}"),
            config: String::new(),
            bytes: (seq * hidden * 8) as f64,
            flops: 0.0,
            run: Box::new(move || norm.rms(&x, &w, &mut y, shape, p)),
        });
    }

    let (heads, head_dim) = (hidden / 128, 128);
    if wanted(opts, "rope") {
        let rope = Rope::new(gpu)?;
        let mut x = DeviceBuffer::from_slice(gpu, &rng.floats(seq * hidden))?;
        let layout = HeadsLayout {
            offset: 0,
            token_stride: hidden,
            heads,
            seq,
        };
        let cfg = RopeConfig {
            head_dim,
            rotary_dim: head_dim,
            theta: 10000.0,
            style: RopeStyle::HalfSplit,
        };
        out.push(Case {
            name: "rope".into(),
            shape: format!("{seq} tok x {heads} heads x {head_dim}"),
            config: String::new(),
            bytes: (seq * hidden * 8) as f64,
            flops: 0.0,
            run: Box::new(move || rope.enqueue(&mut x, layout, cfg, 0)),
        });
    }

    // Decode at the context `tlite bench --prompt-len 128 --gen 64` ends with (where latency, not bandwidth,
    // decides) and at a long one. Decode runs as a step does: q, k and v from a fused QKV row, rotated and appended
    // in the launch, over caches cycled like the mat-vec weights so they are read from memory (a step reaches a
    // layer's cache after a whole model's weights have passed through the L2).
    let decode_contexts = if opts.attention_contexts.is_empty() {
        vec![192, if opts.small { 512 } else { 4096 }]
    } else {
        opts.attention_contexts.clone()
    };
    let (heads, kv_heads, head_dim) = opts.attention_heads.unwrap_or((heads, heads, head_dim));
    let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
    let attention_cases = decode_contexts
        .iter()
        .map(|&ctx| ("attention_decode", 1, ctx))
        .chain([("attention_prefill", seq, seq)]);
    for (name, q_seq, ctx) in attention_cases {
        if !wanted(opts, name) {
            continue;
        }
        let mut att = Attention::with_defines(gpu, &opts.attention_define_pairs())?;
        if let Some(policy) = opts.attention_split {
            att.set_split_policy(policy);
        }
        if let Some(walk) = opts.attention_walk {
            att.set_walk(walk);
        }
        let decode = q_seq == 1;
        let layout = KvLayout {
            kv_heads,
            max_ctx: ctx,
            head_dim,
            dtype: KvDtype::F16,
        };
        let kv: Vec<f16> = (0..kv_heads * ctx * head_dim)
            .map(|_| f16::from_f32(rng.unit()))
            .collect();
        let pair_bytes = 2 * kv.len() * 2;
        let copies = if decode {
            (COLD_WORKING_SET / pair_bytes.max(1)).clamp(1, 32)
        } else {
            1
        };
        let caches = (0..copies)
            .map(|_| {
                Ok((
                    DeviceBuffer::from_slice(gpu, &kv)?,
                    DeviceBuffer::from_slice(gpu, &kv)?,
                ))
            })
            .collect::<Result<Vec<_>, KernelError>>()?;
        // Decode reads q (and the fresh k, v) from a fused QKV row; prefill from a q-only buffer.
        let row = if decode { q_dim + 2 * kv_dim } else { q_dim };
        let q = DeviceBuffer::from_slice(gpu, &rng.floats(q_seq * row))?;
        let mut o = DeviceBuffer::<f32>::new(gpu, q_seq * q_dim)?;
        let past = ctx - q_seq;
        let shape = AttentionShape {
            seq: q_seq,
            past,
            heads,
            kv_heads,
            head_dim,
        };
        let part = move |offset, heads| HeadsLayout {
            offset,
            token_stride: row,
            heads,
            seq: q_seq,
        };
        let fresh = decode.then(|| FreshToken {
            k: part(q_dim, kv_heads),
            v: part(q_dim + kv_dim, kv_heads),
            rope: RopeConfig {
                head_dim,
                rotary_dim: head_dim,
                theta: 10000.0,
                style: RopeStyle::HalfSplit,
            },
        });
        let view = layout.positions_view(0, ctx);
        let plan = att.plan(&shape, &view);
        let kernel = match plan.kernel {
            AttentionKernel::Positions => "positions",
            AttentionKernel::Rows => "rows",
            AttentionKernel::WideRows => "wide rows",
        };
        let splits = plan.splits;
        // Keys scored per query, summed over queries (causal).
        let pairs: f64 = (0..q_seq).map(|t| (past + t + 1) as f64).sum();
        let mut next = 0;
        out.push(Case {
            name: name.into(),
            shape: format!("q {q_seq} ctx {ctx} {heads}/{kv_heads} heads x {head_dim} f16 KV"),
            config: format!("{kernel}, splits {splits}, {copies} cache copies"),
            bytes: (pair_bytes + 2 * q_seq * q_dim * 4) as f64,
            flops: 4.0 * pairs * (heads * head_dim) as f64,
            run: Box::new(move || {
                let (k, v) = &caches[next];
                next = (next + 1) % caches.len();
                let (ko, vo) = (
                    KvOperand::from_device_buffer(k, view),
                    KvOperand::from_device_buffer(v, view),
                );
                att.enqueue_with_fresh(&q, part(0, heads), fresh, ko, vo, shape, 0.088, &mut o)
            }),
        });
    }

    if ["softmax", "argmax"].iter().any(|n| wanted(opts, n)) {
        let s = std::rc::Rc::new(Sampling::new(gpu)?);
        let logits = std::rc::Rc::new(DeviceBuffer::from_slice(gpu, &rng.floats(vocab))?);
        if wanted(opts, "softmax") {
            let (s, x) = (s.clone(), logits.clone());
            let mut y = DeviceBuffer::<f32>::new(gpu, vocab)?;
            out.push(Case {
                name: "softmax".into(),
                shape: format!("1x{vocab}"),
                config: String::new(),
                bytes: (vocab * 8) as f64,
                flops: 0.0,
                run: Box::new(move || {
                    s.softmax(
                        &x,
                        &mut y,
                        RowsShape {
                            rows: 1,
                            dim: vocab,
                        },
                        1.0,
                    )
                }),
            });
        }
        if wanted(opts, "argmax") {
            let (s, x) = (s.clone(), logits.clone());
            let mut i = DeviceBuffer::<u32>::new(gpu, 1)?;
            out.push(Case {
                name: "argmax".into(),
                shape: format!("{vocab}"),
                config: String::new(),
                bytes: (vocab * 4) as f64,
                flops: 0.0,
                run: Box::new(move || s.argmax(&x, vocab, &mut i)),
            });
        }
    }
    Ok(out)
}

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
    let mv = MatvecM0e4::with_defines(gpu, config, &all)?;
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
