//! NIN against a faithful PyTorch NIN: logits, class maps, one step's gradients and, with batch
//! norm in training mode, the updated running statistics (fixtures: `testdata/gen_nin_golden.py`).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use nin_layers::{seeded_var_builder, ClassMapModel};
use nin_model_nin::{Config, Nin};
use nin_testkit::rel_err;

#[derive(serde::Deserialize)]
struct CaseMeta {
    config: Config,
    train: bool,
    dtype: String,
}

/// Checks every case of a fixture: float32 cases to `tolerance`, float64 ones to 1e-9.
fn check_fixture(path: &Path, tolerance: f64) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let mut n_cases = 0;
    for (name, json) in meta.iter().filter(|(k, _)| *k != "torch") {
        let case: CaseMeta = serde_json::from_str(json).unwrap();
        let get = |key: &str| tensors[&format!("{name}.{key}")].clone();
        let (dtype, tolerance) = match case.dtype.as_str() {
            "float64" => (DType::F64, 1e-9),
            _ => (DType::F32, tolerance),
        };

        // Load PyTorch's weights into a VarMap the model then builds from.
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap();
            let prefix = format!("{name}.param.");
            for (key, value) in tensors.iter().filter(|(k, _)| k.starts_with(&prefix)) {
                data.insert(
                    key[prefix.len()..].to_string(),
                    Var::from_tensor(value).unwrap(),
                );
            }
        }
        let model = Nin::new(
            &case.config,
            seeded_var_builder(&varmap, 0, dtype, &Device::Cpu),
        )
        .unwrap();
        assert_eq!(
            varmap.all_vars().len(),
            tensors
                .keys()
                .filter(|k| k.starts_with(&format!("{name}.param.")))
                .count(),
            "{name}: the model asked for tensors PyTorch does not have"
        );

        let maps = model.class_maps(&get("input"), case.train).unwrap();
        let logits = nin_layers::global_avg_pool(&maps).unwrap();
        let err = rel_err(&maps, &get("class_maps"));
        assert!(
            err < tolerance,
            "{name}: class maps differ by {err} (relative)"
        );
        let err = rel_err(&logits, &get("logits"));
        assert!(err < tolerance, "{name}: logits differ by {err} (relative)");

        let labels = get("labels").to_dtype(DType::U32).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
        let err = rel_err(&loss.reshape(1).unwrap(), &get("loss"));
        assert!(err < tolerance, "{name}: loss differs by {err} (relative)");
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let mut n_grads = 0;
        for (key, var) in data.iter() {
            if let Some(grad) = tensors.get(&format!("{name}.grad.{key}")) {
                let got = grads.get(var.as_tensor()).unwrap();
                let err = rel_err(got, grad);
                assert!(
                    err < tolerance,
                    "{name}: gradient of {key} differs by {err}"
                );
                n_grads += 1;
            } else {
                let after = &tensors[&format!("{name}.after.{key}")];
                let err = rel_err(var.as_tensor(), after);
                assert!(
                    err < tolerance,
                    "{name}: buffer {key} after the step differs by {err}"
                );
            }
        }
        assert!(n_grads >= 18, "{name}: only {n_grads} gradients compared");
        n_cases += 1;
    }
    n_cases
}

#[test]
fn reduced_width_nin_matches_pytorch() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/nin_golden.safetensors");
    assert_eq!(check_fixture(&path, 1e-4), 3);
}

/// The full-width fixture (16 MB) is not committed: write it with
/// `gen_nin_golden.py --full PATH` and run with `NIN_FULL_GOLDEN=PATH`.
#[test]
fn full_width_nin_matches_pytorch_when_fixture_given() {
    match std::env::var_os("NIN_FULL_GOLDEN") {
        Some(path) => assert_eq!(check_fixture(Path::new(&path), 1e-4), 2),
        None => {
            eprintln!("skipping: set NIN_FULL_GOLDEN to a fixture from gen_nin_golden.py --full")
        }
    }
}
