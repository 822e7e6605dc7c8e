//! `cargo xtask sweep`: comparative training sweeps. A plan (TOML) expands into runs; each run is
//! one `nin train` process writing its own run folder under `runs/<sweep>/<run-id>/`, started
//! locally (`--jobs N`) or as a SLURM array task; `status` and `report` read the run folders.
//!
//! The sweep folder holds `sweep.json` (the expanded plan, the zoo's sizes and the SLURM jobs
//! submitted), `recipes/<run-id>.json` (each run's resolved recipe), one run folder per run (with
//! `stdout.log`, `stderr.log` and `sweep_run.json` beside nin's files), and after `report`,
//! `results.csv`, `report.md` and `charts/`.

pub mod charts;
pub mod local;
pub mod plan;
pub mod report;
pub mod runner;
pub mod slurm;
pub mod status;
mod sys;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use plan::Plan;

/// The sweep's manifest in its folder.
pub const MANIFEST_JSON: &str = "sweep.json";
/// The resolved recipes, one JSON file per run.
pub const RECIPES_DIR: &str = "recipes";

/// One zoo preset as `nin list --json` describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZooEntry {
    /// Preset name.
    pub name: String,
    /// Family (`nin`, `drnin`, …): one colour per family in the charts.
    pub family: String,
    /// Parameters with 10 classes.
    pub params_cifar10: u64,
    /// Parameters with 100 classes.
    pub params_cifar100: u64,
    /// Multiply-accumulates per 32×32 image (10 classes).
    pub macs_per_image_cifar10: u64,
}

/// One `sbatch` submission.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlurmJob {
    /// The array job id.
    pub job_id: String,
    /// The run indices it holds.
    pub indices: Vec<usize>,
    /// Unix time of submission.
    pub submitted_unix: u64,
}

/// `sweep.json`: what the sweep is, so that `status`, `report` and SLURM tasks need only the
/// sweep folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The expanded plan.
    pub plan: Plan,
    /// The `nin` binary the runs use.
    pub nin: PathBuf,
    /// The zoo's presets, from `nin list --json` when the sweep was started.
    pub zoo: Vec<ZooEntry>,
    /// Every SLURM submission, oldest first.
    #[serde(default)]
    pub slurm_jobs: Vec<SlurmJob>,
}

impl Manifest {
    /// Reads the manifest of the sweep folder `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(MANIFEST_JSON);
        if !path.is_file() {
            bail!(
                "{} is not a sweep folder (no {MANIFEST_JSON}): start one with `cargo xtask sweep run PLAN`",
                dir.display()
            );
        }
        nin_format::read_json(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Writes it atomically into `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        nin_format::write_json(&dir.join(MANIFEST_JSON), self)
            .with_context(|| format!("writing the sweep manifest in {}", dir.display()))
    }

    /// The zoo entry of preset `name`.
    pub fn zoo_entry(&self, name: &str) -> Option<&ZooEntry> {
        self.zoo.iter().find(|z| z.name == name)
    }
}

/// The zoo's presets, from `nin list --json`.
pub fn zoo(nin: &Path) -> anyhow::Result<Vec<ZooEntry>> {
    let out = Command::new(nin)
        .args(["list", "--json"])
        .output()
        .with_context(|| format!("running {} list --json", nin.display()))?;
    if !out.status.success() {
        bail!(
            "{} list --json failed: {}",
            nin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading the output of {} list --json", nin.display()))
}

/// The sweep folder of a sweep name or path: an existing folder as given, else
/// `<runs>/<name>`.
pub fn sweep_dir(runs: &Path, sweep: &str) -> PathBuf {
    let as_path = Path::new(sweep);
    if as_path.join(MANIFEST_JSON).is_file() {
        as_path.to_path_buf()
    } else {
        runs.join(sweep)
    }
}

/// Creates the sweep folder (refusing a folder it cannot write, before any run starts), writes
/// the manifest (keeping earlier SLURM submissions) and every run's recipe file.
pub fn prepare(
    dir: &Path,
    plan: &Plan,
    nin: &Path,
    zoo: Vec<ZooEntry>,
) -> anyhow::Result<Manifest> {
    std::fs::create_dir_all(dir.join(RECIPES_DIR)).with_context(|| {
        format!(
            "the runs folder {} cannot be created or written (read-only?)",
            dir.display()
        )
    })?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("the sweep folder {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    let slurm_jobs = match Manifest::load(dir) {
        Ok(old) => old.slurm_jobs,
        Err(_) => Vec::new(),
    };
    let manifest = Manifest {
        plan: plan.clone(),
        nin: nin.to_path_buf(),
        zoo,
        slurm_jobs,
    };
    for run in &plan.runs {
        nin_format::write_json(&recipe_file(dir, &run.id), &run.recipe)
            .with_context(|| format!("writing the recipe of run {}", run.id))?;
    }
    manifest.save(dir)?;
    Ok(manifest)
}

/// The resolved recipe file of run `id`.
pub fn recipe_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(RECIPES_DIR).join(format!("{id}.json"))
}

/// Cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
