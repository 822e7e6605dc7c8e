//! `nin export` and `nin import` against PyTorch: an exported repository loads into the family's
//! PyTorch reference module with `strict=True` and gives PyTorch's logits (fixtures written by
//! `crates/cli/testdata/gen_export_fixture.py`), and a `.pth` in the `nn.Sequential` layout of
//! public NIN re-implementations imports and predicts PyTorch's logits
//! (`gen_import_fixture.py`). Torch is needed only to regenerate the fixtures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::train::{nin, nin_ok, nin_ok_in, TestResult};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// The fixed images of the fixture scripts, CHW u8 one after another (their `pixels`).
pub(crate) fn fixed_pixels(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 3 * 32 * 32);
    for i in 0..n {
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    out.push(((i * 37 + c * 91 + y * 13 + x * 7 + (x * y) % 17) % 256) as u8);
                }
            }
        }
    }
    out
}

/// nin-zoo's logits for the fixed images through the model directory `dir`.
pub(crate) fn zoo_logits(dir: &Path, n: usize) -> Result<Tensor, Box<dyn std::error::Error>> {
    let classifier = nin_zoo::Classifier::load(dir, &Device::Cpu)?;
    let inputs = classifier.inputs_from_pixels(&fixed_pixels(n))?;
    let logits = classifier.classify(&inputs)?.logits;
    Ok(Tensor::new(logits, &Device::Cpu)?)
}

fn golden_logits(value: &serde_json::Value) -> Result<Tensor, Box<dyn std::error::Error>> {
    let rows: Vec<Vec<f32>> = serde_json::from_value(value.clone())?;
    Ok(Tensor::new(rows, &Device::Cpu)?)
}

/// The small models the export fixtures hold: name, preset, model_args.
fn export_cases() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    let widths = serde_json::json!({"mlpconv1": [16, 12, 8], "mlpconv2": [16, 16, 16], "mlpconv3": [16, 16]});
    vec![
        ("nin_small", "nin", widths.clone()),
        ("nin_bn_small", "nin_bn", widths),
        (
            "dcnin_small",
            "dcnin_s",
            serde_json::json!({"growth": 4, "units": [1, 1, 1]}),
        ),
    ]
}

/// A model directory of preset `model` whose every tensor is set from a fixed formula (not the
/// random init, so the fixture does not depend on the generator), batch-norm statistics
/// included: running variances positive, the rest of every sign.
fn formula_model(
    dir: &Path,
    model: &str,
    args: &serde_json::Value,
) -> Result<(), Box<dyn std::error::Error>> {
    let created = nin_zoo::create_model(model, 10, Some(args), 0, &Device::Cpu)?;
    for (k, (name, var)) in nin_layers::weights::named_vars(&created.varmap)
        .into_iter()
        .enumerate()
    {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
        let values: Vec<f32> = (0..n)
            .map(|j| {
                let s = ((j as f64) * 1.7 + (k as f64) * 0.3).sin();
                let v = if name.ends_with("running_var") {
                    1.0 + 0.5 * s.abs()
                } else if dims.len() >= 2 {
                    1.5 * s / (fan_in as f64).sqrt()
                } else if name.contains("bn") && name.ends_with("weight") {
                    1.0 + 0.3 * s
                } else {
                    0.1 * s
                };
                v as f32
            })
            .collect();
        var.set(&Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?)?;
    }
    let config = nin_format::ModelDirConfig {
        model: model.to_string(),
        num_classes: 10,
        model_args: created.args.clone(),
        pretrained_cfg: nin_format::PretrainedCfg {
            input_size: [3, 32, 32],
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
            whitening: None,
            extra: Default::default(),
        },
        label_names: Vec::new(),
    };
    nin_train::save_model_dir(dir, &config, &created.varmap, &BTreeMap::new())?;
    Ok(())
}

fn tensors(dir: &Path) -> BTreeMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .expect("model.safetensors loads")
        .into_iter()
        .collect()
}

