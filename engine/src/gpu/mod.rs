//! The OpenCL forward pass: plans shapes with symshape, keeps the KV cache in place, enqueues kernels.
//!
//! At load, [`GpuModel`] uploads the weights (M0E4 through the kernels' device type, f16 otherwise), allocates one
//! K and one V buffer per layer with `kvcache` on clkernels' OpenCL storage, and derives the step plan. A step only
//! evaluates the plan for `(seq, past)` on the CPU and enqueues kernels: prefill (`seq > 1`) uses the mat-mat
//! kernels, decode the mat-vec ones. The only read back is the chosen token (greedy, or sampled on the device by
//! `device_sampling`), or the last position's logits when the device hands a choice back to the host; a decode
//! step whose input is the token the device itself just chose reads its id from the device, so decode writes
//! nothing to the device either (but the repetition penalty's tokens).
//!
//! Decode is launch-bound on desktop drivers (NVIDIA's OpenCL pays ~6 µs per kernel), so an M0E4 decode layer is
//! five launches: QKV mat-vec with the attention RMSNorm folded in; attention, which also rotates q and the new
//! key and writes the new K and V into the cache (and merges its context splits itself); o-projection with the
//! residual; gate+up with the feed-forward RMSNorm folded in; down with the residual. Prefill keeps separate
//! norms and one rotary + K/V-append launch before attention, and rope-scaled models (frequency table) keep
//! separate rotary launches.

mod device_sampling;
mod memory;
mod plan;
mod weights;

use std::sync::Arc;

use clkernels::kernels::attention::{Attention, AttentionShape, FreshToken, KvOperand};
use clkernels::kernels::elementwise::Elementwise;
use clkernels::kernels::embedding::Embedding;
use clkernels::kernels::matmul::{MatmulF16, MatmulM0e4};
use clkernels::kernels::matvec::{MatvecConfig, MatvecF16, MatvecM0e4};
use clkernels::kernels::norm::{Norm, RmsNormParams, RowsShape};
use clkernels::kernels::rope::{
    HeadsLayout, Rope, RopeConfig, RopeStyle as KernelRopeStyle, RopeTable,
};
use clkernels::kernels::sampling::Sampling;
use clkernels::kernels::{GatedActivation, Residual};
use clkernels::kv_storage::ClKvStorage;
use clkernels::runtime::{DeviceBuffer, DeviceSelector, Gpu, QueuePriority};
use kvcache::{FullPolicy, KvConfig, KvDtype, KvModelShape, KvPart, KvSequence, KvStep, KvView};

pub use device_sampling::SamplingSite;
pub use memory::MemoryNeeds;
pub use plan::{ScratchSizes, StepPlan};
pub use weights::{padded_ffn, DeviceLayer, DeviceMatrix, DeviceWeights};

use crate::generate::{DrawRequest, LanguageModel, StepOutput, Want};
use crate::model::{Activation, Model, ModelConfig, RopeStyle};
use crate::EngineError;

/// How to place a model on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuOptions {
    /// Which OpenCL device.
    pub device: DeviceSelector,
    /// Queue priority: low by default, so a phone's UI keeps the GPU when it needs it.
    pub priority: QueuePriority,
    /// Context to allocate the KV cache for (`None`: the model's own maximum).
    pub max_ctx: Option<usize>,
    /// Most tokens one step runs (longer prompts are prefilled in chunks of at most this).
    pub max_chunk: usize,
    /// Element type of the KV cache.
    pub kv_dtype: KvDtype,
    /// Let the decode mat-vecs multiply in f16 where the device makes that faster (NVIDIA's packed-f16 path,
    /// `cl_khr_fp16` half math): each mat-vec is then exact to about 2e-3 of sum|w·x| instead of f32 rounding.
    /// Off, they multiply in f32 (what the tests comparing against the f32 reference want).
    pub half_products: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            device: DeviceSelector::Default,
            priority: QueuePriority::Low,
            max_ctx: None,
            max_chunk: 256,
            kv_dtype: KvDtype::F16,
            half_products: true,
        }
    }
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

