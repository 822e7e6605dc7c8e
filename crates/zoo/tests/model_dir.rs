//! Model directories as users and other tools write them: timm's `architecture` key, no
//! `model_args`, whitening names that try to leave the directory, damaged weights; and the
//! inference pipeline's preprocessing matching the data pipeline's.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use nin_zoo::{create_model, load_model_dir, Classifier};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Writes a model directory of preset `model` with the given `config.json` text.
fn model_dir(dir: &Path, model: &str, config: &str) -> TestResult {
    let created = create_model(model, 10, None, 3, &Device::Cpu)?;
    std::fs::create_dir_all(dir)?;
    nin_layers::weights::save_weights(
        &dir.join("model.safetensors"),
        &created.varmap,
        &BTreeMap::new(),
    )?;
    std::fs::write(dir.join("config.json"), config)?;
    Ok(())
}

const PRETRAINED: &str = r#""pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}"#;

#[test]
fn a_timm_style_config_without_model_args_loads_the_presets_defaults() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("dcnin");
    model_dir(
        &dir,
        "dcnin_s",
        &format!(r#"{{"architecture": "dcnin_s", "num_classes": 10, {PRETRAINED}}}"#),
    )?;
    let loaded = load_model_dir(&dir, &Device::Cpu)?;
    assert_eq!(loaded.config.model, "dcnin_s");
    assert_eq!(
        loaded.config.model_args,
        nin_zoo::resolve_args("dcnin_s", 10, None)?
    );
    assert!(loaded.config.label_names.is_empty());
    Ok(())
}

#[test]
fn the_pipeline_normalises_as_the_config_says_and_its_logits_are_the_class_map_means() -> TestResult
{
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("nin");
    model_dir(
        &dir,
        "nin",
        &format!(r#"{{"model": "nin", "num_classes": 10, {PRETRAINED}, "label_names": []}}"#),
    )?;
    let classifier = Classifier::load(&dir, &Device::Cpu)?;
    let pixels: Vec<u8> = (0..2 * 3 * 32 * 32).map(|i| (i * 37 % 256) as u8).collect();
    let inputs = classifier.inputs_from_pixels(&pixels)?;
    assert_eq!(inputs.dims(), [2, 3, 32, 32]);
    let first = inputs.flatten_all()?.to_vec1::<f32>()?[0];
    assert_eq!(first, (0.0 / 255.0 - 0.5) / 0.25);
    let preds = classifier.classify(&inputs)?;
    let means = preds.class_maps.mean((2, 3))?.to_vec2::<f32>()?;
    assert_eq!(means, preds.logits);
    let top = preds.top_k(1, 3);
    assert_eq!(top.len(), 3);
    assert!(top[0].1 >= top[1].1 && top[1].1 >= top[2].1);
    assert_eq!(classifier.label(4), "class 4");
    let err = classifier.inputs_from_pixels(&pixels[..100]).unwrap_err();
    assert!(err.to_string().contains("3×32×32"), "{err}");
    Ok(())
}

#[test]
fn bad_model_directories_are_refused_with_the_field_named() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let escape = tmp.path().join("escape");
    model_dir(
        &escape,
        "nin",
        r#"{"model": "nin", "num_classes": 10, "pretrained_cfg": {"input_size": [3, 32, 32],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "whitening": "../../etc/passwd"}}"#,
    )?;
    let err = Classifier::load(&escape, &Device::Cpu)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("pretrained_cfg.whitening")),
        "{err:?}"
    );

    let zero_std = tmp.path().join("zero-std");
    model_dir(
        &zero_std,
        "nin",
        r#"{"model": "nin", "num_classes": 10, "pretrained_cfg": {"input_size": [3, 32, 32],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.0, 0.25]}}"#,
    )?;
    let err = Classifier::load(&zero_std, &Device::Cpu)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("pretrained_cfg") && e.contains("std")),
        "{err:?}"
    );

    // A width read from config.json is bounded before anything is allocated for it.
    let huge = tmp.path().join("huge");
    model_dir(
        &huge,
        "nin",
        &format!(
            r#"{{"model": "nin", "num_classes": 10, {PRETRAINED},
                "model_args": {{"num_classes": 10, "mlpconv1": [1000000000, 160, 96]}}}}"#
        ),
    )?;
    let err = load_model_dir(&huge, &Device::Cpu)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("`mlpconv1[0]` is 1000000000")),
        "{err:?}"
    );

    let no_input = tmp.path().join("no-input");
    model_dir(
        &no_input,
        "nin",
        r#"{"model": "nin", "num_classes": 10, "pretrained_cfg": {"input_size": [3, 0, 32],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}"#,
    )?;
    let err = Classifier::load(&no_input, &Device::Cpu)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("config.json: pretrained_cfg.input_size")),
        "{err:?}"
    );
    Ok(())
}
