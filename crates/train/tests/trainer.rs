//! End-to-end checks of the training loop on a tiny model and synthetic data: learning,
//! bit-exact reproducibility, exact resume after a crash, divergence handling and clean run
//! folders.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::PoisonError;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, Conv2d, VarMap};
use nin_format::{
    DataSpec, Dataset, EpochRecord, ModelSpec, PretrainedCfg, Recipe, RunConfig, Schedule, Split,
};
use nin_layers::weights::load_weights;
use nin_layers::{
    derive_seed, global_avg_pool, seeded_rng, seeded_var_builder, ClassMapModel, Dropout,
    DropoutRng,
};
use nin_train::{
    resume, train, BatchSource, Control, Error, EvalReport, Finish, NoProgress, Progress,
    StepReport,
};
use rand::seq::SliceRandom;
use rand::Rng;

const N_CLASSES: usize = 4;

/// conv 3×3 → batch norm → ReLU → dropout → 1×1 conv to class maps → GAP.
struct Tiny {
    conv: Conv2d,
    bn: BatchNorm,
    drop: Dropout,
    head: Conv2d,
    rng: DropoutRng,
}

impl Tiny {
    fn build(seed: u64) -> candle_core::Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let cfg = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv = candle_nn::conv2d(3, 8, 3, cfg, vb.pp("body.conv"))?;
        let bn = candle_nn::batch_norm(8, 1e-5, vb.pp("body.bn"))?;
        let head = candle_nn::conv2d(8, N_CLASSES, 1, Default::default(), vb.pp("head"))?;
        let rng = DropoutRng::new(seed);
        let drop = Dropout::new(0.2, rng.clone())?;
        Ok((
            Self {
                conv,
                bn,
                drop,
                head,
                rng,
            },
            varmap,
        ))
    }
}

impl ClassMapModel for Tiny {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(global_avg_pool(&self.class_maps(xs, train)?)?)
    }

    fn class_maps(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let xs = self.conv.forward(xs)?;
        let xs = self.bn.forward_t(&xs, train)?.relu()?;
        let xs = self.drop.forward_t(&xs, train)?;
        self.head.forward(&xs)
    }

    fn num_classes(&self) -> usize {
        N_CLASSES
    }

    fn head_prefix(&self) -> &str {
        "head"
    }

    fn dropout_rng(&self) -> &DropoutRng {
        &self.rng
    }

    fn macs_per_image(&self) -> u64 {
        0
    }
}

/// Seeded random 3×8×8 images whose channel means depend on the class; shuffled per epoch.
struct Synthetic {
    images: Vec<f32>,
    labels: Vec<u32>,
    batch: usize,
    shuffle_seed: Option<u64>,
}

impl Synthetic {
    fn new(n: usize, batch: usize, seed: u64, shuffle: bool) -> Self {
        let mut rng = seeded_rng(seed);
        let mut images = Vec::with_capacity(n * 192);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let y = (i % N_CLASSES) as u32;
            for c in 0..3 {
                let shift = match (y, c) {
                    (1, 0) | (2, 1) | (3, 2) => 1.0,
                    (3, 0) => -1.0,
                    _ => 0.0,
                };
                for _ in 0..64 {
                    images.push(shift + rng.random_range(-1.0f32..1.0));
                }
            }
            labels.push(y);
        }
        Self {
            images,
            labels,
            batch,
            shuffle_seed: shuffle.then_some(seed),
        }
    }
}

impl BatchSource for Synthetic {
    fn batches_per_epoch(&self) -> usize {
        self.labels.len().div_ceil(self.batch)
    }

    fn epoch_batches(
        &mut self,
        epoch: usize,
        start_batch: usize,
    ) -> Box<dyn Iterator<Item = nin_train::Result<(Tensor, Tensor)>> + '_> {
        let mut order: Vec<usize> = (0..self.labels.len()).collect();
        if let Some(seed) = self.shuffle_seed {
            order.shuffle(&mut seeded_rng(derive_seed(seed, epoch as u64)));
        }
        let batches: Vec<Vec<usize>> = order.chunks(self.batch).map(<[usize]>::to_vec).collect();
        Box::new(batches.into_iter().skip(start_batch).map(move |idx| {
            let mut xs = Vec::with_capacity(idx.len() * 192);
            for &i in &idx {
                xs.extend_from_slice(&self.images[i * 192..(i + 1) * 192]);
            }
            let ys: Vec<u32> = idx.iter().map(|&i| self.labels[i]).collect();
            let xs = Tensor::from_vec(xs, (idx.len(), 3, 8, 8), &Device::Cpu)?;
            let ys = Tensor::from_vec(ys, idx.len(), &Device::Cpu)?;
            Ok((xs, ys))
        }))
    }
}

