//! Saving and loading optimiser state (`optimizer.safetensors`): tensors named
//! `<parameter>.<state name>` as PyTorch's state dict names them, plus metadata `optimizer`
//! (the kind) and `step`. What is saved and expected is what the optimiser declares in
//! [`Optimizer::state_names`]; nothing here knows a particular optimiser.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Device;
use nin_layers::weights::{read_safetensors, write_safetensors};

use super::{Optimizer, ParamState};
use crate::checkpoint::all_finite;
use crate::error::{Error, Result};

/// The name under which a parameter's state tensor is saved, e.g.
/// `mlpconv1.conv.weight.momentum_buffer`.
pub fn state_tensor_name(param: &str, state: &str) -> String {
    format!("{param}.{state}")
}

/// Saves the optimiser state to a safetensors file (atomically), with metadata `optimizer`
/// (kind), `step` and `extra` entries.
pub fn save_optimizer_state(
    path: &Path,
    opt: &dyn Optimizer,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let mut tensors = BTreeMap::new();
    for (param, slot) in opt.params().iter().zip(opt.state()) {
        for (state, t) in opt.state_names().iter().zip(slot.into_iter().flatten()) {
            tensors.insert(state_tensor_name(&param.name, state), t);
        }
    }
    let mut meta = extra.clone();
    meta.insert("optimizer".into(), opt.kind().into());
    meta.insert("step".into(), opt.step_count().to_string());
    Ok(write_safetensors(path, &tensors, &meta)?)
}

/// Loads optimiser state saved by [`save_optimizer_state`] into `opt`, and returns the file's
/// metadata.
///
/// Checks the optimiser kind; that every entry belongs to a known parameter with the parameter's
/// shape and is finite; and that once a step has been taken every parameter has all of its
/// state (every model of the zoo gives every trainable parameter a gradient at every step, so a
/// missing buffer means a damaged file, and re-zeroing it would silently change the run).
pub fn load_optimizer_state(
    path: &Path,
    opt: &mut dyn Optimizer,
) -> Result<HashMap<String, String>> {
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
    let mut remaining = loaded.tensors;
    let mut state: Vec<ParamState> = Vec::with_capacity(opt.params().len());
    // Before the first step no parameter has state yet; any tensor then is unexpected.
    let has_state = steps > 0 && !opt.state_names().is_empty();
    for p in opt.params() {
        if !has_state {
            state.push(None);
            continue;
        }
        let mut tensors = Vec::with_capacity(opt.state_names().len());
        for suffix in opt.state_names() {
            let name = state_tensor_name(&p.name, suffix);
            let t = remaining
                .remove(&name)
                .ok_or_else(|| Error::MissingOptimizerState {
                    file: path.to_path_buf(),
                    name: name.clone(),
                    steps,
                })?;
            if t.dims() != p.var.dims() {
                return Err(Error::ShapeMismatch {
                    file: path.to_path_buf(),
                    name,
                    expected: p.var.dims().to_vec(),
                    got: t.dims().to_vec(),
                });
            }
            if !all_finite(&t)? {
                return Err(Error::NonFiniteTensor {
                    file: path.to_path_buf(),
                    name,
                });
            }
            tensors.push(t.to_dtype(p.var.dtype())?);
        }
        state.push(Some(tensors));
    }
    if let Some(name) = remaining.keys().min() {
        return Err(Error::UnexpectedTensor {
            file: path.to_path_buf(),
            name: name.clone(),
        });
    }
    opt.restore(state, steps)?;
    Ok(loaded.metadata)
}

