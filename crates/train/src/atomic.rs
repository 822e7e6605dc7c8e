//! Crash-safe file writing and the safetensors/JSON helpers built on it, so that a run killed at
//! any instant leaves every file either whole and old or whole and new, never half written.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{Device, Tensor};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a temporary file in the same folder is written, flushed
/// to disk and renamed over `path`, then the folder itself is flushed.
///
/// Readers see either the old file or the new one. The temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        Error::invalid("path", "file name", format!("{} has none", path.display()))
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("writing", &tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("renaming into place", path, e));
    }
    sync_dir(dir)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("flushing folder", dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating folder", dir, e))
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a JSON file into `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
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
    write_atomic(path, &bytes)
}

/// The tensors and metadata of one safetensors file.
#[derive(Debug)]
pub struct LoadedTensors {
    /// Tensors by name, on the requested device.
    pub tensors: HashMap<String, Tensor>,
    /// The `__metadata__` entries (empty when absent).
    pub metadata: HashMap<String, String>,
}

/// Reads a safetensors file with its metadata.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<LoadedTensors> {
    let bytes = fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let st_err = |source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(st_err)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    // Validates the layout before candle reads it.
    safetensors::SafeTensors::deserialize(&bytes).map_err(st_err)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
    Ok(LoadedTensors { tensors, metadata })
}

/// Reads a metadata entry, with an error naming the file when it is absent.
pub(crate) fn meta_field<'a>(
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

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"old contents").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn failed_atomic_write_keeps_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty folder: the rename must fail after the temp file is written.
        let path = dir.path().join("blocked");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inner"), b"x").unwrap();
        let err = write_atomic(&path, b"data").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(leftovers(dir.path()).is_empty());
        assert_eq!(fs::read(path.join("inner")).unwrap(), b"x");
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
