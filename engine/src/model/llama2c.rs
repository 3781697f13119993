//! llama2.c checkpoints (`model.bin`): a 7×i32 header, then every weight in f32, classifier tied unless the
//! header's vocab size is negative.

use super::convert::{matrix, vector, MatrixRole, Source};
use super::{
    Activation, Architecture, LayerWeights, LoadOptions, Model, ModelConfig, ModelShape,
    ModelWeights, RopeStyle,
};
use crate::EngineError;
use std::path::Path;

const HEADER_BYTES: usize = 7 * 4;

/// The header of a llama2.c checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Llama2cHeader {
    /// Residual width.
    pub dim: usize,
    /// MLP width.
    pub hidden_dim: usize,
    /// Layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum context.
    pub seq_len: usize,
    /// True when the file carries its own classifier (negative vocab size in the file).
    pub untied: bool,
}

impl Llama2cHeader {
    /// Parses and sanity-checks the 28-byte header.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, EngineError> {
        let head = bytes
            .get(..HEADER_BYTES)
            .ok_or_else(|| EngineError::Truncated {
                path: path.to_path_buf(),
                message: format!(
                    "{} bytes is shorter than the {HEADER_BYTES}-byte llama2.c header",
                    bytes.len()
                ),
            })?;
        let f: Vec<i32> = head
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let names = [
            "dim",
            "hidden_dim",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "vocab_size",
            "seq_len",
        ];
        let mut v = [0usize; 7];
        for (i, (&x, name)) in f.iter().zip(names).enumerate() {
            let a = if i == 5 {
                x.unsigned_abs() as i64
            } else {
                i64::from(x)
            };
            if a <= 0 || a > 1 << 24 {
                return Err(EngineError::InvalidConfig(format!(
                    "{}: llama2.c header field {name} = {x} is not a plausible size",
                    path.display()
                )));
            }
            v[i] = a as usize;
        }
        Ok(Self {
            dim: v[0],
            hidden_dim: v[1],
            n_layers: v[2],
            n_heads: v[3],
            n_kv_heads: v[4],
            vocab_size: v[5],
            seq_len: v[6],
            untied: f[5] < 0,
        })
    }

    /// The model configuration the header implies (llama2.c conventions: interleaved rotary, theta 1e4, eps 1e-5).
    pub fn config(&self, path: &Path) -> Result<ModelConfig, EngineError> {
        if !self.dim.is_multiple_of(self.n_heads) {
            return Err(EngineError::InvalidConfig(format!(
                "{}: n_heads {} does not divide dim {}",
                path.display(),
                self.n_heads,
                self.dim
            )));
        }
        let cfg = ModelConfig {
            arch: Architecture::Llama,
            shape: ModelShape {
                hidden: self.dim,
                ffn: self.hidden_dim,
                layers: self.n_layers,
                heads: self.n_heads,
                kv_heads: self.n_kv_heads,
                head_dim: self.dim / self.n_heads,
                vocab: self.vocab_size,
                max_ctx: self.seq_len,
            },
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_style: RopeStyle::Interleaved,
            rope_scaling: None,
            partial_rotary: 1.0,
            tied_embeddings: !self.untied,
            qkv_bias: false,
            activation: Activation::Silu,
            norm_plus_one: false,
            embed_scale: None,
            // SentencePiece ids: 1 = <s>. llama2.c stops on BOS (it delimits stories in training) as well as </s>.
            bos: (self.vocab_size > 1).then_some(1),
            eos: if self.vocab_size > 2 {
                vec![2, 1]
            } else {
                Vec::new()
            },
            qk_norm: false,
            post_norms: false,
            query_pre_attn_scalar: None,
            attn_softcap: None,
            final_softcap: None,
            sliding_window: None,
            rope_local_theta: None,
            nope_layers: Vec::new(),
        };
        cfg.validate_in(path)?;
        Ok(cfg)
    }

    /// Number of f32 values after the header that this header announces; `None` when that count overflows.
    pub fn expected_floats(&self) -> Option<usize> {
        let (d, h, l, v, s) = (
            self.dim,
            self.hidden_dim,
            self.n_layers,
            self.vocab_size,
            self.seq_len,
        );
        let head_size = d.checked_div(self.n_heads)?;
        let kv = self.n_kv_heads.checked_mul(head_size)?;
        let mul = |a: usize, b: usize| a.checked_mul(b);
        let dd = mul(d, d)?;
        let per_layer = [d, dd, mul(2, mul(kv, d)?)?, dd, d, mul(3, mul(h, d)?)?]
            .into_iter()
            .try_fold(0usize, usize::checked_add)?;
        let vd = mul(v, d)?;
        [
            vd,
            mul(l, per_layer)?,
            d,
            mul(s, head_size)?,
            if self.untied { vd } else { 0 },
        ]
        .into_iter()
        .try_fold(0usize, usize::checked_add)
    }

    /// Bytes of a file with this header (header included); an error naming the file when that overflows.
    fn expected_bytes(&self, path: &Path) -> Result<usize, EngineError> {
        self.expected_floats()
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(HEADER_BYTES))
            .ok_or_else(|| {
                EngineError::InvalidConfig(format!(
                    "{}: the llama2.c header announces more weights than can be addressed (dim {}, hidden_dim \
                     {}, n_layers {}, n_heads {}, n_kv_heads {}, vocab_size {}, seq_len {})",
                    path.display(),
                    self.dim,
                    self.hidden_dim,
                    self.n_layers,
                    self.n_heads,
                    self.n_kv_heads,
                    self.vocab_size,
                    self.seq_len
                ))
            })
    }
}

