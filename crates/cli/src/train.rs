//! `nin train`: train a zoo model on CIFAR-10/100 with a named recipe, drawing a progress bar,
//! writing a run folder, and resuming an interrupted run exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use nin_data::{
    Dataset, Holdout, ImageSet, LabelKind, Loader, LoaderConfig, Normalize, Preprocess, Split, Zca,
    ZcaConfig,
};
use nin_format::files::{RUN_JSON, TRAINER_STATE_JSON, WHITENING_SAFETENSORS};
use nin_format::{
    DataSpec, EpochRecord, InputTransform, ModelSpec, PretrainedCfg, Recipe, RunConfig, StemInit,
};
use nin_train::{CheckpointStage, Control, EvalReport, Finish, Progress, StartReport, StepReport};

use crate::common::{
    claim_run_dir, load_dataset, parse_device, positive, set_threads, LoaderSource,
};
use crate::data::DatasetArg;
use crate::exit::Interrupted;
use crate::finetune::Source;

/// Arguments of `nin train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model preset (see `nin list`) [default: nin_bn_s, NIN with batch norm at half width; `nin`
    /// is the authors' exact model].
    #[arg(long)]
    model: Option<String>,
    /// JSON object overriding fields of the preset's config, e.g. '{"pool2": "max"}'.
    #[arg(long, value_name = "JSON")]
    model_args: Option<String>,
    /// Dataset to train on [default: cifar10].
    #[arg(long, value_enum)]
    dataset: Option<DatasetArg>,
    /// Training recipe: cpu_fast (the default: 4 epochs, a quarter of an hour for nin_bn_s on
    /// 2 cores), cpu_hour (15 epochs, within an hour), cpu_quick (3 epochs of the exact NIN),
    /// modern, paper, or a JSON file.
    #[arg(long)]
    recipe: Option<String>,
    /// Override the recipe's number of epochs.
    #[arg(long, value_parser = positive())]
    epochs: Option<usize>,
    /// Override the recipe's batch size.
    #[arg(long, value_parser = positive())]
    batch_size: Option<usize>,
    /// Override the recipe's base learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of every random choice: init, dropout, shuffling, augmentation [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda or cuda:N [default: cpu].
    #[arg(long)]
    device: Option<String>,
    /// Worker threads (default: one per core). Bit-identical reruns need the same count.
    #[arg(long)]
    threads: Option<usize>,
    /// CIFAR archive or folder (default: the cache, downloading on first use).
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Run folder (default: runs/<model>_<dataset>_s<seed>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the interrupted run in --out from its last checkpoint, exactly as its run.json
    /// records it (flags that contradict it are refused).
    #[arg(long, requires = "out")]
    resume: bool,
    /// Train on the first N images of the training split only.
    #[arg(long, value_name = "N", value_parser = positive())]
    limit_train: Option<usize>,
    /// Evaluate on the first N images of the evaluation split only.
    #[arg(long, value_name = "N", value_parser = positive())]
    limit_eval: Option<usize>,
    /// Hold N training images out as the validation split (evaluated each epoch, and used to
    /// pick the best checkpoint) instead of the test split.
    #[arg(long, value_name = "N", value_parser = positive())]
    val: Option<usize>,
    /// Also checkpoint every N steps, so a killed run loses at most N steps (0: only at epoch
    /// ends) [default: 100].
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<usize>,
    /// No progress bar (one line per epoch only).
    #[arg(long)]
    quiet: bool,
    /// Start from a pretrained model (a model directory, a pretrained tag such as
    /// `nin.cifar10`, or `hf-hub:owner/name[@revision]`): every tensor whose name and shape
    /// match is copied, the rest (e.g. a new class layer) keep their seeded initialisation.
    /// Without --model, the source's architecture is trained with the dataset's class count.
    #[arg(long, value_name = "MODEL")]
    init_from: Option<String>,
    /// Never touch the network to resolve --init-from (use the local cache).
    #[arg(long)]
    offline: bool,
}

