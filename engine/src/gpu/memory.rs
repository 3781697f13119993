//! The device-memory budget of a model, checked before anything is allocated, and the context it leaves room for.
//!
//! Drivers differ in how they fail once memory is exhausted: PoCL aborts the process inside the driver, phones
//! kill the app or fail a later launch. Adding up weights, KV cache, activations and compiled programs first turns
//! all of those into one error that says what needs how much, and what to change. The same sum sizes the default
//! context: the model's whole context is preallocated (the KV cache is never grown), so the largest context that
//! fits the budget is the one chosen, never more than the model's own maximum.

use std::fmt;

use kvcache::KvDtype;

use super::arena::ActivationSizes;
use super::plan::StepPlan;
use super::step::kv_shape;
use super::{padded_ffn, MemBudget};
use crate::model::{Model, ModelConfig, Tensor, TensorData};
use crate::EngineError;

/// What the compiled programs (the program cache the driver holds for tlite's twenty-odd kernel programs) are
/// allowed in the budget. They are built after this check, so their size cannot be known yet: this is a stated
/// allowance, not a measurement of any driver.
pub const PROGRAM_ALLOWANCE_BYTES: u64 = 16 << 20;

/// A byte count the way the messages print it: `303.2 MiB`, `1.50 GiB`.
pub fn size(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    const GIB: f64 = (1u64 << 30) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else if bytes >= 1024 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// What a model will allocate on the device, in bytes, for one context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeeds {
    /// Weights as uploaded.
    pub weights: u64,
    /// K and V caches of every layer.
    pub kv_cache: u64,
    /// Activations of the largest step, as the shape plan places them.
    pub activations: u64,
    /// The compiled programs ([`PROGRAM_ALLOWANCE_BYTES`]).
    pub programs: u64,
    /// Context the KV cache is sized for.
    pub ctx: usize,
}

impl MemoryNeeds {
    /// The sum, saturating (a sum beyond `u64` does not fit any device anyway).
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv_cache)
            .saturating_add(self.activations)
            .saturating_add(self.programs)
    }
}

impl fmt::Display for MemoryNeeds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (weights {} + KV cache {} for {} tokens + activations {} + programs {})",
            size(self.total()),
            size(self.weights),
            size(self.kv_cache),
            self.ctx,
            size(self.activations),
            size(self.programs)
        )
    }
}

/// One device buffer, for naming the largest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedBuffer {
    /// The weight it holds, e.g. `embedding`, `layers.0.qkv`.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What a model needs on the device as a function of its context and step size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// All weights as uploaded.
    pub weights: u64,
    /// The largest single weight buffer the upload makes, of the weights it does not split (the embedding and the
    /// output head are split by rows to fit the device's largest allocation, `weights.rs`).
    pub largest_weight: NamedBuffer,
    /// KV cache bytes per position, all layers, K and V.
    pub kv_per_position: u64,
    /// KV cache bytes per position of one layer's K (or V) buffer, a single allocation.
    pub kv_buffer_per_position: u64,
    /// The activations' buffers as the shape plan sizes them, for any step size.
    pub activations: ActivationSizes,
    /// The compiled programs.
    pub programs: u64,
    /// Sliding-window layers that keep a ring of `window + chunk - 1` positions instead of the context (`None`:
    /// every layer keeps a full cache).
    pub kv_rings: Option<KvRingFootprint>,
}

/// The ring caches of a model's sliding-window layers, as the budget counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvRingFootprint {
    /// The window.
    pub window: usize,
    /// Layers that keep a ring.
    pub ring_layers: usize,
    /// All layers.
    pub layers: usize,
}

impl KvRingFootprint {
    /// The rings of `config`'s local layers, or `None` where it has none.
    pub fn of_config(config: &crate::model::ModelConfig) -> Option<Self> {
        let w = config.sliding_window.as_ref()?;
        let layers = config.shape.layers;
        Some(KvRingFootprint {
            window: w.window,
            ring_layers: (0..layers).filter(|&l| w.is_local(l)).count(),
            layers,
        })
        .filter(|r| r.ring_layers > 0)
    }

