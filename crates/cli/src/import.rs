//! `nin import`: a PyTorch checkpoint (`.pth`) converted into a model directory of a zoo
//! preset — tensor names renamed by regular expressions (or a shipped mapping), then checked
//! against the model: unmatched (in the file, unused), missing (needed, absent) and mis-shaped
//! tensors are listed, and a real import refuses anything missing or mis-shaped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use nin_data::Normalize;
use nin_format::files::{CONFIG_JSON, MODEL_SAFETENSORS};
use nin_format::CIFAR10_LABELS;
use nin_format::{Dataset, ModelDirConfig, PretrainedCfg};
use regex::Regex;

use crate::data::DatasetArg;

/// Arguments of `nin import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The PyTorch checkpoint: a state dict saved with torch.save, or a dict holding one under
    /// `state_dict`, `model`, `net` or `model_state_dict` (or --key).
    #[arg(long, value_name = "FILE")]
    pth: PathBuf,
    /// The zoo preset the weights are for (see `nin list`).
    #[arg(long)]
    model: String,
    /// JSON object overriding fields of the preset's config (widths, num_classes, ...).
    #[arg(long, value_name = "JSON")]
    model_args: Option<String>,
    /// The dataset the model was trained on: its class count, label names and mean/std
    /// [default: cifar10, or cifar100 for 100 classes].
    #[arg(long, value_enum)]
    dataset: Option<DatasetArg>,
    /// The entry of the checkpoint holding the state dict.
    #[arg(long)]
    key: Option<String>,
    /// A shipped renaming, applied before any --map.
    #[arg(long, value_enum)]
    map_preset: Option<MapPreset>,
    /// Rename tensors: every match of REGEX in a name is replaced by REPLACEMENT ($1, ${name}
    /// refer to groups); rules apply in order. Repeatable.
    #[arg(long = "map", value_name = "REGEX=REPLACEMENT")]
    maps: Vec<String>,
    /// Print the listing (kept, unmatched, missing, mis-shaped) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// The model directory to write (must not exist or be empty).
    #[arg(long, value_name = "DIR", required_unless_present = "dry_run")]
    out: Option<PathBuf>,
}

/// Renamings shipped for common public PyTorch layouts.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MapPreset {
    /// The `nn.Sequential` NIN of public PyTorch re-implementations (`features.N.*` or
    /// `classifier.N.*`, optionally under `module.`): conv 5×5, ReLU, 1×1, ReLU, 1×1, ReLU,
    /// max pool, dropout, conv 5×5, …, 1×1 class layer, ReLU, average pool; indices 0, 2, 4, 8,
    /// 10, 12, 16, 18, 20 are the convolutions.
    #[value(name = "sequential_nin")]
    SequentialNin,
}

impl MapPreset {
    /// The rules, `(regex, replacement)`, in order.
    pub fn rules(self) -> Vec<(&'static str, &'static str)> {
        match self {
            MapPreset::SequentialNin => {
                // The numbered convolutions of the Sequential, to NIN's mlpconv names.
                vec![
                    (
                        r"^(?:module\.)?(?:features|classifier)\.0\.",
                        "mlpconv1.conv.",
                    ),
                    (
                        r"^(?:module\.)?(?:features|classifier)\.2\.",
                        "mlpconv1.mlp.0.",
                    ),
                    (
                        r"^(?:module\.)?(?:features|classifier)\.4\.",
                        "mlpconv1.mlp.1.",
                    ),
                    (
                        r"^(?:module\.)?(?:features|classifier)\.8\.",
                        "mlpconv2.conv.",
                    ),
                    (
                        r"^(?:module\.)?(?:features|classifier)\.10\.",
                        "mlpconv2.mlp.0.",
                    ),
                    (
                        r"^(?:module\.)?(?:features|classifier)\.12\.",
                        "mlpconv2.mlp.1.",
                    ),
                    (
                        r"^(?:module\.)?(?:features|classifier)\.16\.",
                        "mlpconv3.conv.",
                    ),
                    (
                        r"^(?:module\.)?(?:features|classifier)\.18\.",
                        "mlpconv3.mlp.0.",
                    ),
                    (
                        r"^(?:module\.)?(?:features|classifier)\.20\.",
                        "mlpconv3.mlp.1.",
                    ),
                ]
            }
        }
    }
}

