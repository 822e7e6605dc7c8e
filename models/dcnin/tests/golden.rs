//! DcNIN against a faithful PyTorch DcNIN: logits, class maps, one step's gradients and the
//! batch-norm running statistics after the step, in eval mode (float32) and in training mode
//! with batch statistics (float64) (fixtures: `testdata/gen_dcnin_golden.py`).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use nin_layers::{seeded_var_builder, ClassMapModel};
use nin_model_dcnin::{Config, DcNin};
use nin_testkit::rel_err;

#[derive(serde::Deserialize)]
struct CaseMeta {
    config: Config,
    train: bool,
    dtype: String,
}

#[test]
fn reduced_dcnin_matches_pytorch() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/dcnin_golden.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let mut n_cases = 0;
    for (name, json) in meta.iter().filter(|(k, _)| *k != "torch") {
        let case: CaseMeta = serde_json::from_str(json).unwrap();
        let get = |key: &str| tensors[&format!("{name}.{key}")].clone();
        let (dtype, tolerance) = match case.dtype.as_str() {
            "float64" => (DType::F64, 1e-9),
            _ => (DType::F32, 1e-4),
        };

        // Load PyTorch's state dict into a VarMap the model then builds from.
        let varmap = VarMap::new();
        let prefix = format!("{name}.param.");
        {
            let mut data = varmap.data().lock().unwrap();
            for (key, value) in tensors.iter().filter(|(k, _)| k.starts_with(&prefix)) {
                data.insert(
                    key[prefix.len()..].to_string(),
                    Var::from_tensor(value).unwrap(),
                );
            }
        }
        let n_loaded = varmap.all_vars().len();
        let model = DcNin::new(
            &case.config,
            seeded_var_builder(&varmap, 0, dtype, &Device::Cpu),
        )
        .unwrap();
        assert_eq!(
            varmap.all_vars().len(),
            n_loaded,
            "{name}: the model asked for tensors PyTorch does not have"
        );

        let maps = model.class_maps(&get("input"), case.train).unwrap();
        let logits = nin_layers::global_avg_pool(&maps).unwrap();
        let err = rel_err(&maps, &get("class_maps"));
        assert!(err < tolerance, "{name}: class maps differ by {err}");
        let err = rel_err(&logits, &get("logits"));
        assert!(err < tolerance, "{name}: logits differ by {err}");

        let labels = get("labels").to_dtype(DType::U32).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
        let err = rel_err(&loss.reshape(1).unwrap(), &get("loss"));
        assert!(err < tolerance, "{name}: loss differs by {err}");
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let (mut n_grads, mut n_buffers) = (0, 0);
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
                assert!(err < tolerance, "{name}: buffer {key} differs by {err}");
                n_buffers += 1;
            }
        }
        // Stem 1; 7 units × (2 convs + 2 norms × 2); 2 transitions × 3; head 4 parameters;
        // running mean and variance of 7 × 2 + 2 + 1 norms.
        assert_eq!(
            (n_grads, n_buffers),
            (1 + 7 * 6 + 2 * 3 + 4, 2 * 17),
            "{name}"
        );
        n_cases += 1;
    }
    assert_eq!(n_cases, 2);
}
