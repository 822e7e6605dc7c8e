//! Every file name of a model directory and a run folder, in one place.
//!
//! ```text
//! <model dir>/config.json              ModelDirConfig: model, num_classes, model_args, pretrained_cfg, label_names
//! <model dir>/model.safetensors        weights by PyTorch name, batch-norm statistics included
//! <model dir>/whitening.safetensors    the GCN + ZCA transform, when pretrained_cfg.whitening names it
//!
//! <run>/                               a model directory (the last checkpoint's weights), plus:
//! <run>/trainer_state.json             TrainerState of the committed checkpoint: counters,
//!                                      schedule state, metric history
//! <run>/checkpoints/<name>/            the committed checkpoint, named by checkpoint_name():
//!     model.safetensors                  its weights
//!     optimizer.safetensors              its optimiser state by parameter name
//!     trainer_state.json                 its TrainerState (the same as the root's)
//! <run>/run.json                       RunConfig: recipe, model, data, seed, threads, versions
//! <run>/metrics.csv, metrics.jsonl     one row per finished epoch (METRICS_COLUMNS)
//! <run>/best/                          model directory of the best evaluation top-1 so far
//! ```
//!
//! **API boundary:** the run-folder layout and these names; the sweep and users' scripts rely on
//! them.
//!
//! # Checkpoints survive a kill at any instant
//!
//! The root `trainer_state.json` is the commit record: a checkpoint exists once it names it, and
//! it names exactly one folder, `checkpoints/<checkpoint_name(global_step, epoch)>`. A checkpoint
//! is written in this order, each file through `write_atomic` (temporary file, fsync, rename):
//!
//! 1. the three files into a temporary folder `checkpoints/.<name>.tmp-<pid>-<n>/`, which is
//!    then flushed and renamed to `checkpoints/<name>/`;
//! 2. the root `model.safetensors` (a copy of the new weights, so the run folder stays a model
//!    directory of the latest weights);
//! 3. the root `trainer_state.json`: **the commit**;
//! 4. older checkpoint folders are removed (only the committed one is kept).
//!
//! A kill before step 3 leaves the previous commit and its folder untouched (the root weights
//! may already be the newer ones, which is harmless); a kill after it leaves the new commit
//! whole. Resuming reads only the committed folder, then tidies what a kill can leave behind:
//! it removes temporary files and folders and uncommitted or older step folders, and rewrites a
//! root `model.safetensors` that is not the committed one's and metrics files that lag the
//! committed history. `best/`, written at an epoch's end before that epoch's checkpoint, may
//! briefly be ahead of the commit; the resumed run replays the epoch and rewrites it identically.
//! A run folder with `run.json` but no `trainer_state.json` was killed before its first commit
//! and resumes from step 0.
//! Run folders written before this layout (`optimizer.safetensors` at the root, no
//! `checkpoints/`) still resume.

/// Model-directory configuration ([`crate::ModelDirConfig`]).
pub const CONFIG_JSON: &str = "config.json";
/// Model weights.
pub const MODEL_SAFETENSORS: &str = "model.safetensors";
/// The GCN + ZCA transform of a model trained on whitened inputs.
pub const WHITENING_SAFETENSORS: &str = "whitening.safetensors";
/// Optimiser state, inside a checkpoint folder (at the root in run folders written before
/// [`CHECKPOINTS_DIR`] existed).
pub const OPTIMIZER_SAFETENSORS: &str = "optimizer.safetensors";
/// Counters and schedule state ([`crate::TrainerState`]); at the root, the commit record naming
/// the current checkpoint folder.
pub const TRAINER_STATE_JSON: &str = "trainer_state.json";
/// Full resolved run configuration ([`crate::RunConfig`]).
pub const RUN_JSON: &str = "run.json";
/// Per-epoch metrics as CSV.
pub const METRICS_CSV: &str = "metrics.csv";
/// Per-epoch metrics as JSON lines.
pub const METRICS_JSONL: &str = "metrics.jsonl";
/// Sub-folder holding the best checkpoint by evaluation top-1.
pub const BEST_DIR: &str = "best";
/// Sub-folder of a run holding the committed checkpoint's folder.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// The prefix of every checkpoint folder's name.
pub const CHECKPOINT_PREFIX: &str = "step-";

/// The name of the checkpoint folder of the state after `global_step` steps in epoch `epoch`
/// (0-based), e.g. `step-000000123-epoch-0002`; names sort in training order.
///
/// The epoch is part of the name because the state saved when a run is interrupted after the last
/// step of an epoch and the state after that epoch's end share their step count.
pub fn checkpoint_name(global_step: usize, epoch: usize) -> String {
    format!("{CHECKPOINT_PREFIX}{global_step:09}-epoch-{epoch:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_sort_in_training_order() {
        let names = [
            checkpoint_name(0, 0),
            checkpoint_name(6, 0),
            checkpoint_name(6, 1),
            checkpoint_name(1_000_000, 9),
        ];
        assert_eq!(names[1], "step-000000006-epoch-0000");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
    }
}
