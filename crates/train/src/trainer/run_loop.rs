//! The loop itself, one named step at a time: train an epoch's batches (checkpointing when due),
//! then end the epoch (evaluate, schedule, keep the best, checkpoint, metrics).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use nin_format::files::BEST_DIR;
use nin_format::{write_metrics, EpochRecord, Monitor, RunConfig, TrainerState};
use nin_layers::weights::named_vars;
use nin_layers::{derive_seed, ClassMapModel};

use super::{
    check_batch, evaluate, write_config, BatchSource, Control, EvalReport, Finish, Progress,
    StartReport, StepReport, TrainOutcome,
};
use crate::checkpoint::{self, all_finite, reached, CheckpointStage, Snapshot, Written};
use crate::error::{Error, Result};
use crate::loss::{cross_entropy, topk_correct};
use crate::optim::{build_optimizer, trainable_params, Optimizer};
use crate::run_dir::{copy_model_dir_files, save_model_dir};
use crate::schedule::LrScheduler;

/// Whether the loop goes on or stops here (a callback asked, or a crash test abandoned a
/// checkpoint).
type Flow = ControlFlow<()>;

const GO: Flow = ControlFlow::Continue(());
const HALT: Flow = ControlFlow::Break(());

/// Everything the loop needs besides the data and the state.
pub(super) struct Context<'a> {
    model: &'a dyn ClassMapModel,
    varmap: &'a VarMap,
    run: &'a RunConfig,
    run_dir: PathBuf,
    device: Device,
    opt: Box<dyn Optimizer>,
    sched: LrScheduler,
    steps_per_epoch: usize,
    /// The checkpoint the root `trainer_state.json` names, once there is one.
    committed: Option<String>,
}

/// The wall-clock time of the epoch in progress, across interruptions.
struct EpochClock {
    started: Instant,
    seconds_before: f64,
}

impl EpochClock {
    fn start(state: &TrainerState) -> Self {
        Self {
            started: Instant::now(),
            seconds_before: state.partial.seconds,
        }
    }

    fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }
}

impl<'a> Context<'a> {
    pub(super) fn new(
        model: &'a dyn ClassMapModel,
        varmap: &'a VarMap,
        run: &'a RunConfig,
        steps_per_epoch: usize,
        run_dir: &Path,
    ) -> Result<Self> {
        let vars = named_vars(varmap);
        let device = vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        let params = trainable_params(&vars, &run.recipe.lr_multipliers, model.head_prefix());
        let opt = build_optimizer(&run.recipe.optimizer, params)?;
        let sched = LrScheduler::new(
            run.recipe.schedule.clone(),
            run.recipe.lr,
            run.recipe.epochs,
            steps_per_epoch,
        )?;
        Ok(Self {
            model,
            varmap,
            run,
            run_dir: run_dir.to_path_buf(),
            device,
            opt,
            sched,
            steps_per_epoch,
            committed: None,
        })
    }

    pub(super) fn opt_mut(&mut self) -> &mut dyn Optimizer {
        self.opt.as_mut()
    }

    /// Takes up the committed checkpoint `committed`, whose tensors are already loaded.
    pub(super) fn restore(&mut self, committed: String, state: &TrainerState) {
        self.committed = Some(committed);
        self.sched.restore(state.schedule.clone());
    }

    /// Starts a run from step 0: `config.json`, the step-0 checkpoint, empty metrics, the loop.
    pub(super) fn start(
        &mut self,
        data: &mut dyn BatchSource,
        eval: Option<&mut dyn BatchSource>,
        progress: &mut dyn Progress,
        resumed: bool,
    ) -> Result<TrainOutcome> {
        write_config(self.run, &self.run_dir)?;
        let mut state = TrainerState::new(self.run.seed, self.steps_per_epoch);
        if self.checkpoint(&mut state, progress)? == Written::Abandoned {
            return Ok(outcome(Finish::Stopped, state, None));
        }
        write_metrics(&self.run_dir, &state.history)?;
        self.run(state, data, eval, progress, resumed)
    }

    /// Trains from `state` to the end of the run, or until a callback stops it.
    pub(super) fn run(
        &mut self,
        mut state: TrainerState,
        data: &mut dyn BatchSource,
        mut eval: Option<&mut dyn BatchSource>,
        progress: &mut dyn Progress,
        resumed: bool,
    ) -> Result<TrainOutcome> {
        progress.on_start(&StartReport {
            epochs: self.run.recipe.epochs,
            steps_per_epoch: self.steps_per_epoch,
            start_epoch: state.epoch,
            start_step: state.step_in_epoch,
            resumed,
        });
        let mut last_eval = None;
        while state.epoch < self.run.recipe.epochs {
            let clock = EpochClock::start(&state);
            if self.train_epoch(&mut state, data, &clock, progress)? == HALT {
                return Ok(outcome(Finish::Stopped, state, last_eval));
            }
            let (flow, report) =
                self.end_epoch(&mut state, eval.as_deref_mut(), &clock, progress)?;
            last_eval = report;
            if flow == HALT {
                return Ok(outcome(Finish::Stopped, state, last_eval));
            }
        }
        Ok(outcome(Finish::Completed, state, last_eval))
    }

