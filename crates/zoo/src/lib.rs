/*!
The zoo: every model of every family by name, loading a trained model directory, and the
inference pipeline ([`Classifier`]: model directory → preprocessed inputs → logits,
probabilities, class maps) that every caller shares, and class activation maps ([`cam`]: class
maps as heat maps over the image).

Trained weights are named `arch.tag` ([`PRETRAINED`]); what a user passes as a model (a model
directory, a tag, or `hf-hub:owner/name[@revision]`) resolves to a local model directory with
[`resolve_model_spec`], downloading from the Hugging Face Hub into its standard cache with the
default `hub` feature.

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
pub mod cam;
mod error;
#[cfg(feature = "hub")]
mod hub;
#[cfg(feature = "image")]
mod image;
mod inference;
mod model_dir;
#[cfg(feature = "files")]
mod model_spec;
mod pretrained;
mod registry;

pub use error::{Error, Result};
#[cfg(feature = "hub")]
pub use hub::{fetch_model, HubConfig, DEFAULT_ENDPOINT};
#[cfg(feature = "image")]
pub use image::decode_rgb_chw;
#[cfg(all(feature = "image", feature = "files"))]
pub use image::load_rgb_chw;
#[cfg(feature = "files")]
pub use inference::preprocess_of;
pub use inference::{preprocess_from, Classifier, Predictions};
#[cfg(feature = "files")]
pub use model_dir::load_model_dir;
pub use model_dir::{load_model_files, LoadedModel, ModelFiles};
#[cfg(feature = "files")]
pub use model_spec::{
    env_flag_on, resolve_model_spec, DownloadProgress, HubRepo, ModelSpec, NoProgress,
    ResolveOptions, ResolvedModel, HUB_PREFIX,
};
pub use pretrained::{
    check_table, find_tag, source_pretrained_dir, tag_sources, tags_of, wildcard_match,
    HubLocation, PretrainedTag, CHECK_IMAGES, PRETRAINED, PRETRAINED_DIR_ENV,
};
pub use registry::{
    create_model, find, resolve_args, with_batch_norm, CreatedModel, Family, FamilyOf, ModelEntry,
    ModelInfo, DEFAULT_MODEL, MODELS,
};
