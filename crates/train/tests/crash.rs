//! A run killed at any instant resumes to the weights of an uninterrupted run: the loop is
//! stopped after every single write and rename of every checkpoint (through
//! `Progress::on_checkpoint_stage`, which leaves the files exactly as a kill there would), the
//! temporary files a kill inside an atomic write leaves are added, and the resumed run must end
//! bit for bit where the uninterrupted one did. Also: what resume refuses to trust.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{no_temp_files, recipe, run_config, weights, Bits, Recorder, Synthetic, Tiny};
use nin_format::files::{CHECKPOINTS_DIR, MODEL_SAFETENSORS, OPTIMIZER_SAFETENSORS};
use nin_format::{RunConfig, TrainerState};
use nin_layers::weights::{read_safetensors, write_safetensors};
use nin_train::{
    resume, train, CheckpointStage, Control, Error, Finish, NoProgress, Progress, StepReport,
    TrainOutcome,
};

/// A scratch folder, in memory where the machine has one: these tests write hundreds of
/// checkpoints, and what they check (the files a kill leaves) does not depend on the disk,
/// whose flushes would dominate their time.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// 48 training images in batches of 16: 3 steps per epoch.
fn small_data() -> (Synthetic, Synthetic) {
    (
        Synthetic::new(48, 16, 5, true),
        Synthetic::new(32, 16, 6, false),
    )
}

/// 2 epochs of 3 steps, a checkpoint every 2 steps: checkpoints at steps 0, 2, 3 (epoch end),
/// 4 and 6 (epoch end).
fn small_run() -> RunConfig {
    run_config(recipe(2, 0.1), 3, Some(2))
}

/// Records every checkpoint stage; stops the run at the `stop_at`-th one (1-based), and
/// optionally saves and stops after a given global step.
#[derive(Default)]
struct Stages {
    seen: Vec<CheckpointStage>,
    stop_at: Option<usize>,
    save_and_stop_after: Option<usize>,
}

impl Progress for Stages {
    fn on_step(&mut self, r: &StepReport) -> Control {
        if self.save_and_stop_after == Some(r.global_step) {
            Control::SaveAndStop
        } else {
            Control::Continue
        }
    }

    fn on_checkpoint_stage(&mut self, stage: CheckpointStage) -> Control {
        self.seen.push(stage);
        if self.stop_at == Some(self.seen.len()) {
            Control::Stop
        } else {
            Control::Continue
        }
    }
}

fn train_in(dir: &Path, progress: &mut dyn Progress) -> nin_train::Result<(TrainOutcome, Bits)> {
    let run = small_run();
    let (model, varmap) = Tiny::build(run.seed)?;
    let (mut t, mut e) = small_data();
    let out = train(&model, &varmap, &run, &mut t, Some(&mut e), dir, progress)?;
    Ok((out, weights(&varmap)?))
}

/// Resumes as a new process would: a fresh model and data rebuilt from `run.json`.
fn resume_in(dir: &Path, progress: &mut dyn Progress) -> nin_train::Result<(TrainOutcome, Bits)> {
    let run = RunConfig::load(dir)?;
    let (model, varmap) = Tiny::build(run.seed)?;
    let (mut t, mut e) = small_data();
    let out = resume(&model, &varmap, &mut t, Some(&mut e), dir, progress)?;
    Ok((out, weights(&varmap)?))
}

/// The tensors of a safetensors file as raw bits, and its metadata (whose order in the file
/// is not fixed, so files are compared by contents, not bytes).
type FileBits = (BTreeMap<String, String>, Bits);

