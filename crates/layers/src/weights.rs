//! Weights on disk: safetensors files by PyTorch name, written atomically and read with strict
//! checks, so a model directory, a checkpoint and an exported repository all use one reader.
//!
//! It lives here, beside [`crate::seeded_var_builder`], because both the zoo (loading a model
//! directory) and the engine (checkpoints) need it, and neither may depend on the other.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::PoisonError;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

use crate::error::{Error, Result};

/// The largest safetensors file the zoo reads: far above any model of the zoo (the largest preset
/// with its optimiser state is tens of megabytes), far below what would exhaust memory.
pub const MAX_SAFETENSORS_BYTES: u64 = 2 << 30;

/// Every variable of `varmap` (trainable ones and batch-norm statistics), sorted by name.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(PoisonError::into_inner);
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Writes named tensors (moved to the CPU) with string metadata as one safetensors file,
/// atomically. Names are written in sorted order.
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::serialize(cpu.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
        .map_err(|source| Error::Safetensors {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(nin_format::write_atomic(path, &bytes)?)
}

/// The tensors and metadata of one safetensors file.
#[derive(Debug)]
pub struct LoadedTensors {
    /// Tensors by name, on the requested device.
    pub tensors: HashMap<String, Tensor>,
    /// The `__metadata__` entries (empty when absent).
    pub metadata: HashMap<String, String>,
}

/// Reads a safetensors file (at most [`MAX_SAFETENSORS_BYTES`]) with its metadata.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<LoadedTensors> {
    let bytes = nin_format::read_bounded(path, "safetensors file", MAX_SAFETENSORS_BYTES)?;
    read_safetensors_bytes(path, &bytes, device)
}

/// Parses the bytes of a safetensors file; `path` names it in errors.
pub fn read_safetensors_bytes(path: &Path, bytes: &[u8], device: &Device) -> Result<LoadedTensors> {
    let st_err = |source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    refuse_duplicate_names(path, bytes)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(st_err)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    // Validates the layout before candle reads it.
    safetensors::SafeTensors::deserialize(bytes).map_err(st_err)?;
    let tensors = candle_core::safetensors::load_buffer(bytes, device)?;
    Ok(LoadedTensors { tensors, metadata })
}

/// Refuses a header that names a tensor twice: the safetensors reader keeps the last silently,
/// so a file could hold two different tensors under one name and load either.
fn refuse_duplicate_names(path: &Path, bytes: &[u8]) -> Result<()> {
    struct Names(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Names {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Names;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<Names, A::Error> {
                    let mut names = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        names.push(key);
                    }
                    Ok(Names(names))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    // The header is an 8-byte little-endian length, then that much JSON; anything malformed is
    // left to the safetensors reader, which says what is wrong.
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    else {
        return Ok(());
    };
    let Some(header) = usize::try_from(len)
        .ok()
        .and_then(|len| bytes.get(8..8usize.checked_add(len)?))
    else {
        return Ok(());
    };
    let Ok(Names(mut names)) = serde_json::from_slice::<Names>(header) else {
        return Ok(());
    };
    names.sort();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::BadTensor {
            file: path.to_path_buf(),
            name: pair[0].clone(),
            problem: "is named twice in the header".into(),
        });
    }
    Ok(())
}

/// Writes every variable of `varmap` (batch-norm statistics included) to `path`, sorted by name,
/// with metadata `format = pt` plus `extra`.
pub fn save_weights(path: &Path, varmap: &VarMap, extra: &BTreeMap<String, String>) -> Result<()> {
    let tensors: BTreeMap<String, Tensor> = named_vars(varmap)
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().detach()))
        .collect();
    let mut meta = extra.clone();
    meta.insert("format".into(), "pt".into());
    write_safetensors(path, &tensors, &meta)
}

/// Loads weights from `path` into the variables of `varmap`, which must match exactly: every
/// variable present with its shape, and no unknown tensor. Returns the file's metadata.
pub fn load_weights(path: &Path, varmap: &VarMap) -> Result<HashMap<String, String>> {
    let vars = named_vars(varmap);
    let device = vars
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    let loaded = read_safetensors(path, &device)?;
    set_weights(path, loaded.tensors, &vars)?;
    Ok(loaded.metadata)
}

