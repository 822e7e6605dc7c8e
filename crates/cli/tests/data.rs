//! `nin data …` run as a user would: on the real archive in `../shared/data` (skipped when it is
//! absent, a failure under CI), and on bad paths, which must fail with exit code 2 and a message
//! naming the path.

use std::process::{Command, Output};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn nin(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_nin"))
        .args(args)
        .env_remove("NIN_DATA_DIR")
        .output()
}

#[test]
fn info_on_the_real_archive() -> TestResult {
    // Skips on a machine without the data, fails under CI.
    let Some(archive) = nin_testkit::shared_data_file("cifar-10-binary.tar.gz") else {
        return Ok(());
    };
    let out = nin(&["data", "info", "--data", &archive.display().to_string()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("train: 50000 images"), "{stdout}");
    assert!(stdout.contains("test: 9968 images"), "{stdout}");
    assert!(stdout.contains("cifar-10-binary.tar.gz"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("ship") && l.contains("5000") && l.contains("969")),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn verify_on_the_real_cifar100_sample() -> TestResult {
    let Some(archive) = nin_testkit::shared_data_file("cifar-100-binary-mini.tar.gz") else {
        return Ok(());
    };
    let out = nin(&[
        "data",
        "verify",
        "--dataset",
        "cifar100",
        "--data",
        &archive.display().to_string(),
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("MD5") && stdout.contains("2000 training and 2000 test records"),
        "{stdout}"
    );
    let strict = nin(&[
        "data",
        "verify",
        "--strict",
        "--dataset",
        "cifar100",
        "--data",
        &archive.display().to_string(),
    ])?;
    assert_eq!(strict.status.code(), Some(2));
    Ok(())
}

#[test]
fn bad_path_fails_naming_the_path() -> TestResult {
    let out = nin(&["data", "info", "--data", "/no/such/cifar-dir"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/no/such/cifar-dir"), "{stderr}");
    assert!(stderr.contains("nin data download"), "{stderr}");
    Ok(())
}

#[test]
fn corrupt_archive_fails_naming_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&path, b"not an archive")?;
    let out = nin(&["data", "info", "--data", &path.display().to_string()])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("gzip"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn offline_download_says_where_to_put_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Nothing listens on a port whose listener was just dropped: the download fails like offline.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_nin"))
        .args([
            "data",
            "download",
            "--data",
            &dir.path().display().to_string(),
        ])
        .env("NIN_CIFAR_URL", format!("http://127.0.0.1:{port}"))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let dest = dir.path().join("cifar-10-binary.tar.gz");
    assert!(
        stderr.contains(&dest.display().to_string()) && stderr.contains("offline"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn info_finds_the_archive_in_the_cache_folder() -> TestResult {
    let Some(archive) = nin_testkit::shared_data_file("cifar-100-binary-mini.tar.gz") else {
        return Ok(());
    };
    let cache = tempfile::tempdir()?;
    std::os::unix::fs::symlink(&archive, cache.path().join("cifar-100-binary.tar.gz"))?;
    let out = Command::new(env!("CARGO_BIN_EXE_nin"))
        .args(["data", "info", "--dataset", "cifar100"])
        .env("NIN_DATA_DIR", cache.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("train: 2000 images") && stdout.contains("classes: 100"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn stalled_download_times_out_and_says_so() -> TestResult {
    use std::io::Read;
    let dir = tempfile::tempdir()?;
    // A server that accepts the connection, reads the request and then sends nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            // Bounded, should the client never give up.
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(20)));
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
    });
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_nin"))
        .args([
            "data",
            "download",
            "--data",
            &dir.path().display().to_string(),
        ])
        .env("NIN_CIFAR_URL", format!("http://127.0.0.1:{port}"))
        .env("NIN_DOWNLOAD_TIMEOUT", "0.5")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("silent for 0.5 s") && stderr.contains("NIN_DOWNLOAD_TIMEOUT"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{stderr}"
    );
    server.join().map_err(|_| "server panicked")?;

    let out = Command::new(env!("CARGO_BIN_EXE_nin"))
        .args(["data", "download", "--data"])
        .arg(dir.path())
        .env("NIN_DOWNLOAD_TIMEOUT", "soon")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("NIN_DOWNLOAD_TIMEOUT") && stderr.contains("soon"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn an_io_error_prints_its_cause_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("cifar-10-batches-bin");
    // A folder where a record file should be.
    std::fs::create_dir_all(folder.join("data_batch_1.bin"))?;
    std::fs::write(folder.join("batches.meta.txt"), "x")?;
    let out = nin(&["data", "info", "--data", &folder.display().to_string()])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("data_batch_1.bin"), "{stderr}");
    assert_eq!(stderr.matches("is a folder").count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}
