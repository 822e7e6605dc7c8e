//! SGD with momentum, Nesterov and decoupled roles, as `torch.optim.SGD` (dampening 0).

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use nin_format::OptimizerConfig;

use super::{unpack, Optimizer, Param, ParamState};
use crate::error::Result;

/// The one tensor SGD keeps per parameter when it has momentum (PyTorch's name).
const MOMENTUM_BUFFER: &str = "momentum_buffer";

/// SGD with momentum, optional Nesterov and weight decay, PyTorch semantics (dampening 0):
/// `d = g + wd·p` (decayed parameters only); `buf = μ·buf + d`; `d = d + μ·buf` (Nesterov) or
/// `d = buf`; `p -= lr·mult·d`.
#[derive(Debug)]
pub struct Sgd {
    params: Vec<Param>,
    buffers: Vec<Option<Tensor>>,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    steps: u64,
}

impl Sgd {
    /// Checks the hyper-parameters and creates empty momentum buffers.
    pub fn new(
        params: Vec<Param>,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    ) -> Result<Self> {
        OptimizerConfig::Sgd {
            momentum,
            nesterov,
            weight_decay,
        }
        .validate()?;
        let buffers = vec![None; params.len()];
        Ok(Self {
            params,
            buffers,
            momentum,
            nesterov,
            weight_decay,
            steps: 0,
        })
    }
}

impl Optimizer for Sgd {
    fn kind(&self) -> &'static str {
        "sgd"
    }

    fn state_names(&self) -> &'static [&'static str] {
        // Without momentum SGD keeps nothing, and a saved buffer would be a foreign tensor.
        if self.momentum != 0.0 {
            &[MOMENTUM_BUFFER]
        } else {
            &[]
        }
    }

    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (param, buf) in self.params.iter().zip(self.buffers.iter_mut()) {
            let Some(grad) = grads.get(param.var.as_tensor()) else {
                continue;
            };
            let p = param.var.as_tensor().detach();
            let mut d = grad.detach();
            if param.decay && self.weight_decay != 0.0 {
                d = (d + p.affine(self.weight_decay, 0.0)?)?;
            }
            if self.momentum != 0.0 {
                let new_buf = match buf.as_ref() {
                    // PyTorch starts the buffer at the first gradient.
                    None => d.clone(),
                    Some(b) => (b.affine(self.momentum, 0.0)? + &d)?,
                };
                d = if self.nesterov {
                    (d + new_buf.affine(self.momentum, 0.0)?)?
                } else {
                    new_buf.clone()
                };
                *buf = Some(new_buf);
            }
            let updated = (p - d.affine(lr * param.lr_mult, 0.0)?)?;
            param.var.set(&updated)?;
        }
        self.steps += 1;
        Ok(())
    }

    fn params(&self) -> &[Param] {
        &self.params
    }

    fn step_count(&self) -> u64 {
        self.steps
    }

    fn state(&self) -> Vec<ParamState> {
        self.buffers
            .iter()
            .map(|b| b.as_ref().map(|b| vec![b.clone()]))
            .collect()
    }

    fn restore(&mut self, state: Vec<ParamState>, step_count: u64) -> Result<()> {
        self.buffers = unpack::<1>(&self.params, state, self.state_names())?
            .into_iter()
            .map(|slot| slot.map(|[buf]| buf))
            .collect();
        self.steps = step_count;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::tests::{close, grads_of, params, values, var};
    use crate::optim::trainable_params;
    use nin_format::LrMultipliers;

    #[test]
    fn sgd_nesterov_matches_hand_computed_pytorch_steps() {
        let ps = params();
        let mut opt = Sgd::new(ps.clone(), 0.9, true, 0.1).unwrap();
        // conv.weight p=2, g=1 every step, wd 0.1, lr 0.5, mult 1.
        // step 1: d = 1 + 0.2 = 1.2; buf = 1.2; d = 1.2 + 0.9·1.2 = 2.28; p = 2 − 1.14 = 0.86
        // step 2: d = 1 + 0.086 = 1.086; buf = 1.08 + 1.086 = 2.166; d = 1.086 + 1.9494 = 3.0354;
        //         p = 0.86 − 1.5177 = −0.6577
        // conv.bias p=0, g=1, no decay, mult 2 → lr 1.
        // step 1: buf = 1; d = 1.9; p = −1.9. step 2: buf = 1.9; d = 1 + 1.71 = 2.71; p = −4.61
        let coeffs: [&[f32]; 5] = [&[0.0], &[1.0], &[1.0], &[1.0], &[1.0, 1.0]];
        for _ in 0..2 {
            let grads = grads_of(&ps, &coeffs);
            opt.step(&grads, 0.5).unwrap();
        }
        close(&values(&ps[2]), &[-0.6577]);
        close(&values(&ps[1]), &[-4.61]);
        // bn.weight has a zero gradient and no decay: unchanged.
        close(&values(&ps[0]), &[1.0]);
        // head.weight: p = [1, −1], g = 1, wd 0.1, lr 0.05.
        // step 1: d = [1.1, 0.9]; nesterov d = 1.9·d = [2.09, 1.71]; p = [0.8955, −1.0855]
        // step 2: d = [1.08955, 0.89145]; buf = [0.99+1.08955, 0.81+0.89145] = [2.07955, 1.70145];
        //         d = [1.08955 + 1.871595, 0.89145 + 1.531305] = [2.961145, 2.422755];
        //         p = [0.8955 − 0.14805725, −1.0855 − 0.12113775] = [0.74744275, −1.20663775]
        close(&values(&ps[4]), &[0.74744275, -1.20663775]);
        assert_eq!(opt.step_count(), 2);
    }

    #[test]
    fn plain_momentum_sgd_matches_hand_computed_steps() {
        let vars = vec![("w".to_string(), var(&[1.0], &[1, 1]))];
        let ps = trainable_params(&vars, &LrMultipliers::default(), "");
        let mut opt = Sgd::new(ps.clone(), 0.5, false, 0.0).unwrap();
        // g = 2 each step, lr 0.1: buf 2 → p 0.8; buf 3 → p 0.5; buf 3.5 → p 0.15
        for _ in 0..3 {
            opt.step(&grads_of(&ps, &[&[2.0]]), 0.1).unwrap();
        }
        close(&values(&ps[0]), &[0.15]);
    }
}
