//! [`Session::save_to`] and [`Session::resume_from`]: a chat and its KV cache to a file and back.

use std::path::Path;

use super::{
    write_session, ModelIdentity, SessionContents, SessionFileError, SessionHeader, SessionReader,
};
use crate::generate::LanguageModel;
use crate::gpu::KvImageShape;
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

impl Session {
    /// The identity of the loaded model (see [`ModelIdentity`]); computed once per load, on first use.
    pub fn model_identity(&self) -> Result<ModelIdentity, EngineError> {
        if let Some(id) = self.identity.get() {
            return Ok(*id);
        }
        let id = ModelIdentity::of(
            &self.model_path,
            self.generator.model().config(),
            self.generator.codec().source(),
            self.weights,
        )?;
        Ok(*self.identity.get_or_init(|| id))
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
        let mut reader = SessionReader::open(path)?;
        let restored = self.restore_cache(path, &mut reader);
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

    /// Checks that the saved cache applies to this model and run, then reads it and places it in the cache.
    fn restore_cache(
        &mut self,
        path: &Path,
        reader: &mut SessionReader,
    ) -> Result<(), SessionFileError> {
        let header: &SessionHeader = reader.header();
        let current = self.model_identity()?;
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
        let own = model.kv_image_shape(shape.positions);
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
        let vocab = model.config().vocab;
        if let Some(&id) = header.tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(SessionFileError::BadHeader {
                path: path.to_path_buf(),
                message: format!("token id {id} is outside the vocabulary of {vocab} tokens"),
            });
        }
        let tokens = header.tokens.clone();
        let data = reader.read_kv()?;
        self.generator.reset()?;
        self.generator.model_mut().write_kv(&shape, &data)?;
        self.generator.adopt_cached(tokens)?;
        Ok(())
    }
}
