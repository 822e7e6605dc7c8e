//! `nin bench`: images per second of inference and of a full training step, in the manner of
//! timm's `benchmark.py`, so that nin-zoo can be compared with PyTorch
//! (`benches/pytorch/bench_nin.py` writes the same CSV columns).
//!
//! A training step is what `nin train` does per batch: forward in training mode (dropout on),
//! cross-entropy, backward, SGD with momentum 0.9 and weight decay. Inference runs the model
//! built from detached weights, so no autograd graph is recorded (PyTorch's `inference_mode`).
//! Each configuration runs `--warmup` untimed steps, then `--iters` timed ones; the step time is
//! their median. Peak memory is the process's peak resident set (`VmHWM`), reset before each
//! configuration through `/proc/self/clear_refs` after the allocator returned the memory it kept.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::{Args, ValueEnum};
use nin_format::LrMultipliers;
use nin_layers::ClassMapModel;
use nin_train::optim::{named_vars, trainable_params};
use nin_train::{Optimizer, Sgd};

use crate::common::{parse_device, set_threads};

/// The candle version pinned by the workspace (`Cargo.toml`), for the CSV's `versions` column.
const CANDLE_VERSION: &str = "0.11.1";

/// The CSV header, shared with `benches/pytorch/bench_nin.py`.
pub const CSV_HEADER: &str = "framework,model,mode,batch_size,samples_per_sec,step_time_ms,\
step_time_min_ms,param_count,gmacs,achieved_gflops,peak_rss_mib,threads,device,versions";

/// What to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Forward pass in evaluation mode.
    Infer,
    /// Forward, loss, backward and optimiser step.
    Train,
    /// Both, inference first.
    Both,
    /// The f32 GEMM ceiling: a 2048×2048 by 2048×2048 product through candle's `matmul` (the
    /// `gemm` crate our convolutions call), so a step's GFLOP/s can be read as a share of the
    /// machine's peak measured in the same run. `--model` and `--batch-size` do not apply.
    Gemm,
}

/// The side of the square matrices `--bench gemm` multiplies (PyTorch's `bench_nin.py` uses the
/// same): large enough that packing and threading costs vanish next to the arithmetic.
const GEMM_SIDE: usize = 2048;

/// Arguments of `nin bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to time.
    #[arg(long = "bench", value_enum, default_value_t = BenchMode::Both)]
    mode: BenchMode,
    /// Model presets (see `nin list`), comma-separated or repeated.
    #[arg(long = "model", value_delimiter = ',', default_value = "nin")]
    models: Vec<String>,
    /// Batch sizes, comma-separated.
    #[arg(long = "batch-size", value_delimiter = ',', default_value = "32,128")]
    batch_sizes: Vec<usize>,
    /// Classes of the model's head.
    #[arg(long, default_value_t = 10)]
    num_classes: usize,
    /// Untimed steps before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps; the reported step time is their median.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Append one CSV row per configuration to this file (header written when it is new).
    #[arg(long, value_name = "PATH")]
    csv: Option<PathBuf>,
}

/// One measured configuration.
struct Row {
    model: String,
    mode: &'static str,
    batch_size: usize,
    samples_per_sec: f64,
    step_ms: f64,
    step_min_ms: f64,
    param_count: usize,
    gmacs: f64,
    achieved_gflops: f64,
    peak_rss_mib: f64,
}

