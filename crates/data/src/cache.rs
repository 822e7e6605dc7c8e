//! Where the archives live and how a copy is checked: the cache folder and MD5 sums. Separate
//! from the downloader, which a build without networking leaves out, because finding and
//! verifying a copy someone put there needs no network.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::{Error, Result};

/// The cache folder: `$NIN_DATA_DIR`, else `<platform cache dir>/nin-zoo/cifar`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("NIN_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir()
        .map(|d| d.join("nin-zoo").join("cifar"))
        .ok_or(Error::NoCacheDir)
}

/// Hex MD5 of a regular file (a device such as `/dev/zero` would be hashed for ever, so it is
/// refused).
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let meta = f.metadata().map_err(|e| Error::io("reading", path, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            "reading",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
