/*!
The on-disk contracts of nin-zoo, in one small crate without candle: what a model directory and
a run folder hold, under which names, in which JSON shapes, and how every file is written.

- [`files`]: every file name of a model directory and a run folder.
- [`ModelDirConfig`] (`config.json`, timm's layout) with its [`PretrainedCfg`] and the files it
  names ([`ModelDirConfig::files`]).
- [`RunConfig`] (`run.json`) with its [`ModelSpec`] and typed [`DataSpec`]; [`Recipe`] with its
  [`OptimizerConfig`], [`Schedule`], [`Augment`] and [`InputTransform`].
- [`TrainerState`] (`trainer_state.json`) and the metrics table ([`EpochRecord`],
  [`METRICS_COLUMNS`]).
- [`Dataset`] and [`Split`]: the CIFAR datasets as the formats name them.
- [`write_atomic`]: the one crash-safe writer every crate uses; [`read_bounded`]: reads that
  refuse files larger than their kind can be.

```
use nin_format::{ModelDirConfig, Recipe};

let recipe = Recipe::by_name("paper")?;
assert_eq!(recipe.batch_size, 128);
let cfg: ModelDirConfig = serde_json::from_str(r#"{"architecture": "nin", "num_classes": 10,
    "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}"#)?;
assert_eq!(cfg.files(), ["config.json", "model.safetensors"]);
# Ok::<(), Box<dyn std::error::Error>>(())
```

**Invariant:** nothing here depends on candle, so the sweep (xtask) and other tools read run
folders without linking it.
*/
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod atomic;
mod dataset;
mod error;
pub mod files;
mod metrics;
mod model_dir;
mod recipe;
mod run;
mod schedule;
mod state;

pub use atomic::{
    create_dir, read_bounded, read_json, remove_stale_temp_files, sync_dir, temp_path,
    write_atomic, write_atomic_with, write_json, MAX_JSON_BYTES, TMP_MARKER,
};
pub use dataset::{Dataset, LabelKind, Split, CIFAR10_LABELS, HOME_PAGE, IMAGE_BYTES};
pub use error::{Error, Result};
pub use metrics::{
    read_metrics, to_csv, to_jsonl, write_metrics, EpochRecord, CSV_HEADER, METRICS_COLUMNS,
};
pub use model_dir::{ModelDirConfig, PretrainedCfg};
pub use recipe::{
    Augment, InputTransform, LrMultipliers, OptimizerConfig, Recipe, StemInit, TestTimeAugment,
    DEFAULT_RECIPE, RECIPE_NAMES,
};
pub use run::{DataSpec, InitFrom, ModelSpec, RunConfig};
pub use schedule::{Monitor, Schedule};
pub use state::{EpochProgress, ScheduleState, TrainerState};
