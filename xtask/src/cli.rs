//! The command line of `cargo xtask`: parses it and runs the task; exit codes 0 (done), 1 (runs
//! failed or a check found problems), 2 (bad usage or input: the message names it), 130
//! (stopped by Ctrl-C / SIGTERM, every run with a checkpoint).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use crate::sweep::plan::{self, Plan};
use crate::sweep::runner::{self, Attempt, RecordState};
use crate::sweep::{self, local, report, slurm, status, Manifest, ZooEntry};

/// Project automation for nin-zoo.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Repository hygiene checks (also run by `cargo test -p xtask`).
    Tidy,
    /// Comparative training sweeps: a plan (sweeps/*.toml) of many `nin train` runs.
    #[command(subcommand)]
    Sweep(SweepCmd),
    /// Build the browser demo (crates/web) into a folder of static files.
    Web {
        /// The output folder.
        #[arg(long, value_name = "DIR", default_value = "target/web-demo")]
        out: PathBuf,
        /// The CIFAR-10 binary archive the page's strip of test images comes from.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "../shared/data/cifar-10-binary.tar.gz"
        )]
        data: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SweepCmd {
    /// Print the runs a plan expands into and their estimated cost, without running anything.
    Plan {
        /// The plan file (TOML).
        plan: PathBuf,
        #[command(flatten)]
        nin: NinArg,
        /// `nin bench --csv` figures for the time estimate [default: the newest docs/bench-*.csv].
        #[arg(long, value_name = "CSV")]
        bench: Option<PathBuf>,
    },
    /// Run a plan: skips finished runs, resumes interrupted ones, retries failed ones.
    Run {
        /// The plan file (TOML).
        plan: PathBuf,
        /// Where runs go: on this machine, or as a SLURM array job.
        #[arg(long, value_enum, default_value = "local")]
        backend: Backend,
        /// Local: runs at once; the cores are split between them.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        jobs: u64,
        /// Leave failed runs alone instead of retrying them.
        #[arg(long)]
        skip_failed: bool,
        /// SLURM: wait until the submitted tasks have left the queue, showing the status.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        runs: RunsArg,
        #[command(flatten)]
        nin: NinArg,
    },
    /// Where every run of a sweep stands (from its run folders, and SLURM's queue).
    Status {
        /// Sweep name (a folder under --runs) or sweep folder.
        sweep: String,
        #[command(flatten)]
        runs: RunsArg,
    },
    /// Aggregate a sweep into results.csv, report.md and charts/.
    Report {
        /// Sweep name (a folder under --runs) or sweep folder.
        sweep: String,
        #[command(flatten)]
        runs: RunsArg,
    },
    /// Run one run of a sweep by index (what each SLURM array task does).
    #[command(hide = true)]
    Exec {
        /// The sweep folder.
        dir: PathBuf,
        /// The run's index in the plan.
        #[arg(long)]
        index: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Local,
    Slurm,
}

#[derive(Debug, clap::Args)]
struct RunsArg {
    /// The runs folder; each sweep is a folder in it.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    runs: PathBuf,
}

#[derive(Debug, clap::Args)]
struct NinArg {
    /// The nin binary [default: $NIN_BIN, else target/release/nin].
    #[arg(long, value_name = "PATH")]
    nin: Option<PathBuf>,
}

/// Exit code of a sweep with failed runs.
const FAILED: u8 = 1;
/// Exit code of bad usage or input.
const USAGE: u8 = 2;
/// Exit code of a sweep stopped by Ctrl-C / SIGTERM.
const INTERRUPTED: u8 = 130;

/// Parses the command line and runs the task.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Tidy => return crate::run_tidy(),
        Task::Sweep(cmd) => sweep_cmd(cmd),
        Task::Web { out, data } => {
            crate::web::build(&crate::project_root(), &crate::web::WebArgs { out, data })
                .map(|()| 0)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(USAGE)
        }
    }
}

/// Ctrl-C and SIGTERM set the returned flag: running runs are stopped with a checkpoint and no
/// more start.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C / SIGTERM handler")?;
    Ok(stop)
}

