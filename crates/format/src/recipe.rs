//! Named training recipes: every hyper-parameter of a run in one serde struct, so a run folder
//! records exactly how its weights were trained and `--recipe paper` means one fixed thing.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schedule::{Monitor, Schedule};

/// Random augmentation of training images, the one type the recipe records and the data
/// pipeline (`nin-data`'s loader) applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Random horizontal flip with probability ½.
    pub flip: bool,
    /// Zero-pad by this many pixels, then take a random 32×32 crop (0 disables the crop).
    pub crop_padding: usize,
    /// Side of a square zeroed at a random centre (cutout, DeVries & Taylor 2017), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutout: Option<usize>,
}

impl Augment {
    /// No augmentation.
    pub const NONE: Augment = Augment {
        flip: false,
        crop_padding: 0,
        cutout: None,
    };

    /// The standard CIFAR augmentation: pad 4, random crop, horizontal flip.
    pub const STANDARD: Augment = Augment {
        flip: true,
        crop_padding: 4,
        cutout: None,
    };

    /// Whether it changes any image.
    pub fn is_active(&self) -> bool {
        self.flip || self.crop_padding > 0 || self.cutout.is_some_and(|s| s > 0)
    }
}

/// Test-time augmentation: what evaluation averages the logits over. It costs its factor in
/// evaluation time, so a result obtained with it says so (`nin eval --tta`, the run's recipe).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestTimeAugment {
    /// Each image once, as it is.
    #[default]
    None,
    /// The mean of the logits of the image and of its mirror image (left–right): two forward
    /// passes per image.
    Flip,
}

impl TestTimeAugment {
    /// Whether evaluation sees each image once (nothing to record).
    pub fn is_none(&self) -> bool {
        *self == TestTimeAugment::None
    }

    /// Forward passes per evaluated image.
    pub fn passes(&self) -> usize {
        match self {
            TestTimeAugment::None => 1,
            TestTimeAugment::Flip => 2,
        }
    }
}

/// How the first convolution (the one that sees pixels) starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum StemInit {
    /// The model's own random initialisation.
    #[default]
    Random,
    /// Whitening filters of the training images' patches, each with its negation, in as many
    /// of the layer's filters as they fill (the rest keep their random values); fitted on the
    /// first `images` training images when the run starts (`nin_data::whitened_patch_filters`).
    WhitenedPatches {
        /// Training images the patch statistics are taken from.
        images: usize,
        /// Added to each eigenvalue before the inverse square root.
        eps: f64,
    },
}

impl StemInit {
    /// Whether the first layer keeps the model's own initialisation (nothing to record).
    pub fn is_random(&self) -> bool {
        *self == StemInit::Random
    }
}

/// How pixels become the network's inputs (the engine records it; the CLI builds the data
/// pipeline from it and stores what evaluation needs in the model directory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum InputTransform {
    /// Per-channel `(pixel / 255 − mean) / std` with the dataset's published statistics.
    #[default]
    Normalize,
    /// The NIN authors' preprocessing: global contrast normalisation of each image to norm
    /// `gcn_scale`, then ZCA whitening with `regularizer` added to every eigenvalue, fitted on
    /// the training split when a run starts.
    GcnZca {
        /// Norm of each image after GCN (55 in the paper).
        gcn_scale: f32,
        /// Added to each eigenvalue of the covariance (0.1 in the paper).
        regularizer: f64,
    },
}

/// Which optimiser to use, with its hyper-parameters (the learning rate comes from the schedule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Stochastic gradient descent, PyTorch semantics with dampening 0.
    Sgd {
        /// Momentum factor μ in `[0, 1)`; 0 disables the momentum buffer.
        momentum: f64,
        /// Nesterov momentum (needs `momentum > 0`).
        nesterov: bool,
        /// L2 penalty added to the gradient of weights (not biases or batch-norm parameters).
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch semantics.
    AdamW {
        /// Decay rate of the first moment, in `[0, 1)`.
        beta1: f64,
        /// Decay rate of the second moment, in `[0, 1)`.
        beta2: f64,
        /// Added to the denominator for stability, > 0.
        eps: f64,
        /// Decoupled decay: weights shrink by `lr · weight_decay` each step.
        weight_decay: f64,
    },
}

