//! The training loop shared by the CLI and the sweep: it drives any [`ClassMapModel`] over a
//! [`BatchSource`], checkpoints into a run folder, and resumes from one so that an interrupted
//! run ends with the same weights as an uninterrupted one.
//!
//! Reproducibility rests on four things: the optimiser walks parameters in name order; the
//! model's dropout is re-seeded before every step from `(seed, global step)`; the data source
//! yields the same batches for the same `(epoch, start batch)`; and checkpoints store weights,
//! optimiser and schedule state exactly (safetensors, and JSON numbers that round-trip).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use nin_layers::{derive_seed, ClassMapModel};

use nin_format::files::{
    BEST_DIR, CONFIG_JSON, MODEL_SAFETENSORS, OPTIMIZER_SAFETENSORS, RUN_JSON, TRAINER_STATE_JSON,
};
use nin_format::{
    create_dir, write_json, write_metrics, EpochRecord, Monitor, RunConfig, TrainerState,
};
use nin_layers::weights::{load_weights, named_vars, save_weights};

use crate::error::{Error, Result};
use crate::loss::{cross_entropy, topk_correct};
use crate::metrics::Confusion;
use crate::optim::{
    build_optimizer, load_optimizer_state, save_optimizer_state, trainable_params, Optimizer,
};
use crate::run_dir::{copy_model_dir_files, save_model_dir};
use crate::schedule::LrScheduler;

/// A supply of `(images, labels)` batches: images f32 `[N, 3, H, W]` (normalised), labels u32
/// `[N]`.
///
/// The same `(epoch, start_batch)` must always yield the same batches (shuffle and augment from
/// a generator seeded by the run seed and the epoch), and `epoch_batches(e, k)` must yield
/// exactly the batches `k..` of `epoch_batches(e, 0)`: that is what makes resume exact.
pub trait BatchSource {
    /// Number of batches one epoch yields.
    fn batches_per_epoch(&self) -> usize;

