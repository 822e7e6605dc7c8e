//! Crash-safe file writing, the one implementation every crate of the workspace uses, and
//! size-bounded reading, so a run killed at any instant leaves every file either whole and old or
//! whole and new, and a file that is endless or absurdly large is refused before it is read.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The marker in the name of every temporary file [`write_atomic`] creates, so that a clean-up
/// can recognise what a killed writer left behind.
pub const TMP_MARKER: &str = ".tmp-";

/// The largest JSON file of the formats (a `trainer_state.json` of a thousand epochs is tens of
/// kilobytes; label names of 100 classes a few).
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder (named after `path`,
/// this process and a counter, so concurrent writers never share one) is written, flushed to disk
/// and renamed over `path`, then the folder itself is flushed.
///
/// Readers see either the old file or the new one. The temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the contents streamed by `write` into the temporary file (for
/// large files that are copied or downloaded rather than held in memory).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(path)?;
    let result = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("writing", path, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("renaming into place", path, e));
    }
    sync_dir(parent_dir(path))
}

/// A fresh temporary path beside `path`: `.<name>.tmp-<pid>-<n>`.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::invalid("path", "file name", format!("{} has none", path.display()))
    })?;
    Ok(parent_dir(path).join(format!(
        ".{}{TMP_MARKER}{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a folder's entries (a rename is durable only once its folder is).
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("flushing folder", dir, e))
}

/// Flushes a folder's entries (nothing to do off Unix).
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

/// Creates `dir` and its parents.
pub fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating folder", dir, e))
}

/// Removes the temporary files a killed [`write_atomic`] left in `dir` (not recursive); returns
/// how many were removed.
pub fn remove_stale_temp_files(dir: &Path) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TMP_MARKER) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| Error::io("removing stale", &path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Reads a whole file of kind `what`, refusing one larger than `limit` bytes before reading it
/// (and stopping at `limit` should it grow, or be a device that never ends).
pub fn read_bounded(path: &Path, what: &'static str, limit: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("reading", path, e))?;
    if meta.is_dir() {
        return Err(Error::io(
            "reading",
            path,
            std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a folder, not a file"),
        ));
    }
    let too_large = |size| Error::TooLarge {
        path: path.to_path_buf(),
        what,
        size,
        limit,
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
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

/// Reads a JSON file (at most [`MAX_JSON_BYTES`]) into `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_bounded(path, "JSON file", MAX_JSON_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(TMP_MARKER))
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
    fn stale_temp_files_are_recognised_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let stale = temp_path(&dir.path().join("model.safetensors")).unwrap();
        fs::write(&stale, b"half").unwrap();
        fs::write(dir.path().join("model.safetensors"), b"whole").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), 1);
        assert!(leftovers(dir.path()).is_empty());
        assert!(dir.path().join("model.safetensors").exists());
    }

    #[test]
    fn bounded_reads_refuse_large_files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        fs::write(&path, vec![b' '; 100]).unwrap();
        assert_eq!(read_bounded(&path, "test file", 100).unwrap().len(), 100);
        let err = read_bounded(&path, "test file", 99)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("big.json")
                && err.contains("100 bytes, more than the 99 bytes a test file"),
            "{err}"
        );
        let err = read_bounded(dir.path(), "test file", 99).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn bounded_reads_stop_on_endless_devices() {
        let err = read_bounded(Path::new("/dev/zero"), "config.json", 1 << 16).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }
}