fn load_plan(path: &Path, nin: &Path) -> anyhow::Result<(Plan, Vec<ZooEntry>)> {
    let zoo = sweep::zoo(nin)?;
    let names: Vec<String> = zoo.iter().map(|z| z.name.clone()).collect();
    Ok((plan::load(path, Some(&names))?, zoo))
}

fn sweep_cmd(cmd: SweepCmd) -> anyhow::Result<u8> {
    let root = crate::project_root();
    match cmd {
        SweepCmd::Plan { plan, nin, bench } => {
            let nin = runner::find_nin(nin.nin.as_deref(), &root)?;
            let (plan, zoo) = load_plan(&plan, &nin)?;
            let bench = bench.or_else(|| newest_bench(&root.join("docs")));
            print_plan(&plan, &zoo, bench.as_deref())?;
            Ok(0)
        }
        SweepCmd::Run {
            plan,
            backend,
            jobs,
            skip_failed,
            wait,
            runs,
            nin,
        } => {
            let nin = runner::find_nin(nin.nin.as_deref(), &root)?;
            if backend == Backend::Slurm {
                // Before anything is written: a missing or silent SLURM is a clear error.
                slurm::check_available()?;
            }
            let (plan, zoo) = load_plan(&plan, &nin)?;
            let dir = std::path::absolute(runs.runs.join(&plan.name))
                .with_context(|| format!("resolving {}", runs.runs.display()))?;
            let manifest = sweep::prepare(&dir, &plan, &nin, zoo)?;
            match backend {
                Backend::Local => run_local(&dir, &manifest, jobs as usize, skip_failed),
                Backend::Slurm => run_slurm(&dir, manifest, skip_failed, wait),
            }
        }
        SweepCmd::Status { sweep, runs } => {
            let dir = sweep::sweep_dir(&runs.runs, &sweep);
            let manifest = Manifest::load(&dir)?;
            status::print(&dir, &manifest);
            Ok(0)
        }
        SweepCmd::Report { sweep, runs } => {
            let dir = sweep::sweep_dir(&runs.runs, &sweep);
            let manifest = Manifest::load(&dir)?;
            let rows = report::write(&dir, &manifest)?;
            let done = rows.iter().filter(|r| r.status == "done").count();
            println!(
                "{} runs ({done} done): {}, {} and {}",
                rows.len(),
                dir.join(report::RESULTS_CSV).display(),
                dir.join(report::REPORT_MD).display(),
                dir.join(sweep::charts::CHARTS_DIR).display()
            );
            Ok(0)
        }
        SweepCmd::Exec { dir, index } => exec(&dir, index),
    }
}

fn run_local(
    dir: &Path,
    manifest: &Manifest,
    jobs: usize,
    skip_failed: bool,
) -> anyhow::Result<u8> {
    let cores = sweep::cores();
    let threads = manifest
        .plan
        .resources
        .threads
        .unwrap_or_else(|| (cores / jobs).max(1));
    if threads * jobs > cores {
        eprintln!(
            "note: {jobs} runs × {threads} threads on {cores} cores: runs will compete for cores"
        );
    }
    eprintln!(
        "sweep {}: {} runs, {jobs} at once, {threads} threads each, into {}",
        manifest.plan.name,
        manifest.plan.runs.len(),
        dir.display()
    );
    let stop = stop_flag()?;
    let opts = local::LocalOptions {
        jobs,
        threads,
        skip_failed,
    };
    let outcome = local::run(dir, manifest, &opts, stop.clone())?;
    let states = status::states(dir, manifest);
    eprintln!("{}", status::summary(&states));
    if outcome.skipped_failed > 0 {
        eprintln!(
            "{} failed runs left alone (--skip-failed); a run without it retries them",
            outcome.skipped_failed
        );
    }
    if stop.load(Ordering::SeqCst) {
        eprintln!("stopped: running runs saved a checkpoint; run the plan again to resume them");
        return Ok(INTERRUPTED);
    }
    eprintln!(
        "status: cargo xtask sweep status {0}; report: cargo xtask sweep report {0}",
        dir.display()
    );
    Ok(if states.iter().all(|s| *s == status::RunState::Done) {
        0
    } else {
        FAILED
    })
}

