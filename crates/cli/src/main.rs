//! The `nin` command-line tool.
fn main() {}