/// Learning-rate multipliers by parameter kind; a parameter that is both a bias and in the head
/// gets the product.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrMultipliers {
    /// Multiplier for convolution biases (the NIN authors used 2).
    pub bias: f64,
    /// Multiplier for every parameter under the model's head prefix (the NIN authors used 0.1).
    pub head: f64,
}

impl Default for LrMultipliers {
    fn default() -> Self {
        Self {
            bias: 1.0,
            head: 1.0,
        }
    }
}

impl OptimizerConfig {
    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                if !(0.0..1.0).contains(&momentum) {
                    return Err(Error::invalid(
                        "sgd",
                        "momentum",
                        format!("must be in [0, 1), got {momentum}"),
                    ));
                }
                if nesterov && momentum == 0.0 {
                    return Err(Error::invalid(
                        "sgd",
                        "nesterov",
                        "needs momentum > 0, got momentum 0",
                    ));
                }
                check_decay("sgd", weight_decay)
            }
            OptimizerConfig::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                for (field, b) in [("beta1", beta1), ("beta2", beta2)] {
                    if !(0.0..1.0).contains(&b) {
                        return Err(Error::invalid(
                            "adamw",
                            field,
                            format!("must be in [0, 1), got {b}"),
                        ));
                    }
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(Error::invalid(
                        "adamw",
                        "eps",
                        format!("must be > 0, got {eps}"),
                    ));
                }
                check_decay("adamw", weight_decay)
            }
        }
    }
}

fn check_decay(what: &'static str, wd: f64) -> Result<()> {
    if !(wd >= 0.0 && wd.is_finite()) {
        return Err(Error::invalid(
            what,
            "weight_decay",
            format!("must be finite and >= 0, got {wd}"),
        ));
    }
    Ok(())
}

/// Every hyper-parameter of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The recipe's name (`paper`, `modern`, `cpu_quick`, or a user's own).
    pub name: String,
    /// One-paragraph description, including where it departs from its source.
    pub description: String,
    /// Number of passes over the training set.
    pub epochs: usize,
    /// Images per training batch.
    pub batch_size: usize,
    /// Base learning rate (for weights; see `lr_multipliers`); one-cycle sets its own peak.
    pub lr: f64,
    /// The optimiser and its hyper-parameters.
    pub optimizer: OptimizerConfig,
    /// Learning-rate multipliers for biases and the class layer.
    pub lr_multipliers: LrMultipliers,
    /// How the learning rate moves over the run.
    pub schedule: Schedule,
    /// Label smoothing of the cross-entropy loss, in `[0, 1)`.
    pub label_smoothing: f64,
    /// Augmentation of training images.
    pub augment: Augment,
    /// How pixels become inputs (mean/std normalisation when absent from a recipe file).
    #[serde(default)]
    pub input: InputTransform,
    /// Whether to pick the batch-norm variant of a model when it has one (e.g. `nin_bn` for
    /// `nin`); a request to the CLI, the engine trains whatever model it is given.
    pub prefer_batch_norm: bool,
    /// Test-time augmentation of the evaluations the run makes at each epoch's end (and so of
    /// the accuracy that picks `best/`); absent in recipe files means none.
    #[serde(default, skip_serializing_if = "TestTimeAugment::is_none")]
    pub eval_tta: TestTimeAugment,
    /// How the first convolution starts (absent in recipe files means the model's own
    /// initialisation).
    #[serde(default, skip_serializing_if = "StemInit::is_random")]
    pub stem_init: StemInit,
}

/// Names accepted by [`Recipe::by_name`].
pub const RECIPE_NAMES: [&str; 5] = ["cpu_fast", "cpu_hour", "cpu_quick", "modern", "paper"];

/// The recipe `nin train` and a sweep plan use when none is named: `cpu_fast`, a quarter of an
/// hour on two CPU cores for the default model (`nin_zoo::DEFAULT_MODEL`).
pub const DEFAULT_RECIPE: &str = "cpu_fast";

