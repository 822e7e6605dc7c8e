//! What a checkpoint records besides tensors (`trainer_state.json`): where the run is, the
//! schedule's state, the sums of the epoch in progress and every finished epoch's metrics.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::read_json;
use crate::error::{Error, Result};
use crate::files::{checkpoint_name, TRAINER_STATE_JSON};
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

    /// The name of this state's checkpoint folder under `checkpoints/`
    /// ([`crate::files::checkpoint_name`]).
    pub fn checkpoint_name(&self) -> String {
        checkpoint_name(self.global_step, self.epoch)
    }

    /// Whether every epoch of a run of `epochs` epochs is done.
    pub fn is_finished(&self, epochs: usize) -> bool {
        self.epoch >= epochs
    }

    /// Checks that the counters agree with each other and with a run of `epochs` epochs, so
    /// that a resumed run never trains past its end or reports an epoch it did not train.
    pub fn validate(&self, epochs: usize) -> Result<()> {
        let bad =
            |field, problem: String| Err(Error::invalid("trainer_state.json", field, problem));
        let spe = self.steps_per_epoch;
        if spe == 0 {
            return bad("steps_per_epoch", "must be > 0, got 0".into());
        }
        if self.epoch > epochs || (self.epoch == epochs && self.step_in_epoch != 0) {
            return bad(
                "epoch",
                format!(
                    "is {} (step {} of it), past the end of the run's {epochs} epochs",
                    self.epoch, self.step_in_epoch
                ),
            );
        }
        if self.step_in_epoch > spe {
            return bad(
                "step_in_epoch",
                format!(
                    "is {}, more than the {spe} steps of an epoch",
                    self.step_in_epoch
                ),
            );
        }
        let expected = self
            .epoch
            .checked_mul(spe)
            .and_then(|s| s.checked_add(self.step_in_epoch));
        if expected != Some(self.global_step) {
            return bad(
                "global_step",
                format!(
                    "is {}, expected epoch × steps_per_epoch + step_in_epoch = {} × {spe} + {}",
                    self.global_step, self.epoch, self.step_in_epoch
                ),
            );
        }
        if self.history.len() != self.epoch {
            return bad(
                "history",
                format!(
                    "holds {} epochs, expected one per finished epoch ({})",
                    self.history.len(),
                    self.epoch
                ),
            );
        }
        // Every step adds its batch to the sums, and an epoch's end clears them.
        if (self.step_in_epoch == 0) != (self.partial.samples == 0) {
            return bad(
                "partial.samples",
                format!(
                    "is {} after {} steps of the epoch",
                    self.partial.samples, self.step_in_epoch
                ),
            );
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: usize, step_in_epoch: usize) -> TrainerState {
        let mut s = TrainerState::new(0, 6);
        s.epoch = epoch;
        s.step_in_epoch = step_in_epoch;
        s.global_step = epoch * 6 + step_in_epoch;
        s.partial.samples = 16 * step_in_epoch as u64;
        s.history = vec![
            EpochRecord {
                epoch: 1,
                train_loss: 1.0,
                train_top1: 50.0,
                eval_loss: None,
                eval_top1: None,
                eval_top5: None,
                lr: 0.1,
                seconds: 1.0,
            };
            epoch
        ];
        s
    }

    #[test]
    fn consistent_states_pass_and_states_past_the_end_are_refused() {
        for (epoch, step) in [(0, 0), (0, 3), (1, 6), (2, 0), (3, 0)] {
            at(epoch, step).validate(3).unwrap();
        }
        assert!(at(3, 0).is_finished(3) && !at(2, 6).is_finished(3));
        let refused = [
            (
                at(4, 0),
                "`epoch` is 4 (step 0 of it), past the end of the run's 3 epochs",
            ),
            (at(3, 2), "`epoch` is 3 (step 2 of it), past the end"),
            (at(1, 7), "`step_in_epoch` is 7, more than the 6 steps"),
            (
                TrainerState {
                    global_step: 5,
                    ..at(1, 2)
                },
                "`global_step` is 5, expected",
            ),
            (
                TrainerState {
                    history: Vec::new(),
                    ..at(1, 2)
                },
                "`history` holds 0 epochs",
            ),
            (
                TrainerState {
                    partial: EpochProgress::default(),
                    ..at(1, 6)
                },
                "`partial.samples` is 0 after 6 steps",
            ),
        ];
        for (state, words) in refused {
            let err = state.validate(3).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid trainer_state.json") && err.contains(words),
                "{err}"
            );
        }
    }
}
