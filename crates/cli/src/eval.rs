//! `nin eval`: accuracy of a trained model directory on a CIFAR split: top-1, top-5, per class,
//! and the confusion matrix.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use nin_data::{Dataset, Holdout, LabelKind, Loader, LoaderConfig, Split};
use nin_format::files::RUN_JSON;
use nin_format::{RunConfig, TestTimeAugment};
use nin_zoo::Classifier;

use crate::common::{
    dataset_for_classes, load_dataset, parse_device, positive, set_threads, LoaderSource,
};
use crate::data::DatasetArg;
use crate::model_arg::resolve_model;

/// Arguments of `nin eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model: a model directory (config.json + model.safetensors, e.g. a run folder or its
    /// best/), a pretrained tag (`nin list --pretrained`), or hf-hub:owner/name[@revision].
    #[arg(long, value_name = "MODEL")]
    model: String,
    /// Read Hub models from the local cache only, never the network (as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Dataset (default: CIFAR-10 for 10-class models, CIFAR-100 for 100-class ones).
    #[arg(long, value_enum)]
    dataset: Option<DatasetArg>,
    /// CIFAR archive or folder (default: the cache, downloading on first use).
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Which split: the test set, or the validation images held out of train.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// Size of the validation hold-out (default: read from the run's run.json, beside the
    /// model directory or one folder up for a run's best/).
    #[arg(long, value_name = "N", value_parser = positive())]
    val: Option<usize>,
    /// Seed of the validation hold-out (default: the run's seed, from its run.json).
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate the first N images only.
    #[arg(long, value_name = "N", value_parser = positive())]
    limit_eval: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 128, value_parser = positive())]
    batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Test-time augmentation: `flip` averages the logits of each image and its mirror image
    /// (twice the evaluation time; name it beside any accuracy it gives).
    #[arg(long, value_enum, default_value_t = TtaArg::None)]
    tta: TtaArg,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also draw the confusion matrix (normalised per true class) and the per-class top-1 as
    /// PNG charts into this folder (confusion_matrix.png, per_class_accuracy.png).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
}

/// `--tta` values; see [`TestTimeAugment`].
#[derive(Clone, Copy, Debug, ValueEnum)]
enum TtaArg {
    None,
    Flip,
}

