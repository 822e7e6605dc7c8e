//! `cargo xtask sweep` end to end: the shipped smoke plan on real CIFAR-10 through the real `nin`
//! (every run done, a rerun skips them, the report and charts written), and the faults a sweep
//! must survive with a clear message, driven by a stand-in `nin` script so they take seconds:
//! a run past its time limit, a crashing and a diverging run (all failed, the others go on), Ctrl-C (runs
//! stopped with a checkpoint), a missing binary, an unknown model, a read-only runs folder and a
//! SLURM that is not installed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env_remove("NIN_BIN").env_remove("NIN_SWEEP_DATA");
    c
}

fn text_of(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Skips (returns `None`) with a message when a requirement is missing, and fails when `CI` is
/// set, where every requirement must be met.
fn require<T>(what: Option<T>, message: &str) -> Option<T> {
    if what.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI is set but {message}");
        eprintln!("skipped: {message}");
    }
    what
}

/// The real `nin`: `$NIN_BIN`, else the release or debug build of the workspace.
fn real_nin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NIN_BIN") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("nin"))
        .find(|p| p.is_file())
}

/// A stand-in `nin`: `list --json` names three presets; `train --model hang` sleeps, `crash`
/// fails like a bad input, `slow` waits for SIGTERM and exits 130 as nin does after its
/// checkpoint.
fn fake_nin(dir: &Path) -> PathBuf {
    let path = dir.join("nin");
    let script = r#"#!/bin/bash
if [ "$1" = list ]; then
  echo '[{"name":"hang","family":"a","params_cifar10":10,"params_cifar100":20,"macs_per_image_cifar10":5},
        {"name":"crash","family":"b","params_cifar10":10,"params_cifar100":20,"macs_per_image_cifar10":5},
        {"name":"slow","family":"c","params_cifar10":10,"params_cifar100":20,"macs_per_image_cifar10":5},
        {"name":"diverge","family":"d","params_cifar10":10,"params_cifar100":20,"macs_per_image_cifar10":5}]'
  exit 0
fi
case " $* " in
  *" --model hang "*) exec sleep 60 ;;
  *" --model crash "*) echo "error: --data: no CIFAR archive here" >&2; exit 2 ;;
  *" --model diverge "*) echo "error: training in runs/x: the loss became NaN at step 3" >&2; exit 3 ;;
  *" --model slow "*) trap 'echo "stopped with a checkpoint" >&2; exit 130' TERM; sleep 60 & wait; exit 0 ;;
esac
echo "error: unexpected arguments $*" >&2
exit 2
"#;
    std::fs::write(&path, script).expect("writing the stand-in nin");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("making the stand-in nin executable");
    path
}

fn write_plan(dir: &Path, models: &str, extra: &str) -> PathBuf {
    let path = dir.join("plan.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"faults\"\n[grid]\nmodels = {models}\ndatasets = [\"cifar10\"]\n[recipe]\nepochs = 1\n{extra}"
        ),
    )
    .expect("writing a plan");
    path
}

fn status(runs: &Path) -> String {
    let out = xtask()
        .args(["sweep", "status", "faults", "--runs"])
        .arg(runs)
        .output()
        .expect("running xtask sweep status");
    text_of(&out)
}

#[test]
fn runs_past_their_time_limit_crashing_or_diverging_fail_and_the_others_go_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nin = fake_nin(tmp.path());
    let plan = write_plan(
        tmp.path(),
        "[\"hang\", \"crash\", \"diverge\"]",
        "[resources]\ntime_limit = \"2s\"\n",
    );
    let runs = tmp.path().join("runs");
    let start = Instant::now();
    let out = xtask()
        .args(["sweep", "run"])
        .arg(&plan)
        .arg("--nin")
        .arg(&nin)
        .arg("--runs")
        .arg(&runs)
        .output()
        .expect("running xtask");
    let log = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(start.elapsed() < Duration::from_secs(30), "{log}");
    let st = status(&runs);
    assert!(
        st.contains("hang_cifar10_s0")
            && st.contains(
                "failed: exceeded its time limit of 2s (stopped before it could save a checkpoint)"
            ),
        "{st}"
    );
    assert!(
        st.contains("failed: nin train exited 2: error: --data: no CIFAR archive here"),
        "{st}"
    );
    assert!(
        st.contains("failed: diverged (loss or a weight became NaN or infinite): error: training in runs/x: the loss became NaN at step 3"),
        "{st}"
    );
    assert!(
        st.contains("3 runs: 0 done, 0 running, 3 failed, 0 pending"),
        "{st}"
    );
    // Each run keeps its log beside it, and the report lists both failures with their reason.
    let stderr_log = std::fs::read_to_string(runs.join("faults/crash_cifar10_s0/stderr.log"))
        .expect("the crashed run's stderr.log");
    assert!(stderr_log.contains("no CIFAR archive here"), "{stderr_log}");
    let out = xtask()
        .args(["sweep", "report", "faults", "--runs"])
        .arg(&runs)
        .output()
        .expect("running xtask sweep report");
    assert!(out.status.success(), "{}", text_of(&out));
    let report = std::fs::read_to_string(runs.join("faults/report.md")).expect("report.md");
    assert!(
        report.contains("- `hang_cifar10_s0`: exceeded its time limit"),
        "{report}"
    );
    assert!(
        report.contains("- `crash_cifar10_s0`: nin train exited 2"),
        "{report}"
    );
    let csv = std::fs::read_to_string(runs.join("faults/results.csv")).expect("results.csv");
    assert_eq!(csv.lines().count(), 4, "{csv}");

    // --skip-failed leaves them alone; by default a rerun retries them (attempt 2).
    let out = xtask()
        .args(["sweep", "run"])
        .arg(&plan)
        .arg("--nin")
        .arg(&nin)
        .arg("--runs")
        .arg(&runs)
        .arg("--skip-failed")
        .output()
        .expect("running xtask");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3 failed runs left alone"),
        "{}",
        text_of(&out)
    );
    let out = xtask()
        .args(["sweep", "run"])
        .arg(&plan)
        .arg("--nin")
        .arg(&nin)
        .arg("--runs")
        .arg(&runs)
        .output()
        .expect("running xtask");
    assert_eq!(out.status.code(), Some(1), "{}", text_of(&out));
    let record = std::fs::read_to_string(runs.join("faults/crash_cifar10_s0/sweep_run.json"))
        .expect("sweep_run.json");
    assert!(record.contains("\"attempts\": 2"), "{record}");
}

