//! Weight initialisation from a seeded generator.
//!
//! candle's `VarMap` initialises new variables with candle's own generator, which cannot be
//! seeded on CPU. [`seeded_var_builder`] gives a `VarBuilder` over a `VarMap` that honours the
//! same `candle_nn::Init` hints but draws from a [`SeededRng`], in the order the model asks for
//! its tensors, so the same seed always builds the same model.

use std::sync::{Mutex, PoisonError};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::rng::{seeded_rng, SeededRng};

/// Initialisation schemes for convolution weights, as the papers name them.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum WeightInit {
    /// Gaussian N(0, std²): what the NIN authors used (std = 0.05).
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// Kaiming (He) normal, fan-in, ReLU gain: std = √(2 / fan_in).
    KaimingNormal,
    /// Kaiming (He) uniform, fan-in, ReLU gain: bound = √(6 / fan_in).
    KaimingUniform,
    /// Xavier (Glorot) uniform: bound = √(6 / (fan_in + fan_out)).
    XavierUniform,
}

impl WeightInit {
    /// The candle hint that [`seeded_var_builder`] turns into values.
    pub fn hint(self, shape: &[usize]) -> Init {
        match self {
            Self::Normal { std } => Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            Self::KaimingNormal => candle_nn::init::DEFAULT_KAIMING_NORMAL,
            Self::KaimingUniform => candle_nn::init::DEFAULT_KAIMING_UNIFORM,
            Self::XavierUniform => {
                let receptive: usize = shape.iter().skip(2).product();
                let fan_in = shape.get(1).copied().unwrap_or(1) * receptive;
                let fan_out = shape.first().copied().unwrap_or(1) * receptive;
                let bound = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                }
            }
        }
    }
}

/// A `VarBuilder` that creates missing variables in `varmap` from a generator seeded with
/// `seed`; variables already in the map are returned as they are.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend = SeededVarMap {
        varmap: varmap.clone(),
        rng: Mutex::new(seeded_rng(seed)),
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

/// Draws values for `hint` on the host, then moves them to `device`.
fn init_tensor(
    hint: Init,
    shape: &Shape,
    dtype: DType,
    device: &Device,
    rng: &mut SeededRng,
) -> candle_core::Result<Tensor> {
    let n = shape.elem_count();
    let values: Vec<f32> = match hint {
        Init::Const(v) => vec![v as f32; n],
        Init::Randn { mean, stdev } => normal(rng, n, mean, stdev),
        Init::Uniform { lo, up } => uniform(rng, n, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn | FanInOut::FanOut => fan.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(rng, n, 0.0, std),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, n, -bound, bound)
                }
            }
        }
    };
    Tensor::from_vec(values, shape.clone(), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

fn normal(rng: &mut SeededRng, n: usize, mean: f64, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let z: f64 = StandardNormal.sample(rng);
            (mean + std * z) as f32
        })
        .collect()
}

fn uniform(rng: &mut SeededRng, n: usize, lo: f64, up: f64) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..up) as f32).collect()
}

struct SeededVarMap {
    varmap: VarMap,
    rng: Mutex<SeededRng>,
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        hint: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut vars = self
            .varmap
            .data()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = vars.get(name) {
            let tensor = existing.as_tensor();
            if tensor.shape() != &shape {
                candle_core::bail!(
                    "tensor `{name}`: expected shape {:?}, got {:?}",
                    shape.dims(),
                    tensor.dims()
                );
            }
            return Ok(tensor.clone());
        }
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let value = init_tensor(hint, &shape, dtype, device, &mut rng)?;
        let var = Var::from_tensor(&value)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        let vars = self
            .varmap
            .data()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match vars.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("tensor `{name}` is not in the var map"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(seed: u64) -> Tensor {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        vb.get_with_hints(
            (64, 32, 3, 3),
            "w",
            WeightInit::Normal { std: 0.05 }.hint(&[]),
        )
        .unwrap()
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let a = build(1).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = build(1).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let c = build(2).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn normal_init_has_the_requested_spread() {
        let w = build(5).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.002, "mean {mean}");
        assert!((var.sqrt() - 0.05).abs() < 0.002, "std {}", var.sqrt());
    }

    #[test]
    fn kaiming_and_xavier_bounds_follow_fan() {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let shape = [100usize, 50, 3, 3];
        let w = vb
            .get_with_hints(&shape, "x", WeightInit::XavierUniform.hint(&shape))
            .unwrap();
        let bound = (6.0f64 / (450.0 + 900.0)).sqrt() as f32;
        let max = w
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            max <= bound && max > 0.9 * bound,
            "max {max}, bound {bound}"
        );
        let k = vb
            .get_with_hints(&shape, "k", WeightInit::KaimingUniform.hint(&shape))
            .unwrap();
        let bound = (6.0f64 / 450.0).sqrt() as f32;
        let max = k
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            max <= bound && max > 0.9 * bound,
            "max {max}, bound {bound}"
        );
    }
}
