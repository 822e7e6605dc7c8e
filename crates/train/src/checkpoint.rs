//! Checkpoints that survive a kill at any instant: the order in which one is written, how the
//! committed one is read back, and the clean-up of whatever a kill left behind.
//!
//! The layout and why each instant is safe are documented once, in [`nin_format::files`]. In
//! short: the three files go into a fresh step-named folder, the root weights are refreshed, and
//! only then does the root `trainer_state.json` (the commit) name the new folder.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use nin_format::files::{
    BEST_DIR, CHECKPOINTS_DIR, CHECKPOINT_PREFIX, MODEL_SAFETENSORS, OPTIMIZER_SAFETENSORS,
    TRAINER_STATE_JSON,
};
use nin_format::{
    create_dir, read_bounded, read_json, remove_stale_temp_files, sync_dir, temp_path,
    write_atomic_with, write_json, TrainerState, TMP_MARKER,
};
use nin_layers::weights::{load_weights, save_weights, MAX_SAFETENSORS_BYTES};

use crate::error::{Error, Result};
use crate::optim::{load_optimizer_state, save_optimizer_state, Optimizer};
use crate::trainer::{Control, Progress};

/// A point inside writing a checkpoint, reported to [`Progress::on_checkpoint_stage`] so that a
/// crash test can stop the run exactly there (in order of occurrence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckpointStage {
    /// The new checkpoint's temporary folder holds its `model.safetensors`.
    ModelWritten,
    /// … and its `optimizer.safetensors`.
    OptimizerWritten,
    /// … and its `trainer_state.json`.
    StateWritten,
    /// The temporary folder was renamed to its step name: complete, not yet committed.
    FolderRenamed,
    /// The root `model.safetensors` holds the new weights.
    RootModelWritten,
    /// The root `trainer_state.json` names the new checkpoint: it is committed.
    Committed,
    /// Older checkpoint folders were removed.
    Pruned,
    /// At an epoch's end, before its checkpoint: `best/` holds the new best model.
    BestWritten,
    /// At an epoch's end, after its checkpoint: `metrics.csv` and `metrics.jsonl` were rewritten.
    MetricsWritten,
}

impl CheckpointStage {
    /// Every stage, in the order a checkpoint at an epoch's end passes them (`BestWritten` first
    /// there; mid-epoch checkpoints pass neither it nor `MetricsWritten`).
    pub const ALL: [Self; 9] = [
        Self::BestWritten,
        Self::ModelWritten,
        Self::OptimizerWritten,
        Self::StateWritten,
        Self::FolderRenamed,
        Self::RootModelWritten,
        Self::Committed,
        Self::Pruned,
        Self::MetricsWritten,
    ];

    /// The stage's name in kebab case, e.g. `root-model-written`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ModelWritten => "model-written",
            Self::OptimizerWritten => "optimizer-written",
            Self::StateWritten => "state-written",
            Self::FolderRenamed => "folder-renamed",
            Self::RootModelWritten => "root-model-written",
            Self::Committed => "committed",
            Self::Pruned => "pruned",
            Self::BestWritten => "best-written",
            Self::MetricsWritten => "metrics-written",
        }
    }

    /// The stage named `name` ([`CheckpointStage::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Whether a checkpoint write ran to its end or was abandoned where it stood, as a kill would
/// abandon it, because the progress callback said [`Control::Stop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Whole,
    Abandoned,
}

/// Tells `progress` that `stage` was reached; `true` when it asks to stop there.
pub(crate) fn reached(progress: &mut dyn Progress, stage: CheckpointStage) -> bool {
    progress.on_checkpoint_stage(stage) == Control::Stop
}

/// What a checkpoint saves.
pub(crate) struct Snapshot<'a> {
    pub run_dir: &'a Path,
    pub state: &'a TrainerState,
    pub varmap: &'a VarMap,
    pub opt: &'a dyn Optimizer,
    pub model_name: &'a str,
}

