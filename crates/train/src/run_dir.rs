//! The run folder: what a run writes, under which names, and how its weights, configuration and
//! counters are saved and read back, so that `predict` can load it as a model directory and
//! `resume` can pick it up where it stopped.
//!
//! ```text
//! <run>/config.json            model-directory config (model, num_classes, model_args, pretrained_cfg, label_names)
//! <run>/model.safetensors      last checkpoint's weights, PyTorch names, batch-norm statistics included
//! <run>/optimizer.safetensors  optimiser state by parameter name (momentum buffers or Adam moments)
//! <run>/trainer_state.json     counters, schedule state, metric history, best accuracy, seed
//! <run>/run.json               the full resolved run configuration (recipe, model, data, seed, threads, versions)
//! <run>/metrics.csv            one row per epoch, timm-like columns
//! <run>/metrics.jsonl          the same rows as JSON lines
//! <run>/best/config.json       model directory of the best validation top-1 so far
//! <run>/best/model.safetensors
//! ```
//!
//! Every file is written atomically. A checkpoint writes the optimiser state, then the weights,
//! then `trainer_state.json`; all three carry the global step, and `resume` refuses a folder
//! where they disagree (a crash between the three renames).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::atomic::{read_json, read_safetensors, write_atomic, write_json, write_safetensors};
use crate::error::{Error, Result};
use crate::metrics::EpochRecord;
use crate::optim::named_vars;
use crate::recipe::Recipe;
use crate::schedule::ScheduleState;

/// Model-directory configuration.
pub const CONFIG_JSON: &str = "config.json";
/// Model weights.
pub const MODEL_SAFETENSORS: &str = "model.safetensors";
/// Optimiser state.
pub const OPTIMIZER_SAFETENSORS: &str = "optimizer.safetensors";
/// Counters and schedule state.
pub const TRAINER_STATE_JSON: &str = "trainer_state.json";
/// Full resolved run configuration.
pub const RUN_JSON: &str = "run.json";
/// Per-epoch metrics as CSV.
pub const METRICS_CSV: &str = "metrics.csv";
/// Per-epoch metrics as JSON lines.
pub const METRICS_JSONL: &str = "metrics.jsonl";
/// Sub-folder holding the best checkpoint by validation top-1.
pub const BEST_DIR: &str = "best";

/// Which model a run trains, as the model-directory format names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Preset name, e.g. `nin`.
    pub name: String,
    /// Number of classes.
    pub num_classes: usize,
    /// The model's full `Config`, serialised by the model crate.
    pub model_args: serde_json::Value,
}

/// What the model expects of its inputs (timm's `pretrained_cfg`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainedCfg {
    /// `[3, 32, 32]`.
    pub input_size: [usize; 3],
    /// Per-channel mean of `pixel / 255`.
    pub mean: Vec<f64>,
    /// Per-channel standard deviation of `pixel / 255`.
    pub std: Vec<f64>,
    /// File, in the model directory, of the GCN + ZCA whitening (nin-data's `zca.*` tensors)
    /// that replaces mean/std normalisation when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitening: Option<String>,
    /// Further entries (e.g. the names of whitening tensors), kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `config.json` of a model directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDirConfig {
    /// Preset name.
    pub model: String,
    /// Number of classes.
    pub num_classes: usize,
    /// The full model `Config`.
    pub model_args: serde_json::Value,
    /// Input contract.
    pub pretrained_cfg: PretrainedCfg,
    /// One name per class.
    pub label_names: Vec<String>,
}

/// The full resolved configuration of a run, written to `run.json` at the start and read back by
/// `resume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Every training hyper-parameter.
    pub recipe: Recipe,
    /// The model trained.
    pub model: ModelSpec,
    /// Its input contract.
    pub pretrained_cfg: PretrainedCfg,
    /// Class names, in label order.
    pub label_names: Vec<String>,
    /// The data pipeline's own description (dataset, split, preprocessing, augmentation),
    /// recorded as given.
    pub data: serde_json::Value,
    /// The run seed: model init, dropout (re-seeded every step from it) and data order.
    pub seed: u64,
    /// Worker threads; bit-identical results need the same count.
    pub threads: usize,
    /// The device trained on, as the caller names it (`cpu`, `cuda:0`).
    pub device: String,
    /// Also checkpoint every this many steps (besides every epoch end), so a killed run resumes
    /// mid-epoch.
    pub checkpoint_every_steps: Option<usize>,
    /// Software versions (`nin-train` is filled in by the engine; the CLI adds its own).
    pub versions: BTreeMap<String, String>,
}

impl RunConfig {
    /// The `config.json` this run's model directories carry.
    pub fn model_dir_config(&self) -> ModelDirConfig {
        ModelDirConfig {
            model: self.model.name.clone(),
            num_classes: self.model.num_classes,
            model_args: self.model.model_args.clone(),
            pretrained_cfg: self.pretrained_cfg.clone(),
            label_names: self.label_names.clone(),
        }
    }

