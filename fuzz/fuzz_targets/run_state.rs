//! The JSON files of a run folder and a model directory as `--resume`, `eval` and the sweep read
//! them (`run.json`, `trainer_state.json`, `config.json`, a recipe file): any bytes must parse and
//! check or give an error; a configuration that checks must resolve its model without aborting.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nin_format::{ModelDirConfig, Recipe, RunConfig, TrainerState};

fuzz_target!(|data: &[u8]| {
    if let Ok(run) = serde_json::from_slice::<RunConfig>(data) {
        if run.recipe.validate().is_ok() {
            let _ = nin_zoo::resolve_args(
                &run.model.name,
                run.model.num_classes,
                Some(&run.model.model_args),
            );
        }
    }
    let _ = serde_json::from_slice::<TrainerState>(data);
    if let Ok(recipe) = serde_json::from_slice::<Recipe>(data) {
        let _ = recipe.validate();
    }
    if let Ok(config) = serde_json::from_slice::<ModelDirConfig>(data) {
        if let Ok(Some(path)) = config.whitening_path(Path::new("/model")) {
            assert!(
                path.starts_with("/model"),
                "{path:?} escapes the model directory"
            );
        }
        if config.model_args.is_object() {
            let _ =
                nin_zoo::resolve_args(&config.model, config.num_classes, Some(&config.model_args));
        }
    }
});