    /// Positions a ring layer holds at this context and step size: its ring, or the context where that is smaller
    /// (kvcache uses a ring only where it saves memory).
    pub fn positions(&self, ctx: usize, chunk: usize) -> usize {
        (self.window + chunk.max(1) - 1).min(ctx)
    }
}

impl Footprint {
    /// Bytes of the KV cache at a context of `ctx` positions with steps of at most `chunk` tokens.
    pub fn kv_bytes(&self, ctx: usize, chunk: usize) -> u64 {
        match self.kv_rings {
            None => self.kv_per_position.saturating_mul(ctx as u64),
            Some(r) => {
                let per_layer = 2 * self.kv_buffer_per_position;
                let full = (r.layers - r.ring_layers) as u64 * ctx as u64;
                let rings = r.ring_layers as u64 * r.positions(ctx, chunk) as u64;
                per_layer.saturating_mul(full.saturating_add(rings))
            }
        }
    }

    /// Bytes of the largest single K or V buffer at this context and step size.
    pub fn kv_largest_buffer(&self, ctx: usize, chunk: usize) -> u64 {
        let positions = match self.kv_rings {
            Some(r) if r.ring_layers == r.layers => r.positions(ctx, chunk),
            _ => ctx,
        };
        self.kv_buffer_per_position.saturating_mul(positions as u64)
    }

    /// The same footprint with full caches in every layer (rings turned off).
    pub fn without_rings(self) -> Self {
        Footprint {
            kv_rings: None,
            ..self
        }
    }

    /// The footprint of `model` with a KV cache of `kv_dtype` and steps of at most `max_chunk` tokens, as
    /// [`super::GpuModel`] allocates it (its activations from the same shape plan).
    pub fn of_model(
        model: &Model,
        kv_dtype: KvDtype,
        max_chunk: usize,
    ) -> Result<Self, EngineError> {
        // The plan's buffer sizes do not depend on the context (see `symshape::models::fused_decoder`), so the
        // model's own maximum stands for whichever context is chosen.
        let c = &model.config;
        let plan = StepPlan::new(c, c.shape.max_ctx.max(1), max_chunk.max(1))?;
        Self::of_model_planned(model, kv_dtype, &plan)
    }

    /// [`Footprint::of_model`] with the activations sized by a plan already derived for the model (the one
    /// [`super::GpuModel`] then runs).
    pub fn of_model_planned(
        model: &Model,
        kv_dtype: KvDtype,
        plan: &StepPlan,
    ) -> Result<Self, EngineError> {
        let (weights, largest_weight) = weight_buffers(model);
        Self::of_counted_weights(&model.config, kv_dtype, plan, weights, largest_weight)
    }

    /// The footprint of a model of `config` whose weights were counted elsewhere (`weights` bytes, the largest
    /// allocation among them `largest_weight`): [`Footprint::of_model_planned`] counts a loaded model's tensors, a
    /// shape-only estimate counts what its matrices would take. The KV cache, the activations of `plan` and the
    /// program allowance follow from the configuration alike.
    pub fn of_counted_weights(
        config: &ModelConfig,
        kv_dtype: KvDtype,
        plan: &StepPlan,
        weights: u64,
        largest_weight: NamedBuffer,
    ) -> Result<Self, EngineError> {
        let kv = kv_shape(&config.shape, kv_dtype);
        Ok(Footprint {
            kv_rings: KvRingFootprint::of_config(config),
            weights,
            largest_weight,
            kv_per_position: kv.position_bytes_total()?,
            kv_buffer_per_position: kv.position_bytes_per_buffer()?,
            activations: plan.sizes()?,
            programs: PROGRAM_ALLOWANCE_BYTES,
        })
    }

    /// What a context of `ctx` positions with steps of at most `chunk` tokens needs.
    pub fn needs(&self, ctx: usize, chunk: usize) -> MemoryNeeds {
        MemoryNeeds {
            weights: self.weights,
            kv_cache: self.kv_bytes(ctx, chunk),
            activations: self.activations.bytes(chunk, ctx),
            programs: self.programs,
            ctx,
        }
    }
}

