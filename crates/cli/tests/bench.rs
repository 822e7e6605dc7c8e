//! `nin bench` as a user runs it: one tiny configuration per mode, the CSV it appends to, and the
//! flags it refuses. Behaviour only: nothing here asserts a speed.

use std::process::{Command, Output};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn nin(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_nin")).args(args).output()
}

#[test]
fn writes_one_csv_row_per_configuration_and_appends() -> TestResult {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("bench.csv");
    let csv_arg = csv.display().to_string();
    let args = [
        "bench",
        "--bench",
        "both",
        "--batch-size",
        "1,2",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--threads",
        "1",
        "--csv",
        &csv_arg,
    ];
    let out = nin(&args)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 4, "{text}");
    assert!(lines[0].starts_with("framework,model,mode,batch_size,samples_per_sec,step_time_ms"));
    let columns = lines[0].split(',').count();
    for line in &lines[1..] {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), columns, "{line}");
        assert_eq!((fields[0], fields[1]), ("candle", "nin"));
        assert!(fields[4].parse::<f64>()? > 0.0, "{line}");
        assert_eq!(fields[7], "966986", "{line}");
    }
    assert_eq!(lines[1].split(',').nth(2), Some("infer"));
    assert_eq!(lines[4].split(',').nth(2), Some("train"));

    // A second run appends rows under the same header.
    let out = nin(&args[..args.len() - 2])?;
    assert!(out.status.success());
    let out = nin(&args)?;
    assert!(out.status.success());
    let text = std::fs::read_to_string(&csv)?;
    assert_eq!(text.lines().count(), 1 + 8);
    assert_eq!(text.matches("framework,").count(), 1);
    Ok(())
}

#[test]
fn gemm_mode_writes_the_ceiling_row_whatever_the_models_asked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("bench.csv");
    let csv_arg = csv.display().to_string();
    let out = nin(&[
        "bench",
        "--bench",
        "gemm",
        "--model",
        "nin,nin_bn",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--threads",
        "1",
        "--csv",
        &csv_arg,
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let fields: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(&fields[..4], ["candle", "gemm", "gemm", "2048"], "{text}");
    // 2048³ multiply-accumulates, and GFLOP/s consistent with the step time.
    assert_eq!(fields[8], "8.5899", "{text}");
    let (ms, gflops): (f64, f64) = (fields[5].parse()?, fields[9].parse()?);
    let expected = 2.0 * 2048f64.powi(3) / (ms * 1e-3) / 1e9;
    assert!((gflops - expected).abs() <= 0.1 + 1e-3 * expected, "{text}");
    Ok(())
}

#[test]
fn refuses_zero_iterations_and_unknown_models() -> TestResult {
    let out = nin(&["bench", "--iters", "0"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--iters"));
    let out = nin(&[
        "bench",
        "--model",
        "nni",
        "--batch-size",
        "1",
        "--iters",
        "1",
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nni"));
    Ok(())
}
