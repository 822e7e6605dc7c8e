//! Writing model directories from a training run: the run folder itself and its `best/` copy.
//! The layout and file names are `nin_format::files`'; the weights format is `nin_layers::weights`'.

use std::collections::BTreeMap;
use std::path::Path;

use candle_nn::VarMap;
use nin_format::files::{CONFIG_JSON, MODEL_SAFETENSORS};
use nin_format::{read_bounded, write_atomic, write_json, ModelDirConfig};

use crate::error::Result;

/// The largest file besides the weights that a model directory names (a whitening file of a
/// 3072×3072 float32 matrix is 36 MiB).
const MAX_MODEL_FILE_BYTES: u64 = 256 << 20;

/// Writes a model directory: `model.safetensors`, then `config.json`.
pub fn save_model_dir(
    dir: &Path,
    config: &ModelDirConfig,
    varmap: &VarMap,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    nin_format::create_dir(dir)?;
    nin_layers::weights::save_weights(&dir.join(MODEL_SAFETENSORS), varmap, extra)?;
    write_json(&dir.join(CONFIG_JSON), config)?;
    Ok(())
}

/// Copies the files a model directory needs besides its configuration and weights (those
/// [`ModelDirConfig::files`] names, e.g. the whitening) from `from` into `to`, atomically each.
pub fn copy_model_dir_files(from: &Path, to: &Path, config: &ModelDirConfig) -> Result<()> {
    for name in config.files() {
        if name == CONFIG_JSON || name == MODEL_SAFETENSORS {
            continue;
        }
        let bytes = read_bounded(
            &from.join(name),
            "model-directory file",
            MAX_MODEL_FILE_BYTES,
        )?;
        write_atomic(&to.join(name), &bytes)?;
    }
    Ok(())
}
