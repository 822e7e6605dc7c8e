//! Integration tests of the `nin` binary, built as one test binary with a module per subcommand.

mod data;