/// Runs `nin bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.iters == 0 {
        bail!("--iters: expected at least 1, got 0");
    }
    if args.batch_sizes.contains(&0) {
        bail!("--batch-size: every batch size must be at least 1");
    }
    let threads = set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    let modes: &[&'static str] = match args.mode {
        BenchMode::Infer => &["infer"],
        BenchMode::Train => &["train"],
        BenchMode::Both => &["infer", "train"],
        BenchMode::Gemm => &["gemm"],
    };
    let versions = format!(
        "nin-zoo {} candle {CANDLE_VERSION}",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "{:<10} {:<6} {:>5} {:>10} {:>10} {:>9} {:>9}  ({threads} threads, {}, {versions})",
        "model", "mode", "batch", "images/s", "median ms", "GFLOP/s", "peak MiB", args.device
    );
    let mut csv = match &args.csv {
        Some(path) => Some(open_csv(path)?),
        None => None,
    };
    // (model, mode, batch size) in the order they run.
    let configs: Vec<(&str, &'static str, usize)> = match args.mode {
        BenchMode::Gemm => vec![("gemm", "gemm", GEMM_SIDE)],
        _ => {
            let sizes = &args.batch_sizes;
            args.models
                .iter()
                .flat_map(|model| {
                    modes.iter().flat_map(move |&mode| {
                        sizes.iter().map(move |&size| (model.as_str(), mode, size))
                    })
                })
                .collect()
        }
    };
    for (model, mode, batch_size) in configs {
        let row = if mode == "gemm" {
            bench_gemm(&args, &device).context("the GEMM ceiling")?
        } else {
            bench_one(&args, model, mode, batch_size, &device)
                .with_context(|| format!("{model} {mode} batch {batch_size}"))?
        };
        println!(
            "{:<10} {:<6} {:>5} {:>10.1} {:>10.2} {:>9.1} {:>9.0}",
            row.model,
            row.mode,
            row.batch_size,
            row.samples_per_sec,
            row.step_ms,
            row.achieved_gflops,
            row.peak_rss_mib
        );
        if let Some((path, file)) = &mut csv {
            writeln!(
                file,
                "candle,{},{},{},{:.2},{:.3},{:.3},{},{:.4},{:.1},{:.1},{threads},{},{versions}",
                row.model,
                row.mode,
                row.batch_size,
                row.samples_per_sec,
                row.step_ms,
                row.step_min_ms,
                row.param_count,
                row.gmacs,
                row.achieved_gflops,
                row.peak_rss_mib,
                args.device,
            )
            .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

fn open_csv(path: &PathBuf) -> anyhow::Result<(PathBuf, std::fs::File)> {
    let is_new = std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("--csv {}", path.display()))?;
    if is_new {
        writeln!(file, "{CSV_HEADER}").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((path.clone(), file))
}

fn bench_one(
    args: &BenchArgs,
    name: &str,
    mode: &'static str,
    batch_size: usize,
    device: &Device,
) -> anyhow::Result<Row> {
    reset_peak_rss();
    let created = nin_zoo::create_model(name, args.num_classes, None, 0, device)?;
    let xs = input_batch(batch_size, device)?;
    let labels: Vec<u32> = (0..batch_size)
        .map(|i| (i % args.num_classes) as u32)
        .collect();
    let labels = Tensor::from_vec(labels, batch_size, device)?;
    let step: Box<dyn FnMut() -> anyhow::Result<()>> = if mode == "train" {
        let model = created.model;
        let params = trainable_params(
            &named_vars(&created.varmap),
            &LrMultipliers::default(),
            model.head_prefix(),
        );
        let mut opt = Sgd::new(params, 0.9, false, 5e-4)?;
        Box::new(move || {
            let logits = model.forward_t(&xs, true)?;
            let loss = nin_train::cross_entropy(&logits, &labels, 0.0)?;
            let grads = loss.backward()?;
            opt.step(&grads, 0.01)?;
            // Wait for the result, as a GPU would otherwise return early.
            loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            Ok(())
        })
    } else {
        // Detached copies of the weights: no autograd graph, as under `torch.inference_mode`.
        let tensors: HashMap<String, Tensor> = named_vars(&created.varmap)
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().detach()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model: Box<dyn ClassMapModel> = created.entry.family.build(name, &created.args, vb)?;
        drop(created.model);
        Box::new(move || {
            let logits = model.forward_t(&xs, false)?;
            logits.sum_all()?.to_scalar::<f32>()?;
            Ok(())
        })
    };
    let times = sorted_times(args, step)?;
    let median = times[times.len() / 2];
    let samples_per_sec = batch_size as f64 / median;
    let macs = created.info.macs_per_image as f64;
    // A training step costs about three forward passes (forward, input and weight gradients).
    let passes = if mode == "train" { 3.0 } else { 1.0 };
    Ok(Row {
        model: name.to_string(),
        mode,
        batch_size,
        samples_per_sec,
        step_ms: median * 1e3,
        step_min_ms: times[0] * 1e3,
        param_count: created.info.param_count,
        gmacs: macs / 1e9,
        achieved_gflops: 2.0 * macs * passes * samples_per_sec / 1e9,
        peak_rss_mib: peak_rss_mib().unwrap_or(f64::NAN),
    })
}

/// `--bench gemm`: the median time of a [`GEMM_SIDE`]³ f32 product, after `--warmup` untimed
/// ones. In the row, `samples_per_sec` is products per second and `gmacs` one product's
/// multiply-accumulates.
fn bench_gemm(args: &BenchArgs, device: &Device) -> anyhow::Result<Row> {
    reset_peak_rss();
    let n = GEMM_SIDE;
    let images = (n * n).div_ceil(3 * 32 * 32);
    let a = input_batch(images, device)?
        .flatten_all()?
        .narrow(0, 0, n * n)?;
    let a = a.reshape((n, n))?;
    let b = a.t()?.contiguous()?;
    let product = || -> anyhow::Result<()> {
        // Reading one value back waits for a GPU to finish, as in the other benchmarks.
        a.matmul(&b)?.get(0)?.get(0)?.to_scalar::<f32>()?;
        Ok(())
    };
    let times = sorted_times(args, product)?;
    let median = times[times.len() / 2];
    let macs = (n * n * n) as f64;
    Ok(Row {
        model: "gemm".into(),
        mode: "gemm",
        batch_size: n,
        samples_per_sec: 1.0 / median,
        step_ms: median * 1e3,
        step_min_ms: times[0] * 1e3,
        param_count: 0,
        gmacs: macs / 1e9,
        achieved_gflops: 2.0 * macs / median / 1e9,
        peak_rss_mib: peak_rss_mib().unwrap_or(f64::NAN),
    })
}

/// The seconds of `--iters` timed calls of `step` after `--warmup` untimed ones, fastest first.
fn sorted_times(
    args: &BenchArgs,
    mut step: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    for _ in 0..args.warmup {
        step()?;
    }
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let start = Instant::now();
        step()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// A deterministic batch of values in [−2, 2), like normalised images.
fn input_batch(batch_size: usize, device: &Device) -> anyhow::Result<Tensor> {
    let n = batch_size * 3 * 32 * 32;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    Ok(Tensor::from_vec(data, (batch_size, 3, 32, 32), device)?)
}

/// Resets the kernel's peak-RSS counter (Linux ≥ 4.0); elsewhere the peak is the process's.
/// Memory kept from earlier configurations is released first, or it would count again.
fn reset_peak_rss() {
    crate::alloc::release_freed_memory();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, in MiB (Linux only).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
