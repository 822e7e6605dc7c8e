//! Downloading the official archives into the cache folder: resume of a partial download (HTTP
//! Range on `<file>.part`), MD5 check, then an atomic, durable rename. Progress is reported to a
//! [`DownloadProgress`] the caller draws: a library never prints.
//!
//! The HTTP client is `ureq` 3 with rustls: small, blocking (no async runtime for a one-off
//! download), actively maintained, and pure Rust TLS so no system OpenSSL is needed. The whole
//! module sits behind the `download` feature, so a build without networking leaves it out.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache::md5_file;
use crate::dataset::{Dataset, HOME_PAGE};
use crate::{Error, Result};

/// Folder the archives are published in; `NIN_CIFAR_URL` overrides it.
pub const DEFAULT_BASE_URL: &str = "https://www.cs.toronto.edu/~kriz";

/// How long a server may stay silent before a download fails: generous for a slow link (any
/// byte restarts the clock), but a server that accepted and stalled is not waited on for ever.
/// `NIN_DOWNLOAD_TIMEOUT` (seconds) overrides it (see [`download`]).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The base URL: `$NIN_CIFAR_URL`, else [`DEFAULT_BASE_URL`].
pub fn base_url() -> String {
    std::env::var("NIN_CIFAR_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
}

/// Receives the progress of a download, for the caller to draw (the CLI draws a bar).
pub trait DownloadProgress {
    /// The body starts arriving: `file` is the destination's file name, `done` the bytes already
    /// there from an earlier, interrupted download, `total` the whole size when the server says.
    fn start(&mut self, file: &str, done: u64, total: Option<u64>);
    /// `bytes` more bytes arrived.
    fn advance(&mut self, bytes: u64);
    /// The body ended without a read error.
    fn finish(&mut self);
}

/// A [`DownloadProgress`] that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl DownloadProgress for NoProgress {
    fn start(&mut self, _file: &str, _done: u64, _total: Option<u64>) {}
    fn advance(&mut self, _bytes: u64) {}
    fn finish(&mut self) {}
}

/// Options of a download.
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    /// Folder the archive is published in (e.g. [`base_url()`]).
    pub base_url: String,
    /// Expected MD5; `None` uses the published sum of the dataset.
    pub md5: Option<String>,
    /// How long the server may stay silent (connecting, before answering, or in the middle of
    /// the body) before the download fails; what arrived is kept for the next attempt to resume.
    pub stall_timeout: Duration,
}

