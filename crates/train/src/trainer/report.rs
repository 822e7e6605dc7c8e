//! What the training loop reports while it runs and when it ends, and how a caller steers it
//! ([`Progress`] returning a [`Control`]): the engine never prints.

use std::path::Path;

use nin_format::{EpochRecord, TrainerState};

use crate::checkpoint::CheckpointStage;
use crate::metrics::Confusion;

/// What the loop should do after a progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Keep training.
    Continue,
    /// Stop at once without saving, as a crash would: the last checkpoint stays as it is.
    Stop,
    /// Save a checkpoint, then stop (e.g. on Ctrl-C); `resume` continues from here.
    SaveAndStop,
}

/// Reported once when the loop starts.
#[derive(Clone, Debug)]
pub struct StartReport {
    /// Epochs of the whole run.
    pub epochs: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Epoch (0-based) the loop starts in.
    pub start_epoch: usize,
    /// Step within that epoch.
    pub start_step: usize,
    /// Whether this is a resumed run.
    pub resumed: bool,
}

/// Reported after every optimisation step.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Steps taken in this epoch, this one included.
    pub step_in_epoch: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Steps taken since the start of the run, this one included.
    pub global_step: usize,
    /// The batch's training loss.
    pub loss: f32,
    /// The scheduled base learning rate used.
    pub lr: f64,
}

/// Receives progress; the engine itself never prints. Every method has a no-op default.
pub trait Progress {
    /// The loop is starting.
    fn on_start(&mut self, _report: &StartReport) {}

    /// A step was taken.
    fn on_step(&mut self, _report: &StepReport) -> Control {
        Control::Continue
    }

    /// An epoch ended (its checkpoint is already saved).
    fn on_epoch_end(&mut self, _record: &EpochRecord, _eval: Option<&EvalReport>) -> Control {
        Control::Continue
    }

    /// A checkpoint was saved at `global_step` into `run_dir`.
    fn on_checkpoint(&mut self, _global_step: usize, _run_dir: &Path) {}

    /// A point inside writing a checkpoint was reached. [`Control::Stop`] abandons the
    /// checkpoint where it stands and stops the run at once, leaving the files as a kill at that
    /// instant would (crash tests use it); the other values carry on.
    fn on_checkpoint_stage(&mut self, _stage: CheckpointStage) -> Control {
        Control::Continue
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Metrics of one pass over an evaluation source.
#[derive(Clone, Debug)]
pub struct EvalReport {
    /// Mean cross-entropy (no label smoothing).
    pub loss: f64,
    /// Top-1 accuracy, percent.
    pub top1: f64,
    /// Top-5 accuracy, percent.
    pub top5: f64,
    /// Accuracy per class, percent.
    pub per_class: Vec<f64>,
    /// Counts by (true class, prediction).
    pub confusion: Confusion,
}

/// How a call to [`train`] or [`resume`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Every epoch of the recipe is done.
    Completed,
    /// A progress callback stopped the run; `resume` continues it.
    Stopped,
    /// `resume` found every epoch already done: nothing was trained, the run folder was only
    /// checked and tidied.
    AlreadyFinished,
}

/// The result of [`train`] or [`resume`].
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// Whether the run finished.
    pub finish: Finish,
    /// The counters, metric history and best accuracy at the end of the call.
    pub state: TrainerState,
    /// The last evaluation made in this call, if any.
    pub last_eval: Option<EvalReport>,
}