/// Runs `nin train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let kill_point = KillPoint::from_env()?;
    let mut init_source = None;
    let mut whitening_from_source = false;
    let threads = set_threads(args.threads)?;
    let (mut run, out) = if args.resume {
        let out = args.out.clone().context("--resume needs --out DIR")?;
        if !out.join(RUN_JSON).is_file() {
            bail!(
                "--resume: {} holds no run to resume (no {RUN_JSON})",
                out.display()
            );
        }
        let run = RunConfig::load(&out)
            .with_context(|| format!("--resume: reading the run in {}", out.display()))?;
        refuse_contradicting_flags(&args, &run)?;
        if run.threads != threads {
            eprintln!(
                "note: the run was trained with {} threads, now {threads}: results stay correct but may differ in the last bits (pass --threads {})",
                run.threads, run.threads
            );
        }
        (run, Some(out))
    } else {
        let source = args
            .init_from
            .as_deref()
            .map(|spec| Source::read(spec, args.offline))
            .transpose()?;
        let (run, out) = new_run(&args, threads, source.as_ref())?;
        if let Some(source) = &source {
            // Refuse a source that shares nothing with the model before loading any data.
            let probe = nin_zoo::create_model(
                &run.model.name,
                run.model.num_classes,
                Some(&run.model.model_args),
                run.seed,
                &candle_core::Device::Cpu,
            )?;
            source.apply(&probe.varmap, &run.model.name)?;
        }
        init_source = source;
        (run, out)
    };
    let spec = run.data.clone();
    let device = parse_device(&run.device)?;

    let cifar = load_dataset(spec.dataset, spec.data.as_deref(), LabelKind::Fine)?;
    // A new run claims its folder only now that its data is at hand, so a missing dataset does
    // not leave a claimed, empty run behind; the claim is released if setting up fails.
    let mut claim = None;
    let out = match out {
        Some(out) if args.resume => out,
        out => {
            run.label_names = cifar.label_names.clone();
            let c = claim_run_dir(out.as_deref(), &run)?;
            let out = c.dir().to_path_buf();
            claim = Some(c);
            out
        }
    };
    let holdout = spec.val.map(|size| Holdout {
        size,
        seed: run.seed,
    });
    let mut train_set = cifar.split(Split::Train, holdout)?;
    let mut eval_set = cifar.split(spec.eval_split, holdout)?;
    if let Some(n) = spec.limit_train {
        train_set = train_set.limit(n);
    }
    if let Some(n) = spec.limit_eval {
        eval_set = eval_set.limit(n);
    }
    let preprocess = match run.recipe.input {
        InputTransform::Normalize => {
            if let Some(source) = &init_source {
                if source.config.pretrained_cfg.whitening.is_some() {
                    eprintln!(
                        "note: {} was trained on GCN + ZCA whitened inputs, but recipe {} normalises by mean/std: \
                         the kept filters will see inputs of other statistics (--recipe paper reuses the source's whitening)",
                        source.spec, run.recipe.name
                    );
                }
            }
            nin_zoo::preprocess_of(&out, &run.model_dir_config())?
        }
        InputTransform::GcnZca {
            gcn_scale,
            regularizer,
        } => {
            let cfg = ZcaConfig {
                gcn_scale,
                regularizer,
            };
            let (zca, from_source) = whitening(
                &mut run,
                &out,
                &train_set,
                cfg,
                args.resume,
                init_source.as_ref(),
            )?;
            whitening_from_source = from_source;
            Preprocess::GcnZca(Arc::new(zca))
        }
    };
    let created = nin_zoo::create_model(
        &run.model.name,
        run.model.num_classes,
        Some(&run.model.model_args),
        run.seed,
        &device,
    )?;
    // A new run (or one killed before its first checkpoint) fits its first layer to the data.
    let fresh = !out.join(TRAINER_STATE_JSON).is_file();
    if let StemInit::WhitenedPatches { images, eps } = run.recipe.stem_init {
        if fresh && init_source.is_none() && run.init_from.is_none() {
            let Preprocess::Normalize(normalize) = &preprocess else {
                bail!(
                    "recipe {}: stem_init whitened_patches needs inputs normalised by mean/std; GCN + ZCA inputs are whitened already",
                    run.recipe.name
                );
            };
            let what = init_stem(&created.varmap, &train_set, normalize, images, eps)?;
            eprintln!("{what}");
        }
    }
    let train_cfg = LoaderConfig {
        augment: run.recipe.augment.is_active().then_some(run.recipe.augment),
        ..LoaderConfig::train(run.recipe.batch_size, run.seed)
    };
    let n_train = train_set.len();
    let n_eval = eval_set.len();
    let mut train_src = LoaderSource(Loader::new(
        train_set,
        train_cfg,
        preprocess.clone(),
        device.clone(),
    )?);
    let mut eval_src = LoaderSource(Loader::new(
        eval_set,
        LoaderConfig::eval(run.recipe.batch_size.max(128)),
        preprocess,
        device.clone(),
    )?);
    if nin_train::BatchSource::batches_per_epoch(&train_src) == 0 {
        bail!(
            "{n_train} training images make no full batch of {}: lower --batch-size or raise --limit-train",
            run.recipe.batch_size
        );
    }

    if let Some(source) = &init_source {
        let mut init = source.apply(&created.varmap, &run.model.name)?;
        init.whitening_from_source = whitening_from_source;
        eprintln!("{}", crate::finetune::describe(&init));
        run.init_from = Some(init);
    } else if let Some(init) = &run.init_from {
        if args.resume && !out.join(TRAINER_STATE_JSON).is_file() {
            crate::finetune::reapply(init, args.offline, &created.varmap, &run.model.name, &out)?;
            eprintln!("{}", crate::finetune::describe(init));
        }
    }
    eprintln!(
        "{} {} on {} ({} train / {} {} images), recipe {}, {} epochs, batch {}, {} threads, {} → {}",
        if args.resume { "resuming" } else { "training" },
        run.model.name,
        spec.dataset,
        n_train,
        n_eval,
        match spec.eval_split {
            Split::Val => "val",
            _ => "test",
        },
        run.recipe.name,
        run.recipe.epochs,
        run.recipe.batch_size,
        threads,
        run.device,
        out.display()
    );

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // Ctrl-C, and SIGTERM (what SLURM and most schedulers send before killing a preempted
        // job; ctrlc's `termination` feature): both save a checkpoint and stop. A second signal
        // while saving is ignored; the checkpoint write is atomic either way.
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C / SIGTERM handler")?;
    }
    let mut progress = BarProgress::new(run.recipe.batch_size, args.quiet, interrupted);
    progress.kill_point = kill_point;
    if let Some(claim) = claim {
        claim.keep();
    }
    let outcome = if args.resume {
        nin_train::resume(
            created.model.as_ref(),
            &created.varmap,
            &mut train_src,
            Some(&mut eval_src),
            &out,
            &mut progress,
        )
    } else {
        nin_train::train(
            created.model.as_ref(),
            &created.varmap,
            &run,
            &mut train_src,
            Some(&mut eval_src),
            &out,
            &mut progress,
        )
    }
    .with_context(|| format!("training in {}", out.display()))?;
    progress.clear();
    match outcome.finish {
        Finish::Completed => {
            let best = outcome
                .state
                .best_eval_top1
                .map(|b| {
                    format!(
                        ", best eval top-1 {b:.2} % (epoch {})",
                        outcome.state.best_epoch.unwrap_or(0)
                    )
                })
                .unwrap_or_default();
            eprintln!("done: {}{best}", out.display());
        }
        Finish::Stopped => {
            return Err(Interrupted(format!(
                "stopped at epoch {} step {} with a checkpoint; continue with: nin train --resume --out {}",
                outcome.state.epoch + 1,
                outcome.state.step_in_epoch,
                out.display()
            ))
            .into())
        }
        Finish::AlreadyFinished => eprintln!(
            "nothing to resume: {} already finished all {} epochs",
            out.display(),
            outcome.state.epoch
        ),
    }
    Ok(())
}

