//! Softmax, arg-max and the whole sampling chain on the device (`sampling.cl`).
//!
//! [`Sampling::draw`] chooses a token the way the engine's host sampler does (repetition penalty, temperature,
//! top-k, top-p, min-p, then a draw at a uniform number the caller supplies) and leaves only its id to read back, so
//! a sampled token costs four bytes of transfer instead of the whole logit vector. Design:
//! - **One work-group, one launch.** Every phase needs the result of the one before (the maximum, then the cutoffs,
//!   then the draw), and a work-group synchronises with a barrier where separate launches would each pay a driver's
//!   launch cost. It walks the vocabulary twice with temperature alone, and about two more times per cutoff.
//! - **No sort of the vocabulary.** A cutoff (top-k's rank, top-p's mass) is found by narrowing a band of logit
//!   values: each pass counts and weighs the band's logits at 8 thresholds and keeps the sub-band where the criterion
//!   flips, until at most 2048 are left (at most 5 passes; on random and trained-like logits one or two); those are
//!   gathered into local memory, sorted (bitonic) and scanned. When the logits that fit are everything from the top,
//!   top-k and top-p share one sort.
//! - **The draw walks the kept tokens in token order**, as the host does, so the same uniform number gives the same
//!   token on both unless float rounding sits on a boundary; a caller can drive both from one random stream.
//! - **Portable**: no sub-groups, no fp16, no float atomics; sums run in a fixed order, so a draw is reproducible on
//!   one device. Local memory: about 17 KiB of candidates or reduction scratch, plus 4 bytes per work-item, passed
//!   as a kernel argument (checked against the device's size when the kernels are built).
//! - **Four compiled variants** (neither cutoff, top-k, top-p, both), so a launch runs only the phases its settings
//!   need, without branching around barriers.
//!
//! When the device cannot decide it says so ([`NO_TOKEN`]) and the caller samples on the host: a NaN or infinite
//! logit (the host sampler then reports the error), or more than 2048 equal logits at a cutoff.

use super::norm::RowsShape;
use super::{check_len, program_source, shape_error, to_u32, Arg, KernelError, LockedKernel};
use crate::runtime::{ClError, DeviceBuffer, Gpu};

const SOURCE: crate::runtime::ProgramSource = program_source!("sampling", "sampling.cl");

/// What [`Sampling::draw`] writes instead of a token id when the caller must sample on the host.
pub const NO_TOKEN: u32 = u32::MAX;

/// The draw kernel's variants, indexed by `top-k on + 2 * top-p on`: each has only the cutoff phases it needs, so
/// none runs a phase's barriers for nothing (`sampling.cl` says why they are not skipped by a branch).
const DRAW_KERNELS: [&str; 4] = ["sample", "sample_top_k", "sample_top_p", "sample_top_k_p"];

/// Words of diagnostics the draw kernel writes (`SAMPLE_INFO_LEN` in `sampling.cl`).
const INFO_LEN: usize = 8;

/// The kernel counts logits in f32, exact up to 2^24.
const MAX_VOCAB: usize = 1 << 24;

/// Bytes of local memory the draw kernel takes for work-groups of `wg`: `SAMPLE_LOCAL_F4` float4s in
/// `sampling.cl` (the candidates or reduction scratch, the state, the scan, the spans), computed the same way.
fn draw_local_bytes(wg: usize) -> usize {
    const CAND: usize = 2048;
    const STATE_F4: usize = 32;
    let pool = if wg + 32 > CAND / 2 {
        wg + 32
    } else {
        CAND / 2
    };
    16 * (pool + STATE_F4 + wg / 4 + wg.min(32).div_ceil(4))
}

/// Softmax / arg-max / sampling launcher.
#[derive(Debug)]
pub struct Sampling {
    gpu: Gpu,
    wg: usize,
    softmax: LockedKernel,
    argmax: LockedKernel,
    draw_wg: usize,
    /// The draw kernel with neither, top-k, top-p, and both cutoffs compiled in.
    draw: [LockedKernel; 4],
}

