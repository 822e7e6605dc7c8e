//! The one error type of the layers crate, so callers can match on what went wrong.

/// Errors raised by layer construction and the custom ops.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A layer configuration field is out of its valid range.
    #[error("invalid {layer} config: `{field}` {problem}")]
    InvalidConfig {
        /// The layer kind, e.g. `pool2d`.
        layer: &'static str,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it, e.g. `must be at most kernel/2 (= 1), got 2`.
        problem: String,
    },
    /// A tensor reached a layer with a shape it cannot take.
    #[error("{op}: expected {expected}, got shape {got:?}")]
    BadShape {
        /// The op or layer that refused the tensor.
        op: &'static str,
        /// What was expected, in words.
        expected: &'static str,
        /// The shape that arrived.
        got: Vec<usize>,
    },
    /// A weights file is not a valid safetensors file.
    #[error("{}: not a valid safetensors file", path.display())]
    Safetensors {
        /// The file.
        path: std::path::PathBuf,
        /// What the parser found.
        source: safetensors::SafeTensorError,
    },
    /// A weights file lacks a tensor the model needs.
    #[error("{}: tensor `{name}` is missing", file.display())]
    MissingTensor {
        /// The weights file.
        file: std::path::PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A weights file holds a tensor the model does not know.
    #[error("{}: unexpected tensor `{name}` (not in the model)", file.display())]
    UnexpectedTensor {
        /// The weights file.
        file: std::path::PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A tensor of a weights file cannot be a weight: integers, NaN, a name given twice.
    #[error("{}: tensor `{name}` {problem}", file.display())]
    BadTensor {
        /// The weights file.
        file: std::path::PathBuf,
        /// The tensor name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A tensor of a weights file has the wrong shape.
    #[error("{}: tensor `{name}`: expected shape {expected:?}, got {got:?}", file.display())]
    ShapeMismatch {
        /// The weights file.
        file: std::path::PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// Reading or writing a file failed.
    #[error(transparent)]
    Format(#[from] nin_format::Error),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with the layers crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}
