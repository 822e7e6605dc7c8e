/*!
The zoo: every model of every family by name, loading a trained model directory, and the
inference pipeline ([`Classifier`]: model directory → preprocessed inputs → logits,
probabilities, class maps) that every caller shares.

A model is named by its preset (`nin`, `nin_bn`, …, see [`MODELS`]); its full architecture is the
family's serde `Config`, carried as JSON (`model_args`) so run folders, `config.json` and the CLI
need not know the families' types.

```
use candle_core::Device;
let created = nin_zoo::create_model("nin", 10, None, 0, &Device::Cpu)?;
assert_eq!(created.info.param_count, 966_986);
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bounds;
mod error;
#[cfg(feature = "image")]
mod image;
mod inference;
mod model_dir;
mod registry;

pub use error::{Error, Result};
#[cfg(feature = "image")]
pub use image::{decode_rgb_chw, load_rgb_chw};
pub use inference::{preprocess_of, Classifier, Predictions};
pub use model_dir::{load_model_dir, LoadedModel};
pub use registry::{
    create_model, find, resolve_args, with_batch_norm, CreatedModel, Family, FamilyOf, ModelEntry,
    ModelInfo, MODELS,
};
