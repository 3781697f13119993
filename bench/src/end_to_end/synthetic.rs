//! [`synthetic_model`]: a model of real shapes with random M0E4 weights (no tokenizer, no file), so
//! `tlite bench` measures a 7B decoder without downloading one.

use engine::model::{LayerWeights, Model, ModelConfig, ModelWeights, Tensor};
use engine::EngineError;
use fp4::{GroupSize, M0e4Matrix, MatrixShape};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;

fn random_m0e4(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    group: GroupSize,
) -> Result<Tensor, EngineError> {
    let mut codes = vec![0u8; rows * cols / 2];
    rng.fill_bytes(&mut codes);
    let groups = rows * (cols / group.len());
    // w = s·(h − 1.5): zero-centred weights of magnitude ~s/2, small enough that activations stay finite.
    let scales: Vec<f16> = (0..groups)
        .map(|_| f16::from_f32(0.02 * (0.5 + rng.random::<f32>())))
        .collect();
    let offsets: Vec<f16> = scales
        .iter()
        .map(|s| f16::from_f32(-1.5 * s.to_f32()))
        .collect();
    Ok(Tensor::m0e4(M0e4Matrix::from_parts(
        MatrixShape::new(rows, cols),
        group,
        codes,
        scales,
        offsets,
    )?))
}

fn random_f16(rng: &mut StdRng, shape: Vec<usize>, amplitude: f32) -> Result<Tensor, EngineError> {
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| f16::from_f32(amplitude * (rng.random::<f32>() * 2.0 - 1.0)))
        .collect();
    Tensor::f16(shape, v)
}

fn vector(n: usize, value: f32) -> Result<Tensor, EngineError> {
    Tensor::f32(vec![n], vec![value; n])
}

/// A random RMSNorm weight that scales by 0.9 to 1.1, so the norms the architecture adds (q/k, post) keep
/// activations at the size the other layers expect; stored as `w - 1` where the model norms by `1 + w` (Gemma).
fn norm_weight(rng: &mut StdRng, n: usize, plus_one: bool) -> Result<Tensor, EngineError> {
    let stored = if plus_one { 0.0 } else { 1.0 };
    Tensor::f32(
        vec![n],
        (0..n)
            .map(|_| stored + 0.2 * (rng.random::<f32>() - 0.5))
            .collect(),
    )
}

/// A model of `config`'s shapes with random M0E4 linear layers (group `group`), an f16 embedding, and an f16
/// output head unless `m0e4_head` (a tied head is the embedding, so it stays f16 either way). Matrices whose input
/// width is not a multiple of the group stay f16, as the loader does. The norms `config` asks for beyond the two
/// per layer (Qwen3's and Gemma 3's q/k norms, Gemma 2 and 3's post norms) are there, random near a scale of 1.
pub fn synthetic_model(
    config: &ModelConfig,
    group: GroupSize,
    seed: u64,
    m0e4_head: bool,
) -> Result<Model, EngineError> {
    config.validate()?;
    let c = config;
    let matrix = |rng: &mut StdRng, rows: usize, cols: usize| {
        if cols.is_multiple_of(group.len()) {
            random_m0e4(rng, rows, cols, group)
        } else {
            random_f16(rng, vec![rows, cols], 0.01)
        }
    };
    let layers = (0..c.shape.layers)
        .into_par_iter()
        .map(|i| {
            let mut rng =
                StdRng::seed_from_u64(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let bias = |rng: &mut StdRng, n: usize| -> Result<Option<Tensor>, EngineError> {
                if c.qkv_bias {
                    Ok(Some(Tensor::f32(
                        vec![n],
                        (0..n).map(|_| 0.01 * rng.random::<f32>()).collect(),
                    )?))
                } else {
                    Ok(None)
                }
            };
            let optional_norm = |rng: &mut StdRng, wanted: bool, n: usize| {
                wanted
                    .then(|| norm_weight(rng, n, c.norm_plus_one))
                    .transpose()
            };
            let hd = c.shape.head_dim;
            let q_norm = optional_norm(&mut rng, c.qk_norm, hd)?;
            let k_norm = optional_norm(&mut rng, c.qk_norm, hd)?;
            let post_attn_norm = optional_norm(&mut rng, c.post_norms, c.shape.hidden)?;
            let post_ffn_norm = optional_norm(&mut rng, c.post_norms, c.shape.hidden)?;
            Ok(LayerWeights {
                attn_norm: vector(c.shape.hidden, 1.0)?,
                wq: matrix(&mut rng, c.shape.q_dim(), c.shape.hidden)?,
                wk: matrix(&mut rng, c.shape.kv_dim(), c.shape.hidden)?,
                wv: matrix(&mut rng, c.shape.kv_dim(), c.shape.hidden)?,
                wo: matrix(&mut rng, c.shape.hidden, c.shape.q_dim())?,
                bq: bias(&mut rng, c.shape.q_dim())?,
                bk: bias(&mut rng, c.shape.kv_dim())?,
                bv: bias(&mut rng, c.shape.kv_dim())?,
                ffn_norm: vector(c.shape.hidden, 1.0)?,
                w_gate: matrix(&mut rng, c.shape.ffn, c.shape.hidden)?,
                w_up: matrix(&mut rng, c.shape.ffn, c.shape.hidden)?,
                w_down: matrix(&mut rng, c.shape.hidden, c.shape.ffn)?,
                q_norm,
                k_norm,
                post_attn_norm,
                post_ffn_norm,
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let embedding = random_f16(&mut rng, vec![c.shape.vocab, c.shape.hidden], 1.0)?;
    let lm_head = match (c.tied_embeddings, m0e4_head) {
        (true, _) => None,
        (false, true) => Some(matrix(&mut rng, c.shape.vocab, c.shape.hidden)?),
        (false, false) => Some(random_f16(
            &mut rng,
            vec![c.shape.vocab, c.shape.hidden],
            0.02,
        )?),
    };
    Ok(Model {
        config: config.clone(),
        weights: ModelWeights {
            embedding,
            layers,
            final_norm: vector(c.shape.hidden, 1.0)?,
            lm_head,
        },
    })
}
