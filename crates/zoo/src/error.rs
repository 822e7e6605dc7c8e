//! The zoo's error type: unknown names, bad model arguments, unreadable model directories and
//! images, non-finite answers, model specifications that name nothing, and Hub failures.

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
    /// Reading a file of the model directory failed.
    #[error(transparent)]
    Format(#[from] nin_format::Error),
    /// Reading or applying the model's input transform failed.
    #[error(transparent)]
    Data(#[from] nin_data::Error),
    /// The whitening file a model directory names is missing or damaged.
    #[error("model directory {}: config.json: pretrained_cfg.whitening names {}, which is not a whitening file", dir.display(), path.display())]
    Whitening {
        /// The model directory.
        dir: PathBuf,
        /// The whitening file.
        path: PathBuf,
        /// What is wrong with it (boxed: the data crate's error is large).
        source: Box<nin_data::Error>,
    },
    /// An image could not be read or decoded.
    #[error("{}: {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model produced NaN or infinite outputs (damaged weights or whitening).
    #[error("model directory {}: the model's {what} are not finite (NaN or infinite): its weights or whitening are damaged", dir.display())]
    NonFinite {
        /// The model directory.
        dir: PathBuf,
        /// Which outputs.
        what: &'static str,
    },
    /// A model specification (directory, pretrained tag or `hf-hub:` id) names no model.
    #[error("model `{spec}`: {reason}")]
    ModelSpec {
        /// What the user passed.
        spec: String,
        /// What is wrong, and what would work.
        reason: String,
    },
    /// Fetching a model from the Hugging Face Hub (or its cache) failed. The message names the
    /// repository, the revision and the file; it never holds the access token.
    #[error("{repo}: {}{reason}", file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Hub {
        /// `hf-hub:owner/name@revision`.
        repo: String,
        /// The file, when the failure concerns one.
        file: Option<String>,
        /// What went wrong, and what to do about it.
        reason: String,
    },
    /// A class map, heat map or image handed to [`crate::cam`] has the wrong shape.
    #[error("class activation map: {what}: expected {expected}, got {got}")]
    CamShape {
        /// Which input.
        what: &'static str,
        /// The shape it must have.
        expected: String,
        /// What it had.
        got: String,
    },
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with the zoo's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
