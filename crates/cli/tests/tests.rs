//! Integration tests of the `nin` binary, built as one test binary with a module per subcommand.

#![allow(clippy::unwrap_used)]

mod bench;
mod data;
mod lifecycle;
mod train;
