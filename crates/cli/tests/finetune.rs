//! `nin train --init-from`: a tiny CIFAR-10 model fine-tuned on the CIFAR-100 sample keeps every
//! tensor but its class layer, which is re-initialised; the run records where it started; a
//! source that shares nothing with the model is refused; `--resume` refuses another source.

use std::path::Path;

use candle_core::Device;

use crate::train::{cifar10_archive, nin, nin_ok, weights, TestResult};

const TINY: &str = r#"{"mlpconv1":[16,16,16],"mlpconv2":[16,16,16],"mlpconv3":[16,16]}"#;

fn train_tiny(archive: &str, out: &str, extra: &[&str]) -> std::io::Result<std::process::Output> {
    let mut args = vec![
        "train",
        "--data",
        archive,
        "--out",
        out,
        "--limit-train",
        "32",
        "--limit-eval",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--seed",
        "3",
        "--threads",
        "1",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    nin(&args)
}

fn run_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("run.json")).expect("run.json")).expect("json")
}

#[test]
fn fine_tuning_onto_cifar100_keeps_all_but_the_class_layer() -> TestResult {
    let Some(c10) = cifar10_archive() else {
        return Ok(());
    };
    let Some(c100) = nin_testkit::shared_data_file("cifar-100-binary-mini.tar.gz") else {
        return Ok(());
    };
    let (c10, c100) = (c10.display().to_string(), c100.display().to_string());
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("c10");
    let src_str = src.display().to_string();
    // NIN exactly as built (no batch norm): 18 tensors, two of them the class layer.
    let out = train_tiny(
        &c10,
        &src_str,
        &[
            "--model",
            "nin",
            "--recipe",
            "cpu_quick",
            "--model-args",
            TINY,
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let best = src.join("best");
    let best_str = best.display().to_string();

    // Kill the fine-tuning run in its step-0 checkpoint, before the commit: resuming it must
    // initialise from the source again. Stop the resumed run right after its step-0 commit:
    // its weights are the initialisation.
    let ft = tmp.path().join("c100");
    let ft_str = ft.display().to_string();
    let kill_at = |stage: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nin"))
            .args(args)
            .env("NIN_TEST_KILL_AT", stage)
            .env_remove("NIN_DATA_DIR")
            .output()
    };
    let out = kill_at(
        "root-model-written",
        &[
            "train",
            "--init-from",
            &best_str,
            "--dataset",
            "cifar100",
            "--data",
            &c100,
            "--out",
            &ft_str,
            "--limit-train",
            "32",
            "--limit-eval",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--seed",
            "5",
            "--threads",
            "1",
            "--quiet",
        ],
    )?;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("kept 16 of 18 tensors")
            && log.contains(
                "re-initialised 2 (new or reshaped): mlpconv3.mlp.1.bias, mlpconv3.mlp.1.weight"
            ),
        "{log}"
    );
    assert!(
        !ft.join("trainer_state.json").exists(),
        "killed before the first commit"
    );
    let out = kill_at(
        "committed",
        &["train", "--resume", "--out", &ft_str, "--quiet"],
    )?;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("kept 16 of 18 tensors"), "{log}");
    assert!(ft.join("trainer_state.json").exists(), "{log}");
    let source = weights(&best);
    let init = weights(&ft);
    let fresh = nin_zoo::create_model(
        "nin",
        100,
        Some(&serde_json::from_str(TINY)?),
        5,
        &Device::Cpu,
    )?;
    let fresh: std::collections::HashMap<_, _> = nin_layers::weights::named_vars(&fresh.varmap)
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    assert_eq!(init.len(), 18);
    for (name, t) in &init {
        let want = if name.starts_with("mlpconv3.mlp.1.") {
            &fresh[name]
        } else {
            &source[name]
        };
        assert_eq!(t.dims(), want.dims(), "{name}");
        let diff = (t - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{name}: not the expected initial value");
    }
    assert_eq!(init["mlpconv3.mlp.1.weight"].dims()[0], 100);

    // run.json records the origin, with the source's architecture at 100 classes.
    let run = run_json(&ft);
    let origin = &run["init_from"];
    assert_eq!(origin["source"], best_str.as_str());
    assert_eq!(
        origin["origin"],
        best.canonicalize()?.display().to_string().as_str()
    );
    assert_eq!(origin["kept"].as_array().map(Vec::len), Some(16));
    assert_eq!(run["model"]["num_classes"], 100);
    assert_eq!(
        run["model"]["model_args"]["mlpconv1"],
        serde_json::json!([16, 16, 16])
    );

    // --resume refuses another source, and continues with the recorded one.
    let out = nin(&[
        "train",
        "--resume",
        "--out",
        &ft_str,
        "--init-from",
        &src_str,
    ])?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--init-from") && err.contains("the run has"),
        "{err}"
    );
    nin_ok(&[
        "train",
        "--resume",
        "--out",
        &ft_str,
        "--init-from",
        &best_str,
        "--quiet",
    ])?;

    // The exported card records the origin.
    let repo = tmp.path().join("repo");
    nin_ok(&["export", &ft_str, "--out", &repo.display().to_string()])?;
    let card = std::fs::read_to_string(repo.join("README.md"))?;
    assert!(
        card.contains(&format!("Fine-tuned from `{best_str}`")),
        "{card}"
    );
    assert!(card.contains("16 tensors kept, 2 re-initialised"), "{card}");

    // A model sharing no tensor with the source is refused, naming both.
    let other = tmp.path().join("other");
    let out = train_tiny(
        &c100,
        &other.display().to_string(),
        &[
            "--dataset",
            "cifar100",
            "--init-from",
            &best_str,
            "--model",
            "dcnin_s",
            "--model-args",
            r#"{"growth":4,"units":[1,1,1]}"#,
        ],
    )?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("none of its 18 tensors") && err.contains("dcnin_s") && err.contains("(nin"),
        "{err}"
    );
    assert!(
        !other.join("run.json").exists(),
        "a refused run leaves no claim"
    );
    Ok(())
}

#[test]
fn fine_tuning_a_whitened_model_reuses_its_whitening() -> TestResult {
    let Some(c10) = cifar10_archive() else {
        return Ok(());
    };
    let c10 = c10.display().to_string();
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    let out = train_tiny(
        &c10,
        &src.display().to_string(),
        &["--model", "nin", "--model-args", TINY, "--recipe", "paper"],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ft = tmp.path().join("ft");
    let out = train_tiny(
        &c10,
        &ft.display().to_string(),
        &[
            "--init-from",
            &src.join("best").display().to_string(),
            "--recipe",
            "paper",
        ],
    )?;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("reusing the GCN + ZCA whitening of"), "{log}");
    assert!(
        log.contains("kept 18 of 18 tensors, re-initialised none"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(src.join("whitening.safetensors"))?,
        std::fs::read(ft.join("whitening.safetensors"))?,
    );
    assert_eq!(run_json(&ft)["init_from"]["whitening_from_source"], true);

    // The exported repository carries the whitening, and its card says so.
    let repo = tmp.path().join("repo");
    nin_ok(&[
        "export",
        &ft.display().to_string(),
        "--out",
        &repo.display().to_string(),
    ])?;
    assert_eq!(
        std::fs::read(ft.join("whitening.safetensors"))?,
        std::fs::read(repo.join("whitening.safetensors"))?,
    );
    let card = std::fs::read_to_string(repo.join("README.md"))?;
    assert!(
        card.contains("GCN + ZCA whitened") && card.contains("the source's whitening was reused"),
        "{card}"
    );
    Ok(())
}