fn run_slurm(
    dir: &Path,
    mut manifest: Manifest,
    skip_failed: bool,
    wait: bool,
) -> anyhow::Result<u8> {
    let states = status::states(dir, &manifest);
    let indices: Vec<usize> = states
        .iter()
        .enumerate()
        .filter(|(_, s)| match s {
            status::RunState::Done
            | status::RunState::Running { .. }
            | status::RunState::Queued => false,
            status::RunState::Failed(_) => !skip_failed,
            _ => true,
        })
        .map(|(i, _)| i)
        .collect();
    if indices.is_empty() {
        eprintln!("nothing to submit: {}", status::summary(&states));
    } else {
        let xtask = std::env::current_exe().context("locating the xtask binary")?;
        let job = slurm::submit(dir, &manifest, &indices, &xtask)?;
        eprintln!(
            "submitted SLURM array job {} ({} tasks: runs {:?}); status: cargo xtask sweep status {}",
            job.job_id,
            indices.len(),
            indices,
            dir.display()
        );
        manifest.slurm_jobs.push(job);
        manifest.save(dir)?;
    }
    if !wait {
        return Ok(0);
    }
    loop {
        let queue = slurm::queue(&manifest)?;
        if queue.is_empty() {
            break;
        }
        let states = status::states(dir, &manifest);
        eprintln!("{}", status::summary(&states));
        std::thread::sleep(Duration::from_secs(5));
    }
    let states = status::states(dir, &manifest);
    eprintln!("{}", status::summary(&states));
    Ok(if states.iter().all(|s| *s == status::RunState::Done) {
        0
    } else {
        FAILED
    })
}

/// One SLURM array task: runs run `index` of the sweep in `dir` and exits 0 (done), 130
/// (stopped with a checkpoint: a requeued task resumes it) or 1 (failed).
fn exec(dir: &Path, index: usize) -> anyhow::Result<u8> {
    let manifest = Manifest::load(dir)?;
    let Some(spec) = manifest.plan.runs.get(index) else {
        bail!(
            "--index {index}: the sweep has {} runs (0 to {})",
            manifest.plan.runs.len(),
            manifest.plan.runs.len().saturating_sub(1)
        );
    };
    let threads = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|t| t.parse().ok())
        .or(manifest.plan.resources.threads)
        .unwrap_or_else(sweep::cores);
    let slurm_job = match (
        std::env::var("SLURM_ARRAY_JOB_ID"),
        std::env::var("SLURM_ARRAY_TASK_ID"),
    ) {
        (Ok(j), Ok(t)) => Some(format!("{j}_{t}")),
        _ => std::env::var("SLURM_JOB_ID").ok(),
    };
    let stop = stop_flag()?;
    let run_dir = dir.join(&spec.id);
    let recipe = sweep::recipe_file(dir, &spec.id);
    let attempt = Attempt {
        nin: &manifest.nin,
        spec,
        run_dir: &run_dir,
        recipe_file: &recipe,
        threads,
        gpus: manifest.plan.resources.gpus,
        time_limit: manifest
            .plan
            .resources
            .time_limit_s
            .map(Duration::from_secs),
        stop: &stop,
        slurm_job,
    };
    let record = runner::execute(&attempt)?;
    eprintln!(
        "run {}: {:?}{}",
        spec.id,
        record.state,
        record
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    Ok(match record.state {
        RecordState::Done => 0,
        RecordState::Stopped => INTERRUPTED,
        _ => FAILED,
    })
}

