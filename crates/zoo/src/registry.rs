//! The static table of presets, and the glue that builds any family from JSON arguments.

use std::marker::PhantomData;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use nin_layers::{ClassMapModel, ModelConfig};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Object-safe face of a family, for the static table.
pub trait Family: Sync {
    /// Builds a model from its full JSON configuration.
    fn build(&self, model: &str, args: &Value, vb: VarBuilder) -> Result<Box<dyn ClassMapModel>>;
    /// Parameter and MAC counts of a configuration.
    fn info(&self, model: &str, args: &Value) -> Result<ModelInfo>;
}

/// The [`Family`] whose configuration type is `C` (e.g. `nin_model_nin::Config`).
pub struct FamilyOf<C>(PhantomData<fn() -> C>);

impl<C> FamilyOf<C> {
    /// The family configured by `C`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<C> Default for FamilyOf<C> {
    fn default() -> Self {
        Self::new()
    }
}

fn parse<C: ModelConfig>(model: &str, args: &Value) -> Result<C> {
    serde_json::from_value(args.clone()).map_err(|e| Error::BadArgs {
        model: model.to_string(),
        reason: e.to_string(),
    })
}

impl<C: ModelConfig> Family for FamilyOf<C> {
    fn build(&self, model: &str, args: &Value, vb: VarBuilder) -> Result<Box<dyn ClassMapModel>> {
        Ok(Box::new(parse::<C>(model, args)?.build(vb)?))
    }

    fn info(&self, model: &str, args: &Value) -> Result<ModelInfo> {
        let cfg = parse::<C>(model, args)?;
        Ok(ModelInfo {
            param_count: cfg.param_count(),
            macs_per_image: cfg.macs_per_image(),
        })
    }
}

/// Size and cost of a configured model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// Trainable parameters.
    pub param_count: usize,
    /// Multiply-accumulates per 32×32 image.
    pub macs_per_image: u64,
}

/// One preset of the zoo.
pub struct ModelEntry {
    /// Preset name (`nin`).
    pub name: &'static str,
    /// Family crate (`nin`, `cic`, `drnin`, `dcnin`).
    pub family_name: &'static str,
    /// One line for `nin list`.
    pub summary: &'static str,
    /// The preset's configuration for `num_classes` classes, as JSON.
    pub default_args: fn(usize) -> Value,
    /// How to build it.
    pub family: &'static dyn Family,
}