    /// The batches of epoch `epoch` (0-based), starting at batch `start_batch`.
    fn epoch_batches(
        &mut self,
        epoch: usize,
        start_batch: usize,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + '_>;
}

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

/// Evaluates `model` (dropout off, batch-norm running statistics) over one pass of `data`.
pub fn evaluate(
    model: &dyn ClassMapModel,
    data: &mut dyn BatchSource,
    device: &Device,
) -> Result<EvalReport> {
    let n_classes = model.num_classes();
    let mut confusion = Confusion::new(n_classes);
    for (batch_idx, batch) in data.epoch_batches(0, 0).enumerate() {
        let (xs, ys) = check_batch(batch?, 0, batch_idx, device)?;
        let logits = model.forward_t(&xs, false)?;
        let loss = cross_entropy(&logits, &ys, 0.0)?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        let logits = logits
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let labels = ys.to_vec1::<u32>()?;
        confusion.add_batch(&logits, &labels, loss as f64)?;
    }
    Ok(EvalReport {
        loss: confusion.mean_loss(),
        top1: confusion.top1(),
        top5: confusion.top5(),
        per_class: confusion.per_class(),
        confusion,
    })
}

/// Trains `model` (whose variables live in `varmap`) from scratch as `run` describes, writing
/// the run folder `run_dir` (created if needed; it must not already hold a run).
///
/// Writes `run.json` and `config.json`, then a step-0 checkpoint, then a checkpoint every
/// `run.checkpoint_every_steps` steps and at every epoch end, with `best/` updated whenever the
/// validation top-1 improves (only when `eval` is given). A non-finite loss stops the run with
/// [`Error::NonFiniteLoss`] before the weights are updated; the last checkpoint stays intact.
pub fn train(
    model: &dyn ClassMapModel,
    varmap: &VarMap,
    run: &RunConfig,
    data: &mut dyn BatchSource,
    eval: Option<&mut dyn BatchSource>,
    run_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<TrainOutcome> {
    if run_dir.join(TRAINER_STATE_JSON).exists() {
        return Err(Error::RunExists {
            path: run_dir.to_path_buf(),
        });
    }
    if let Some(name) = &run.pretrained_cfg.whitening {
        if !run_dir.join(name).is_file() {
            return Err(Error::invalid(
                "run",
                "pretrained_cfg.whitening",
                format!(
                    "names {name}, which is not in the run folder {}: the caller writes it there \
                     before training, so every model directory can carry it",
                    run_dir.display()
                ),
            ));
        }
    }
    let mut run = run.clone();
    run.versions
        .insert("nin-train".into(), env!("CARGO_PKG_VERSION").into());
    check_run(model, &run, eval.is_some())?;
    create_dir(run_dir)?;
    write_json(&run_dir.join(RUN_JSON), &run)?;
    write_json(&run_dir.join(CONFIG_JSON), &run.model_dir_config())?;

    let mut ctx = Context::new(model, varmap, &run, data.batches_per_epoch(), run_dir)?;
    let mut state = TrainerState::new(run.seed, data.batches_per_epoch());
    ctx.save_checkpoint(&mut state, progress)?;
    write_metrics(run_dir, &state.history)?;
    ctx.run_loop(state, data, eval, progress, false)
}

/// Continues the run in `run_dir` from its last checkpoint: reads `run.json` and
/// `trainer_state.json`, loads `model.safetensors` into `varmap` and `optimizer.safetensors`
/// into a fresh optimiser, restores the schedule and counters, and trains on from the saved
/// epoch and step. `model`, `varmap` and the data sources must be built from `run.json` exactly as
/// the original run built them (same model config, seed, data pipeline and thread count); the
/// final weights are then bit-identical to an uninterrupted run's.
pub fn resume(
    model: &dyn ClassMapModel,
    varmap: &VarMap,
    data: &mut dyn BatchSource,
    eval: Option<&mut dyn BatchSource>,
    run_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<TrainOutcome> {
    for file in [RUN_JSON, TRAINER_STATE_JSON] {
        if !run_dir.join(file).is_file() {
            return Err(Error::NoCheckpoint {
                path: run_dir.to_path_buf(),
                file,
            });
        }
    }
    let run = RunConfig::load(run_dir)?;
    check_run(model, &run, eval.is_some())?;
    let state = TrainerState::load(run_dir)?;
    let state_file = run_dir.join(TRAINER_STATE_JSON);
    if state.seed != run.seed {
        return Err(Error::invalid(
            "run",
            "seed",
            format!(
                "{} says {}, {} says {}",
                RUN_JSON,
                run.seed,
                state_file.display(),
                state.seed
            ),
        ));
    }
    if state.steps_per_epoch != data.batches_per_epoch() {
        return Err(Error::invalid(
            "data source",
            "batches_per_epoch",
            format!(
                "the run was trained with {} batches per epoch ({}), the source now yields {}; \
                 rebuild the data pipeline exactly as run.json records it",
                state.steps_per_epoch,
                state_file.display(),
                data.batches_per_epoch()
            ),
        ));
    }
    let mut ctx = Context::new(model, varmap, &run, data.batches_per_epoch(), run_dir)?;

    let step = state.global_step.to_string();
    let weights = run_dir.join(MODEL_SAFETENSORS);
    let meta = load_weights(&weights, varmap)?;
    check_step(&weights, meta.get("global_step"), &step)?;
    let opt_path = run_dir.join(OPTIMIZER_SAFETENSORS);
    let meta = load_optimizer_state(&opt_path, ctx.opt.as_mut())?;
    check_step(&opt_path, meta.get("global_step"), &step)?;
    ctx.sched.restore(state.schedule.clone());
    ctx.run_loop(state, data, eval, progress, true)
}

fn check_step(file: &Path, got: Option<&String>, expected: &str) -> Result<()> {
    if got.map(String::as_str) != Some(expected) {
        return Err(Error::BadMetadata {
            file: file.to_path_buf(),
            field: "global_step",
            expected: format!(
                "{expected} (as in {TRAINER_STATE_JSON}; a crash while checkpointing?)"
            ),
            got: got.cloned().unwrap_or_else(|| "nothing".into()),
        });
    }
    Ok(())
}

fn check_run(model: &dyn ClassMapModel, run: &RunConfig, has_eval: bool) -> Result<()> {
    run.recipe.validate()?;
    if model.num_classes() != run.model.num_classes {
        return Err(Error::invalid(
            "run",
            "model.num_classes",
            format!(
                "the run says {}, the model has {}",
                run.model.num_classes,
                model.num_classes()
            ),
        ));
    }
    if !has_eval
        && matches!(
            run.recipe.schedule.monitor(),
            Some(Monitor::EvalTop1 | Monitor::EvalLoss)
        )
    {
        return Err(Error::invalid(
            "run",
            "recipe.schedule.monitor",
            "watches a validation metric but no evaluation source was given",
        ));
    }
    if run.checkpoint_every_steps == Some(0) {
        return Err(Error::invalid(
            "run",
            "checkpoint_every_steps",
            "must be > 0 when set, got 0",
        ));
    }
    Ok(())
}

/// Everything the loop needs besides the data and the state.
struct Context<'a> {
    model: &'a dyn ClassMapModel,
    varmap: &'a VarMap,
    run: &'a RunConfig,
    run_dir: PathBuf,
    device: Device,
    opt: Box<dyn Optimizer>,
    sched: LrScheduler,
    steps_per_epoch: usize,
}

impl<'a> Context<'a> {
    fn new(
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
        })
    }

