//! The op against candle's batch norm and activations in both modes, f32 against f64, and the
//! errors for inputs it cannot take.

use super::*;
use crate::cpu::max_abs_diff;
use crate::init::seeded_var_builder;
use crate::rng::{seeded_rand, seeded_randn};
use candle_core::Device;
use candle_nn::VarMap;

/// `shape` values uniform in [lo, hi), in f64, from seed `seed`.
fn uniform(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor {
    let u = seeded_rand(shape, seed)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    u.affine(hi - lo, lo).unwrap()
}

/// `shape` values from N(mean, std²), in f64, from seed `seed`.
fn normal(shape: &[usize], seed: u64, mean: f64, std: f64) -> Tensor {
    let z = seeded_randn(shape, seed)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    z.affine(std, mean).unwrap()
}

/// A norm with γ, β and running statistics away from their defaults, in f64.
fn norm(channels: usize, momentum: f64) -> (VarMap, BatchNorm2d) {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 7, DType::F64, &Device::Cpu);
    let bn = batch_norm_2d(channels, momentum, vb).unwrap();
    for (seed, (name, lo, hi)) in [
        ("weight", 0.5, 1.5),
        ("bias", -0.5, 0.5),
        ("running_mean", -1.0, 1.0),
        ("running_var", 0.5, 2.0),
    ]
    .into_iter()
    .enumerate()
    {
        let values = uniform(&[channels], seed as u64, lo, hi);
        varmap.data().lock().unwrap()[name].set(&values).unwrap();
    }
    (varmap, bn)
}

/// candle's own batch norm over the same tensors (it updates the same running buffers).
fn reference(bn: &BatchNorm2d) -> candle_nn::BatchNorm {
    candle_nn::BatchNorm::new_with_momentum(
        bn.weight.dim(0).unwrap(),
        bn.running_mean().clone(),
        bn.running_var().clone(),
        bn.weight.clone(),
        bn.bias.clone(),
        BN_EPS,
        bn.momentum,
    )
    .unwrap()
}

/// Output, running statistics and the gradients of x, γ and β for a weighted-sum loss, from
/// `forward`, with the buffers reset to the same start before each call.
fn run(
    varmap: &VarMap,
    bn: &BatchNorm2d,
    x: &Var,
    loss_weights: &Tensor,
    forward: &dyn Fn(&Tensor) -> Tensor,
) -> Vec<Tensor> {
    let start = [
        bn.running_mean().copy().unwrap(),
        bn.running_var().copy().unwrap(),
    ];
    let ys = forward(x.as_tensor());
    let loss = (&ys * loss_weights).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let mut out = vec![
        ys,
        bn.running_mean().copy().unwrap(),
        bn.running_var().copy().unwrap(),
    ];
    for t in [x.as_tensor(), &bn.weight, &bn.bias] {
        out.push(grads.get(t).unwrap().clone());
    }
    let data = varmap.data().lock().unwrap();
    data["running_mean"].set(&start[0]).unwrap();
    data["running_var"].set(&start[1]).unwrap();
    out
}

#[test]
fn matches_candles_batch_norm_then_activation_in_train_and_eval_mode() {
    let (varmap, bn) = norm(5, 0.3);
    let cbn = reference(&bn);
    // Shifted and scaled so the statistics are far from 0 and 1.
    let x = Var::from_tensor(&normal(&[3, 5, 4, 6], 10, 3.0, 2.0)).unwrap();
    let loss_weights = uniform(x.dims(), 11, -1.0, 1.0);
    let activations = [
        Activation::Identity,
        Activation::Relu,
        Activation::Elu { alpha: 0.7 },
    ];
    for train in [true, false] {
        for act in activations {
            let ours = run(&varmap, &bn, &x, &loss_weights, &|x| {
                bn.forward_activated(x, train, act).unwrap()
            });
            // candle's batch norm, then candle's own activation.
            let theirs = run(&varmap, &bn, &x, &loss_weights, &|x| {
                let ys = cbn.forward_t(x, train).unwrap();
                match act {
                    Activation::Identity => ys,
                    Activation::Relu => ys.relu().unwrap(),
                    Activation::Elu { alpha } => ys.elu(alpha).unwrap(),
                }
            });
            let names = ["output", "running mean", "running var", "dx", "dγ", "dβ"];
            for ((name, a), b) in names.iter().zip(&ours).zip(&theirs) {
                let d = max_abs_diff(a, b);
                assert!(d < 1e-10, "train={train} {act:?}: {name} differs by {d}");
            }
            let moved = max_abs_diff(
                &ours[1],
                varmap.data().lock().unwrap()["running_mean"].as_tensor(),
            );
            assert_eq!(moved == 0.0, !train, "running mean moves only in training");
        }
    }
    let plain = run(&varmap, &bn, &x, &loss_weights, &|x| {
        bn.forward_t(x, true).unwrap()
    });
    let identity = run(&varmap, &bn, &x, &loss_weights, &|x| {
        bn.forward_activated(x, true, Activation::Identity).unwrap()
    });
    assert_eq!(max_abs_diff(&plain[0], &identity[0]), 0.0);
}

#[test]
fn float32_matches_the_float64_op() {
    let (_varmap, bn) = norm(4, BN_MOMENTUM);
    let x64 = normal(&[2, 4, 5, 5], 12, 10.0, 3.0);
    let y64 = bn.forward_activated(&x64, true, Activation::Relu).unwrap();
    let bn32 = BatchNorm2d {
        weight: bn.weight.to_dtype(DType::F32).unwrap(),
        bias: bn.bias.to_dtype(DType::F32).unwrap(),
        running_mean: Var::from_tensor(&bn.running_mean().to_dtype(DType::F32).unwrap()).unwrap(),
        running_var: Var::from_tensor(&bn.running_var().to_dtype(DType::F32).unwrap()).unwrap(),
        momentum: BN_MOMENTUM,
    };
    let y32 = bn32
        .forward_activated(&x64.to_dtype(DType::F32).unwrap(), true, Activation::Relu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    assert!(max_abs_diff(&y32, &y64) < 1e-5);
}

#[test]
fn a_strided_input_is_normalised_like_its_contiguous_copy() {
    let (_varmap, bn) = norm(3, BN_MOMENTUM);
    let x = normal(&[2, 5, 4, 3], 13, 0.0, 1.0);
    let strided = x.permute((0, 3, 1, 2)).unwrap();
    assert!(!strided.is_contiguous());
    let a = bn.forward_t(&strided, true).unwrap();
    let b = bn.forward_t(&strided.contiguous().unwrap(), true).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn bad_inputs_are_refused_with_what_was_expected() {
    let (_varmap, bn) = norm(3, BN_MOMENTUM);
    let wrong_channels = Tensor::zeros((2, 4, 3, 3), DType::F64, &Device::Cpu).unwrap();
    let err = bn.forward_t(&wrong_channels, true).unwrap_err().to_string();
    assert!(
        err.contains("[N, C, H, W]") && err.contains("[2, 4, 3, 3]"),
        "{err}"
    );
    let one_value = Tensor::zeros((1, 3, 1, 1), DType::F64, &Device::Cpu).unwrap();
    let err = bn.forward_t(&one_value, true).unwrap_err().to_string();
    assert!(err.contains("more than one value per channel"), "{err}");
    assert!(
        bn.forward_t(&one_value, false).is_ok(),
        "evaluation needs no batch statistics"
    );
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = batch_norm_2d(4, 1.5, vb).unwrap_err().to_string();
    assert!(err.contains("`momentum` must be in [0, 1]"), "{err}");
}
