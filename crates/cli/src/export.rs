//! `nin export`: a run folder or model directory written as a Hub-ready repository —
//! `config.json`, `model.safetensors` (PyTorch names and metadata, a sorted header), the whitening
//! when the model has one, the run's `recipe.json`, and a `README.md` model card with the Hub's
//! front matter, the architecture, the recipe, the measured results with their time and machine,
//! the command that trains it again, and how to load it from `nin` and PyTorch.
//! The repository is written into a temporary folder and renamed into place, so `--out` is
//! either the old repository or the whole new one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use nin_format::files::{
    BEST_DIR, CONFIG_JSON, METRICS_JSONL, MODEL_SAFETENSORS, RUN_JSON, TRAINER_STATE_JSON,
};
use nin_format::{EpochRecord, ModelDirConfig, Recipe, RunConfig, TrainerState};

/// The run's recipe in an exported repository, which the card's training command reads.
const RECIPE_FILE: &str = "recipe.json";

/// Arguments of `nin export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run folder (its best/ model by evaluation top-1, or see --weights) or a model directory.
    #[arg(value_name = "RUN_OR_MODEL_DIR")]
    source: PathBuf,
    /// The repository folder to write (must not exist or be empty, unless --force).
    #[arg(long, value_name = "REPO_DIR")]
    out: PathBuf,
    /// Which weights of a run folder: `best` (its best/ by evaluation top-1, the run's own
    /// weights when it has none) or `last` (the latest checkpoint's).
    #[arg(long, value_enum, default_value = "best")]
    weights: WhichWeights,
    /// The Hub repository id the card's instructions use (`owner/name`).
    #[arg(long, value_name = "OWNER/NAME", default_value = "OWNER/NAME")]
    repo_id: String,
    /// Replace a non-empty --out.
    #[arg(long)]
    force: bool,
}

/// Which weights of a run folder to export.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum WhichWeights {
    Best,
    Last,
}

/// What is being exported: a model directory, and the run it came from when known.
struct Exported {
    model_dir: PathBuf,
    run: Option<RunConfig>,
    /// The run's measured results for exactly these weights.
    result: Option<Measured>,
    /// Why no result is given, when none is.
    no_result: Option<String>,
}

/// Evaluation results of the exported weights, as the run measured them.
struct Measured {
    record: EpochRecord,
    split: String,
    /// Wall-clock seconds the run spent up to the end of that epoch (training and evaluation).
    elapsed_seconds: f64,
}

impl Measured {
    fn new(record: EpochRecord, split: String, history: &[EpochRecord]) -> Self {
        let elapsed_seconds = history
            .iter()
            .filter(|r| r.epoch <= record.epoch)
            .map(|r| r.seconds)
            .sum();
        Self {
            record,
            split,
            elapsed_seconds,
        }
    }
}

