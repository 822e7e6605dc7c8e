/*!
The training engine of the zoo, shared by the `nin` CLI and the sweep.

- [`optim`]: [`Sgd`] (momentum, Nesterov, weight decay on weights only) and [`AdamW`], with
  per-parameter learning-rate multipliers and state saved by parameter name; candle's own `SGD`
  has none of this.
- [`schedule`]: [`Schedule`] (constant, step, multi-step, cosine with warm-up, one-cycle,
  reduce-on-plateau), evaluated per iteration.
- [`loss`]: [`cross_entropy`] with label smoothing; top-k helpers.
- [`metrics`]: [`Confusion`] (top-1, top-5, per-class), [`EpochRecord`] and the CSV/JSON-lines
  metrics files.
- [`recipe`]: [`Recipe`] with the named recipes `paper`, `modern` and `cpu_quick`.
- [`run_dir`]: the run-folder layout, model directories, [`RunConfig`] and [`TrainerState`].
- [`trainer`]: [`train`], [`resume`] and [`evaluate`] over any [`nin_layers::ClassMapModel`] and
  [`BatchSource`], reporting through [`Progress`].

A caller (the CLI) builds the model and its `VarMap` from the run seed, wraps its data pipeline
in a [`BatchSource`], fills a [`RunConfig`] and calls [`train`]; to continue a run it reads
[`RunConfig::load`], rebuilds the same model and data, and calls [`resume`].

```
use nin_train::{LrScheduler, Recipe};

let recipe = Recipe::by_name("modern")?;
let sched = LrScheduler::new(recipe.schedule.clone(), recipe.lr, recipe.epochs, 391)?;
assert!(sched.lr(0, 0) < recipe.lr); // warming up
assert_eq!(sched.lr(5, 0), recipe.lr); // warm-up done
# Ok::<(), nin_train::Error>(())
```

**Invariants:** the engine never prints; every file is written atomically; the same seed,
thread count and machine give bit-identical losses and weights, across interruptions too.
*/
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod atomic;
mod error;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod recipe;
pub mod run_dir;
pub mod schedule;
pub mod trainer;

pub use atomic::{
    read_json, read_safetensors, write_atomic, write_json, write_safetensors, LoadedTensors,
};
pub use error::{Error, Result};
pub use loss::{cross_entropy, topk_correct};
pub use metrics::{Confusion, EpochRecord};
pub use optim::{AdamW, LrMultipliers, Optimizer, OptimizerConfig, Param, Sgd};
pub use recipe::{Augment, InputTransform, Recipe, RECIPE_NAMES};
pub use run_dir::{
    copy_model_dir_files, load_model_dir_config, load_weights, save_model_dir, save_weights,
    EpochProgress, ModelDirConfig, ModelSpec, PretrainedCfg, RunConfig, TrainerState,
};
pub use schedule::{LrScheduler, Monitor, Schedule, ScheduleState};
pub use trainer::{
    evaluate, resume, train, BatchSource, Control, EvalReport, Finish, NoProgress, Progress,
    StartReport, StepReport, TrainOutcome,
};