    fn save_checkpoint(
        &mut self,
        state: &mut TrainerState,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        // Never replace a good checkpoint by a diverged one.
        self.check_finite(state.global_step)?;
        state.schedule = self.sched.state().clone();
        let meta = BTreeMap::from([
            ("global_step".to_string(), state.global_step.to_string()),
            ("epoch".to_string(), state.epoch.to_string()),
            ("model".to_string(), self.run.model.name.clone()),
        ]);
        save_optimizer_state(
            &self.run_dir.join(OPTIMIZER_SAFETENSORS),
            self.opt.as_ref(),
            &meta,
        )?;
        save_weights(&self.run_dir.join(MODEL_SAFETENSORS), self.varmap, &meta)?;
        write_json(&self.run_dir.join(TRAINER_STATE_JSON), state)?;
        progress.on_checkpoint(state.global_step, &self.run_dir);
        Ok(())
    }

    /// Fails with [`Error::NonFiniteWeights`] when a trainable parameter holds NaN or infinity.
    fn check_finite(&self, global_step: usize) -> Result<()> {
        for param in self.opt.params() {
            let values = param
                .var
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            if !values.iter().all(|v| v.is_finite()) {
                return Err(Error::NonFiniteWeights {
                    name: param.name.clone(),
                    global_step,
                    run_dir: self.run_dir.clone(),
                });
            }
        }
        Ok(())
    }