fn recipe(epochs: usize, lr: f64) -> Recipe {
    let mut r = Recipe::modern();
    r.name = "test".into();
    r.epochs = epochs;
    r.batch_size = 16;
    r.lr = lr;
    r.schedule = Schedule::Cosine {
        warmup_epochs: 0.5,
        min_lr: 0.0,
    };
    r.lr_multipliers.bias = 2.0;
    r.lr_multipliers.head = 0.5;
    r
}

fn run_config(recipe: Recipe, seed: u64, every: Option<usize>) -> RunConfig {
    RunConfig {
        recipe,
        model: ModelSpec {
            name: "tiny".into(),
            num_classes: N_CLASSES,
            model_args: serde_json::json!({"width": 8}),
        },
        pretrained_cfg: PretrainedCfg {
            input_size: [3, 8, 8],
            mean: vec![0.5; 3],
            std: vec![0.25; 3],
            whitening: None,
            extra: Default::default(),
        },
        label_names: (0..N_CLASSES).map(|i| format!("class{i}")).collect(),
        // The engine never reads the data section (the source is synthetic); the caller's.
        data: DataSpec {
            dataset: Dataset::Cifar10,
            data: None,
            limit_train: None,
            limit_eval: None,
            val: None,
            eval_split: Split::Test,
        },
        seed,
        threads: 1,
        device: "cpu".into(),
        checkpoint_every_steps: every,
        versions: BTreeMap::new(),
    }
}

/// Records every step's loss; optionally crashes (stops without saving) after a given step.
#[derive(Default)]
struct Recorder {
    losses: Vec<(usize, f32)>,
    crash_after: Option<usize>,
    epochs: Vec<EpochRecord>,
    checkpoints: Vec<usize>,
}

impl Progress for Recorder {
    fn on_step(&mut self, r: &StepReport) -> Control {
        self.losses.push((r.global_step, r.loss));
        if self.crash_after == Some(r.global_step) {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn on_epoch_end(&mut self, record: &EpochRecord, _eval: Option<&EvalReport>) -> Control {
        self.epochs.push(record.clone());
        Control::Continue
    }

    fn on_checkpoint(&mut self, global_step: usize, _run_dir: &Path) {
        self.checkpoints.push(global_step);
    }
}

/// Every variable's values as raw bits, sorted by name.
type Bits = Vec<(String, Vec<u32>)>;

fn weights(varmap: &VarMap) -> candle_core::Result<Bits> {
    let vars = varmap.data().lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = Vec::new();
    for (k, v) in vars.iter() {
        let bits = v.flatten_all()?.to_vec1::<f32>()?;
        out.push((k.clone(), bits.iter().map(|x| x.to_bits()).collect()));
    }
    out.sort();
    Ok(out)
}

fn data() -> (Synthetic, Synthetic) {
    (
        Synthetic::new(96, 16, 5, true),
        Synthetic::new(32, 16, 6, false),
    )
}

/// Runs a whole training in `dir`, returning the recorder and the final weights.
fn full_run(dir: &Path, run: &RunConfig) -> nin_train::Result<(Recorder, Bits)> {
    let (model, varmap) = Tiny::build(run.seed)?;
    let (mut train_src, mut eval_src) = data();
    let mut rec = Recorder::default();
    let out = train(
        &model,
        &varmap,
        run,
        &mut train_src,
        Some(&mut eval_src),
        dir,
        &mut rec,
    )?;
    assert_eq!(out.finish, Finish::Completed);
    Ok((rec, weights(&varmap)?))
}

fn no_temp_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "left-over temporary file {name}");
        if entry.file_type()?.is_dir() {
            no_temp_files(&entry.path())?;
        }
    }
    Ok(())
}

