//! [`phone_plan_markdown`]: what tlite would choose on each bundled phone profile, for the models the README names,
//! computed from shapes alone (no device, no weights): the kernel variants the phone's capabilities select, and the
//! memory plan at the default context. The README's "Running on a phone" tables are this function's output
//! (`tlite devices --phone-plan` prints it; `bench/tests/phone_plan.rs` fails when the README is stale).
//!
//! The footprint mirrors [`Footprint::of_model`] (a test holds the two equal on tiny models): M0E4 G32 layers and
//! f16 embedding and head, as `tlite generate` loads by default, an f16 KV cache, steps of 256 tokens.

use std::fmt::Write;

use clkernels::kernels::attention::{decode_attention_choice, AttentionKernel};
use clkernels::kernels::matvec::{MatvecConfig, MatvecVendorKernel};
use clkernels::kernels::vector_width::VectorWidth;
use clkernels::runtime::{Capabilities, DeviceProfile, ProfileError, RowSplit, SplitLimits};
use engine::gpu::{
    choose_context, padded_ffn, size, ContextChoice, ContextReason, ContextRequest, DeviceMemory,
    Footprint, GpuOptions, NamedBuffer, StepPlan,
};
use engine::model::{ModelConfig, ModelShape};
use engine::EngineError;
use kvcache::KvDtype;

use crate::end_to_end::BenchArch;

/// The M0E4 group the default load uses.
const GROUP: u64 = 32;

#[derive(Debug)]
/// A model the tables list: its name, its configuration, and a note on what its figures leave out.
pub struct PlanModel {
    /// As the README names it.
    pub name: &'static str,
    /// Its published shapes.
    pub config: ModelConfig,
    /// What the figures leave out, if anything.
    pub note: Option<&'static str>,
}

/// Gemma-2B, Qwen3-1.7B and Llama-3.2-1B at their published shapes, and Gemma 2 2B, whose embedding is split.
pub fn plan_models() -> Vec<PlanModel> {
    let gemma = BenchArch::Gemma2b.config(None);
    let llama_base = BenchArch::Llama2_7b.config(None);
    let llama32 = ModelConfig {
        shape: ModelShape {
            hidden: 2048,
            ffn: 8192,
            layers: 16,
            heads: 32,
            kv_heads: 8,
            head_dim: 64,
            vocab: 128_256,
            max_ctx: 131_072,
        },
        rope_theta: 500_000.0,
        tied_embeddings: true,
        bos: Some(128_000),
        eos: vec![128_001],
        ..llama_base
    };
    vec![
        PlanModel {
            name: "Gemma-2B",
            config: gemma,
            note: None,
        },
        PlanModel {
            name: "Gemma-2-2B",
            config: BenchArch::Gemma2_2b.config(None),
            note: Some(
                "its 13 local layers keep ring caches of their 4096-position window (plus a 256-token step), the \
                 13 global ones the whole context; listed for its 1.18 GB f16 embedding, which one 1 GiB \
                 allocation cannot hold",
            ),
        },
        PlanModel {
            name: "Qwen3-1.7B",
            config: BenchArch::Qwen3_1_7b.config(None),
            note: None,
        },
        PlanModel {
            name: "Llama-3.2-1B",
            config: llama32,
            note: None,
        },
    ]
}

/// Device bytes of one matrix as the default load stores it, and of its largest buffer: M0E4 G32 (codes, and two
/// f16 per group) or f16.
fn matrix_bytes(rows: usize, cols: usize, m0e4: bool) -> (u64, u64) {
    let elems = rows as u64 * cols as u64;
    if m0e4 {
        (elems / 2 + 4 * elems / GROUP, elems / 2)
    } else {
        (2 * elems, 2 * elems)
    }
}