/// The kernel launchers one model uses.
#[derive(Debug)]
struct Kernels {
    matvec: MatvecM0e4,
    matvec_f16: MatvecF16,
    matmul: MatmulM0e4,
    matmul_f16: MatmulF16,
    norm: Norm,
    rope: Rope,
    embedding: Embedding,
    sampling: Sampling,
    attention: Attention,
    elementwise: Elementwise,
}

impl Kernels {
    fn new(gpu: &Gpu, half_products: bool) -> Result<Self, EngineError> {
        let mut matvec = MatvecConfig::for_gpu(gpu);
        if !half_products {
            matvec.half_math = false;
            matvec.nv_half2 = false;
        }
        // The launchers compile their programs on first start (minutes of a phone's or a 2-core PC's compiler
        // otherwise spent one program after another); drivers build different programs concurrently, so the
        // heaviest (attention, the mat-vec) start at once on their own threads while this one builds the rest.
        std::thread::scope(|scope| {
            let attention = scope.spawn(|| Attention::new(gpu));
            let matvec = scope.spawn(move || MatvecM0e4::with_config(gpu, matvec));
            let rest = (
                MatmulM0e4::new(gpu),
                MatmulF16::new(gpu),
                MatvecF16::new(gpu),
                Norm::new(gpu),
                Rope::new(gpu),
                Embedding::new(gpu),
                Sampling::new(gpu),
                Elementwise::new(gpu),
            );
            let joined =
                |name: &str| EngineError::Model(format!("building the {name} kernels panicked"));
            let attention = attention.join().map_err(|_| joined("attention"))?;
            let matvec = matvec.join().map_err(|_| joined("mat-vec"))?;
            Ok(Self {
                matvec: matvec?,
                matvec_f16: rest.2?,
                matmul: rest.0?,
                matmul_f16: rest.1?,
                norm: rest.3?,
                rope: rest.4?,
                embedding: rest.5?,
                sampling: rest.6?,
                attention: attention?,
                elementwise: rest.7?,
            })
        })
    }

    /// `y = W·x (+ residual)` for `seq` rows: mat-vec in decode, mat-mat in prefill.
    fn linear(
        &self,
        w: &DeviceMatrix,
        x: &DeviceBuffer<f32>,
        seq: usize,
        y: &mut DeviceBuffer<f32>,
        residual: Residual<'_>,
    ) -> Result<(), EngineError> {
        match (w, seq) {
            (DeviceMatrix::M0e4(m), 1) => self.matvec.enqueue(m, x, y, residual)?,
            (DeviceMatrix::M0e4(m), _) => self.matmul.enqueue(m, x, seq, y, residual)?,
            (DeviceMatrix::F16(m), 1) => self.matvec_f16.enqueue(m, x, y, residual)?,
            (DeviceMatrix::F16(m), _) => self.matmul_f16.enqueue(m, x, seq, y, residual)?,
        }
        Ok(())
    }
}

/// Activations of the largest step, reused by every step and layer.
#[derive(Debug)]
struct Scratch {
    /// Token ids of a prefill chunk.
    ids: DeviceBuffer<u32>,
    /// Token id of a decode step chosen on the host.
    id1: DeviceBuffer<u32>,
    /// The arg-max the device chose last (also the next decode step's input when greedy).
    chosen: DeviceBuffer<u32>,
    /// Residual stream `[seq][hidden]`.
    x: DeviceBuffer<f32>,
    /// Normed residual `[seq][hidden]`.
    xn: DeviceBuffer<f32>,
    /// Fused q|k|v `[seq][q_dim + 2 kv_dim]`.
    qkv: DeviceBuffer<f32>,
    /// Attention output `[seq][q_dim]`.
    attn: DeviceBuffer<f32>,
    /// Gate (then gated activation) `[seq][ffn]`.
    gate: DeviceBuffer<f32>,
    /// Up `[seq][ffn]`.
    up: DeviceBuffer<f32>,
    /// The last position's residual and its norm, `[hidden]` each.
    last: DeviceBuffer<f32>,
    last_normed: DeviceBuffer<f32>,
    /// Logits of the last position.
    logits: DeviceBuffer<f32>,
    /// Host staging for `ids`.
    host_ids: Vec<u32>,
}

