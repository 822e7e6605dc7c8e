//! Test support shared by the model crates (a dev-dependency only): the first images of the
//! real CIFAR-10 archive in `../shared/data`, normalised, the check that a model memorises 64 of
//! them, a whole-tensor relative error, and the check of a model against a PyTorch golden
//! fixture. Every test of the workspace that needs `../shared/data` finds it through
//! [`shared_data_file`], which skips on a developer's machine without it and fails under CI.
//! [`mock_hub`] is a Hugging Face Hub stand-in on loopback for tests of model downloads;
//! [`devices`] and [`test_device!`] run a test on every available device (the CPU, and a GPU where
//! there is one) against the CPU.
// Test support fails loudly on purpose: a panic here is a failed test.
#![allow(clippy::unwrap_used)]
#![forbid(unsafe_code)]

pub mod devices;
pub mod mock_hub;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use nin_layers::{seeded_randn, seeded_var_builder, ClassMapModel};
use serde::de::DeserializeOwned;

const RECORD: usize = 3073;
/// CIFAR-10's published per-channel mean of `pixel / 255`.
const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10's published per-channel standard deviation of `pixel / 255`.
const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// Whether the tests run under CI (`CI` set, and not to `0` or `false`), where the real data is
/// always present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
}

/// `../shared/data/<name>` beside the workspace root (the folder of `Cargo.lock`), if present.
///
/// When it is absent, a test on a developer's machine skips: this prints why and returns `None`.
/// Under CI ([`in_ci`]) it panics instead, failing the test: CI always has the data, so a skip
/// there would hide a broken path.
pub fn shared_data_file(name: &str) -> Option<PathBuf> {
    let path = workspace_root().map(|root| root.join("..").join("shared").join("data").join(name));
    match path {
        Some(p) if p.is_file() => Some(p),
        _ if in_ci() => panic!(
            "../shared/data/{name} is absent, but CI is set: CI always has the real data, so this \
             test must not skip (is the data folder mounted beside the workspace?)"
        ),
        _ => {
            eprintln!("skipping: ../shared/data/{name} is absent");
            None
        }
    }
}