impl Recipe {
    /// The NIN authors' recipe (Lin, Chen, Yan 2013; their Caffe solver for CIFAR-10): GCN + ZCA
    /// inputs (scale 55, regulariser 0.1), batch 128,
    /// SGD with momentum 0.9, base rate 0.1 for weights, 2× for biases, 0.1× for the last 1×1
    /// layer, L2 decay 1e-4 on weights only, no augmentation (the paper's augmented runs add
    /// flips and 4-pixel shifts), rate divided by 10 when training accuracy stops improving.
    ///
    /// The Caffe solver actually divided at fixed iterations (÷10 at iteration 100k of 120k,
    /// about epoch 256 of 307 at batch 128); we follow the paper's text with reduce-on-plateau on
    /// training top-1 (patience 10 epochs, at most two reductions via `min_lr` 0.001), over 300
    /// epochs.
    pub fn paper() -> Self {
        Self {
            name: "paper".into(),
            description: "NIN authors' recipe: GCN (scale 55) + ZCA (0.1) inputs, SGD momentum 0.9, \
                          lr 0.1 (2x biases, 0.1x class layer), wd 1e-4 on weights only, batch 128, \
                          lr /10 when training accuracy plateaus (the Caffe solver divided at fixed \
                          iterations instead)"
                .into(),
            epochs: 300,
            batch_size: 128,
            lr: 0.1,
            optimizer: OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: false,
                weight_decay: 1e-4,
            },
            lr_multipliers: LrMultipliers {
                bias: 2.0,
                head: 0.1,
            },
            schedule: Schedule::ReduceOnPlateau {
                monitor: Monitor::TrainTop1,
                factor: 0.1,
                patience: 10,
                threshold: 1e-3,
                min_lr: 1e-3,
            },
            label_smoothing: 0.0,
            augment: Augment::NONE,
            input: InputTransform::GcnZca {
                gcn_scale: 55.0,
                regularizer: 0.1,
            },
            prefer_batch_norm: false,
            eval_tta: TestTimeAugment::None,
            stem_init: StemInit::Random,
        }
    }

    /// A modern recipe: Nesterov SGD (momentum 0.9, lr 0.1, wd 5e-4 on weights only), 5 epochs
    /// of linear warm-up then cosine to 0 over 200 epochs, label smoothing 0.1, random flips and
    /// pad-4 crops, and the batch-norm variant of the model where there is one.
    pub fn modern() -> Self {
        Self {
            name: "modern".into(),
            description: "Nesterov SGD lr 0.1 wd 5e-4, 5-epoch warm-up + cosine over 200 epochs, \
                          label smoothing 0.1, flip + crop (pad 4), batch norm where available"
                .into(),
            epochs: 200,
            batch_size: 128,
            lr: 0.1,
            optimizer: OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 5e-4,
            },
            lr_multipliers: LrMultipliers::default(),
            schedule: Schedule::Cosine {
                warmup_epochs: 5.0,
                min_lr: 0.0,
            },
            label_smoothing: 0.1,
            augment: Augment::STANDARD,
            input: InputTransform::Normalize,
            prefer_batch_norm: true,
            eval_tta: TestTimeAugment::None,
            stem_init: StemInit::Random,
        }
    }

    /// A CPU-sized recipe that trains the default NIN on CIFAR-10 in about a quarter of an hour
    /// on two CPU cores (14 minutes measured, `docs/results.md`): a training step of NIN costs
    /// about 0.67 G multiply-adds per image, so only a few epochs fit. Three epochs of Nesterov SGD (lr 0.1, wd 5e-4 on weights only), batch 64, a
    /// half-epoch warm-up then cosine to 0, flips. It keeps the authors' learning-rate
    /// multipliers (2× for biases, 0.1× for the class layer): NIN's class maps pass through a
    /// ReLU, and without the smaller rate on the class layer they die early (every logit 0, loss
    /// stuck at ln 10), which we saw with multipliers of 1 at lr 0.04–0.05.
    pub fn cpu_quick() -> Self {
        Self {
            name: "cpu_quick".into(),
            description: "CPU-sized: 3 epochs Nesterov SGD lr 0.1 (2x biases, 0.1x class layer) \
                          wd 5e-4, batch 64, 0.5-epoch warm-up + cosine, flips; about 15 minutes \
                          for NIN on 2 cores"
                .into(),
            epochs: 3,
            batch_size: 64,
            lr: 0.1,
            optimizer: OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 5e-4,
            },
            lr_multipliers: LrMultipliers {
                bias: 2.0,
                head: 0.1,
            },
            schedule: Schedule::Cosine {
                warmup_epochs: 0.5,
                min_lr: 0.0,
            },
            label_smoothing: 0.0,
            augment: Augment {
                flip: true,
                crop_padding: 0,
                cutout: None,
            },
            input: InputTransform::Normalize,
            prefer_batch_norm: false,
            eval_tta: TestTimeAugment::None,
            stem_init: StemInit::Random,
        }
    }

    /// The default: a quarter of an hour of two CPU cores for the default model, `nin_bn_s`
    /// (NIN with batch norm at half width). Four epochs of [`Recipe::cpu_bn`]'s settings with a
    /// half-epoch warm-up: 77.15 % test top-1 in 12 min 51 s on two cores of an AMD EPYC
    /// (docs/results.md).
    pub fn cpu_fast() -> Self {
        Self {
            name: "cpu_fast".into(),
            description: "CPU quarter-hour: 4 epochs, batch norm, Nesterov SGD lr 0.2 wd 5e-4, \
                          batch 128, 0.5-epoch warm-up + cosine, label smoothing 0.1, flip + \
                          crop (pad 2)"
                .into(),
            ..Self::cpu_bn(4, 0.5)
        }
    }

    /// The CPU hour: fifteen epochs of [`Recipe::cpu_bn`]'s settings with a one-epoch warm-up,
    /// sized so that `nin_bn_s` trains within an hour on two cores of either processor of the
    /// development machines (3 to 3.6 minutes an epoch on the slower AMD EPYC).
    pub fn cpu_hour() -> Self {
        Self {
            name: "cpu_hour".into(),
            description: "CPU hour: 15 epochs, batch norm, Nesterov SGD lr 0.2 wd 5e-4, batch \
                          128, 1-epoch warm-up + cosine, label smoothing 0.1, flip + crop (pad \
                          2)"
            .into(),
            ..Self::cpu_bn(15, 1.0)
        }
    }

    /// The settings the CPU recipes share, for a few epochs of a batch-normalised model: Nesterov
    /// SGD at a high rate (0.2 at batch 128, wd 5e-4 on weights only), a linear warm-up of
    /// `warmup_epochs` then cosine to 0, label smoothing 0.1, flips and pad-2 crops (pad 4 erases
    /// more than a few epochs learn back). No test-time augmentation: flip TTA measured +0.06
    /// point on `nin_bn.cifar10` for twice the evaluation time (`nin eval --tta flip` has it).
    fn cpu_bn(epochs: usize, warmup_epochs: f64) -> Self {
        Self {
            name: format!("cpu_bn{epochs}"),
            description: String::new(),
            epochs,
            batch_size: 128,
            lr: 0.2,
            optimizer: OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 5e-4,
            },
            lr_multipliers: LrMultipliers::default(),
            schedule: Schedule::Cosine {
                warmup_epochs,
                min_lr: 0.0,
            },
            label_smoothing: 0.1,
            augment: Augment {
                flip: true,
                crop_padding: 2,
                cutout: None,
            },
            input: InputTransform::Normalize,
            prefer_batch_norm: true,
            eval_tta: TestTimeAugment::None,
            stem_init: StemInit::Random,
        }
    }

    /// The recipe called `name` (see [`RECIPE_NAMES`]).
    pub fn by_name(name: &str) -> Result<Self> {
        match name {
            "paper" => Ok(Self::paper()),
            "modern" => Ok(Self::modern()),
            "cpu_quick" | "cpu-quick" => Ok(Self::cpu_quick()),
            "cpu_fast" | "cpu-fast" => Ok(Self::cpu_fast()),
            "cpu_hour" | "cpu-hour" => Ok(Self::cpu_hour()),
            _ => Err(Error::UnknownRecipe {
                name: name.into(),
                known: RECIPE_NAMES.to_vec(),
            }),
        }
    }

    /// Reads a recipe from a JSON file (the `recipe` object of a `run.json`, or one written by
    /// hand) and checks it.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let recipe: Self = crate::atomic::read_json(path)?;
        recipe.validate()?;
        Ok(recipe)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, problem: String| Err(Error::invalid("recipe", field, problem));
        if self.epochs == 0 {
            return bad("epochs", "must be > 0, got 0".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be > 0, got 0".into());
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", format!("must be finite and >= 0, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(
                "label_smoothing",
                format!("must be in [0, 1), got {}", self.label_smoothing),
            );
        }
        for (field, m) in [
            ("lr_multipliers.bias", self.lr_multipliers.bias),
            ("lr_multipliers.head", self.lr_multipliers.head),
        ] {
            if !(m.is_finite() && m >= 0.0) {
                return bad(field, format!("must be finite and >= 0, got {m}"));
            }
        }
        if let InputTransform::GcnZca {
            gcn_scale,
            regularizer,
        } = self.input
        {
            if !(gcn_scale.is_finite() && gcn_scale > 0.0) {
                return bad(
                    "input.gcn_scale",
                    format!("must be finite and > 0, got {gcn_scale}"),
                );
            }
            if !(regularizer.is_finite() && regularizer >= 0.0) {
                return bad(
                    "input.regularizer",
                    format!("must be finite and >= 0, got {regularizer}"),
                );
            }
        }
        if let StemInit::WhitenedPatches { images, eps } = self.stem_init {
            if images == 0 {
                return bad("stem_init.images", "must be > 0, got 0".into());
            }
            if !(eps.is_finite() && eps > 0.0) {
                return bad(
                    "stem_init.eps",
                    format!("must be finite and > 0, got {eps}"),
                );
            }
        }
        self.schedule.validate()?;
        self.optimizer.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_recipes_validate_and_round_trip() {
        for name in RECIPE_NAMES {
            let r = Recipe::by_name(name).unwrap();
            r.validate().unwrap();
            let json = serde_json::to_string_pretty(&r).unwrap();
            let back: Recipe = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn recipe_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let mut r = Recipe::modern();
        crate::atomic::write_json(&path, &r).unwrap();
        assert_eq!(Recipe::from_file(&path).unwrap(), r);
        r.batch_size = 0;
        crate::atomic::write_json(&path, &r).unwrap();
        let err = Recipe::from_file(&path).unwrap_err();
        assert!(
            err.to_string().contains("`batch_size` must be > 0"),
            "{err}"
        );
    }

    #[test]
    fn recipe_files_without_tta_evaluate_each_image_once() {
        let mut json = serde_json::to_value(Recipe::modern()).unwrap();
        assert!(
            json.get("eval_tta").is_none(),
            "no TTA is not written, so older readers still parse the file"
        );
        json["eval_tta"] = "flip".into();
        let r: Recipe = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(r.eval_tta, TestTimeAugment::Flip);
        assert_eq!(r.eval_tta.passes(), 2);
        json["eval_tta"] = "five_crop".into();
        let err = serde_json::from_value::<Recipe>(json).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `five_crop`"),
            "{err}"
        );
        // Flip TTA did not pay on the CPU recipes' models; it costs twice the evaluation time.
        assert_eq!(Recipe::cpu_fast().eval_tta, TestTimeAugment::None);
    }

    #[test]
    fn unknown_recipe_lists_known_names() {
        let err = Recipe::by_name("fast").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown recipe `fast`; known recipes: cpu_fast, cpu_hour, cpu_quick, modern, paper"
        );
    }

    #[test]
    fn paper_recipe_has_the_authors_numbers() {
        let r = Recipe::paper();
        assert_eq!(r.batch_size, 128);
        assert_eq!(
            r.lr_multipliers,
            LrMultipliers {
                bias: 2.0,
                head: 0.1
            }
        );
        assert!(matches!(
            r.optimizer,
            OptimizerConfig::Sgd { momentum, nesterov: false, weight_decay } if momentum == 0.9 && weight_decay == 1e-4
        ));
        assert_eq!(r.schedule.monitor(), Some(Monitor::TrainTop1));
        assert_eq!(
            r.input,
            InputTransform::GcnZca {
                gcn_scale: 55.0,
                regularizer: 0.1
            }
        );
    }

    #[test]
    fn input_transform_defaults_to_normalisation_and_is_checked() {
        // A recipe file written before the field existed still reads.
        let mut json = serde_json::to_value(Recipe::cpu_quick()).unwrap();
        json.as_object_mut().unwrap().remove("input");
        let r: Recipe = serde_json::from_value(json).unwrap();
        assert_eq!(r.input, InputTransform::Normalize);
        let bad = Recipe {
            input: InputTransform::GcnZca {
                gcn_scale: 0.0,
                regularizer: 0.1,
            },
            ..Recipe::paper()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("input.gcn_scale"), "{err}");
    }
}