/// The sampling chain's settings, checked: what [`Sampling::draw`] applies, in this order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawParams {
    temperature: f32,
    top_k: u32,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
}

impl DrawParams {
    /// Temperature (`0`: the arg-max of the penalised logits), top-k (`0`: off), top-p (`1`: off), min-p (`0`: off)
    /// and the repetition penalty (`1`: off; positive logits are divided by it, others multiplied).
    pub fn new(
        temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
    ) -> Result<Self, KernelError> {
        let check = |name: &str, v: f32, ok: bool, want: &str| {
            if ok && v.is_finite() {
                Ok(())
            } else {
                Err(shape_error(
                    "sample",
                    format!("{name} = {v} must be {want}"),
                ))
            }
        };
        check(
            "temperature",
            temperature,
            temperature >= 0.0,
            "finite and >= 0",
        )?;
        check("top_p", top_p, top_p > 0.0 && top_p <= 1.0, "in (0, 1]")?;
        check("min_p", min_p, (0.0..=1.0).contains(&min_p), "in [0, 1]")?;
        check(
            "repeat_penalty",
            repeat_penalty,
            repeat_penalty > 0.0,
            "finite and > 0",
        )?;
        Ok(DrawParams {
            temperature,
            // Any k at least the vocabulary keeps everything, as a k past u32 does.
            top_k: u32::try_from(top_k).unwrap_or(u32::MAX),
            top_p,
            min_p,
            repeat_penalty,
        })
    }
}

/// A uniform random number in `[0, 1)`: where the draw falls in the kept tokens' cumulative probability.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Uniform(f32);

impl Uniform {
    /// Refuses values outside `[0, 1)`.
    pub fn new(u: f32) -> Result<Self, KernelError> {
        if (0.0..1.0).contains(&u) {
            Ok(Uniform(u))
        } else {
            Err(shape_error(
                "sample",
                format!("uniform {u} is not in [0, 1)"),
            ))
        }
    }

    /// The number.
    pub fn get(self) -> f32 {
        self.0
    }
}

/// Device buffers of one sampling stream: the repetition penalty's tokens, the logits they overwrite while the
/// kernel runs, and the kernel's diagnostics. Reused from token to token.
#[derive(Debug)]
pub struct DrawScratch {
    penalised: DeviceBuffer<u32>,
    saved: DeviceBuffer<f32>,
    info: DeviceBuffer<u32>,
    /// Distinct penalised tokens, sorted; staged at the buffer's full length.
    staged: Vec<u32>,
    len: usize,
}

impl DrawScratch {
    /// Room for `window` penalised tokens (it grows when more are set).
    pub fn new(gpu: &Gpu, window: usize) -> Result<Self, ClError> {
        let capacity = window.max(1);
        Ok(DrawScratch {
            penalised: DeviceBuffer::new(gpu, capacity)?,
            saved: DeviceBuffer::new(gpu, capacity)?,
            info: DeviceBuffer::new(gpu, INFO_LEN)?,
            staged: vec![u32::MAX; capacity],
            len: 0,
        })
    }

    /// Sets the tokens the repetition penalty applies to: each distinct one once, whatever the order and repeats in
    /// `tokens`; ids past the vocabulary are ignored by the kernel, as by the host sampler. Uploads them (a blocking
    /// write, so call it while the queue is idle, before enqueueing the step).
    pub fn set_penalised(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<(), ClError> {
        let mut distinct = tokens.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() > self.staged.len() {
            *self = Self::new(gpu, distinct.len().next_power_of_two())?;
        }
        self.len = distinct.len();
        if self.len == 0 {
            return Ok(());
        }
        self.staged[..self.len].copy_from_slice(&distinct);
        self.staged[self.len..].fill(u32::MAX);
        self.penalised.write(gpu, &self.staged)
    }

    /// What the last draw did (blocking read; for tests and benchmarks, the engine needs only the id).
    pub fn info(&self, gpu: &Gpu) -> Result<DrawInfo, ClError> {
        let w = self.info.read(gpu)?;
        let outcome = match w[0] {
            0 => DrawOutcome::Drawn,
            1 => DrawOutcome::Greedy,
            2 => DrawOutcome::BadLogits,
            _ => DrawOutcome::Unresolved,
        };
        Ok(DrawInfo {
            outcome,
            narrowing_passes: w[1],
            cutoff: (w[2] != 0).then(|| (order_value(w[3]), w[4])),
            kept: w[5],
            kept_mass: f32::from_bits(w[6]),
            normaliser: f32::from_bits(w[7]),
        })
    }
}

/// How a draw was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrawOutcome {
    /// Drawn from the kept tokens.
    Drawn,
    /// Temperature 0: the arg-max of the penalised logits.
    Greedy,
    /// A NaN or infinite logit, or none finite: [`NO_TOKEN`], the host decides (and reports).
    BadLogits,
    /// More equal logits at a cutoff than the device sorts: [`NO_TOKEN`], the host decides.
    Unresolved,
}

