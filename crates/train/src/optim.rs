//! Optimisers with what candle's `SGD` lacks: momentum, Nesterov, weight decay on weights only,
//! per-parameter learning-rate multipliers, AdamW, and state that can be saved and restored so a
//! resumed run continues bit for bit.
//!
//! Both follow PyTorch's update rules (`torch.optim.SGD` with dampening 0, `torch.optim.AdamW`).
//! Parameters are classified by [`ParamRole::of`]: batch-norm buffers are never touched, weights
//! are decayed, biases and batch-norm scales/shifts are not.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use nin_format::LrMultipliers;
use nin_format::OptimizerConfig;
pub use nin_layers::weights::named_vars;
use nin_layers::weights::{read_safetensors, write_safetensors};
use nin_layers::ParamRole;

use crate::error::{Error, Result};

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

    /// Applies one update with scheduled learning rate `lr` (each parameter uses
    /// `lr · lr_mult`). Parameters without a gradient are left alone, as in PyTorch.
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()>;

    /// The parameters being optimised.
    fn params(&self) -> &[Param];

    /// Number of steps taken.
    fn step_count(&self) -> u64;

    /// The state tensors by name (`<param>.momentum_buffer`, `<param>.exp_avg`, ...).
    fn state_tensors(&self) -> BTreeMap<String, Tensor>;

    /// Replaces the state; `tensors` must hold exactly the names and shapes of
    /// [`Optimizer::state_tensors`] (checked by [`load_optimizer_state`]).
    fn restore(&mut self, tensors: BTreeMap<String, Tensor>, step_count: u64) -> Result<()>;
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

    fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|(p, b)| Some((format!("{}.momentum_buffer", p.name), b.clone()?)))
            .collect()
    }

    fn restore(&mut self, mut tensors: BTreeMap<String, Tensor>, step_count: u64) -> Result<()> {
        for (p, b) in self.params.iter().zip(self.buffers.iter_mut()) {
            *b = tensors.remove(&format!("{}.momentum_buffer", p.name));
        }
        self.steps = step_count;
        Ok(())
    }
}

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

    fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (p, slot) in self.params.iter().zip(&self.moments) {
            if let Some((m, v)) = slot {
                out.insert(format!("{}.exp_avg", p.name), m.clone());
                out.insert(format!("{}.exp_avg_sq", p.name), v.clone());
            }
        }
        out
    }

    fn restore(&mut self, mut tensors: BTreeMap<String, Tensor>, step_count: u64) -> Result<()> {
        for (p, slot) in self.params.iter().zip(self.moments.iter_mut()) {
            let m = tensors.remove(&format!("{}.exp_avg", p.name));
            let v = tensors.remove(&format!("{}.exp_avg_sq", p.name));
            *slot = m.zip(v);
        }
        self.steps = step_count;
        Ok(())
    }
}

/// Reads a metadata entry, with an error naming the file when it is absent.
fn meta_field<'a>(
    file: &Path,
    meta: &'a std::collections::HashMap<String, String>,
    field: &'static str,
) -> Result<&'a str> {
    meta.get(field)
        .map(String::as_str)
        .ok_or_else(|| Error::BadMetadata {
            file: file.to_path_buf(),
            field,
            expected: "a value".into(),
            got: "nothing".into(),
        })
}

/// Saves the optimiser state to a safetensors file (atomically), with metadata `optimizer`
/// (kind), `step` and `extra` entries.
pub fn save_optimizer_state(
    path: &Path,
    opt: &dyn Optimizer,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let mut meta = extra.clone();
    meta.insert("optimizer".into(), opt.kind().into());
    meta.insert("step".into(), opt.step_count().to_string());
    Ok(write_safetensors(path, &opt.state_tensors(), &meta)?)
}

