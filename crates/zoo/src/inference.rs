//! The inference pipeline every caller shares (`nin eval`, `nin predict`, and the explainer, Hub
//! loader and browser demo to come): load a model directory, turn pixels into inputs exactly as
//! the model was trained (mean/std, or GCN + ZCA from its whitening file), and get logits,
//! probabilities and class maps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use nin_data::{Normalize, Preprocess, Zca};
use nin_format::{ModelDirConfig, PretrainedCfg};

use crate::error::{Error, Result};
use crate::model_dir::{load_model_files, LoadedModel, ModelFiles};

/// The largest input side a model directory may ask for (the zoo's models take 32×32 images).
const MAX_INPUT_SIDE: usize = 1024;

/// A model directory loaded with its input transform, ready to classify.
pub struct Classifier {
    loaded: LoadedModel,
    dir: PathBuf,
    preprocess: Preprocess,
    device: Device,
}

/// What a model says about a batch of images.
#[derive(Clone, Debug)]
pub struct Predictions {
    /// `[N, C]` logits (each the mean of its class map).
    pub logits: Vec<Vec<f32>>,
    /// `[N, C]` softmax of the logits.
    pub probabilities: Vec<Vec<f32>>,
    /// `[N, C, h, w]` class maps, on the model's device.
    pub class_maps: Tensor,
}

impl Predictions {
    /// The `k` most probable classes of image `i` as `(class, probability)`, most probable
    /// first (`k` is clamped to the number of classes).
    pub fn top_k(&self, i: usize, k: usize) -> Vec<(usize, f32)> {
        let Some(probs) = self.probabilities.get(i) else {
            return Vec::new();
        };
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        order
            .into_iter()
            .take(k.min(probs.len()))
            .map(|c| (c, probs[c]))
            .collect()
    }
}

impl Classifier {
    /// Loads the model directory `dir` onto `device`, with the input transform its
    /// `pretrained_cfg` names: reads its files ([`ModelFiles::read`]), then
    /// [`Self::from_files`].
    #[cfg(feature = "files")]
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::from_files(&ModelFiles::read(dir)?, device)
    }

    /// Loads a model directory's files (read from a folder, or fetched by a browser) onto
    /// `device`, with the input transform its `pretrained_cfg` names.
    pub fn from_files(files: &ModelFiles, device: &Device) -> Result<Self> {
        let loaded = load_model_files(files, device)?;
        let preprocess = preprocess_from(files, &loaded.config)?;
        Ok(Self {
            loaded,
            dir: files.source.clone(),
            preprocess,
            device: device.clone(),
        })
    }

    /// The model.
    pub fn model(&self) -> &dyn nin_layers::ClassMapModel {
        self.loaded.model.as_ref()
    }

    /// The directory's `config.json` (with `model_args` resolved).
    pub fn config(&self) -> &ModelDirConfig {
        &self.loaded.config
    }

    /// The model directory it was loaded from (for files fetched by a browser, where from).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The preset.
    pub fn entry(&self) -> &'static crate::ModelEntry {
        self.loaded.entry
    }

    /// How pixels become the model's inputs, for a data loader that batches a dataset.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// `(height, width)` of the model's input.
    pub fn input_size(&self) -> (usize, usize) {
        let [_, h, w] = self.loaded.config.pretrained_cfg.input_size;
        (h, w)
    }

    /// The name of class `i` (`class i` when the directory names none).
    pub fn label(&self, i: usize) -> String {
        self.loaded
            .config
            .label_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
    }

    /// Turns whole images of `u8` pixels, CHW at the model's input size, into the model's input
    /// batch `[N, 3, H, W]` on its device, as training's data pipeline did.
    pub fn inputs_from_pixels(&self, pixels: &[u8]) -> Result<Tensor> {
        let (h, w) = self.input_size();
        let per_image = 3 * h * w;
        if pixels.is_empty() || pixels.len() % per_image != 0 {
            return Err(Error::ModelDir {
                dir: self.dir.clone(),
                reason: format!(
                    "expected whole 3×{h}×{w} images ({per_image} bytes each), got {} bytes",
                    pixels.len()
                ),
            });
        }
        let n = pixels.len() / per_image;
        let inputs = match &self.preprocess {
            Preprocess::Normalize(norm) => norm.apply_planes(pixels, h * w),
            Preprocess::GcnZca(zca) => zca.apply_images(pixels)?,
        };
        Ok(Tensor::from_vec(inputs, (n, 3, h, w), &Device::Cpu)?.to_device(&self.device)?)
    }

    /// Classifies an input batch `[N, 3, H, W]`: class maps, their means (the logits) and the
    /// probabilities. Refuses to report non-finite outputs.
    pub fn classify(&self, inputs: &Tensor) -> Result<Predictions> {
        let class_maps = self.loaded.model.class_maps(inputs, false)?;
        let logits = nin_layers::global_avg_pool(&class_maps)?;
        let probabilities = candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?;
        let logits = logits.to_vec2::<f32>()?;
        if logits.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                dir: self.dir.clone(),
                what: "logits",
            });
        }
        Ok(Predictions {
            logits,
            probabilities,
            class_maps,
        })
    }

    /// Reads a PNG or JPEG file of any size and stretches it (not cropped) to the model's input
    /// size with a triangle (bilinear) filter: CHW `u8` pixels for [`Self::inputs_from_pixels`].
    #[cfg(all(feature = "image", feature = "files"))]
    pub fn load_image(&self, path: &Path) -> Result<Vec<u8>> {
        let (h, w) = self.input_size();
        crate::image::load_rgb_chw(path, h, w)
    }
}

