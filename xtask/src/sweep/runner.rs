//! One run of a sweep, on whatever machine it lands: starts `nin train` (fresh, or `--resume`
//! when the run folder holds an interrupted run), keeps its stdout/stderr beside the run folder,
//! enforces the time limit (SIGTERM first, so a checkpoint is saved), measures wall time and peak
//! memory, and records the outcome in the sweep's own file in the run folder.
//!
//! The local backend calls [`execute`] from worker threads; a SLURM array task calls it through
//! `cargo xtask sweep exec`, so both backends record runs identically.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use nin_format::files::{RUN_JSON, TRAINER_STATE_JSON};
use nin_format::{RunConfig, TrainerState};
use serde::{Deserialize, Serialize};

use super::plan::RunSpec;
use super::sys;

/// The sweep's record of a run, beside `nin`'s files in the run folder.
pub const RECORD_JSON: &str = "sweep_run.json";
/// `nin train`'s standard output, appended over attempts.
pub const STDOUT_LOG: &str = "stdout.log";
/// `nin train`'s standard error, appended over attempts (each opens with a header line).
pub const STDERR_LOG: &str = "stderr.log";
/// Opens each attempt's section of `stderr.log`.
const ATTEMPT_HEADER: &str = "== sweep attempt ";
/// Seconds a run gets to checkpoint after SIGTERM before it is killed.
pub const GRACE: Duration = Duration::from_secs(60);

/// Where a run stands, as the sweep recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// An attempt is in progress.
    Running,
    /// Every epoch is done.
    Done,
    /// Stopped by Ctrl-C, SIGTERM or a scheduler with a checkpoint: a rerun resumes it.
    Stopped,
    /// Crashed, killed, diverged, refused its input or exceeded its time limit (see the reason).
    Failed,
}

/// `sweep_run.json`: the sweep's measurements and verdict for one run, over all its attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id.
    pub id: String,
    /// The verdict of the last attempt.
    pub state: RecordState,
    /// Why it failed or stopped.
    pub reason: Option<String>,
    /// `nin train`'s exit code of the last attempt.
    pub exit_code: Option<i32>,
    /// Attempts started.
    pub attempts: u32,
    /// Wall-clock seconds over all attempts (data loading included).
    pub wall_seconds: f64,
    /// Largest peak resident memory of any attempt, in MiB.
    pub peak_rss_mib: Option<f64>,
    /// Machine and process of the last attempt (`status` checks a local `running` one is alive).
    pub host: String,
    /// Process id of the last attempt's `nin train`.
    pub pid: Option<u32>,
    /// SLURM job id (`<array job>_<task>`) of the last attempt, when run by SLURM.
    pub slurm_job: Option<String>,
    /// Unix time the last attempt started.
    pub started_unix: u64,
    /// Unix time the last attempt ended.
    pub ended_unix: Option<u64>,
}

impl RunRecord {
    /// Reads a run folder's record (`None` when the sweep never started it).
    pub fn load(run_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = run_dir.join(RECORD_JSON);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(nin_format::read_json(&path).with_context(|| {
            format!("reading the sweep's record {}", path.display())
        })?))
    }

    fn save(&self, run_dir: &Path) -> anyhow::Result<()> {
        nin_format::write_json(&run_dir.join(RECORD_JSON), self)
            .with_context(|| format!("recording run {}", self.id))
    }
}

/// Whether the run folder holds a finished run (its committed state covers every epoch).
pub fn is_finished(run_dir: &Path) -> bool {
    if !run_dir.join(TRAINER_STATE_JSON).is_file() {
        return false;
    }
    match (RunConfig::load(run_dir), TrainerState::load(run_dir)) {
        (Ok(run), Ok(state)) => state.is_finished(run.recipe.epochs),
        _ => false,
    }
}

