//! Optimisers with what candle's `SGD` lacks: momentum, Nesterov, weight decay on weights only,
//! per-parameter learning-rate multipliers, AdamW, and state that can be saved and restored so a
//! resumed run continues bit for bit.
//!
//! Both follow PyTorch's update rules (`torch.optim.SGD` with dampening 0, `torch.optim.AdamW`).
//! Parameters are classified by [`ParamRole::of`]: batch-norm buffers are never touched, weights
//! are decayed, biases and batch-norm scales/shifts are not.
//!
//! Each optimiser declares the state it keeps per parameter ([`Optimizer::state_names`]);
//! [`state`] saves and loads exactly that, so adding an optimiser needs no change there.

mod adamw;
mod sgd;
pub mod state;

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use candle_core::Var;
use nin_format::LrMultipliers;
use nin_format::OptimizerConfig;
pub use nin_layers::weights::named_vars;
use nin_layers::ParamRole;

use crate::error::{Error, Result};

pub use adamw::AdamW;
pub use sgd::Sgd;
pub use state::{load_optimizer_state, save_optimizer_state, state_tensor_name};

/// A trainable parameter with how the optimiser treats it.
#[derive(Clone, Debug)]
pub struct Param {
    /// PyTorch-style name, e.g. `mlpconv1.conv.weight`.
    pub name: String,
    /// The variable updated in place.
    pub var: Var,
    /// What the parameter is.
    pub role: ParamRole,
    /// Factor applied to the scheduled learning rate.
    pub lr_mult: f64,
    /// Whether weight decay applies.
    pub decay: bool,
}

/// One parameter's optimiser state: its tensors in the order of [`Optimizer::state_names`], or
/// `None` while the parameter has had no gradient yet.
pub type ParamState = Option<Vec<Tensor>>;

/// Classifies named variables into trainable [`Param`]s: buffers are dropped, weights are decayed,
/// biases get `mult.bias`, names under `head_prefix` get `mult.head`.
pub fn trainable_params(
    vars: &[(String, Var)],
    mult: &LrMultipliers,
    head_prefix: &str,
) -> Vec<Param> {
    let mut params: Vec<Param> = vars
        .iter()
        .filter_map(|(name, var)| {
            let role = ParamRole::of(name, var.rank());
            if role == ParamRole::Buffer {
                return None;
            }
            let mut lr_mult = 1.0;
            if role == ParamRole::Bias {
                lr_mult *= mult.bias;
            }
            if in_head(name, head_prefix) {
                lr_mult *= mult.head;
            }
            Some(Param {
                name: name.clone(),
                var: var.clone(),
                role,
                lr_mult,
                decay: role == ParamRole::Weight,
            })
        })
        .collect();
    params.sort_by(|a, b| a.name.cmp(&b.name));
    params
}

fn in_head(name: &str, prefix: &str) -> bool {
    !prefix.is_empty()
        && name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// An optimiser over a fixed list of [`Param`]s.
pub trait Optimizer: Send {
    /// Short name stored in the state file (`sgd`, `adamw`).
    fn kind(&self) -> &'static str;

    /// The tensors this optimiser keeps for every parameter once it has had a gradient, each
    /// saved as `<parameter>.<state name>` ([`state_tensor_name`]), e.g. `momentum_buffer`.
    fn state_names(&self) -> &'static [&'static str];

    /// Applies one update with scheduled learning rate `lr` (each parameter uses
    /// `lr · lr_mult`). Parameters without a gradient are left alone, as in PyTorch.
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()>;

    /// The parameters being optimised.
    fn params(&self) -> &[Param];

    /// Number of steps taken.
    fn step_count(&self) -> u64;

    /// Every parameter's state, in the order of [`Optimizer::params`].
    fn state(&self) -> Vec<ParamState>;

    /// Replaces the state: one entry per parameter, each `Some` holding one tensor per
    /// [`Optimizer::state_names`] with the parameter's shape and dtype (checked by
    /// [`load_optimizer_state`]).
    fn restore(&mut self, state: Vec<ParamState>, step_count: u64) -> Result<()>;
}

