//! The downloader against a local HTTP server started by each test: full download, resume of a
//! partial file with a Range request, MD5 mismatch, dropped connections, servers that stall,
//! offline errors, progress reports, and the real `../shared/data` archive when present. No test
//! touches the internet.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nin_data::{
    download, download_url, Dataset, DownloadOptions, DownloadProgress, Error, NoProgress,
};

/// Long enough for any local transfer, short enough that a stall fails a test quickly.
const TIMEOUT: Duration = Duration::from_secs(10);

fn generated_archive() -> Vec<u8> {
    gz(&tar_bytes(&cifar10_members()))
}

#[test]
fn downloads_verifies_and_loads() -> TestResult {
    let body = Arc::new(generated_archive());
    let server = serve(
        Dataset::Cifar10.archive_name(),
        body.clone(),
        vec![Mode::Normal],
    );
    let dir = tempfile::tempdir()?;
    let opts = DownloadOptions {
        base_url: server.base_url.clone(),
        md5: Some(md5_hex(&body)),
        stall_timeout: TIMEOUT,
    };
    let path = download(Dataset::Cifar10, dir.path(), &opts, &mut NoProgress)?;
    assert_eq!(std::fs::read(&path)?, *body);
    assert!(!dir.path().join("cifar-10-binary.tar.gz.part").exists());
    // A second call finds the verified file and makes no request (the server took one connection).
    download(Dataset::Cifar10, dir.path(), &opts, &mut NoProgress)?;
    assert_eq!(
        server.handle.join().map_err(|_| "server panicked")?,
        vec![None]
    );
    let cifar = nin_data::load(
        Dataset::Cifar10,
        &nin_data::LoadOptions {
            data: Some(dir.path().into()),
            ..Default::default()
        },
    )?;
    assert_eq!(cifar.train.len(), 20);
    Ok(())
}

#[test]
fn a_body_larger_than_any_archive_of_its_kind_is_refused() -> TestResult {
    let body = Arc::new(generated_archive());
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("a.tar.gz");
    let server = serve("a.tar.gz", body.clone(), vec![Mode::Normal]);
    let cap = body.len() as u64 / 2;
    let err = download_url(
        &format!("{}/a.tar.gz", server.base_url),
        &dest,
        &md5_hex(&body),
        cap,
        TIMEOUT,
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(&format!("more than the {cap} bytes")), "{err}");
    assert!(!dest.exists() && !dir.path().join("a.tar.gz.part").exists());
    drop(server);
    Ok(())
}

#[test]
fn resumes_a_partial_download_with_range() -> TestResult {
    let body = Arc::new(generated_archive());
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("a.tar.gz");
    let half = body.len() / 2;
    std::fs::write(dir.path().join("a.tar.gz.part"), &body[..half])?;
    let server = serve("a.tar.gz", body.clone(), vec![Mode::Normal]);
    download_url(
        &format!("{}/a.tar.gz", server.base_url),
        &dest,
        &md5_hex(&body),
        u64::MAX,
        TIMEOUT,
        &mut NoProgress,
    )?;
    assert_eq!(std::fs::read(&dest)?, *body);
    let ranges = server.handle.join().map_err(|_| "server panicked")?;
    assert_eq!(ranges, vec![Some(format!("bytes={half}-"))]);
    Ok(())
}

#[test]
fn dropped_connection_then_resume() -> TestResult {
    let body = Arc::new(generated_archive());
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("b.tar.gz");
    let server = serve(
        "b.tar.gz",
        body.clone(),
        vec![Mode::DropAfter(1000), Mode::Normal],
    );
    let url = format!("{}/b.tar.gz", server.base_url);
    let err = download_url(
        &url,
        &dest,
        &md5_hex(&body),
        u64::MAX,
        TIMEOUT,
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err}");
    assert!(err.to_string().contains("resume"), "{err}");
    assert_eq!(
        std::fs::metadata(dir.path().join("b.tar.gz.part"))?.len(),
        1000
    );
    download_url(
        &url,
        &dest,
        &md5_hex(&body),
        u64::MAX,
        TIMEOUT,
        &mut NoProgress,
    )?;
    assert_eq!(std::fs::read(&dest)?, *body);
    let ranges = server.handle.join().map_err(|_| "server panicked")?;
    assert_eq!(ranges, vec![None, Some("bytes=1000-".into())]);
    Ok(())
}

#[test]
fn md5_mismatch_is_an_error_and_discards_the_part() -> TestResult {
    let body = Arc::new(generated_archive());
    let dir = tempfile::tempdir()?;
    let server = serve(Dataset::Cifar10.archive_name(), body, vec![Mode::Normal]);
    // The published MD5 of the official archive cannot match the generated one.
    let opts = DownloadOptions {
        base_url: server.base_url.clone(),
        md5: None,
        stall_timeout: TIMEOUT,
    };
    let err = download(Dataset::Cifar10, dir.path(), &opts, &mut NoProgress).unwrap_err();
    assert!(
        matches!(err, Error::Checksum { ref expected, .. } if expected == "c32a1d4ab5d03f1284b67883e8d87530"),
        "{err}"
    );
    assert!(!dir.path().join("cifar-10-binary.tar.gz").exists());
    assert!(!dir.path().join("cifar-10-binary.tar.gz.part").exists());
    Ok(())
}

#[test]
fn http_error_status() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = serve("other.tar.gz", Arc::new(vec![1, 2, 3]), vec![Mode::Normal]);
    let opts = DownloadOptions {
        base_url: server.base_url.clone(),
        md5: None,
        stall_timeout: TIMEOUT,
    };
    let err = download(Dataset::Cifar100, dir.path(), &opts, &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    Ok(())
}

