//! Loading a model directory (`config.json` + `model.safetensors`, as timm's Hub repositories
//! and our run folders hold them) into a ready model. There is one loader, from the files'
//! bytes ([`ModelFiles`]); reading a folder (the `files` feature) only gathers those bytes, so
//! the browser demo, which fetches them, loads exactly what `nin predict` loads.

#[cfg(feature = "files")]
use std::path::Path;
use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use nin_format::files::{CONFIG_JSON, MODEL_SAFETENSORS};
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

/// The files of a model directory as bytes: read from a folder ([`ModelFiles::read`]) or
/// fetched by a browser.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    /// Names the model in errors: the directory, or where the files were fetched from.
    pub source: PathBuf,
    /// `config.json`.
    pub config_json: Vec<u8>,
    /// `model.safetensors`.
    pub model_safetensors: Vec<u8>,
    /// The whitening file that `pretrained_cfg.whitening` names, if it names one.
    pub whitening: Option<Vec<u8>>,
}

impl ModelFiles {
    /// Parses `config.json` (at most [`nin_format::MAX_JSON_BYTES`]).
    pub fn config(&self) -> Result<ModelDirConfig> {
        let path = self.source.join(CONFIG_JSON);
        if self.config_json.len() as u64 > nin_format::MAX_JSON_BYTES {
            return Err(nin_format::Error::TooLarge {
                path,
                what: "JSON file",
                size: self.config_json.len() as u64,
                limit: nin_format::MAX_JSON_BYTES,
            }
            .into());
        }
        serde_json::from_slice(&self.config_json)
            .map_err(|source| nin_format::Error::Json { path, source }.into())
    }

    /// Reads the files of the model directory `dir`: `config.json`, `model.safetensors` and the
    /// whitening file its `pretrained_cfg` names, each through a size cap.
    #[cfg(feature = "files")]
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::ModelDir {
                dir: dir.to_path_buf(),
                reason: "not a directory (expected config.json and model.safetensors)".into(),
            });
        }
        let config_json = nin_format::read_bounded(
            &dir.join(CONFIG_JSON),
            "JSON file",
            nin_format::MAX_JSON_BYTES,
        )?;
        let mut files = ModelFiles {
            source: dir.to_path_buf(),
            config_json,
            model_safetensors: Vec::new(),
            whitening: None,
        };
        let config = files.config()?;
        files.model_safetensors = nin_format::read_bounded(
            &dir.join(MODEL_SAFETENSORS),
            "safetensors file",
            nin_layers::weights::MAX_SAFETENSORS_BYTES,
        )?;
        if let Some(path) = config.whitening_path(dir)? {
            let bytes =
                nin_format::read_bounded(&path, "whitening file", nin_data::MAX_WHITENING_BYTES)
                    .map_err(|e| Error::Whitening {
                        dir: dir.to_path_buf(),
                        path: path.clone(),
                        source: Box::new(nin_data::Error::Format(e)),
                    })?;
            files.whitening = Some(bytes);
        }
        Ok(files)
    }
}

/// Loads the model directory `dir` onto `device`: [`ModelFiles::read`], then
/// [`load_model_files`].
#[cfg(feature = "files")]
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<LoadedModel> {
    load_model_files(&ModelFiles::read(dir)?, device)
}

/// Loads a model directory's files onto `device`. Every tensor the configuration needs must be
/// present with its shape, and no other: errors name the file and the tensor.
pub fn load_model_files(files: &ModelFiles, device: &Device) -> Result<LoadedModel> {
    let dir = files.source.as_path();
    let bad = |reason: String| Error::ModelDir {
        dir: dir.to_path_buf(),
        reason,
    };
    let mut config = files.config()?;
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
    let weights_path = dir.join(MODEL_SAFETENSORS);
    let limit = nin_layers::weights::MAX_SAFETENSORS_BYTES;
    if files.model_safetensors.len() as u64 > limit {
        return Err(nin_format::Error::TooLarge {
            path: weights_path,
            what: "safetensors file",
            size: files.model_safetensors.len() as u64,
            limit,
        }
        .into());
    }
    let loaded = nin_layers::weights::read_safetensors_bytes(
        &weights_path,
        &files.model_safetensors,
        device,
    )?;
    nin_layers::weights::set_weights(
        &weights_path,
        loaded.tensors,
        &nin_layers::weights::named_vars(&varmap),
    )?;
    Ok(LoadedModel {
        model,
        varmap,
        config,
        entry,
    })
}
