//! Global average pooling: the NIN head that turns one map per class into one logit per class.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Mean over the spatial axes: `[N, C, H, W]` → `[N, C]`.
pub fn global_avg_pool(maps: &Tensor) -> Result<Tensor> {
    if maps.rank() != 4 {
        return Err(Error::BadShape {
            op: "global_avg_pool",
            expected: "a 4-D tensor [N, C, H, W]",
            got: maps.dims().to_vec(),
        });
    }
    Ok(maps.mean((2, 3))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn gap_averages_each_map_and_spreads_gradient_evenly() {
        let x = Var::from_tensor(
            &Tensor::arange(0f32, 32.0, &Device::Cpu)
                .unwrap()
                .reshape((1, 2, 4, 4))
                .unwrap(),
        )
        .unwrap();
        let y = global_avg_pool(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![7.5, 23.5]]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        assert!(g.to_vec1::<f32>().unwrap().iter().all(|&v| v == 1.0 / 16.0));
    }

    #[test]
    fn gap_rejects_non_4d_input() {
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = global_avg_pool(&x).unwrap_err();
        assert!(err.to_string().contains("[N, C, H, W]"), "{err}");
    }
}
