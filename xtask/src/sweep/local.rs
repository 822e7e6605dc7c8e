//! The local backend: runs a sweep's runs on this machine, `jobs` at a time with the cores split
//! between them, with a live view (done / running / failed / pending and the running runs'
//! epochs). Ctrl-C or SIGTERM stops every running run with a checkpoint and starts no more.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::runner::{self, Attempt, RecordState, RunRecord};
use super::status::{self, RunState};
use super::{recipe_file, Manifest};

/// What to run and how.
pub struct LocalOptions {
    /// Runs at once.
    pub jobs: usize,
    /// `--threads` of each run.
    pub threads: usize,
    /// Leave failed runs alone instead of retrying them.
    pub skip_failed: bool,
}

/// Counts of what a local sweep did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Runs finished (now or before).
    pub done: usize,
    /// Runs that failed this time.
    pub failed: usize,
    /// Runs stopped with a checkpoint or never started because of Ctrl-C.
    pub stopped: usize,
    /// Failed runs left alone (`--skip-failed`).
    pub skipped_failed: usize,
}

/// Runs every unfinished run of the sweep in `dir`; `stop` is set by Ctrl-C / SIGTERM.
pub fn run(
    dir: &Path,
    manifest: &Manifest,
    opts: &LocalOptions,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Outcome> {
    let states = status::states(dir, manifest);
    let mut outcome = Outcome::default();
    let mut todo = Vec::new();
    for (i, state) in states.iter().enumerate() {
        match state {
            RunState::Done => outcome.done += 1,
            RunState::Running { .. } | RunState::Queued => {
                eprintln!(
                    "{}: already {} elsewhere; left alone",
                    manifest.plan.runs[i].id,
                    state.label()
                );
            }
            RunState::Failed(_) if opts.skip_failed => outcome.skipped_failed += 1,
            _ => todo.push(i),
        }
    }
    let total = manifest.plan.runs.len();
    let multi = MultiProgress::new();
    let overall = multi.add(ProgressBar::new(total as u64));
    overall.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} done  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    overall.set_prefix(format!("sweep {}", manifest.plan.name));
    overall.set_position(outcome.done as u64);
    let spinner_style = ProgressStyle::with_template("  {spinner} {prefix}: {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());

    let (tx, rx) = mpsc::channel::<(usize, anyhow::Result<RunRecord>)>();
    let mut queue = todo.into_iter();
    let mut running: Vec<(usize, ProgressBar)> = Vec::new();
    let time_limit = manifest
        .plan
        .resources
        .time_limit_s
        .map(Duration::from_secs);
    let gpus = manifest.plan.resources.gpus;
    let mut sweep_error = None;
    loop {
        while running.len() < opts.jobs && !stop.load(Ordering::SeqCst) && sweep_error.is_none() {
            let Some(i) = queue.next() else { break };
            let spec = manifest.plan.runs[i].clone();
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(spinner_style.clone());
            bar.set_prefix(spec.id.clone());
            bar.set_message("starting");
            bar.enable_steady_tick(Duration::from_millis(250));
            running.push((i, bar));
            let (tx, stop, dir, nin) = (
                tx.clone(),
                stop.clone(),
                dir.to_path_buf(),
                manifest.nin.clone(),
            );
            let threads = opts.threads;
            std::thread::spawn(move || {
                let run_dir = dir.join(&spec.id);
                let recipe = recipe_file(&dir, &spec.id);
                let attempt = Attempt {
                    nin: &nin,
                    spec: &spec,
                    run_dir: &run_dir,
                    recipe_file: &recipe,
                    threads,
                    gpus,
                    time_limit,
                    stop: &stop,
                    slurm_job: None,
                };
                let _ = tx.send((i, runner::execute(&attempt)));
            });
        }
        if running.is_empty() {
            break;
        }
        let pending = queue.len();
        overall.set_message(format!(
            "{} running, {} failed, {} pending{}",
            running.len(),
            outcome.failed,
            pending,
            if stop.load(Ordering::SeqCst) {
                " (stopping: each run saves a checkpoint)"
            } else {
                ""
            }
        ));
        for (i, bar) in &running {
            let spec = &manifest.plan.runs[*i];
            let (done, epochs) = status::epochs(&dir.join(&spec.id), spec.recipe.epochs);
            bar.set_message(format!("epoch {}/{epochs}", (done + 1).min(epochs)));
        }
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok((i, result)) => {
                if let Some(pos) = running.iter().position(|(j, _)| *j == i) {
                    let (_, bar) = running.remove(pos);
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                let id = &manifest.plan.runs[i].id;
                let line = match result {
                    Ok(record) => match record.state {
                        RecordState::Done => {
                            outcome.done += 1;
                            overall.inc(1);
                            format!("done    {id} ({:.1} s)", record.wall_seconds)
                        }
                        RecordState::Stopped => {
                            outcome.stopped += 1;
                            format!("stopped {id}: {}", record.reason.unwrap_or_default())
                        }
                        RecordState::Failed | RecordState::Running => {
                            outcome.failed += 1;
                            format!(
                                "FAILED  {id}: {} (log: {})",
                                record.reason.unwrap_or_default(),
                                dir.join(id).join(runner::STDERR_LOG).display()
                            )
                        }
                    },
                    Err(e) if stop.load(Ordering::SeqCst) => {
                        outcome.stopped += 1;
                        format!("stopped {id}: {e:#}")
                    }
                    Err(e) => {
                        // The sweep itself cannot go on (an unwritable folder, a binary that
                        // will not start): let the running runs finish, start no more.
                        let msg = format!("{id}: {e:#}");
                        sweep_error.get_or_insert(msg.clone());
                        format!("ERROR   {msg}")
                    }
                };
                let _ = multi.println(&line);
                if multi.is_hidden() {
                    eprintln!("{line}");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    overall.finish_and_clear();
    outcome.stopped += queue.len();
    if let Some(e) = sweep_error {
        anyhow::bail!("the sweep stopped: {e}");
    }
    Ok(outcome)
}
