//! Inverted dropout drawing its masks from a seeded generator (candle's `Dropout` uses the
//! unseedable CPU generator).

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::rng::DropoutRng;

/// Inverted dropout: in training, zeroes each cell with probability `p` and scales the rest by
/// `1 / (1 - p)`; the identity otherwise.
#[derive(Clone, Debug)]
pub struct Dropout {
    p: f64,
    rng: DropoutRng,
}

impl Dropout {
    /// A dropout layer with drop probability `p` in `[0, 1)`, drawing from `rng`.
    pub fn new(p: f64, rng: DropoutRng) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::InvalidConfig {
                layer: "dropout",
                field: "p",
                problem: format!("must be in [0, 1), got {p}"),
            });
        }
        Ok(Self { p, rng })
    }

    /// Applies dropout when `train` is true.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(xs.clone());
        }
        let mut mask = vec![0f32; xs.elem_count()];
        self.rng
            .fill_keep_mask(self.p, (1.0 / (1.0 - self.p)) as f32, &mut mask);
        let mask = Tensor::from_vec(mask, xs.shape(), &Device::Cpu)?
            .to_dtype(xs.dtype())?
            .to_device(xs.device())?;
        xs * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_scales_kept_cells_and_is_identity_in_eval() {
        let xs = Tensor::ones((4, 8, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
        let d = Dropout::new(0.5, DropoutRng::new(1)).unwrap();
        let eval = d.forward_t(&xs, false).unwrap();
        assert_eq!(eval.sum_all().unwrap().to_scalar::<f32>().unwrap(), 8192.0);
        let train = d.forward_t(&xs, true).unwrap().flatten_all().unwrap();
        let v = train.to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|&x| x == 0.0 || x == 2.0));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn dropout_rejects_p_of_one() {
        let err = Dropout::new(1.0, DropoutRng::new(0)).unwrap_err();
        assert!(err.to_string().contains("`p` must be in [0, 1)"), "{err}");
    }
}
