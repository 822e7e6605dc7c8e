//! The exit codes of `nin`, so that a script or a sweep can tell a typo from a diverged run from
//! an interrupted one (documented in the README).

use std::fmt;

/// Success.
pub const SUCCESS: u8 = 0;
/// Bad usage or input: a flag, a file, a model directory, a dataset; or any other failure.
pub const ERROR: u8 = 2;
/// Training stopped because the loss or a weight became NaN or infinite (the last good
/// checkpoint is intact).
pub const DIVERGED: u8 = 3;
/// Stopped by Ctrl-C or SIGTERM after saving a checkpoint: `--resume` continues (128 + SIGINT,
/// as shells report an interrupted command).
pub const INTERRUPTED: u8 = 130;

/// A run that stopped on a signal after saving its checkpoint; the message says how to continue.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// The exit code for `err`.
pub fn code_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<Interrupted>() {
            return INTERRUPTED;
        }
        if let Some(
            nin_train::Error::NonFiniteLoss { .. } | nin_train::Error::NonFiniteWeights { .. },
        ) = cause.downcast_ref::<nin_train::Error>()
        {
            return DIVERGED;
        }
    }
    ERROR
}
