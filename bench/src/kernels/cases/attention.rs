//! Cases of attention: decode at a short and a long context, and a causal prefill.

use clkernels::kernels::attention::{
    Attention, AttentionKernel, AttentionScores, AttentionShape, FreshToken, KvOperand,
};
use clkernels::kernels::rope::{HeadsLayout, RopeConfig, RopeStyle};
use clkernels::kernels::KernelError;
use clkernels::runtime::{DeviceBuffer, Gpu};
use half::f16;
use kvcache::{KvDtype, KvLayout};

use super::Dims;
use crate::kernels::data::{Xorshift, COLD_WORKING_SET};
use crate::kernels::{Case, SuiteOptions};

/// Decode at the context `tlite bench --prompt-len 128 --gen 64` ends with (where latency, not bandwidth,
/// decides) and at a long one. Decode runs as a step does: q, k and v from a fused QKV row, rotated and appended
/// in the launch, over caches cycled like the mat-vec weights so they are read from memory (a step reaches a
/// layer's cache after a whole model's weights have passed through the L2).
pub(super) fn attention(
    gpu: &Gpu,
    opts: &SuiteOptions,
    dims: Dims,
    rng: &mut Xorshift,
    out: &mut Vec<Case>,
) -> Result<(), KernelError> {
    let Dims { hidden, seq, .. } = dims;
    let decode_contexts = if opts.attention_contexts.is_empty() {
        vec![192, if opts.small { 512 } else { 4096 }]
    } else {
        opts.attention_contexts.clone()
    };
    let heads = hidden / 128;
    let (heads, kv_heads, head_dim) = opts.attention_heads.unwrap_or((heads, heads, 128));
    let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
    let attention_cases = decode_contexts
        .iter()
        .map(|&ctx| ("attention_decode", 1, ctx))
        .chain([("attention_prefill", seq, seq)]);
    for (name, q_seq, ctx) in attention_cases {
        if !opts.wants(name) {
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
        let plan = att.plan(&shape, &view, None);
        let kernel = match plan.kernel {
            AttentionKernel::Positions => "positions",
            AttentionKernel::Rows => "rows",
            AttentionKernel::WideRows => "wide rows",
            AttentionKernel::Mali => "mali",
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
                att.enqueue_with_fresh(
                    &q,
                    part(0, heads),
                    fresh,
                    ko,
                    vo,
                    shape,
                    AttentionScores::scaled(0.088),
                    &mut o,
                )
            }),
        });
    }
    Ok(())
}