#[test]
fn loss_decreases_and_run_folder_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_config(recipe(6, 0.2), 1, None);
    let (rec, _) = full_run(dir.path(), &run).unwrap();
    let first = &rec.epochs[0];
    let last = rec.epochs.last().unwrap();
    assert!(
        last.train_loss < 0.7 * first.train_loss,
        "{first:?} → {last:?}"
    );
    assert!(last.eval_top1.unwrap() > 50.0, "{last:?}");

    // 6 epochs of 6 steps: the committed checkpoint is the last epoch's end, and only it.
    for file in [
        "config.json",
        "model.safetensors",
        "trainer_state.json",
        "run.json",
        "metrics.csv",
        "metrics.jsonl",
        "best/config.json",
        "best/model.safetensors",
        "checkpoints/step-000000036-epoch-0006/model.safetensors",
        "checkpoints/step-000000036-epoch-0006/optimizer.safetensors",
        "checkpoints/step-000000036-epoch-0006/trainer_state.json",
    ] {
        assert!(dir.path().join(file).is_file(), "missing {file}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        std::fs::read(
            dir.path()
                .join("checkpoints/step-000000036-epoch-0006/model.safetensors")
        )
        .unwrap()
    );
    no_temp_files(dir.path()).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7);
    assert!(
        csv.starts_with("epoch,train_loss,train_top1,eval_loss,eval_top1,eval_top5,lr,seconds\n")
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"], "tiny");
    assert_eq!(config["num_classes"], 4);
    assert_eq!(config["model_args"]["width"], 8);
    assert_eq!(
        config["pretrained_cfg"]["input_size"],
        serde_json::json!([3, 8, 8])
    );
    let recorded = RunConfig::load(dir.path()).unwrap();
    assert_eq!(recorded.recipe, run.recipe);
    assert!(recorded.versions.contains_key("nin-train"));

    // The saved model loads into a fresh model, batch-norm statistics included.
    let (_, fresh) = Tiny::build(99).unwrap();
    load_weights(&dir.path().join("best/model.safetensors"), &fresh).unwrap();
    let names: Vec<String> = weights(&fresh)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        names.contains(&"body.bn.running_mean".to_string()),
        "{names:?}"
    );

    // A second `train` into the same folder is refused.
    let (model, varmap) = Tiny::build(1).unwrap();
    let (mut t, _) = data();
    let err = train(
        &model,
        &varmap,
        &run,
        &mut t,
        None,
        dir.path(),
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, Error::RunExists { .. }), "{err}");
}

#[test]
fn same_seed_gives_bit_identical_losses_and_weights() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let run = run_config(recipe(2, 0.1), 7, None);
    let (ra, wa) = full_run(a.path(), &run).unwrap();
    let (rb, wb) = full_run(b.path(), &run).unwrap();
    assert_eq!(
        ra.losses
            .iter()
            .map(|(_, l)| l.to_bits())
            .collect::<Vec<_>>(),
        rb.losses
            .iter()
            .map(|(_, l)| l.to_bits())
            .collect::<Vec<_>>()
    );
    assert_eq!(wa, wb);
    let (_, wc) = full_run(
        tempfile::tempdir().unwrap().path(),
        &run_config(recipe(2, 0.1), 8, None),
    )
    .unwrap();
    assert_ne!(wa, wc);
}