/// The run's GCN + ZCA transform: fitted on `train_set` and saved into `out` for a new run (the
/// engine copies it into every model directory it writes), read back from `out` on `--resume`,
/// or, for a run fine-tuned from a whitened model, the source's (then the flag is true).
fn whitening(
    run: &mut RunConfig,
    out: &Path,
    train_set: &ImageSet,
    cfg: ZcaConfig,
    resume: bool,
    source: Option<&Source>,
) -> anyhow::Result<(Zca, bool)> {
    let path = out.join(WHITENING_SAFETENSORS);
    if resume {
        let zca = Zca::load(&path)
            .with_context(|| format!("--resume: the run's whitening {}", path.display()))?;
        return Ok((zca, false));
    }
    if let Some(source) = source {
        // The kept filters were trained on the source's whitened inputs: refitting the
        // transform on the new data would change what they see, so the source's is reused
        // (CIFAR-10's and CIFAR-100's image statistics are close; the class layer is new).
        if let Some(from) = source.whitening_path()? {
            let zca = Zca::load(&from)
                .with_context(|| format!("--init-from {}: its whitening", source.spec))?;
            if zca.gcn_scale != cfg.gcn_scale {
                eprintln!(
                    "note: reusing the whitening of {} (GCN scale {}), not the recipe's (GCN scale {})",
                    source.spec, zca.gcn_scale, cfg.gcn_scale
                );
            } else {
                eprintln!("reusing the GCN + ZCA whitening of {}", source.spec);
            }
            zca.save(&path)?;
            run.pretrained_cfg.whitening = Some(WHITENING_SAFETENSORS.to_string());
            return Ok((zca, true));
        }
        eprintln!(
            "note: {} was trained on mean/std-normalised inputs; recipe {} whitens them with a transform fitted now",
            source.spec, run.recipe.name
        );
    }
    eprintln!(
        "fitting GCN (scale {}) + ZCA (regulariser {}) on {} training images",
        cfg.gcn_scale,
        cfg.regularizer,
        train_set.len()
    );
    let zca = Zca::fit(train_set, cfg)?;
    zca.save(&path)?;
    run.pretrained_cfg.whitening = Some(WHITENING_SAFETENSORS.to_string());
    Ok((zca, false))
}