/// A cursor over the f32 payload that names each tensor it hands out.
struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, name: &str, n: usize) -> Result<Vec<f32>, EngineError> {
        let end = n
            .checked_mul(4)
            .and_then(|b| b.checked_add(self.pos))
            .unwrap_or(usize::MAX);
        let b = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| EngineError::Truncated {
                path: self.path.to_path_buf(),
                message: format!(
                    "file ends at byte {} inside tensor `{name}` (needs bytes up to {end})",
                    self.bytes.len()
                ),
            })?;
        self.pos = end;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// `layers` consecutive tensors of `per` floats each (llama2.c stores each weight kind for all layers together).
    fn take_layers(
        &mut self,
        name: &str,
        layers: usize,
        per: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        (0..layers)
            .map(|i| self.take(&format!("{name}[{i}]"), per))
            .collect()
    }
}

/// Fills `buf` as far as the file allows (a short file is not an error here; the header parser says what is missing).
pub(crate) fn read_up_to(f: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The error for a file whose size differs from what its header announces.
fn size_mismatch(path: &Path, want: usize, have: u64) -> EngineError {
    if have < want as u64 {
        EngineError::Truncated {
            path: path.to_path_buf(),
            message: format!("the header announces {want} bytes but the file has {have}"),
        }
    } else {
        EngineError::Model(format!(
            "{}: {} trailing bytes after the {want} the llama2.c header announces (wrong format or version?)",
            path.display(),
            have - want as u64
        ))
    }
}

/// Loads a llama2.c checkpoint.
pub(crate) fn load_file(
    path: &Path,
    opts: &LoadOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Model, EngineError> {
    // The size is checked against the header before the file is read, so a wrong file is never read whole.
    let header = {
        let mut head = [0u8; HEADER_BYTES];
        let mut f = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        let n = read_up_to(&mut f, &mut head).map_err(|e| EngineError::io(path, e))?;
        Llama2cHeader::parse(path, &head[..n])?
    };
    let config = header.config(path)?;
    let want = header.expected_bytes(path)?;
    let on_disk = std::fs::metadata(path)
        .map_err(|e| EngineError::io(path, e))?
        .len();
    if on_disk != want as u64 {
        return Err(size_mismatch(path, want, on_disk));
    }
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    if bytes.len() != want {
        return Err(size_mismatch(path, want, bytes.len() as u64));
    }
    let c = &config;
    let (d, kv, hd, l) = (
        c.shape.hidden,
        c.shape.kv_dim(),
        c.shape.ffn,
        c.shape.layers,
    );
    let mut r = Reader {
        path,
        bytes: &bytes,
        pos: HEADER_BYTES,
    };
    let total = l + 2;
    let embedding = r.take("token_embedding", c.shape.vocab * d)?;
    let rms_att = r.take_layers("rms_att", l, d)?;
    let wq = r.take_layers("wq", l, d * d)?;
    let wk = r.take_layers("wk", l, kv * d)?;
    let wv = r.take_layers("wv", l, kv * d)?;
    let wo = r.take_layers("wo", l, d * d)?;
    let rms_ffn = r.take_layers("rms_ffn", l, d)?;
    let w1 = r.take_layers("w1", l, hd * d)?;
    let w2 = r.take_layers("w2", l, d * hd)?;
    let w3 = r.take_layers("w3", l, hd * d)?;
    let rms_final = r.take("rms_final", d)?;
    let _freq_cis = r.take("freq_cis", c.shape.max_ctx * c.shape.head_dim)?;
    let wcls = if header.untied {
        Some(r.take("wcls", c.shape.vocab * d)?)
    } else {
        None
    };

    let embedding = matrix(
        "token_embedding",
        Source::F32(embedding),
        c.shape.vocab,
        d,
        MatrixRole::Embedding,
        opts,
    )?;
    progress(1, total);
    let mut layers = Vec::with_capacity(l);
    let iter = rms_att
        .into_iter()
        .zip(wq)
        .zip(wk)
        .zip(wv)
        .zip(wo)
        .zip(rms_ffn)
        .zip(w1)
        .zip(w2)
        .zip(w3);
    for (i, ((((((((an, q), k), v), o), fnm), g), down), up)) in iter.enumerate() {
        let lin = |n: &str, src: Vec<f32>, rows, cols| {
            matrix(
                &format!("{n}[{i}]"),
                Source::F32(src),
                rows,
                cols,
                MatrixRole::Linear,
                opts,
            )
        };
        layers.push(LayerWeights {
            attn_norm: vector(&format!("rms_att[{i}]"), Source::F32(an), d, opts)?,
            wq: lin("wq", q, d, d)?,
            wk: lin("wk", k, kv, d)?,
            wv: lin("wv", v, kv, d)?,
            wo: lin("wo", o, d, d)?,
            bq: None,
            bk: None,
            bv: None,
            ffn_norm: vector(&format!("rms_ffn[{i}]"), Source::F32(fnm), d, opts)?,
            w_gate: lin("w1", g, hd, d)?,
            w_up: lin("w3", up, hd, d)?,
            w_down: lin("w2", down, d, hd)?,
            q_norm: None,
            k_norm: None,
            post_attn_norm: None,
            post_ffn_norm: None,
        });
        progress(i + 2, total);
    }
    let final_norm = vector("rms_final", Source::F32(rms_final), d, opts)?;
    let lm_head = wcls
        .map(|w| {
            matrix(
                "wcls",
                Source::F32(w),
                c.shape.vocab,
                d,
                MatrixRole::Embedding,
                opts,
            )
        })
        .transpose()?;
    progress(total, total);
    Ok(Model {
        config,
        weights: ModelWeights {
            embedding,
            layers,
            final_norm,
            lm_head,
        },
    })
}
