//! `config.json` of a model directory, in the layout of timm's Hub repositories, and the files it
//! names.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::read_json;
use crate::error::{Error, Result};
use crate::files::{CONFIG_JSON, MODEL_SAFETENSORS};

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
    /// Further entries (e.g. timm's `crop_pct`), kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `config.json` of a model directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDirConfig {
    /// Preset name (timm's `architecture` is read as another name for it).
    #[serde(alias = "architecture")]
    pub model: String,
    /// Number of classes.
    pub num_classes: usize,
    /// The full model `Config`; `null` (or absent) means the preset's defaults for `num_classes`.
    #[serde(default)]
    pub model_args: serde_json::Value,
    /// Input contract.
    pub pretrained_cfg: PretrainedCfg,
    /// One name per class (may be empty).
    #[serde(default)]
    pub label_names: Vec<String>,
}

impl ModelDirConfig {
    /// Reads `config.json` from the model directory `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        read_json(&dir.join(CONFIG_JSON))
    }

    /// Every file the model directory needs, `config.json` first: what a copy or a download of
    /// the model must bring.
    pub fn files(&self) -> Vec<&str> {
        let mut files = vec![CONFIG_JSON, MODEL_SAFETENSORS];
        files.extend(self.pretrained_cfg.whitening.as_deref());
        files
    }

    /// The whitening file of the model directory `dir`, if `pretrained_cfg` names one. The name
    /// must be a plain file name: a model directory never points outside itself.
    pub fn whitening_path(&self, dir: &Path) -> Result<Option<PathBuf>> {
        let Some(name) = &self.pretrained_cfg.whitening else {
            return Ok(None);
        };
        let plain = Path::new(name)
            .file_name()
            .is_some_and(|f| f == name.as_str());
        if !plain || name.starts_with('.') {
            return Err(Error::invalid(
                "config.json",
                "pretrained_cfg.whitening",
                format!("must name a file inside the model directory, got `{name}`"),
            ));
        }
        Ok(Some(dir.join(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> ModelDirConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn timm_style_configs_read_with_defaults() {
        let cfg = config(serde_json::json!({
            "architecture": "nin",
            "num_classes": 10,
            "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        }));
        assert_eq!(cfg.model, "nin");
        assert!(cfg.model_args.is_null());
        assert!(cfg.label_names.is_empty());
        assert_eq!(cfg.files(), ["config.json", "model.safetensors"]);
    }

    #[test]
    fn whitening_must_stay_inside_the_directory() {
        let mut cfg = config(serde_json::json!({
            "model": "nin", "num_classes": 10,
            "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                               "whitening": "whitening.safetensors"},
        }));
        let dir = Path::new("/models/nin");
        assert_eq!(
            cfg.whitening_path(dir).unwrap(),
            Some(dir.join("whitening.safetensors"))
        );
        assert_eq!(cfg.files()[2], "whitening.safetensors");
        for bad in [
            "/etc/passwd",
            "../w.safetensors",
            "sub/w.safetensors",
            "..",
            "",
        ] {
            cfg.pretrained_cfg.whitening = Some(bad.to_string());
            let err = cfg.whitening_path(dir).unwrap_err().to_string();
            assert!(err.contains("pretrained_cfg.whitening"), "{bad}: {err}");
        }
    }
}
