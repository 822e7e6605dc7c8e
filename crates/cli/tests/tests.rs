//! Integration tests of the `nin` binary, built as one test binary with a module per subcommand.

#![allow(clippy::unwrap_used)]

mod bench;
#[cfg(unix)]
mod crash;
mod data;
mod explain;
mod export;
mod faults;
mod finetune;
mod hostile;
#[cfg(feature = "hub")]
mod hub;
mod lifecycle;
mod pretrained;
mod train;