    fn run_loop(
        &mut self,
        mut state: TrainerState,
        data: &mut dyn BatchSource,
        mut eval: Option<&mut dyn BatchSource>,
        progress: &mut dyn Progress,
        resumed: bool,
    ) -> Result<TrainOutcome> {
        let epochs = self.run.recipe.epochs;
        progress.on_start(&StartReport {
            epochs,
            steps_per_epoch: self.steps_per_epoch,
            start_epoch: state.epoch,
            start_step: state.step_in_epoch,
            resumed,
        });
        let mut last_eval = None;
        while state.epoch < epochs {
            let epoch = state.epoch;
            let started = Instant::now();
            let seconds_before = state.partial.seconds;
            if state.step_in_epoch < self.steps_per_epoch {
                let batches = data.epoch_batches(epoch, state.step_in_epoch);
                for batch in batches {
                    let control =
                        self.train_step(&mut state, batch, started, seconds_before, progress)?;
                    let due = self
                        .run
                        .checkpoint_every_steps
                        .is_some_and(|k| state.global_step % k == 0)
                        && state.step_in_epoch < self.steps_per_epoch;
                    match control {
                        Control::Stop => {
                            return Ok(self.outcome(Finish::Stopped, state, last_eval))
                        }
                        Control::SaveAndStop => {
                            state.partial.seconds =
                                seconds_before + started.elapsed().as_secs_f64();
                            self.save_checkpoint(&mut state, progress)?;
                            return Ok(self.outcome(Finish::Stopped, state, last_eval));
                        }
                        Control::Continue if due => self.save_checkpoint(&mut state, progress)?,
                        Control::Continue => {}
                    }
                }
            }

            // End of epoch: evaluate, schedule, keep the best, checkpoint. Diverged weights must
            // not reach `best/` either.
            self.check_finite(state.global_step)?;
            let report = match eval.as_deref_mut() {
                Some(source) => Some(evaluate(self.model, source, &self.device)?),
                None => None,
            };
            let p = &state.partial;
            let train_loss = if p.samples == 0 {
                0.0
            } else {
                p.loss_sum / p.samples as f64
            };
            let train_top1 = if p.samples == 0 {
                0.0
            } else {
                100.0 * p.correct as f64 / p.samples as f64
            };
            let record = EpochRecord {
                epoch: epoch + 1,
                train_loss,
                train_top1,
                eval_loss: report.as_ref().map(|r| r.loss),
                eval_top1: report.as_ref().map(|r| r.top1),
                eval_top5: report.as_ref().map(|r| r.top5),
                lr: p.last_lr,
                seconds: seconds_before + started.elapsed().as_secs_f64(),
            };
            if let Some(monitor) = self.run.recipe.schedule.monitor() {
                let value = match (monitor, &report) {
                    (Monitor::TrainTop1, _) => Some(train_top1),
                    (Monitor::EvalTop1, Some(r)) => Some(r.top1),
                    (Monitor::EvalLoss, Some(r)) => Some(r.loss),
                    _ => None,
                };
                if let Some(value) = value {
                    self.sched.end_epoch(value);
                }
            }
            if let Some(r) = &report {
                if state.best_eval_top1.is_none_or(|best| r.top1 > best) {
                    state.best_eval_top1 = Some(r.top1);
                    state.best_epoch = Some(epoch + 1);
                    let meta = BTreeMap::from([
                        ("epoch".to_string(), (epoch + 1).to_string()),
                        ("eval_top1".to_string(), r.top1.to_string()),
                    ]);
                    let best = self.run_dir.join(BEST_DIR);
                    let config = self.run.model_dir_config();
                    save_model_dir(&best, &config, self.varmap, &meta)?;
                    copy_model_dir_files(&self.run_dir, &best, &config)?;
                }
            }
            state.history.push(record.clone());
            state.epoch += 1;
            state.step_in_epoch = 0;
            state.partial = Default::default();
            self.save_checkpoint(&mut state, progress)?;
            write_metrics(&self.run_dir, &state.history)?;
            let control = progress.on_epoch_end(&record, report.as_ref());
            last_eval = report;
            if control != Control::Continue {
                return Ok(self.outcome(Finish::Stopped, state, last_eval));
            }
        }
        Ok(self.outcome(Finish::Completed, state, last_eval))
    }

    fn outcome(
        &self,
        finish: Finish,
        state: TrainerState,
        last_eval: Option<EvalReport>,
    ) -> TrainOutcome {
        TrainOutcome {
            finish,
            state,
            last_eval,
        }
    }

    fn train_step(
        &mut self,
        state: &mut TrainerState,
        batch: Result<(Tensor, Tensor)>,
        started: Instant,
        seconds_before: f64,
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
        p.seconds = seconds_before + started.elapsed().as_secs_f64();
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

/// Checks a batch's shapes and types and moves it to `device`.
fn check_batch(
    (xs, ys): (Tensor, Tensor),
    epoch: usize,
    batch_idx: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let bad = |expected: &str, got: String| Error::BadBatch {
        epoch,
        batch_idx,
        expected: expected.into(),
        got,
    };
    if xs.rank() != 4 || xs.dim(0)? == 0 {
        return Err(bad(
            "images [N, 3, H, W] with N > 0",
            format!("shape {:?}", xs.dims()),
        ));
    }
    if ys.dims() != [xs.dim(0)?] {
        return Err(bad(
            "labels [N] matching the images",
            format!("labels {:?} for images {:?}", ys.dims(), xs.dims()),
        ));
    }
    if ys.dtype() != DType::U32 {
        return Err(bad("u32 labels", format!("{:?}", ys.dtype())));
    }
    if !xs.dtype().is_float() {
        return Err(bad("floating-point images", format!("{:?}", xs.dtype())));
    }
    Ok((xs.to_device(device)?, ys.to_device(device)?))
}