/// Runs `nin export`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    if !args.repo_id.contains('/') {
        bail!("--repo-id {}: expected owner/name", args.repo_id);
    }
    let exported = locate(&args.source, args.weights)
        .with_context(|| format!("export {}", args.source.display()))?;
    let loaded = nin_zoo::load_model_dir(&exported.model_dir, &Device::Cpu)
        .with_context(|| format!("export: reading {}", exported.model_dir.display()))?;
    let config = loaded.config.clone();
    let info = loaded
        .entry
        .family
        .info(&config.model, &config.model_args)?;

    let out = &args.out;
    refuse_to_overwrite(out, args.force)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("--out {}: creating {}", out.display(), parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".nin-export-")
        .tempdir_in(&parent)
        .with_context(|| format!("--out {}: a temporary folder beside it", out.display()))?;

    let tensors: BTreeMap<String, Tensor> = nin_layers::weights::named_vars(&loaded.varmap)
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().detach()))
        .collect();
    let metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("arch".to_string(), config.model.clone()),
        ("num_classes".to_string(), config.num_classes.to_string()),
        ("model_args".to_string(), config.model_args.to_string()),
        ("library".to_string(), "nin-zoo".to_string()),
    ]);
    write_sorted_safetensors(&tmp.path().join(MODEL_SAFETENSORS), &tensors, &metadata)?;
    nin_format::write_json(&tmp.path().join(CONFIG_JSON), &config)?;
    nin_train::copy_model_dir_files(&exported.model_dir, tmp.path(), &config)?;
    if let Some(run) = &exported.run {
        // The card's command trains from this file, so it reproduces the run even where the
        // recipe is a user's own or a built-in one has changed since.
        nin_format::write_json(&tmp.path().join(RECIPE_FILE), &run.recipe)?;
    }
    let card = model_card(&exported, &config, loaded.entry, &info, &args.repo_id);
    nin_format::write_atomic(&tmp.path().join("README.md"), card.as_bytes())?;

    // The new repository replaces the old one by renames only, so an interruption leaves either.
    let tmp = tmp.keep();
    let old = if out.exists() {
        let old = parent.join(format!(
            ".nin-export-old-{}-{}",
            std::process::id(),
            out.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        std::fs::rename(out, &old)
            .with_context(|| format!("--out {}: moving the old folder aside", out.display()))?;
        Some(old)
    } else {
        None
    };
    std::fs::rename(&tmp, out)
        .with_context(|| format!("--out {}: renaming into place", out.display()))?;
    nin_format::sync_dir(&parent)?;
    if let Some(old) = old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("removing the replaced {}", old.display()))?;
    }
    eprintln!(
        "exported {} ({}, {} classes) from {} to {}",
        config.model,
        config.model_args,
        config.num_classes,
        exported.model_dir.display(),
        out.display()
    );
    eprintln!(
        "upload with: huggingface-cli upload {} {}",
        args.repo_id,
        out.display()
    );
    Ok(())
}

