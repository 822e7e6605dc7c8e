//! `nin train --init-from MODEL`: starting a run from a pretrained model. The run's model is built
//! and seeded as usual; every tensor of the source whose name and shape match is then copied in,
//! and the rest (a new class layer, say) keep their seeded initialisation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use nin_format::files::MODEL_SAFETENSORS;
use nin_format::{InitFrom, ModelDirConfig};

use crate::model_arg::resolve_model;

/// A pretrained model read for fine-tuning.
pub struct Source {
    /// The MODEL argument as given.
    pub spec: String,
    /// Where it resolved to (see [`crate::model_arg::ResolvedModel::origin`]).
    pub origin: String,
    /// Its local model directory.
    pub dir: PathBuf,
    /// Its `config.json`, `model_args` resolved.
    pub config: ModelDirConfig,
    /// Its weights, by name, on the CPU.
    pub tensors: HashMap<String, Tensor>,
}

impl Source {
    /// Resolves and reads the model `spec` names.
    pub fn read(spec: &str, offline: bool) -> anyhow::Result<Self> {
        let resolved = resolve_model(spec, offline).context("--init-from")?;
        let dir = resolved.dir;
        let mut config = ModelDirConfig::load(&dir)
            .with_context(|| format!("--init-from {spec}: reading its config.json"))?;
        if config.model_args.is_null() {
            config.model_args = nin_zoo::resolve_args(&config.model, config.num_classes, None)
                .with_context(|| format!("--init-from {spec}: its config.json"))?;
        }
        let tensors =
            nin_layers::weights::read_safetensors(&dir.join(MODEL_SAFETENSORS), &Device::Cpu)
                .with_context(|| format!("--init-from {spec}: reading its weights"))?
                .tensors;
        Ok(Self {
            spec: spec.to_string(),
            origin: resolved.origin,
            dir,
            config,
            tensors,
        })
    }

    /// The architecture a fine-tuned run builds when `--model` is not given: the source's
    /// preset and full `model_args`, with `num_classes` set to the new dataset's and the fields
    /// of `overrides` (`--model-args`) on top.
    pub fn default_model(
        &self,
        num_classes: usize,
        overrides: Option<&serde_json::Value>,
    ) -> anyhow::Result<(String, serde_json::Value)> {
        let mut args = self.config.model_args.clone();
        let Some(map) = args.as_object_mut() else {
            bail!(
                "--init-from {}: its config.json model_args is not a JSON object",
                self.spec
            );
        };
        map.insert("num_classes".into(), num_classes.into());
        if let Some(overrides) = overrides {
            let Some(fields) = overrides.as_object() else {
                bail!("--model-args: expected a JSON object, got {overrides}");
            };
            for (k, v) in fields {
                map.insert(k.clone(), v.clone());
            }
        }
        Ok((self.config.model.clone(), args))
    }

    /// The source's whitening file, when it was trained on GCN + ZCA whitened inputs.
    pub fn whitening_path(&self) -> anyhow::Result<Option<PathBuf>> {
        self.config
            .whitening_path(&self.dir)
            .with_context(|| format!("--init-from {}: its config.json", self.spec))
    }

    /// Copies every tensor whose name and shape match into `varmap` (the run's model `target`,
    /// already seeded) and returns the record of what was kept and what re-initialised. Nothing
    /// matching is an error naming both models.
    pub fn apply(&self, varmap: &VarMap, target: &str) -> anyhow::Result<InitFrom> {
        let mut kept = Vec::new();
        let mut reinitialised = Vec::new();
        for (name, var) in nin_layers::weights::named_vars(varmap) {
            let Some(t) = self
                .tensors
                .get(&name)
                .filter(|t| t.dims() == var.dims() && t.dtype().is_float())
            else {
                reinitialised.push(name);
                continue;
            };
            let t = t.to_dtype(var.dtype())?.to_device(var.device())?;
            let finite = t
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?
                .iter()
                .all(|v| v.is_finite());
            if !finite {
                bail!(
                    "--init-from {}: tensor `{name}` of {} holds NaN or infinite values",
                    self.spec,
                    self.dir.join(MODEL_SAFETENSORS).display()
                );
            }
            var.set(&t)?;
            kept.push(name);
        }
        if kept.is_empty() {
            bail!(
                "--init-from {}: none of its {} tensors ({} {}) matches a tensor of the model being trained ({target}) in name and shape; \
                 fine-tuning needs the same family (train {} by leaving out --model, or pass --model/--model-args that fit it)",
                self.spec,
                self.tensors.len(),
                self.config.model,
                self.config.model_args,
                self.config.model,
            );
        }
        Ok(InitFrom {
            source: self.spec.clone(),
            origin: self.origin.clone(),
            model: self.config.model.clone(),
            kept,
            reinitialised,
            whitening_from_source: false,
        })
    }
}

/// The one-paragraph account of an initialisation, for the terminal.
pub fn describe(init: &InitFrom) -> String {
    let total = init.kept.len() + init.reinitialised.len();
    let mut text = format!(
        "initialised from {} ({}): kept {} of {total} tensors",
        init.source,
        init.origin,
        init.kept.len()
    );
    if init.reinitialised.is_empty() {
        text.push_str(", re-initialised none");
    } else {
        text.push_str(&format!(
            "; re-initialised {} (new or reshaped): {}",
            init.reinitialised.len(),
            init.reinitialised.join(", ")
        ));
    }
    text
}

/// Re-applies the recorded initialisation of a resumed run that was stopped before its first
/// checkpoint (its model as built is the run's initial state), checking that the source still
/// gives the same split of kept and re-initialised tensors.
pub fn reapply(
    init: &InitFrom,
    offline: bool,
    varmap: &VarMap,
    target: &str,
    run_dir: &Path,
) -> anyhow::Result<()> {
    let source = Source::read(&init.source, offline).with_context(|| {
        format!(
            "--resume: the run in {} starts from {} and has no checkpoint yet",
            run_dir.display(),
            init.source
        )
    })?;
    let again = source.apply(varmap, target)?;
    if again.kept != init.kept {
        bail!(
            "--resume: {} no longer gives the tensors the run in {} recorded in run.json ({} kept then, {} now)",
            init.source,
            run_dir.display(),
            init.kept.len(),
            again.kept.len()
        );
    }
    Ok(())
}