/// How the model directory `dir` wants pixels turned into inputs: its whitening file if its
/// `pretrained_cfg` names one, else mean/std normalisation.
#[cfg(feature = "files")]
pub fn preprocess_of(dir: &Path, config: &ModelDirConfig) -> Result<Preprocess> {
    let whitening = match config.whitening_path(dir)? {
        Some(path) => Some(
            nin_format::read_bounded(&path, "whitening file", nin_data::MAX_WHITENING_BYTES)
                .map_err(|e| Error::Whitening {
                    dir: dir.to_path_buf(),
                    path: path.clone(),
                    source: Box::new(nin_data::Error::Format(e)),
                })?,
        ),
        None => None,
    };
    let files = ModelFiles {
        source: dir.to_path_buf(),
        config_json: Vec::new(),
        model_safetensors: Vec::new(),
        whitening,
    };
    preprocess_from(&files, config)
}

/// The input transform of a model directory's files: the whitening file if `config` names one
/// (its bytes are `files.whitening`), else mean/std normalisation.
pub fn preprocess_from(files: &ModelFiles, config: &ModelDirConfig) -> Result<Preprocess> {
    let dir = files.source.as_path();
    let cfg = &config.pretrained_cfg;
    let [channels, height, width] = cfg.input_size;
    let bad = |reason: String| Error::ModelDir {
        dir: dir.to_path_buf(),
        reason,
    };
    if channels != 3
        || !(1..=MAX_INPUT_SIDE).contains(&height)
        || !(1..=MAX_INPUT_SIDE).contains(&width)
    {
        return Err(bad(format!(
            "config.json: pretrained_cfg.input_size must be [3, H, W] with H and W from 1 to {MAX_INPUT_SIDE}, got {:?}",
            cfg.input_size
        )));
    }
    crate::bounds::check_input_size(&config.model, &config.model_args, height, width)?;
    Ok(match config.whitening_path(dir)? {
        Some(path) => {
            if [height, width] != [32, 32] {
                return Err(bad(format!(
                    "config.json: a whitened model takes 32×32 inputs, but pretrained_cfg.input_size is {:?}",
                    cfg.input_size
                )));
            }
            let whitening_error = |source| Error::Whitening {
                dir: dir.to_path_buf(),
                path: path.clone(),
                source: Box::new(source),
            };
            let bytes = files.whitening.as_deref().ok_or_else(|| {
                whitening_error(nin_data::Error::Whitening {
                    path: path.clone(),
                    reason: "missing".into(),
                })
            })?;
            let zca = Zca::from_bytes(bytes, &path).map_err(whitening_error)?;
            Preprocess::GcnZca(Arc::new(zca))
        }
        None => Preprocess::Normalize(normalize_of(dir, cfg)?),
    })
}

/// The normalisation a model directory's `pretrained_cfg` asks for.
fn normalize_of(dir: &Path, cfg: &PretrainedCfg) -> Result<Normalize> {
    let three = |v: &[f64], field: &str| -> Result<[f32; 3]> {
        match v {
            [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
            _ => Err(Error::ModelDir {
                dir: dir.to_path_buf(),
                reason: format!(
                    "config.json: pretrained_cfg.{field} must have 3 entries, got {}",
                    v.len()
                ),
            }),
        }
    };
    Normalize::new(three(&cfg.mean, "mean")?, three(&cfg.std, "std")?).map_err(|e| {
        Error::ModelDir {
            dir: dir.to_path_buf(),
            reason: format!("config.json: pretrained_cfg: {e}"),
        }
    })
}
