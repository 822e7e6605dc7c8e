//! Pooling against PyTorch golden fixtures and against finite differences: the two checks that
//! candle's own pooling fails.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use nin_layers::{pool2d, seeded_rng, Pool2dConfig, PoolKind};
use rand::Rng;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/pool_golden.safetensors")
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    kind: String,
    kernel: usize,
    stride: usize,
    padding: usize,
    ceil_mode: bool,
    count_include_pad: bool,
}

impl Case {
    fn config(&self) -> Pool2dConfig {
        Pool2dConfig {
            kind: if self.kind == "max" {
                PoolKind::Max
            } else {
                PoolKind::Avg
            },
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            ceil_mode: self.ceil_mode,
            count_include_pad: self.count_include_pad,
        }
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn pooling_matches_pytorch_forward_and_backward() {
    let bytes = std::fs::read(fixture()).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().as_ref().unwrap();
    let cases: Vec<Case> = serde_json::from_str(&meta["cases"]).unwrap();
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture(), &Device::Cpu).unwrap();
    assert!(cases.len() >= 10);
    for case in &cases {
        let get = |what: &str| tensors[&format!("{}.{what}", case.name)].clone();
        let x = Var::from_tensor(&get("input")).unwrap();
        let y = pool2d(x.as_tensor(), &case.config()).unwrap();
        let out_err = max_abs_diff(&y, &get("output"));
        assert!(out_err < 1e-6, "{}: output differs by {out_err}", case.name);
        let loss = (y * get("grad_output")).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let gx = grads.get(x.as_tensor()).unwrap();
        let grad_err = max_abs_diff(gx, &get("grad_input"));
        assert!(
            grad_err < 1e-5,
            "{}: input gradient differs by {grad_err}",
            case.name
        );
    }
}

/// Central differences in f64 on inputs without ties (a max is not differentiable at a tie).
fn check_against_finite_differences(cfg: Pool2dConfig, shape: (usize, usize, usize, usize)) {
    let mut rng = seeded_rng(cfg.kernel as u64 * 31 + cfg.stride as u64);
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    // A shuffled ramp: distinct values, so every max is unique.
    let mut values: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
    for i in (1..n).rev() {
        values.swap(i, rng.random_range(0..=i));
    }
    let x = Tensor::from_vec(values.clone(), shape, &Device::Cpu).unwrap();
    let y_dims = pool2d(&x, &cfg).unwrap().dims().to_vec();
    let weights: Vec<f64> = (0..y_dims.iter().product::<usize>())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let weights = Tensor::from_vec(weights, y_dims.as_slice(), &Device::Cpu).unwrap();
    let objective = |xs: &Tensor| -> Tensor {
        (pool2d(xs, &cfg).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
    };

    let var = Var::from_tensor(&x).unwrap();
    let analytic = objective(var.as_tensor())
        .backward()
        .unwrap()
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();

    let eps = 1e-7;
    for i in 0..n {
        let mut plus = values.clone();
        plus[i] += eps;
        let mut minus = values.clone();
        minus[i] -= eps;
        let f = |v: Vec<f64>| {
            objective(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
                .to_scalar::<f64>()
                .unwrap()
        };
        let numeric = (f(plus) - f(minus)) / (2.0 * eps);
        assert!(
            (numeric - analytic[i]).abs() < 1e-6,
            "{cfg:?}: d/dx[{i}] numeric {numeric} vs analytic {}",
            analytic[i]
        );
    }
}

#[test]
fn pooling_gradients_match_finite_differences() {
    let base = Pool2dConfig::nin(PoolKind::Max);
    let configs = [
        (base, (2, 2, 9, 9)),
        (base, (1, 2, 8, 8)),
        (Pool2dConfig::nin(PoolKind::Avg), (2, 2, 9, 9)),
        (Pool2dConfig::nin(PoolKind::Avg), (1, 2, 8, 8)),
        (
            Pool2dConfig {
                padding: 1,
                ceil_mode: false,
                ..base
            },
            (1, 2, 7, 6),
        ),
        (
            Pool2dConfig {
                kind: PoolKind::Avg,
                padding: 1,
                count_include_pad: true,
                ..base
            },
            (1, 2, 7, 7),
        ),
        (
            Pool2dConfig {
                kind: PoolKind::Avg,
                kernel: 2,
                stride: 2,
                ceil_mode: false,
                ..base
            },
            (1, 3, 6, 6),
        ),
    ];
    for (cfg, shape) in configs {
        check_against_finite_differences(cfg, shape);
    }
}

#[test]
fn tied_maxima_send_the_whole_gradient_to_the_first_cell() {
    // Two overlapping 3×3 windows over a constant image: each window's gradient lands on its own
    // first (top-left) cell; column 2, shared by both, is the second window's first cell.
    let x =
        Var::from_tensor(&Tensor::ones((1, 1, 3, 5), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let cfg = Pool2dConfig {
        ceil_mode: false,
        ..Pool2dConfig::nin(PoolKind::Max)
    };
    let y = pool2d(x.as_tensor(), &cfg).unwrap();
    assert_eq!(y.dims(), &[1, 1, 1, 2]);
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
    let expected = [
        1.0, 0.0, 1.0, 0.0, 0.0, //
        0.0, 0.0, 0.0, 0.0, 0.0, //
        0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(gx.to_vec1::<f32>().unwrap(), expected);
}
