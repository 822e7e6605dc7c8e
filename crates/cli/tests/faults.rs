//! The disk fails under a run: a full disk stops `nin train` with a clear error, leaves no
//! half-written file that could pass for a valid one, keeps the previous checkpoint intact, and
//! the run resumes to the same weights once there is room; a read-only output folder is refused
//! with its cause named. The disks are small tmpfs mounts the test makes (it runs as root; off
//! CI it skips where mounting is not permitted).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::train::{cifar10_archive, nin, nin_ok, train_args, weights, TestResult};

/// A tmpfs mounted at a fresh folder, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `600k`); `None` where mounting is not permitted.
    fn mount(size: &str) -> Option<Self> {
        let parent = tempfile::tempdir().ok()?;
        let dir = parent.path().join("disk");
        std::fs::create_dir(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root and must be able to mount a tmpfs"
            );
            eprintln!("skipping: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Self {
            dir,
            _parent: parent,
        })
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Every path under `dir` whose name marks it as a temporary (half-written) file or folder.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(".tmp") {
                found.push(path.clone());
            }
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

#[cfg(unix)]
#[test]
fn a_full_disk_stops_the_run_cleanly_and_it_resumes_to_the_same_weights() -> TestResult {
    let Some(archive) = cifar10_archive() else {
        return Ok(());
    };
    let Some(disk) = Tmpfs::mount("600k") else {
        return Ok(());
    };
    let archive = archive.display().to_string();
    let tmp = tempfile::tempdir()?;
    let straight = tmp.path().join("straight");
    nin_ok(&train_args(&archive, &straight.display().to_string()))?;

    // The first checkpoint fits in 600 KiB; the second, written beside it, does not.
    let run = disk.dir.join("run");
    let run_str = run.display().to_string();
    let out = nin(&train_args(&archive, &run_str))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        leftovers(&run),
        Vec::<PathBuf>::new(),
        "half-written files remain"
    );
    // The previous checkpoint is whole: its state parses and names a folder that exists.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("trainer_state.json"))?)?;
    let committed = state["global_step"].as_u64().expect("a committed step");
    assert!(run.join("checkpoints").read_dir()?.count() == 1);

    disk.remount("size=16m");
    let resumed = nin_ok(&[
        "train",
        "--resume",
        "--out",
        &run_str,
        "--threads",
        "1",
        "--quiet",
    ])?;
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming"));
    let (a, b) = (weights(&straight), weights(&run));
    for (name, ta) in &a {
        let diff = (ta - &b[name])?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(
            diff, 0.0,
            "tensor {name} differs after a full disk at step {committed} and resume"
        );
    }
    Ok(())
}

#[cfg(unix)]
#[test]
fn a_read_only_output_folder_is_refused_with_its_cause() -> TestResult {
    let Some(archive) = cifar10_archive() else {
        return Ok(());
    };
    let Some(disk) = Tmpfs::mount("1m") else {
        return Ok(());
    };
    disk.remount("ro");
    let archive = archive.display().to_string();
    let run = disk.dir.join("run").display().to_string();
    let out = nin(&train_args(&archive, &run))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--out") && err.contains("Read-only file system"),
        "{err}"
    );
    Ok(())
}