    /// Takes the remaining steps of the epoch in progress, checkpointing when due or asked.
    fn train_epoch(
        &mut self,
        state: &mut TrainerState,
        data: &mut dyn BatchSource,
        clock: &EpochClock,
        progress: &mut dyn Progress,
    ) -> Result<Flow> {
        if state.step_in_epoch >= self.steps_per_epoch {
            // Interrupted after the epoch's last step: only its end remains.
            return Ok(GO);
        }
        for batch in data.epoch_batches(state.epoch, state.step_in_epoch) {
            match self.train_step(state, batch, clock, progress)? {
                Control::Stop => return Ok(HALT),
                Control::SaveAndStop => {
                    state.partial.seconds = clock.seconds();
                    self.checkpoint(state, progress)?;
                    return Ok(HALT);
                }
                Control::Continue if self.checkpoint_due(state) => {
                    if self.checkpoint(state, progress)? == Written::Abandoned {
                        return Ok(HALT);
                    }
                }
                Control::Continue => {}
            }
        }
        Ok(GO)
    }

    /// Whether a mid-epoch checkpoint is due (the epoch's end always makes one).
    fn checkpoint_due(&self, state: &TrainerState) -> bool {
        self.run
            .checkpoint_every_steps
            .is_some_and(|k| state.global_step % k == 0)
            && state.step_in_epoch < self.steps_per_epoch
    }

