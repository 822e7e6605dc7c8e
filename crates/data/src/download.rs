//! Downloading the official archives into the cache folder: progress bar, resume of a partial
//! download (HTTP Range on `<file>.part`), MD5 check, then an atomic rename.
//!
//! The HTTP client is `ureq` 3 with rustls: small, blocking (no async runtime for a one-off
//! download), actively maintained, and pure Rust TLS so no system OpenSSL is needed.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::dataset::{Dataset, HOME_PAGE};
use crate::{Error, Result};

/// Folder the archives are published in; `NIN_CIFAR_URL` overrides it.
pub const DEFAULT_BASE_URL: &str = "https://www.cs.toronto.edu/~kriz";

/// The cache folder: `$NIN_DATA_DIR`, else `<platform cache dir>/nin-zoo/cifar`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("NIN_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir()
        .map(|d| d.join("nin-zoo").join("cifar"))
        .ok_or(Error::NoCacheDir)
}

/// The base URL: `$NIN_CIFAR_URL`, else [`DEFAULT_BASE_URL`].
pub fn base_url() -> String {
    std::env::var("NIN_CIFAR_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
}

/// Hex MD5 of a file.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Options of a download.
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    /// Folder the archive is published in (e.g. [`base_url()`]).
    pub base_url: String,
    /// Expected MD5; `None` uses the published sum of the dataset.
    pub md5: Option<String>,
    /// Whether to draw a progress bar on stderr.
    pub progress: bool,
}

impl DownloadOptions {
    /// Published URL and MD5 (`$NIN_CIFAR_URL` honoured), with a progress bar.
    pub fn official() -> Self {
        DownloadOptions {
            base_url: base_url(),
            md5: None,
            progress: true,
        }
    }
}

/// Downloads the archive of `dataset` into `dir` unless a verified copy is already there; returns its path.
pub fn download(dataset: Dataset, dir: &Path, opts: &DownloadOptions) -> Result<PathBuf> {
    let dest = dir.join(dataset.archive_name());
    let md5 = opts
        .md5
        .clone()
        .unwrap_or_else(|| dataset.archive_md5().to_string());
    if dest.is_file() {
        let got = md5_file(&dest)?;
        if got == md5 {
            return Ok(dest);
        }
        return Err(Error::Checksum {
            path: dest,
            expected: md5,
            got,
        });
    }
    let url = format!(
        "{}/{}",
        opts.base_url.trim_end_matches('/'),
        dataset.archive_name()
    );
    download_url(&url, &dest, &md5, opts.progress)?;
    Ok(dest)
}

/// Downloads `url` to `dest`: appends to `<dest>.part` (resuming with an HTTP Range request when it
/// exists), checks the MD5, then renames atomically. A part whose MD5 is wrong is deleted.
pub fn download_url(url: &str, dest: &Path, md5: &str, progress: bool) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let part = PathBuf::from(format!("{}.part", dest.display()));
    let fail = |reason: String| Error::Download {
        url: url.into(),
        reason,
        dest: dest.into(),
        home: HOME_PAGE,
    };
    let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(std::time::Duration::from_secs(20)))
        .build()
        .into();
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| fail(e.to_string()))?;
    let status = resp.status().as_u16();
    let header_u64 = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let length = header_u64("content-length");
    let (append, start) = match status {
        206 => (true, have),
        200 => (false, 0),
        416 if have > 0 => (true, have), // The part is already complete: verify it below.
        _ => return Err(fail(format!("HTTP status {status}"))),
    };
    let total = length.map(|l| l + start);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&part)
        .map_err(|e| Error::io(&part, e))?;
    if status != 416 {
        let bar = progress.then(|| {
            let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(
                dest.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            bar.set_position(start);
            bar
        });
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = start;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(fail(format!(
                        "connection lost after {got} bytes ({e}); run again to resume from {}",
                        part.display()
                    )))
                }
            };
            file.write_all(&buf[..n]).map_err(|e| Error::io(&part, e))?;
            got += n as u64;
            if let Some(b) = &bar {
                b.set_position(got);
            }
        }
        if let Some(b) = bar {
            b.finish();
        }
        if let Some(t) = total {
            if got < t {
                return Err(fail(format!(
                    "connection closed after {got} of {t} bytes; run again to resume from {}",
                    part.display()
                )));
            }
        }
    }
    file.sync_all().map_err(|e| Error::io(&part, e))?;
    drop(file);
    let got = md5_file(&part)?;
    if got != md5 {
        // A corrupt part can't be resumed into a good file: start over next time.
        let _ = fs::remove_file(&part);
        return Err(Error::Checksum {
            path: part,
            expected: md5.into(),
            got,
        });
    }
    fs::rename(&part, dest).map_err(|e| Error::io(dest, e))
}