/// What `config` needs on the device, from its shapes: M0E4 layers (f16 where a width is not a multiple of the
/// group, as the loader keeps them), f16 embedding and head, f32 vectors, an f16 KV cache of `kv`.
pub fn footprint_of_shapes(config: &ModelConfig, kv: KvDtype) -> Result<Footprint, EngineError> {
    let s = &config.shape;
    let (hidden, ffn) = (s.hidden, padded_ffn(s.ffn));
    let mut weights = matrix_bytes(s.vocab, hidden, false).0;
    if !config.tied_embeddings {
        weights += matrix_bytes(s.vocab, hidden, false).0;
    }
    let mut largest = NamedBuffer {
        name: String::new(),
        bytes: 0,
    };
    // M0E4 where the loaded input width is a whole number of groups; the MLP's padding keeps that (rows) or
    // dequantises to f16 (down's columns, padded only when `ffn` is not a multiple of 32).
    let whole_groups = |cols: usize| (cols as u64).is_multiple_of(GROUP);
    let layer_mats = [
        ("qkv", s.qkv_dim(), hidden, whole_groups(hidden)),
        ("wo", hidden, s.q_dim(), whole_groups(s.q_dim())),
        ("w_gate", ffn, hidden, whole_groups(hidden)),
        ("w_up", ffn, hidden, whole_groups(hidden)),
        ("w_down", hidden, ffn, whole_groups(s.ffn)),
    ];
    for (name, rows, cols, m0e4) in layer_mats {
        let (bytes, buffer) = matrix_bytes(rows, cols, m0e4);
        weights += bytes * s.layers as u64;
        if buffer > largest.bytes {
            largest = NamedBuffer {
                name: format!("layers.0.{name}"),
                bytes: buffer,
            };
        }
    }
    let bias = if config.qkv_bias { s.qkv_dim() } else { 0 };
    // Per layer: the two norms, the bias, Qwen3/Gemma 3's q and k norms and Gemma 2/3's post norms.
    let qk_norms = if config.qk_norm { 2 * s.head_dim } else { 0 };
    let post_norms = if config.post_norms { 2 * hidden } else { 0 };
    weights += 4 * (hidden + s.layers * (2 * hidden + bias + qk_norms + post_norms)) as u64;
    // The activations from the engine's own shape plan, for steps of at most the default chunk.
    let plan = StepPlan::new(
        config,
        config.shape.max_ctx.max(1),
        GpuOptions::default().max_chunk,
    )?;
    Footprint::of_counted_weights(config, kv, &plan, weights, largest)
}

fn kernel_variants(caps: &Capabilities) -> [String; 6] {
    let reduction = if caps.has_subgroups() {
        "sub-group built-ins"
    } else if caps.subgroups_qcom {
        "qcom shuffles"
    } else {
        "local-memory tree"
    };
    let mv = MatvecConfig::for_caps(caps);
    let tile = if mv.x_local_chunks > 0 {
        format!(", x staged in {} chunks", mv.x_local_chunks)
    } else {
        String::new()
    };
    let (decode_kernel, _why) = MatvecConfig::vendor_choice(caps);
    let loads = if decode_kernel == MatvecVendorKernel::Mali {
        format!(", {} loads", mv.vector_width)
    } else {
        String::new()
    };
    let attention = match decode_attention_choice(caps).0 {
        AttentionKernel::Mali => format!(
            "Mali (no local memory), {} loads",
            VectorWidth::for_caps(caps).0
        ),
        AttentionKernel::WideRows => "wide attn_rows, split when long".to_string(),
        AttentionKernel::Rows => "split attn_rows".to_string(),
        AttentionKernel::Positions => "attn_partial".to_string(),
    };
    [
        format!("{:?}", caps.vendor_family),
        format!("{decode_kernel:?}"),
        attention,
        reduction.to_string(),
        format!(
            "{} items x {} rows{tile}{loads}, {} products",
            mv.work_group,
            mv.rows_per_group,
            if mv.half_math { "f16" } else { "f32" }
        ),
        format!(
            "{} / {}",
            size(caps.local_mem_bytes),
            caps.max_work_group_size
        ),
    ]
}