fn workspace_root() -> Option<PathBuf> {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        if dir.join("Cargo.lock").is_file() {
            return Some(dir);
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// The shared CIFAR-10 archive beside the workspace; `None` (after a skip message) when absent
/// on a developer's machine, a panic when absent under CI (see [`shared_data_file`]).
pub fn cifar10_archive() -> Option<PathBuf> {
    shared_data_file("cifar-10-binary.tar.gz")
}

/// The first `n` training images of the shared CIFAR-10 archive (`data_batch_1.bin`), as
/// normalised `[n, 3, 32, 32]` f32 images, `[n]` u32 labels and the labels as a vector; `None`
/// when the archive is absent on a developer's machine (tests then skip, see
/// [`shared_data_file`]).
///
/// # Panics
/// When the archive is absent under CI, or present but unreadable: a broken archive is a failure,
/// never a reason to skip.
pub fn cifar10_head(n: usize) -> Option<(Tensor, Tensor, Vec<u32>)> {
    let archive = cifar10_archive()?;
    let unreadable = |what: &str| -> ! { panic!("{}: unreadable ({what})", archive.display()) };
    let file = std::fs::File::open(&archive).unwrap_or_else(|e| unreadable(&e.to_string()));
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in tar.entries().unwrap_or_else(|e| unreadable(&e.to_string())) {
        let entry = entry.unwrap_or_else(|e| unreadable(&e.to_string()));
        let is_batch_1 = entry
            .path()
            .unwrap_or_else(|e| unreadable(&e.to_string()))
            .ends_with("data_batch_1.bin");
        if !is_batch_1 {
            continue;
        }
        let mut bytes = vec![0u8; n * RECORD];
        entry
            .take((n * RECORD) as u64)
            .read_exact(&mut bytes)
            .unwrap_or_else(|e| unreadable(&format!("data_batch_1.bin: {e}")));
        let labels: Vec<u32> = bytes.chunks(RECORD).map(|r| r[0] as u32).collect();
        let pixels: Vec<f32> = bytes
            .chunks(RECORD)
            .flat_map(|r| {
                r[1..].iter().enumerate().map(|(i, &p)| {
                    let c = i / 1024;
                    (p as f32 / 255.0 - MEAN[c]) / STD[c]
                })
            })
            .collect();
        let xs = Tensor::from_vec(pixels, (n, 3, 32, 32), &Device::Cpu).ok()?;
        let ys = Tensor::from_vec(labels.clone(), n, &Device::Cpu).ok()?;
        return Some((xs, ys, labels));
    }
    unreadable("no member data_batch_1.bin")
}

/// The zoo's shape contract for a family, with `build(num_classes)` making a model: for 10 and
/// 100 classes, class maps `[N, C, 8, 8]` for 32×32 inputs, logits `[N, C]` equal to the maps'
/// means, and a 1-channel input refused with a message naming the expected shape.
///
/// # Panics
/// When the model breaks the contract: this is for tests.
pub fn check_class_map_contract(build: impl Fn(usize) -> Box<dyn ClassMapModel>) {
    let xs = seeded_randn((2, 3, 32, 32), 0).unwrap();
    for num_classes in [10, 100] {
        let model = build(num_classes);
        assert_eq!(model.num_classes(), num_classes);
        let maps = model.class_maps(&xs, false).unwrap();
        assert_eq!(maps.dims(), &[2, num_classes, 8, 8]);
        let logits = model.forward_t(&xs, false).unwrap();
        assert_eq!(logits.dims(), &[2, num_classes]);
        let mean = maps.mean((2, 3)).unwrap();
        assert!(
            rel_err(&logits, &mean) < 1e-6,
            "the logits are the maps' means"
        );
    }
    let gray = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = build(10).forward_t(&gray, false).unwrap_err().to_string();
    assert!(err.contains("expected input [N, 3, H, W]"), "{err}");
}

/// The batch-norm running statistics of `varmap`, by name.
fn running_stats(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
    let data = varmap.data().lock().unwrap();
    let mut stats: Vec<_> = data
        .iter()
        .filter(|(k, _)| k.contains("running_"))
        .map(|(k, v)| (k.clone(), v.as_tensor().to_vec1::<f32>().unwrap()))
        .collect();
    stats.sort_by(|a, b| a.0.cmp(&b.0));
    stats
}

/// `model`'s `n_buffers` batch-norm running statistics (in `varmap`) stay put in evaluation mode
/// and every one of them moves in training mode.
///
/// # Panics
/// When they do not: this is for tests.
pub fn check_batch_norm_moves_only_in_training(
    model: &dyn ClassMapModel,
    varmap: &VarMap,
    n_buffers: usize,
) {
    let xs = seeded_randn((4, 3, 32, 32), 1)
        .unwrap()
        .affine(2.0, 0.5)
        .unwrap();
    let before = running_stats(varmap);
    assert_eq!(before.len(), n_buffers);
    model.forward_t(&xs, false).unwrap();
    assert_eq!(
        running_stats(varmap),
        before,
        "eval mode moved the statistics"
    );
    model.forward_t(&xs, true).unwrap();
    for ((name, old), (_, new)) in before.iter().zip(running_stats(varmap)) {
        assert_ne!(old, &new, "{name} did not move in training mode");
    }
}

/// `model` (with dropout) gives the same logits twice in evaluation mode and different ones in
/// training mode under two dropout seeds.
///
/// # Panics
/// When it does not: this is for tests.
pub fn check_dropout_only_in_training(model: &dyn ClassMapModel) {
    let xs = seeded_randn((2, 3, 32, 32), 2).unwrap();
    let logits = |train| {
        model
            .forward_t(&xs, train)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    };
    assert_eq!(logits(false), logits(false));
    model.dropout_rng().reseed(1);
    let a = logits(true);
    model.dropout_rng().reseed(2);
    assert_ne!(
        a,
        logits(true),
        "dropout with other masks gave the same logits"
    );
}

/// How [`assert_memorises_64_images`] trains.
#[derive(Clone, Copy, Debug)]
pub struct Memorise {
    /// candle's AdamW learning rate.
    pub lr: f64,
    /// Steps before the test gives up.
    pub max_steps: usize,
    /// Steps between two judgements (each an extra forward pass in evaluation mode).
    pub check_every: usize,
}

/// Trains `model` (the variables of `varmap`) on the first 64 real CIFAR-10 training images with
/// candle's AdamW, judging accuracy on them in evaluation mode every `check_every` steps, and
/// returns once it reaches 100 %. candle's AdamW is enough: this checks that a model can learn,
/// not our optimisers (whose PyTorch semantics nin-train tests). Skips, with a message, when the
/// archive is absent (fails under CI, see [`shared_data_file`]).
///
/// # Panics
/// When 100 % is not reached within `max_steps`, with the last judgements (step, loss, accuracy).
pub fn assert_memorises_64_images(model: &dyn ClassMapModel, varmap: &VarMap, run: Memorise) {
    use candle_nn::Optimizer;
    const N_IMAGES: usize = 64;
    // Absent data skips with a message (fails under CI) inside `cifar10_head`.
    let Some((xs, ys, labels)) = cifar10_head(N_IMAGES) else {
        return;
    };
    let params = candle_nn::ParamsAdamW {
        lr: run.lr,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(varmap.all_vars(), params).unwrap();
    let accuracy = |logits: &Tensor| {
        let pred = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap();
        pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / N_IMAGES as f64
    };
    let mut history = Vec::new();
    for step in 0..run.max_steps {
        let logits = model.forward_t(&xs, true).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &ys).unwrap();
        opt.backward_step(&loss).unwrap();
        if step % run.check_every != run.check_every - 1 {
            continue;
        }
        let acc = accuracy(&model.forward_t(&xs, false).unwrap());
        history.push((step + 1, loss.to_scalar::<f32>().unwrap(), acc));
        if acc == 1.0 {
            eprintln!("100 % training accuracy after {} steps", step + 1);
            return;
        }
    }
    panic!(
        "did not reach 100 % on {N_IMAGES} images in {} steps: {:?}",
        run.max_steps,
        &history[history.len().saturating_sub(5)..]
    );
}

/// max |got − want| / max |want|, with the scale floored at 1e-4: the relative error of a whole
/// tensor. The floor keeps gradients that are zero in theory (a convolution bias followed by
/// batch norm: about 1e-9 in float) from comparing rounding noise.
///
/// # Panics
/// When the shapes differ or a value cannot be read: this is for tests.
pub fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    rel_err_floored(got, want, 1e-4)
}

/// [`rel_err`] with the scale floored at `floor`.
///
/// # Panics
/// When the shapes differ or a value cannot be read: this is for tests.
pub fn rel_err_floored(got: &Tensor, want: &Tensor, floor: f64) -> f64 {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let scalar = |t: candle_core::Result<Tensor>| -> f64 {
        t.and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.to_scalar::<f64>())
            .unwrap_or(f64::NAN)
    };
    let diff = scalar((got - want).and_then(|d| d.abs()).and_then(|d| d.max_all()));
    let scale = scalar(want.abs().and_then(|w| w.max_all()));
    diff / scale.max(floor)
}

