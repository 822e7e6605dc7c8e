//! Every family of the zoo on every available device against the CPU: one training-mode
//! forward (batch-norm statistics, dropout) and backward of the cross-entropy, comparing the
//! logits, the loss and the gradient of every variable to 1e-4 relative. Without a GPU only the
//! CPU reference runs (see nin_testkit::devices); scripts/gpu-check.sh runs this on the GPU with
//! `--features cuda`.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use nin_testkit::devices::{assert_close, test_devices};

/// GPU against CPU through a whole network: float rounding only.
const TOL: f64 = 1e-4;

/// One model of each family and variant with code of its own (batch norm, residual, dense,
/// CiC's 1-D and 3-D convolutions).
const MODELS: [&str; 6] = ["nin", "nin_bn", "drnin_l3", "dcnin_s", "cic_1d", "cic_3d"];

/// Logits, loss and the gradient of every variable (by name) of `name` built with seed 7 on
/// `device`, for a fixed batch of 2 images.
fn step(name: &str, device: &Device) -> (Tensor, Tensor, Vec<(String, Tensor)>) {
    let created = nin_zoo::create_model(name, 10, None, 7, device).unwrap();
    let xs = nin_layers::seeded_randn((2, 3, 32, 32), 11)
        .unwrap()
        .to_device(device)
        .unwrap();
    let labels = Tensor::new(&[3u32, 8], device).unwrap();
    let logits = created.model.forward_t(&xs, true).unwrap();
    let loss =
        candle_nn::loss::cross_entropy(&logits.to_dtype(DType::F32).unwrap(), &labels).unwrap();
    let grads = loss.backward().unwrap();
    let mut vars: Vec<(String, Tensor)> = created
        .varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| grads.get(v.as_tensor()).map(|g| (k.clone(), g.clone())))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    (logits, loss, vars)
}

#[test]
fn every_family_matches_the_cpu_on_every_device() {
    let devices = test_devices();
    for name in MODELS {
        let (logits, loss, grads) = step(name, &Device::Cpu);
        assert!(!grads.is_empty(), "{name}: no gradients");
        for device in devices.iter().filter(|d| !d.is_cpu()) {
            let (d_logits, d_loss, d_grads) = step(name, device);
            assert_close(&format!("{name}: logits"), device, &d_logits, &logits, TOL);
            assert_close(&format!("{name}: loss"), device, &d_loss, &loss, TOL);
            assert_eq!(
                d_grads.len(),
                grads.len(),
                "{name}: gradients on {device:?}"
            );
            for ((k, g), (_, want)) in d_grads.iter().zip(&grads) {
                assert_close(&format!("{name}: gradient of {k}"), device, g, want, TOL);
            }
        }
    }
}
