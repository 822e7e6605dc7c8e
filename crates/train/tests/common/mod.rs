//! What the engine's integration tests share: a tiny model, seeded synthetic data, a run
//! configuration, a recording progress and bit-level weight comparison.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::PoisonError;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, Conv2d, VarMap};
use nin_format::{
    DataSpec, Dataset, EpochRecord, ModelSpec, PretrainedCfg, Recipe, RunConfig, Schedule, Split,
};
use nin_layers::{
    derive_seed, global_avg_pool, seeded_rng, seeded_var_builder, ClassMapModel, Dropout,
    DropoutRng,
};
use nin_train::{train, BatchSource, Control, EvalReport, Finish, Progress, StepReport};
use rand::seq::SliceRandom;
use rand::Rng;

pub const N_CLASSES: usize = 4;

/// conv 3×3 → batch norm → ReLU → dropout → 1×1 conv to class maps → GAP.
pub struct Tiny {
    conv: Conv2d,
    bn: BatchNorm,
    drop: Dropout,
    head: Conv2d,
    rng: DropoutRng,
}

impl Tiny {
    pub fn build(seed: u64) -> candle_core::Result<(Self, VarMap)> {
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
pub struct Synthetic {
    images: Vec<f32>,
    labels: Vec<u32>,
    batch: usize,
    shuffle_seed: Option<u64>,
}

impl Synthetic {
    pub fn new(n: usize, batch: usize, seed: u64, shuffle: bool) -> Self {
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

pub fn recipe(epochs: usize, lr: f64) -> Recipe {
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

pub fn run_config(recipe: Recipe, seed: u64, every: Option<usize>) -> RunConfig {
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
        init_from: None,
        processor: None,
    }
}

/// Records every step's loss; optionally crashes (stops without saving) after a given step.
#[derive(Default)]
pub struct Recorder {
    pub losses: Vec<(usize, f32)>,
    pub crash_after: Option<usize>,
    pub epochs: Vec<EpochRecord>,
    pub checkpoints: Vec<usize>,
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
pub type Bits = Vec<(String, Vec<u32>)>;

pub fn weights(varmap: &VarMap) -> candle_core::Result<Bits> {
    let vars = varmap.data().lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = Vec::new();
    for (k, v) in vars.iter() {
        let bits = v.flatten_all()?.to_vec1::<f32>()?;
        out.push((k.clone(), bits.iter().map(|x| x.to_bits()).collect()));
    }
    out.sort();
    Ok(out)
}

pub fn data() -> (Synthetic, Synthetic) {
    (
        Synthetic::new(96, 16, 5, true),
        Synthetic::new(32, 16, 6, false),
    )
}

/// Runs a whole training in `dir`, returning the recorder and the final weights.
pub fn full_run(dir: &Path, run: &RunConfig) -> nin_train::Result<(Recorder, Bits)> {
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

pub fn no_temp_files(dir: &Path) -> std::io::Result<()> {
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
