//! The model on the device and its public API: [`GpuOptions`] say how to place it, [`GpuModel`] loads it and runs
//! steps for the generator. A step picks the phase's layer function ([`super::prefill`] or [`super::decode`]) and
//! runs it over every layer.

use std::sync::Arc;

use clkernels::kernels::norm::RowsShape;
use clkernels::kernels::rope::RopeTable;
use clkernels::kv_storage::ClKvStorage;
use clkernels::runtime::{DeviceSelector, Gpu, ProfileChoice, QueuePriority};
use kvcache::{FullPolicy, KvConfig, KvDtype, KvRings, KvSequence, KvStep};

use super::budget::MemBudget;
use super::buffers::StepBuffers;
use super::kernels::Kernels;
use super::memory::{choose_context, ContextChoice, ContextRequest, DeviceMemory, Footprint};
use super::plan::{StepDims, StepPlan};
use super::step::{kv_shape, LayerKv, LayerParams, Step};
use super::weights::DeviceWeights;
use super::{decode, prefill};
use crate::generate::{DrawRequest, LanguageModel, StepOutput, Want};
use crate::model::{Model, ModelConfig};
use crate::EngineError;

/// How to place a model on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuOptions {
    /// Which OpenCL device.
    pub device: DeviceSelector,
    /// Queue priority: low by default, so a phone's UI keeps the GPU when it needs it.
    pub priority: QueuePriority,
    /// The phone whose limits and extensions the device is narrowed to (by default `TLITE_DEVICE_PROFILE`'s).
    pub profile: ProfileChoice,
    /// Context to allocate the KV cache for (`None`: the largest that fits `mem_budget`, at most the model's own
    /// maximum).
    pub max_ctx: Option<usize>,
    /// How much device memory the model may take; exceeding it is an error before anything is allocated.
    pub mem_budget: MemBudget,
    /// Most tokens one step runs (longer prompts are prefilled in chunks of at most this).
    pub max_chunk: usize,
    /// Element type of the KV cache.
    pub kv_dtype: KvDtype,
    /// Let the decode mat-vecs multiply in f16 where the device makes that faster (NVIDIA's packed-f16 path,
    /// `cl_khr_fp16` half math): each mat-vec is then exact to about 2e-3 of sum|w·x| instead of f32 rounding.
    /// Off, they multiply in f32 (what the tests comparing against the f32 reference want).
    pub half_products: bool,
    /// Sliding-window layers keep a ring of `window + max_chunk - 1` positions instead of the whole context
    /// (kvcache's rings), so a Gemma or Mistral at a long context takes a fraction of the KV memory. Off (or
    /// `TLITE_KV_RING=off` in the environment) every layer keeps a full cache: for comparison and tests.
    pub kv_ring: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            device: DeviceSelector::Default,
            priority: QueuePriority::Low,
            profile: ProfileChoice::FromEnv,
            max_ctx: None,
            mem_budget: MemBudget::default(),
            max_chunk: 256,
            kv_dtype: KvDtype::F16,
            half_products: true,
            kv_ring: kv_ring_from_env(),
        }
    }
}

/// `TLITE_KV_RING=off` (or `0`, `false`) turns the ring caches off by default.
fn kv_ring_from_env() -> bool {
    !matches!(
        std::env::var("TLITE_KV_RING").ok().as_deref(),
        Some("off" | "0" | "false")
    )
}