/// The context tlite would choose for `footprint` on `caps`, with the default budget and step.
fn default_context(
    footprint: &Footprint,
    caps: &Capabilities,
    model_max: usize,
) -> Result<ContextChoice, EngineError> {
    let defaults = GpuOptions::default();
    let device = DeviceMemory {
        device: caps.display_name(),
        global_mem: caps.global_mem_bytes,
        max_alloc: caps.max_alloc_bytes,
    };
    let request = ContextRequest {
        requested: None,
        model_max,
        max_chunk: defaults.max_chunk,
        budget: defaults.mem_budget,
    };
    choose_context(footprint, &device, &request)
}

fn reason(choice: &ContextChoice) -> &'static str {
    match choice.reason {
        ContextReason::Requested => "as asked",
        ContextReason::ModelMaximum => "model maximum",
        ContextReason::Budget => "memory budget",
        ContextReason::MaxAllocation => "largest allocation",
    }
}

fn profile_error(e: ProfileError) -> EngineError {
    EngineError::InvalidOption(e.to_string())
}

/// The two README tables: kernel variants per profile, and the memory plan per profile and model.
pub fn phone_plan_markdown() -> Result<String, EngineError> {
    let profiles = DeviceProfile::bundled().map_err(profile_error)?;
    let models = plan_models();
    let mut out = String::new();
    let w = &mut out;
    // `write!` into a String cannot fail.
    let _ = writeln!(
        w,
        "| profile | vendor path | decode mat-vec | decode attention | reductions | mat-vec work-group (GPU kernels) | \
         local memory / max work-group |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    for p in &profiles {
        let caps = p.as_device().map_err(profile_error)?;
        let [vendor, decode, attention, reduction, mv, limits] = kernel_variants(&caps);
        let _ = writeln!(
            w,
            "| {} | {vendor} | {decode} | {attention} | {reduction} | {mv} | {limits} |",
            p.name
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "| profile | model | context (why) | weights | KV cache | activations | total of budget | embedding buffers |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for p in &profiles {
        let caps = p.as_device().map_err(profile_error)?;
        let limits = SplitLimits {
            max_alloc_bytes: caps.max_alloc_bytes,
            base_addr_align_bits: caps.base_addr_align_bits,
        };
        for m in &models {
            let s = &m.config.shape;
            let footprint = footprint_of_shapes(&m.config, KvDtype::F16)?;
            let name = if m.note.is_some() {
                format!("{} (see below)", m.name)
            } else {
                m.name.to_string()
            };
            let parts = RowSplit::plan(s.vocab, 2 * s.hidden as u64, limits)
                .map_or_else(|e| e.to_string(), |r| r.parts().len().to_string());
            match default_context(&footprint, &caps, s.max_ctx) {
                Ok(c) => {
                    let _ = writeln!(
                        w,
                        "| {} | {name} | {} ({}) | {} | {} | {} | {} of {} | {parts} |",
                        p.name,
                        c.ctx,
                        reason(&c),
                        size(c.needs.weights),
                        size(c.needs.kv_cache),
                        size(c.needs.activations),
                        size(c.needs.total()),
                        c.budget_bytes.map_or("unknown".into(), size),
                    );
                }
                // The engine's error says the same with advice; the table keeps the numbers.
                Err(_) => {
                    let budget = GpuOptions::default()
                        .mem_budget
                        .bytes(caps.global_mem_bytes)
                        .map_or("unknown".into(), size);
                    let _ = writeln!(
                        w,
                        "| {} | {name} | does not fit | {} | | | {} at 1 token, over {budget} | {parts} |",
                        p.name,
                        size(footprint.weights),
                        size(footprint.needs(1, 1).total()),
                    );
                }
            }
        }
    }
    let _ = writeln!(w);
    for m in &models {
        if let Some(note) = m.note {
            let _ = writeln!(w, "- {}: {note}.", m.name);
        }
    }
    Ok(out)
}
