//! `nin explain` and `nin eval --plot` as users run them: the PNGs they write decode at the size
//! the layout promises, and a bad label, a missing image and an unreadable file each get an
//! error naming the culprit.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;

use crate::train::{cifar10_archive, nin, nin_ok, TestResult};

use nin_format::CIFAR10_LABELS as LABELS;

/// A small NIN model directory with CIFAR-10's label names.
fn small_model(dir: &Path) -> TestResult {
    let args =
        serde_json::json!({"mlpconv1": [8, 8, 8], "mlpconv2": [8, 8, 8], "mlpconv3": [8, 8]});
    let created = nin_zoo::create_model("nin", 10, Some(&args), 1, &Device::Cpu)?;
    std::fs::create_dir_all(dir)?;
    nin_layers::weights::save_weights(
        &dir.join("model.safetensors"),
        &created.varmap,
        &BTreeMap::new(),
    )?;
    let config = serde_json::json!({
        "model": "nin", "num_classes": 10, "model_args": created.args, "label_names": LABELS,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    Ok(())
}

/// A `w × h` gradient image saved as `path` (PNG or JPEG by its extension).
fn picture(path: &Path, w: u32, h: u32) -> TestResult {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]))
        .save(path)?;
    Ok(())
}

fn dims(path: &Path) -> Result<(u32, u32), Box<dyn std::error::Error>> {
    let img = image::open(path)?;
    Ok((img.width(), img.height()))
}

#[test]
fn explain_writes_one_png_per_image_with_a_panel_per_class() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let model = tmp.path().join("model");
    small_model(&model)?;
    let (a, b) = (tmp.path().join("wide.png"), tmp.path().join("photo.jpg"));
    picture(&a, 50, 20)?;
    picture(&b, 33, 47)?;
    let out = tmp.path().join("out");
    let s = |p: &Path| p.display().to_string();
    let run = nin_ok(&[
        "explain",
        "--model",
        &s(&model),
        &s(&a),
        &s(&b),
        "--out",
        &s(&out),
        "--top-k",
        "2",
        "--size",
        "64",
    ])?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    // Margins of 10, a 26-pixel title row, the original and 2 panels of 64, a 16-pixel colour
    // bar; at least 420 wide (for the colour bar's labels).
    let expected = (420, 10 + 26 + 64 + 10 + 16 + 10);
    assert_eq!(dims(&out.join("wide.png"))?, expected);
    assert_eq!(dims(&out.join("photo.png"))?, expected);
    // One chosen class by label, any case: the original and one panel.
    let one = tmp.path().join("one");
    let run = nin_ok(&[
        "explain",
        "--model",
        &s(&model),
        &s(&a),
        "--out",
        &s(&one),
        "--class",
        "Cat",
        "--size",
        "64",
    ])?;
    assert!(String::from_utf8_lossy(&run.stdout).contains(": cat "));
    assert_eq!(dims(&one.join("wide.png"))?, expected);
    // Wider panels set the width: the original and 3 panels of 128.
    let wide = tmp.path().join("wide");
    nin_ok(&[
        "explain",
        "--model",
        &s(&model),
        &s(&a),
        "--out",
        &s(&wide),
        "--size",
        "128",
    ])?;
    assert_eq!(
        dims(&wide.join("wide.png"))?,
        (10 + 4 * (128 + 10), 10 + 26 + 128 + 10 + 16 + 10)
    );
    Ok(())
}

#[test]
fn explain_names_a_bad_label_a_missing_image_and_an_unreadable_file() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let model = tmp.path().join("model");
    small_model(&model)?;
    let good = tmp.path().join("good.png");
    picture(&good, 32, 32)?;
    let unreadable = tmp.path().join("notes.png");
    std::fs::write(&unreadable, "not a picture")?;
    let missing = tmp.path().join("missing.png");
    let s = |p: &Path| p.display().to_string();
    let out = s(&tmp.path().join("out"));
    let cases: [(Vec<String>, Vec<String>); 3] = [
        (
            vec![s(&good), "--class".into(), "dgo".into()],
            vec!["--class dgo".into(), "airplane, automobile".into()],
        ),
        (vec![s(&missing)], vec![s(&missing), "cannot open".into()]),
        (
            vec![s(&unreadable)],
            vec![s(&unreadable), "not a readable PNG or JPEG image".into()],
        ),
    ];
    for (extra, wanted) in cases {
        let model_str = s(&model);
        let mut args = vec!["explain", "--model", &model_str, "--out", &out];
        args.extend(extra.iter().map(String::as_str));
        let run = nin(&args)?;
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(
            run.status.code(),
            Some(2),
            "nin {}: {stderr}",
            args.join(" ")
        );
        for w in &wanted {
            assert!(
                stderr.contains(w.as_str()),
                "nin {}: wanted {w:?} in {stderr}",
                args.join(" ")
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Nothing was written for the failed runs.
    assert!(!tmp.path().join("out").join("good.png").exists());
    // An output that would replace its input is refused, and the input kept.
    let before = std::fs::read(&good)?;
    let run = nin(&[
        "explain",
        "--model",
        &s(&model),
        "--out",
        &s(tmp.path()),
        &s(&good),
    ])?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("would overwrite the input"), "{stderr}");
    assert_eq!(std::fs::read(&good)?, before);
    Ok(())
}

#[test]
fn a_grid_sheet_and_the_eval_charts_decode_at_their_layout_sizes() -> TestResult {
    let Some(archive) = cifar10_archive() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let model = tmp.path().join("model");
    small_model(&model)?;
    let s = |p: &Path| p.display().to_string();
    let sheet = tmp.path().join("sheets").join("grid.png");
    let run = nin_ok(&[
        "explain",
        "--model",
        &s(&model),
        "--dataset",
        "cifar10",
        "--data",
        &s(&archive),
        "--grid",
        "3",
        "--size",
        "32",
        "--out",
        &s(&sheet),
    ])?;
    assert!(String::from_utf8_lossy(&run.stdout).contains("9 cifar10 test images"));
    // At least 520 wide; a 58-pixel header, 3 rows of cells (32 + 4 + 2 × 16) with margins of
    // 10, and a 30-pixel footer.
    assert_eq!(dims(&sheet)?, (520, 58 + 3 * (32 + 4 + 32 + 10) + 30));
    let plots = tmp.path().join("plots");
    nin_ok(&[
        "eval",
        "--model",
        &s(&model),
        "--data",
        &s(&archive),
        "--limit-eval",
        "20",
        "--plot",
        &s(&plots),
        "--json",
    ])?;
    // 10 classes: 64-pixel cells; 10 bars of 28 pixels.
    assert_eq!(dims(&plots.join("confusion_matrix.png"))?, (910, 794));
    assert_eq!(dims(&plots.join("per_class_accuracy.png"))?, (740, 400));
    Ok(())
}