/// The newest `bench-*.csv` in `docs` (names carry the date).
fn newest_bench(docs: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(docs)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("bench") && n.ends_with(".csv"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Training images per second by model and batch size, from `nin bench` CSV rows (candle,
/// train; the last row of a configuration wins).
fn bench_rates(path: &Path) -> anyhow::Result<Vec<(String, usize, f64, usize)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| {
        header.iter().position(|h| *h == name).with_context(|| {
            format!(
                "{}: no `{name}` column (not a nin bench CSV)",
                path.display()
            )
        })
    };
    let (fw, model, mode, batch, rate, threads) = (
        col("framework")?,
        col("model")?,
        col("mode")?,
        col("batch_size")?,
        col("samples_per_sec")?,
        col("threads")?,
    );
    let mut rates = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < header.len() || f[fw] != "candle" || f[mode] != "train" {
            continue;
        }
        if let (Ok(b), Ok(r), Ok(t)) = (
            f[batch].parse::<usize>(),
            f[rate].parse::<f64>(),
            f[threads].parse::<usize>(),
        ) {
            rates.push((f[model].to_string(), b, r, t));
        }
    }
    Ok(rates)
}

fn print_plan(plan: &Plan, zoo: &[ZooEntry], bench: Option<&Path>) -> anyhow::Result<()> {
    let rates = match bench {
        Some(b) => bench_rates(b)?,
        None => Vec::new(),
    };
    println!(
        "sweep {} ({}): {} runs",
        plan.name,
        plan.source.display(),
        plan.runs.len()
    );
    let r = &plan.resources;
    println!(
        "each run: {} threads, memory {}, time limit {}, {} GPUs",
        r.threads
            .map_or("(cores ÷ --jobs)".into(), |t| t.to_string()),
        r.memory_mb.map_or("unset".into(), |m| format!("{m} MiB")),
        r.time_limit_s.map_or("none".into(), |t| format!("{t} s")),
        r.gpus
    );
    let width = plan.runs.iter().map(|r| r.id.len()).max().unwrap_or(2);
    println!(
        "{:<width$}  {:>6} {:>7} {:>6} {:>11} {:>10}  recipe changes",
        "run", "epochs", "images", "batch", "MACs (fwd)", "est. time"
    );
    let (mut total_macs, mut total_s, mut unknown) = (0.0, 0.0, 0usize);
    for run in &plan.runs {
        // A recipe that prefers batch norm trains a model's `_bn` preset when it has one.
        let trained = if run.recipe.prefer_batch_norm
            && zoo.iter().any(|z| z.name == format!("{}_bn", run.model))
        {
            format!("{}_bn", run.model)
        } else {
            run.model.clone()
        };
        let images =
            run.limit_train.unwrap_or(50_000).min(50_000) - run.val.unwrap_or(0).min(50_000);
        let epochs = run.recipe.epochs;
        let macs = zoo
            .iter()
            .find(|z| z.name == trained)
            .map(|z| z.macs_per_image_cifar10 as f64 * images as f64 * epochs as f64);
        let rate = rates
            .iter()
            .filter(|(m, ..)| *m == trained)
            .min_by_key(|(_, b, ..)| b.abs_diff(run.recipe.batch_size))
            .map(|(_, _, rate, _)| *rate);
        let seconds = rate.map(|rate| images as f64 * epochs as f64 / rate);
        if let Some(m) = macs {
            total_macs += m;
        }
        match seconds {
            Some(s) => total_s += s,
            None => unknown += 1,
        }
        println!(
            "{:<width$}  {:>6} {:>7} {:>6} {:>11} {:>10}  {}",
            run.id,
            epochs,
            images,
            run.recipe.batch_size,
            macs.map_or("?".into(), si_macs),
            seconds.map_or("?".into(), human_time),
            if run.overrides.is_empty() {
                run.recipe.name.clone()
            } else {
                format!("{} + {}", run.recipe.name, run.overrides.join(" "))
            }
        );
    }
    println!(
        "total: {} MACs of forward passes (training costs about 3× that)",
        si_macs(total_macs)
    );
    match bench {
        Some(b) => println!(
            "estimated training time: {} one run at a time{} (train images/s from {}, measured with its thread count; data loading and evaluation not included)",
            human_time(total_s),
            if unknown > 0 { format!(", {unknown} runs without a figure") } else { String::new() },
            b.display()
        ),
        None => println!("no nin bench figures (--bench CSV): no time estimate"),
    }
    Ok(())
}

/// 1.2 T, 340 G: multiply-accumulate counts.
fn si_macs(m: f64) -> String {
    for (scale, unit) in [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")] {
        if m >= scale {
            return format!("{:.1} {unit}", m / scale);
        }
    }
    format!("{m:.0}")
}

fn human_time(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.0} s")
    }
}