/// Refuses a `--out` that holds something, unless `force`.
fn refuse_to_overwrite(out: &Path, force: bool) -> anyhow::Result<()> {
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() && !force {
                bail!(
                    "--out {} is not empty: pick another folder, or pass --force to replace it",
                    out.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if out.exists() && !out.is_dir() => {
            bail!("--out {} exists and is not a folder", out.display())
        }
        Err(e) => Err(e).with_context(|| format!("--out {}", out.display())),
    }
}

/// The model directory to export from `source`, its run and the results measured for it.
fn locate(source: &Path, which: WhichWeights) -> anyhow::Result<Exported> {
    if !source.is_dir() {
        bail!("not a folder (expected a run folder or a model directory)");
    }
    if source.join(RUN_JSON).is_file() {
        let run = RunConfig::load(source)?;
        let best = source.join(BEST_DIR);
        if matches!(which, WhichWeights::Best) && best.join(CONFIG_JSON).is_file() {
            return from_best(best, run);
        }
        return from_run_root(source, run);
    }
    if !source.join(CONFIG_JSON).is_file() {
        bail!("holds neither {RUN_JSON} (a run folder) nor {CONFIG_JSON} (a model directory)");
    }
    // A run's best/ is a model directory whose run is its parent.
    let parent_run = source.parent().filter(|p| {
        source.file_name().is_some_and(|n| n == BEST_DIR) && p.join(RUN_JSON).is_file()
    });
    if let Some(parent) = parent_run {
        let run = RunConfig::load(parent)?;
        return from_best(source.to_path_buf(), run);
    }
    Ok(Exported {
        model_dir: source.to_path_buf(),
        run: None,
        result: None,
        no_result: Some("a bare model directory carries no measured results".into()),
    })
}

fn split_name(run: &RunConfig) -> String {
    let split = match run.data.eval_split {
        nin_format::Split::Val => format!(
            "validation hold-out of {} training images",
            run.data.val.unwrap_or(0)
        ),
        _ => "test split".to_string(),
    };
    match run.data.limit_eval {
        Some(n) => format!("{} {split}, first {n} images", run.data.dataset),
        None => format!("{} {split}", run.data.dataset),
    }
}

/// `best/` of a run: its weights are those of the epoch its metadata names.
fn from_best(best: PathBuf, run: RunConfig) -> anyhow::Result<Exported> {
    let run_dir = best.parent().map(Path::to_path_buf).unwrap_or_default();
    let meta = nin_layers::weights::read_safetensors(&best.join(MODEL_SAFETENSORS), &Device::Cpu)?
        .metadata;
    let epoch = meta.get("epoch").and_then(|e| e.parse::<usize>().ok());
    let history = nin_format::read_metrics(&run_dir)?;
    let record = epoch.and_then(|e| history.iter().find(|r| r.epoch == e).cloned());
    let split = split_name(&run);
    Ok(Exported {
        model_dir: best,
        no_result: record.is_none().then(|| {
            format!(
                "{}/{METRICS_JSONL} has no row for these weights",
                run_dir.display()
            )
        }),
        result: record.map(|record| Measured::new(record, split, &history)),
        run: Some(run),
    })
}

/// The run folder's own (latest) weights: results only when they are an epoch's end.
fn from_run_root(run_dir: &Path, run: RunConfig) -> anyhow::Result<Exported> {
    if !run_dir.join(TRAINER_STATE_JSON).is_file() {
        bail!("the run has no checkpoint yet (no {TRAINER_STATE_JSON})");
    }
    let state = TrainerState::load(run_dir)?;
    let record = if state.step_in_epoch == 0 && state.epoch > 0 {
        state
            .history
            .iter()
            .find(|r| r.epoch == state.epoch)
            .cloned()
    } else {
        None
    };
    let split = split_name(&run);
    Ok(Exported {
        model_dir: run_dir.to_path_buf(),
        no_result: record.is_none().then(|| {
            format!(
                "the weights are a checkpoint in the middle of epoch {} (step {}), not yet evaluated",
                state.epoch + 1,
                state.step_in_epoch
            )
        }),
        result: record.map(|record| Measured::new(record, split, &state.history)),
        run: Some(run),
    })
}

/// Writes `tensors` with `metadata` as a safetensors file whose header lists its keys (tensor
/// names and metadata entries) in sorted order, so the same model exports to the same bytes.
/// The safetensors crate writes metadata from a `HashMap`, in an order that changes from run to
/// run; the header is re-serialised here (serde_json's maps are sorted) with the same data
/// offsets, so the tensor bytes are untouched.
fn write_sorted_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<anyhow::Result<_>>()?;
    let meta = metadata.clone().into_iter().collect();
    let bytes = safetensors::serialize(cpu.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
        .with_context(|| format!("serialising {}", path.display()))?;
    let bytes = sort_header(&bytes).with_context(|| format!("serialising {}", path.display()))?;
    Ok(nin_format::write_atomic(path, &bytes)?)
}

/// The same safetensors bytes with the header's JSON keys sorted (padded with spaces to a
/// multiple of 8 bytes, as the format's writer does).
fn sort_header(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let len = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .context("a safetensors file shorter than its header length")?;
    let len = usize::try_from(len)?;
    let header = bytes
        .get(8..8 + len)
        .context("a truncated safetensors header")?;
    let value: serde_json::Value = serde_json::from_slice(header)?;
    let mut sorted = serde_json::to_vec(&sort_keys(value))?;
    while sorted.len() % 8 != 0 {
        sorted.push(b' ');
    }
    let mut out = (sorted.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&sorted);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

/// `value` with every object's keys in sorted order (whatever map serde_json was built with).
fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        other => other,
    }
}

