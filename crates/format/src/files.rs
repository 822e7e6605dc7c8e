//! Every file name of a model directory and a run folder, in one place.
//!
//! ```text
//! <model dir>/config.json              ModelDirConfig: model, num_classes, model_args, pretrained_cfg, label_names
//! <model dir>/model.safetensors        weights by PyTorch name, batch-norm statistics included
//! <model dir>/whitening.safetensors    the GCN + ZCA transform, when pretrained_cfg.whitening names it
//!
//! <run>/                               a model directory (the last checkpoint's weights), plus:
//! <run>/optimizer.safetensors          optimiser state by parameter name
//! <run>/trainer_state.json             TrainerState: counters, schedule state, metric history
//! <run>/run.json                       RunConfig: recipe, model, data, seed, threads, versions
//! <run>/metrics.csv, metrics.jsonl     one row per finished epoch (METRICS_COLUMNS)
//! <run>/best/                          model directory of the best evaluation top-1 so far
//! ```
//!
//! **API boundary:** the run-folder layout and these names; the sweep and users' scripts rely on
//! them.

/// Model-directory configuration ([`crate::ModelDirConfig`]).
pub const CONFIG_JSON: &str = "config.json";
/// Model weights.
pub const MODEL_SAFETENSORS: &str = "model.safetensors";
/// The GCN + ZCA transform of a model trained on whitened inputs.
pub const WHITENING_SAFETENSORS: &str = "whitening.safetensors";
/// Optimiser state.
pub const OPTIMIZER_SAFETENSORS: &str = "optimizer.safetensors";
/// Counters and schedule state ([`crate::TrainerState`]).
pub const TRAINER_STATE_JSON: &str = "trainer_state.json";
/// Full resolved run configuration ([`crate::RunConfig`]).
pub const RUN_JSON: &str = "run.json";
/// Per-epoch metrics as CSV.
pub const METRICS_CSV: &str = "metrics.csv";
/// Per-epoch metrics as JSON lines.
pub const METRICS_JSONL: &str = "metrics.jsonl";
/// Sub-folder holding the best checkpoint by evaluation top-1.
pub const BEST_DIR: &str = "best";