impl Scratch {
    fn new(
        gpu: &Gpu,
        sizes: &ScratchSizes,
        max_chunk: usize,
        hidden: usize,
    ) -> Result<Self, EngineError> {
        let f = |n: usize| DeviceBuffer::<f32>::new(gpu, n.max(1));
        Ok(Self {
            ids: DeviceBuffer::new(gpu, max_chunk)?,
            id1: DeviceBuffer::new(gpu, 1)?,
            chosen: DeviceBuffer::new(gpu, 1)?,
            x: f(sizes.hidden)?,
            xn: f(sizes.hidden)?,
            qkv: f(sizes.qkv)?,
            attn: f(sizes.attn)?,
            gate: f(sizes.ffn)?,
            up: f(sizes.ffn)?,
            last: f(hidden)?,
            last_normed: f(hidden)?,
            logits: f(sizes.vocab)?,
            host_ids: vec![0; max_chunk],
        })
    }
}

/// A model placed on an OpenCL device with its KV cache: a [`LanguageModel`] for the generator.
#[derive(Debug)]
pub struct GpuModel {
    gpu: Gpu,
    config: ModelConfig,
    weights: DeviceWeights,
    kernels: Kernels,
    kv: KvSequence<ClKvStorage>,
    scratch: Scratch,
    plan: StepPlan,
    max_chunk: usize,
    rope: RopeConfig,
    /// Scaled rotaries (linear, Llama 3) rotate from this host-computed frequency table; plain ones from theta.
    rope_table: Option<RopeTable>,
    /// The token the device chose last and still holds in `scratch.chosen`.
    device_choice: Option<u32>,
    device_bytes: u64,
    /// Host time spent enqueueing steps (setting arguments and launching), for finding launch-bound runs.
    enqueue_time: std::time::Duration,
    /// Device buffers of sampling on the device, made by the first sampled step.
    draw: device_sampling::DrawState,
}

impl GpuModel {
    /// Opens the device named in `options` and places `model` on it.
    pub fn load(model: &Model, options: &GpuOptions) -> Result<Self, EngineError> {
        options.validate()?;
        let gpu = Gpu::open(&options.device, options.priority)?;
        Self::with_gpu(gpu, model, options)
    }

