//! [`Session::save_to`] and [`Session::resume_from`]: a chat and its KV cache to a file and back.

use std::path::{Path, PathBuf};

use super::{
    write_session, ModelIdentity, SessionContents, SessionFileError, SessionHeader, SessionReader,
    WeightsIdentity,
};
use crate::generate::LanguageModel;
use crate::gpu::KvImageShape;
use crate::model::ModelConfig;
use crate::session::Session;
use crate::EngineError;

/// What [`Session::save_to`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    /// Positions of the KV cache saved.
    pub positions: usize,
    /// Size of the file.
    pub bytes: u64,
}

/// What [`Session::resume_from`] restored.
#[derive(Debug)]
pub enum Resumed {
    /// The conversation and its KV cache: the next turn prefills only its new message.
    Cache {
        /// Positions restored into the cache.
        positions: usize,
        /// Messages of the conversation.
        messages: usize,
    },
    /// Only the conversation: its cache could not be used (`reason` says why), so the next turn prefills the
    /// whole conversation again. The cache is left empty, never partly restored.
    Conversation {
        /// Messages of the conversation.
        messages: usize,
        /// Why the cache was not used.
        reason: SessionFileError,
    },
}

/// A cache's type and shape in words, for messages.
fn describe(kv: &KvImageShape) -> String {
    format!(
        "{} layers x {} KV heads x {} dims in {}",
        kv.layers, kv.kv_heads, kv.head_dim, kv.dtype
    )
}

/// What the model's identity is computed from, owned, so it can be computed on another thread.
struct IdentityInputs {
    model_path: PathBuf,
    config: ModelConfig,
    tokenizer: PathBuf,
    weights: WeightsIdentity,
}

impl IdentityInputs {
    fn compute(&self) -> Result<ModelIdentity, EngineError> {
        ModelIdentity::of(
            &self.model_path,
            &self.config,
            &self.tokenizer,
            self.weights,
        )
    }
}

impl Session {
    /// The identity of the loaded model (see [`ModelIdentity`]); computed once per load, on first use.
    pub fn model_identity(&self) -> Result<ModelIdentity, EngineError> {
        if let Some(id) = self.identity.get() {
            return Ok(*id);
        }
        let id = self.identity_inputs().compute()?;
        Ok(*self.identity.get_or_init(|| id))
    }

    /// Forgets the computed identity, so the next use computes it again: after the model's files changed on disk,
    /// or to measure what a freshly started process pays.
    pub fn forget_model_identity(&mut self) {
        self.identity = std::sync::OnceLock::new();
    }

    fn identity_inputs(&self) -> IdentityInputs {
        IdentityInputs {
            model_path: self.model_path.clone(),
            config: self.generator.model().config().clone(),
            tokenizer: self.generator.codec().source().to_path_buf(),
            weights: self.weights,
        }
    }

    /// Saves the conversation, the token ids in the KV cache and the cache itself (only its used positions) to
    /// `path`, atomically: a crash leaves the previous file or the new one.
    pub fn save_to(&self, path: &Path) -> Result<Saved, SessionFileError> {
        let identity = self.model_identity()?;
        let (kv, data) = self.generator.model().read_kv()?;
        let model_name = self
            .model_path
            .file_name()
            .unwrap_or(self.model_path.as_os_str())
            .to_string_lossy();
        let bytes = write_session(
            path,
            &SessionContents {
                identity,
                model_name: &model_name,
                kv,
                tokens: self.generator.cached_tokens(),
                messages: self.history(),
                forgotten: self.forgotten,
                shifted_out: self.generator.shifted_out(),
            },
            &data,
        )?;
        Ok(Saved {
            positions: kv.positions,
            bytes,
        })
    }

    /// Restores a session saved by [`Session::save_to`]: the conversation always, when its header is intact; the
    /// KV cache only when it was computed by this model (same [`ModelIdentity`]), has this cache's element type
    /// and shape, fits this run's context and passes its checksums. Otherwise the conversation alone is restored
    /// ([`Resumed::Conversation`], saying why) and the next turn prefills it again: a cache is never used unless
    /// every check passed.
    ///
    /// An error means nothing could be read (not a session file, another format version, a damaged header): the
    /// session is left as it was.
    pub fn resume_from(&mut self, path: &Path) -> Result<Resumed, SessionFileError> {
        let reader = SessionReader::open(path)?;
        let restored = self.restore_cache(path, &reader);
        let header = reader.into_header();
        let messages = header.messages.len();
        self.set_history(header.messages);
        self.forgotten = header.forgotten;
        match restored {
            Ok(()) => Ok(Resumed::Cache {
                positions: header.kv.positions,
                messages,
            }),
            Err(reason) => {
                self.generator.reset()?;
                Ok(Resumed::Conversation { messages, reason })
            }
        }
    }

    /// Checks that the saved cache applies to this model and run, then places it in the cache. The model's
    /// identity, when not known yet, is computed while the cache is mapped and verified: both read files, and
    /// a resuming process would otherwise wait for one, then the other.
    fn restore_cache(
        &mut self,
        path: &Path,
        reader: &SessionReader,
    ) -> Result<(), SessionFileError> {
        let pending = self
            .identity
            .get()
            .is_none()
            .then(|| self.identity_inputs());
        let (identity, kv) = std::thread::scope(|scope| {
            let job = pending.map(|inputs| scope.spawn(move || inputs.compute()));
            let kv = reader.read_kv();
            let identity = match job {
                Some(job) => job.join().unwrap_or_else(|_| {
                    Err(EngineError::Model(
                        "computing the model identity panicked".into(),
                    ))
                }),
                None => self.model_identity(),
            };
            (identity, kv)
        });
        let current = match identity {
            Ok(id) => *self.identity.get_or_init(|| id),
            Err(e) => return Err(e.into()),
        };
        let header: &SessionHeader = reader.header();
        if header.identity != current {
            return Err(SessionFileError::OtherModel {
                path: path.to_path_buf(),
                saved_with: header.model_name.clone(),
                saved: header.identity.short(),
                current: current.short(),
            });
        }
        let model = self.generator.model();
        let shape = header.kv;
        // Where the sliding-window layers' positions start is the cache's to check (`write_kv`), not a layout.
        let own = KvImageShape {
            local_from: shape.local_from,
            ..model.kv_image_shape(shape.positions)
        };
        if own != shape {
            return Err(SessionFileError::KvLayout {
                path: path.to_path_buf(),
                saved: describe(&shape),
                current: describe(&own),
            });
        }
        if shape.positions > model.context_len() {
            return Err(SessionFileError::ContextTooSmall {
                path: path.to_path_buf(),
                positions: shape.positions,
                context: model.context_len(),
            });
        }
        let vocab = model.config().shape.vocab;
        let dropped = header.shifted_out.dropped().map_or(&[][..], |(_, t)| t);
        if let Some(&id) = header
            .tokens
            .iter()
            .chain(dropped)
            .find(|&&id| id as usize >= vocab)
        {
            return Err(SessionFileError::BadHeader {
                path: path.to_path_buf(),
                message: format!("token id {id} is outside the vocabulary of {vocab} tokens"),
            });
        }
        let kv = kv?;
        self.generator.reset()?;
        self.generator.model_mut().write_kv(&shape, &kv)?;
        self.generator
            .adopt_cached(header.tokens.clone(), header.shifted_out.clone())?;
        Ok(())
    }
}
