//! `run.json`: the full resolved configuration of a training run, written when it starts and
//! read back by `--resume`, `nin eval --split val` and the sweep.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::read_json;
use crate::dataset::{Dataset, Split};
use crate::error::Result;
use crate::files::RUN_JSON;
use crate::model_dir::{ModelDirConfig, PretrainedCfg};
use crate::recipe::Recipe;

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

/// Which images a run trains and evaluates on, so that `--resume` and `nin eval --split val`
/// rebuild exactly the same splits. (Normalisation is `pretrained_cfg`'s; augmentation the
/// recipe's.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// The dataset.
    pub dataset: Dataset,
    /// The archive or folder given with `--data` (`None`: the cache).
    pub data: Option<PathBuf>,
    /// Only the first N training images.
    pub limit_train: Option<usize>,
    /// Only the first N evaluation images.
    pub limit_eval: Option<usize>,
    /// Training images held out as the validation split (drawn with the run seed).
    pub val: Option<usize>,
    /// The split evaluated after each epoch (`val` when `val` is set, else `test`).
    pub eval_split: Split,
}

/// The full resolved configuration of a run (`run.json`).
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
    /// The data the run trains and evaluates on.
    pub data: DataSpec,
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
    /// The pretrained model the run started from (`nin train --init-from`); `None` for a run
    /// initialised from its seed. Absent in `run.json` files written before fine-tuning existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
    /// The processor the run was started on (`AMD EPYC`, …, as the operating system names it),
    /// so that its times can be read against the right machine; absent where unknown and in
    /// `run.json` files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
}

/// Where a fine-tuned run's initial weights came from (`nin train --init-from`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitFrom {
    /// The model as the user named it: a model directory, a registry tag or
    /// `hf-hub:owner/name[@revision]`.
    pub source: String,
    /// Where it resolved to: a canonical local path, or the Hub repository and commit.
    pub origin: String,
    /// The source's preset name (its `config.json` `model`).
    pub model: String,
    /// Names of the tensors copied from the source (name and shape matched), sorted.
    pub kept: Vec<String>,
    /// Names of the tensors left at their seeded initialisation, sorted.
    pub reinitialised: Vec<String>,
    /// Whether the run reuses the source's GCN + ZCA whitening rather than fitting its own.
    #[serde(default)]
    pub whitening_from_source: bool,
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
        read_json(&run_dir.join(RUN_JSON))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Recipe;

    fn run() -> RunConfig {
        RunConfig {
            recipe: Recipe::cpu_quick(),
            model: ModelSpec {
                name: "nin".into(),
                num_classes: 100,
                model_args: serde_json::json!({"num_classes": 100}),
            },
            pretrained_cfg: PretrainedCfg {
                input_size: [3, 32, 32],
                mean: vec![0.5; 3],
                std: vec![0.25; 3],
                whitening: None,
                extra: Default::default(),
            },
            label_names: Vec::new(),
            data: DataSpec {
                dataset: Dataset::Cifar100,
                data: None,
                limit_train: None,
                limit_eval: None,
                val: None,
                eval_split: Split::Test,
            },
            seed: 0,
            threads: 1,
            device: "cpu".into(),
            checkpoint_every_steps: None,
            versions: BTreeMap::new(),
            init_from: None,
            processor: Some("AMD EPYC".into()),
        }
    }

    #[test]
    fn run_json_without_init_from_still_reads_and_a_fine_tuned_one_round_trips() {
        let plain = serde_json::to_value(run()).unwrap();
        assert!(plain.get("init_from").is_none(), "not written when absent");
        let back: RunConfig = serde_json::from_value(plain).unwrap();
        assert_eq!(back.init_from, None);

        let mut tuned = run();
        tuned.init_from = Some(InitFrom {
            source: "runs/nin_cifar10_s0/best".into(),
            origin: "/home/me/runs/nin_cifar10_s0/best".into(),
            model: "nin".into(),
            kept: vec!["mlpconv1.conv.weight".into()],
            reinitialised: vec!["mlpconv3.mlp.1.weight".into()],
            whitening_from_source: false,
        });
        let text = serde_json::to_string(&tuned).unwrap();
        assert_eq!(serde_json::from_str::<RunConfig>(&text).unwrap(), tuned);
    }

    #[test]
    fn run_json_records_the_processor_and_older_files_without_it_still_read() {
        let mut json = serde_json::to_value(run()).unwrap();
        assert_eq!(json["processor"], "AMD EPYC");
        json.as_object_mut().unwrap().remove("processor");
        let back: RunConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back.processor, None);
    }
}