    /// Places `model` on an already opened device (`options.device` and `options.priority` are not used).
    pub fn with_gpu(gpu: Gpu, model: &Model, options: &GpuOptions) -> Result<Self, EngineError> {
        let config = model.config.clone();
        config.validate()?;
        options.validate()?;
        let max_ctx = options
            .max_ctx
            .unwrap_or(config.max_ctx)
            .min(config.max_ctx)
            .max(1);
        let max_chunk = options.max_chunk.min(max_ctx);
        let plan = StepPlan::new(&config, max_ctx)?;
        let sizes = ScratchSizes::new(&config, max_chunk);
        let kv_config = KvConfig::new(
            KvModelShape {
                layers: config.layers,
                kv_heads: config.kv_heads,
                head_dim: config.head_dim,
                dtype: options.kv_dtype,
            },
            max_ctx,
        )?;
        let kv_bytes = kv_config.total_bytes()?;
        // Before any allocation: weights are counted as held on the host, which is what the upload copies.
        MemoryNeeds {
            weights: model.weights.bytes() as u64,
            kv_cache: kv_bytes,
            activations: sizes.bytes(config.hidden) as u64 + 4 * max_chunk as u64,
            ctx: max_ctx,
        }
        .check(&gpu.caps().name, gpu.caps().global_mem_bytes)?;
        let weights = DeviceWeights::upload(&gpu, model)?;
        let kernels = Kernels::new(&gpu, options.half_products)?;
        let scratch = Scratch::new(&gpu, &sizes, max_chunk, config.hidden)?;
        let kv = KvSequence::new(
            Arc::new(ClKvStorage::new(&gpu)),
            kv_config,
            FullPolicy::Error,
        )?;
        let rope = RopeConfig {
            head_dim: config.head_dim,
            rotary_dim: config.rotary_dim(),
            theta: config.rope_theta,
            style: match config.rope_style {
                RopeStyle::HalfSplit => KernelRopeStyle::HalfSplit,
                RopeStyle::Interleaved => KernelRopeStyle::Interleaved,
            },
        };
        let rope_table = match config.rope_scaling {
            Some(_) => Some(RopeTable::upload(&gpu, &config.rope_inv_freqs())?),
            None => None,
        };
        let device_bytes = weights.bytes() as u64
            + kv_bytes
            + sizes.bytes(config.hidden) as u64
            + 4 * max_chunk as u64;
        Ok(Self {
            gpu,
            config,
            weights,
            kernels,
            kv,
            scratch,
            plan,
            max_chunk,
            rope,
            rope_table,
            device_choice: None,
            device_bytes,
            enqueue_time: std::time::Duration::ZERO,
            draw: device_sampling::DrawState::from_env(),
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

    /// Bytes this model allocated on the device (weights, KV cache, activations).
    pub fn device_bytes(&self) -> u64 {
        self.device_bytes
    }

    /// Host time spent enqueueing all steps so far (launches are asynchronous: when this is close to the wall
    /// time of the steps, the device waits on the host and the run is launch-bound).
    pub fn host_enqueue_time(&self) -> std::time::Duration {
        self.enqueue_time
    }

    /// The plan's activation arena for the last step (what one arena would need; for reports).
    pub fn plan_arena_bytes(&self) -> u64 {
        self.plan.arena_bytes()
    }

    fn rms_params(&self) -> RmsNormParams {
        RmsNormParams {
            eps: self.config.norm_eps,
            weight_offset: if self.config.norm_plus_one { 1.0 } else { 0.0 },
        }
    }

    /// Enqueues the decoder over `seq` tokens whose ids are on the device, writing K/V through `step`.
    fn enqueue_layers(
        &mut self,
        seq: usize,
        from_choice: bool,
        step: &KvStep,
    ) -> Result<(), EngineError> {
        let c = &self.config;
        let k = &self.kernels;
        let s = &mut self.scratch;
        let (hidden, q_dim, kv_dim) = (c.hidden, c.q_dim(), c.kv_dim());
        let qkv_dim = q_dim + 2 * kv_dim;
        let past = step.start();
        let rows = RowsShape {
            rows: seq,
            dim: hidden,
        };
        let norm = RmsNormParams {
            eps: c.norm_eps,
            weight_offset: if c.norm_plus_one { 1.0 } else { 0.0 },
        };
        let act = match c.activation {
            Activation::Silu => GatedActivation::Silu,
            Activation::GeluTanh => GatedActivation::GeluTanh,
        };
        let ids = if from_choice {
            &s.chosen
        } else if seq == 1 {
            &s.id1
        } else {
            &s.ids
        };
        let scale = c.embed_scale.unwrap_or(1.0);
        match &self.weights.embedding {
            DeviceMatrix::F16(m) => k.embedding.enqueue_f16(m, ids, seq, &mut s.x, scale)?,
            DeviceMatrix::M0e4(m) => k.embedding.enqueue_m0e4(m, ids, seq, &mut s.x, scale)?,
        }
        let q_layout = HeadsLayout {
            offset: 0,
            token_stride: qkv_dim,
            heads: c.heads,
            seq,
        };
        let k_layout = HeadsLayout {
            offset: q_dim,
            token_stride: qkv_dim,
            heads: c.kv_heads,
            seq,
        };
        let v_layout = HeadsLayout {
            offset: q_dim + kv_dim,
            ..k_layout
        };
        let shape = AttentionShape {
            seq,
            past,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
        };
        let attn_scale = 1.0 / (c.head_dim as f32).sqrt();
        // Every layer's cache has one layout, so the step's views are the same for all of them.
        let (write, read) = (step.write_view(), step.read_view());
        for (i, layer) in self.weights.layers.iter().enumerate() {
            // Decode folds the attention norm, and Qwen's QKV bias, into the QKV mat-vec (no launches of their own).
            match (&layer.qkv, seq) {
                (DeviceMatrix::M0e4(m), 1) => {
                    let bias = layer
                        .qkv_bias
                        .as_ref()
                        .map_or(Residual::None, Residual::Add);
                    k.matvec
                        .enqueue_normed(m, &s.x, &layer.attn_norm, norm, &mut s.qkv, bias)?
                }
                _ => {
                    k.norm.rms(&s.x, &layer.attn_norm, &mut s.xn, rows, norm)?;
                    k.linear(&layer.qkv, &s.xn, seq, &mut s.qkv, Residual::None)?;
                    if let Some(bias) = &layer.qkv_bias {
                        k.elementwise
                            .add_bias_rows(&mut s.qkv, bias, seq, qkv_dim)?;
                    }
                }
            }
            // With a frequency table, q and k rotate in the QKV buffer and the cache writes only copy; with a
            // plain theta, decode does the rotation and the K/V write inside the attention launch, and prefill
            // in one launch before it (q rotated in place, K rotated and V written into the cache).
            // Operands are sized from the storage's own record: no driver query per layer.
            let k_buf = self.kv.buffer(i, KvPart::Key)?;
            let v_buf = self.kv.buffer(i, KvPart::Value)?;
            let (k_write, v_write) = (k_buf.operand(write), v_buf.operand(write));
            let (k_op, v_op) = (k_buf.operand(read), v_buf.operand(read));
            let fresh = match (&self.rope_table, seq) {
                (None, 1) => Some(FreshToken {
                    k: k_layout,
                    v: v_layout,
                    rope: self.rope,
                }),
                (Some(table), _) => {
                    k.rope
                        .enqueue_with_table(&mut s.qkv, q_layout, self.rope, table, past)?;
                    k.rope
                        .enqueue_with_table(&mut s.qkv, k_layout, self.rope, table, past)?;
                    k.attention
                        .enqueue_kv_write(&s.qkv, k_layout, k_write, None, past)?;
                    k.attention
                        .enqueue_kv_write(&s.qkv, v_layout, v_write, None, past)?;
                    None
                }
                (None, _) => {
                    k.attention.enqueue_qkv_rope_write(
                        &mut s.qkv, q_layout, k_layout, v_layout, k_write, v_write, self.rope, past,
                    )?;
                    None
                }
            };
            k.attention.enqueue_with_fresh(
                &s.qkv,
                q_layout,
                fresh,
                k_op,
                v_op,
                shape,
                attn_scale,
                &mut s.attn,
            )?;
            k.linear(&layer.wo, &s.attn, seq, &mut s.x, Residual::Accumulate)?;
            match (&layer.gate, &layer.up, seq) {
                (DeviceMatrix::M0e4(g), DeviceMatrix::M0e4(u), 1) => k
                    .matvec
                    .enqueue_gate_up_normed(g, u, &s.x, &layer.ffn_norm, norm, &mut s.gate, act)?,
                _ => {
                    k.norm.rms(&s.x, &layer.ffn_norm, &mut s.xn, rows, norm)?;
                    k.linear(&layer.gate, &s.xn, seq, &mut s.gate, Residual::None)?;
                    k.linear(&layer.up, &s.xn, seq, &mut s.up, Residual::None)?;
                    k.elementwise.gated_in_place(
                        &mut s.gate,
                        &s.up,
                        seq * weights::padded_ffn(c.ffn),
                        act,
                    )?;
                }
            }
            k.linear(&layer.down, &s.gate, seq, &mut s.x, Residual::Accumulate)?;
            // Submit each layer as soon as it is enqueued, so no driver holds the device idle while the host enqueues
            // the rest of the step (NVIDIA's submits eagerly: flushing every 1, 4, 8 layers or never measured the
            // same 6.1 ms per llama2-7b decode step on the H100).
            self.gpu.queue().flush().map_err(|e| {
                EngineError::Cl(clkernels::runtime::ClError::from_code("clFlush", e.0))
            })?;
        }
        Ok(())
    }

    /// Enqueues the final norm and the output head over the last of `seq` positions.
    fn enqueue_logits(&mut self, seq: usize) -> Result<(), EngineError> {
        let hidden = self.config.hidden;
        let params = self.rms_params();
        let k = &self.kernels;
        let s = &mut self.scratch;
        let one = RowsShape {
            rows: 1,
            dim: hidden,
        };
        if let (1, DeviceMatrix::M0e4(head)) = (seq, self.weights.head()) {
            // Decode with a quantised head: the final norm rides in the head's mat-vec.
            k.matvec.enqueue_normed(
                head,
                &s.x,
                &self.weights.final_norm,
                params,
                &mut s.logits,
                Residual::None,
            )?;
            return Ok(());
        }
        if seq == 1 {
            k.norm.rms(
                &s.x,
                &self.weights.final_norm,
                &mut s.last_normed,
                one,
                params,
            )?;
        } else {
            // The strided K/V write kernel doubles as a row copy: one "head" of `hidden` values, no rotation.
            let src = HeadsLayout {
                offset: (seq - 1) * hidden,
                token_stride: hidden,
                heads: 1,
                seq: 1,
            };
            let view = KvView {
                offset_elems: 0,
                first_position: 0,
                positions: 1,
                heads: 1,
                head_dim: hidden,
                head_stride_elems: hidden as u64,
                position_stride_elems: hidden as u64,
                dtype: KvDtype::F32,
            };
            k.attention.enqueue_kv_write(
                &s.x,
                src,
                KvOperand::from_device_buffer(&s.last, view),
                None,
                0,
            )?;
            k.norm.rms(
                &s.last,
                &self.weights.final_norm,
                &mut s.last_normed,
                one,
                params,
            )?;
        }
        k.linear(
            self.weights.head(),
            &s.last_normed,
            1,
            &mut s.logits,
            Residual::None,
        )
    }

    /// Uploads the ids of a step unless the device already holds them.
    fn stage_ids(&mut self, tokens: &[u32]) -> Result<bool, EngineError> {
        if tokens.len() == 1 && self.device_choice == Some(tokens[0]) {
            return Ok(true);
        }
        let s = &mut self.scratch;
        if tokens.len() == 1 {
            s.id1.write(&self.gpu, tokens)?;
        } else {
            s.host_ids[..tokens.len()].copy_from_slice(tokens);
            s.host_ids[tokens.len()..].fill(0);
            s.ids.write(&self.gpu, &s.host_ids)?;
        }
        Ok(false)
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
            self.kv.truncate(len)?;
        }
        Ok(())
    }

    fn step(&mut self, tokens: &[u32], want: Want) -> Result<StepOutput, EngineError> {
        let seq = tokens.len();
        if seq == 0 || seq > self.max_chunk {
            return Err(EngineError::InvalidOption(format!(
                "a step runs 1..={} tokens, got {seq}",
                self.max_chunk
            )));
        }
        let vocab = self.config.vocab;
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
        self.plan.evaluate(seq, past, &self.config)?;
        let from_choice = self.stage_ids(tokens)?;
        let step = self.kv.begin_step(seq)?;
        let started = std::time::Instant::now();
        let enqueued = self.enqueue_layers(seq, from_choice, &step);
        self.enqueue_time += started.elapsed();
        if let Err(e) = enqueued {
            self.kv.cancel(step)?;
            return Err(e);
        }
        self.kv.commit(step)?;
        self.device_choice = None;
        match want {
            Want::Nothing => Ok(StepOutput::Nothing),
            Want::Argmax => {
                self.enqueue_logits(seq)?;
                let s = &mut self.scratch;
                self.kernels
                    .sampling
                    .argmax(&s.logits, vocab, &mut s.chosen)?;
                let token = s.chosen.read(&self.gpu)?[0];
                self.device_choice = Some(token);
                Ok(StepOutput::Token(token))
            }
            Want::Logits => {
                self.enqueue_logits(seq)?;
                Ok(StepOutput::Logits(self.scratch.logits.read(&self.gpu)?))
            }
        }
    }

    fn step_sampled(
        &mut self,
        tokens: &[u32],
        draw: &DrawRequest<'_>,
    ) -> Result<StepOutput, EngineError> {
        device_sampling::step_sampled(self, tokens, draw)
    }

    fn peak_device_bytes(&self) -> u64 {
        self.device_bytes
    }
}
