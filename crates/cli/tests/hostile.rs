//! Hostile inputs, one row per input: every file and flag a user can hand `nin` — model
//! directories (config, weights, whitening), images, recipes, run folders, flags — damaged in the
//! ways that occur in practice or on purpose. Each row names the exit code expected and words the
//! message must contain; no row may panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::train::{nin, TestResult};

/// A hostile case: how to build it in a scratch folder, and what `nin` must answer.
struct Case {
    name: &'static str,
    /// Writes what the case needs into the folder and returns the arguments to run.
    setup: fn(&Path) -> Vec<String>,
    code: i32,
    words: &'static [&'static str],
}

const PRETRAINED: &str = r#""pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}"#;

/// A valid model directory of a small NIN at `dir/model`, with `config` as its config.json
/// (`None`: the valid one).
fn model(dir: &Path, config: Option<&str>) -> PathBuf {
    let small = serde_json::json!({"mlpconv1": [16, 16, 16], "mlpconv2": [16, 16, 16], "mlpconv3": [16, 16]});
    let created = nin_zoo::create_model("nin", 10, Some(&small), 1, &Device::Cpu)
        .expect("the small NIN builds");
    let out = dir.join("model");
    std::fs::create_dir_all(&out).expect("scratch folder");
    nin_layers::weights::save_weights(
        &out.join("model.safetensors"),
        &created.varmap,
        &BTreeMap::new(),
    )
    .expect("weights written");
    let valid = format!(
        r#"{{"model": "nin", "num_classes": 10, "model_args": {}, {PRETRAINED}}}"#,
        created.args
    );
    std::fs::write(out.join("config.json"), config.unwrap_or(&valid)).expect("config written");
    out
}

/// The small NIN's model directory with `pretrained_cfg` as given (a JSON object).
fn model_with_pretrained(dir: &Path, pretrained_cfg: &str) -> PathBuf {
    let m = model(dir, None);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("config.json")).expect("read")).expect("json");
    cfg["pretrained_cfg"] = serde_json::from_str(pretrained_cfg).expect("pretrained_cfg json");
    std::fs::write(m.join("config.json"), cfg.to_string()).expect("written");
    m
}

/// A 40×30 red PNG at `dir/name`.
fn png(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 30, 30]))
        .save_with_format(&path, image::ImageFormat::Png)
        .expect("png written");
    path
}

fn predict(model: &Path, image: &Path) -> Vec<String> {
    ["predict", "--model"]
        .iter()
        .map(|s| s.to_string())
        .chain([model.display().to_string(), image.display().to_string()])
        .collect()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Rewrites the model's weights with `edit` applied to its tensors.
fn edit_weights(model: &Path, edit: fn(&mut BTreeMap<String, Tensor>)) {
    let path = model.join("model.safetensors");
    let mut tensors: BTreeMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu)
        .expect("weights read")
        .into_iter()
        .collect();
    edit(&mut tensors);
    nin_layers::weights::write_safetensors(&path, &tensors, &BTreeMap::new())
        .expect("weights rewritten");
}