/// The device sizes of a model's weights, and its largest single buffer that is not split: matrices go up as M0E4
/// (codes, scales and offsets in three buffers, the codes the largest) or as f16, vectors as f32; q, k and v are one
/// stacked matrix and the MLP is padded ([`padded_ffn`]), as `weights.rs` uploads them. The embedding and the output
/// head count in the total but not as the largest buffer: they are split to fit one allocation.
fn weight_buffers(model: &Model) -> (u64, NamedBuffer) {
    let w = &model.weights;
    let mut total = 0u64;
    let mut largest = NamedBuffer {
        name: String::new(),
        bytes: 0,
    };
    let mut add = |name: String, parts: &[&Tensor], pad_rows: usize, pad_cols: usize| {
        let (all, biggest) = matrix_bytes(parts, pad_rows, pad_cols);
        total = total.saturating_add(all);
        let split_to_fit = name == "embedding" || name == "lm_head";
        if biggest > largest.bytes && !split_to_fit {
            largest = NamedBuffer {
                name,
                bytes: biggest,
            };
        }
    };
    add("embedding".into(), &[&w.embedding], 0, 0);
    if let Some(head) = &w.lm_head {
        add("lm_head".into(), &[head], 0, 0);
    }
    let ffn_pad = padded_ffn(model.config.shape.ffn) - model.config.shape.ffn;
    let mut vector_bytes = 4 * w.final_norm.len() as u64;
    for (i, l) in w.layers.iter().enumerate() {
        add(format!("layers.{i}.qkv"), &[&l.wq, &l.wk, &l.wv], 0, 0);
        add(format!("layers.{i}.wo"), &[&l.wo], 0, 0);
        add(format!("layers.{i}.w_gate"), &[&l.w_gate], ffn_pad, 0);
        add(format!("layers.{i}.w_up"), &[&l.w_up], ffn_pad, 0);
        add(format!("layers.{i}.w_down"), &[&l.w_down], 0, ffn_pad);
        let vectors = [&l.attn_norm, &l.ffn_norm]
            .into_iter()
            .chain(l.optional_vectors().into_iter().map(|(_, t)| t));
        vector_bytes = vector_bytes.saturating_add(vectors.map(|t| 4 * t.len() as u64).sum());
    }
    (total.saturating_add(vector_bytes), largest)
}

/// Total bytes and largest buffer of matrices stacked along the rows, each padded by `pad_rows` × `pad_cols`.
fn matrix_bytes(parts: &[&Tensor], pad_rows: usize, pad_cols: usize) -> (u64, u64) {
    let rows: u64 = parts.iter().map(|t| (t.rows() + pad_rows) as u64).sum();
    let cols = parts.first().map_or(0, |t| (t.cols() + pad_cols) as u64);
    let elems = rows.saturating_mul(cols);
    let m0e4_group = parts
        .iter()
        .try_fold(None, |group, t| match (&t.data, group) {
            (TensorData::M0e4(m), None) => Some(Some(m.group().len() as u64)),
            (TensorData::M0e4(m), Some(g)) if m.group().len() as u64 == g => Some(Some(g)),
            _ => None,
        });
    match m0e4_group {
        // A column pad turns M0E4 into f16 (`pad_cols`), like any mix of formats.
        Some(Some(group)) if pad_cols == 0 => {
            let codes = elems / 2;
            let scales = 2 * elems / group;
            (codes + 2 * scales, codes)
        }
        _ => (2 * elems, 2 * elems),
    }
}

/// The device's side of the sum: its name (with any profile) and sizes (0: it does not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMemory {
    /// The device as messages name it.
    pub device: String,
    /// `CL_DEVICE_GLOBAL_MEM_SIZE`.
    pub global_mem: u64,
    /// `CL_DEVICE_MAX_MEM_ALLOC_SIZE`.
    pub max_alloc: u64,
}

