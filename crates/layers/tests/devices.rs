//! Each custom op of nin-layers on every available device against the CPU, forward and
//! backward, to 1e-4 relative: pooling (max with its recorded maxima, average), ELU, batch norm
//! (training and evaluation, each fused activation, running statistics) and the convolution
//! (with and without bias and ReLU, strided, padded, 1×1). Without a GPU only the CPU runs (see
//! nin_testkit::devices); scripts/gpu-check.sh runs these on the GPU with `--features cuda`.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use nin_layers::{
    batch_norm_2d, conv2d, elu, pool2d, seeded_randn, Activation, ConvOptions, Pool2dConfig,
    PoolKind,
};
use nin_testkit::devices::assert_close;
use nin_testkit::test_device;

/// GPU against CPU: float rounding differs (fused multiply-adds, summation order), nothing else.
const TOL: f64 = 1e-4;

/// A seeded tensor of `dims` in `dtype` on the CPU.
fn randn(dims: &[usize], seed: u64, dtype: DType) -> Tensor {
    seeded_randn(dims, seed).unwrap().to_dtype(dtype).unwrap()
}

/// `f` on `inputs` moved to `device` as variables, and the gradients of a seeded weighted sum
/// of its output with respect to each input.
fn run(
    device: &Device,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> Tensor,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(device).unwrap()).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&tensors);
    let weights = randn(y.dims(), 99, y.dtype()).to_device(device).unwrap();
    let grads = (&y * weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let grads = vars
        .iter()
        .map(|v| grads.get(v.as_tensor()).unwrap().clone())
        .collect();
    (y, grads)
}

/// `f` on `device` against `f` on the CPU: the output and every input's gradient.
fn check(what: &str, device: &Device, inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Tensor) {
    let (want, want_grads) = run(&Device::Cpu, inputs, f);
    let (got, got_grads) = run(device, inputs, f);
    assert_eq!(
        got.device().location(),
        device.location(),
        "{what}: ran elsewhere"
    );
    assert_close(&format!("{what}: output"), device, &got, &want, TOL);
    for (i, (g, w)) in got_grads.iter().zip(&want_grads).enumerate() {
        assert_close(&format!("{what}: gradient {i}"), device, g, w, TOL);
    }
}

test_device!(
    fn pooling_matches_the_cpu(device) {
        let padded = Pool2dConfig {
            padding: 1,
            ceil_mode: false,
            count_include_pad: true,
            ..Pool2dConfig::nin(PoolKind::Avg)
        };
        let cfgs = [
            Pool2dConfig::nin(PoolKind::Max),
            Pool2dConfig::nin(PoolKind::Avg),
            padded,
            Pool2dConfig { kind: PoolKind::Max, ..padded },
            Pool2dConfig { count_include_pad: false, ..padded },
        ];
        for dtype in [DType::F32, DType::F64] {
            // 15×15: NIN's ceil-mode windows hang over the edge; ties from rounding to 1/4.
            let x = ((randn(&[2, 3, 15, 15], 1, dtype) * 4.0).unwrap().round().unwrap() / 4.0)
                .unwrap();
            for cfg in cfgs {
                let what = format!("{cfg:?} {dtype:?}");
                check(&what, device, std::slice::from_ref(&x), &|t| pool2d(&t[0], &cfg).unwrap());
            }
        }
    }
);

test_device!(
    fn elu_matches_the_cpu(device) {
        for dtype in [DType::F32, DType::F64] {
            let x = (randn(&[2, 5, 7, 9], 2, dtype) * 2.0).unwrap();
            for alpha in [1.0, 0.3] {
                let what = format!("elu α={alpha} {dtype:?}");
                check(&what, device, std::slice::from_ref(&x), &|t| elu(&t[0], alpha).unwrap());
            }
        }
    }
);

test_device!(
    fn batch_norm_matches_the_cpu(device) {
        for dtype in [DType::F32, DType::F64] {
            let x = ((randn(&[4, 3, 5, 6], 3, dtype) * 3.0).unwrap() + 1.5).unwrap();
            let gamma = (randn(&[3], 4, dtype) + 1.0).unwrap();
            let beta = randn(&[3], 5, dtype);
            let running_mean = (randn(&[3], 6, dtype) * 0.1).unwrap();
            let running_var = (randn(&[3], 7, dtype).abs().unwrap() + 0.5).unwrap();
            let acts = [Activation::Identity, Activation::Relu, Activation::Elu { alpha: 1.0 }];
            for (act, train) in acts.iter().flat_map(|a| [(*a, true), (*a, false)]) {
                let what = format!("batch norm {act:?} train={train} {dtype:?}");
                // Each device's running statistics after its forward, for comparison.
                let after = RefCell::new(Vec::new());
                // γ and β are inputs 1 and 2 (variables), so their gradients are checked too.
                let forward = |t: &[Tensor]| {
                    let on = |v: &Tensor| v.to_device(t[0].device()).unwrap();
                    let tensors = [
                        ("weight", t[1].clone()),
                        ("bias", t[2].clone()),
                        ("running_mean", on(&running_mean)),
                        ("running_var", on(&running_var)),
                    ];
                    let tensors = tensors.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                    let vb = VarBuilder::from_tensors(tensors, dtype, t[0].device());
                    let bn = batch_norm_2d(3, 0.1, vb).unwrap();
                    let y = bn.forward_activated(&t[0], train, act).unwrap();
                    after
                        .borrow_mut()
                        .push((bn.running_mean().clone(), bn.running_var().clone()));
                    y
                };
                check(&what, device, &[x.clone(), gamma.clone(), beta.clone()], &forward);
                let after = after.borrow();
                let ((cpu_mean, cpu_var), (dev_mean, dev_var)) = (&after[0], &after[1]);
                assert_close(&format!("{what}: running mean"), device, dev_mean, cpu_mean, TOL);
                assert_close(&format!("{what}: running var"), device, dev_var, cpu_var, TOL);
            }
        }
    }
);

test_device!(
    fn convolution_matches_the_cpu(device) {
        // (input, weight, stride, padding): NIN's 5×5 and 3×3 layers, a strided one, and 1×1.
        let cases = [
            ([2, 3, 12, 12], [8, 3, 5, 5], 1, 2),
            ([2, 6, 9, 9], [5, 6, 3, 3], 2, 1),
            ([3, 7, 6, 5], [4, 7, 1, 1], 1, 0),
            ([2, 4, 8, 8], [3, 4, 3, 3], 1, 0),
        ];
        for dtype in [DType::F32, DType::F64] {
            for (i, (xd, wd, stride, padding)) in cases.into_iter().enumerate() {
                let x = randn(&xd, 10 + i as u64, dtype);
                let w = (randn(&wd, 20 + i as u64, dtype) * 0.3).unwrap();
                let b = randn(&[wd[0]], 30 + i as u64, dtype);
                for relu in [false, true] {
                    let opts = ConvOptions { stride, padding, relu };
                    let what = format!("conv {xd:?}∗{wd:?} {opts:?} {dtype:?}");
                    check(&format!("{what} with bias"), device, &[x.clone(), w.clone(), b.clone()], &|t| {
                        conv2d(&t[0], &t[1], Some(&t[2]), opts).unwrap()
                    });
                    check(&format!("{what} without bias"), device, &[x.clone(), w.clone()], &|t| {
                        conv2d(&t[0], &t[1], None, opts).unwrap()
                    });
                }
            }
        }
    }
);