/// Reads a metadata entry, with an error naming the file when it is absent.
fn meta_field<'a>(
    file: &Path,
    meta: &'a HashMap<String, String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::tests::{grads_of, params};
    use crate::optim::{AdamW, Sgd};
    use candle_core::{DType, Tensor};

    fn tensors_of(opt: &dyn Optimizer) -> BTreeMap<String, Vec<f32>> {
        let mut out = BTreeMap::new();
        for (p, slot) in opt.params().iter().zip(opt.state()) {
            for (s, t) in opt.state_names().iter().zip(slot.into_iter().flatten()) {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                out.insert(state_tensor_name(&p.name, s), v);
            }
        }
        out
    }

    fn stepped_sgd(path: &Path) -> (Sgd, BTreeMap<String, Tensor>) {
        let ps = params();
        let mut opt = Sgd::new(ps.clone(), 0.9, false, 0.0).unwrap();
        opt.step(
            &grads_of(&ps, &[&[1.0], &[2.0], &[3.0], &[4.0], &[5.0, 6.0]]),
            0.1,
        )
        .unwrap();
        save_optimizer_state(path, &opt, &BTreeMap::new()).unwrap();
        let saved = read_safetensors(path, &Device::Cpu).unwrap().tensors;
        (opt, saved.into_iter().collect())
    }

    fn meta(step: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("optimizer".to_string(), "sgd".to_string()),
            ("step".to_string(), step.to_string()),
        ])
    }

    #[test]
    fn state_round_trips_under_the_declared_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let (opt, saved) = stepped_sgd(&path);
        assert!(saved.contains_key("head.weight.momentum_buffer"));
        assert_eq!(saved.len(), opt.params().len());
        let mut fresh = Sgd::new(params(), 0.9, false, 0.0).unwrap();
        load_optimizer_state(&path, &mut fresh).unwrap();
        assert_eq!(fresh.step_count(), 1);
        assert_eq!(tensors_of(&opt), tensors_of(&fresh));

        let ps = params();
        let mut adam = AdamW::new(ps.clone(), 0.9, 0.999, 1e-8, 0.0).unwrap();
        adam.step(
            &grads_of(&ps, &[&[1.0], &[2.0], &[3.0], &[4.0], &[5.0, 6.0]]),
            0.1,
        )
        .unwrap();
        save_optimizer_state(&path, &adam, &BTreeMap::new()).unwrap();
        let mut back = AdamW::new(params(), 0.9, 0.999, 1e-8, 0.0).unwrap();
        load_optimizer_state(&path, &mut back).unwrap();
        let names: Vec<String> = tensors_of(&back).into_keys().collect();
        assert_eq!(names.len(), 10);
        assert!(names.contains(&"body.conv.weight.exp_avg_sq".to_string()));
        assert_eq!(tensors_of(&adam), tensors_of(&back));
    }

    #[test]
    fn bad_files_are_refused_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let (_, saved) = stepped_sgd(&path);
        let mut fresh = Sgd::new(params(), 0.9, false, 0.0).unwrap();

        // Wrong kind.
        let mut adam = AdamW::new(params(), 0.9, 0.999, 1e-8, 0.0).unwrap();
        let err = load_optimizer_state(&path, &mut adam).unwrap_err();
        assert!(err.to_string().contains("expected adamw, got sgd"), "{err}");

        // Mis-shaped entry.
        let mut bad = saved.clone();
        bad.insert(
            "head.weight.momentum_buffer".into(),
            Tensor::zeros((3,), DType::F32, &Device::Cpu).unwrap(),
        );
        write_safetensors(&path, &bad, &meta("1")).unwrap();
        let err = load_optimizer_state(&path, &mut fresh).unwrap_err();
        assert!(
            err.to_string()
                .contains("tensor `head.weight.momentum_buffer`: expected shape [1, 2], got [3]"),
            "{err}"
        );

        // Unknown entry.
        let mut extra = saved.clone();
        extra.insert(
            "ghost.momentum_buffer".into(),
            Tensor::zeros((1,), DType::F32, &Device::Cpu).unwrap(),
        );
        write_safetensors(&path, &extra, &meta("1")).unwrap();
        let err = load_optimizer_state(&path, &mut fresh).unwrap_err();
        assert!(matches!(err, Error::UnexpectedTensor { .. }), "{err}");

        // A dropped buffer after a step is an error naming it, not a silent re-zeroing.
        let mut dropped = saved.clone();
        dropped.remove("body.conv.bias.momentum_buffer");
        write_safetensors(&path, &dropped, &meta("1")).unwrap();
        let err = load_optimizer_state(&path, &mut fresh).unwrap_err();
        assert!(matches!(err, Error::MissingOptimizerState { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("tensor `body.conv.bias.momentum_buffer` is missing"),
            "{err}"
        );

        // Before the first step there is no state, and an empty file is whole.
        write_safetensors(&path, &BTreeMap::new(), &meta("0")).unwrap();
        load_optimizer_state(&path, &mut fresh).unwrap();
        assert_eq!(fresh.step_count(), 0);
        assert!(fresh.state().iter().all(Option::is_none));
        write_safetensors(&path, &saved, &meta("0")).unwrap();
        let err = load_optimizer_state(&path, &mut fresh).unwrap_err();
        assert!(matches!(err, Error::UnexpectedTensor { .. }), "{err}");

        // Non-finite state is refused.
        let mut nan = saved.clone();
        nan.insert(
            "head.bias.momentum_buffer".into(),
            Tensor::new(&[f32::NAN], &Device::Cpu).unwrap(),
        );
        write_safetensors(&path, &nan, &meta("1")).unwrap();
        let err = load_optimizer_state(&path, &mut fresh).unwrap_err();
        assert!(
            matches!(err, Error::NonFiniteTensor { ref name, .. } if name == "head.bias.momentum_buffer"),
            "{err}"
        );

        // SGD without momentum keeps nothing: a buffer in its file is foreign.
        let mut plain = Sgd::new(params(), 0.0, false, 0.0).unwrap();
        write_safetensors(&path, &saved, &meta("1")).unwrap();
        let err = load_optimizer_state(&path, &mut plain).unwrap_err();
        assert!(matches!(err, Error::UnexpectedTensor { .. }), "{err}");
    }
}
