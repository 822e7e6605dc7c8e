//! Output sizes, gradients and refusals of the pooling ops, as PyTorch has them.

use super::*;
use candle_core::{DType, Device, Var};

fn cfg(kind: PoolKind, kernel: usize, stride: usize, padding: usize, ceil: bool) -> Pool2dConfig {
    Pool2dConfig {
        kind,
        kernel,
        stride,
        padding,
        ceil_mode: ceil,
        count_include_pad: false,
    }
}

#[test]
fn output_sizes_match_pytorch() {
    // NIN: 32 → 16 → 8 with ceil mode; floor would give 15 and 7.
    let nin = Pool2dConfig::nin(PoolKind::Max);
    assert_eq!(nin.output_size(32), Some(16));
    assert_eq!(nin.output_size(16), Some(8));
    assert_eq!(cfg(PoolKind::Max, 3, 2, 0, false).output_size(32), Some(15));
    // The ceil-mode window that would start in the right padding is dropped.
    assert_eq!(cfg(PoolKind::Max, 2, 2, 1, true).output_size(4), Some(3));
    assert_eq!(cfg(PoolKind::Max, 3, 3, 0, true).output_size(2), None);
}

#[test]
fn max_gradient_goes_to_the_first_maximal_cell() {
    let x =
        Var::from_tensor(&Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let y = pool2d(x.as_tensor(), &cfg(PoolKind::Max, 2, 2, 0, false)).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(gx, vec![1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn recorded_maxima_give_the_gradient_a_search_of_every_window_gives() {
    // Rounded values make ties; a NaN and a padded, ceil-mode geometry test the edges.
    let mut values: Vec<f32> = (0..2 * 3 * 9 * 7)
        .map(|i| ((i * 7919 % 23) as f32 / 4.0).round())
        .collect();
    values[40] = f32::NAN;
    let x = Tensor::from_vec(values, (2, 3, 9, 7), &Device::Cpu).unwrap();
    for c in [
        cfg(PoolKind::Max, 3, 2, 1, true),
        Pool2dConfig::nin(PoolKind::Max),
    ] {
        let var = Var::from_tensor(&x).unwrap();
        let y = pool2d(var.as_tensor(), &c).unwrap();
        let weights = crate::rng::seeded_rand(y.shape(), 1).unwrap();
        let grads = (&y * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let scattered = grads.get(var.as_tensor()).unwrap();
        let searched = x
            .apply_op2_no_bwd(&weights, &Pool2dBackwardOp { cfg: c })
            .unwrap();
        let (a, b) = (
            scattered.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            searched.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a, b, "{c:?}");
    }
}

/// The max pool of an input without a gradient (row-by-row maxima) gives the values of the one
/// that records its maxima (a search of every window) on every geometry: padding, ceil mode,
/// overlapping and disjoint windows, ties and NaN.
#[test]
fn a_max_pool_without_a_gradient_gives_the_values_of_one_with() {
    let mut values: Vec<f64> = (0..2 * 5 * 9 * 11)
        .map(|i| ((i * 7919 % 31) as f64 / 4.0).round() - 3.0)
        .collect();
    values[57] = f64::NAN;
    values[300] = f64::NAN;
    let x = Tensor::from_vec(values, (2, 5, 9, 11), &Device::Cpu).unwrap();
    for (kernel, stride, padding, ceil) in [
        (3, 2, 0, true),
        (3, 2, 1, true),
        (3, 2, 1, false),
        (2, 2, 0, false),
        (2, 2, 1, true),
        (3, 1, 1, false),
        (4, 3, 2, true),
        (1, 1, 0, false),
    ] {
        let c = cfg(PoolKind::Max, kernel, stride, padding, ceil);
        let plain = pool2d(&x, &c).unwrap();
        let var = Var::from_tensor(&x).unwrap();
        let recorded = pool2d(var.as_tensor(), &c).unwrap();
        let bits = |t: &Tensor| -> Vec<u64> {
            let v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            v.iter()
                .map(|v| if v.is_nan() { u64::MAX } else { v.to_bits() })
                .collect()
        };
        assert_eq!(plain.dims(), recorded.dims(), "{c:?}");
        assert_eq!(bits(&plain), bits(&recorded), "{c:?}");
    }
}

#[test]
fn bad_configs_are_refused_with_the_field_named() {
    let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let err = pool2d(&x, &cfg(PoolKind::Avg, 3, 1, 2, false)).unwrap_err();
    assert!(
        err.to_string()
            .contains("`padding` must be at most kernel/2"),
        "{err}"
    );
    let err = pool2d(&x, &cfg(PoolKind::Avg, 3, 0, 0, false)).unwrap_err();
    assert!(err.to_string().contains("`stride`"), "{err}");
    let err = pool2d(&x, &cfg(PoolKind::Avg, 5, 1, 0, false)).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    let flat = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(pool2d(&flat, &cfg(PoolKind::Avg, 2, 2, 0, false)).is_err());
}
