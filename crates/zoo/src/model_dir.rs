//! Loading a model directory (`config.json` + `model.safetensors`, as timm's Hub repositories
//! and our run folders hold them) into a ready model.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use nin_format::files::MODEL_SAFETENSORS;
use nin_format::ModelDirConfig;
use nin_layers::ClassMapModel;

use crate::error::{Error, Result};
use crate::registry::{find, resolve_args, ModelEntry};

/// A trained model read from disk.
pub struct LoadedModel {
    /// The model, in evaluation use (`forward_t(.., false)`).
    pub model: Box<dyn ClassMapModel>,
    /// Its variables.
    pub varmap: VarMap,
    /// The directory's `config.json`, with `model_args` resolved (a config without them gets
    /// the preset's defaults for its `num_classes`).
    pub config: ModelDirConfig,
    /// The preset.
    pub entry: &'static ModelEntry,
}

/// Loads the model directory `dir` onto `device`. Every tensor the configuration needs must be
/// present with its shape, and no other: errors name the file and the tensor.
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let bad = |reason: String| Error::ModelDir {
        dir: dir.to_path_buf(),
        reason,
    };
    if !dir.is_dir() {
        return Err(bad(
            "not a directory (expected config.json and model.safetensors)".into(),
        ));
    }
    let mut config = ModelDirConfig::load(dir)?;
    let entry = find(&config.model)?;
    if config.model_args.is_null() {
        config.model_args = resolve_args(&config.model, config.num_classes, None)?;
    }
    let args = &config.model_args;
    crate::bounds::check_args(&config.model, args)?;
    crate::bounds::check_size(&config.model, &entry.family.info(&config.model, args)?)?;
    if args.get("num_classes").and_then(|v| v.as_u64()) != Some(config.num_classes as u64) {
        return Err(bad(format!(
            "config.json: num_classes is {} but model_args.num_classes is {}",
            config.num_classes,
            args.get("num_classes").unwrap_or(&serde_json::Value::Null)
        )));
    }
    if !config.label_names.is_empty() && config.label_names.len() != config.num_classes {
        return Err(bad(format!(
            "config.json: {} label_names for {} classes",
            config.label_names.len(),
            config.num_classes
        )));
    }
    let varmap = VarMap::new();
    let vb = nin_layers::seeded_var_builder(&varmap, 0, DType::F32, device);
    let model = entry.family.build(&config.model, args, vb)?;
    nin_layers::weights::load_weights(&dir.join(MODEL_SAFETENSORS), &varmap)?;
    Ok(LoadedModel {
        model,
        varmap,
        config,
        entry,
    })
}