/// Why the context is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextReason {
    /// It was asked for (`--ctx`).
    Requested,
    /// The model's own maximum fits (or more was asked for).
    ModelMaximum,
    /// The largest that fits the memory budget.
    Budget,
    /// The largest whose per-layer KV buffers fit the device's largest allocation.
    MaxAllocation,
}

/// The context chosen for a model on a device, with the memory it takes: what the load line prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextChoice {
    /// Positions the KV cache holds.
    pub ctx: usize,
    /// Most tokens one step runs.
    pub max_chunk: usize,
    /// The model's own maximum context.
    pub model_max: usize,
    /// What was asked for, if anything.
    pub requested: Option<usize>,
    /// Why `ctx` is what it is.
    pub reason: ContextReason,
    /// What it all takes.
    pub needs: MemoryNeeds,
    /// The budget as given.
    pub budget: MemBudget,
    /// The budget in bytes (`None`: the device does not say how much memory it has, so nothing is checked).
    pub budget_bytes: Option<u64>,
    /// The device.
    pub device: DeviceMemory,
}

/// What the context choice is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextRequest {
    /// The context asked for (`None`: the largest that fits, at most the model's maximum).
    pub requested: Option<usize>,
    /// The model's own maximum context.
    pub model_max: usize,
    /// Most tokens one step may run (capped at the context).
    pub max_chunk: usize,
    /// The memory budget.
    pub budget: MemBudget,
}

/// What to change when the model does not fit.
const MORE_ROOM: &str =
    "raise --mem-budget, or store more of the weights as M0E4 (--weights m0e4, --quantize-embeddings)";

/// Chooses the context (or checks the one asked for) so that everything fits the budget and each buffer fits the
/// device's largest allocation; otherwise an error naming the numbers and what to change.
pub fn choose_context(
    footprint: &Footprint,
    device: &DeviceMemory,
    request: &ContextRequest,
) -> Result<ContextChoice, EngineError> {
    let budget_bytes = request.budget.bytes(device.global_mem);
    let model_max = request.model_max.max(1);
    let chunk_for = |ctx: usize| request.max_chunk.clamp(1, ctx.max(1));
    let fits_budget =
        |ctx: usize| budget_bytes.is_none_or(|b| footprint.needs(ctx, chunk_for(ctx)).total() <= b);
    let fits_alloc = |ctx: usize| {
        device.max_alloc == 0
            || footprint.kv_largest_buffer(ctx, chunk_for(ctx)) <= device.max_alloc
    };
    if device.max_alloc > 0 && footprint.largest_weight.bytes > device.max_alloc {
        return Err(EngineError::DeviceMemory(format!(
            "the weight buffer {} takes {} but {} allows at most {} in one allocation \
             (CL_DEVICE_MAX_MEM_ALLOC_SIZE); only the embedding and the output head are split over several buffers, \
             so store the layers as M0E4 (--weights m0e4), about a quarter of f16's size",
            footprint.largest_weight.name,
            size(footprint.largest_weight.bytes),
            device.device,
            size(device.max_alloc)
        )));
    }
    let largest_fitting = largest_where(model_max, |ctx| fits_budget(ctx) && fits_alloc(ctx));
    let choice = |ctx: usize, reason| ContextChoice {
        ctx,
        max_chunk: chunk_for(ctx),
        model_max,
        requested: request.requested,
        reason,
        needs: footprint.needs(ctx, chunk_for(ctx)),
        budget: request.budget,
        budget_bytes,
        device: device.clone(),
    };
    // What does not fit: the budget, the largest allocation, or both.
    let over = |ctx: usize| {
        let needs = footprint.needs(ctx, chunk_for(ctx));
        let budget = budget_text(request.budget, budget_bytes, device);
        let buffers = format!(
            "per-layer KV buffers of {} but {} allows at most {} in one allocation (CL_DEVICE_MAX_MEM_ALLOC_SIZE)",
            size(footprint.kv_largest_buffer(ctx, chunk_for(ctx))),
            device.device,
            size(device.max_alloc)
        );
        match (fits_budget(ctx), fits_alloc(ctx)) {
            (false, false) => format!(
                "the model needs {needs} on the device but the memory budget is {budget}, and {ctx} tokens need \
                 {buffers}"
            ),
            (false, true) => format!("the model needs {needs} on the device but the memory budget is {budget}"),
            _ => format!("a context of {ctx} tokens needs {buffers}"),
        }
    };
    match (request.requested, largest_fitting) {
        (Some(0), _) => Err(EngineError::InvalidOption(
            "the context (--ctx) must be at least 1 token".into(),
        )),
        (Some(asked), _) => {
            let ctx = asked.min(model_max);
            if fits_budget(ctx) && fits_alloc(ctx) {
                let reason = if asked > model_max {
                    ContextReason::ModelMaximum
                } else {
                    ContextReason::Requested
                };
                return Ok(choice(ctx, reason));
            }
            let advice = match largest_fitting {
                Some(fit) => format!("lower --ctx to at most {fit}, or {MORE_ROOM}"),
                None => format!("not even one token of context fits; {MORE_ROOM}"),
            };
            Err(EngineError::DeviceMemory(format!(
                "{}: {advice}",
                over(ctx)
            )))
        }
        (None, Some(ctx)) if ctx == model_max => Ok(choice(ctx, ContextReason::ModelMaximum)),
        (None, Some(ctx)) if fits_budget(ctx + 1) => Ok(choice(ctx, ContextReason::MaxAllocation)),
        (None, Some(ctx)) => Ok(choice(ctx, ContextReason::Budget)),
        (None, None) => Err(EngineError::DeviceMemory(format!(
            "{}: not even one token of context fits; {MORE_ROOM}",
            over(1)
        ))),
    }
}

