//! What a checkpoint records besides tensors (`trainer_state.json`): where the run is, the
//! schedule's state, the sums of the epoch in progress and every finished epoch's metrics.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::read_json;
use crate::error::Result;
use crate::files::TRAINER_STATE_JSON;
use crate::metrics::EpochRecord;

/// Running sums of the epoch in progress, so a run resumed mid-epoch reports the same epoch
/// metrics as an uninterrupted one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochProgress {
    /// Sum over steps of `mean batch loss × batch size`.
    pub loss_sum: f64,
    /// Training samples seen this epoch.
    pub samples: u64,
    /// Of which the model's top-1 prediction was right.
    pub correct: u64,
    /// Wall-clock seconds spent so far on the epoch.
    pub seconds: f64,
    /// The base learning rate of the last step taken.
    pub last_lr: f64,
}

/// Counters and state saved with every checkpoint (`trainer_state.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// The epoch in progress (0-based); equals the recipe's epochs when the run is finished.
    pub epoch: usize,
    /// Steps of that epoch already taken.
    pub step_in_epoch: usize,
    /// Steps taken since the start of the run.
    pub global_step: usize,
    /// The run seed.
    pub seed: u64,
    /// Batches per epoch of the training source; `resume` refuses a source that differs.
    pub steps_per_epoch: usize,
    /// Best validation top-1 (percent) so far.
    pub best_eval_top1: Option<f64>,
    /// The epoch (1-based) that reached it.
    pub best_epoch: Option<usize>,
    /// The learning-rate schedule's state.
    pub schedule: ScheduleState,
    /// Sums of the epoch in progress.
    pub partial: EpochProgress,
    /// Every finished epoch's metrics (rewritten to `metrics.csv`/`metrics.jsonl`).
    pub history: Vec<EpochRecord>,
}

impl TrainerState {
    /// The state before the first step.
    pub fn new(seed: u64, steps_per_epoch: usize) -> Self {
        Self {
            epoch: 0,
            step_in_epoch: 0,
            global_step: 0,
            seed,
            steps_per_epoch,
            best_eval_top1: None,
            best_epoch: None,
            schedule: ScheduleState::new(),
            partial: EpochProgress::default(),
            history: Vec::new(),
        }
    }

    /// Reads `trainer_state.json` from a run folder.
    pub fn load(run_dir: &Path) -> Result<Self> {
        read_json(&run_dir.join(TRAINER_STATE_JSON))
    }
}

/// The mutable state of a schedule (only reduce-on-plateau has any), saved in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleState {
    /// Best monitored value so far.
    pub best: Option<f64>,
    /// Epochs since the best value.
    pub bad_epochs: usize,
    /// Current multiplier of the base rate (product of the reductions made).
    pub scale: f64,
    /// Number of reductions made.
    pub reductions: usize,
}

impl ScheduleState {
    /// The state at the start of training.
    pub fn new() -> Self {
        Self {
            best: None,
            bad_epochs: 0,
            scale: 1.0,
            reductions: 0,
        }
    }
}

impl Default for ScheduleState {
    fn default() -> Self {
        Self::new()
    }
}
