//! The one error type of `nin-data`: every variant names the file or field at fault and what was
//! expected, so a user can fix the input without reading the code.
//!
//! Messages never repeat their cause: an underlying error is the `source`, which a caller prints
//! as the next link of the chain (`anyhow`'s `{:#}`), as in `nin-format`. A `reason` string is
//! what a decoder or client said, already made printable, and is not a `source`.

use std::path::PathBuf;

/// Everything that can go wrong while locating, downloading, reading or batching CIFAR data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on a file or folder.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, e.g. `reading`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file, archive member or decompressed stream larger than any of its kind can be, refused
    /// before it is read into memory.
    #[error("{}: {size} bytes, more than the {limit} bytes a {what} can be", path.display())]
    TooLarge {
        /// The file, or the member as `archive.tar.gz!folder/member`.
        path: PathBuf,
        /// What it should be, e.g. `CIFAR-10 record file`.
        what: &'static str,
        /// Its size (declared, or read so far) in bytes.
        size: u64,
        /// The largest size accepted.
        limit: u64,
    },
    /// A record file whose size is not a whole number of records (truncated or partial record).
    #[error(
        "{}: {size} bytes is not a whole number of {record_size}-byte records \
         ({remainder} bytes of a partial record at the end: the file is truncated or not a CIFAR batch)",
        path.display()
    )]
    PartialRecord {
        /// The record file (an archive member is named `archive.tar.gz!member`).
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The record size of the dataset (3073 or 3074).
        record_size: usize,
        /// `size % record_size`.
        remainder: usize,
    },
    /// A record file holding no record at all.
    #[error("{}: empty record file, expected at least one {record_size}-byte record", path.display())]
    EmptyFile {
        /// The record file.
        path: PathBuf,
        /// The record size of the dataset.
        record_size: usize,
    },
    /// A label byte outside the dataset's classes.
    #[error("{}: record {record}: {kind} label {got} out of range, expected 0..={max}", path.display())]
    LabelOutOfRange {
        /// The record file.
        path: PathBuf,
        /// Index of the record in the file.
        record: usize,
        /// `"class"`, `"coarse"` or `"fine"`.
        kind: &'static str,
        /// The label found.
        got: u8,
        /// The largest valid label.
        max: u8,
    },
    /// The gzip layer of an archive could not be decoded.
    #[error("{}: corrupt or truncated gzip stream: {reason}", path.display())]
    CorruptGzip {
        /// The archive.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The tar layer of an archive could not be read.
    #[error("{}: corrupt tar archive: {reason}", path.display())]
    CorruptTar {
        /// The archive.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// A tar member that could write outside the target folder or is a link.
    #[error("{}: refusing unsafe archive member `{member}`: {reason}", path.display())]
    UnsafeMember {
        /// The archive.
        path: PathBuf,
        /// The member's path as stored.
        member: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An expected member stored twice in one archive (which copy is meant is unknowable).
    #[error("{}: member `{member}` appears more than once", path.display())]
    DuplicateMember {
        /// The archive.
        path: PathBuf,
        /// The member's path inside the archive.
        member: String,
    },
    /// An expected member (record file or label names) is absent.
    #[error("{}: missing member `{member}` of the official {dataset} layout", path.display())]
    MissingMember {
        /// The archive or folder.
        path: PathBuf,
        /// The member that was expected.
        member: String,
        /// The dataset whose layout was expected.
        dataset: crate::Dataset,
    },
    /// No data was found where it was looked for.
    #[error(
        "no {dataset} data at {}: expected `{archive}` or its extracted folder `{folder}` \
         (run `nin data download`, or download `{archive}` from {home} and put it there, or pass --data PATH)",
        path.display()
    )]
    NotFound {
        /// Where it was looked for.
        path: PathBuf,
        /// The dataset.
        dataset: crate::Dataset,
        /// The archive's file name.
        archive: &'static str,
        /// The extracted folder's name.
        folder: &'static str,
        /// The dataset's home page.
        home: &'static str,
    },
    /// A file whose MD5 differs from the one expected.
    #[error("{}: MD5 mismatch: expected {expected}, got {got}", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The expected hex digest.
        expected: String,
        /// The digest found.
        got: String,
    },
    /// A download that failed (offline, HTTP error, connection dropped).
    #[error(
        "downloading {url} failed: {reason}; if this machine is offline, download it elsewhere from {home} \
         and put it at {} (or pass its path with --data)",
        dest.display()
    )]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
        /// Where the file should go.
        dest: PathBuf,
        /// The dataset's home page.
        home: &'static str,
    },
    /// No cache folder could be determined.
    #[error(
        "no cache folder on this platform: set NIN_DATA_DIR to a folder for the CIFAR archives"
    )]
    NoCacheDir,
    /// A configuration value out of its valid range.
    #[error("invalid `{field}`: expected {expected}, got {got}")]
    InvalidConfig {
        /// The field or argument.
        field: &'static str,
        /// What is allowed.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A label-names file that is not UTF-8 text or has the wrong number of names.
    #[error("{}: expected {expected} label names, got {got}", path.display())]
    LabelNames {
        /// The names file.
        path: PathBuf,
        /// Number expected.
        expected: usize,
        /// Number found.
        got: usize,
    },
    /// A saved whitening transform that is missing a tensor or has the wrong shape.
    #[error("{}: whitening tensor `{name}`: expected shape {expected:?}, got {got:?}", path.display())]
    ZcaShape {
        /// The safetensors file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape found (empty when absent).
        got: Vec<usize>,
    },
    /// A whitening file that is not a valid safetensors file, or could not be encoded as one.
    #[error("{}: {reason}", path.display())]
    Whitening {
        /// The safetensors file.
        path: PathBuf,
        /// What the safetensors reader or writer said.
        reason: String,
    },
    /// The eigen-decomposition of the covariance failed.
    #[error("ZCA fit: eigen-decomposition of the {n}x{n} covariance failed: {reason}")]
    Eigen {
        /// Matrix size.
        n: usize,
        /// What faer said.
        reason: String,
    },
    /// Writing or bounded reading through the format crate failed.
    #[error(transparent)]
    Format(#[from] nin_format::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The prefetch thread stopped unexpectedly.
    #[error("the batch prefetch thread stopped unexpectedly")]
    Prefetch,
}

/// The result type of `nin-data`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] on `path` while doing `action`.
    #[cfg(feature = "files")]
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The format crate's errors in this crate's terms: a file too large is this crate's
    /// [`Error::TooLarge`], so callers match one variant whatever read it.
    #[cfg(feature = "files")]
    pub(crate) fn from_format(e: nin_format::Error) -> Self {
        match e {
            nin_format::Error::TooLarge {
                path,
                what,
                size,
                limit,
            } => Error::TooLarge {
                path,
                what,
                size,
                limit,
            },
            other => Error::Format(other),
        }
    }
}

/// Text from inside a file (a member name, a decoder's message quoting one) made safe to print:
/// garbage bytes would otherwise reach the terminal as control characters, or as a screenful.
pub(crate) fn printable(text: &str) -> String {
    const MAX_CHARS: usize = 120;
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() || (c.is_alphanumeric() && !c.is_ascii()) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}
