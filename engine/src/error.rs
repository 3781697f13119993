//! The engine's error type.

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A model file or folder is malformed or inconsistent.
    #[error("model: {0}")]
    Model(String),
}