#[test]
fn resume_after_a_crash_ends_with_identical_weights() {
    let every = Some(4);
    let run = run_config(recipe(3, 0.1), 3, every);
    let reference_dir = tempfile::tempdir().unwrap();
    let (reference, reference_weights) = full_run(reference_dir.path(), &run).unwrap();

    // 6 steps per epoch: crash at global step 10 (mid-epoch 2, last checkpoint at step 8).
    let dir = tempfile::tempdir().unwrap();
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, mut e) = data();
    let mut crashing = Recorder {
        crash_after: Some(10),
        ..Default::default()
    };
    let out = train(
        &model,
        &varmap,
        &run,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut crashing,
    )
    .unwrap();
    assert_eq!(out.finish, Finish::Stopped);
    assert_eq!(crashing.checkpoints, vec![0, 4, 6, 8]);

    // A new process: fresh model, fresh data sources, rebuilt from run.json.
    let run_back = RunConfig::load(dir.path()).unwrap();
    let (model, varmap) = Tiny::build(run_back.seed).unwrap();
    let (mut t, mut e) = data();
    let mut resumed = Recorder::default();
    let out = resume(
        &model,
        &varmap,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut resumed,
    )
    .unwrap();
    assert_eq!(out.finish, Finish::Completed);
    assert_eq!(resumed.losses.first().map(|l| l.0), Some(9));
    let tail: Vec<(usize, u32)> = reference.losses[8..]
        .iter()
        .map(|&(s, l)| (s, l.to_bits()))
        .collect();
    let got: Vec<(usize, u32)> = resumed
        .losses
        .iter()
        .map(|&(s, l)| (s, l.to_bits()))
        .collect();
    assert_eq!(got, tail);
    assert_eq!(weights(&varmap).unwrap(), reference_weights);

    // The metrics tables agree with the uninterrupted run, apart from wall-clock seconds.
    let strip = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p.join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(strip(dir.path()), strip(reference_dir.path()));
    assert_eq!(out.state.history.len(), 3);
    no_temp_files(dir.path()).unwrap();

    // Resuming a finished run trains nothing and says so.
    let (model, varmap) = Tiny::build(run_back.seed).unwrap();
    let mut after = Recorder::default();
    let out = resume(
        &model,
        &varmap,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut after,
    )
    .unwrap();
    assert_eq!(out.finish, Finish::AlreadyFinished);
    assert!(after.losses.is_empty() && after.checkpoints.is_empty());
    assert_eq!(out.state.history.len(), 3);
    assert_eq!(weights(&varmap).unwrap(), reference_weights);
}

#[test]
fn resume_after_save_and_stop_at_an_epoch_boundary_with_adamw_and_plateau() {
    let mut r = recipe(3, 0.01);
    r.optimizer = nin_format::OptimizerConfig::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.05,
    };
    r.schedule = Schedule::ReduceOnPlateau {
        monitor: nin_format::Monitor::EvalTop1,
        factor: 0.5,
        patience: 0,
        threshold: 0.0,
        min_lr: 0.0,
    };
    let run = run_config(r, 11, None);
    let (_, reference) = full_run(tempfile::tempdir().unwrap().path(), &run).unwrap();

    struct StopAtEpoch;
    impl Progress for StopAtEpoch {
        fn on_epoch_end(&mut self, record: &EpochRecord, _: Option<&EvalReport>) -> Control {
            if record.epoch == 1 {
                Control::SaveAndStop
            } else {
                Control::Continue
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, mut e) = data();
    let out = train(
        &model,
        &varmap,
        &run,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut StopAtEpoch,
    )
    .unwrap();
    assert_eq!(out.finish, Finish::Stopped);
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, mut e) = data();
    resume(
        &model,
        &varmap,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(weights(&varmap).unwrap(), reference);
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = recipe(2, 1e30);
    r.schedule = Schedule::Constant;
    let run = run_config(r, 2, Some(1));
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, _) = data();
    let err = train(
        &model,
        &varmap,
        &run,
        &mut t,
        None,
        dir.path(),
        &mut NoProgress,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::NonFiniteLoss { .. } | Error::NonFiniteWeights { .. }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("non-finite") && msg.contains("last good checkpoint"),
        "{msg}"
    );

    // The checkpoint on disk is whole, finite and resumable.
    let (_, fresh) = Tiny::build(0).unwrap();
    load_weights(&dir.path().join("model.safetensors"), &fresh).unwrap();
    for (name, bits) in weights(&fresh).unwrap() {
        assert!(
            bits.iter().all(|b| f32::from_bits(*b).is_finite()),
            "{name}"
        );
    }
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, _) = data();
    let err = resume(&model, &varmap, &mut t, None, dir.path(), &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
    no_temp_files(dir.path()).unwrap();
}

#[test]
fn resume_refuses_a_different_data_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_config(recipe(1, 0.1), 4, None);
    full_run(dir.path(), &run).unwrap();
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let mut other = Synthetic::new(64, 16, 5, true);
    let err = resume(
        &model,
        &varmap,
        &mut other,
        None,
        dir.path(),
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("trained with 6 batches per epoch"),
        "{err}"
    );
}

#[test]
fn resume_without_a_run_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (model, varmap) = Tiny::build(0).unwrap();
    let (mut t, _) = data();
    let err = resume(&model, &varmap, &mut t, None, dir.path(), &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("expected run.json"), "{err}");
}