/// The `nin train` command line that reproduces `run`, run from the exported folder (a built-in
/// recipe by name, any other as the exported `recipe.json`; `--model-args` only where they are
/// not the preset's).
fn train_command(run: &RunConfig) -> String {
    // A user's file, or a built-in recipe changed since the run, is read from `recipe.json`.
    // Epochs, batch and rate are spelled out either way.
    let built_in = Recipe::by_name(&run.recipe.name).is_ok_and(|mut r| {
        r.epochs = run.recipe.epochs;
        r.batch_size = run.recipe.batch_size;
        r.lr = run.recipe.lr;
        r == run.recipe
    });
    let recipe = if built_in {
        run.recipe.name.clone()
    } else {
        RECIPE_FILE.to_string()
    };
    let mut cmd = format!("nin train --model {}", run.model.name);
    let preset = nin_zoo::resolve_args(&run.model.name, run.model.num_classes, None).ok();
    if preset.as_ref() != Some(&run.model.model_args) {
        cmd.push_str(&format!(" --model-args '{}'", run.model.model_args));
    }
    cmd.push_str(&format!(
        " --dataset {} --recipe {recipe} --epochs {} --batch-size {} --lr {} --seed {} --threads {}",
        run.data.dataset,
        run.recipe.epochs,
        run.recipe.batch_size,
        run.recipe.lr,
        run.seed,
        run.threads
    ));
    if let Some(init) = &run.init_from {
        cmd.push_str(&format!(" --init-from {}", init.source));
    }
    for (flag, value) in [
        ("--limit-train", run.data.limit_train),
        ("--limit-eval", run.data.limit_eval),
        ("--val", run.data.val),
    ] {
        if let Some(n) = value {
            cmd.push_str(&format!(" {flag} {n}"));
        }
    }
    cmd
}

/// The PyTorch reference module of a family: the golden-fixture script that defines it and the
/// class name (each takes the `model_args` dict).
fn reference_module(family: &str) -> (&'static str, &'static str) {
    match family {
        "cic" => ("models/cic/testdata/gen_cic_golden.py", "CiC"),
        "drnin" => ("models/drnin/testdata/gen_drnin_golden.py", "DrNIN"),
        "dcnin" => ("models/dcnin/testdata/gen_dcnin_golden.py", "DcNIN"),
        _ => ("models/nin/testdata/gen_nin_golden.py", "NIN"),
    }
}

/// `"14 min 32 s into the run (training and evaluation), 2 threads on AMD EPYC (cpu)"`: what
/// a reader needs to set a card's time against their own machine.
fn time_and_machine(seconds: f64, run: Option<&RunConfig>) -> String {
    let seconds = seconds.round() as u64;
    let time = format!(
        "{} min {} s into the run (training and evaluation)",
        seconds / 60,
        seconds % 60
    );
    match run {
        Some(run) => format!(
            "{time}, {} thread{} on {} ({})",
            run.threads,
            if run.threads == 1 { "" } else { "s" },
            run.processor
                .as_deref()
                .unwrap_or("an unrecorded processor"),
            run.device
        ),
        None => time,
    }
}