/// The largest `n` in `1..=max` for which `fits` holds, `fits` being true up to some point and false after.
fn largest_where(max: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
    if max == 0 || !fits(1) {
        return None;
    }
    if fits(max) {
        return Some(max);
    }
    // fits(good) and !fits(bad) throughout.
    let (mut good, mut bad) = (1usize, max);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if fits(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Some(good)
}

fn budget_text(budget: MemBudget, bytes: Option<u64>, device: &DeviceMemory) -> String {
    let global = size(device.global_mem);
    match (budget, bytes) {
        (_, None) => format!(
            "unknown ({} of a device that does not report its memory)",
            budget
        ),
        (MemBudget::Percent(p), Some(b)) => {
            format!(
                "{} ({p}% of {global} global memory of {})",
                size(b),
                device.device
            )
        }
        (MemBudget::Bytes(asked), Some(b)) if asked > b => format!(
            "{} (--mem-budget {}, capped at the global memory of {})",
            size(b),
            size(asked),
            device.device
        ),
        (MemBudget::Bytes(_), Some(b)) => format!(
            "{} (--mem-budget; {} has {global} of global memory)",
            size(b),
            device.device
        ),
    }
}

impl fmt::Display for ContextChoice {
    /// The load line: the context, why, and what the model takes of which budget.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            ContextReason::Requested => "as requested".to_string(),
            ContextReason::ModelMaximum if self.requested.is_some_and(|r| r > self.model_max) => format!(
                "the model's maximum; {} was requested",
                self.requested.unwrap_or_default()
            ),
            ContextReason::ModelMaximum => "the model's maximum, which fits the budget".to_string(),
            ContextReason::Budget => format!(
                "the largest that fits the memory budget; the model allows {}",
                self.model_max
            ),
            ContextReason::MaxAllocation => format!(
                "the largest whose per-layer KV buffers fit one allocation of {}; the model allows {}",
                size(self.device.max_alloc),
                self.model_max
            ),
        };
        write!(
            f,
            "context {} tokens ({why}); device memory {} of a budget of {}",
            self.ctx,
            self.needs,
            budget_text(self.budget, self.budget_bytes, &self.device)
        )
    }
}

#[cfg(test)]
mod tests;
