//! `nin train`, `eval`, `predict` and `list` run as a user would, on a slice of the real archive:
//! a run killed with SIGKILL mid-epoch and resumed ends with exactly the weights of an
//! uninterrupted run, and its model directory serves `eval` and `predict`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) fn nin(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_nin"))
        .args(args)
        .env_remove("NIN_DATA_DIR")
        .output()
}

/// Runs `nin` in the folder `dir` (as a user runs the commands a model card gives, which name
/// its files relative to it) and fails the test, with its stderr, unless it succeeds.
pub(crate) fn nin_ok_in<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    args: &[S],
) -> std::io::Result<Output> {
    let out = Command::new(env!("CARGO_BIN_EXE_nin"))
        .args(args)
        .current_dir(dir)
        .env_remove("NIN_DATA_DIR")
        .output()?;
    assert!(
        out.status.success(),
        "nin {} (in {}): {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Runs `nin` and fails the test, with its stderr, unless it succeeds.
pub(crate) fn nin_ok(args: &[&str]) -> std::io::Result<Output> {
    let out = nin(args)?;
    assert!(
        out.status.success(),
        "nin {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// The real CIFAR-10 archive in `../shared/data`; `None` (the test skips) when it is absent on a
/// developer's machine, a failure under CI, which always has it.
pub(crate) fn cifar10_archive() -> Option<PathBuf> {
    nin_testkit::shared_data_file("cifar-10-binary.tar.gz")
}

/// [`cifar10_archive`] as a `--data` argument.
pub(crate) fn cifar10_archive_arg() -> Option<String> {
    cifar10_archive().map(|p| p.display().to_string())
}

pub(crate) const SMALL_NIN: &str =
    r#"{"mlpconv1":[32,32,32],"mlpconv2":[32,32,32],"mlpconv3":[32,32]}"#;

pub(crate) fn train_args<'a>(archive: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        archive,
        "--out",
        out,
        "--model-args",
        SMALL_NIN,
        "--limit-train",
        "192",
        "--limit-eval",
        "64",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "3",
        "--seed",
        "7",
        "--threads",
        "1",
        "--quiet",
    ]
}

pub(crate) fn weights(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .expect("model.safetensors loads")
}

fn global_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("trainer_state.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("global_step")?.as_u64()
}

#[test]
fn sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights() -> TestResult {
    let Some(archive) = cifar10_archive_arg() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let straight = tmp.path().join("straight");
    let killed = tmp.path().join("killed");

    nin_ok(&train_args(&archive, &straight.display().to_string()))?;

    // 12 steps per epoch, 24 in all, a checkpoint every 3: kill once a mid-epoch checkpoint
    // (step 3, 6, 9, 15, 18 or 21) exists.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nin"))
        .args(train_args(&archive, &killed.display().to_string()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(step) = global_step(&killed) {
            if step % 12 != 0 {
                break;
            }
        }
        assert!(
            child.try_wait()?.is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "no mid-epoch checkpoint within 300 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?; // SIGKILL on Unix: no handler runs.
    child.wait()?;
    let at_kill = global_step(&killed).unwrap_or(0);
    assert!(at_kill < 24, "the run had already finished");

    let killed_str = killed.display().to_string();
    let out = nin_ok(&[
        "train",
        "--resume",
        "--out",
        &killed_str,
        "--threads",
        "1",
        "--quiet",
    ])?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));

    let a = weights(&straight);
    let b = weights(&killed);
    assert_eq!(a.len(), b.len());
    for (name, ta) in &a {
        let diff = (ta - &b[name])?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(
            diff, 0.0,
            "tensor {name} differs after resume (killed at step {at_kill})"
        );
    }
    let metrics = std::fs::read_to_string(killed.join("metrics.csv"))?;
    assert_eq!(metrics.lines().count(), 3, "header + 2 epochs:\n{metrics}");
    assert!(
        metrics.starts_with("epoch,train_loss,train_top1,eval_loss,eval_top1,eval_top5,lr,seconds")
    );

    // The run folder is a model directory: eval and predict read it.
    let out = nin_ok(&[
        "eval",
        "--model",
        &killed_str,
        "--data",
        &archive,
        "--limit-eval",
        "64",
        "--json",
    ])?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["images"], 64);
    assert_eq!(report["confusion"].as_array().map(Vec::len), Some(10));

    let image = tmp.path().join("red.png");
    image::RgbImage::from_pixel(50, 40, image::Rgb([200, 30, 30])).save(&image)?;
    let image_str = image.display().to_string();
    let out = nin_ok(&[
        "predict",
        "--model",
        &killed_str,
        &image_str,
        "--top-k",
        "2",
        "--json",
    ])?;
    let preds: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let probs: Vec<f64> = serde_json::from_value(preds[0]["probabilities"].clone())?;
    assert_eq!(probs.len(), 10);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    assert_eq!(preds[0]["top_k"].as_array().map(Vec::len), Some(2));
    Ok(())
}

#[test]
fn wrong_inputs_fail_with_messages_that_name_them() -> TestResult {
    let out = nin(&["train", "--model", "nni", "--data", "/nonexistent"])?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown model `nni`") && err.contains("nin_bn"),
        "{err}"
    );

    let out = nin(&[
        "train",
        "--model-args",
        "{not json",
        "--data",
        "/nonexistent",
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model-args"));

    let out = nin(&["eval", "--model", "/nonexistent/run"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/run"));

    let tmp = tempfile::tempdir()?;
    let not_image = tmp.path().join("notes.png");
    std::fs::write(&not_image, b"not a png")?;
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir)?;
    std::fs::write(
        dir.join("config.json"),
        r#"{"model":"nin","num_classes":10,"model_args":null,
            "pretrained_cfg":{"input_size":[3,32,32],"mean":[0.5,0.5,0.5],"std":[0.25,0.25,0.25]},
            "label_names":[]}"#,
    )?;
    // No weights yet: the error names the missing file.
    let out = nin(&[
        "predict",
        "--model",
        &dir.display().to_string(),
        &not_image.display().to_string(),
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model.safetensors"));
    Ok(())
}

#[test]
fn list_shows_every_preset_with_its_size() -> TestResult {
    let out = nin(&["list", "--json"])?;
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let nin_row = rows
        .iter()
        .find(|r| r["name"] == "nin")
        .expect("nin is listed");
    assert_eq!(nin_row["params_cifar10"], 966_986);
    assert_eq!(nin_row["params_cifar100"], 984_356);
    assert_eq!(nin_row["macs_per_image_cifar10"], 222_486_528u64);
    // Each preset's full configuration, as `--model-args` and bench_nin.py take it.
    for row in &rows {
        assert_eq!(row["config_cifar10"]["num_classes"], 10, "{}", row["name"]);
    }
    assert_eq!(
        nin_row["config_cifar10"]["mlpconv1"],
        serde_json::json!([192, 160, 96])
    );
    Ok(())
}

#[test]
fn a_whitened_run_carries_its_transform_to_eval_and_predict() -> TestResult {
    let Some(archive) = cifar10_archive_arg() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    let run_str = run.display().to_string();
    // The paper recipe: GCN + ZCA fitted on the training slice.
    nin_ok(&[
        "train",
        "--recipe",
        "paper",
        "--data",
        &archive,
        "--out",
        &run_str,
        "--model-args",
        SMALL_NIN,
        "--limit-train",
        "96",
        "--limit-eval",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--quiet",
    ])?;
    let best = run.join("best");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(best.join("config.json"))?)?;
    assert_eq!(
        config["pretrained_cfg"]["whitening"],
        "whitening.safetensors"
    );
    assert_eq!(
        std::fs::read(run.join("whitening.safetensors"))?,
        std::fs::read(best.join("whitening.safetensors"))?,
        "best/ carries the run's transform"
    );

    // Evaluating the best model directory whitens as training did: the same top-1 on the same
    // 64 test images.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("trainer_state.json"))?)?;
    let best_str = best.display().to_string();
    let eval_args = [
        "eval",
        "--model",
        &best_str,
        "--data",
        &archive,
        "--limit-eval",
        "64",
        "--json",
    ];
    let out = nin_ok(&eval_args)?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let (got, want) = (report["top1"].as_f64(), state["best_eval_top1"].as_f64());
    assert!(
        got.zip(want).is_some_and(|(g, w)| (g - w).abs() < 1e-9),
        "eval {got:?}, training {want:?}"
    );

    let image = tmp.path().join("grey.png");
    image::RgbImage::from_pixel(32, 32, image::Rgb([90, 120, 150])).save(&image)?;
    nin_ok(&[
        "predict",
        "--model",
        &best_str,
        &image.display().to_string(),
    ])?;

    // Without its transform the directory is refused, naming the file.
    std::fs::remove_file(best.join("whitening.safetensors"))?;
    let out = nin(&eval_args)?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("whitening.safetensors"), "{err}");
    Ok(())
}

#[test]
fn a_whitened_stem_recipe_starts_the_first_layer_from_the_patches() -> TestResult {
    let Some(archive) = cifar10_archive_arg() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let mut recipe = serde_json::to_value(nin_format::Recipe::cpu_fast())?;
    recipe["stem_init"] =
        serde_json::json!({"kind": "whitened_patches", "images": 64, "eps": 1e-3});
    let recipe_path = tmp.path().join("recipe.json");
    std::fs::write(&recipe_path, serde_json::to_vec(&recipe)?)?;
    let recipe_str = recipe_path.display().to_string();
    let run = tmp.path().join("run");
    let run_str = run.display().to_string();
    let mut args = train_args(&archive, &run_str);
    // A rate of 0 keeps the initial weights to the end, where the test reads them.
    args.extend(["--recipe", &recipe_str, "--lr", "0"]);
    let out = nin_ok(&args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stem: 32 of the 32 filters of mlpconv1.conv.weight (5×5) whiten the patches of 64 training images"),
        "{stderr}"
    );
    // Pairs of opposite filters, none zero.
    let initial = weights(&run);
    let stem = initial["mlpconv1.conv.weight"]
        .flatten_from(1)?
        .to_vec2::<f32>()?;
    for pair in stem.chunks(2) {
        assert!(pair[0].iter().any(|v| *v != 0.0));
        assert!(pair[0].iter().zip(&pair[1]).all(|(a, b)| *a == -*b));
    }

    // GCN + ZCA inputs are whitened already: the combination is refused, naming the field.
    recipe["input"] = serde_json::json!({"kind": "gcn_zca", "gcn_scale": 55.0, "regularizer": 0.1});
    std::fs::write(&recipe_path, serde_json::to_vec(&recipe)?)?;
    let other = tmp.path().join("zca").display().to_string();
    let mut args = train_args(&archive, &other);
    args.extend(["--recipe", &recipe_str]);
    let out = nin(&args)?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stem_init whitened_patches needs inputs normalised by mean/std"),
        "{stderr}"
    );
    Ok(())
}