#[test]
fn exported_repositories_are_what_pytorch_loaded_strictly_and_predict_its_logits() -> TestResult {
    let fixtures = testdata().join("export");
    let bless = std::env::var_os("NIN_BLESS_EXPORT").is_some();
    let golden: Option<serde_json::Value> = std::fs::read(testdata().join("export_golden.json"))
        .ok()
        .map(|b| serde_json::from_slice(&b))
        .transpose()?;
    for (name, model, args) in export_cases() {
        let tmp = tempfile::tempdir()?;
        let src = tmp.path().join("model");
        formula_model(&src, model, &args)?;
        let repo = tmp.path().join("repo");
        let repo_str = repo.display().to_string();
        nin_ok(&["export", &src.display().to_string(), "--out", &repo_str])?;
        let committed = fixtures.join(name);
        if bless {
            std::fs::create_dir_all(&committed)?;
            for file in ["config.json", "model.safetensors", "README.md"] {
                std::fs::copy(repo.join(file), committed.join(file))?;
            }
            continue;
        }
        // The same tensors, names and values as the repository PyTorch loaded strictly.
        let (got, want) = (tensors(&repo), tensors(&committed));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name}: tensor names"
        );
        for (k, t) in &got {
            let diff = (t - &want[k])?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{name}: tensor {k}");
        }
        // The header is sorted and the export deterministic: the very same bytes.
        assert_eq!(
            std::fs::read(repo.join("model.safetensors"))?,
            std::fs::read(committed.join("model.safetensors"))?,
            "{name}: model.safetensors bytes"
        );
        let meta =
            nin_layers::weights::read_safetensors(&repo.join("model.safetensors"), &Device::Cpu)?
                .metadata;
        assert_eq!(meta["format"], "pt");
        assert_eq!(meta["arch"], model);
        assert_eq!(meta["num_classes"], "10");

        // nin-zoo's classifier on the committed repository gives PyTorch's logits.
        let golden = golden
            .as_ref()
            .ok_or("testdata/export_golden.json is missing")?;
        let want = golden_logits(&golden["models"][name]["logits"])?;
        let n = want.dim(0)?;
        let got = zoo_logits(&committed, n)?;
        let err = nin_testkit::rel_err(&got, &want);
        eprintln!("{name}: logits relative error against PyTorch {err:.2e}");
        assert!(err < 1e-4, "{name}: logits differ from PyTorch's by {err}");
    }
    Ok(())
}

#[test]
fn export_writes_a_model_card_and_refuses_to_overwrite() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("model");
    let (_, model, args) = export_cases().remove(0);
    formula_model(&src, model, &args)?;
    let src_str = src.display().to_string();
    let repo = tmp.path().join("repo");
    let repo_str = repo.display().to_string();
    nin_ok(&[
        "export",
        &src_str,
        "--out",
        &repo_str,
        "--repo-id",
        "alice/nin-small",
    ])?;
    let card = std::fs::read_to_string(repo.join("README.md"))?;
    assert_card_says(
        &card,
        &[
            "library_name: nin-zoo",
            "license: apache-2.0",
            "datasets:\n- uoft-cs/cifar10",
            "nin predict --model hf-hub:alice/nin-small",
            "load_state_dict(load_file(\"model.safetensors\"), strict=True)",
            "huggingface-cli upload alice/nin-small",
            "models/nin/testdata/gen_nin_golden.py",
        ],
    );
    // A non-empty --out is refused, then replaced with --force; no temporary folder is left.
    let out = nin(&["export", &src_str, "--out", &repo_str])?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    nin_ok(&["export", &src_str, "--out", &repo_str, "--force"])?;
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    Ok(())
}

fn import_args<'a>(pth: &'a str, out: &'a str, model_args: &'a str) -> Vec<&'a str> {
    vec![
        "import",
        "--pth",
        pth,
        "--model",
        "nin",
        "--model-args",
        model_args,
        "--map-preset",
        "sequential_nin",
        "--out",
        out,
    ]
}

#[test]
fn a_sequential_pytorch_nin_imports_and_predicts_pytorchs_logits() -> TestResult {
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(testdata().join("import_golden.json"))?)?;
    let model_args = golden["model_args"].to_string();
    let want = golden_logits(&golden["logits"])?;
    let tmp = tempfile::tempdir()?;
    let mut imported = Vec::new();
    for file in ["seq_nin_plain.pth", "seq_nin_nested.pth"] {
        let pth = testdata().join(file).display().to_string();
        let out = tmp.path().join(file);
        let out_str = out.display().to_string();
        let run = nin_ok(&import_args(&pth, &out_str, &model_args))?;
        let log = String::from_utf8_lossy(&run.stderr);
        assert!(log.contains("kept: 18 tensors"), "{log}");
        assert!(
            log.contains("missing (needed, not in the file): 0"),
            "{log}"
        );
        let got = zoo_logits(&out, want.dim(0)?)?;
        let err = nin_testkit::rel_err(&got, &want);
        eprintln!("{file}: logits relative error against PyTorch {err:.2e}");
        assert!(err < 1e-4, "{file}: logits differ from PyTorch's by {err}");
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json"))?)?;
        assert_eq!(config["label_names"][0], "airplane");
        imported.push(tensors(&out));
    }
    // The nested checkpoint (under `state_dict`, names prefixed `module.`) holds the same tensors.
    let nested_log = nin_ok(&[
        "import",
        "--pth",
        &testdata().join("seq_nin_nested.pth").display().to_string(),
        "--model",
        "nin",
        "--model-args",
        &model_args,
        "--map-preset",
        "sequential_nin",
        "--dry-run",
    ])?;
    assert!(String::from_utf8_lossy(&nested_log.stderr).contains("under `state_dict`"));
    for (k, t) in &imported[0] {
        let diff = (t - &imported[1][k])?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{k}");
    }
    Ok(())
}

