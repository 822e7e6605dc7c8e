//! The SLURM backend: one `sbatch` array job per submission, one array task per run (CPUs,
//! memory, GPUs and time from the plan). Each task runs `xtask sweep exec DIR --index I`, which
//! resumes the run when it was requeued; the queue is read back with `squeue` and `sacct`.
//! The runs folder and the binaries must be on a filesystem the compute nodes share.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::runner::unix_now;
use super::{Manifest, SlurmJob};

/// The folder of the sweep holding array scripts and SLURM's own task logs.
pub const SLURM_DIR: &str = "slurm";
/// How long a SLURM command may take before the controller counts as not answering.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a SLURM command, refusing one that is not installed or does not answer in time.
fn slurm_cmd(program: &str, args: &[String]) -> anyhow::Result<String> {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "`{program}` not found: SLURM is not installed on this machine (or not on PATH); \
             use --backend local, or install slurm-client"
        ),
        Err(e) => return Err(e).with_context(|| format!("starting {program}")),
    };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {program}"))?
        {
            break status;
        }
        if start.elapsed() > ANSWER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{program}` did not answer in {} s: is slurmctld running and reachable?",
                ANSWER_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        bail!(
            "`{program} {}` failed ({status}): {}",
            args.join(" "),
            err.trim()
        );
    }
    Ok(out)
}

/// The array script for `indices` of the sweep in `dir`.
pub fn script(dir: &Path, manifest: &Manifest, indices: &[usize], xtask: &Path) -> String {
    let r = &manifest.plan.resources;
    let threads = r.threads.unwrap_or(2);
    let list = indices
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let throttle = r.max_parallel.map(|k| format!("%{k}")).unwrap_or_default();
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!(
        "#SBATCH --job-name=nin-sweep-{}\n",
        manifest.plan.name
    ));
    s.push_str(&format!("#SBATCH --array={list}{throttle}\n"));
    s.push_str("#SBATCH --ntasks=1\n");
    s.push_str(&format!("#SBATCH --cpus-per-task={threads}\n"));
    if let Some(mb) = r.memory_mb {
        s.push_str(&format!("#SBATCH --mem={mb}M\n"));
    }
    if let Some(limit) = r.time_limit_s {
        // The sweep stops the run itself at its limit (with a checkpoint); SLURM's limit leaves
        // time for that and for loading data.
        let minutes = (limit + super::runner::GRACE.as_secs() + 120).div_ceil(60);
        s.push_str(&format!("#SBATCH --time={minutes}\n"));
    }
    if r.gpus > 0 {
        s.push_str(&format!("#SBATCH --gpus={}\n", r.gpus));
    }
    if let Some(p) = &r.partition {
        s.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    // A preempted or requeued task starts again and resumes its run from its checkpoint.
    s.push_str("#SBATCH --requeue\n#SBATCH --open-mode=append\n");
    s.push_str(&format!(
        "#SBATCH --output={}/%A_%a.out\n",
        dir.join(SLURM_DIR).display()
    ));
    s.push_str(&format!(
        "exec {} sweep exec {} --index \"$SLURM_ARRAY_TASK_ID\"\n",
        shell_quote(xtask),
        shell_quote(dir)
    ));
    s
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Writes the array script for `indices` and submits it; returns the job recorded.
pub fn submit(
    dir: &Path,
    manifest: &Manifest,
    indices: &[usize],
    xtask: &Path,
) -> anyhow::Result<SlurmJob> {
    let slurm_dir = dir.join(SLURM_DIR);
    std::fs::create_dir_all(&slurm_dir)
        .with_context(|| format!("creating {}", slurm_dir.display()))?;
    let path: PathBuf = slurm_dir.join(format!("array-{}.sh", manifest.slurm_jobs.len() + 1));
    nin_format::write_atomic(&path, script(dir, manifest, indices, xtask).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    let out = slurm_cmd("sbatch", &["--parsable".into(), path.display().to_string()])?;
    let job_id = out.trim().split(';').next().unwrap_or("").to_string();
    if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch answered `{}`, not a job id", out.trim());
    }
    Ok(SlurmJob {
        job_id,
        indices: indices.to_vec(),
        submitted_unix: unix_now(),
    })
}

/// SLURM's state of every run index still in the queue (`RUNNING`, `PENDING`, …).
pub fn queue(manifest: &Manifest) -> anyhow::Result<BTreeMap<usize, String>> {
    let jobs: Vec<&str> = manifest
        .slurm_jobs
        .iter()
        .map(|j| j.job_id.as_str())
        .collect();
    let mut states = BTreeMap::new();
    if jobs.is_empty() {
        return Ok(states);
    }
    let out = slurm_cmd(
        "squeue",
        &[
            "-h".into(),
            "-r".into(),
            "-j".into(),
            jobs.join(","),
            "-o".into(),
            "%i %T".into(),
        ],
    )?;
    for line in out.lines() {
        let mut parts = line.split_whitespace();
        let (Some(id), Some(state)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Some(index) = id
            .split_once('_')
            .and_then(|(_, t)| t.parse::<usize>().ok())
        {
            states.insert(index, state.to_string());
        }
    }
    Ok(states)
}

/// `sacct`'s state of one array task (`TIMEOUT`, `OUT_OF_MEMORY`, …), when accounting answers.
pub fn task_state(job: &str) -> Option<String> {
    let out = slurm_cmd(
        "sacct",
        &[
            "-n".into(),
            "-P".into(),
            "-X".into(),
            "-j".into(),
            job.into(),
            "-o".into(),
            "State,ExitCode".into(),
        ],
    )
    .ok()?;
    out.lines().next().map(|l| l.replace('|', " exit "))
}

/// Checks that SLURM is installed and its controller answers.
pub fn check_available() -> anyhow::Result<()> {
    slurm_cmd("squeue", &["-h".into(), "-o".into(), "%i".into()]).map(|_| ())
}