/// One renaming rule.
struct Rule {
    regex: Regex,
    replacement: String,
}

fn parse_rule(text: &str, flag: &str) -> anyhow::Result<Rule> {
    let (pattern, replacement) = text
        .split_once('=')
        .with_context(|| format!("{flag} {text}: expected REGEX=REPLACEMENT"))?;
    let regex = Regex::new(pattern).with_context(|| format!("{flag} {text}: not a valid regex"))?;
    Ok(Rule {
        regex,
        replacement: replacement.to_string(),
    })
}

/// The checkpoint's tensors against the model's.
#[derive(Debug, Default)]
struct Listing {
    /// File name → model name, for the tensors used.
    kept: Vec<(String, String)>,
    /// File names (after renaming) the model has no tensor for.
    unmatched: Vec<String>,
    /// PyTorch-only counters that have no place in the model (`num_batches_tracked`).
    ignored: Vec<String>,
    /// Model names the file has no tensor for.
    missing: Vec<String>,
    /// `(name, the model's shape, the file's shape)`.
    misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Names the file holds but not as floating point.
    not_float: Vec<(String, DType)>,
}

impl Listing {
    fn print(&self) {
        eprintln!("kept: {} tensors", self.kept.len());
        for (from, to) in &self.kept {
            if from != to {
                eprintln!("  {from} -> {to}");
            }
        }
        let section = |title: &str, items: Vec<String>| {
            eprintln!("{title}: {}", items.len());
            for item in items {
                eprintln!("  {item}");
            }
        };
        section("unmatched (in the file, not used)", self.unmatched.clone());
        if !self.ignored.is_empty() {
            section("ignored (PyTorch's batch counters)", self.ignored.clone());
        }
        section("missing (needed, not in the file)", self.missing.clone());
        section(
            "mis-shaped",
            self.misshaped
                .iter()
                .map(|(n, want, got)| {
                    format!("{n}: the model needs {want:?}, the file has {got:?}")
                })
                .chain(
                    self.not_float
                        .iter()
                        .map(|(n, d)| format!("{n}: holds {d:?}, not floating point")),
                )
                .collect(),
        );
    }
}