/// What [`check_golden_fixture`] compared in one case of a fixture.
#[derive(Clone, Debug)]
pub struct GoldenCase {
    /// The case's name in the fixture.
    pub name: String,
    /// Gradients compared (one per trainable tensor).
    pub n_grads: usize,
    /// Buffers (batch-norm running statistics) compared after the step.
    pub n_buffers: usize,
}

#[derive(serde::Deserialize)]
struct CaseMeta<C> {
    config: C,
    train: bool,
    dtype: String,
}

/// Checks a model family against a fixture written by one of the `gen_*_golden.py` scripts.
///
/// For every case (a metadata entry `{config, train, dtype}` plus tensors `{case}.param.*`,
/// `input`, `labels`, `class_maps`, `logits`, `loss`, `grad.*` and `after.*`), PyTorch's state
/// dict is loaded into a `VarMap`, `build` makes the model from it, and the class maps, logits,
/// cross-entropy loss, every gradient and every buffer after the step must match: float32 cases
/// to `tolerance`, float64 cases to 1e-9 (relative to the tensor's largest value, floored at
/// 1e-2 in float32 and 1e-4 in float64). The model must ask for exactly PyTorch's tensors.
///
/// # Panics
/// On any mismatch or unreadable fixture: this is for tests.
pub fn check_golden_fixture<C: DeserializeOwned>(
    path: &Path,
    tolerance: f64,
    build: impl Fn(&C, VarBuilder<'static>) -> Box<dyn ClassMapModel>,
) -> Vec<GoldenCase> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let mut cases = Vec::new();
    for (name, json) in meta.iter().filter(|(k, _)| *k != "torch") {
        let case: CaseMeta<C> = serde_json::from_str(json).unwrap();
        let get = |key: &str| tensors[&format!("{name}.{key}")].clone();
        // The floor of the relative error's scale: a gradient that is zero in theory (the bias
        // of a convolution that batch norm follows) is rounding noise that depends on the order
        // of summation, about 1e-17 in float64 and up to 1e-7 in float32.
        let (dtype, tolerance, floor) = match case.dtype.as_str() {
            "float64" => (DType::F64, 1e-9, 1e-4),
            _ => (DType::F32, tolerance, 1e-2),
        };
        let rel_err = |got: &Tensor, want: &Tensor| rel_err_floored(got, want, floor);

        let varmap = VarMap::new();
        let prefix = format!("{name}.param.");
        {
            let mut data = varmap.data().lock().unwrap();
            for (key, value) in tensors.iter().filter(|(k, _)| k.starts_with(&prefix)) {
                let var = Var::from_tensor(value).unwrap();
                data.insert(key[prefix.len()..].to_string(), var);
            }
        }
        let n_loaded = varmap.all_vars().len();
        let model = build(
            &case.config,
            seeded_var_builder(&varmap, 0, dtype, &Device::Cpu),
        );
        assert_eq!(
            varmap.all_vars().len(),
            n_loaded,
            "{name}: the model asked for tensors PyTorch does not have"
        );

        let maps = model.class_maps(&get("input"), case.train).unwrap();
        let logits = nin_layers::global_avg_pool(&maps).unwrap();
        let err = rel_err(&maps, &get("class_maps"));
        assert!(
            err < tolerance,
            "{name}: class maps differ by {err} (relative)"
        );
        let err = rel_err(&logits, &get("logits"));
        assert!(err < tolerance, "{name}: logits differ by {err} (relative)");
        let labels = get("labels").to_dtype(DType::U32).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
        let err = rel_err(&loss.reshape(1).unwrap(), &get("loss"));
        assert!(err < tolerance, "{name}: loss differs by {err} (relative)");

        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let (mut n_grads, mut n_buffers) = (0, 0);
        for (key, var) in data.iter() {
            if let Some(grad) = tensors.get(&format!("{name}.grad.{key}")) {
                let err = rel_err(grads.get(var.as_tensor()).unwrap(), grad);
                assert!(
                    err < tolerance,
                    "{name}: gradient of {key} differs by {err}"
                );
                n_grads += 1;
            } else {
                let after = &tensors[&format!("{name}.after.{key}")];
                let err = rel_err(var.as_tensor(), after);
                assert!(
                    err < tolerance,
                    "{name}: buffer {key} after the step differs by {err}"
                );
                n_buffers += 1;
            }
        }
        cases.push(GoldenCase {
            name: name.clone(),
            n_grads,
            n_buffers,
        });
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE_ENV: &str = "NIN_TESTKIT_PROBE";

    /// Asks for a file of `../shared/data` that never exists; does nothing unless run as the
    /// child of `absent_data_skips_off_ci_and_fails_under_ci`.
    #[test]
    fn absent_file_probe() {
        if std::env::var_os(PROBE_ENV).is_some() {
            assert!(shared_data_file("no-such-file-of-the-test-suite.bin").is_none());
        }
    }

    /// Runs the probe in a child process (this test binary), where `CI` can be set or removed
    /// without racing the other tests of this process.
    fn probe(ci: Option<&str>) -> std::process::Output {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "tests::absent_file_probe", "--nocapture"])
            .env(PROBE_ENV, "1");
        match ci {
            Some(v) => cmd.env("CI", v),
            None => cmd.env_remove("CI"),
        };
        cmd.output().unwrap()
    }

    #[test]
    fn absent_data_skips_off_ci_and_fails_under_ci() {
        for ci in [None, Some("false"), Some("0")] {
            let out = probe(ci);
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "CI={ci:?}: {text}");
            assert!(
                text.contains("skipping: ../shared/data/no-such-file"),
                "{text}"
            );
        }
        for ci in ["true", "1"] {
            let out = probe(Some(ci));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "CI={ci}: {text}");
            assert!(text.contains("but CI is set"), "CI={ci}: {text}");
        }
    }
}