/// Loads optimiser state saved by [`save_optimizer_state`], checking the optimiser kind, that
/// each entry belongs to a known parameter with the parameter's shape, and that a parameter has
/// either all of its state entries or none. Returns the file's metadata.
pub fn load_optimizer_state(
    path: &Path,
    opt: &mut dyn Optimizer,
) -> Result<std::collections::HashMap<String, String>> {
    let device = opt
        .params()
        .first()
        .map(|p| p.var.device().clone())
        .unwrap_or(Device::Cpu);
    let loaded = read_safetensors(path, &device)?;
    let kind = meta_field(path, &loaded.metadata, "optimizer")?;
    if kind != opt.kind() {
        return Err(Error::BadMetadata {
            file: path.to_path_buf(),
            field: "optimizer",
            expected: opt.kind().into(),
            got: kind.into(),
        });
    }
    let step_str = meta_field(path, &loaded.metadata, "step")?;
    let steps: u64 = step_str.parse().map_err(|_| Error::BadMetadata {
        file: path.to_path_buf(),
        field: "step",
        expected: "an integer".into(),
        got: step_str.into(),
    })?;
    let suffixes: &[&str] = match opt.kind() {
        "adamw" => &["exp_avg", "exp_avg_sq"],
        _ => &["momentum_buffer"],
    };
    let mut remaining = loaded.tensors;
    let mut state = BTreeMap::new();
    for p in opt.params() {
        let dtype = p.var.dtype();
        let names: Vec<String> = suffixes.iter().map(|s| format!("{}.{s}", p.name)).collect();
        let present = names.iter().filter(|n| remaining.contains_key(*n)).count();
        if present != 0 && present != names.len() {
            let missing = names.iter().find(|n| !remaining.contains_key(*n));
            return Err(Error::MissingTensor {
                file: path.to_path_buf(),
                name: missing.cloned().unwrap_or_default(),
            });
        }
        for name in names {
            if let Some(t) = remaining.remove(&name) {
                if t.dims() != p.var.dims() {
                    return Err(Error::ShapeMismatch {
                        file: path.to_path_buf(),
                        name,
                        expected: p.var.dims().to_vec(),
                        got: t.dims().to_vec(),
                    });
                }
                state.insert(name, t.to_dtype(dtype)?);
            }
        }
    }
    if let Some(name) = remaining.keys().min() {
        return Err(Error::UnexpectedTensor {
            file: path.to_path_buf(),
            name: name.clone(),
        });
    }
    // A run with momentum has a buffer for every parameter that received a gradient; an empty
    // state after step 0 is legitimate only without momentum.
    opt.restore(state, steps)?;
    Ok(loaded.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn var(v: &[f32], shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::from_slice(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Loss `sum(c ⊙ p)` for every parameter, so that each gradient is `c`.
    fn grads_of(params: &[Param], coeffs: &[&[f32]]) -> GradStore {
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

    fn values(p: &Param) -> Vec<f32> {
        p.var.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    fn params() -> Vec<Param> {
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

    #[test]
    fn state_round_trips_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let ps = params();
        let mut opt = Sgd::new(ps.clone(), 0.9, false, 0.0).unwrap();
        opt.step(
            &grads_of(&ps, &[&[1.0], &[2.0], &[3.0], &[4.0], &[5.0, 6.0]]),
            0.1,
        )
        .unwrap();
        save_optimizer_state(&path, &opt, &BTreeMap::new()).unwrap();
        let mut fresh = Sgd::new(ps.clone(), 0.9, false, 0.0).unwrap();
        load_optimizer_state(&path, &mut fresh).unwrap();
        assert_eq!(fresh.step_count(), 1);
        let a = opt.state_tensors();
        let b = fresh.state_tensors();
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, t) in &a {
            let x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let y = b[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(x, y, "{k}");
        }

        // Wrong kind.
        let mut adam = AdamW::new(ps.clone(), 0.9, 0.999, 1e-8, 0.0).unwrap();
        let err = load_optimizer_state(&path, &mut adam).unwrap_err();
        assert!(err.to_string().contains("expected adamw, got sgd"), "{err}");

        // Mis-shaped entry.
        let mut bad = a.clone();
        bad.insert(
            "head.weight.momentum_buffer".into(),
            Tensor::zeros((3,), DType::F32, &Device::Cpu).unwrap(),
        );
        let meta = BTreeMap::from([
            ("optimizer".to_string(), "sgd".to_string()),
            ("step".to_string(), "1".to_string()),
        ]);
        write_safetensors(&path, &bad, &meta).unwrap();
        let err = load_optimizer_state(&path, &mut fresh).unwrap_err();
        assert!(
            err.to_string()
                .contains("tensor `head.weight.momentum_buffer`: expected shape [1, 2], got [3]"),
            "{err}"
        );

        // Unknown entry.
        let mut extra = a.clone();
        extra.insert(
            "ghost.momentum_buffer".into(),
            Tensor::zeros((1,), DType::F32, &Device::Cpu).unwrap(),
        );
        write_safetensors(&path, &extra, &meta).unwrap();
        let err = load_optimizer_state(&path, &mut fresh).unwrap_err();
        assert!(matches!(err, Error::UnexpectedTensor { .. }), "{err}");
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