/// Runs `nin import`.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let mut rules = Vec::new();
    if let Some(preset) = args.map_preset {
        for (pattern, replacement) in preset.rules() {
            rules.push(Rule {
                regex: Regex::new(pattern)?,
                replacement: replacement.to_string(),
            });
        }
    }
    for text in &args.maps {
        rules.push(parse_rule(text, "--map")?);
    }
    let overrides = args
        .model_args
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .context("--model-args: not valid JSON")?;
    let requested_classes = overrides
        .as_ref()
        .and_then(|o| o.get("num_classes"))
        .and_then(serde_json::Value::as_u64);
    let dataset = match (args.dataset, requested_classes) {
        (Some(d), _) => Dataset::from(d),
        (None, Some(100)) => Dataset::Cifar100,
        _ => Dataset::Cifar10,
    };
    let num_classes = requested_classes
        .map(|n| n as usize)
        .unwrap_or_else(|| dataset.n_classes(nin_format::LabelKind::Fine));
    let created = nin_zoo::create_model(
        &args.model,
        num_classes,
        overrides.as_ref(),
        0,
        &Device::Cpu,
    )
    .with_context(|| format!("--model {}", args.model))?;
    if let Some(out) = &args.out {
        if !args.dry_run && std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
            bail!("--out {} is not empty: pick another folder", out.display());
        }
    }

    let checkpoint = crate::pth::read_checkpoint(&args.pth, args.key.as_deref())?;
    eprintln!(
        "{}: {} tensors{}",
        args.pth.display(),
        checkpoint.tensors.len(),
        checkpoint
            .key
            .as_ref()
            .map(|k| format!(" under `{k}`"))
            .unwrap_or_default()
    );
    // Rename, refusing two file tensors that land on one name.
    let mut renamed: BTreeMap<String, (String, Tensor)> = BTreeMap::new();
    let mut listing = Listing::default();
    for (name, t) in checkpoint.tensors {
        if name.ends_with("num_batches_tracked") {
            listing.ignored.push(name);
            continue;
        }
        let mut to = name.clone();
        for rule in &rules {
            to = rule
                .regex
                .replace_all(&to, rule.replacement.as_str())
                .into_owned();
        }
        if let Some((first, _)) = renamed.get(&to) {
            bail!(
                "--pth {}: tensors `{first}` and `{name}` are both renamed to `{to}`: check the --map rules",
                args.pth.display()
            );
        }
        renamed.insert(to, (name, t));
    }
    let vars = nin_layers::weights::named_vars(&created.varmap);
    let mut weights = BTreeMap::new();
    for (name, var) in &vars {
        match renamed.remove(name) {
            None => listing.missing.push(name.clone()),
            Some((_, t)) if !t.dtype().is_float() => {
                listing.not_float.push((name.clone(), t.dtype()))
            }
            Some((_, t)) if t.dims() != var.dims() => {
                listing
                    .misshaped
                    .push((name.clone(), var.dims().to_vec(), t.dims().to_vec()))
            }
            Some((from, t)) => {
                listing.kept.push((from, name.clone()));
                weights.insert(name.clone(), t.to_dtype(DType::F32)?);
            }
        }
    }
    listing.unmatched = renamed.into_keys().collect();
    listing.print();

    if args.dry_run {
        eprintln!("dry run: nothing written");
        return Ok(());
    }
    let out = args
        .out
        .as_ref()
        .context("--out DIR is needed (or --dry-run)")?;
    let problems = listing.missing.len() + listing.misshaped.len() + listing.not_float.len();
    if problems > 0 {
        let first = listing
            .missing
            .first()
            .map(|n| format!("`{n}` is missing"))
            .or_else(|| {
                listing.misshaped.first().map(|(n, want, got)| {
                    format!("`{n}` has shape {got:?}, the model needs {want:?}")
                })
            })
            .or_else(|| {
                listing
                    .not_float
                    .first()
                    .map(|(n, d)| format!("`{n}` holds {d:?} values"))
            })
            .unwrap_or_default();
        bail!(
            "--pth {}: does not fit {} ({} missing, {} mis-shaped; {first}): rename with --map or --map-preset \
             (see the listing above, or --dry-run), or fix --model-args",
            args.pth.display(),
            args.model,
            listing.missing.len(),
            listing.misshaped.len() + listing.not_float.len()
        );
    }
    // Set the model's variables through the strict loader, which also refuses NaN.
    let tensors: std::collections::HashMap<String, Tensor> = weights.into_iter().collect();
    nin_layers::weights::set_weights(&args.pth, tensors, &vars)?;

    let normalize = Normalize::published(dataset);
    let config = ModelDirConfig {
        model: args.model.clone(),
        num_classes,
        model_args: created.args.clone(),
        pretrained_cfg: PretrainedCfg {
            input_size: [3, 32, 32],
            // The published four-digit statistics, not their nearest f32 widened.
            mean: normalize.mean.iter().map(|&m| shortest(m)).collect(),
            std: normalize.std.iter().map(|&s| shortest(s)).collect(),
            whitening: None,
            extra: Default::default(),
        },
        label_names: label_names(dataset, num_classes),
    };
    let meta = BTreeMap::from([(
        "imported_from".to_string(),
        args.pth
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )]);
    nin_format::create_dir(out).with_context(|| format!("--out {}", out.display()))?;
    nin_layers::weights::save_weights(&out.join(MODEL_SAFETENSORS), &created.varmap, &meta)?;
    nin_format::write_json(&out.join(CONFIG_JSON), &config)?;
    eprintln!(
        "wrote {} ({}, {} classes, inputs normalised with {dataset}'s mean/std: edit config.json's pretrained_cfg if the checkpoint was trained otherwise)",
        out.display(),
        args.model,
        num_classes
    );
    Ok(())
}

/// The f64 that prints as `x` does (0.4914, not 0.49140000343322754).
fn shortest(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// The class names of `dataset` when the class count is its own, else `class_0`, `class_1`, ….
fn label_names(dataset: Dataset, num_classes: usize) -> Vec<String> {
    let known: &[&str] = match dataset {
        Dataset::Cifar10 => &CIFAR10_LABELS,
        Dataset::Cifar100 => &CIFAR100_LABELS,
    };
    if known.len() == num_classes {
        known.iter().map(|s| s.to_string()).collect()
    } else {
        (0..num_classes).map(|i| format!("class_{i}")).collect()
    }
}

/// CIFAR-100's fine class names, in label order (its `fine_label_names.txt`).
const CIFAR100_LABELS: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];