/// Builds the optimiser described by `cfg` over `params`.
pub fn build_optimizer(cfg: &OptimizerConfig, params: Vec<Param>) -> Result<Box<dyn Optimizer>> {
    Ok(match *cfg {
        OptimizerConfig::Sgd {
            momentum,
            nesterov,
            weight_decay,
        } => Box::new(Sgd::new(params, momentum, nesterov, weight_decay)?),
        OptimizerConfig::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
        } => Box::new(AdamW::new(params, beta1, beta2, eps, weight_decay)?),
    })
}

/// Turns restored state into fixed-size arrays, one per parameter: the check behind every
/// [`Optimizer::restore`], so a caller that breaks its contract gets an error, not a panic.
fn unpack<const N: usize>(
    params: &[Param],
    state: Vec<ParamState>,
    names: &[&str],
) -> Result<Vec<Option<[Tensor; N]>>> {
    let wrong = |problem: String| Error::invalid("optimizer state", "restore", problem);
    if state.len() != params.len() {
        return Err(wrong(format!(
            "expected one entry per parameter ({}), got {}",
            params.len(),
            state.len()
        )));
    }
    params
        .iter()
        .zip(state)
        .map(|(param, slot)| {
            slot.map(|tensors| {
                <[Tensor; N]>::try_from(tensors).map_err(|t| {
                    wrong(format!(
                        "`{}`: expected {N} tensors ({}), got {}",
                        param.name,
                        names.join(", "),
                        t.len()
                    ))
                })
            })
            .transpose()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    pub(crate) fn var(v: &[f32], shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::from_slice(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Loss `sum(c ⊙ p)` for every parameter, so that each gradient is `c`.
    pub(crate) fn grads_of(params: &[Param], coeffs: &[&[f32]]) -> GradStore {
        let mut total: Option<Tensor> = None;
        for (p, c) in params.iter().zip(coeffs) {
            let c = Tensor::from_slice(c, p.var.dims(), &Device::Cpu).unwrap();
            let term = (p.var.as_tensor() * c).unwrap().sum_all().unwrap();
            total = Some(match total {
                None => term,
                Some(t) => (t + term).unwrap(),
            });
        }
        total.unwrap().backward().unwrap()
    }

    pub(crate) fn values(p: &Param) -> Vec<f32> {
        p.var.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    pub(crate) fn close(a: &[f32], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    pub(crate) fn params() -> Vec<Param> {
        let vars = vec![
            ("head.bias".to_string(), var(&[0.5], &[1])),
            ("head.weight".to_string(), var(&[1.0, -1.0], &[1, 2])),
            ("body.bn.weight".to_string(), var(&[1.0], &[1])),
            ("body.bn.running_mean".to_string(), var(&[0.0], &[1])),
            ("body.conv.weight".to_string(), var(&[2.0], &[1, 1])),
            ("body.conv.bias".to_string(), var(&[0.0], &[1])),
        ];
        trainable_params(
            &vars,
            &LrMultipliers {
                bias: 2.0,
                head: 0.1,
            },
            "head",
        )
    }

    #[test]
    fn classification_and_multipliers() {
        let ps = params();
        let summary: Vec<(&str, f64, bool)> = ps
            .iter()
            .map(|p| (p.name.as_str(), p.lr_mult, p.decay))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("body.bn.weight", 1.0, false),
                ("body.conv.bias", 2.0, false),
                ("body.conv.weight", 1.0, true),
                ("head.bias", 2.0 * 0.1, false),
                ("head.weight", 0.1, true),
            ]
        );
        assert!(!in_head("header.weight", "head"));
    }

    #[test]
    fn bad_hyper_parameters_are_refused() {
        let err = Sgd::new(vec![], 0.0, true, 0.0).unwrap_err();
        assert!(err.to_string().contains("nesterov"), "{err}");
        let err = AdamW::new(vec![], 0.9, 1.0, 1e-8, 0.0).unwrap_err();
        assert!(
            err.to_string().contains("`beta2` must be in [0, 1)"),
            "{err}"
        );
    }
}
