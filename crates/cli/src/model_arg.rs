//! Turning a MODEL argument into a local model directory. This version accepts local model
//! directories only; the Hub-aware resolver (registry tags, `hf-hub:owner/name[@rev]`) replaces
//! it with the same signature.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// A MODEL argument resolved to a local model directory.
#[derive(Clone, Debug)]
pub struct ResolvedModel {
    /// The local model directory (`config.json` + `model.safetensors`).
    pub dir: PathBuf,
    /// Where it came from, for records: the canonical local path.
    pub origin: String,
}

/// Resolves `spec` (a local model directory) for reading. `offline` is accepted for the
/// Hub-aware resolver's sake; a local directory never needs the network.
pub fn resolve_model(spec: &str, offline: bool) -> anyhow::Result<ResolvedModel> {
    let _ = offline;
    let dir = PathBuf::from(spec);
    if !dir.is_dir() {
        bail!("{spec}: not a model directory (expected a folder with config.json and model.safetensors)");
    }
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("{spec}: resolving the path"))?;
    Ok(ResolvedModel {
        origin: canonical.display().to_string(),
        dir: canonical,
    })
}
