//! The one error type of the training engine, so the CLI can tell a bad recipe from a diverged
//! run from a damaged checkpoint.

use std::path::PathBuf;

/// Errors raised by the training engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An optimiser state file lacks a tensor that every parameter has once a step was taken.
    #[error(
        "{}: tensor `{name}` is missing, but the optimiser had taken {steps} steps, after which \
         every parameter has it (damaged checkpoint?)", file.display()
    )]
    MissingOptimizerState {
        /// The optimiser state file.
        file: PathBuf,
        /// The tensor name.
        name: String,
        /// The optimiser's step count recorded in the file.
        steps: u64,
    },
    /// A checkpoint tensor holds NaN or infinity, which no saved checkpoint does.
    #[error("{}: tensor `{name}` holds NaN or infinity (damaged checkpoint?)", file.display())]
    NonFiniteTensor {
        /// The checkpoint file.
        file: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// The checkpoint that `trainer_state.json` commits to is absent or disagrees with it.
    #[error("{}: {problem}", dir.display())]
    BadCheckpoint {
        /// The checkpoint folder.
        dir: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A checkpoint file holds a tensor the model or optimiser does not know.
    #[error("{}: unexpected tensor `{name}` (not in the model or optimiser)", file.display())]
    UnexpectedTensor {
        /// The checkpoint file.
        file: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A checkpoint tensor has the wrong shape.
    #[error("{}: tensor `{name}`: expected shape {expected:?}, got {got:?}", file.display())]
    ShapeMismatch {
        /// The checkpoint file.
        file: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the model or optimiser expects.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A checkpoint's metadata is missing a field or disagrees with the rest of the run folder.
    #[error("{}: metadata `{field}`: expected {expected}, got {got}", file.display())]
    BadMetadata {
        /// The checkpoint file.
        file: PathBuf,
        /// The metadata key.
        field: &'static str,
        /// What was expected.
        expected: String,
        /// What the file holds (`nothing` when absent).
        got: String,
    },
    /// A recipe, schedule or run configuration field is out of range.
    #[error("invalid {what}: `{field}` {problem}")]
    InvalidConfig {
        /// The configuration kind, e.g. `schedule`.
        what: &'static str,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A batch from a [`crate::BatchSource`] has the wrong shape or type.
    #[error("batch {batch_idx} of epoch {epoch}: expected {expected}, got {got}")]
    BadBatch {
        /// The epoch (0-based).
        epoch: usize,
        /// The batch index within the epoch.
        batch_idx: usize,
        /// What was expected.
        expected: String,
        /// What arrived.
        got: String,
    },
    /// The loss became NaN or infinite; the run stopped before updating the weights.
    #[error(
        "non-finite loss {loss} at epoch {epoch}, step {step_in_epoch} (global step {global_step}); \
         the run stopped, the last good checkpoint in {} is intact \
         (try a lower learning rate)", run_dir.display()
    )]
    NonFiniteLoss {
        /// The loss value.
        loss: f32,
        /// The epoch (0-based).
        epoch: usize,
        /// The step within the epoch (0-based).
        step_in_epoch: usize,
        /// The step since the start of the run (0-based).
        global_step: usize,
        /// The run folder holding the last good checkpoint.
        run_dir: PathBuf,
    },
    /// A step left a parameter NaN or infinite; the run stopped without checkpointing them.
    #[error(
        "parameter `{name}` became non-finite by global step {global_step}; the run stopped, \
         the last good checkpoint in {} is intact (try a lower learning rate)", run_dir.display()
    )]
    NonFiniteWeights {
        /// The first non-finite parameter, by name.
        name: String,
        /// Steps taken when it was found.
        global_step: usize,
        /// The run folder holding the last good checkpoint.
        run_dir: PathBuf,
    },
    /// `train` was pointed at a folder that already holds a run.
    #[error("{} already holds a run (trainer_state.json exists); resume it or pick another folder", path.display())]
    RunExists {
        /// The run folder.
        path: PathBuf,
    },
    /// `resume` was pointed at a folder with no checkpoint.
    #[error("{} holds no checkpoint to resume (expected {file})", path.display())]
    NoCheckpoint {
        /// The run folder.
        path: PathBuf,
        /// The file that is missing.
        file: &'static str,
    },
    /// The data pipeline failed while producing a batch.
    #[error("data: {0}")]
    Data(Box<dyn std::error::Error + Send + Sync>),
    /// Reading, writing or checking a file of the run folder failed.
    #[error(transparent)]
    Format(#[from] nin_format::Error),
    /// An error from the layers crate.
    #[error(transparent)]
    Layers(#[from] nin_layers::Error),
    /// An error from candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Wraps a data-pipeline error, for [`crate::BatchSource`] implementations.
    pub fn data(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Data(e.into())
    }

    pub(crate) fn invalid(
        what: &'static str,
        field: &'static str,
        problem: impl Into<String>,
    ) -> Self {
        Self::InvalidConfig {
            what,
            field,
            problem: problem.into(),
        }
    }
}

/// Result with the training engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
