//! The zoo's error type: unknown names, bad model arguments, unreadable model directories.

use std::path::PathBuf;

/// Errors of the zoo.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No preset has this name.
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The known names, comma separated.
        known: String,
    },
    /// `model_args` do not describe a valid configuration of the model's family.
    #[error("model `{model}`: invalid model_args: {reason}")]
    BadArgs {
        /// The preset whose family rejected the arguments.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// A model directory's `config.json` or weights are unusable.
    #[error("model directory {}: {reason}", dir.display())]
    ModelDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Layer construction failed.
    #[error(transparent)]
    Layers(#[from] nin_layers::Error),
    /// Reading or writing run files failed.
    #[error(transparent)]
    Train(#[from] nin_train::Error),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with the zoo's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