fn file_bits(path: &Path) -> FileBits {
    let loaded = read_safetensors(path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bits: Bits = loaded
        .tensors
        .into_iter()
        .map(|(k, t)| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (k, v.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    bits.sort();
    (loaded.metadata.into_iter().collect(), bits)
}

/// What must match an uninterrupted run at the end, file for file (wall-clock seconds aside).
#[derive(PartialEq)]
struct Ending {
    weights: Bits,
    root_model: FileBits,
    best_model: FileBits,
    metrics: Vec<String>,
    checkpoints: Vec<String>,
}

/// Names the parts that differ (the tensors themselves are too long to print).
fn assert_same(got: &Ending, expected: &Ending, what: &str) {
    let differs: Vec<&str> = [
        ("weights in memory", got.weights == expected.weights),
        ("model.safetensors", got.root_model == expected.root_model),
        (
            "best/model.safetensors",
            got.best_model == expected.best_model,
        ),
        ("metrics", got.metrics == expected.metrics),
        ("checkpoints", got.checkpoints == expected.checkpoints),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(name, _)| name)
    .collect();
    assert!(
        differs.is_empty(),
        "{what}: {differs:?} differ from the uninterrupted run's (metrics {:?} vs {:?}, \
         checkpoints {:?} vs {:?})",
        got.metrics,
        expected.metrics,
        got.checkpoints,
        expected.checkpoints
    );
}

fn ending(dir: &Path, weights: Bits) -> std::io::Result<Ending> {
    let metrics = fs::read_to_string(dir.join("metrics.csv"))?
        .lines()
        .map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head).to_string())
        .collect();
    let mut checkpoints: Vec<String> = fs::read_dir(dir.join(CHECKPOINTS_DIR))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    checkpoints.sort();
    Ok(Ending {
        weights,
        root_model: file_bits(&dir.join(MODEL_SAFETENSORS)),
        best_model: file_bits(&dir.join("best").join(MODEL_SAFETENSORS)),
        metrics,
        checkpoints,
    })
}

/// Adds what a kill inside an atomic write leaves: half-written temporary files beside the
/// root files and in `best/`, and a half-written temporary checkpoint folder.
fn litter(dir: &Path) -> std::io::Result<()> {
    fs::write(dir.join(".model.safetensors.tmp-4242-0"), b"half a model")?;
    fs::write(dir.join(".trainer_state.json.tmp-4242-1"), b"{\"epoch\":")?;
    if dir.join("best").is_dir() {
        fs::write(dir.join("best/.model.safetensors.tmp-4242-2"), b"half")?;
    }
    let half = dir
        .join(CHECKPOINTS_DIR)
        .join(".step-000000099-epoch-0009.tmp-4242-3");
    fs::create_dir_all(&half)?;
    fs::write(half.join(MODEL_SAFETENSORS), b"half")?;
    Ok(())
}

fn reference() -> (tempfile::TempDir, Vec<CheckpointStage>, Ending) {
    let dir = scratch();
    let mut stages = Stages::default();
    let (out, bits) = train_in(dir.path(), &mut stages).unwrap();
    assert_eq!(out.finish, Finish::Completed);
    let end = ending(dir.path(), bits).unwrap();
    (dir, stages.seen, end)
}

#[test]
fn a_kill_after_any_write_of_any_checkpoint_resumes_to_the_uninterrupted_weights() {
    let (_ref_dir, stages, expected) = reference();
    // 5 checkpoints of 7 stages; best/ at both epoch ends (if improved) and metrics twice.
    assert!(stages.len() >= 5 * 7 + 2, "{stages:?}");
    assert_eq!(expected.checkpoints, ["step-000000006-epoch-0002"]);
    let last_commit = stages
        .iter()
        .rposition(|s| *s == CheckpointStage::Committed)
        .unwrap();
    for stop_at in 1..=stages.len() {
        let what = format!("killed at stage {stop_at} ({:?})", stages[stop_at - 1]);
        let dir = scratch();
        let mut crashing = Stages {
            stop_at: Some(stop_at),
            ..Default::default()
        };
        let (out, _) = train_in(dir.path(), &mut crashing).unwrap();
        assert_eq!(out.finish, Finish::Stopped, "{what}");
        assert_eq!(crashing.seen, stages[..stop_at], "{what}");
        litter(dir.path()).unwrap();

        let (out, bits) = resume_in(dir.path(), &mut NoProgress)
            .unwrap_or_else(|e| panic!("{what}: resume failed: {e}"));
        let finish = if stop_at > last_commit {
            Finish::AlreadyFinished
        } else {
            Finish::Completed
        };
        assert_eq!(out.finish, finish, "{what}");
        assert_same(&ending(dir.path(), bits).unwrap(), &expected, &what);
        no_temp_files(dir.path()).unwrap();
    }
}

#[test]
fn a_run_killed_again_and_again_while_resuming_ends_with_the_same_weights() {
    let (_ref_dir, _, expected) = reference();
    let dir = scratch();
    // Every process commits at least its first checkpoint (at most 7 stages with best/), then
    // dies somewhere inside its second.
    let mut kills = 0;
    let mut outcome = None;
    for attempt in 0..60 {
        let mut crashing = Stages {
            stop_at: Some(8 + attempt % 7),
            ..Default::default()
        };
        let (out, bits) = if attempt == 0 {
            train_in(dir.path(), &mut crashing).unwrap()
        } else {
            resume_in(dir.path(), &mut crashing).unwrap()
        };
        if out.finish == Finish::Stopped {
            kills += 1;
            litter(dir.path()).unwrap();
            continue;
        }
        outcome = Some((out, bits));
        break;
    }
    let (out, bits) = outcome.expect("the run finishes");
    assert!(kills >= 3, "{kills}");
    assert_eq!(out.finish, Finish::Completed);
    assert_same(
        &ending(dir.path(), bits).unwrap(),
        &expected,
        "killed again and again",
    );
    no_temp_files(dir.path()).unwrap();
}

#[test]
fn a_kill_after_an_interrupt_at_the_end_of_an_epoch_resumes_too() {
    // Saving after the last step of epoch 1 and the end of epoch 1 share the step count (3):
    // their checkpoints have different folders, and a kill between them loses nothing.
    let (_ref_dir, _, expected) = reference();
    for stop_at in 1..=8 {
        let dir = scratch();
        let mut interrupted = Stages {
            save_and_stop_after: Some(3),
            ..Default::default()
        };
        let (out, _) = train_in(dir.path(), &mut interrupted).unwrap();
        assert_eq!(out.finish, Finish::Stopped);
        let committed = TrainerState::load(dir.path()).unwrap();
        assert_eq!((committed.epoch, committed.step_in_epoch), (0, 3));

        let mut crashing = Stages {
            stop_at: Some(stop_at),
            ..Default::default()
        };
        let (out, _) = resume_in(dir.path(), &mut crashing).unwrap();
        assert_eq!(out.finish, Finish::Stopped, "stage {stop_at}");
        let (out, bits) = resume_in(dir.path(), &mut NoProgress).unwrap();
        assert_eq!(out.finish, Finish::Completed);
        let what = format!("killed at stage {stop_at} ({:?})", crashing.seen.last());
        assert_same(&ending(dir.path(), bits).unwrap(), &expected, &what);
    }
}

/// A run stopped (as a kill would) after global step 4, its last checkpoint at step 4.
fn crashed_run() -> (tempfile::TempDir, PathBuf) {
    let dir = scratch();
    let mut crashing = Recorder {
        crash_after: Some(5),
        ..Default::default()
    };
    let run = small_run();
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, mut e) = small_data();
    train(
        &model,
        &varmap,
        &run,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut crashing,
    )
    .unwrap();
    let folder = dir
        .path()
        .join(CHECKPOINTS_DIR)
        .join("step-000000004-epoch-0001");
    assert!(folder.is_dir());
    (dir, folder)
}