/// Diagnostics of the last [`Sampling::draw`] on a [`DrawScratch`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawInfo {
    /// How it was decided.
    pub outcome: DrawOutcome,
    /// Passes over the vocabulary spent narrowing cutoffs.
    pub narrowing_passes: u32,
    /// The last kept token in the chain's order (penalised logit, id), when top-k or top-p cut anything.
    pub cutoff: Option<(f32, u32)>,
    /// Tokens kept after top-k, top-p and min-p.
    pub kept: u32,
    /// Their softmax weight, `sum exp((logit - max) / T)`.
    pub kept_mass: f32,
    /// The same sum over the tokens top-k kept (all finite ones without top-k): top-p's and min-p's normaliser.
    pub normaliser: f32,
}

/// Inverse of the kernel's order-preserving float-to-uint map.
fn order_value(key: u32) -> f32 {
    f32::from_bits(if key & 0x8000_0000 != 0 {
        key & 0x7FFF_FFFF
    } else {
        !key
    })
}

impl Sampling {
    /// Builds the kernels.
    pub fn new(gpu: &Gpu) -> Result<Self, KernelError> {
        Self::with_defines(gpu, &[])
    }

    /// As [`Sampling::new`], with extra compiler defines (the build tests compile the vendor reduction paths).
    pub fn with_defines(gpu: &Gpu, extra: &[(&str, &str)]) -> Result<Self, KernelError> {
        // One work-group scans a whole vocabulary row: as wide as the device allows (up to 1024) so each
        // work-item has fewer serial loads (argmax of 32000 took 31 us with 256 on the H100). A driver may refuse
        // that width for a kernel (registers, local memory; phones especially), so narrower builds are tried
        // before giving up, for the draw kernel (the heaviest) on its own.
        let widest = super::pow2_at_most(1024, gpu.caps().max_work_group_size);
        let (wg, small) = Self::widest_build(gpu, widest, extra, &["softmax", "argmax"])?;
        let (draw_wg, draw) = Self::widest_build(gpu, widest, extra, &DRAW_KERNELS)?;
        let not_built = |_| shape_error("sampling", "a kernel was not built");
        let [softmax, argmax] = <[LockedKernel; 2]>::try_from(small).map_err(not_built)?;
        Ok(Sampling {
            gpu: gpu.clone(),
            wg,
            softmax,
            argmax,
            draw_wg,
            draw: draw.try_into().map_err(not_built)?,
        })
    }

