//! Class activation maps through the inference pipeline: the GAP identity (each class map's mean
//! is its logit) for every family, and a model whose evidence sits in one corner of the image
//! giving a heat map that peaks in that corner.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use nin_zoo::{cam, create_model, Classifier};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Writes a model directory of preset `model` with `model_args`; `craft` may set its weights.
fn model_dir(
    dir: &Path,
    model: &str,
    args: serde_json::Value,
    craft: impl Fn(&str, &Tensor) -> Option<Tensor>,
) -> TestResult {
    let created = create_model(model, 10, Some(&args), 5, &Device::Cpu)?;
    for (name, var) in nin_layers::weights::named_vars(&created.varmap) {
        if let Some(value) = craft(&name, var.as_tensor()) {
            var.set(&value)?;
        }
    }
    std::fs::create_dir_all(dir)?;
    nin_layers::weights::save_weights(
        &dir.join("model.safetensors"),
        &created.varmap,
        &BTreeMap::new(),
    )?;
    let config = serde_json::json!({
        "model": model, "num_classes": 10, "model_args": created.args,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    Ok(())
}

#[test]
fn every_familys_logits_are_the_means_of_its_class_maps() -> TestResult {
    let small_nin = serde_json::json!({"mlpconv1": [16, 12, 8], "mlpconv2": [16, 16, 16], "mlpconv3": [16, 16]});
    let cases = [
        ("nin", small_nin.clone()),
        ("nin_bn", small_nin),
        (
            "cic_1d",
            serde_json::json!({"mlpconv1": [16, 12, 8], "mlpconv2": [16, 16, 16], "mlpconv3": [16, 16], "window": 4}),
        ),
        (
            "drnin_l3",
            serde_json::json!({"widths": [8, 8, 8], "blocks": [1, 1, 1]}),
        ),
        (
            "dcnin_s",
            serde_json::json!({"growth": 4, "units": [1, 1, 1]}),
        ),
    ];
    let tmp = tempfile::tempdir()?;
    let pixels: Vec<u8> = (0..2 * 3 * 32 * 32).map(|i| (i * 53 % 251) as u8).collect();
    for (model, args) in cases {
        let dir = tmp.path().join(model);
        model_dir(&dir, model, args, |_, _| None)?;
        let classifier = Classifier::load(&dir, &Device::Cpu)?;
        let inputs = classifier.inputs_from_pixels(&pixels)?;
        let maps = classifier.class_maps(&inputs)?;
        let logits = classifier.classify(&inputs)?.logits;
        assert_eq!((maps.images(), maps.classes()), (2, 10), "{model}");
        for (i, row) in logits.iter().enumerate() {
            for (c, &logit) in row.iter().enumerate() {
                let mean = maps.mean(i, c).unwrap();
                assert!(
                    (mean - logit).abs() <= 1e-5 * (1.0 + logit.abs()),
                    "{model}: image {i} class {c}: map mean {mean}, logit {logit}"
                );
            }
        }
        assert!(maps.map(2, 0).is_none() && maps.map(0, 10).is_none());
    }
    Ok(())
}

/// A NIN whose every convolution passes channel 0 (red) straight through its centre tap, so
/// class 0's map is the red channel pooled down to 8×8 and every other class map is zero:
/// evidence for class 0 is exactly where the image is bright.
fn corner_detector(name: &str, value: &Tensor) -> Option<Tensor> {
    let dims = value.dims().to_vec();
    let mut values = vec![0.0f32; value.elem_count()];
    if let [_, _, kh, kw] = dims[..] {
        // weight[0, 0, kh / 2, kw / 2] = 1: output channel 0 is input channel 0.
        values[(kh / 2) * kw + kw / 2] = 1.0;
    }
    assert!(
        dims.len() == 4 || dims.len() == 1,
        "{name}: an unexpected tensor in NIN"
    );
    Some(Tensor::from_vec(values, dims.as_slice(), &Device::Cpu).unwrap())
}

/// An image, black but for a white 8×8 square with its top-left pixel at `(y, x)`, CHW.
fn square_at(y: usize, x: usize) -> Vec<u8> {
    let mut pixels = vec![0u8; 3 * 32 * 32];
    for c in 0..3 {
        for yy in y..y + 8 {
            for xx in x..x + 8 {
                pixels[c * 1024 + yy * 32 + xx] = 255;
            }
        }
    }
    pixels
}

#[test]
fn evidence_in_a_corner_gives_a_heat_map_that_peaks_in_that_corner() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("corner");
    let args =
        serde_json::json!({"mlpconv1": [8, 8, 8], "mlpconv2": [8, 8, 8], "mlpconv3": [8, 8]});
    model_dir(&dir, "nin", args, corner_detector)?;
    let classifier = Classifier::load(&dir, &Device::Cpu)?;
    // Top-right, then bottom-left: the peak follows the evidence (it is not a fixed place), and
    // rows stay rows (a transposed map would put it in the other corner).
    for (y, x) in [(0, 24), (24, 0)] {
        let inputs = classifier.inputs_from_pixels(&square_at(y, x))?;
        let (class, _) = classifier.classify(&inputs)?.top_k(0, 1)[0];
        assert_eq!(class, 0, "the square is evidence for class 0");
        let maps = classifier.class_maps(&inputs)?;
        let heat = cam::heatmap(maps.map(0, 0).unwrap(), maps.size(), (128, 128))?;
        let peak = (0..heat.len())
            .max_by(|&a, &b| heat[a].total_cmp(&heat[b]))
            .unwrap();
        let (py, px) = (peak / 128, peak % 128);
        // The square covers pixels [4y, 4y + 32) of the 128-pixel heat map; the peak is in it.
        let inside = |p: usize, start: usize| (4 * start..4 * start + 32).contains(&p);
        assert!(
            inside(py, y) && inside(px, x),
            "square at ({y}, {x}) of 32×32, heat peak at ({py}, {px}) of 128×128"
        );
        // And the far corner holds no evidence.
        let (fy, fx) = (127 - 4 * y - 16, 127 - 4 * x - 16);
        assert!(
            heat[fy * 128 + fx] < 0.1,
            "far corner {}",
            heat[fy * 128 + fx]
        );
    }
    Ok(())
}
