//! The zoo's contract for DrNIN: shapes of logits and class maps, and batch-norm statistics that
//! move only in training mode.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use nin_layers::{seeded_var_builder, ClassMapModel};
use nin_model_drnin::{Config, DrNin};

fn build(cfg: &Config) -> (DrNin, VarMap) {
    let varmap = VarMap::new();
    let model = DrNin::new(
        cfg,
        seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu),
    )
    .unwrap();
    (model, varmap)
}

fn running_stats(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
    let data = varmap.data().lock().unwrap();
    let mut stats: Vec<_> = data
        .iter()
        .filter(|(k, _)| k.contains("running_"))
        .map(|(k, v)| (k.clone(), v.as_tensor().to_vec1::<f32>().unwrap()))
        .collect();
    stats.sort_by(|a, b| a.0.cmp(&b.0));
    stats
}

#[test]
fn logits_and_class_maps_have_the_contract_shapes() {
    let xs = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    for num_classes in [10, 100] {
        let (model, _) = build(&Config::drnin_l3(num_classes));
        assert_eq!(model.num_classes(), num_classes);
        let maps = model.class_maps(&xs, false).unwrap();
        assert_eq!(maps.dims(), &[2, num_classes, 8, 8]);
        let logits = model.forward_t(&xs, false).unwrap();
        assert_eq!(logits.dims(), &[2, num_classes]);
        // The logits are the class maps' means.
        let mean = maps.mean((2, 3)).unwrap();
        let diff = (logits - mean).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }
    let (model, _) = build(&Config::drnin_l3(10));
    let err = model
        .forward_t(
            &Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap(),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected input [N, 3, H, W]"), "{err}");
}

#[test]
fn batch_norm_statistics_change_only_in_training_mode() {
    let cfg = Config {
        widths: [8, 8, 16],
        blocks: [2, 1, 1],
        ..Config::drnin_l4(10)
    };
    let (model, varmap) = build(&cfg);
    let xs = Tensor::randn(0.5f32, 2.0, (4, 3, 32, 32), &Device::Cpu).unwrap();
    let before = running_stats(&varmap);
    // 4 blocks × 3 norms + 2 projection norms, mean and variance each.
    assert_eq!(before.len(), 2 * 14);
    model.forward_t(&xs, false).unwrap();
    assert_eq!(
        running_stats(&varmap),
        before,
        "eval mode moved the statistics"
    );
    model.forward_t(&xs, true).unwrap();
    for ((name, old), (_, new)) in before.iter().zip(running_stats(&varmap)) {
        assert_ne!(old, &new, "{name} did not move in training mode");
    }
}

#[test]
fn dropout_acts_only_in_training_mode() {
    let cfg = Config {
        widths: [8, 8, 8],
        ..Config::drnin_l3(10)
    };
    let (model, _) = build(&cfg);
    let xs = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let eval = |m: &DrNin| m.forward_t(&xs, false).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(eval(&model), eval(&model));
    model.dropout_rng().reseed(1);
    let a = model
        .forward_t(&xs, true)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    model.dropout_rng().reseed(2);
    let b = model
        .forward_t(&xs, true)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_ne!(a, b, "dropout 0.5 with other masks gave the same logits");
}