impl From<TtaArg> for TestTimeAugment {
    fn from(arg: TtaArg) -> Self {
        match arg {
            TtaArg::None => TestTimeAugment::None,
            TtaArg::Flip => TestTimeAugment::Flip,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SplitArg {
    Test,
    Val,
}

/// Runs `nin eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    let model = resolve_model(&args.model, args.offline)?;
    let classifier = Classifier::load(&model.dir, &device)
        .with_context(|| format!("--model {}", model.origin))?;
    let cfg = classifier.config();
    let dataset = match args.dataset {
        Some(d) => Dataset::from(d),
        None => dataset_for_classes(cfg.num_classes)?,
    };
    let (split, holdout) = match args.split {
        SplitArg::Test => (Split::Test, None),
        SplitArg::Val => (Split::Val, Some(validation_holdout(&args, &model.dir)?)),
    };
    let cifar = load_dataset(dataset, args.data.as_deref(), LabelKind::Fine)?;
    if cifar.train.n_classes != cfg.num_classes {
        anyhow::bail!(
            "--model {} has {} classes but {dataset} has {}",
            model.origin,
            cfg.num_classes,
            cifar.train.n_classes
        );
    }
    let mut set = cifar.split(split, holdout)?;
    if let Some(n) = args.limit_eval {
        set = set.limit(n);
    }
    let n_images = set.len();
    let mut source = LoaderSource(Loader::new(
        set,
        LoaderConfig::eval(args.batch_size),
        classifier.preprocess().clone(),
        device.clone(),
    )?);
    let tta = TestTimeAugment::from(args.tta);
    let report = nin_train::evaluate(classifier.model(), &mut source, &device, tta)?;
    if !(report.loss.is_finite() && report.top1.is_finite()) {
        anyhow::bail!(
            "--model {}: the model's outputs are not finite (loss {}): its weights or whitening are damaged",
            model.origin,
            report.loss
        );
    }
    let names = if cfg.label_names.len() == cfg.num_classes {
        cfg.label_names.clone()
    } else {
        cifar.label_names.clone()
    };
    let confusion = report.confusion.counts();
    let tta_note = match tta {
        TestTimeAugment::None => "",
        TestTimeAugment::Flip => ", flip TTA",
    };
    if let Some(dir) = &args.plot {
        let title = format!(
            "{} on {dataset} {split} ({n_images} images{tta_note}): top-1 {:.2} %",
            model.origin, report.top1
        );
        let written =
            crate::charts::write_eval_charts(dir, &title, &names, &confusion, &report.per_class)?;
        for path in written {
            // stderr: with --json, stdout holds the JSON report only.
            eprintln!("wrote {}", path.display());
        }
    }
    if args.json {
        let per_class: Vec<_> = names
            .iter()
            .zip(&report.per_class)
            .map(|(n, a)| serde_json::json!({"label": n, "top1": a}))
            .collect();
        let json = serde_json::json!({
            "model": model.origin, "dataset": dataset.to_string(), "split": format!("{split:?}").to_lowercase(),
            "images": n_images, "tta": tta, "loss": report.loss, "top1": report.top1, "top5": report.top5,
            "per_class": per_class, "confusion": confusion, "labels": names,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "{} on {dataset} {} ({n_images} images{tta_note}): loss {:.4}  top-1 {:.2} %  top-5 {:.2} %",
        cfg.model,
        format!("{split:?}").to_lowercase(),
        report.loss,
        report.top1,
        report.top5
    );
    println!("\nper-class top-1:");
    for (name, acc) in names.iter().zip(&report.per_class) {
        println!("  {name:<16} {acc:6.2} %");
    }
    if cfg.num_classes <= 20 {
        println!("\nconfusion matrix (rows: true class, columns: predicted):");
        let width = 6;
        print!("{:>16}", "");
        for i in 0..cfg.num_classes {
            print!("{i:>width$}");
        }
        println!();
        for (i, row) in confusion.iter().enumerate() {
            print!(
                "{:>12} {i:>3}",
                names.get(i).map(String::as_str).unwrap_or("")
            );
            for count in row {
                print!("{count:>width$}");
            }
            println!();
        }
    } else {
        println!(
            "\n(confusion matrix of {} classes: use --json)",
            cfg.num_classes
        );
    }
    Ok(())
}

/// The validation hold-out of the run that trained `--model`: its size and seed from the run's
/// `run.json` (in the model directory, or one folder up for a run's `best/`), which explicit
/// `--val`/`--seed` must agree with. Without a run.json both flags are needed.
fn validation_holdout(args: &EvalArgs, model_dir: &Path) -> anyhow::Result<Holdout> {
    let run = [model_dir, model_dir.parent().unwrap_or(Path::new(""))]
        .into_iter()
        .find(|dir| dir.join(RUN_JSON).is_file())
        .map(|dir| RunConfig::load(dir).map(|run| (dir.join(RUN_JSON), run)))
        .transpose()?;
    let Some((path, run)) = run else {
        return match (args.val, args.seed) {
            (Some(size), Some(seed)) => Ok(Holdout { size, seed }),
            _ => anyhow::bail!(
                "--split val: {} has no run.json (nor has its parent folder) to read the validation hold-out from; pass --val N --seed S as given to `nin train`",
                model_dir.display()
            ),
        };
    };
    let Some(size) = run.data.val else {
        anyhow::bail!(
            "--split val: the run in {} held out no validation images (it was trained without --val); evaluate --split test",
            path.display()
        );
    };
    for (flag, given, recorded) in [
        ("--val", args.val.map(|v| v as u64), size as u64),
        ("--seed", args.seed, run.seed),
    ] {
        if given.is_some_and(|g| g != recorded) {
            anyhow::bail!(
                "{flag} {}: the run's validation hold-out in {} has {flag} {recorded}; evaluating another one would test on training images",
                given.unwrap_or_default(),
                path.display()
            );
        }
    }
    Ok(Holdout {
        size,
        seed: run.seed,
    })
}