#[test]
fn import_lists_and_refuses_what_does_not_fit() -> TestResult {
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(testdata().join("import_golden.json"))?)?;
    let model_args = golden["model_args"].to_string();
    let pth = testdata().join("seq_nin_plain.pth").display().to_string();
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("m");
    let out_str = out.display().to_string();

    // Without the mapping nothing matches: the dry run lists it and writes nothing.
    let run = nin_ok(&[
        "import",
        "--pth",
        &pth,
        "--model",
        "nin",
        "--model-args",
        &model_args,
        "--dry-run",
        "--out",
        &out_str,
    ])?;
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(
        log.contains("unmatched (in the file, not used): 18"),
        "{log}"
    );
    assert!(log.contains("  features.0.weight"), "{log}");
    assert!(
        log.contains("missing (needed, not in the file): 18"),
        "{log}"
    );
    assert!(log.contains("  mlpconv1.conv.weight"), "{log}");
    assert!(!out.exists(), "a dry run writes nothing");

    // A real import refuses, naming a missing tensor.
    let run = nin(&[
        "import",
        "--pth",
        &pth,
        "--model",
        "nin",
        "--model-args",
        &model_args,
        "--out",
        &out_str,
    ])?;
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("18 missing") && err.contains("`mlpconv1.conv.bias` is missing"),
        "{err}"
    );
    assert!(!out.exists());

    // The preset's full widths: every tensor mis-shaped but the first conv's bias … named.
    let run = nin(&import_args(&pth, &out_str, "{}"))?;
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("mis-shaped") && err.contains("the model needs [192, 3, 5, 5]"),
        "{err}"
    );
    assert!(!out.exists());
    Ok(())
}

/// The words of a shell command line, with `'…'` quoting (what the card's commands use).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[test]
fn an_exported_run_card_states_time_and_machine_and_its_command_trains_the_same_weights(
) -> TestResult {
    let Some(archive) = crate::train::cifar10_archive_arg() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    let run_str = run.display().to_string();
    // A user's own recipe file: the card must point at the exported copy, not at a name.
    let mut recipe = nin_format::Recipe::cpu_fast();
    recipe.name = "mine".into();
    recipe.label_smoothing = 0.05;
    let recipe_path = tmp.path().join("mine.json");
    std::fs::write(&recipe_path, serde_json::to_vec(&recipe)?)?;
    let recipe_str = recipe_path.display().to_string();
    let mut args = crate::train::train_args(&archive, &run_str);
    args.extend(["--recipe", &recipe_str]);
    nin_ok(&args)?;

    let repo = tmp.path().join("repo");
    nin_ok(&["export", &run_str, "--out", &repo.display().to_string()])?;
    let card = std::fs::read_to_string(repo.join("README.md"))?;
    assert_card_says(
        &card,
        &[
        "Measured by the training run after epoch 2 on the cifar10 test split, first 64 images, ",
        "into the run (training and evaluation), 1 thread on ",
        "--recipe recipe.json --epochs 2 --batch-size 16",
        "--seed 7 --threads 1",
        "from this folder: `nin eval --model . --limit-eval 64`",
        ],
    );
    let exported: nin_format::Recipe =
        serde_json::from_slice(&std::fs::read(repo.join("recipe.json"))?)?;
    // As the run trained it: the file with train_args' --epochs and --batch-size applied.
    recipe.epochs = 2;
    recipe.batch_size = 16;
    assert_eq!(exported, recipe);

    // The card's evaluation command, run from the exported folder, gives the card's figure (to
    // one image of 64: the run evaluated in training-time batches, the command in its own).
    let out = nin_ok_in(
        &repo,
        &[
            "eval",
            "--model",
            ".",
            "--limit-eval",
            "64",
            "--json",
            "--data",
            &archive,
        ],
    )?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let top1 = report["top1"].as_f64().ok_or("eval --json has no top1")?;
    let history = nin_format::read_metrics(&run)?;
    let best = history
        .iter()
        .filter_map(|r| r.eval_top1)
        .fold(f64::MIN, f64::max);
    assert!(
        card.contains(&format!("| {best:.2} % |")) && (top1 - best).abs() <= 100.0 / 64.0,
        "the card's {best:.2} % against nin eval's {top1:.2} %:\n{card}"
    );

    // The card's command, run from the exported folder, trains the very same weights.
    let line = card
        .lines()
        .find(|l| l.starts_with("nin train "))
        .ok_or("the card has no `nin train` command")?;
    let again = tmp.path().join("again");
    let mut words = shell_words(line);
    words.remove(0);
    words.extend([
        "--data".to_string(),
        archive.clone(),
        "--out".to_string(),
        again.display().to_string(),
        "--quiet".to_string(),
    ]);
    nin_ok_in(&repo, &words)?;
    let (first, second) = (tensors(&run.join("best")), tensors(&again.join("best")));
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    for (k, t) in &first {
        let diff = (t - &second[k])?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert_eq!(
            diff, 0.0,
            "tensor {k} differs between the run and the card's command"
        );
    }
    Ok(())
}

/// Fails naming the first of `phrases` the model card does not contain, with the card.
fn assert_card_says(card: &str, phrases: &[&str]) {
    for phrase in phrases {
        assert!(card.contains(phrase), "the card lacks {phrase:?}:\n{card}");
    }
}
