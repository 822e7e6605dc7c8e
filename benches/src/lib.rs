//! Benchmarks for nin-zoo live in `benches/`; this library only gives them a home package.
#![forbid(unsafe_code)]