impl DownloadOptions {
    /// Published URL and MD5 (`$NIN_CIFAR_URL` honoured), and [`DEFAULT_STALL_TIMEOUT`]
    /// (which `$NIN_DOWNLOAD_TIMEOUT` overrides when the download starts, see [`download`]).
    pub fn official() -> Self {
        DownloadOptions {
            base_url: base_url(),
            md5: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// What went wrong with a request, a timeout said as such.
fn describe(e: &ureq::Error, stall_timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(phase) => stalled(stall_timeout, &phase.to_string()),
        ureq::Error::Io(io) if is_timeout(io) => stalled(stall_timeout, "read"),
        other => other.to_string(),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

fn stalled(stall_timeout: Duration, phase: &str) -> String {
    format!(
        "the server stayed silent for {:.1} s ({phase} timed out; set NIN_DOWNLOAD_TIMEOUT to wait longer)",
        stall_timeout.as_secs_f64()
    )
}

/// The stall timeout `$NIN_DOWNLOAD_TIMEOUT` asks for, if set.
fn env_stall_timeout() -> Result<Option<Duration>> {
    let Some(raw) = std::env::var_os("NIN_DOWNLOAD_TIMEOUT").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let text = raw.to_string_lossy();
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => {
            Ok(Some(Duration::from_secs_f64(secs)))
        }
        _ => Err(Error::InvalidConfig {
            field: "NIN_DOWNLOAD_TIMEOUT",
            expected: "a positive number of seconds".into(),
            got: text.into_owned(),
        }),
    }
}

/// Downloads the archive of `dataset` into `dir` unless a verified copy is already there; returns
/// its path.
///
/// `$NIN_DOWNLOAD_TIMEOUT` (seconds, e.g. `2.5`), when set, replaces `opts.stall_timeout`, so a
/// user on a slow link, or a test against a stalling server, can change it without a flag; a
/// value that is not a positive number of seconds is refused.
pub fn download(
    dataset: Dataset,
    dir: &Path,
    opts: &DownloadOptions,
    progress: &mut dyn DownloadProgress,
) -> Result<PathBuf> {
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
    let stall = env_stall_timeout()?.unwrap_or(opts.stall_timeout);
    let max_bytes = crate::archive::max_archive_bytes(dataset);
    download_url(&url, &dest, &md5, max_bytes, stall, progress)?;
    Ok(dest)
}

/// Downloads `url` to `dest`: appends to `<dest>.part` (resuming with an HTTP Range request when it
/// exists), checks the MD5, then renames atomically. A part whose MD5 is wrong is deleted, and so
/// is one that grows past `max_bytes` (a server sending without end would fill the disk). The
/// server may stay silent at most `stall_timeout` at any point.
pub fn download_url(
    url: &str,
    dest: &Path,
    md5: &str,
    max_bytes: u64,
    stall_timeout: Duration,
    progress: &mut dyn DownloadProgress,
) -> Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| Error::io("creating folder", dir, e))?;
    let part = PathBuf::from(format!("{}.part", dest.display()));
    let fail = |reason: String| Error::Download {
        url: url.into(),
        reason,
        dest: dest.into(),
        home: HOME_PAGE,
    };
    let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);

    // Every phase where the server could stall has a bound; none bounds the whole body, which
    // takes minutes on a slow link. A per-read timeout restarts with each byte received.
    let stall = Some(stall_timeout);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_resolve(stall)
        .timeout_connect(stall)
        .timeout_send_request(stall)
        .timeout_recv_response(stall)
        .timeout_per_read(stall)
        .build()
        .into();
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| fail(describe(&e, stall_timeout)))?;
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
        .map_err(|e| Error::io("writing", &part, e))?;
    if status != 416 {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        progress.start(&name, start, total);
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = start;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let why = match e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>()) {
                        Some(inner) => describe(inner, stall_timeout),
                        None if is_timeout(&e) => stalled(stall_timeout, "read"),
                        None => e.to_string(),
                    };
                    return Err(fail(format!(
                        "connection lost after {got} bytes ({why}); run again to resume from {}",
                        part.display()
                    )));
                }
            };
            if got.saturating_add(n as u64) > max_bytes {
                drop(file);
                let _ = fs::remove_file(&part);
                return Err(fail(format!(
                    "the body is more than the {max_bytes} bytes an archive of this kind can be"
                )));
            }
            file.write_all(&buf[..n])
                .map_err(|e| Error::io("writing", &part, e))?;
            got += n as u64;
            progress.advance(n as u64);
        }
        progress.finish();
        if let Some(t) = total {
            if got < t {
                return Err(fail(format!(
                    "connection closed after {got} of {t} bytes; run again to resume from {}",
                    part.display()
                )));
            }
        }
    }
    file.sync_all()
        .map_err(|e| Error::io("writing", &part, e))?;
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
    // Not `nin_format::write_atomic`: the part is the resume state, so it keeps one stable name
    // across runs (write_atomic's temporary names are per process and removed as stale), and
    // copying 170 MB into a fresh temporary file would only repeat what the part already is.
    // The steps after writing are the same: the part was flushed above, the rename puts it in
    // place whole or not at all, and flushing the folder makes the rename survive a power cut.
    fs::rename(&part, dest).map_err(|e| Error::io("renaming into place", dest, e))?;
    nin_format::sync_dir(dir).map_err(Error::from_format)
}