#[test]
fn ctrl_c_stops_running_runs_with_a_checkpoint_and_starts_no_more() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nin = fake_nin(tmp.path());
    let plan = write_plan(tmp.path(), "[\"slow\", \"hang\"]", "");
    let runs = tmp.path().join("runs");
    let child = xtask()
        .args(["sweep", "run"])
        .arg(&plan)
        .arg("--nin")
        .arg(&nin)
        .arg("--runs")
        .arg(&runs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting xtask");
    // Wait until the first run has started, then interrupt the sweep.
    let record = runs.join("faults/slow_cifar10_s0/sweep_run.json");
    let start = Instant::now();
    while !record.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(killed.success());
    let out = child.wait_with_output().expect("waiting for xtask");
    assert_eq!(out.status.code(), Some(130), "{}", text_of(&out));
    let st = status(&runs);
    assert!(
        st.contains("stopped: interrupted with a checkpoint; a rerun resumes it"),
        "{st}"
    );
    // The second run never started.
    assert!(
        !runs.join("faults/hang_cifar10_s0/sweep_run.json").exists(),
        "{st}"
    );
    assert!(
        st.contains("hang_cifar10_s0") && st.contains("pending"),
        "{st}"
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_message_before_anything_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nin = fake_nin(tmp.path());
    let runs = tmp.path().join("runs");
    let run = |plan: &Path, nin: &Path, runs: &Path, extra: &[&str]| {
        let out = xtask()
            .args(["sweep", "run"])
            .arg(plan)
            .arg("--nin")
            .arg(nin)
            .arg("--runs")
            .arg(runs)
            .args(extra)
            .output()
            .expect("running xtask");
        (out.status.code(), text_of(&out))
    };

    let plan = write_plan(tmp.path(), "[\"hang\", \"resnet50\"]", "");
    let (code, log) = run(&plan, &nin, &runs, &[]);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(
            "grid.models: unknown model `resnet50`: the zoo has hang, crash, slow, diverge"
        ),
        "{log}"
    );
    assert!(!runs.exists(), "nothing is written for a bad plan");

    let plan = write_plan(tmp.path(), "[\"hang\"]", "[resources]\ncores = 2\n");
    let (code, log) = run(&plan, &nin, &runs, &[]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("unknown field `cores`"), "{log}");

    let plan = write_plan(tmp.path(), "[\"hang\"]", "");
    let (code, log) = run(&plan, &tmp.path().join("no/such/nin"), &runs, &[]);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(
            "no/such/nin (--nin) does not exist: build it with `cargo build --release -p nin-cli`"
        ),
        "{log}"
    );

    // A runs folder that cannot be written: a read-only folder (root writes anywhere, so there
    // a path under /sys, where nothing can be created).
    let ro = tmp.path().join("read-only");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let ro = if std::fs::write(ro.join("probe"), b"").is_ok() {
        PathBuf::from("/sys/nin-sweep-test-runs")
    } else {
        ro
    };
    let (code, log) = run(&plan, &nin, &ro, &[]);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("cannot be created or written (read-only?)"),
        "{log}"
    );

    // SLURM not installed: no sbatch/squeue on PATH.
    let out = xtask()
        .args(["sweep", "run"])
        .arg(&plan)
        .arg("--nin")
        .arg(&nin)
        .arg("--runs")
        .arg(&runs)
        .args(["--backend", "slurm"])
        .env("PATH", tmp.path().join("empty-path"))
        .output()
        .expect("running xtask");
    let log = text_of(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains("`squeue` not found: SLURM is not installed on this machine"),
        "{log}"
    );
}