/// Rewrites a safetensors file through `edit`, keeping its metadata.
fn edit_tensors(path: &Path, edit: impl FnOnce(&mut BTreeMap<String, candle_core::Tensor>)) {
    let loaded = read_safetensors(path, &candle_core::Device::Cpu).unwrap();
    let mut tensors: BTreeMap<_, _> = loaded.tensors.into_iter().collect();
    edit(&mut tensors);
    let meta: BTreeMap<_, _> = loaded.metadata.into_iter().collect();
    write_safetensors(path, &tensors, &meta).unwrap();
}

fn resume_error(dir: &Path) -> Error {
    match resume_in(dir, &mut NoProgress) {
        Ok((out, _)) => panic!("resume should fail, got {:?}", out.finish),
        Err(e) => e,
    }
}

#[test]
fn resume_refuses_a_state_past_the_end_of_the_run() {
    let (dir, _) = crashed_run();
    let path = dir.path().join("trainer_state.json");
    let mut state = TrainerState::load(dir.path()).unwrap();
    state.epoch = 5;
    state.global_step = 15;
    fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let err = resume_error(dir.path()).to_string();
    assert!(
        err.contains("trainer_state.json")
            && err.contains("`epoch` is 5 (step 1 of it), past the end of the run's 2 epochs"),
        "{err}"
    );
}