/// Sets `vars` from `tensors` (read from `file`), which must match them exactly.
pub fn set_weights(
    file: &Path,
    mut tensors: HashMap<String, Tensor>,
    vars: &[(String, Var)],
) -> Result<()> {
    for (name, var) in vars {
        let t = tensors.remove(name).ok_or_else(|| Error::MissingTensor {
            file: file.to_path_buf(),
            name: name.clone(),
        })?;
        if t.dims() != var.dims() {
            return Err(Error::ShapeMismatch {
                file: file.to_path_buf(),
                name: name.clone(),
                expected: var.dims().to_vec(),
                got: t.dims().to_vec(),
            });
        }
        if !t.dtype().is_float() {
            return Err(Error::BadTensor {
                file: file.to_path_buf(),
                name: name.clone(),
                problem: format!("holds {:?} values; weights are floating point", t.dtype()),
            });
        }
        let t = t.to_dtype(var.dtype())?;
        // A NaN or infinite weight turns every answer into noise: refuse it where it is read.
        let finite = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return Err(Error::BadTensor {
                file: file.to_path_buf(),
                name: name.clone(),
                problem: "holds NaN or infinite values".into(),
            });
        }
        var.set(&t)?;
    }
    if let Some(name) = tensors.keys().min() {
        return Err(Error::UnexpectedTensor {
            file: file.to_path_buf(),
            name: name.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn varmap(entries: &[(&str, &[usize], f64)]) -> VarMap {
        let vm = VarMap::new();
        for (name, shape, value) in entries {
            vm.get(
                *shape,
                name,
                candle_nn::Init::Const(*value),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        }
        vm
    }

    #[test]
    fn weights_round_trip_and_mismatches_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let src = varmap(&[("a.weight", &[2, 3], 1.5), ("a.bias", &[2], 0.5)]);
        save_weights(
            &path,
            &src,
            &BTreeMap::from([("global_step".into(), "4".into())]),
        )
        .unwrap();
        let dst = varmap(&[("a.weight", &[2, 3], 0.0), ("a.bias", &[2], 0.0)]);
        let meta = load_weights(&path, &dst).unwrap();
        assert_eq!(meta["global_step"], "4");
        assert_eq!(meta["format"], "pt");
        let w = named_vars(&dst)[1]
            .1
            .as_tensor()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(w, 9.0);

        let wrong = varmap(&[("a.weight", &[3, 2], 0.0), ("a.bias", &[2], 0.0)]);
        let err = load_weights(&path, &wrong).unwrap_err();
        assert!(
            err.to_string()
                .contains("tensor `a.weight`: expected shape [3, 2], got [2, 3]"),
            "{err}"
        );
        let more = varmap(&[
            ("a.weight", &[2, 3], 0.0),
            ("a.bias", &[2], 0.0),
            ("b.weight", &[1], 0.0),
        ]);
        let err = load_weights(&path, &more).unwrap_err();
        assert!(
            err.to_string().contains("tensor `b.weight` is missing"),
            "{err}"
        );
        let fewer = varmap(&[("a.weight", &[2, 3], 0.0)]);
        let err = load_weights(&path, &fewer).unwrap_err();
        assert!(
            err.to_string().contains("unexpected tensor `a.bias`"),
            "{err}"
        );
    }

    #[test]
    fn integer_nan_and_duplicate_tensors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let dst = varmap(&[("a.weight", &[2], 0.0)]);
        let write = |t: Tensor| {
            write_safetensors(
                &path,
                &BTreeMap::from([("a.weight".to_string(), t)]),
                &BTreeMap::new(),
            )
            .unwrap()
        };
        write(Tensor::new(&[1u32, 2], &Device::Cpu).unwrap());
        let err = load_weights(&path, &dst).unwrap_err().to_string();
        assert!(err.contains("`a.weight`") && err.contains("U32"), "{err}");
        write(Tensor::new(&[1f32, f32::NAN], &Device::Cpu).unwrap());
        let err = load_weights(&path, &dst).unwrap_err().to_string();
        assert!(
            err.contains("`a.weight` holds NaN or infinite values"),
            "{err}"
        );

        // A hand-made header naming `a.weight` twice.
        let header = br#"{"a.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 8]);
        std::fs::write(&path, bytes).unwrap();
        let err = load_weights(&path, &dst).unwrap_err().to_string();
        assert!(err.contains("`a.weight` is named twice"), "{err}");
    }

    #[test]
    fn safetensors_round_trip_keeps_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let t = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let tensors = BTreeMap::from([("w".to_string(), t)]);
        let meta = BTreeMap::from([("step".to_string(), "7".to_string())]);
        write_safetensors(&path, &tensors, &meta).unwrap();
        let back = read_safetensors(&path, &Device::Cpu).unwrap();
        assert_eq!(back.metadata["step"], "7");
        assert_eq!(
            back.tensors["w"].to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
    }
}