/// The run configuration the flags ask for, and the `--out` folder if one was given.
fn new_run(
    args: &TrainArgs,
    threads: usize,
    source: Option<&Source>,
) -> anyhow::Result<(RunConfig, Option<PathBuf>)> {
    let recipe_name = args.recipe.as_deref().unwrap_or(nin_format::DEFAULT_RECIPE);
    let mut recipe = read_recipe(recipe_name)?;
    if let Some(e) = args.epochs {
        recipe.epochs = e;
    }
    if let Some(b) = args.batch_size {
        recipe.batch_size = b;
    }
    if let Some(lr) = args.lr {
        recipe.lr = lr;
    }
    recipe.validate()?;
    let dataset = Dataset::from(args.dataset.unwrap_or(DatasetArg::Cifar10));
    let num_classes = dataset.n_classes(LabelKind::Fine);
    let overrides = args
        .model_args
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .context("--model-args: not valid JSON")?;
    // Fine-tuning without --model trains the source's architecture, with the new class count.
    let (model_name, overrides) = match (source, &args.model) {
        (Some(source), None) => {
            let (name, full) = source.default_model(num_classes, overrides.as_ref())?;
            (name, Some(full))
        }
        _ => (
            args.model
                .clone()
                .unwrap_or_else(|| nin_zoo::DEFAULT_MODEL.to_string()),
            overrides,
        ),
    };
    let (model, overrides) = if recipe.prefer_batch_norm {
        let chosen = nin_zoo::with_batch_norm(&model_name, num_classes, overrides.clone())?;
        if chosen.0 != model_name {
            eprintln!(
                "recipe {} prefers batch norm: training {}, the batch-norm variant of {}",
                recipe.name, chosen.0, model_name
            );
        } else if chosen.1 != overrides {
            eprintln!(
                "recipe {} prefers batch norm: {} with batch_norm = true",
                recipe.name, model_name
            );
        }
        chosen
    } else {
        (model_name, overrides)
    };
    let model_args = nin_zoo::resolve_args(&model, num_classes, overrides.as_ref())?;
    let normalize = Normalize::published(dataset);
    let spec = DataSpec {
        dataset,
        data: args.data.clone(),
        limit_train: args.limit_train,
        limit_eval: args.limit_eval,
        val: args.val,
        eval_split: if args.val.is_some() {
            Split::Val
        } else {
            Split::Test
        },
    };
    let device = args.device.clone().unwrap_or_else(|| "cpu".to_string());
    parse_device(&device)?;
    let checkpoint_every = args.checkpoint_every.unwrap_or(100);
    let mut versions = BTreeMap::new();
    versions.insert("nin-cli".to_string(), env!("CARGO_PKG_VERSION").to_string());
    versions.insert("candle-core".to_string(), "0.11.1".to_string());
    let run = RunConfig {
        recipe,
        model: ModelSpec {
            name: model,
            num_classes,
            model_args,
        },
        pretrained_cfg: PretrainedCfg {
            input_size: [3, 32, 32],
            mean: normalize.mean.iter().map(|&m| m as f64).collect(),
            std: normalize.std.iter().map(|&s| s as f64).collect(),
            whitening: None,
            extra: Default::default(),
        },
        label_names: Vec::new(),
        data: spec,
        seed: args.seed.unwrap_or(0),
        threads,
        device,
        checkpoint_every_steps: (checkpoint_every > 0).then_some(checkpoint_every),
        versions,
        // Filled in once the model is built and the source's tensors are copied into it.
        init_from: None,
        processor: processor_name(),
    };
    Ok((run, args.out.clone()))
}

