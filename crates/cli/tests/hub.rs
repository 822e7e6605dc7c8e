//! MODEL given as `hf-hub:owner/name`, a pretrained tag or a directory, as users type it, against
//! a mock Hub on loopback: `predict` downloads, then works offline with the server stopped; the
//! token is sent and never printed; damaged weights and bare preset names get errors that say
//! what to do; `nin list` takes patterns. HF_HOME is a fresh temporary folder in every test.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use candle_core::Device;
use nin_testkit::mock_hub::{MockHub, MockRepo};

use crate::train::{nin, TestResult};

const REPO: &str = "nin-zoo/tiny";

/// Files of a repository, by name.
type Files = Vec<(&'static str, Vec<u8>)>;

fn tiny_model_files() -> Result<Files, Box<dyn std::error::Error>> {
    let small = serde_json::json!({"mlpconv1": [16, 16, 16], "mlpconv2": [16, 16, 16], "mlpconv3": [16, 10]});
    let created = nin_zoo::create_model("nin", 10, Some(&small), 5, &Device::Cpu)?;
    let tmp = tempfile::tempdir()?;
    let weights = tmp.path().join("model.safetensors");
    nin_layers::weights::save_weights(&weights, &created.varmap, &BTreeMap::new())?;
    let config = serde_json::json!({
        "model": "nin", "num_classes": 10, "model_args": created.args,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "label_names": nin_format::CIFAR10_LABELS,
    });
    Ok(vec![
        ("config.json", serde_json::to_vec_pretty(&config)?),
        ("model.safetensors", std::fs::read(weights)?),
    ])
}

/// `nin ARGS` with the Hub settings of a user: a private HF_HOME, the mock's endpoint, and
/// `extra` variables; nothing else of the Hub's environment leaks in.
fn nin_hub(
    args: &[&str],
    home: &Path,
    endpoint: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nin"));
    cmd.args(args)
        .env_remove("NIN_DATA_DIR")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN_PATH")
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", endpoint);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_image(path: &Path) -> TestResult {
    let img = image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    });
    img.save(path)?;
    Ok(())
}

#[test]
fn predict_downloads_from_the_hub_then_works_offline_with_the_server_stopped() -> TestResult {
    let secret = "hf_CliSecretToken0123456789";
    let tmp = tempfile::tempdir()?;
    let (home, image) = (tmp.path().join("hf"), tmp.path().join("cat.png"));
    write_image(&image)?;
    let hub = MockHub::start(vec![MockRepo::new(REPO, &tiny_model_files()?)]);
    let spec = format!("hf-hub:{REPO}");
    let image = image.display().to_string();
    let args = [
        "predict",
        "--model",
        &spec,
        &image,
        "--json",
        "--threads",
        "1",
    ];
    let with_flag: Vec<&str> = args.iter().copied().chain(["--offline"]).collect();
    let first = nin_hub(&args, &home, &hub.url, &[("HF_TOKEN", secret)])?;
    assert!(first.status.success(), "{}", text(&first));
    assert!(!text(&first).contains(secret), "{}", text(&first));
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("downloading model.safetensors"),
        "{}",
        text(&first)
    );
    assert!(hub
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some(&*format!("Bearer {secret}"))));
    let url = hub.url.clone();
    hub.stop();

    let offline = nin_hub(
        &args,
        &home,
        &url,
        &[("HF_HUB_OFFLINE", "1"), ("HF_TOKEN", secret)],
    )?;
    assert!(offline.status.success(), "{}", text(&offline));
    assert_eq!(
        offline.stdout, first.stdout,
        "the same model, from the cache"
    );
    assert!(!text(&offline).contains("downloading"));
    let flag = nin_hub(&with_flag, &home, &url, &[])?;
    assert_eq!(flag.stdout, first.stdout, "{}", text(&flag));

    // Offline with an empty cache: exit 2, naming the repository and what is missing.
    let empty = tmp.path().join("empty");
    let out = nin_hub(&with_flag, &empty, &url, &[])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("hf-hub:{REPO}@main"))
            && err.contains("offline")
            && err.contains("cache"),
        "{err}"
    );
    Ok(())
}

#[test]
fn weights_that_are_not_safetensors_name_the_repository_and_the_file() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let image = tmp.path().join("cat.png");
    write_image(&image)?;
    let mut files = tiny_model_files()?;
    files[1].1 = b"this is not a safetensors file".to_vec();
    let hub = MockHub::start(vec![MockRepo::new(REPO, &files)]);
    let spec = format!("hf-hub:{REPO}");
    let out = nin_hub(
        &["predict", "--model", &spec, &image.display().to_string()],
        &tmp.path().join("hf"),
        &hub.url,
        &[],
    )?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("hf-hub:{REPO}@")) && err.contains("model.safetensors"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_bare_preset_name_points_to_the_pretrained_tags() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let image = tmp.path().join("cat.png");
    write_image(&image)?;
    let out = nin(&["predict", "--model", "nin", &image.display().to_string()])?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model `nin`: is an architecture") && err.contains("nin list --pretrained"),
        "{err}"
    );
    Ok(())
}

#[test]
fn list_takes_patterns_and_shows_the_pretrained_weights() -> TestResult {
    let out = nin(&["list", "drnin*"])?;
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    let models: Vec<&str> = shown
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(models, ["drnin_l3", "drnin_l4", "drnin_l5"], "{shown}");
    assert!(shown.contains("pretrained"), "{shown}");

    let out = nin(&["list", "nin?bn", "cic*", "--json"])?;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["nin_bn", "cic_1d", "cic_3d"]);
    assert!(rows.iter().all(|r| r["pretrained"].is_array()));

    let out = nin(&["list", "--pretrained", "--json"])?;
    assert!(out.status.success(), "{}", text(&out));
    let tags: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    for t in &tags {
        let name = t["name"].as_str().ok_or("tag without a name")?;
        assert!(
            name.starts_with(&format!("{}.", t["model"].as_str().unwrap_or("?"))),
            "{t}"
        );
        assert!(
            t["top1"].is_number() && t["dataset"].is_string() && t["sources"].is_array(),
            "{t}"
        );
    }

    let out = nin(&["list", "resnet*"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no model or pretrained tag matches `resnet*`"));
    Ok(())
}
