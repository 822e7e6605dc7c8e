//! `nin train` killed with a real SIGKILL at 22 points, most of them inside checkpoint writes
//! (through the `NIN_TEST_KILL_AT` hook, which has the process kill itself the n-th time a
//! checkpoint reaches a named stage), each time resumed with `--resume`, ends with exactly the
//! weights, best model and metrics of an uninterrupted run. So does a run sent SIGTERM in the
//! middle of a checkpoint: it saves the next step's checkpoint and exits 130, as Ctrl-C does.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::train::cifar10_archive;
use candle_core::Device;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TINY_NIN: &str = r#"{"mlpconv1":[8,8,8],"mlpconv2":[8,8,8],"mlpconv3":[8,8]}"#;

/// Where each process is killed, as `NIN_TEST_KILL_AT` values (`<stage>:<n>`: the n-th time this
/// process's checkpoints reach the stage), in the order the chain of processes meets them.
/// 4 steps per epoch, 2 epochs and a checkpoint every step make 9 checkpoints (steps 0 to 8);
/// the comments say which one each process leaves committed.
const KILL_POINTS: [&str; 22] = [
    // Inside the very first checkpoint: nothing is committed, `--resume` starts from step 0.
    "model-written:1",
    "optimizer-written:1",
    "state-written:1",
    "folder-renamed:1",
    "root-model-written:1", // root weights written, still no commit
    "committed:1",          // step 0
    "model-written:1",
    "root-model-written:1", // root weights ahead of the committed step 0
    "pruned:1",             // step 1
    "model-written:2",      // step 2
    "optimizer-written:2",  // step 3
    "best-written:1",       // epoch 1's end: best/ written, its checkpoint not
    "state-written:1",      // the same epoch end again
    "metrics-written:1",    // step 4, the end of epoch 1
    "state-written:1",
    "folder-renamed:1",
    "root-model-written:1",
    "committed:1",          // step 5
    "state-written:2",      // step 6
    "root-model-written:2", // step 7
    "folder-renamed:1",     // inside the last checkpoint (epoch 2's end)
    "committed:1",          // step 8: finished, metrics not yet rewritten
];

/// Where a fresh run is sent SIGTERM (`NIN_TEST_KILL_AT=<stage>:<n>:term`): inside the first
/// checkpoints, inside an epoch's end, and between a commit and its pruning.
const TERM_POINTS: [&str; 3] = ["state-written:2", "best-written:1", "committed:6"];

/// A scratch folder, in memory where the machine has one (the test writes about 200
/// checkpoints; what it checks does not depend on the disk).
fn scratch() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return Ok(dir);
        }
    }
    tempfile::tempdir()
}

/// The archive extracted into `dir` (reading the records is then ten times faster than
/// decompressing the archive in each of the 24 processes), or the archive itself without `tar`.
fn data_source(archive: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    let extracted = Command::new("tar")
        .arg("xzf")
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    Ok(if extracted {
        dir.to_path_buf()
    } else {
        archive.to_path_buf()
    })
}

fn nin(args: &[&str], kill_at: Option<&str>) -> std::io::Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nin"));
    cmd.args(args).env_remove("NIN_DATA_DIR");
    match kill_at {
        Some(point) => cmd.env("NIN_TEST_KILL_AT", point),
        None => cmd.env_remove("NIN_TEST_KILL_AT"),
    };
    cmd.output()
}

fn train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--out",
        out,
        "--model-args",
        TINY_NIN,
        "--limit-train",
        "64",
        "--limit-eval",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "1",
        "--seed",
        "7",
        "--threads",
        "1",
        "--quiet",
    ]
}

/// Tensors by name, as raw bits.
type Bits = Vec<(String, Vec<u32>)>;

/// A safetensors file's tensors as raw bits (its metadata's order in the file is not fixed).
fn tensor_bits(path: &Path) -> Result<Bits, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for (name, t) in candle_core::safetensors::load(path, &Device::Cpu)? {
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        out.push((name, values.iter().map(|v| v.to_bits()).collect()));
    }
    out.sort();
    Ok(out)
}

/// `metrics.csv` without its wall-clock column.
fn metrics(run: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(run.join("metrics.csv"))?
        .lines()
        .map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head).to_string())
        .collect())
}

#[test]
fn sigkill_at_22_points_and_sigterm_at_3_then_resume_gives_the_uninterrupted_run() -> TestResult {
    let Some(archive) = cifar10_archive() else {
        return Ok(());
    };
    let tmp = scratch()?;
    let data = data_source(&archive, tmp.path())?;
    let data = data.display().to_string();
    let straight = tmp.path().join("straight");
    let killed = tmp.path().join("killed");
    let killed_str = killed.display().to_string();

    let out = nin(&train_args(&data, &straight.display().to_string()), None)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let resume = [
        "train",
        "--resume",
        "--out",
        &killed_str,
        "--threads",
        "1",
        "--quiet",
    ];
    for (i, point) in KILL_POINTS.iter().enumerate() {
        let args = if i == 0 {
            train_args(&data, &killed_str)
        } else {
            resume.to_vec()
        };
        let out = nin(&args, Some(point))?;
        assert_eq!(
            out.status.signal(),
            Some(9),
            "process {i} was to be killed at {point}, but ended with {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The last kill came after the final commit: resuming only tidies the run folder.
    let out = nin(&resume, None)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("already finished"),
        "{stderr}"
    );

    for file in ["model.safetensors", "best/model.safetensors"] {
        assert!(
            tensor_bits(&straight.join(file))? == tensor_bits(&killed.join(file))?,
            "{file} differs from the uninterrupted run's"
        );
    }
    assert_eq!(metrics(&killed)?, metrics(&straight)?);
    let checkpoints: Vec<_> = std::fs::read_dir(killed.join("checkpoints"))?.collect();
    assert_eq!(checkpoints.len(), 1, "old checkpoints are pruned");

    for (i, point) in TERM_POINTS.iter().enumerate() {
        let termed = tmp.path().join(format!("termed-{i}"));
        let termed_str = termed.display().to_string();
        let signal = format!("{point}:term");
        let out = nin(&train_args(&data, &termed_str), Some(&signal))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(130) && stderr.contains("nin train --resume"),
            "SIGTERM at {point}: {:?}: {stderr}",
            out.status
        );
        let resume = [
            "train",
            "--resume",
            "--out",
            &termed_str,
            "--threads",
            "1",
            "--quiet",
        ];
        let out = nin(&resume, None)?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            tensor_bits(&straight.join("model.safetensors"))?
                == tensor_bits(&termed.join("model.safetensors"))?,
            "SIGTERM at {point}: the resumed weights differ from the uninterrupted run's"
        );
        assert_eq!(metrics(&termed)?, metrics(&straight)?, "SIGTERM at {point}");
    }
    Ok(())
}