/// The recipe `name`: a named one, or a JSON file (a path ending in `.json`).
fn read_recipe(name: &str) -> anyhow::Result<Recipe> {
    if name.ends_with(".json") {
        Ok(Recipe::from_file(Path::new(name)).with_context(|| format!("--recipe {name}"))?)
    } else if Path::new(name).is_file() {
        bail!(
            "--recipe {name}: a recipe file must end in .json (or name one of {})",
            nin_format::RECIPE_NAMES.join(", ")
        )
    } else {
        Ok(Recipe::by_name(name).context("--recipe")?)
    }
}

/// `--resume` continues a run exactly as its `run.json` records it: a flag that says otherwise
/// would be silently dropped, so it is refused, naming each one.
fn refuse_contradicting_flags(args: &TrainArgs, run: &RunConfig) -> anyhow::Result<()> {
    let mut conflicts = Vec::new();
    if let Some(name) = &args.recipe {
        let mut recipe = read_recipe(name)?;
        // The overrides below are checked on their own; compare the rest of the recipe.
        recipe.epochs = run.recipe.epochs;
        recipe.batch_size = run.recipe.batch_size;
        recipe.lr = run.recipe.lr;
        if recipe != run.recipe {
            conflicts.push(format!("--recipe {name} (the run has {})", run.recipe.name));
        }
    }
    let mut check = |flag: &str, given: Option<String>, recorded: String| {
        if let Some(given) = given {
            if given != recorded {
                conflicts.push(format!("{flag} {given} (the run has {recorded})"));
            }
        }
    };
    check("--model", args.model.clone(), run.model.name.clone());
    if let Some(text) = &args.model_args {
        let overrides: serde_json::Value =
            serde_json::from_str(text).context("--model-args: not valid JSON")?;
        let resolved =
            nin_zoo::resolve_args(&run.model.name, run.model.num_classes, Some(&overrides))?;
        check(
            "--model-args",
            Some(resolved.to_string()),
            run.model.model_args.to_string(),
        );
    }
    check(
        "--dataset",
        args.dataset.map(|d| Dataset::from(d).to_string()),
        run.data.dataset.to_string(),
    );
    check(
        "--epochs",
        args.epochs.map(|v| v.to_string()),
        run.recipe.epochs.to_string(),
    );
    check(
        "--batch-size",
        args.batch_size.map(|v| v.to_string()),
        run.recipe.batch_size.to_string(),
    );
    check(
        "--lr",
        args.lr.map(|v| v.to_string()),
        run.recipe.lr.to_string(),
    );
    check(
        "--seed",
        args.seed.map(|v| v.to_string()),
        run.seed.to_string(),
    );
    check("--device", args.device.clone(), run.device.clone());
    check(
        "--init-from",
        args.init_from.clone(),
        run.init_from
            .as_ref()
            .map(|i| i.source.clone())
            .unwrap_or_else(|| "none (a seeded initialisation)".into()),
    );
    check(
        "--data",
        args.data.as_ref().map(|p| p.display().to_string()),
        run.data
            .data
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the cache".into()),
    );
    check(
        "--limit-train",
        args.limit_train.map(|n| n.to_string()),
        opt(run.data.limit_train),
    );
    check(
        "--limit-eval",
        args.limit_eval.map(|n| n.to_string()),
        opt(run.data.limit_eval),
    );
    check("--val", args.val.map(|n| n.to_string()), opt(run.data.val));
    check(
        "--checkpoint-every",
        args.checkpoint_every.map(|n| n.to_string()),
        run.checkpoint_every_steps.unwrap_or(0).to_string(),
    );
    if !conflicts.is_empty() {
        bail!(
            "--resume continues the run in {} exactly as its run.json records it, but {} {}: drop {}, or start a new run with another --out",
            args.out.as_deref().unwrap_or(Path::new(".")).display(),
            if conflicts.len() == 1 { "this flag contradicts it:" } else { "these flags contradict it:" },
            conflicts.join(", "),
            if conflicts.len() == 1 { "it" } else { "them" },
        );
    }
    Ok(())
}

