//! MODEL arguments: every subcommand that reads a trained model accepts a local model directory,
//! a pretrained tag (`nin_bn.cifar10`) or `hf-hub:owner/name[@revision]`, resolved here to a
//! local model directory (downloads show a progress bar on stderr).

use std::io::IsTerminal;

pub use nin_zoo::ResolvedModel;

/// Resolves `spec` to a local model directory and a description of its origin for `run.json`
/// and model cards. `offline` (or `HF_HUB_OFFLINE=1`) reads Hub models from the cache only.
/// The Hub's settings come from the environment (`HF_ENDPOINT`, `HF_HOME`/`HF_HUB_CACHE`,
/// `HF_TOKEN`). Errors name `spec` (and, for the Hub, the repository and file).
pub fn resolve_model(spec: &str, offline: bool) -> anyhow::Result<ResolvedModel> {
    let opts = nin_zoo::ResolveOptions::from_env(offline)?;
    let mut bar = HubDownloadBar::default();
    Ok(nin_zoo::resolve_model_spec(spec, &opts, &mut bar)?)
}

/// A download from the Hub: a bar on a terminal, else one line per file, on stderr.
#[derive(Default)]
struct HubDownloadBar {
    bar: Option<indicatif::ProgressBar>,
}

impl nin_zoo::DownloadProgress for HubDownloadBar {
    fn start(&mut self, repo: &str, file: &str, total: u64) {
        if !std::io::stderr().is_terminal() {
            eprintln!("downloading {file} ({total} bytes) from {repo}");
            return;
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("{repo} {file}"));
        self.bar = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}
