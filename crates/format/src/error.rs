//! The one error type of the format crate: every variant names the file or field at fault.
//!
//! Messages never repeat their cause: an underlying error is the `source`, which a caller prints
//! as the next link of the chain (`anyhow`'s `{:#}`).

use std::path::PathBuf;

/// Errors reading, writing or checking the on-disk formats.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, e.g. `writing`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("{}: not a valid file of this kind", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying error (it names the line, column and field).
        source: serde_json::Error,
    },
    /// A file is larger than any file of its kind can be.
    #[error("{}: {size} bytes, more than the {limit} bytes a {what} can be", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What kind of file it should be, e.g. `config.json`.
        what: &'static str,
        /// Its size in bytes.
        size: u64,
        /// The largest size accepted.
        limit: u64,
    },
    /// A configuration field is out of range or inconsistent.
    #[error("invalid {what}: `{field}` {problem}")]
    InvalidConfig {
        /// The configuration kind, e.g. `recipe` or `config.json`.
        what: &'static str,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A recipe name that is not one of the named recipes.
    #[error("unknown recipe `{name}`; known recipes: {}", known.join(", "))]
    UnknownRecipe {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<&'static str>,
    },
}

impl Error {
    /// An IO error on `path` while doing `action`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A field of configuration `what` that is out of range.
    pub fn invalid(what: &'static str, field: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidConfig {
            what,
            field,
            problem: problem.into(),
        }
    }
}

/// Result with the format crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