fn opt(v: Option<usize>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "none".into())
}

/// Progress bar per epoch (images/s and ETA) and one summary line per epoch.
struct BarProgress {
    batch_size: usize,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
    epochs: usize,
    bar: Option<ProgressBar>,
    current_epoch: Option<usize>,
    epoch_start: Instant,
    first_step: usize,
    last_step: usize,
    loss_ema: Option<f32>,
    kill_point: Option<KillPoint>,
}

impl BarProgress {
    fn new(batch_size: usize, quiet: bool, interrupted: Arc<AtomicBool>) -> Self {
        Self {
            batch_size,
            quiet,
            interrupted,
            epochs: 0,
            bar: None,
            current_epoch: None,
            epoch_start: Instant::now(),
            first_step: 0,
            last_step: 0,
            loss_ema: None,
            kill_point: None,
        }
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn start_epoch(&mut self, epoch: usize, steps: usize, done: usize) {
        self.clear();
        self.current_epoch = Some(epoch);
        self.epoch_start = Instant::now();
        self.first_step = done;
        self.last_step = done;
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(steps as u64);
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.epochs));
        bar.set_position(done as u64);
        self.bar = Some(bar);
    }
}

impl Progress for BarProgress {
    fn on_start(&mut self, report: &StartReport) {
        self.epochs = report.epochs;
        self.start_epoch(
            report.start_epoch,
            report.steps_per_epoch,
            report.start_step,
        );
    }

    fn on_step(&mut self, report: &StepReport) -> Control {
        if self.current_epoch != Some(report.epoch) {
            self.start_epoch(
                report.epoch,
                report.steps_per_epoch,
                report.step_in_epoch - 1,
            );
        }
        self.last_step = report.step_in_epoch;
        let ema = match self.loss_ema {
            Some(prev) => 0.95 * prev + 0.05 * report.loss,
            None => report.loss,
        };
        self.loss_ema = Some(ema);
        if let Some(bar) = &self.bar {
            let steps = report.step_in_epoch.saturating_sub(self.first_step);
            let secs = self.epoch_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(report.step_in_epoch as u64);
            bar.set_message(format!(
                "loss {ema:.3} lr {:.4} {:.1} img/s",
                report.lr,
                (steps * self.batch_size) as f64 / secs
            ));
        }
        if self.interrupted.load(Ordering::SeqCst) {
            self.clear();
            eprintln!("interrupted: saving a checkpoint");
            return Control::SaveAndStop;
        }
        Control::Continue
    }

    fn on_checkpoint_stage(&mut self, stage: CheckpointStage) -> Control {
        if let Some(kill_point) = &mut self.kill_point {
            kill_point.reached(stage);
        }
        Control::Continue
    }

    fn on_epoch_end(&mut self, record: &EpochRecord, _eval: Option<&EvalReport>) -> Control {
        let images = self.last_step.saturating_sub(self.first_step) * self.batch_size;
        let secs = self.epoch_start.elapsed().as_secs_f64().max(1e-9);
        self.clear();
        let eval = match (record.eval_loss, record.eval_top1, record.eval_top5) {
            (Some(l), Some(t1), Some(t5)) => {
                format!("  eval_loss {l:.4}  eval_top1 {t1:.2} %  eval_top5 {t5:.2} %")
            }
            _ => String::new(),
        };
        let speed = if images > 0 {
            format!("  {:.1} img/s", images as f64 / secs)
        } else {
            String::new()
        };
        eprintln!(
            "epoch {}/{}  train_loss {:.4}  train_top1 {:.2} %{eval}  lr {:.5}  {:.0} s{speed}",
            record.epoch,
            self.epochs,
            record.train_loss,
            record.train_top1,
            record.lr,
            record.seconds
        );
        Control::Continue
    }
}