fn json<T: Serialize>(value: T) -> Value {
    // Serialising a plain config struct to a JSON value cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

static NIN: FamilyOf<nin_model_nin::Config> = FamilyOf::new();
static DRNIN: FamilyOf<nin_model_drnin::Config> = FamilyOf::new();
static DCNIN: FamilyOf<nin_model_dcnin::Config> = FamilyOf::new();
static CIC: FamilyOf<nin_model_cic::Config> = FamilyOf::new();

/// The preset `nin train` trains when none is named: `nin_bn_s`, the one that reaches a useful
/// accuracy in the default recipe's quarter of an hour on a CPU (`nin_format::DEFAULT_RECIPE`).
/// NIN exactly as its authors built it stays `nin`, trained with the `paper` recipe.
pub const DEFAULT_MODEL: &str = "nin_bn_s";

/// Every preset, in the order `nin list` shows them.
pub static MODELS: &[ModelEntry] = &[
    ModelEntry {
        name: "nin",
        family_name: "nin",
        summary: "Network in Network, the authors' CIFAR model (Lin et al. 2013), exact",
        default_args: |c| json(nin_model_nin::Config::nin(c)),
        family: &NIN,
    },
    ModelEntry {
        name: "nin_bn",
        family_name: "nin",
        summary: "NIN with batch norm after every convolution",
        default_args: |c| json(nin_model_nin::Config::nin_bn(c)),
        family: &NIN,
    },
    ModelEntry {
        name: "nin_bn_s",
        family_name: "nin",
        summary: "nin_bn at half width, a quarter of the cost: the CPU default",
        default_args: |c| json(nin_model_nin::Config::nin_bn_s(c)),
        family: &NIN,
    },
    ModelEntry {
        name: "drnin_l3",
        family_name: "drnin",
        summary: "DrNIN, residual mlpconv blocks (Alaeddine & Jihene 2021), L = 3, our instantiation",
        default_args: |c| json(nin_model_drnin::Config::drnin_l3(c)),
        family: &DRNIN,
    },
    ModelEntry {
        name: "drnin_l4",
        family_name: "drnin",
        summary: "DrNIN with L = 4 residual mlpconv blocks (2, 1, 1), our instantiation",
        default_args: |c| json(nin_model_drnin::Config::drnin_l4(c)),
        family: &DRNIN,
    },
    ModelEntry {
        name: "drnin_l5",
        family_name: "drnin",
        summary: "DrNIN with L = 5 residual mlpconv blocks (2, 2, 1), our instantiation",
        default_args: |c| json(nin_model_drnin::Config::drnin_l5(c)),
        family: &DRNIN,
    },
    ModelEntry {
        name: "dcnin_s",
        family_name: "dcnin",
        summary: "DcNIN, densely connected mlpconv units (Kouka et al. 2025), g = 12, 6 per stage, our instantiation",
        default_args: |c| json(nin_model_dcnin::Config::dcnin_s(c)),
        family: &DCNIN,
    },
    ModelEntry {
        name: "dcnin_m",
        family_name: "dcnin",
        summary: "DcNIN with g = 24, 8 units per stage, our instantiation",
        default_args: |c| json(nin_model_dcnin::Config::dcnin_m(c)),
        family: &DCNIN,
    },
    ModelEntry {
        name: "cic_1d",
        family_name: "cic",
        summary: "CiC: NIN with channel-window 1×1 layers (w = 48), our instantiation",
        default_args: |c| json(nin_model_cic::Config::cic_1d(c)),
        family: &CIC,
    },
    ModelEntry {
        name: "cic_3d",
        family_name: "cic",
        summary: "CiC with channel-window k×k convolutions in mlpconv2/3 too, our instantiation",
        default_args: |c| json(nin_model_cic::Config::cic_3d(c)),
        family: &CIC,
    },
];

/// The model a recipe that prefers batch norm trains instead of preset `name` with
/// `overrides`: the zoo's batch-norm preset of it (`nin` → `nin_bn`), else the preset with its
/// `batch_norm` switch turned on where its configuration has one (CiC); the other families
/// already normalise (DrNIN, DcNIN). A `batch_norm` the user set in `overrides` is kept.
pub fn with_batch_norm(
    name: &str,
    num_classes: usize,
    overrides: Option<Value>,
) -> Result<(String, Option<Value>)> {
    if overrides
        .as_ref()
        .is_some_and(|o| o.get("batch_norm").is_some())
    {
        return Ok((name.to_string(), overrides));
    }
    if name == "nin" {
        return Ok(("nin_bn".to_string(), overrides));
    }
    let preset = resolve_args(name, num_classes, None)?;
    if preset.get("batch_norm") != Some(&Value::Bool(false)) {
        return Ok((name.to_string(), overrides));
    }
    let mut overrides = overrides.unwrap_or_else(|| serde_json::json!({}));
    if let Some(map) = overrides.as_object_mut() {
        map.insert("batch_norm".into(), true.into());
    }
    Ok((name.to_string(), Some(overrides)))
}

/// The preset called `name`, or an error listing the known ones.
pub fn find(name: &str) -> Result<&'static ModelEntry> {
    MODELS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::UnknownModel {
            name: name.to_string(),
            known: MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        })
}

