//! The training loop: it drives any [`ClassMapModel`] over a [`BatchSource`], checkpoints into a
//! run folder, and resumes from one so that an interrupted run ends with the same weights as an
//! uninterrupted one.
//!
//! Reproducibility rests on four things: the optimiser walks parameters in name order; the
//! model's dropout is re-seeded before every step from `(seed, global step)`; the data source
//! yields the same batches for the same `(epoch, start batch)`; and checkpoints store weights,
//! optimiser and schedule state exactly (safetensors, and JSON numbers that round-trip).

mod report;
mod run_loop;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use nin_format::files::{CONFIG_JSON, RUN_JSON, TRAINER_STATE_JSON};
use nin_format::{
    create_dir, write_json, write_metrics, Monitor, RunConfig, TestTimeAugment, TrainerState,
};
use nin_layers::ClassMapModel;

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::metrics::Confusion;
use run_loop::Context;

pub use report::{
    Control, EvalReport, Finish, NoProgress, Progress, StartReport, StepReport, TrainOutcome,
};

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

/// Evaluates `model` (dropout off, batch-norm running statistics) over one pass of `data`,
/// averaging the logits over the views `tta` names (the loss is that of the averaged logits).
pub fn evaluate(
    model: &dyn ClassMapModel,
    data: &mut dyn BatchSource,
    device: &Device,
    tta: TestTimeAugment,
) -> Result<EvalReport> {
    let n_classes = model.num_classes();
    let mut confusion = Confusion::new(n_classes);
    for (batch_idx, batch) in data.epoch_batches(0, 0).enumerate() {
        let (xs, ys) = check_batch(batch?, 0, batch_idx, device)?;
        let logits = match tta {
            TestTimeAugment::None => model.forward_t(&xs, false)?,
            TestTimeAugment::Flip => {
                let mirrored = xs.flip(&[3])?;
                ((model.forward_t(&xs, false)? + model.forward_t(&mirrored, false)?)? * 0.5)?
            }
        };
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
    let mut ctx = Context::new(model, varmap, &run, data.batches_per_epoch(), run_dir)?;
    ctx.start(data, eval, progress, false)
}

/// Continues the run in `run_dir` from its last committed checkpoint: reads `run.json` and
/// `trainer_state.json`, loads the checkpoint's weights into `varmap` and its optimiser state
/// into a fresh optimiser, restores the schedule and counters, tidies what an interrupted
/// checkpoint left behind, and trains on from the saved epoch and step.
///
/// `model`, `varmap` and the data sources must be built from `run.json` exactly as the original
/// run built them (same model config, seed, data pipeline and thread count); the final weights
/// are then bit-identical to an uninterrupted run's. A run killed before its first checkpoint
/// starts from step 0; a finished run is checked and reported as [`Finish::AlreadyFinished`].
pub fn resume(
    model: &dyn ClassMapModel,
    varmap: &VarMap,
    data: &mut dyn BatchSource,
    eval: Option<&mut dyn BatchSource>,
    run_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<TrainOutcome> {
    if !run_dir.join(RUN_JSON).is_file() {
        return Err(Error::NoCheckpoint {
            path: run_dir.to_path_buf(),
            file: RUN_JSON,
        });
    }
    let run = RunConfig::load(run_dir)?;
    check_run(model, &run, eval.is_some())?;
    let mut ctx = Context::new(model, varmap, &run, data.batches_per_epoch(), run_dir)?;
    if !run_dir.join(TRAINER_STATE_JSON).is_file() {
        // Killed before the first commit: the model as built is the run's initial state.
        checkpoint::recover(run_dir, None)?;
        return ctx.start(data, eval, progress, true);
    }
    let state = TrainerState::load(run_dir)?;
    check_state(&run, &state, data.batches_per_epoch(), run_dir)?;
    let committed = checkpoint::load(run_dir, &state, varmap, ctx.opt_mut())?;
    checkpoint::recover(run_dir, Some(&committed))?;
    // A kill between the commit and the metrics leaves them one epoch behind.
    write_metrics(run_dir, &state.history)?;
    ctx.restore(committed, &state);
    if state.is_finished(run.recipe.epochs) {
        return Ok(TrainOutcome {
            finish: Finish::AlreadyFinished,
            state,
            last_eval: None,
        });
    }
    ctx.run(state, data, eval, progress, true)
}

/// Checks a committed state against the run and the data source it is resumed with.
fn check_state(
    run: &RunConfig,
    state: &TrainerState,
    batches_per_epoch: usize,
    run_dir: &Path,
) -> Result<()> {
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
    if state.steps_per_epoch != batches_per_epoch {
        return Err(Error::invalid(
            "data source",
            "batches_per_epoch",
            format!(
                "the run was trained with {} batches per epoch ({}), the source now yields {}; \
                 rebuild the data pipeline exactly as run.json records it",
                state.steps_per_epoch,
                state_file.display(),
                batches_per_epoch
            ),
        ));
    }
    Ok(state.validate(run.recipe.epochs)?)
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

/// Writes the run's `config.json`, so the run folder is a model directory from its first
/// checkpoint on.
fn write_config(run: &RunConfig, run_dir: &Path) -> Result<()> {
    Ok(write_json(
        &run_dir.join(CONFIG_JSON),
        &run.model_dir_config(),
    )?)
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