/// Why the run folder's `run.json` is not the run `spec` describes (the plan changed since it
/// started), if it is not: such a folder is never resumed or counted as this run's result.
pub fn mismatch(spec: &RunSpec, run_dir: &Path) -> Option<String> {
    if !run_dir.join(RUN_JSON).is_file() {
        return None;
    }
    let run = match RunConfig::load(run_dir) {
        Ok(run) => run,
        Err(e) => return Some(format!("its run.json cannot be read: {e}")),
    };
    let mut diffs = Vec::new();
    if run.data.dataset.to_string() != spec.dataset {
        diffs.push(format!(
            "dataset {} (plan: {})",
            run.data.dataset, spec.dataset
        ));
    }
    if run.seed != spec.seed {
        diffs.push(format!("seed {} (plan: {})", run.seed, spec.seed));
    }
    for (what, had, want) in [
        ("limit_train", run.data.limit_train, spec.limit_train),
        ("limit_eval", run.data.limit_eval, spec.limit_eval),
        ("val", run.data.val, spec.val),
    ] {
        if had != want {
            diffs.push(format!("{what} {had:?} (plan: {want:?})"));
        }
    }
    if run.recipe != spec.recipe {
        diffs.push("another recipe".into());
    }
    (!diffs.is_empty()).then(|| {
        format!(
            "the run folder holds a run with {}: the plan changed since it started; move {} away to run it again",
            diffs.join(", "),
            run_dir.display()
        )
    })
}

/// Finds the `nin` binary: `--nin PATH`, else `$NIN_BIN`, else `target/release/nin` of the
/// workspace (`cargo build --release -p nin-cli` makes it).
pub fn find_nin(explicit: Option<&Path>, root: &Path) -> anyhow::Result<PathBuf> {
    let (path, from) = match (explicit, std::env::var_os("NIN_BIN")) {
        (Some(p), _) => (p.to_path_buf(), "--nin"),
        (None, Some(p)) => (PathBuf::from(p), "$NIN_BIN"),
        (None, None) => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            (target.join("release").join("nin"), "the default location")
        }
    };
    if !path.is_file() {
        bail!(
            "the nin binary {} ({from}) does not exist: build it with `cargo build --release -p nin-cli`, \
             or name one with --nin PATH or $NIN_BIN",
            path.display()
        );
    }
    // Absolute, so SLURM tasks and children started elsewhere find it too.
    std::path::absolute(&path).with_context(|| format!("resolving {}", path.display()))
}

/// The arguments of `nin train` for `spec` in `run_dir`: a fresh run, or `--resume` when the
/// folder already holds one (interrupted, stopped by its time limit, or requeued by SLURM).
pub fn train_args(
    spec: &RunSpec,
    run_dir: &Path,
    recipe_file: &Path,
    threads: usize,
    gpus: usize,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["train".into(), "--out".into(), path_arg(run_dir)];
    args.extend(["--threads".into(), threads.to_string(), "--quiet".into()]);
    if run_dir.join(RUN_JSON).is_file() {
        args.push("--resume".into());
        return args;
    }
    args.extend(["--model".into(), spec.model.clone()]);
    args.extend(["--dataset".into(), spec.dataset.clone()]);
    args.extend(["--seed".into(), spec.seed.to_string()]);
    args.extend(["--recipe".into(), path_arg(recipe_file)]);
    if let Some(m) = &spec.model_args {
        args.extend(["--model-args".into(), m.to_string()]);
    }
    if let Some(d) = &spec.data {
        args.extend(["--data".into(), path_arg(d)]);
    }
    for (flag, v) in [
        ("--limit-train", spec.limit_train),
        ("--limit-eval", spec.limit_eval),
        ("--val", spec.val),
        ("--checkpoint-every", spec.checkpoint_every),
    ] {
        if let Some(v) = v {
            args.extend([flag.into(), v.to_string()]);
        }
    }
    if gpus > 0 {
        args.extend(["--device".into(), "cuda".into()]);
    }
    args
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// How to run one attempt.
pub struct Attempt<'a> {
    /// The `nin` binary.
    pub nin: &'a Path,
    /// The run.
    pub spec: &'a RunSpec,
    /// Its folder, `runs/<sweep>/<id>`.
    pub run_dir: &'a Path,
    /// The resolved recipe as a JSON file (`--recipe`).
    pub recipe_file: &'a Path,
    /// `--threads`.
    pub threads: usize,
    /// GPUs (adds `--device cuda`).
    pub gpus: usize,
    /// Wall-clock limit of the attempt.
    pub time_limit: Option<Duration>,
    /// Set by Ctrl-C / SIGTERM: the run is stopped with a checkpoint.
    pub stop: &'a AtomicBool,
    /// SLURM job id, when run as an array task.
    pub slurm_job: Option<String>,
}

