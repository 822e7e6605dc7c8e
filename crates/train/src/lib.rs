/*!
The training engine of the zoo, which `nin train` drives.

- [`optim`]: [`Sgd`] (momentum, Nesterov, weight decay on weights only) and [`AdamW`], with
  per-parameter learning-rate multipliers and state saved by parameter name; candle's own `SGD`
  has none of this.
- [`schedule`]: [`Schedule`] (constant, step, multi-step, cosine with warm-up, one-cycle,
  reduce-on-plateau), evaluated per iteration.
- [`loss`]: [`cross_entropy`] with label smoothing; top-k helpers.
- [`metrics`]: [`Confusion`] (top-1, top-5, per-class).
- [`run_dir`]: writing the run folder's model directories (the layout, `RunConfig`,
  `TrainerState` and the recipes are `nin-format`'s).
- [`trainer`]: [`train`], [`resume`] and [`evaluate`] over any [`nin_layers::ClassMapModel`] and
  [`BatchSource`], reporting through [`Progress`].
- Checkpoints: written so that a kill at any instant leaves a resumable run (the layout is
  documented in [`nin_format::files`]); [`CheckpointStage`] names the points inside one.

A caller (the CLI) builds the model and its `VarMap` from the run seed, wraps its data pipeline
in a [`BatchSource`], fills a [`nin_format::RunConfig`] and calls [`train`]; to continue a run
it reads [`nin_format::RunConfig::load`], rebuilds the same model and data, and calls [`resume`].

```
use nin_format::Recipe;
use nin_train::LrScheduler;

let recipe = Recipe::by_name("modern").map_err(nin_train::Error::from)?;
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

mod checkpoint;
mod error;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod run_dir;
pub mod schedule;
pub mod trainer;

pub use checkpoint::CheckpointStage;
pub use error::{Error, Result};
pub use loss::{cross_entropy, topk_correct};
pub use metrics::Confusion;
pub use optim::{AdamW, Optimizer, Param, Sgd};
pub use run_dir::{copy_model_dir_files, save_model_dir};
pub use schedule::LrScheduler;
pub use trainer::{
    evaluate, resume, train, BatchSource, Control, EvalReport, Finish, NoProgress, Progress,
    StartReport, StepReport, TrainOutcome,
};
