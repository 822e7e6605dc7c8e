//! Where every run of a sweep stands, from its run folders alone (plus `squeue`/`sacct` for runs
//! submitted to SLURM): done, running (with its epoch), queued, stopped, failed or pending.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use nin_format::{read_metrics, RunConfig};

use super::runner::{self, RecordState, RunRecord};
use super::{slurm, sys, Manifest};

/// One run's state.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// Never started.
    Pending,
    /// Waiting in the SLURM queue.
    Queued,
    /// An attempt is in progress: epochs done of all.
    Running {
        /// Epochs finished.
        done: usize,
        /// Epochs of the run.
        epochs: usize,
    },
    /// Stopped with a checkpoint (Ctrl-C, preemption): a rerun resumes it.
    Stopped(String),
    /// Failed, with the reason.
    Failed(String),
    /// Every epoch done.
    Done,
}

impl RunState {
    /// Short name for tables.
    pub fn label(&self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Queued => "queued",
            RunState::Running { .. } => "running",
            RunState::Stopped(_) => "stopped",
            RunState::Failed(_) => "failed",
            RunState::Done => "done",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunState::Running { done, epochs } => {
                write!(f, "running (epoch {}/{epochs})", done + 1)
            }
            RunState::Stopped(r) | RunState::Failed(r) => write!(f, "{}: {r}", self.label()),
            other => f.write_str(other.label()),
        }
    }
}

/// Epochs finished and epochs of the run in `run_dir` (0 of the plan's when it has not started).
pub fn epochs(run_dir: &Path, planned: usize) -> (usize, usize) {
    let done = read_metrics(run_dir).map_or(0, |m| m.len());
    let total = RunConfig::load(run_dir).map_or(planned, |r| r.recipe.epochs);
    (done, total)
}

/// The state of every run of the sweep in `dir`, in plan order.
pub fn states(dir: &Path, manifest: &Manifest) -> Vec<RunState> {
    let queue = if manifest.slurm_jobs.is_empty() {
        BTreeMap::new()
    } else {
        slurm::queue(manifest).unwrap_or_else(|e| {
            eprintln!(
                "warning: SLURM queue unknown ({e:#}); states come from the run folders only"
            );
            BTreeMap::new()
        })
    };
    let here = runner::hostname();
    manifest
        .plan
        .runs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let run_dir = dir.join(&spec.id);
            let (done, total) = epochs(&run_dir, spec.recipe.epochs);
            if let Some(why) = runner::mismatch(spec, &run_dir) {
                return RunState::Failed(why);
            }
            if runner::is_finished(&run_dir) {
                return RunState::Done;
            }
            let record = RunRecord::load(&run_dir).ok().flatten();
            let in_queue = queue.get(&i).map(String::as_str);
            match (in_queue, record) {
                (Some("PENDING" | "REQUEUED" | "CONFIGURING"), _) => RunState::Queued,
                (Some(_), _) => RunState::Running {
                    done,
                    epochs: total,
                },
                (None, Some(r)) => match r.state {
                    RecordState::Running => {
                        let alive = r.slurm_job.is_none()
                            && r.host == here
                            && r.pid.is_some_and(sys::process_exists);
                        if alive {
                            RunState::Running {
                                done,
                                epochs: total,
                            }
                        } else if let Some(job) = &r.slurm_job {
                            RunState::Failed(format!(
                                "SLURM task {job} ended without a verdict ({}); see {}",
                                slurm::task_state(job).unwrap_or_else(|| "state unknown".into()),
                                run_dir.join(runner::STDERR_LOG).display()
                            ))
                        } else {
                            RunState::Stopped(
                                "the sweep process ended while the run was in progress".into(),
                            )
                        }
                    }
                    RecordState::Done => RunState::Failed(
                        "recorded done but the run folder holds no finished run".into(),
                    ),
                    RecordState::Stopped => {
                        RunState::Stopped(r.reason.unwrap_or_else(|| "stopped".into()))
                    }
                    RecordState::Failed => {
                        RunState::Failed(r.reason.unwrap_or_else(|| "failed".into()))
                    }
                },
                (None, None) => RunState::Pending,
            }
        })
        .collect()
}

/// Counts by label, in display order.
pub fn summary(states: &[RunState]) -> String {
    let count = |l: &str| states.iter().filter(|s| s.label() == l).count();
    let mut parts = vec![
        format!("{} done", count("done")),
        format!("{} running", count("running")),
        format!("{} failed", count("failed")),
        format!(
            "{} pending",
            count("pending") + count("queued") + count("stopped")
        ),
    ];
    if count("queued") > 0 {
        parts.push(format!("({} queued in SLURM)", count("queued")));
    }
    if count("stopped") > 0 {
        parts.push(format!("({} stopped with a checkpoint)", count("stopped")));
    }
    format!("{} runs: {}", states.len(), parts.join(", "))
}

/// Prints the status table of the sweep in `dir`.
pub fn print(dir: &Path, manifest: &Manifest) {
    let states = states(dir, manifest);
    println!("sweep {} ({})", manifest.plan.name, dir.display());
    for job in &manifest.slurm_jobs {
        println!(
            "SLURM array job {} ({} tasks)",
            job.job_id,
            job.indices.len()
        );
    }
    let width = manifest
        .plan
        .runs
        .iter()
        .map(|r| r.id.len())
        .max()
        .unwrap_or(2);
    for (spec, state) in manifest.plan.runs.iter().zip(&states) {
        let run_dir = dir.join(&spec.id);
        let (done, total) = epochs(&run_dir, spec.recipe.epochs);
        println!(
            "{:<width$}  {:>3}/{:<3} epochs  {state}",
            spec.id, done, total
        );
    }
    println!("{}", summary(&states));
}