impl GpuOptions {
    /// Refuses options no model can run with (checked before the device is opened).
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.max_ctx == Some(0) {
            return Err(EngineError::InvalidOption(
                "the context (--ctx) must be at least 1 token".into(),
            ));
        }
        if self.max_chunk == 0 {
            return Err(EngineError::InvalidOption(
                "max_chunk must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A model placed on an OpenCL device with its KV cache: a [`LanguageModel`] for the generator.
#[derive(Debug)]
pub struct GpuModel {
    pub(super) gpu: Gpu,
    pub(super) config: ModelConfig,
    weights: DeviceWeights,
    pub(super) kernels: Kernels,
    pub(super) kv: KvSequence<ClKvStorage>,
    /// The activations, placed by `plan`.
    pub(super) buffers: StepBuffers,
    pub(super) plan: StepPlan,
    max_chunk: usize,
    /// Each layer's constants (they differ between local and global layers only).
    pub(super) params: Vec<LayerParams>,
    /// Scaled rotaries (linear, Llama 3, longrope) rotate from this host-computed frequency table; plain ones from
    /// theta (Gemma 3's local layers rotate unscaled, from their own theta).
    pub(super) rope_table: Option<RopeTable>,
    /// The token the device chose last and still holds in `buffers.chosen`.
    pub(super) device_choice: Option<u32>,
    device_bytes: u64,
    /// The context chosen at load and the memory it takes (the load line).
    context: ContextChoice,
    /// Host time spent enqueueing steps (setting arguments and launching), for finding launch-bound runs.
    enqueue_time: std::time::Duration,
    /// Where sampled tokens are drawn, and the device buffers of the sampling stream.
    pub(super) draw: super::device_sampling::DrawState,
}

impl GpuModel {
    /// Opens the device named in `options` and places `model` on it.
    pub fn load(model: &Model, options: &GpuOptions) -> Result<Self, EngineError> {
        options.validate()?;
        let gpu = Gpu::open_with(&clkernels::runtime::GpuOptions {
            selector: options.device.clone(),
            priority: options.priority,
            profile: options.profile.clone(),
            ..Default::default()
        })?;
        Self::with_gpu(gpu, model, options)
    }

    /// Places `model` on an already opened device (`options.device`, `options.priority` and `options.profile` are
    /// not used: the device's capabilities already say what it allows).
    pub fn with_gpu(gpu: Gpu, model: &Model, options: &GpuOptions) -> Result<Self, EngineError> {
        let config = model.config.clone();
        config.validate()?;
        options.validate()?;
        // Before any allocation: the context is chosen (or the one asked for checked) against the budget. The plan
        // is derived once, for the requested chunk and the model's whole context (its buffer sizes do not depend on
        // the context), sizes the budget's activations, and is then narrowed to the context chosen; the buffers
        // are sized for the chunk chosen.
        let mut plan = StepPlan::new(&config, config.shape.max_ctx.max(1), options.max_chunk)?;
        let caps = gpu.caps();
        let mut footprint = Footprint::of_model_planned(model, options.kv_dtype, &plan)?;
        if !options.kv_ring {
            footprint = footprint.without_rings();
        }
        let context = choose_context(
            &footprint,
            &DeviceMemory {
                device: caps.display_name(),
                global_mem: caps.global_mem_bytes,
                max_alloc: caps.max_alloc_bytes,
            },
            &ContextRequest {
                requested: options.max_ctx,
                model_max: config.shape.max_ctx,
                max_chunk: options.max_chunk,
                budget: options.mem_budget,
            },
        )?;
        let (max_ctx, max_chunk) = (context.ctx, context.max_chunk);
        plan.limit_ctx(max_ctx)?;
        let load_dims = plan.evaluate(1, 0)?;
        let mut kv_config = KvConfig::new(kv_shape(&config.shape, options.kv_dtype), max_ctx)?;
        if let Some(w) = config.sliding_window.as_ref().filter(|_| options.kv_ring) {
            kv_config = kv_config.with_rings(KvRings {
                window: w.window,
                max_chunk,
                local_layers: w.local_layers.clone(),
            })?;
        }
        let kv_bytes = kv_config.total_bytes()?;
        let weights = DeviceWeights::upload(&gpu, model)?;
        let kernels = Kernels::new(&gpu, options.half_products)?;
        let buffers = StepBuffers::new(&gpu, &plan, weights.head(), max_chunk, max_ctx)?;
        let kv = KvSequence::new(
            Arc::new(ClKvStorage::new(&gpu)),
            kv_config,
            FullPolicy::Error,
        )?;
        let params = LayerParams::for_layers(&config, &load_dims);
        let rope_table = match config.rope_scaling {
            // Longrope's table is chosen by the context placed here, not the model's longest.
            Some(_) => Some(RopeTable::upload_scaled(
                &gpu,
                &config.rope_inv_freqs_for(max_ctx),
                config.rope_attn_factor(),
            )?),
            None => None,
        };
        let device_bytes = weights.bytes() as u64 + kv_bytes + buffers.bytes;
        Ok(Self {
            gpu,
            config,
            weights,
            kernels,
            kv,
            buffers,
            plan,
            max_chunk,
            params,
            rope_table,
            device_choice: None,
            device_bytes,
            context,
            enqueue_time: std::time::Duration::ZERO,
            draw: super::device_sampling::DrawState::from_env(),
        })
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The weights on the device.
    pub fn weights(&self) -> &DeviceWeights {
        &self.weights
    }

    /// Whether the decode mat-vecs multiply in f16 (see [`GpuOptions::half_products`]): asked for and
    /// available on this device.
    pub fn uses_half_products(&self) -> bool {
        self.kernels.matvec.uses_half_products()
    }

    /// The context chosen at load, why, and the memory budget it fits (what the CLI's load line prints).
    pub fn context_choice(&self) -> &ContextChoice {
        &self.context
    }

    /// Bytes this model allocated on the device (weights, KV cache, activations).
    pub fn device_bytes(&self) -> u64 {
        self.device_bytes
    }

    /// Host time spent enqueueing all steps so far (launches are asynchronous: when this is close to the wall
    /// time of the steps, the device waits on the host and the run is launch-bound).
    pub fn host_enqueue_time(&self) -> std::time::Duration {
        self.enqueue_time
    }

    /// Layers whose KV cache is a ring of their sliding window rather than the whole context
    /// ([`GpuOptions::kv_ring`]), and the bytes the whole KV cache takes.
    pub fn kv_rings(&self) -> (usize, u64) {
        let kv = self.kv.config();
        let rings = (0..kv.shape.layers).filter(|&l| kv.is_ring(l)).count();
        (rings, kv.total_bytes().unwrap_or(u64::MAX))
    }

    /// Bytes the activations take on the device (the plan's buffers and the token ids).
    pub fn activation_bytes(&self) -> u64 {
        self.buffers.bytes
    }

    /// Enqueues the decoder over `seq` tokens whose ids are on the device, writing K/V through `kv_step`.
    fn enqueue_layers(
        &mut self,
        dims: &StepDims,
        from_choice: bool,
        kv_step: &KvStep,
    ) -> Result<(), EngineError> {
        let (k, seq) = (&self.kernels, dims.seq);
        let b = &mut self.buffers;
        let ids = if from_choice {
            &b.chosen
        } else if seq == 1 {
            &b.id1
        } else {
            &b.ids
        };
        let x = &mut b
            .layers
            .first_mut()
            .ok_or_else(|| EngineError::InvalidConfig("the model has no layers".into()))?
            .x;
        let scale = self.config.embed_scale.unwrap_or(1.0);
        self.weights
            .embedding
            .gather(&k.embedding, ids, seq, x, scale)?;
        // Full layers share one layout, ring layers (sliding window) another: the step has views of both.
        let layers = self.weights.layers.iter().zip(b.layers.iter_mut());
        for (i, ((layer, s), params)) in layers.zip(&self.params).enumerate() {
            let step = Step::new(dims, params, params.table(self.rope_table.as_ref()));
            let (write, read) = (kv_step.layer_write_view(i), kv_step.layer_read_view(i));
            let kv = LayerKv::new(&self.kv, i, write, read)?;
            if seq == 1 {
                decode::layer(k, s, layer, &kv, &step)?;
            } else {
                prefill::layer(k, s, layer, &kv, &step)?;
            }
            // Submit each layer as soon as it is enqueued, so no driver holds the device idle while the host enqueues
            // the rest of the step (NVIDIA's submits eagerly: flushing every 1, 4, 8 layers or never measured the
            // same 6.1 ms per llama2-7b decode step on the H100).
            self.gpu.queue().flush().map_err(|e| {
                EngineError::Cl(clkernels::runtime::ClError::from_code("clFlush", e.0))
            })?;
        }
        Ok(())
    }

    /// Enqueues the final norm and the output head over the last of the step's positions.
    pub(super) fn enqueue_logits(&mut self, dims: &StepDims) -> Result<(), EngineError> {
        let rows = RowsShape {
            rows: dims.seq,
            dim: dims.hidden,
        };
        let Some(p) = self.params.first() else {
            return Err(EngineError::Model("a model without layers".into()));
        };
        let (k, s, w) = (&self.kernels, self.buffers.head()?, &self.weights);
        if dims.seq == 1 {
            decode::head(k, s, w, p, rows)
        } else {
            prefill::head(k, s, w, p, rows)
        }
    }

    /// Uploads the ids of a step unless the device already holds them.
    fn stage_ids(&mut self, tokens: &[u32]) -> Result<bool, EngineError> {
        if tokens.len() == 1 && self.device_choice == Some(tokens[0]) {
            return Ok(true);
        }
        let s = &mut self.buffers;
        if tokens.len() == 1 {
            s.id1.write(&self.gpu, tokens)?;
        } else {
            s.host_ids[..tokens.len()].copy_from_slice(tokens);
            s.host_ids[tokens.len()..].fill(0);
            s.ids.write(&self.gpu, &s.host_ids)?;
        }
        Ok(false)
    }

    /// Checks a step, evaluates the plan for it and enqueues its decoder layers, committing its KV positions; the
    /// returned dims are the step's evaluation, which the head (arg-max, logits, device sampling) reuses.
    pub(super) fn run_layers(&mut self, tokens: &[u32]) -> Result<StepDims, EngineError> {
        let seq = tokens.len();
        if seq == 0 || seq > self.max_chunk {
            return Err(EngineError::InvalidOption(format!(
                "a step runs 1..={} tokens, got {seq}",
                self.max_chunk
            )));
        }
        let vocab = self.config.shape.vocab;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange { id, vocab });
        }
        let past = self.kv.len();
        if past + seq > self.kv.max_ctx() {
            return Err(EngineError::PromptTooLong {
                prompt: seq,
                cached: past,
                context: self.kv.max_ctx(),
            });
        }
        let dims = self.plan.evaluate(seq, past)?;
        let from_choice = self.stage_ids(tokens)?;
        let step = self.kv.begin_step(seq)?;
        let started = std::time::Instant::now();
        let enqueued = self.enqueue_layers(&dims, from_choice, &step);
        self.enqueue_time += started.elapsed();
        if let Err(e) = enqueued {
            self.kv.cancel(step)?;
            return Err(e);
        }
        self.kv.commit(step)?;
        self.device_choice = None;
        Ok(dims)
    }
}

impl LanguageModel for GpuModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn context_len(&self) -> usize {
        self.kv.max_ctx()
    }

    fn cached_len(&self) -> usize {
        self.kv.len()
    }

    fn max_step_tokens(&self) -> usize {
        self.max_chunk
    }

    fn truncate(&mut self, len: usize) -> Result<(), EngineError> {
        if len < self.kv.len() {
            if !self.kv.can_truncate(len) {
                // The rings no longer hold the window before `len`: start again rather than attend garbage (the
                // generator asks `can_truncate` first and runs its tokens again).
                tracing::debug!(len, "the ring caches lost the window: cache cleared");
                self.kv.clear()?;
                self.device_choice = None;
                return Ok(());
            }
            self.kv.truncate(len)?;
        }
        Ok(())
    }

    fn can_truncate(&self, len: usize) -> bool {
        len >= self.kv.len() || self.kv.can_truncate(len)
    }

    fn step(&mut self, tokens: &[u32], want: Want) -> Result<StepOutput, EngineError> {
        let dims = self.run_layers(tokens)?;
        match want {
            Want::Nothing => Ok(StepOutput::Nothing),
            Want::Argmax => {
                self.enqueue_logits(&dims)?;
                let b = &mut self.buffers;
                let head = b
                    .layers
                    .last()
                    .ok_or_else(|| EngineError::InvalidConfig("the model has no layers".into()))?;
                self.kernels
                    .sampling
                    .argmax(&head.logits, dims.vocab, &mut b.chosen)?;
                let token = b.chosen.read(&self.gpu)?[0];
                self.device_choice = Some(token);
                Ok(StepOutput::Token(token))
            }
            Want::Logits => {
                self.enqueue_logits(&dims)?;
                Ok(StepOutput::Logits(
                    self.buffers.head()?.logits.read(&self.gpu)?,
                ))
            }
        }
    }

    fn step_sampled(
        &mut self,
        tokens: &[u32],
        draw: &DrawRequest<'_>,
    ) -> Result<StepOutput, EngineError> {
        super::device_sampling::step_sampled(self, tokens, draw)
    }

    fn peak_device_bytes(&self) -> u64 {
        self.device_bytes
    }

    fn shift_context(&mut self, keep: usize, drop: usize) -> Result<bool, EngineError> {
        // Ring layers hold only the latest positions: a shift that would leave the next window reaching into the
        // kept start is one this cache cannot do.
        if drop > self.kv.max_shift_drop(keep) {
            return Ok(false);
        }
        self.shift_kv(keep, drop).map(|_| true)
    }
}
