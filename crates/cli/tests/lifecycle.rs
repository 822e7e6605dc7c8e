//! A run's life as schedulers and sweeps see it: one folder per run (claimed race-free), exit
//! codes that tell a typo from a diverged run from an interrupted one, SIGTERM that checkpoints
//! like Ctrl-C, `--resume` that refuses flags contradicting the run, and `eval --split val` that
//! evaluates the run's own hold-out.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::train::{cifar10_archive_arg, nin, nin_ok, train_args, weights, TestResult, SMALL_NIN};

/// A one-epoch run of the small NIN on 96 images (6 steps of 16).
fn short_run<'a>(archive: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        archive,
        "--out",
        out,
        "--model-args",
        SMALL_NIN,
        "--limit-train",
        "96",
        "--limit-eval",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--seed",
        "7",
        "--threads",
        "1",
        "--quiet",
    ]
}

#[test]
fn two_runs_given_one_folder_never_both_train() -> TestResult {
    let Some(archive) = cifar10_archive_arg() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("shared-out").display().to_string();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_nin"))
            .args(short_run(&archive, &out))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    };
    let (a, b) = (spawn()?, spawn()?);
    let (a, b) = (a.wait_with_output()?, b.wait_with_output()?);
    let codes = [a.status.code(), b.status.code()];
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(2)),
        "exactly one run trains: {codes:?}\n{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    let loser = if a.status.success() { &b } else { &a };
    assert!(
        String::from_utf8_lossy(&loser.stderr).contains("already holds a run"),
        "{}",
        String::from_utf8_lossy(&loser.stderr)
    );
    // The winner's run is whole: it resumes as finished and evaluates.
    nin_ok(&[
        "eval",
        "--model",
        &out,
        "--data",
        &archive,
        "--limit-eval",
        "16",
    ])?;
    Ok(())
}

#[test]
fn resume_refuses_flags_that_contradict_the_run() -> TestResult {
    let Some(archive) = cifar10_archive_arg() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("run").display().to_string();
    nin_ok(&short_run(&archive, &out))?;
    let out_flag = ["train", "--resume", "--out", &out, "--quiet"];
    let with = |extra: &[&str]| -> Vec<String> {
        out_flag
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nin(&args)
    };
    let refused = run(with(&["--epochs", "5", "--lr", "0.5", "--model", "nin_bn"]))?;
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    // The run took the default model and recipe.
    let default_lr = nin_format::Recipe::by_name(nin_format::DEFAULT_RECIPE)?.lr;
    for named in [
        "--epochs 5 (the run has 1)".to_string(),
        format!("--lr 0.5 (the run has {default_lr})"),
        format!("--model nin_bn (the run has {})", nin_zoo::DEFAULT_MODEL),
    ] {
        assert!(err.contains(&named), "{named}: {err}");
    }
    // Flags that agree with run.json are accepted.
    let agreed = run(with(&["--epochs", "1", "--seed", "7", "--threads", "1"]))?;
    assert!(
        agreed.status.success(),
        "{}",
        String::from_utf8_lossy(&agreed.stderr)
    );
    Ok(())
}

#[test]
fn exit_codes_tell_a_typo_from_a_diverged_run() -> TestResult {
    let out = nin(&["train", "--threads", "0"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads: expected 1 to 1024, got 0"));
    let out = nin(&["train", "--threads", "100000"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));

    let Some(archive) = cifar10_archive_arg() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("diverged").display().to_string();
    let mut args = short_run(&archive, &dir);
    args.extend(["--lr", "1e30"]);
    let out = nin(&args)?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-finite loss"));
    Ok(())
}

#[cfg(unix)]
#[test]
fn sigterm_checkpoints_and_the_run_resumes_exactly() -> TestResult {
    let Some(archive) = cifar10_archive_arg() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let straight = tmp.path().join("straight").display().to_string();
    let stopped = tmp.path().join("stopped");
    let stopped_str = stopped.display().to_string();
    nin_ok(&train_args(&archive, &straight))?;

    let mut child = Command::new(env!("CARGO_BIN_EXE_nin"))
        .args(train_args(&archive, &stopped_str))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Signal once training is under way (its metrics files exist from the first checkpoint).
    let deadline = Instant::now() + Duration::from_secs(300);
    while !stopped.join("metrics.csv").exists() {
        assert!(child.try_wait()?.is_none(), "the run ended before SIGTERM");
        assert!(
            Instant::now() < deadline,
            "the run did not start within 300 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill(2) with a pid this test spawned and has not yet reaped.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    // A run that finished before the signal landed exits 0; a stopped one 130, resumable.
    match out.status.code() {
        Some(130) => assert!(err.contains("nin train --resume --out"), "{err}"),
        Some(0) => eprintln!("note: the run finished before SIGTERM arrived"),
        other => panic!("exit {other:?}: {err}"),
    }
    nin_ok(&[
        "train",
        "--resume",
        "--out",
        &stopped_str,
        "--threads",
        "1",
        "--quiet",
    ])?;
    let (a, b) = (weights(straight.as_ref()), weights(&stopped));
    for (name, ta) in &a {
        let diff = (ta - &b[name])?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "tensor {name} differs after SIGTERM and resume");
    }
    Ok(())
}

#[test]
fn eval_split_val_reads_the_runs_own_holdout() -> TestResult {
    let Some(archive) = cifar10_archive_arg() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("run").display().to_string();
    let mut args = short_run(&archive, &out);
    args.extend(["--val", "300"]);
    nin_ok(&args)?;
    let best = format!("{out}/best");
    for model in [&out, &best] {
        let report = nin_ok(&[
            "eval", "--model", model, "--data", &archive, "--split", "val", "--json",
        ])?;
        let report: serde_json::Value = serde_json::from_slice(&report.stdout)?;
        assert_eq!(report["images"], 300, "{model}");
        assert_eq!(report["split"], "val");
    }
    let other_seed = nin(&[
        "eval", "--model", &out, "--data", &archive, "--split", "val", "--seed", "0",
    ])?;
    assert_eq!(other_seed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other_seed.stderr).contains("--seed 7"));

    let no_val = tmp.path().join("no-val").display().to_string();
    nin_ok(&short_run(&archive, &no_val))?;
    let out = nin(&[
        "eval", "--model", &no_val, "--data", &archive, "--split", "val",
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("held out no validation images"));
    Ok(())
}