/// A PNG header declaring `width × height`, with a valid CRC, and a few bytes of image data:
/// what a decompression bomb looks like before it is decoded.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend(kind);
        out.extend(data);
        out.extend(crc.sum().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A `.tar.gz` at `dir/cifar-10-binary.tar.gz` of `(member, declared size, bytes)` entries,
/// headers written as given (a declared size may exceed the bytes that follow).
fn archive(dir: &Path, members: &[(&str, u64, &[u8])]) -> PathBuf {
    let mut tar = Vec::new();
    for (name, size, data) in members {
        let mut header = tar::Header::new_gnu();
        header
            .set_path(format!("cifar-10-batches-bin/{name}"))
            .expect("member name");
        header.set_size(*size);
        header.set_mode(0o644);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let path = dir.join("cifar-10-binary.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).expect("gzip");
    std::fs::write(&path, gz.finish().expect("gzip")).expect("archive written");
    path
}

fn data_info(data: &Path) -> Vec<String> {
    strings(&["data", "info", "--data", &data.display().to_string()])
}

/// The plain state dict of `testdata/gen_import_fixture.py`.
fn fixture_pth() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/seq_nin_plain.pth")
}

/// `nin import --pth PATH --model nin --dry-run` plus `extra`.
fn import(path: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&[
        "import",
        "--pth",
        &path.display().to_string(),
        "--model",
        "nin",
        "--dry-run",
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn cases() -> Vec<Case> {
    vec![
        // Archives and record files.
        Case {
            name: "an archive of garbage",
            setup: |d| {
                let path = d.join("cifar-10-binary.tar.gz");
                std::fs::write(&path, b"\x1f\x8b\x08garbage\x00\xff\xfe not gzip at all")
                    .expect("written");
                data_info(&path)
            },
            code: 2,
            words: &["cifar-10-binary.tar.gz"],
        },
        Case {
            name: "a member declaring 2^63 bytes",
            setup: |d| data_info(&archive(d, &[("data_batch_1.bin", 1 << 63, b"tiny")])),
            code: 2,
            words: &["data_batch_1.bin", "more than the"],
        },
        Case {
            name: "a member declaring 1 TiB",
            setup: |d| data_info(&archive(d, &[("test_batch.bin", 1 << 40, b"tiny")])),
            code: 2,
            words: &["test_batch.bin", "more than the"],
        },
        Case {
            name: "a member stored twice",
            setup: |d| {
                let record = [0u8; 3073];
                data_info(&archive(
                    d,
                    &[
                        ("data_batch_1.bin", 3073, &record),
                        ("data_batch_1.bin", 3073, &record),
                    ],
                ))
            },
            code: 2,
            words: &["data_batch_1.bin", "more than once"],
        },
        Case {
            name: "an extracted record file of a partial record",
            setup: |d| {
                let folder = d.join("cifar-10-batches-bin");
                std::fs::create_dir(&folder).expect("folder");
                for name in ["data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin"]
                    .into_iter()
                    .chain(["data_batch_5.bin", "test_batch.bin"])
                {
                    std::fs::write(folder.join(name), [0u8; 3073]).expect("written");
                }
                let names = (0..10).map(|i| format!("class{i}\n")).collect::<String>();
                std::fs::write(folder.join("batches.meta.txt"), names).expect("written");
                std::fs::write(folder.join("data_batch_1.bin"), [0u8; 5000]).expect("written");
                data_info(&folder)
            },
            code: 2,
            words: &["data_batch_1.bin", "partial record"],
        },
        // Model directories.
        Case {
            name: "model directory missing",
            setup: |d| predict(&d.join("absent"), &png(d, "a.png")),
            code: 2,
            words: &["absent", "not a directory"],
        },
        Case {
            name: "config.json not JSON",
            setup: |d| predict(&model(d, Some("{model: nin")), &png(d, "a.png")),
            code: 2,
            words: &["config.json", "not a valid file"],
        },
        Case {
            name: "config.json missing",
            setup: |d| {
                let m = model(d, None);
                std::fs::remove_file(m.join("config.json")).expect("removed");
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["config.json"],
        },
        Case {
            name: "config.json is a folder",
            setup: |d| {
                let m = model(d, None);
                std::fs::remove_file(m.join("config.json")).expect("removed");
                std::fs::create_dir(m.join("config.json")).expect("folder");
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["config.json", "folder"],
        },
        Case {
            name: "config.json links to an endless device",
            setup: |d| {
                let m = model(d, None);
                std::fs::remove_file(m.join("config.json")).expect("removed");
                std::os::unix::fs::symlink("/dev/zero", m.join("config.json")).expect("link");
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["config.json", "more than"],
        },
        Case {
            name: "unknown model",
            setup: |d| {
                let cfg = format!(r#"{{"model": "resnet50", "num_classes": 10, {PRETRAINED}}}"#);
                predict(&model(d, Some(&cfg)), &png(d, "a.png"))
            },
            code: 2,
            words: &["unknown model `resnet50`", "nin_bn"],
        },
        Case {
            name: "num_classes disagrees with model_args",
            setup: |d| {
                let cfg = format!(
                    r#"{{"model": "nin", "num_classes": 100, "model_args": {{"num_classes": 10}}, {PRETRAINED}}}"#
                );
                predict(&model(d, Some(&cfg)), &png(d, "a.png"))
            },
            code: 2,
            words: &["num_classes"],
        },
        Case {
            name: "label_names of the wrong length",
            setup: |d| {
                let cfg = format!(
                    r#"{{"model": "nin", "num_classes": 10, {PRETRAINED}, "label_names": ["cat", "dog"]}}"#
                );
                predict(&model(d, Some(&cfg)), &png(d, "a.png"))
            },
            code: 2,
            words: &["2 label_names for 10 classes"],
        },
        Case {
            name: "a width of 10^9 in model_args",
            setup: |d| {
                let cfg = format!(
                    r#"{{"model": "nin", "num_classes": 10, "model_args": {{"num_classes": 10, "mlpconv1": [1000000000, 16, 16]}}, {PRETRAINED}}}"#
                );
                predict(&model(d, Some(&cfg)), &png(d, "a.png"))
            },
            code: 2,
            words: &["mlpconv1[0]", "1000000000"],
        },
        Case {
            name: "a misspelt model_args field",
            setup: |d| {
                let cfg = format!(
                    r#"{{"model": "nin", "num_classes": 10, "model_args": {{"num_classes": 10, "mlpconvv1": [16, 16, 16]}}, {PRETRAINED}}}"#
                );
                predict(&model(d, Some(&cfg)), &png(d, "a.png"))
            },
            code: 2,
            words: &["mlpconvv1"],
        },
        Case {
            name: "whitening that points outside the directory",
            setup: |d| {
                let m = model_with_pretrained(
                    d,
                    r#"{"input_size": [3, 32, 32],
                    "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "whitening": "/etc/passwd"}"#,
                );
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["pretrained_cfg.whitening", "/etc/passwd"],
        },
        Case {
            name: "whitening file missing",
            setup: |d| {
                let m = model_with_pretrained(
                    d,
                    r#"{"input_size": [3, 32, 32],
                    "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "whitening": "whitening.safetensors"}"#,
                );
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["whitening.safetensors", "not a whitening file"],
        },
        Case {
            name: "empty input size",
            setup: |d| {
                let m = model_with_pretrained(
                    d,
                    r#"{"input_size": [3, 0, 0],
                    "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}"#,
                );
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["config.json: pretrained_cfg.input_size"],
        },
        Case {
            name: "zero std",
            setup: |d| {
                let m = model_with_pretrained(
                    d,
                    r#"{"input_size": [3, 32, 32],
                    "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.0, 0.25]}"#,
                );
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["pretrained_cfg", "std"],
        },
        Case {
            name: "weights missing",
            setup: |d| {
                let m = model(d, None);
                std::fs::remove_file(m.join("model.safetensors")).expect("removed");
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["model.safetensors"],
        },
        Case {
            name: "weights truncated",
            setup: |d| {
                let m = model(d, None);
                let path = m.join("model.safetensors");
                let bytes = std::fs::read(&path).expect("read");
                std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncated");
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["model.safetensors", "not a valid safetensors file"],
        },
        Case {
            name: "weights of garbage",
            setup: |d| {
                let m = model(d, None);
                std::fs::write(m.join("model.safetensors"), [0xffu8; 64]).expect("garbage");
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["model.safetensors", "not a valid safetensors file"],
        },
        Case {
            name: "a tensor of the wrong shape",
            setup: |d| {
                let m = model(d, None);
                edit_weights(&m, |t| {
                    let w = Tensor::zeros((16, 3, 3, 3), candle_core::DType::F32, &Device::Cpu)
                        .expect("tensor");
                    t.insert("mlpconv1.conv.weight".into(), w);
                });
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &[
                "mlpconv1.conv.weight",
                "expected shape [16, 3, 5, 5], got [16, 3, 3, 3]",
            ],
        },
        Case {
            name: "a tensor missing",
            setup: |d| {
                let m = model(d, None);
                edit_weights(&m, |t| {
                    t.remove("mlpconv2.conv.bias");
                });
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["tensor `mlpconv2.conv.bias` is missing"],
        },
        Case {
            name: "an unknown tensor",
            setup: |d| {
                let m = model(d, None);
                edit_weights(&m, |t| {
                    let extra =
                        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).expect("tensor");
                    t.insert("fc.weight".into(), extra);
                });
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["unexpected tensor `fc.weight`"],
        },
        Case {
            name: "NaN weights",
            setup: |d| {
                let m = model(d, None);
                edit_weights(&m, |t| {
                    let nan = (t["mlpconv1.conv.bias"].ones_like().expect("ones") * f64::NAN)
                        .expect("nan");
                    t.insert("mlpconv1.conv.bias".into(), nan);
                });
                predict(&m, &png(d, "a.png"))
            },
            code: 2,
            words: &["tensor `mlpconv1.conv.bias` holds NaN or infinite values"],
        },
        // Images.
        Case {
            name: "image missing",
            setup: |d| predict(&model(d, None), &d.join("cat.png")),
            code: 2,
            words: &["cat.png", "cannot open"],
        },
        Case {
            name: "a folder given as an image",
            setup: |d| predict(&model(d, None), d),
            code: 2,
            words: &["is a folder, not an image file"],
        },
        Case {
            name: "garbage named .png",
            setup: |d| {
                let path = d.join("notes.png");
                std::fs::write(&path, b"these are my notes, not a picture").expect("written");
                predict(&model(d, None), &path)
            },
            code: 2,
            words: &["notes.png", "not a readable PNG or JPEG image"],
        },
        Case {
            name: "a PNG named .jpg is read by its contents",
            setup: |d| predict(&model(d, None), &png(d, "photo.jpg")),
            code: 0,
            words: &["photo.jpg"],
        },
        Case {
            name: "a truncated JPEG",
            setup: |d| {
                let path = d.join("cut.jpg");
                image::RgbImage::from_pixel(64, 64, image::Rgb([10, 200, 30]))
                    .save_with_format(&path, image::ImageFormat::Jpeg)
                    .expect("jpeg written");
                let bytes = std::fs::read(&path).expect("read");
                std::fs::write(&path, &bytes[..bytes.len() / 3]).expect("truncated");
                predict(&model(d, None), &path)
            },
            code: 2,
            words: &["cut.jpg", "not a readable PNG or JPEG image"],
        },
        Case {
            name: "a PNG declaring 20000×20000 pixels",
            setup: |d| {
                let path = d.join("bomb.png");
                std::fs::write(&path, png_header(20_000, 20_000)).expect("written");
                predict(&model(d, None), &path)
            },
            code: 2,
            words: &["bomb.png", "not a readable PNG or JPEG image"],
        },
        // Flags.
        Case {
            name: "--top-k 0",
            setup: |d| {
                let mut args = predict(&model(d, None), &png(d, "a.png"));
                args.extend(strings(&["--top-k", "0"]));
                args
            },
            code: 2,
            words: &["--top-k"],
        },
        Case {
            name: "--threads 100000",
            setup: |_| strings(&["predict", "--model", "m", "x.png", "--threads", "100000"]),
            code: 2,
            words: &["--threads: expected 1 to 1024, got 100000"],
        },
        Case {
            name: "--device cuda in a CPU build",
            setup: |d| {
                let mut args = predict(&model(d, None), &png(d, "a.png"));
                args.extend(strings(&["--device", "cuda"]));
                args
            },
            code: 2,
            words: &["--device cuda", "--features cuda"],
        },
        Case {
            name: "--device of another kind",
            setup: |_| strings(&["train", "--device", "tpu"]),
            code: 2,
            words: &["--device tpu: expected cpu, cuda or cuda:N"],
        },
        Case {
            name: "--limit-train 0",
            setup: |_| strings(&["train", "--limit-train", "0"]),
            code: 2,
            words: &["--limit-train"],
        },
        Case {
            name: "--val 0",
            setup: |_| strings(&["train", "--val", "0"]),
            code: 2,
            words: &["--val"],
        },
        Case {
            name: "--epochs 0",
            setup: |_| strings(&["train", "--epochs", "0"]),
            code: 2,
            words: &["--epochs"],
        },
        Case {
            name: "--model-args that is not an object",
            setup: |_| strings(&["train", "--model-args", "[1, 2]", "--data", "/nonexistent"]),
            code: 2,
            words: &["expected a JSON object"],
        },
        Case {
            name: "--model-args with a width of 10^9",
            setup: |_| {
                strings(&[
                    "train",
                    "--model-args",
                    r#"{"mlpconv1": [1000000000, 160, 96]}"#,
                    "--data",
                    "/nonexistent",
                ])
            },
            code: 2,
            words: &["mlpconv1[0]"],
        },
        Case {
            name: "--data that does not exist",
            setup: |_| strings(&["train", "--data", "/nonexistent/cifar"]),
            code: 2,
            words: &["--data /nonexistent/cifar"],
        },
        // Recipes.
        Case {
            name: "unknown recipe name",
            setup: |_| strings(&["train", "--recipe", "fast"]),
            code: 2,
            words: &["unknown recipe `fast`", "cpu_quick"],
        },
        Case {
            name: "recipe file missing",
            setup: |d| strings(&["train", "--recipe", &d.join("r.json").display().to_string()]),
            code: 2,
            words: &["--recipe", "r.json"],
        },
        Case {
            name: "recipe file not ending in .json",
            setup: |d| {
                let path = d.join("recipe.txt");
                std::fs::write(&path, "{}").expect("written");
                strings(&["train", "--recipe", &path.display().to_string()])
            },
            code: 2,
            words: &["must end in .json"],
        },
        Case {
            name: "recipe file with a bad value",
            setup: |d| {
                let path = d.join("r.json");
                let mut recipe =
                    serde_json::to_value(nin_format::Recipe::cpu_quick()).expect("json");
                recipe["batch_size"] = 0.into();
                std::fs::write(&path, recipe.to_string()).expect("written");
                strings(&["train", "--recipe", &path.display().to_string()])
            },
            code: 2,
            words: &["r.json", "`batch_size` must be > 0"],
        },
        Case {
            name: "recipe file with an unknown field",
            setup: |d| {
                let path = d.join("r.json");
                let mut recipe =
                    serde_json::to_value(nin_format::Recipe::cpu_quick()).expect("json");
                recipe["epoch"] = 3.into();
                std::fs::write(&path, recipe.to_string()).expect("written");
                strings(&["train", "--recipe", &path.display().to_string()])
            },
            code: 2,
            words: &["r.json", "unknown field `epoch`"],
        },
        // Run folders.
        Case {
            name: "--resume on an empty folder",
            setup: |d| strings(&["train", "--resume", "--out", &d.display().to_string()]),
            code: 2,
            words: &["holds no run to resume", "run.json"],
        },
        Case {
            name: "--resume with a damaged run.json",
            setup: |d| {
                std::fs::write(d.join("run.json"), "{\"recipe\": ").expect("written");
                strings(&["train", "--resume", "--out", &d.display().to_string()])
            },
            code: 2,
            words: &["run.json"],
        },
        Case {
            name: "eval --split val without a run to read the hold-out from",
            setup: |d| {
                let m = model(d, None);
                strings(&[
                    "eval",
                    "--model",
                    &m.display().to_string(),
                    "--split",
                    "val",
                    "--data",
                    "/nonexistent",
                ])
            },
            code: 2,
            words: &["--split val", "no run.json"],
        },
        // Fine-tuning, export and import.
        Case {
            name: "train --init-from a folder that does not exist",
            setup: |d| {
                strings(&[
                    "train",
                    "--init-from",
                    &d.join("nope").display().to_string(),
                ])
            },
            code: 2,
            words: &["--init-from", "nope", "not a model directory"],
        },
        Case {
            name: "train --init-from a model with a damaged config.json",
            setup: |d| {
                let m = model(d, Some("{\"model\": "));
                strings(&["train", "--init-from", &m.display().to_string()])
            },
            code: 2,
            words: &["--init-from", "config.json"],
        },
        Case {
            name: "export of a folder that is neither a run nor a model",
            setup: |d| {
                strings(&[
                    "export",
                    &d.display().to_string(),
                    "--out",
                    &d.join("repo").display().to_string(),
                ])
            },
            code: 2,
            words: &["holds neither run.json", "config.json"],
        },
        Case {
            name: "import of a file that is not a checkpoint",
            setup: |d| {
                let path = d.join("x.pth");
                std::fs::write(&path, b"not a zip at all").expect("written");
                import(&path, &[])
            },
            code: 2,
            words: &["x.pth", "not a PyTorch checkpoint"],
        },
        Case {
            name: "import of a truncated checkpoint",
            setup: |d| {
                let path = d.join("cut.pth");
                let bytes = std::fs::read(fixture_pth()).expect("fixture");
                std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("written");
                import(&path, &[])
            },
            code: 2,
            words: &["cut.pth", "not a PyTorch checkpoint"],
        },
        Case {
            name: "import of a zip whose pickle is garbage",
            setup: |d| {
                let path = d.join("garbage.pth");
                let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).expect("created"));
                let stored = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                zip.start_file("archive/data.pkl", stored).expect("member");
                std::io::Write::write_all(&mut zip, b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02)Rq\x03u.")
                    .expect("pickle");
                zip.finish().expect("zip");
                import(&path, &[])
            },
            code: 2,
            words: &["garbage.pth"],
        },
        Case {
            name: "import of a checkpoint whose storage is shorter than its tensor",
            setup: |d| {
                // The fixture re-zipped with one storage cut in half.
                let path = d.join("short.pth");
                let mut src =
                    zip::ZipArchive::new(std::fs::File::open(fixture_pth()).expect("fixture"))
                        .expect("zip");
                let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).expect("created"));
                let stored = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                for i in 0..src.len() {
                    let mut member = src.by_index(i).expect("member");
                    let name = member.name().expect("member name").into_owned();
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut member, &mut bytes).expect("read");
                    if name.ends_with("/data/0") {
                        bytes.truncate(bytes.len() / 2);
                    }
                    zip.start_file(name, stored).expect("member");
                    std::io::Write::write_all(&mut zip, &bytes).expect("written");
                }
                zip.finish().expect("zip");
                import(&path, &[])
            },
            code: 2,
            words: &["short.pth", "bytes of storage"],
        },
        Case {
            name: "import --key naming no entry",
            setup: |_| import(&fixture_pth(), &["--key", "weights"]),
            code: 2,
            words: &["seq_nin_plain.pth", "--key weights"],
        },
        Case {
            name: "import --map with an invalid regex",
            setup: |_| import(&fixture_pth(), &["--map", "features.(0=x"]),
            code: 2,
            words: &["--map features.(0=x", "not a valid regex"],
        },
        Case {
            name: "import --map without =",
            setup: |_| import(&fixture_pth(), &["--map", "features"]),
            code: 2,
            words: &["--map features", "REGEX=REPLACEMENT"],
        },
        // nin explain's flags.
        Case {
            name: "explain --alpha 2",
            setup: |_| {
                strings(&[
                    "explain", "--model", "m", "a.png", "--out", "o", "--alpha", "2",
                ])
            },
            code: 2,
            words: &["--alpha 2", "from 0 to 1"],
        },
        Case {
            name: "explain --size 5",
            setup: |_| {
                strings(&[
                    "explain", "--model", "m", "a.png", "--out", "o", "--size", "5",
                ])
            },
            code: 2,
            words: &["--size 5", "32 to 1024"],
        },
        Case {
            name: "explain --grid 0",
            setup: |_| strings(&["explain", "--model", "m", "--grid", "0", "--out", "o.png"]),
            code: 2,
            words: &["--grid 0", "1 to 20"],
        },
        Case {
            name: "explain --grid with --class",
            setup: |_| {
                strings(&[
                    "explain", "--model", "m", "--grid", "2", "--class", "cat", "--out", "o.png",
                ])
            },
            code: 2,
            words: &["--class", "--grid"],
        },
        Case {
            name: "explain without images or --grid",
            setup: |_| strings(&["explain", "--model", "m", "--out", "o"]),
            code: 2,
            words: &["IMAGE", "--grid"],
        },
        Case {
            name: "explain --top-k beyond the classes",
            setup: |d| {
                let model = model(d, None).display().to_string();
                let image = png(d, "a.png").display().to_string();
                strings(&[
                    "explain", "--model", &model, &image, "--out", "o", "--top-k", "11",
                ])
            },
            code: 2,
            words: &["--top-k 11", "1 to 10"],
        },
    ]
}

#[test]
fn every_hostile_input_gets_a_clear_error_and_none_panics() -> TestResult {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let tmp = tempfile::tempdir()?;
        let args = (case.setup)(tmp.path());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = nin(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        let problems: Vec<String> = [
            (out.status.code() != Some(case.code))
                .then(|| format!("exit {:?}, expected {}", out.status.code(), case.code)),
            err.contains("panicked at").then(|| "panicked".to_string()),
        ]
        .into_iter()
        .flatten()
        .chain(
            case.words
                .iter()
                .filter(|w| {
                    !err.contains(**w) && !String::from_utf8_lossy(&out.stdout).contains(**w)
                })
                .map(|w| format!("message lacks `{w}`")),
        )
        .collect();
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  stderr: {err}",
                case.name,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile inputs misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} hostile inputs, each refused as expected", cases.len());
    Ok(())
}