/// The `README.md` of the repository: Hub front matter, then the card.
fn model_card(
    exported: &Exported,
    config: &ModelDirConfig,
    entry: &nin_zoo::ModelEntry,
    info: &nin_zoo::ModelInfo,
    repo_id: &str,
) -> String {
    let run = exported.run.as_ref();
    let dataset =
        run.map(|r| r.data.dataset.to_string())
            .unwrap_or_else(|| match config.num_classes {
                100 => "cifar100".to_string(),
                _ => "cifar10".to_string(),
            });
    let hub_dataset = match dataset.as_str() {
        "cifar100" => "uoft-cs/cifar100",
        _ => "uoft-cs/cifar10",
    };
    let mut s = String::new();
    // Front matter: the Hub reads these keys (library, tags, datasets, license, model-index).
    s.push_str("---\nlibrary_name: nin-zoo\nlicense: apache-2.0\n");
    s.push_str("tags:\n- image-classification\n- nin-zoo\n");
    let _ = writeln!(s, "- {}", entry.family_name);
    if config.model != entry.family_name {
        let _ = writeln!(s, "- {}", config.model);
    }
    s.push_str("- safetensors\n");
    let _ = writeln!(s, "datasets:\n- {hub_dataset}");
    if let Some(m) = &exported.result {
        let _ = writeln!(s, "metrics:\n- accuracy");
        let _ = writeln!(s, "model-index:\n- name: {}", repo_id);
        let _ = writeln!(s, "  results:\n  - task:\n      type: image-classification");
        let _ = writeln!(
            s,
            "    dataset:\n      name: {dataset}\n      type: {hub_dataset}\n      split: {}",
            match run.map(|r| r.data.eval_split) {
                Some(nin_format::Split::Val) => "validation",
                _ => "test",
            }
        );
        let _ = writeln!(s, "    metrics:");
        if let Some(t1) = m.record.eval_top1 {
            let _ = writeln!(
                s,
                "    - type: accuracy\n      name: top-1 accuracy\n      value: {t1:.2}"
            );
        }
        if let Some(t5) = m.record.eval_top5 {
            let _ = writeln!(
                s,
                "    - type: accuracy\n      name: top-5 accuracy\n      value: {t5:.2}"
            );
        }
    }
    s.push_str("---\n\n");

    let _ = writeln!(s, "# {} on {dataset}\n", config.model);
    let _ = writeln!(
        s,
        "A {} ({}) image classifier for {}×{} {dataset} images, trained with \
         [nin-zoo](https://github.com/nin-zoo/nin-zoo) (Rust, candle). Weights are stored by \
         PyTorch state-dict name and load into the PyTorch reference module with `strict=True`.\n",
        config.model,
        entry.summary,
        config.pretrained_cfg.input_size[1],
        config.pretrained_cfg.input_size[2]
    );

    s.push_str("## Architecture\n\n");
    let _ = writeln!(s, "| | |\n| --- | --- |");
    let _ = writeln!(
        s,
        "| preset | `{}` (family `{}`) |",
        config.model, entry.family_name
    );
    let _ = writeln!(s, "| classes | {} |", config.num_classes);
    let _ = writeln!(s, "| parameters | {} |", info.param_count);
    let _ = writeln!(
        s,
        "| multiply-accumulates per image | {} |",
        info.macs_per_image
    );
    let _ = writeln!(
        s,
        "| input | {:?}, {} |",
        config.pretrained_cfg.input_size,
        match &config.pretrained_cfg.whitening {
            Some(w) => format!("GCN + ZCA whitened (`{w}`)"),
            None => {
                let list = |v: &[f64]| {
                    v.iter()
                        .map(|x| format!("{x:.4}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!(
                    "mean ({}), std ({})",
                    list(&config.pretrained_cfg.mean),
                    list(&config.pretrained_cfg.std)
                )
            }
        }
    );
    let _ = writeln!(
        s,
        "\n`model_args`:\n\n```json\n{}\n```\n",
        config.model_args
    );

    s.push_str("## Results\n\n");
    match &exported.result {
        Some(m) => {
            let pct = |v: Option<f64>| v.map(|v| format!("{v:.2} %")).unwrap_or_else(|| "—".into());
            let _ = writeln!(
                s,
                "Measured by the training run after epoch {} on the {}, {}:\n",
                m.record.epoch,
                m.split,
                time_and_machine(m.elapsed_seconds, run)
            );
            let _ = writeln!(s, "| top-1 | top-5 | loss |\n| --- | --- | --- |");
            let _ = writeln!(
                s,
                "| {} | {} | {} |\n",
                pct(m.record.eval_top1),
                pct(m.record.eval_top5),
                m.record
                    .eval_loss
                    .map(|l| format!("{l:.4}"))
                    .unwrap_or_else(|| "—".into())
            );
            // A validation hold-out is defined by the run folder, which the repository lacks.
            if run.and_then(|r| r.data.val).is_none() {
                let _ = writeln!(
                    s,
                    "To measure it again, from this folder: `nin eval --model .{}` (`--data PATH` \
                     reads a local copy of the dataset instead of downloading it).\n",
                    run.and_then(|r| r.data.limit_eval)
                        .map(|n| format!(" --limit-eval {n}"))
                        .unwrap_or_default()
                );
            }
        }
        None => {
            let _ = writeln!(
                s,
                "No measured result: {}. Measure one with `nin eval --model {repo_id_hub}`.\n",
                exported.no_result.as_deref().unwrap_or("none recorded"),
                repo_id_hub = format_args!("hf-hub:{repo_id}")
            );
        }
    }

    if let Some(run) = run {
        s.push_str("## Training\n\n");
        let data = &run.data;
        let _ = writeln!(
            s,
            "Recipe `{}` ({}): {} epochs, batch {}, base learning rate {}, seed {}, on {}{}{}.\n",
            run.recipe.name,
            run.recipe.description,
            run.recipe.epochs,
            run.recipe.batch_size,
            run.recipe.lr,
            run.seed,
            data.dataset,
            data.limit_train
                .map(|n| format!(", the first {n} training images"))
                .unwrap_or_default(),
            data.val
                .map(|n| format!(", {n} held out for validation"))
                .unwrap_or_default(),
        );
        if let Some(init) = &run.init_from {
            let _ = writeln!(
                s,
                "Fine-tuned from `{}` ({}, preset `{}`): {} tensors kept, {} re-initialised{}{}.\n",
                init.source,
                init.origin,
                init.model,
                init.kept.len(),
                init.reinitialised.len(),
                if init.reinitialised.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        init.reinitialised
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                if init.whitening_from_source {
                    "; the source's whitening was reused"
                } else {
                    ""
                },
            );
        }
        let _ = writeln!(
            s,
            "To train it again (from this folder, which holds `{RECIPE_FILE}`):\n\n```sh\n{}\n```\n",
            train_command(run)
        );
        let _ = writeln!(s, "The full recipe, as `run.json` records it:\n");
        let recipe = serde_json::to_string_pretty(&run.recipe).unwrap_or_default();
        let _ = writeln!(s, "```json\n{recipe}\n```\n");
        let _ = writeln!(
            s,
            "Versions: {}.\n",
            run.versions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    s.push_str("## Use with nin\n\n");
    let _ = writeln!(
        s,
        "```sh\nnin predict --model hf-hub:{repo_id} cat.png\nnin eval --model hf-hub:{repo_id}\n```\n"
    );
    let _ = writeln!(
        s,
        "or from Rust: `nin_zoo::Classifier::load(dir, &candle_core::Device::Cpu)` on a local copy \
         of this repository.\n"
    );

    let (script, class) = reference_module(entry.family_name);
    s.push_str("## Use from PyTorch\n\n");
    let _ = writeln!(
        s,
        "The weights are a plain PyTorch state dict. `{class}` is the reference module of the \
         `{}` family, defined in [`{script}`](https://github.com/nin-zoo/nin-zoo/blob/main/{script}); \
         it takes `config.json`'s `model_args`:\n",
        entry.family_name
    );
    let _ = writeln!(
        s,
        "```python\nimport json\nimport torch\nfrom safetensors.torch import load_file\nfrom {} import {class}  # copy the script beside yours\n\n\
         config = json.load(open(\"config.json\"))\nmodel = {class}(config[\"model_args\"])\n\
         model.load_state_dict(load_file(\"model.safetensors\"), strict=True)\nmodel.eval()\n```\n",
        Path::new(script).file_stem().map(|s| s.to_string_lossy()).unwrap_or_default()
    );
    match &config.pretrained_cfg.whitening {
        Some(w) => {
            let _ = writeln!(
                s,
                "Inputs are whitened as in training, with the tensors of `{w}`: each image \
                 (its 3072 pixel values, CHW, any scale) minus its own mean, scaled to norm \
                 `zca.gcn_scale` (GCN), then minus `zca.mean` and multiplied, as a row vector, \
                 by `zca.matrix`; `nin predict` does this for you.\n"
            );
        }
        None => {
            let _ = writeln!(
                s,
                "Inputs are `(pixels / 255 - mean) / std` per channel with `config.json`'s \
                 `pretrained_cfg` mean and std, at {}×{}.\n",
                config.pretrained_cfg.input_size[1], config.pretrained_cfg.input_size[2]
            );
        }
    }

    s.push_str("## Upload\n\n");
    let _ = writeln!(
        s,
        "```sh\nhuggingface-cli upload {repo_id} .\n```\n\nfrom this folder (or \
         `huggingface-cli upload {repo_id} REPO_DIR` from elsewhere).\n"
    );
    s.push_str("## Licence\n\nThe weights and this card: Apache-2.0 (nin-zoo is MIT OR Apache-2.0). \
                The CIFAR datasets are Alex Krizhevsky's (Learning Multiple Layers of Features from Tiny Images, 2009).\n");
    s
}