    /// Ends the epoch: evaluates, steps the schedule, keeps the best model, records the epoch,
    /// checkpoints and rewrites the metrics. Returns the evaluation made.
    fn end_epoch(
        &mut self,
        state: &mut TrainerState,
        eval: Option<&mut (dyn BatchSource + '_)>,
        clock: &EpochClock,
        progress: &mut dyn Progress,
    ) -> Result<(Flow, Option<EvalReport>)> {
        // Diverged weights must reach neither `best/` nor a checkpoint.
        self.check_finite(state.global_step)?;
        let report = match eval {
            Some(source) => Some(evaluate(
                self.model,
                source,
                &self.device,
                self.run.recipe.eval_tta,
            )?),
            None => None,
        };
        let record = epoch_record(state, report.as_ref(), clock);
        self.schedule_epoch_end(&record, report.as_ref());
        if let Some(r) = &report {
            if state.best_eval_top1.is_none_or(|best| r.top1 > best) {
                state.best_eval_top1 = Some(r.top1);
                state.best_epoch = Some(record.epoch);
                self.save_best(record.epoch, r.top1)?;
                if reached(progress, CheckpointStage::BestWritten) {
                    return Ok((HALT, report));
                }
            }
        }
        state.history.push(record.clone());
        state.epoch += 1;
        state.step_in_epoch = 0;
        state.partial = Default::default();
        if self.checkpoint(state, progress)? == Written::Abandoned {
            return Ok((HALT, report));
        }
        write_metrics(&self.run_dir, &state.history)?;
        if reached(progress, CheckpointStage::MetricsWritten) {
            return Ok((HALT, report));
        }
        let flow = match progress.on_epoch_end(&record, report.as_ref()) {
            Control::Continue => GO,
            Control::Stop | Control::SaveAndStop => HALT,
        };
        Ok((flow, report))
    }

    /// Feeds the epoch's monitored metric to a schedule that watches one.
    fn schedule_epoch_end(&mut self, record: &EpochRecord, report: Option<&EvalReport>) {
        let Some(monitor) = self.run.recipe.schedule.monitor() else {
            return;
        };
        let value = match (monitor, report) {
            (Monitor::TrainTop1, _) => Some(record.train_top1),
            (Monitor::EvalTop1, Some(r)) => Some(r.top1),
            (Monitor::EvalLoss, Some(r)) => Some(r.loss),
            _ => None,
        };
        if let Some(value) = value {
            self.sched.end_epoch(value);
        }
    }

    /// Writes `best/`, a model directory of the current weights.
    fn save_best(&self, epoch: usize, top1: f64) -> Result<()> {
        let meta = BTreeMap::from([
            ("epoch".to_string(), epoch.to_string()),
            ("eval_top1".to_string(), top1.to_string()),
        ]);
        let best = self.run_dir.join(BEST_DIR);
        let config = self.run.model_dir_config();
        save_model_dir(&best, &config, self.varmap, &meta)?;
        copy_model_dir_files(&self.run_dir, &best, &config)
    }

    /// Saves and commits a checkpoint of `state` and the current tensors.
    fn checkpoint(
        &mut self,
        state: &mut TrainerState,
        progress: &mut dyn Progress,
    ) -> Result<Written> {
        // Never replace a good checkpoint by a diverged one.
        self.check_finite(state.global_step)?;
        state.schedule = self.sched.state().clone();
        let snap = Snapshot {
            run_dir: &self.run_dir,
            state,
            varmap: self.varmap,
            opt: self.opt.as_ref(),
            model_name: &self.run.model.name,
        };
        let written = checkpoint::save(&snap, self.committed.as_deref(), progress)?;
        if written == Written::Whole {
            self.committed = Some(state.checkpoint_name());
            progress.on_checkpoint(state.global_step, &self.run_dir);
        }
        Ok(written)
    }

    /// Fails with [`Error::NonFiniteWeights`] when a trainable parameter holds NaN or infinity.
    fn check_finite(&self, global_step: usize) -> Result<()> {
        for param in self.opt.params() {
            if !all_finite(param.var.as_tensor())? {
                return Err(Error::NonFiniteWeights {
                    name: param.name.clone(),
                    global_step,
                    run_dir: self.run_dir.clone(),
                });
            }
        }
        Ok(())
    }

    /// One optimisation step on `batch`, with its sums added to the epoch in progress.
    fn train_step(
        &mut self,
        state: &mut TrainerState,
        batch: Result<(Tensor, Tensor)>,
        clock: &EpochClock,
        progress: &mut dyn Progress,
    ) -> Result<Control> {
        let epoch = state.epoch;
        if state.step_in_epoch >= self.steps_per_epoch {
            return Err(Error::BadBatch {
                epoch,
                batch_idx: state.step_in_epoch,
                expected: format!(
                    "at most {} batches per epoch (batches_per_epoch)",
                    self.steps_per_epoch
                ),
                got: "one more".into(),
            });
        }
        let (xs, ys) = check_batch(batch?, epoch, state.step_in_epoch, &self.device)?;
        let lr = self.sched.lr(epoch, state.step_in_epoch);
        self.model
            .dropout_rng()
            .reseed(derive_seed(state.seed, state.global_step as u64));
        let logits = self.model.forward_t(&xs, true)?;
        let loss = cross_entropy(&logits, &ys, self.run.recipe.label_smoothing)?;
        let loss_value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !loss_value.is_finite() {
            return Err(Error::NonFiniteLoss {
                loss: loss_value,
                epoch,
                step_in_epoch: state.step_in_epoch,
                global_step: state.global_step,
                run_dir: self.run_dir.clone(),
            });
        }
        let grads = loss.backward()?;
        self.opt.step(&grads, lr)?;

        let n_classes = self.model.num_classes();
        let logits = logits
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let labels = ys.to_vec1::<u32>()?;
        let p = &mut state.partial;
        p.loss_sum += loss_value as f64 * labels.len() as f64;
        p.samples += labels.len() as u64;
        p.correct += topk_correct(&logits, n_classes, &labels, 1) as u64;
        p.last_lr = lr;
        p.seconds = clock.seconds();
        state.step_in_epoch += 1;
        state.global_step += 1;
        Ok(progress.on_step(&StepReport {
            epoch,
            step_in_epoch: state.step_in_epoch,
            steps_per_epoch: self.steps_per_epoch,
            global_step: state.global_step,
            loss: loss_value,
            lr,
        }))
    }
}

/// The metrics row of the epoch in progress, which has just ended.
fn epoch_record(
    state: &TrainerState,
    report: Option<&EvalReport>,
    clock: &EpochClock,
) -> EpochRecord {
    let p = &state.partial;
    let per_sample = |x: f64| {
        if p.samples == 0 {
            0.0
        } else {
            x / p.samples as f64
        }
    };
    EpochRecord {
        epoch: state.epoch + 1,
        train_loss: per_sample(p.loss_sum),
        train_top1: per_sample(100.0 * p.correct as f64),
        eval_loss: report.map(|r| r.loss),
        eval_top1: report.map(|r| r.top1),
        eval_top5: report.map(|r| r.top5),
        lr: p.last_lr,
        seconds: clock.seconds(),
    }
}

fn outcome(finish: Finish, state: TrainerState, last_eval: Option<EvalReport>) -> TrainOutcome {
    TrainOutcome {
        finish,
        state,
        last_eval,
    }
}