/// Runs one attempt of a run to its end and records the outcome; a finished run is only
/// recorded as done. Errors are the sweep's own (an unwritable folder, a binary that cannot be
/// started); everything `nin train` does wrong is a failed run, not an error.
pub fn execute(a: &Attempt<'_>) -> anyhow::Result<RunRecord> {
    std::fs::create_dir_all(a.run_dir)
        .with_context(|| format!("creating the run folder {}", a.run_dir.display()))?;
    let previous = RunRecord::load(a.run_dir).ok().flatten();
    let mut record = RunRecord {
        id: a.spec.id.clone(),
        state: RecordState::Running,
        reason: None,
        exit_code: None,
        attempts: previous.as_ref().map_or(0, |p| p.attempts),
        wall_seconds: previous.as_ref().map_or(0.0, |p| p.wall_seconds),
        peak_rss_mib: previous.as_ref().and_then(|p| p.peak_rss_mib),
        host: hostname(),
        pid: None,
        slurm_job: a.slurm_job.clone(),
        started_unix: unix_now(),
        ended_unix: None,
    };
    if let Some(why) = mismatch(a.spec, a.run_dir) {
        record.state = RecordState::Failed;
        record.reason = Some(why);
        record.ended_unix = Some(unix_now());
        record.save(a.run_dir)?;
        return Ok(record);
    }
    if is_finished(a.run_dir) {
        record.state = RecordState::Done;
        record.ended_unix = Some(unix_now());
        record.save(a.run_dir)?;
        return Ok(record);
    }
    if a.stop.load(Ordering::SeqCst) {
        bail!("stopped before run {} started", a.spec.id);
    }
    let args = train_args(a.spec, a.run_dir, a.recipe_file, a.threads, a.gpus);
    let open_log = |name: &str| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(a.run_dir.join(name))
            .with_context(|| format!("opening {}", a.run_dir.join(name).display()))
    };
    let stdout = open_log(STDOUT_LOG)?;
    let mut stderr = open_log(STDERR_LOG)?;
    record.attempts += 1;
    writeln!(
        stderr,
        "{ATTEMPT_HEADER}{} on {} at unix {}: {} {}",
        record.attempts,
        record.host,
        record.started_unix,
        a.nin.display(),
        args.join(" ")
    )
    .with_context(|| format!("writing {}", a.run_dir.join(STDERR_LOG).display()))?;
    let start = Instant::now();
    let child = Command::new(a.nin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", a.nin.display()))?;
    let pid = child.id();
    record.pid = Some(pid);
    record.save(a.run_dir)?;

    let mut termed_at: Option<Instant> = None;
    let mut over_time = false;
    let exit = loop {
        match sys::try_wait(pid) {
            Ok(Some(exit)) => break exit,
            Ok(None) => {}
            Err(e) => return Err(e).with_context(|| format!("waiting for run {}", a.spec.id)),
        }
        let elapsed = start.elapsed();
        if termed_at.is_none() {
            if a.time_limit.is_some_and(|limit| elapsed > limit) {
                over_time = true;
                sys::signal(pid, sys::SIGTERM);
                termed_at = Some(Instant::now());
            } else if a.stop.load(Ordering::SeqCst) {
                sys::signal(pid, sys::SIGTERM);
                termed_at = Some(Instant::now());
            }
        } else if termed_at.is_some_and(|t| t.elapsed() > GRACE) {
            sys::signal(pid, sys::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child);
    record.wall_seconds += start.elapsed().as_secs_f64();
    let peak = exit.peak_rss_kib as f64 / 1024.0;
    record.peak_rss_mib = Some(record.peak_rss_mib.map_or(peak, |p| p.max(peak)));
    record.exit_code = exit.code;
    record.ended_unix = Some(unix_now());
    let (state, reason) = verdict(a, &exit, over_time);
    record.state = state;
    record.reason = reason;
    record.save(a.run_dir)?;
    Ok(record)
}

/// What an attempt's exit means, with the reason a failed or stopped run is listed with.
fn verdict(a: &Attempt<'_>, exit: &sys::Exit, over_time: bool) -> (RecordState, Option<String>) {
    let limit = a
        .time_limit
        .map(|l| format!("{}s", l.as_secs()))
        .unwrap_or_default();
    if over_time {
        let saved = if exit.code == Some(130) {
            "stopped with a checkpoint; a rerun resumes it"
        } else {
            "stopped before it could save a checkpoint"
        };
        return (
            RecordState::Failed,
            Some(format!("exceeded its time limit of {limit} ({saved})")),
        );
    }
    match (exit.code, exit.signal) {
        (Some(0), _) if is_finished(a.run_dir) => (RecordState::Done, None),
        (Some(0), _) => (
            RecordState::Failed,
            Some("nin train exited 0 but the run folder holds no finished run".into()),
        ),
        (Some(3), _) => (
            RecordState::Failed,
            Some(format!(
                "diverged (loss or a weight became NaN or infinite): {}",
                last_error(a.run_dir)
            )),
        ),
        (Some(130), _) => (
            RecordState::Stopped,
            Some("interrupted with a checkpoint; a rerun resumes it".into()),
        ),
        (Some(code), _) => (
            RecordState::Failed,
            Some(format!(
                "nin train exited {code}: {}",
                last_error(a.run_dir)
            )),
        ),
        (None, Some(sig)) => (
            RecordState::Failed,
            Some(format!(
                "killed by signal {sig} (crashed, or out of memory)"
            )),
        ),
        (None, None) => (RecordState::Failed, Some("ended without a status".into())),
    }
}

/// The last `error:` line of the run's stderr log (or its last line).
pub fn last_error(run_dir: &Path) -> String {
    let text = std::fs::read_to_string(run_dir.join(STDERR_LOG)).unwrap_or_default();
    // Only the last attempt's output, without the sweep's own header line.
    let last_attempt = match text.rsplit_once(ATTEMPT_HEADER) {
        // The rest of the header line, then the attempt's output.
        Some((_, t)) => t.split_once('\n').map_or("", |(_, out)| out),
        None => text.as_str(),
    };
    let lines: Vec<&str> = last_attempt
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error:"))
        .or(lines.last())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "no error message".to_string())
}

/// This machine's name (for records and `status`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_last_attempts_error_line() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join(STDERR_LOG);
        std::fs::write(
            &log,
            format!(
                "{ATTEMPT_HEADER}1 on vm: nin train\nerror: first\n{ATTEMPT_HEADER}2 on vm: nin train\ntraining nin\nerror: second\nnote: after\n"
            ),
        )?;
        assert_eq!(last_error(dir.path()), "error: second");
        std::fs::write(
            &log,
            format!("{ATTEMPT_HEADER}1 on vm: nin train --quiet\n"),
        )?;
        assert_eq!(last_error(dir.path()), "no error message");
        std::fs::write(&log, "Segmentation fault\n")?;
        assert_eq!(last_error(dir.path()), "Segmentation fault");
        Ok(())
    }
}