    /// Reads `run.json` from a run folder.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(RUN_JSON);
        if !path.exists() {
            return Err(Error::NoCheckpoint {
                path: run_dir.to_path_buf(),
                file: RUN_JSON,
            });
        }
        read_json(&path)
    }
}

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
        let path = run_dir.join(TRAINER_STATE_JSON);
        if !path.exists() {
            return Err(Error::NoCheckpoint {
                path: run_dir.to_path_buf(),
                file: TRAINER_STATE_JSON,
            });
        }
        read_json(&path)
    }
}

/// Writes every variable of `varmap` (batch-norm statistics included) to `path`, sorted by name,
/// with metadata `format = pt` plus `extra`.
pub fn save_weights(path: &Path, varmap: &VarMap, extra: &BTreeMap<String, String>) -> Result<()> {
    let tensors: BTreeMap<String, Tensor> = named_vars(varmap)
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().detach()))
        .collect();
    let mut meta = extra.clone();
    meta.insert("format".into(), "pt".into());
    write_safetensors(path, &tensors, &meta)
}

/// Loads weights from `path` into the variables of `varmap`, which must match exactly: every
/// variable present with its shape, and no unknown tensor. Returns the file's metadata.
pub fn load_weights(path: &Path, varmap: &VarMap) -> Result<HashMap<String, String>> {
    let vars = named_vars(varmap);
    let device = vars
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let mut loaded = read_safetensors(path, &device)?;
    for (name, var) in &vars {
        let t = loaded
            .tensors
            .remove(name)
            .ok_or_else(|| Error::MissingTensor {
                file: path.to_path_buf(),
                name: name.clone(),
            })?;
        if t.dims() != var.dims() {
            return Err(Error::ShapeMismatch {
                file: path.to_path_buf(),
                name: name.clone(),
                expected: var.dims().to_vec(),
                got: t.dims().to_vec(),
            });
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    if let Some(name) = loaded.tensors.keys().min() {
        return Err(Error::UnexpectedTensor {
            file: path.to_path_buf(),
            name: name.clone(),
        });
    }
    Ok(loaded.metadata)
}

/// Writes a model directory: `model.safetensors`, then `config.json`.
pub fn save_model_dir(
    dir: &Path,
    config: &ModelDirConfig,
    varmap: &VarMap,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    crate::atomic::create_dir(dir)?;
    save_weights(&dir.join(MODEL_SAFETENSORS), varmap, extra)?;
    write_json(&dir.join(CONFIG_JSON), config)
}

/// Copies the files a model directory needs besides its weights (the whitening, if any) from
/// the model directory `from` into `to`, atomically each.
pub fn copy_model_dir_files(from: &Path, to: &Path, config: &ModelDirConfig) -> Result<()> {
    for name in config.pretrained_cfg.whitening.iter() {
        let src = from.join(name);
        let bytes = std::fs::read(&src).map_err(|e| Error::io("reading", &src, e))?;
        write_atomic(&to.join(name), &bytes)?;
    }
    Ok(())
}

/// Reads a model directory's `config.json`.
pub fn load_model_dir_config(dir: &Path) -> Result<ModelDirConfig> {
    read_json(&dir.join(CONFIG_JSON))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn varmap(shape: (usize, usize)) -> VarMap {
        let vm = VarMap::new();
        vm.get(
            shape,
            "a.weight",
            candle_nn::Init::Const(1.5),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        vm.get(
            2,
            "a.bias",
            candle_nn::Init::Const(0.5),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        vm
    }

    #[test]
    fn weights_round_trip_and_mismatches_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MODEL_SAFETENSORS);
        let src = varmap((2, 3));
        save_weights(
            &path,
            &src,
            &BTreeMap::from([("global_step".into(), "4".into())]),
        )
        .unwrap();
        let dst = VarMap::new();
        dst.get(
            (2, 3),
            "a.weight",
            candle_nn::Init::Const(0.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        dst.get(
            2,
            "a.bias",
            candle_nn::Init::Const(0.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let meta = load_weights(&path, &dst).unwrap();
        assert_eq!(meta["global_step"], "4");
        assert_eq!(meta["format"], "pt");
        let w = named_vars(&dst)[1]
            .1
            .as_tensor()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(w, 9.0);

        let wrong = varmap((3, 2));
        let err = load_weights(&path, &wrong).unwrap_err();
        assert!(
            err.to_string()
                .contains("tensor `a.weight`: expected shape [3, 2], got [2, 3]"),
            "{err}"
        );
        let more = varmap((2, 3));
        more.get(
            1,
            "b.weight",
            candle_nn::Init::Const(0.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let err = load_weights(&path, &more).unwrap_err();
        assert!(
            err.to_string().contains("tensor `b.weight` is missing"),
            "{err}"
        );
    }
}