/// The full configuration of preset `name`: its defaults for `num_classes`, with the fields of
/// `overrides` (a JSON object) replacing them.
pub fn resolve_args(name: &str, num_classes: usize, overrides: Option<&Value>) -> Result<Value> {
    let entry = find(name)?;
    let mut args = (entry.default_args)(num_classes);
    if let Some(overrides) = overrides {
        let Value::Object(fields) = overrides else {
            return Err(Error::BadArgs {
                model: name.to_string(),
                reason: format!("expected a JSON object, got {overrides}"),
            });
        };
        if let Value::Object(base) = &mut args {
            for (k, v) in fields {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    if args.get("num_classes").and_then(Value::as_u64) != Some(num_classes as u64) {
        return Err(Error::BadArgs {
            model: name.to_string(),
            reason: format!(
                "num_classes in model_args ({}) differs from the requested {num_classes}",
                args.get("num_classes").unwrap_or(&Value::Null)
            ),
        });
    }
    crate::bounds::check_args(name, &args)?;
    let info = entry.family.info(name, &args)?;
    crate::bounds::check_size(name, &info)?;
    Ok(args)
}

/// A freshly initialised model and the variables behind it.
pub struct CreatedModel {
    /// The model.
    pub model: Box<dyn ClassMapModel>,
    /// Its variables (trainable ones and batch-norm statistics), by PyTorch name.
    pub varmap: VarMap,
    /// Its full configuration.
    pub args: Value,
    /// Size and cost.
    pub info: ModelInfo,
    /// The preset.
    pub entry: &'static ModelEntry,
}

/// Builds preset `name` for `num_classes` classes, initialised from `seed`, on `device`.
pub fn create_model(
    name: &str,
    num_classes: usize,
    overrides: Option<&Value>,
    seed: u64,
    device: &Device,
) -> Result<CreatedModel> {
    let entry = find(name)?;
    let args = resolve_args(name, num_classes, overrides)?;
    let varmap = VarMap::new();
    let vb = nin_layers::seeded_var_builder(&varmap, seed, DType::F32, device);
    let model = entry.family.build(name, &args, vb)?;
    let info = entry.family.info(name, &args)?;
    Ok(CreatedModel {
        model,
        varmap,
        args,
        info,
        entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_recipe_that_prefers_batch_norm_picks_the_normalised_model() {
        let pick = |model: &str, overrides: Option<Value>| {
            with_batch_norm(model, 10, overrides).expect("known preset")
        };
        assert_eq!(pick("nin", None), ("nin_bn".to_string(), None));
        assert!(find("nin_bn").is_ok());
        assert!(find(DEFAULT_MODEL).is_ok());
        assert_eq!(pick(DEFAULT_MODEL, None), (DEFAULT_MODEL.to_string(), None));
        let (model, args) = pick("cic_1d", None);
        assert_eq!(model, "cic_1d");
        assert_eq!(args, Some(json!({"batch_norm": true})));
        // Already normalised, or switched off explicitly by the user: left as they are.
        assert_eq!(pick("drnin_l3", None), ("drnin_l3".to_string(), None));
        let explicit = Some(json!({"batch_norm": false}));
        assert_eq!(pick("nin", explicit.clone()), ("nin".to_string(), explicit));
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = find("nni").err().unwrap().to_string();
        assert!(
            err.contains("unknown model `nni`") && err.contains("nin, nin_bn"),
            "{err}"
        );
    }

    #[test]
    fn every_preset_builds_and_reports_its_size() {
        for entry in MODELS {
            let created = create_model(entry.name, 100, None, 0, &Device::Cpu).unwrap();
            assert_eq!(created.model.num_classes(), 100);
            let trainable: usize = created
                .varmap
                .data()
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| !k.contains("running_"))
                .map(|(_, v)| v.elem_count())
                .sum();
            assert_eq!(trainable, created.info.param_count, "{}", entry.name);
        }
    }

    #[test]
    fn cic_presets_report_their_model_card_sizes() {
        for (name, n_classes, params, macs) in [
            ("cic_1d", 10, 850_250, 171_958_272),
            ("cic_1d", 100, 867_620, 173_064_192),
            ("cic_3d", 10, 371_018, 97_050_624),
            ("cic_3d", 100, 388_388, 98_156_544),
        ] {
            let entry = find(name).unwrap();
            let info = entry
                .family
                .info(name, &(entry.default_args)(n_classes))
                .unwrap();
            assert_eq!(
                (info.param_count, info.macs_per_image),
                (params, macs),
                "{name}, {n_classes} classes"
            );
        }
        let args = resolve_args(
            "cic_1d",
            10,
            Some(&serde_json::json!({"sparsity": "channel_spatial"})),
        )
        .unwrap();
        assert_eq!(args, (find("cic_3d").unwrap().default_args)(10));
    }

    #[test]
    fn residual_and_dense_presets_report_their_model_card_sizes() {
        for (name, params, macs) in [
            ("drnin_l3", 896_266, 211_279_872),
            ("drnin_l4", 1_302_922, 626_515_968),
            ("drnin_l5", 1_709_578, 730_324_992),
            ("dcnin_s", 310_906, 114_639_360),
            ("dcnin_m", 2_113_882, 756_598_272),
        ] {
            let entry = find(name).unwrap();
            let info = entry.family.info(name, &(entry.default_args)(10)).unwrap();
            assert_eq!(
                (info.param_count, info.macs_per_image),
                (params, macs),
                "{name}"
            );
        }
        let args = resolve_args(
            "drnin_l3",
            10,
            Some(&serde_json::json!({"blocks": [2, 2, 1]})),
        )
        .unwrap();
        assert_eq!(args, (find("drnin_l5").unwrap().default_args)(10));
    }

    #[test]
    fn overrides_replace_fields_and_bad_ones_are_named() {
        let args = resolve_args("nin", 10, Some(&serde_json::json!({"pool2": "max"}))).unwrap();
        assert_eq!(args["pool2"], "max");
        let err = resolve_args("nin", 10, Some(&serde_json::json!({"pool_2": "max"})))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("pool_2"), "{err}");
        let err = resolve_args("nin", 10, Some(&serde_json::json!({"num_classes": 7})))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("num_classes"), "{err}");
    }
}