/// Writes and commits the checkpoint of `snap.state` (see [`nin_format::files`] for the order
/// and why it is safe), given the name of the checkpoint committed before it, if any.
pub(crate) fn save(
    snap: &Snapshot<'_>,
    committed: Option<&str>,
    progress: &mut dyn Progress,
) -> Result<Written> {
    let state = snap.state;
    let name = state.checkpoint_name();
    let checkpoints = snap.run_dir.join(CHECKPOINTS_DIR);
    let dir = checkpoints.join(&name);
    if committed == Some(name.as_str()) {
        // Two different states never share a name (the step count and epoch both advance), so
        // this would be a bug that replaces the only good checkpoint: refuse it.
        return Err(Error::BadCheckpoint {
            dir,
            problem: "is already committed; a new checkpoint cannot replace it".into(),
        });
    }
    create_dir(&checkpoints)?;
    if dir.exists() {
        // Written by a run killed before committing it.
        remove_dir(&dir)?;
    }
    let tmp = temp_path(&dir)?;
    create_dir(&tmp)?;
    match write_folder(snap, &tmp, progress) {
        Ok(Written::Whole) => {}
        Ok(Written::Abandoned) => return Ok(Written::Abandoned),
        Err(e) => {
            // A failed write (a full disk) leaves nothing behind; the commit is untouched.
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    }
    fs::rename(&tmp, &dir).map_err(|e| io_error("renaming into place", &dir, e))?;
    sync_dir(&checkpoints)?;
    if reached(progress, CheckpointStage::FolderRenamed) {
        return Ok(Written::Abandoned);
    }
    copy_atomic(
        &dir.join(MODEL_SAFETENSORS),
        &snap.run_dir.join(MODEL_SAFETENSORS),
    )?;
    if reached(progress, CheckpointStage::RootModelWritten) {
        return Ok(Written::Abandoned);
    }
    write_json(&snap.run_dir.join(TRAINER_STATE_JSON), state)?;
    if reached(progress, CheckpointStage::Committed) {
        return Ok(Written::Abandoned);
    }
    prune(snap.run_dir, &name)?;
    if reached(progress, CheckpointStage::Pruned) {
        return Ok(Written::Abandoned);
    }
    Ok(Written::Whole)
}

/// Writes the three files of a checkpoint into the fresh folder `tmp`.
fn write_folder(snap: &Snapshot<'_>, tmp: &Path, progress: &mut dyn Progress) -> Result<Written> {
    let meta = BTreeMap::from([
        (
            "global_step".to_string(),
            snap.state.global_step.to_string(),
        ),
        ("epoch".to_string(), snap.state.epoch.to_string()),
        ("model".to_string(), snap.model_name.to_string()),
    ]);
    save_weights(&tmp.join(MODEL_SAFETENSORS), snap.varmap, &meta)?;
    if reached(progress, CheckpointStage::ModelWritten) {
        return Ok(Written::Abandoned);
    }
    save_optimizer_state(&tmp.join(OPTIMIZER_SAFETENSORS), snap.opt, &meta)?;
    if reached(progress, CheckpointStage::OptimizerWritten) {
        return Ok(Written::Abandoned);
    }
    write_json(&tmp.join(TRAINER_STATE_JSON), snap.state)?;
    if reached(progress, CheckpointStage::StateWritten) {
        return Ok(Written::Abandoned);
    }
    Ok(Written::Whole)
}

/// Loads the checkpoint that `state` (read from the root `trainer_state.json`) commits to into
/// `varmap` and `opt`, checking that its files agree with the state and hold finite tensors.
/// Returns its folder name. A run folder of the layout before checkpoint folders is first moved
/// to this one.
pub(crate) fn load(
    run_dir: &Path,
    state: &TrainerState,
    varmap: &VarMap,
    opt: &mut dyn Optimizer,
) -> Result<String> {
    let name = state.checkpoint_name();
    let dir = run_dir.join(CHECKPOINTS_DIR).join(&name);
    if !dir.exists() && run_dir.join(OPTIMIZER_SAFETENSORS).is_file() {
        migrate_legacy(run_dir, state, &dir)?;
    }
    if !dir.is_dir() {
        return Err(Error::BadCheckpoint {
            dir,
            problem: format!(
                "is missing, but {TRAINER_STATE_JSON} commits to it (was it deleted?)"
            ),
        });
    }
    let own: TrainerState = read_json(&dir.join(TRAINER_STATE_JSON))?;
    if own != *state {
        return Err(Error::BadCheckpoint {
            dir,
            problem: format!(
                "its {TRAINER_STATE_JSON} differs from the run folder's, which commits to it"
            ),
        });
    }
    let step = state.global_step.to_string();
    let weights = dir.join(MODEL_SAFETENSORS);
    let meta = load_weights(&weights, varmap)?;
    check_step(&weights, meta.get("global_step"), &step)?;
    // NaN or infinite weights were refused by `load_weights`, naming the file and tensor.
    let opt_path = dir.join(OPTIMIZER_SAFETENSORS);
    let meta = load_optimizer_state(&opt_path, opt)?;
    check_step(&opt_path, meta.get("global_step"), &step)?;
    if opt.step_count() != state.global_step as u64 {
        return Err(Error::BadMetadata {
            file: opt_path,
            field: "step",
            expected: format!("{step} (one optimiser step per training step)"),
            got: opt.step_count().to_string(),
        });
    }
    Ok(name)
}

/// Gives a run folder of the layout before checkpoint folders (weights, optimiser state and
/// trainer state at the root) the folder its `trainer_state.json` names, written as [`save`]
/// writes one, so that the root weights are never the only copy of the committed ones.
fn migrate_legacy(run_dir: &Path, state: &TrainerState, dir: &Path) -> Result<()> {
    let checkpoints = run_dir.join(CHECKPOINTS_DIR);
    create_dir(&checkpoints)?;
    let tmp = temp_path(dir)?;
    create_dir(&tmp)?;
    for file in [MODEL_SAFETENSORS, OPTIMIZER_SAFETENSORS] {
        copy_atomic(&run_dir.join(file), &tmp.join(file))?;
    }
    write_json(&tmp.join(TRAINER_STATE_JSON), state)?;
    fs::rename(&tmp, dir).map_err(|e| io_error("renaming into place", dir, e))?;
    Ok(sync_dir(&checkpoints)?)
}

/// Removes what a killed run can leave besides its committed checkpoint `committed` (`None`:
/// nothing is committed): temporary files and folders, uncommitted or older checkpoint folders,
/// and a root `model.safetensors` that differs from the committed weights (restored from them).
pub(crate) fn recover(run_dir: &Path, committed: Option<&str>) -> Result<()> {
    remove_stale_temp_files(run_dir)?;
    remove_stale_temp_files(&run_dir.join(BEST_DIR))?;
    let checkpoints = run_dir.join(CHECKPOINTS_DIR);
    match committed {
        Some(name) => prune(run_dir, name)?,
        None if checkpoints.is_dir() => remove_all_but(&checkpoints, None)?,
        None => {}
    }
    if let Some(name) = committed {
        let weights = checkpoints.join(name).join(MODEL_SAFETENSORS);
        let root = run_dir.join(MODEL_SAFETENSORS);
        if !same_contents(&weights, &root)? {
            copy_atomic(&weights, &root)?;
        }
    }
    Ok(())
}

/// Whether every element of `t` is finite.
pub(crate) fn all_finite(t: &Tensor) -> Result<bool> {
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(values.iter().all(|v| v.is_finite()))
}

/// After a commit: removes every other checkpoint folder, and the root optimiser state of a run
/// folder that predates checkpoint folders.
fn prune(run_dir: &Path, committed: &str) -> Result<()> {
    remove_all_but(&run_dir.join(CHECKPOINTS_DIR), Some(committed))?;
    let legacy = run_dir.join(OPTIMIZER_SAFETENSORS);
    if legacy.is_file() {
        fs::remove_file(&legacy).map_err(|e| io_error("removing", &legacy, e))?;
    }
    Ok(())
}

/// Removes from `checkpoints` every checkpoint folder but `keep`, and every temporary file or
/// folder; anything else (a user's file) is left alone.
fn remove_all_but(checkpoints: &Path, keep: Option<&str>) -> Result<()> {
    let entries = fs::read_dir(checkpoints).map_err(|e| io_error("listing", checkpoints, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing", checkpoints, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.starts_with(CHECKPOINT_PREFIX)
            || (name.starts_with('.') && name.contains(TMP_MARKER));
        if !ours || keep == Some(&*name) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            remove_dir(&path)?;
        } else {
            fs::remove_file(&path).map_err(|e| io_error("removing", &path, e))?;
        }
    }
    Ok(sync_dir(checkpoints)?)
}

fn remove_dir(dir: &Path) -> Result<()> {
    fs::remove_dir_all(dir).map_err(|e| io_error("removing", dir, e))
}

/// Copies `from` over `to` atomically.
fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    Ok(write_atomic_with(to, |f| {
        io::copy(&mut File::open(from)?, f).map(|_| ())
    })?)
}

/// Whether two weights files hold the same bytes (`false` when `b` is absent).
fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let read = |p: &Path| read_bounded(p, "safetensors file", MAX_SAFETENSORS_BYTES);
    if !b.is_file() {
        return Ok(false);
    }
    Ok(read(a)? == read(b)?)
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Format(nin_format::Error::io(action, PathBuf::from(path), source))
}

fn check_step(file: &Path, got: Option<&String>, expected: &str) -> Result<()> {
    if got.map(String::as_str) != Some(expected) {
        return Err(Error::BadMetadata {
            file: file.to_path_buf(),
            field: "global_step",
            expected: format!("{expected} (as {TRAINER_STATE_JSON} says)"),
            got: got.cloned().unwrap_or_else(|| "nothing".into()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_round_trip() {
        for stage in CheckpointStage::ALL {
            assert_eq!(CheckpointStage::from_name(stage.name()), Some(stage));
        }
        assert_eq!(CheckpointStage::from_name("commited"), None);
    }
}