#[test]
fn resume_refuses_a_dropped_momentum_buffer_naming_it() {
    let (dir, folder) = crashed_run();
    edit_tensors(&folder.join(OPTIMIZER_SAFETENSORS), |t| {
        t.remove("body.conv.weight.momentum_buffer");
    });
    let err = resume_error(dir.path());
    assert!(matches!(err, Error::MissingOptimizerState { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("optimizer.safetensors")
            && msg.contains("tensor `body.conv.weight.momentum_buffer` is missing")
            && msg.contains("taken 4 steps"),
        "{msg}"
    );
}

#[test]
fn resume_refuses_non_finite_checkpoint_tensors() {
    let (dir, folder) = crashed_run();
    edit_tensors(&folder.join(MODEL_SAFETENSORS), |t| {
        let nan =
            candle_core::Tensor::full(f32::NAN, t["head.bias"].dims(), &candle_core::Device::Cpu)
                .unwrap();
        t.insert("head.bias".into(), nan);
    });
    let err = resume_error(dir.path());
    assert!(
        matches!(err, Error::Layers(nin_layers::Error::BadTensor { ref name, .. }) if name == "head.bias"),
        "{err}"
    );
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    let (dir, folder) = crashed_run();
    edit_tensors(&folder.join(OPTIMIZER_SAFETENSORS), |t| {
        let inf = candle_core::Tensor::full(
            f32::INFINITY,
            t["head.bias.momentum_buffer"].dims(),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        t.insert("head.bias.momentum_buffer".into(), inf);
    });
    let err = resume_error(dir.path());
    assert!(
        matches!(err, Error::NonFiniteTensor { ref name, .. } if name == "head.bias.momentum_buffer"),
        "{err}"
    );
}

#[test]
fn resume_refuses_a_committed_checkpoint_that_is_missing_or_disagrees() {
    let (dir, folder) = crashed_run();
    fs::remove_dir_all(&folder).unwrap();
    let err = resume_error(dir.path()).to_string();
    assert!(
        err.contains("step-000000004-epoch-0001") && err.contains("is missing"),
        "{err}"
    );

    let (dir, folder) = crashed_run();
    let mut state = TrainerState::load(&folder).unwrap();
    state.best_eval_top1 = Some(99.0);
    fs::write(
        folder.join("trainer_state.json"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    let err = resume_error(dir.path()).to_string();
    assert!(err.contains("differs from the run folder's"), "{err}");
}

#[test]
fn a_run_folder_of_the_layout_before_checkpoint_folders_still_resumes() {
    let (_ref_dir, _, expected) = reference();
    let (dir, folder) = crashed_run();
    // The old layout: the committed tensors at the root, no checkpoints/.
    fs::copy(
        folder.join(MODEL_SAFETENSORS),
        dir.path().join(MODEL_SAFETENSORS),
    )
    .unwrap();
    fs::copy(
        folder.join(OPTIMIZER_SAFETENSORS),
        dir.path().join(OPTIMIZER_SAFETENSORS),
    )
    .unwrap();
    fs::remove_dir_all(dir.path().join(CHECKPOINTS_DIR)).unwrap();
    let (out, bits) = resume_in(dir.path(), &mut NoProgress).unwrap();
    assert_eq!(out.finish, Finish::Completed);
    assert_same(&ending(dir.path(), bits).unwrap(), &expected, "old layout");
    assert!(!dir.path().join(OPTIMIZER_SAFETENSORS).exists());
}