#[test]
fn smoke_plan_runs_every_family_on_real_data_and_reports() {
    let Some(nin) = require(
        real_nin(),
        "no nin binary (cargo build --release -p nin-cli)",
    ) else {
        return;
    };
    let data = root().join("../shared/data/cifar-10-binary.tar.gz");
    if require(
        data.is_file().then_some(()),
        "no CIFAR-10 archive in ../shared/data",
    )
    .is_none()
    {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let runs = tmp.path().join("runs");
    let plan = root().join("sweeps/smoke.toml");
    let sweep = |extra: &[&str]| {
        let out = xtask()
            .args(["sweep", "run"])
            .arg(&plan)
            .arg("--nin")
            .arg(&nin)
            .arg("--runs")
            .arg(&runs)
            .args(["--jobs", "2"])
            .args(extra)
            .output()
            .expect("running xtask");
        (out.status.code(), text_of(&out))
    };
    let (code, log) = sweep(&[]);
    assert_eq!(code, Some(0), "{log}");
    // A rerun skips every finished run.
    let (code, log) = sweep(&[]);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        !log.contains("done    "),
        "a finished run was run again:\n{log}"
    );

    let out = xtask()
        .args(["sweep", "report", "smoke", "--runs"])
        .arg(&runs)
        .output()
        .expect("running xtask sweep report");
    assert!(out.status.success(), "{}", text_of(&out));
    let dir = runs.join("smoke");
    let csv = std::fs::read_to_string(dir.join("results.csv")).expect("results.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 8, "{csv}");
    let mut families: Vec<&str> = rows.iter().map(|r| r[col("family")]).collect();
    families.sort();
    families.dedup();
    assert_eq!(families, ["cic", "dcnin", "drnin", "nin"], "{csv}");
    for r in &rows {
        assert_eq!(r[col("status")], "done", "{csv}");
        assert_eq!(r[col("epochs_done")], "1", "{csv}");
        let top1: f64 = r[col("final_top1")].parse().expect("final_top1");
        assert!((0.0..=100.0).contains(&top1), "{csv}");
        for c in [
            "params",
            "macs_per_image",
            "wall_seconds",
            "images_per_s",
            "peak_memory_mib",
        ] {
            let v: f64 = r[col(c)].parse().unwrap_or(0.0);
            assert!(v > 0.0, "{c} missing:\n{csv}");
        }
    }
    let nin_row = rows
        .iter()
        .find(|r| r[col("id")] == "nin_cifar10_s0")
        .expect("nin row");
    assert_eq!(nin_row[col("params")], "966986", "{csv}");
    let report = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    assert!(
        report.contains("| nin | nin | cifar10 | — | 2 |"),
        "{report}"
    );
    assert!(report.contains("## Failed runs\n\nNone."), "{report}");
    // The plan changed under finished runs: they are neither rerun nor resumed nor counted as
    // its results, and their files stay as they were.
    let changed = tmp.path().join("smoke.toml");
    let text = std::fs::read_to_string(&plan).expect("smoke.toml");
    let text = text
        .replace("limit_eval = 250", "limit_eval = 100")
        .replace(
            "data = \"../../shared/data\"",
            &format!("data = {:?}", root().join("../shared/data")),
        );
    std::fs::write(&changed, text).expect("writing the changed plan");
    let out = xtask()
        .args(["sweep", "run"])
        .arg(&changed)
        .arg("--nin")
        .arg(&nin)
        .arg("--runs")
        .arg(&runs)
        .output()
        .expect("running xtask");
    let log = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("the run folder holds a run with limit_eval Some(250) (plan: Some(100)): the plan changed since it started"),
        "{log}"
    );
    let metrics =
        std::fs::read_to_string(dir.join("nin_cifar10_s0/metrics.csv")).expect("metrics.csv");
    assert_eq!(metrics.lines().count(), 2, "{metrics}");

    for chart in [
        "accuracy_vs_params",
        "accuracy_vs_macs",
        "accuracy_vs_time",
        "learning_curves",
        "learning_curves_time",
    ] {
        let png = std::fs::read(dir.join(format!("charts/{chart}.png"))).expect(chart);
        assert!(png.starts_with(b"\x89PNG"), "{chart}.png is not a PNG");
        let svg = std::fs::read_to_string(dir.join(format!("charts/{chart}.svg"))).expect(chart);
        assert!(
            svg.contains("<svg") && svg.contains("test top-1"),
            "{chart}.svg"
        );
        assert!(report.contains(&format!("charts/{chart}.png")), "{report}");
    }
}
