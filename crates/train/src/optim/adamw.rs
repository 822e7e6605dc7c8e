//! AdamW with decoupled weight decay, as `torch.optim.AdamW`.

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use nin_format::OptimizerConfig;

use super::{unpack, Optimizer, Param, ParamState};
use crate::error::Result;

/// AdamW, PyTorch semantics: `p *= 1 − lr·wd` (decayed parameters only); `m = β1·m + (1−β1)·g`;
/// `v = β2·v + (1−β2)·g²`; `p -= lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)`, with `lr` times the
/// parameter's multiplier.
#[derive(Debug)]
pub struct AdamW {
    params: Vec<Param>,
    moments: Vec<Option<(Tensor, Tensor)>>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    steps: u64,
}

impl AdamW {
    /// Checks the hyper-parameters and creates empty moments.
    pub fn new(
        params: Vec<Param>,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        OptimizerConfig::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
        }
        .validate()?;
        let moments = vec![None; params.len()];
        Ok(Self {
            params,
            moments,
            beta1,
            beta2,
            eps,
            weight_decay,
            steps: 0,
        })
    }
}

impl Optimizer for AdamW {
    fn kind(&self) -> &'static str {
        "adamw"
    }

    fn state_names(&self) -> &'static [&'static str] {
        // PyTorch's names for the first and second moments.
        &["exp_avg", "exp_avg_sq"]
    }

    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        for (param, slot) in self.params.iter().zip(self.moments.iter_mut()) {
            let Some(grad) = grads.get(param.var.as_tensor()) else {
                continue;
            };
            let g = grad.detach();
            let lr = lr * param.lr_mult;
            let mut p = param.var.as_tensor().detach();
            if param.decay && self.weight_decay != 0.0 {
                p = p.affine(1.0 - lr * self.weight_decay, 0.0)?;
            }
            let (m, v) = match slot.take() {
                Some((m, v)) => (
                    (m.affine(self.beta1, 0.0)? + g.affine(1.0 - self.beta1, 0.0)?)?,
                    (v.affine(self.beta2, 0.0)? + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?,
                ),
                None => (
                    g.affine(1.0 - self.beta1, 0.0)?,
                    g.sqr()?.affine(1.0 - self.beta2, 0.0)?,
                ),
            };
            let denom = v.sqrt()?.affine(1.0 / bc2_sqrt, self.eps)?;
            let updated = (p - (m.affine(lr / bc1, 0.0)? / denom)?)?;
            param.var.set(&updated)?;
            *slot = Some((m, v));
        }
        Ok(())
    }

    fn params(&self) -> &[Param] {
        &self.params
    }

    fn step_count(&self) -> u64 {
        self.steps
    }

    fn state(&self) -> Vec<ParamState> {
        self.moments
            .iter()
            .map(|slot| slot.as_ref().map(|(m, v)| vec![m.clone(), v.clone()]))
            .collect()
    }

    fn restore(&mut self, state: Vec<ParamState>, step_count: u64) -> Result<()> {
        self.moments = unpack::<2>(&self.params, state, self.state_names())?
            .into_iter()
            .map(|slot| slot.map(|[m, v]| (m, v)))
            .collect();
        self.steps = step_count;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::tests::{close, grads_of, values, var};
    use crate::optim::trainable_params;
    use nin_format::LrMultipliers;

    #[test]
    fn adamw_matches_hand_computed_pytorch_steps() {
        let vars = vec![
            ("w".to_string(), var(&[1.0], &[1, 1])),
            ("b".to_string(), var(&[1.0], &[1])),
        ];
        let ps = trainable_params(&vars, &LrMultipliers::default(), "");
        let mut opt = AdamW::new(ps.clone(), 0.9, 0.999, 1e-8, 0.1).unwrap();
        // lr 0.1, g = 0.5 (b, index 0) and 1 (w, index 1).
        // step 1 (w): p = 1·(1 − 0.01) = 0.99; m = 0.1, v = 0.001; m̂ = 1, v̂ = 1 → p = 0.89.
        // step 2 (w): p = 0.89·0.99 = 0.8811; m = 0.19, v = 0.001999; m̂ = 1, v̂ = 1 → 0.7811.
        // b: no decay; the same ratios: 1 − 0.1 − 0.1 = 0.8.
        for _ in 0..2 {
            opt.step(&grads_of(&ps, &[&[0.5], &[1.0]]), 0.1).unwrap();
        }
        close(&values(&ps[1]), &[0.7811]);
        close(&values(&ps[0]), &[0.8]);
    }
}