/// The crash tests' hook, `NIN_TEST_KILL_AT=<stage>[:<n>[:term]]`: the `n`-th time (default 1) a
/// checkpoint reaches `<stage>` (a [`CheckpointStage::name`], e.g. `committed`), the process kills
/// itself with SIGKILL, leaving the run folder exactly as a kill at that instant would; with
/// `:term` it sends itself SIGTERM instead, as a scheduler would in the middle of a checkpoint.
struct KillPoint {
    stage: CheckpointStage,
    nth: usize,
    seen: usize,
    signal: libc::c_int,
}

impl KillPoint {
    const VAR: &'static str = "NIN_TEST_KILL_AT";

    fn from_env() -> anyhow::Result<Option<Self>> {
        let Ok(spec) = std::env::var(Self::VAR) else {
            return Ok(None);
        };
        let mut parts = spec.split(':');
        let name = parts.next().unwrap_or_default();
        let stage = CheckpointStage::from_name(name).with_context(|| {
            let names: Vec<&str> = CheckpointStage::ALL.iter().map(|s| s.name()).collect();
            format!(
                "{}={spec}: unknown stage `{name}`; expected one of {}",
                Self::VAR,
                names.join(", ")
            )
        })?;
        let usage = || {
            format!(
                "{}={spec}: expected <stage>[:<n>[:term]] with n ≥ 1",
                Self::VAR
            )
        };
        let nth = match parts.next() {
            None => 1,
            Some(n) => n.parse().ok().filter(|&n| n > 0).with_context(usage)?,
        };
        let signal = match parts.next() {
            None => libc::SIGKILL,
            Some("term") => libc::SIGTERM,
            Some(_) => bail!(usage()),
        };
        if parts.next().is_some() {
            bail!(usage());
        }
        Ok(Some(Self {
            stage,
            nth,
            seen: 0,
            signal,
        }))
    }

    fn reached(&mut self, stage: CheckpointStage) {
        if stage != self.stage {
            return;
        }
        self.seen += 1;
        if self.seen == self.nth {
            // SAFETY: raise only sends a signal to this thread; SIGKILL cannot be caught (no code
            // of ours runs after it), and SIGTERM runs the handler installed by ctrlc.
            unsafe {
                libc::raise(self.signal);
            }
        }
    }
}

/// Sets the first convolution of a new model (the only weight of shape `[O, 3, k, k]`, k > 1)
/// to whitening filters of the training patches (`nin_data::whitened_patch_filters`), as many as
/// fit in its `O` filters; says what it did.
fn init_stem(
    varmap: &candle_nn::VarMap,
    train_set: &nin_data::ImageSet,
    normalize: &nin_data::Normalize,
    images: usize,
    eps: f64,
) -> anyhow::Result<String> {
    let vars = varmap
        .data()
        .lock()
        .expect("the variable map's lock is never poisoned");
    let mut stems: Vec<(&String, &candle_core::Var)> = vars
        .iter()
        .filter(|(_, v)| matches!(v.dims(), &[_, 3, k, k2] if k == k2 && k > 1))
        .collect();
    stems.sort_by_key(|(name, _)| name.as_str());
    let [(name, var)] = stems.as_slice() else {
        bail!(
            "recipe stem_init whitened_patches: expected one first convolution (a weight of shape [O, 3, k, k]), found {}: {}",
            stems.len(),
            stems.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        );
    };
    let (out_channels, _, kernel, _) = var.dims4()?;
    let filters =
        nin_data::whitened_patch_filters(train_set, normalize, kernel, out_channels, images, eps)?;
    let count = filters.len() / (3 * kernel * kernel);
    let fitted = candle_core::Tensor::from_vec(filters, (count, 3, kernel, kernel), var.device())?
        .to_dtype(var.dtype())?;
    let weight = if count < out_channels {
        candle_core::Tensor::cat(
            &[
                &fitted,
                &var.as_tensor().narrow(0, count, out_channels - count)?,
            ],
            0,
        )?
    } else {
        fitted
    };
    var.set(&weight)?;
    Ok(format!(
        "stem: {count} of the {out_channels} filters of {name} ({kernel}×{kernel}) whiten the patches of {} training images",
        images.min(train_set.len())
    ))
}

/// The processor's name as the operating system reports it (`model name` in Linux's
/// `/proc/cpuinfo`), for `run.json`; `None` where it cannot be read (other systems). No crate of
/// the workspace reads it, and one line of a text file does not call for one.
fn processor_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, name)| name.trim().to_string())
        .filter(|name| !name.is_empty())
}