    /// The kernels `names` built at the widest work-group size from `widest` down (by fours, to 64) that the
    /// driver runs all of them with.
    fn widest_build(
        gpu: &Gpu,
        widest: usize,
        extra: &[(&str, &str)],
        names: &[&'static str],
    ) -> Result<(usize, Vec<LockedKernel>), KernelError> {
        let mut wg = widest;
        loop {
            match Self::build_at(gpu, wg, extra, names) {
                Ok(kernels) => return Ok((wg, kernels)),
                Err(e) if wg > 64 => {
                    tracing::debug!(error = %e, wg, ?names, "sampling kernels refused this work-group size; trying narrower");
                    wg /= 4;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Builds `names` for work-groups of `wg` work-items (a power of two), checking that the driver can run each
    /// of them that wide.
    fn build_at(
        gpu: &Gpu,
        wg: usize,
        extra: &[(&str, &str)],
        names: &[&'static str],
    ) -> Result<Vec<LockedKernel>, KernelError> {
        let wg_s = wg.to_string();
        let mut defines = vec![("SAMPLE_WG", wg_s.as_str())];
        defines.extend_from_slice(extra);
        let local = gpu.caps().local_mem_bytes;
        if names.contains(&"sample") && local > 0 && draw_local_bytes(wg) as u64 > local {
            return Err(shape_error(
                "sampling",
                format!(
                    "the draw kernel needs {} bytes of local memory at {wg} work-items; the device has {local}",
                    draw_local_bytes(wg)
                ),
            ));
        }
        let mut kernels = Vec::with_capacity(names.len());
        for &name in names {
            let k = LockedKernel::build(gpu, &SOURCE, &defines, name)?;
            let limit = k.max_work_group_size(gpu);
            if limit != 0 && limit < wg {
                return Err(shape_error(
                    "sampling",
                    format!("the driver runs {name} with at most {limit} work-items, not {wg}"),
                ));
            }
            kernels.push(k);
        }
        Ok(kernels)
    }

    /// `y[row] = softmax(x[row] / temperature)` for each of `shape.rows` rows.
    pub fn softmax(
        &self,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
        shape: RowsShape,
        temperature: f32,
    ) -> Result<(), KernelError> {
        const K: &str = "softmax";
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(shape_error(
                K,
                format!("temperature {temperature} must be finite and > 0"),
            ));
        }
        if shape.is_empty() {
            return Err(shape_error(K, "empty shape"));
        }
        check_len(K, "x", x, shape.len())?;
        check_len(K, "y", y, shape.len())?;
        let args = [
            x.into(),
            (&*y).into(),
            to_u32(K, "dim", shape.dim)?.into(),
            (1.0 / temperature).into(),
        ];
        self.softmax
            .launch(&self.gpu, &args, &[shape.rows * self.wg], Some(&[self.wg]))
    }

    /// `out[0] = argmax(x[0..n])` (lowest index on ties).
    pub fn argmax(
        &self,
        x: &DeviceBuffer<f32>,
        n: usize,
        out: &mut DeviceBuffer<u32>,
    ) -> Result<(), KernelError> {
        const K: &str = "argmax";
        if n == 0 {
            return Err(shape_error(K, "n is 0"));
        }
        check_len(K, "x", x, n)?;
        let args = [x.into(), (&*out).into(), to_u32(K, "n", n)?.into()];
        self.argmax
            .launch(&self.gpu, &args, &[self.wg], Some(&[self.wg]))
    }

    /// Chooses the next token from `logits[0..vocab]` as the host sampler would with the same settings and
    /// uniform number, and writes its id to `out[0]` ([`NO_TOKEN`] when the host must decide; see the module
    /// doc). The penalised tokens are those last set on `scratch`; the logits are penalised in place while the
    /// kernel runs and restored before it ends.
    pub fn draw(
        &self,
        logits: &mut DeviceBuffer<f32>,
        vocab: usize,
        params: &DrawParams,
        uniform: Uniform,
        scratch: &mut DrawScratch,
        out: &mut DeviceBuffer<u32>,
    ) -> Result<(), KernelError> {
        const K: &str = "sample";
        if vocab == 0 || vocab > MAX_VOCAB {
            return Err(shape_error(
                K,
                format!("vocabulary of {vocab} tokens is not in 1..={MAX_VOCAB}"),
            ));
        }
        check_len(K, "logits", logits, vocab)?;
        check_len(K, "out", out, 1)?;
        let args = [
            (&*logits).into(),
            to_u32(K, "vocab", vocab)?.into(),
            (&scratch.penalised).into(),
            (&scratch.saved).into(),
            to_u32(K, "penalised tokens", scratch.len)?.into(),
            params.repeat_penalty.into(),
            params.temperature.into(),
            params.top_k.into(),
            params.top_p.into(),
            params.min_p.into(),
            uniform.0.into(),
            (&*out).into(),
            (&scratch.info).into(),
            Arg::Local(draw_local_bytes(self.draw_wg)),
        ];
        let top_k = params.top_k > 0 && (params.top_k as usize) < vocab;
        let top_p = params.top_p < 1.0 && params.temperature > 0.0;
        let kernel = &self.draw[usize::from(top_k) + 2 * usize::from(top_p)];
        kernel.launch(&self.gpu, &args, &[self.draw_wg], Some(&[self.draw_wg]))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The narrowest build `Sampling::new` falls back to on drivers that refuse wide groups (one program at 64
    /// work-items, so the draw's narrowing, sort and scans each take several elements per work-item) gives the
    /// picks that need no reference: the arg-max with a planted tie, and draws at the ends of the kept tokens.
    #[test]
    fn narrow_work_groups_give_the_same_picks() {
        let gpu = Gpu::open_default().unwrap();
        let [softmax, argmax] = Sampling::build_at(&gpu, 64, &[], &["softmax", "argmax"])
            .unwrap()
            .try_into()
            .unwrap();
        let draw = Sampling::build_at(&gpu, 64, &[], &DRAW_KERNELS)
            .unwrap()
            .try_into()
            .unwrap();
        let s = Sampling {
            gpu: gpu.clone(),
            wg: 64,
            softmax,
            argmax,
            draw_wg: 64,
            draw,
        };
        let seed: u64 = rand::rng().random();
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut x: Vec<f32> = (0..5000).map(|_| rng.random_range(-4.0..4.0)).collect();
        x[4321] = 9.0;
        x[17] = 9.0; // a tie: the lower index wins
        let mut xd = DeviceBuffer::from_slice(&gpu, &x).unwrap();
        let mut best = DeviceBuffer::<u32>::new(&gpu, 1).unwrap();
        s.argmax(&xd, x.len(), &mut best).unwrap();
        assert_eq!(best.read(&gpu).unwrap()[0], 17);

        // Top-5 at temperature 1: the kept tokens are the five largest; u = 0 draws the lowest id among them and
        // u just under 1 the highest. 5000 logits take narrowing passes before the sort.
        let k = 5;
        let mut order: Vec<u32> = (0..x.len() as u32).collect();
        order.sort_by(|&a, &b| x[b as usize].total_cmp(&x[a as usize]).then(a.cmp(&b)));
        let mut kept = order[..k].to_vec();
        kept.sort_unstable();
        let mut scratch = DrawScratch::new(&gpu, 4).unwrap();
        let params = DrawParams::new(1.0, k, 1.0, 0.0, 1.0).unwrap();
        for (u, want) in [(0.0, kept[0]), (0.999_999_9, kept[k - 1])] {
            s.draw(
                &mut xd,
                x.len(),
                &params,
                Uniform::new(u).unwrap(),
                &mut scratch,
                &mut best,
            )
            .unwrap();
            assert_eq!(best.read(&gpu).unwrap()[0], want, "u = {u}");
            let info = scratch.info(&gpu).unwrap();
            assert_eq!((info.outcome, info.kept), (DrawOutcome::Drawn, k as u32));
            assert!(info.narrowing_passes > 0, "{info:?}");
        }
        // Greedy with a penalty that demotes both tied maxima.
        scratch.set_penalised(&gpu, &[4321, 17, 17]).unwrap();
        let greedy = DrawParams::new(0.0, 0, 1.0, 0.0, 100.0).unwrap();
        s.draw(
            &mut xd,
            x.len(),
            &greedy,
            Uniform::new(0.5).unwrap(),
            &mut scratch,
            &mut best,
        )
        .unwrap();
        assert_eq!(best.read(&gpu).unwrap()[0], order[2]);
        assert_eq!(xd.read(&gpu).unwrap(), x, "the penalty was not undone");
    }
}
