//! Project automation, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! Tasks: `tidy` (repository hygiene checks, also run by `cargo test -p xtask`), `sweep`
//! (comparative training sweeps, locally or on SLURM: see the `sweep` module) and `web` (the
//! browser demo's static page: see the `web` module).
#![deny(unsafe_code)]

mod cli;
mod sweep;
mod web;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}

/// Runs `tidy` and prints its findings.
fn run_tidy() -> ExitCode {
    match tidy(&project_root()) {
        Ok(()) => {
            println!("tidy: ok");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("tidy: {p}");
            }
            ExitCode::from(1)
        }
    }
}

/// The workspace root (the parent of this crate's folder).
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Checks every Rust file of the workspace: it opens with a `//!` comment saying why it exists,
/// no test expects a panic or is marked ignored (see the needles below); every
/// crate appears in docs/ARCHITECTURE.md.
fn tidy(root: &Path) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in ["crates", "models", "xtask", "benches"] {
        collect_rs(&root.join(dir), &mut files);
    }
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            problems.push(format!("{}: unreadable", file.display()));
            continue;
        };
        let rel = file.strip_prefix(root).unwrap_or(file).display();
        if !text.starts_with("//!") && !text.starts_with("/*!") {
            problems.push(format!(
                "{rel}: must open with a `//!` comment saying why it exists"
            ));
        }
        for (needle, why) in [
            (
                concat!("#[should", "_panic"),
                "tests return errors instead of panicking",
            ),
            (
                concat!("#[ig", "nore"),
                "tests skip with a message instead of being ignored",
            ),
        ] {
            if text.contains(needle) {
                problems.push(format!("{rel}: contains {needle}]: {why}"));
            }
        }
    }
    let architecture =
        std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap_or_default();
    for group in ["crates", "models"] {
        let Ok(entries) = std::fs::read_dir(root.join(group)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let needle = format!("{group}/{name}");
            if entry.path().join("Cargo.toml").exists() && !architecture.contains(&needle) {
                problems.push(format!("docs/ARCHITECTURE.md does not describe `{needle}`"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                collect_rs(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_is_tidy() {
        if let Err(problems) = tidy(&project_root()) {
            panic!("tidy found problems:\n{}", problems.join("\n"));
        }
    }
}