#[test]
fn offline_error_says_where_to_put_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let opts = DownloadOptions {
        base_url: format!("http://127.0.0.1:{port}"),
        md5: None,
        stall_timeout: TIMEOUT,
    };
    let err = download(Dataset::Cifar10, dir.path(), &opts, &mut NoProgress).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Download { .. }), "{msg}");
    assert!(
        msg.contains(
            &dir.path()
                .join("cifar-10-binary.tar.gz")
                .display()
                .to_string()
        ),
        "{msg}"
    );
    assert!(msg.contains("cifar.html"), "{msg}");
    Ok(())
}

#[test]
fn downloads_the_real_archive() -> TestResult {
    // Skips on a machine without the data, fails under CI.
    let Some(real) = real_archive("cifar-10-binary.tar.gz") else {
        return Ok(());
    };
    let body = Arc::new(std::fs::read(&real)?);
    let md5 = nin_data::md5_file(&real)?;
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("cifar-10-binary.tar.gz");
    let third = body.len() / 3;
    std::fs::write(
        dir.path().join("cifar-10-binary.tar.gz.part"),
        &body[..third],
    )?;
    let server = serve("cifar-10-binary.tar.gz", body.clone(), vec![Mode::Normal]);
    download_url(
        &format!("{}/cifar-10-binary.tar.gz", server.base_url),
        &dest,
        &md5,
        u64::MAX,
        TIMEOUT,
        &mut NoProgress,
    )?;
    assert_eq!(nin_data::md5_file(&dest)?, md5);
    assert_eq!(
        server.handle.join().map_err(|_| "server panicked")?,
        vec![Some(format!("bytes={third}-"))]
    );
    Ok(())
}

/// Records what a download reports.
#[derive(Default)]
struct Recorder {
    started: Vec<(String, u64, Option<u64>)>,
    bytes: u64,
    finished: usize,
}

impl DownloadProgress for Recorder {
    fn start(&mut self, file: &str, done: u64, total: Option<u64>) {
        self.started.push((file.to_string(), done, total));
    }
    fn advance(&mut self, bytes: u64) {
        self.bytes += bytes;
    }
    fn finish(&mut self) {
        self.finished += 1;
    }
}

#[test]
fn progress_is_reported_to_the_caller() -> TestResult {
    let body = Arc::new(generated_archive());
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("p.tar.gz");
    let third = body.len() / 3;
    std::fs::write(dir.path().join("p.tar.gz.part"), &body[..third])?;
    let server = serve("p.tar.gz", body.clone(), vec![Mode::Normal]);
    let mut progress = Recorder::default();
    download_url(
        &format!("{}/p.tar.gz", server.base_url),
        &dest,
        &md5_hex(&body),
        u64::MAX,
        TIMEOUT,
        &mut progress,
    )?;
    let total = body.len() as u64;
    assert_eq!(
        progress.started,
        vec![("p.tar.gz".to_string(), third as u64, Some(total))]
    );
    assert_eq!(
        (progress.bytes, progress.finished),
        (total - third as u64, 1)
    );
    Ok(())
}

#[test]
fn a_server_that_stalls_before_answering_times_out() -> TestResult {
    let body = Arc::new(generated_archive());
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("s.tar.gz");
    let server = serve("s.tar.gz", body.clone(), vec![Mode::StallBeforeHeaders]);
    let started = Instant::now();
    let err = download_url(
        &format!("{}/s.tar.gz", server.base_url),
        &dest,
        &md5_hex(&body),
        u64::MAX,
        Duration::from_millis(300),
        &mut NoProgress,
    )
    .unwrap_err();
    let elapsed = started.elapsed();
    let msg = err.to_string();
    assert!(matches!(err, Error::Download { .. }), "{msg}");
    assert!(
        msg.contains("silent for 0.3 s") && msg.contains("NIN_DOWNLOAD_TIMEOUT"),
        "{msg}"
    );
    assert!(elapsed < Duration::from_secs(5), "waited {elapsed:?}");
    assert!(!dest.exists());
    server.handle.join().map_err(|_| "server panicked")?;
    Ok(())
}

#[test]
fn a_server_that_stalls_mid_body_times_out_and_the_part_resumes() -> TestResult {
    let body = Arc::new(generated_archive());
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("m.tar.gz");
    let server = serve(
        "m.tar.gz",
        body.clone(),
        vec![Mode::StallAfter(1000), Mode::Normal],
    );
    let url = format!("{}/m.tar.gz", server.base_url);
    let started = Instant::now();
    let err = download_url(
        &url,
        &dest,
        &md5_hex(&body),
        u64::MAX,
        Duration::from_millis(300),
        &mut NoProgress,
    )
    .unwrap_err();
    let elapsed = started.elapsed();
    let msg = err.to_string();
    assert!(matches!(err, Error::Download { .. }), "{msg}");
    assert!(
        msg.contains("after 1000 bytes") && msg.contains("silent") && msg.contains("resume"),
        "{msg}"
    );
    assert!(elapsed < Duration::from_secs(5), "waited {elapsed:?}");
    assert_eq!(
        std::fs::metadata(dir.path().join("m.tar.gz.part"))?.len(),
        1000
    );
    download_url(
        &url,
        &dest,
        &md5_hex(&body),
        u64::MAX,
        TIMEOUT,
        &mut NoProgress,
    )?;
    assert_eq!(std::fs::read(&dest)?, *body);
    let ranges = server.handle.join().map_err(|_| "server panicked")?;
    assert_eq!(ranges, vec![None, Some("bytes=1000-".into())]);
    Ok(())
}
