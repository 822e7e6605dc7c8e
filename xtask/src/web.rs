//! `cargo xtask web`: builds the browser demo (crates/web) into a folder of static files that
//! any web server can serve: the wasm module and its JavaScript glue (cargo, then the
//! wasm-bindgen CLI of the version crates/web pins), the page (`crates/web/www/`), the shipped
//! pretrained models (`pretrained/<tag>/`, fetched by the page from its own origin) and a strip
//! of CIFAR-10 test images as PNGs, extracted from the archive at build time (never committed).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use nin_format::CIFAR10_LABELS;
use nin_format::{write_atomic, ModelDirConfig};

/// How many CIFAR-10 test images the page's strip shows.
pub const SAMPLES: usize = 12;

/// What `cargo xtask web` needs to know.
#[derive(Debug)]
pub struct WebArgs {
    /// The output folder.
    pub out: PathBuf,
    /// The CIFAR-10 binary archive the test images come from.
    pub data: PathBuf,
}

/// Builds the page into `args.out` and prints what it holds and how large it is.
pub fn build(root: &Path, args: &WebArgs) -> anyhow::Result<()> {
    let version = pinned_wasm_bindgen(root)?;
    check_wasm_bindgen(&version)?;
    let wasm = build_wasm(root)?;
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let pkg = out.join("pkg");
    if pkg.exists() {
        std::fs::remove_dir_all(&pkg).with_context(|| format!("removing {}", pkg.display()))?;
    }
    run(Command::new("wasm-bindgen")
        .args(["--target", "web", "--no-typescript", "--out-dir"])
        .arg(&pkg)
        .arg(&wasm))?;
    let www = root.join("crates/web/www");
    for entry in std::fs::read_dir(&www).with_context(|| format!("reading {}", www.display()))? {
        let path = entry?.path();
        if path.is_file() {
            copy(&path, &out.join(path.file_name().unwrap_or_default()))?;
        }
    }
    let models = copy_models(&root.join("pretrained"), &out.join("models"))?;
    write_samples(&args.data, &out.join("samples"))?;

    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let wasm_bytes = size(&pkg.join("nin_web_bg.wasm"));
    let js_bytes = size(&pkg.join("nin_web.js")) + size(&out.join("app.js"));
    let weights: u64 = models.iter().map(|p| size(p)).sum();
    println!("web: built {}", out.display());
    println!(
        "web: download: wasm {:.0} KiB, JavaScript {:.0} KiB, models {:.0} KiB ({} files)",
        wasm_bytes as f64 / 1024.0,
        js_bytes as f64 / 1024.0,
        weights as f64 / 1024.0,
        models.len()
    );
    println!(
        "web: serve it with any static server, e.g. `python3 -m http.server -d {} 8000`",
        out.display()
    );
    Ok(())
}

/// The wasm-bindgen version crates/web pins (`wasm-bindgen = "=X.Y.Z"`): the CLI must be the
/// same, or the glue it writes does not match the module.
fn pinned_wasm_bindgen(root: &Path) -> anyhow::Result<String> {
    let manifest = root.join("crates/web/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let spec = doc
        .get("dependencies")
        .and_then(|d| d.get("wasm-bindgen"))
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    match spec.strip_prefix('=') {
        Some(v) => Ok(v.to_string()),
        None => bail!(
            "{}: wasm-bindgen must be pinned as \"=X.Y.Z\" (the CLI must match it), found {spec:?}",
            manifest.display()
        ),
    }
}

/// Checks that `wasm-bindgen` on the PATH is version `version`.
fn check_wasm_bindgen(version: &str) -> anyhow::Result<()> {
    let install =
        format!("install it with `cargo install --locked wasm-bindgen-cli --version {version}`");
    let output = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .with_context(|| format!("wasm-bindgen is not on the PATH: {install}"))?;
    let found = String::from_utf8_lossy(&output.stdout);
    if found.split_whitespace().nth(1) != Some(version) {
        bail!(
            "crates/web pins wasm-bindgen {version} but the CLI says `{}`: {install}",
            found.trim()
        );
    }
    Ok(())
}

/// Builds crates/web for wasm32 in the `web` profile; returns the module's path.
fn build_wasm(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo).current_dir(root).args([
        "build",
        "-p",
        "nin-web",
        "--lib",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "web",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        root.join(target)
    };
    Ok(target.join("wasm32-unknown-unknown/web/nin_web.wasm"))
}

/// Runs a command, failing with its command line when it fails.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_atomic(to, &bytes).with_context(|| format!("writing {}", to.display()))
}

/// Copies every model directory of `pretrained/` (the registry's shipped tags) with exactly the
/// files its `config.json` names; returns the copied files.
fn copy_models(pretrained: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut copied = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(pretrained)
        .with_context(|| format!("reading {}", pretrained.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "{}: no model directory (tag/config.json) to ship",
            pretrained.display()
        );
    }
    for dir in dirs {
        let config = ModelDirConfig::load(&dir)?;
        let tag_out = out.join(dir.file_name().unwrap_or_default());
        std::fs::create_dir_all(&tag_out)?;
        for file in config.files() {
            copy(&dir.join(file), &tag_out.join(file))?;
            copied.push(tag_out.join(file));
        }
    }
    Ok(copied)
}

/// Writes the first [`SAMPLES`] images of the CIFAR-10 test batch as PNGs with `samples.json`
/// (`[{file, index, label}]`) for the page's strip.
fn write_samples(archive: &Path, out: &Path) -> anyhow::Result<()> {
    const RECORD: usize = 1 + 3 * 32 * 32;
    let file = std::fs::File::open(archive).with_context(|| {
        format!(
            "{}: the CIFAR-10 binary archive is needed for the page's test images (pass --data)",
            archive.display()
        )
    })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut records = Vec::new();
    for entry in tar
        .entries()
        .with_context(|| format!("reading {}", archive.display()))?
    {
        let entry = entry.with_context(|| format!("reading {}", archive.display()))?;
        if entry.path()?.file_name() == Some("test_batch.bin".as_ref()) {
            entry
                .take((SAMPLES * RECORD) as u64)
                .read_to_end(&mut records)
                .with_context(|| format!("reading test_batch.bin in {}", archive.display()))?;
            break;
        }
    }
    if records.len() < SAMPLES * RECORD {
        bail!(
            "{}: expected {SAMPLES} records in test_batch.bin, found {} bytes",
            archive.display(),
            records.len()
        );
    }
    std::fs::create_dir_all(out)?;
    let mut listing = Vec::new();
    for (index, record) in records.chunks_exact(RECORD).take(SAMPLES).enumerate() {
        let label = *CIFAR10_LABELS
            .get(usize::from(record[0]))
            .with_context(|| {
                format!("test image {index}: label {} is not CIFAR-10's", record[0])
            })?;
        let chw = &record[1..];
        let rgb = image::RgbImage::from_fn(32, 32, |x, y| {
            let i = (y * 32 + x) as usize;
            image::Rgb([chw[i], chw[1024 + i], chw[2048 + i]])
        });
        let mut png = std::io::Cursor::new(Vec::new());
        rgb.write_to(&mut png, image::ImageFormat::Png)?;
        let name = format!("test-{index:02}-{label}.png");
        write_atomic(&out.join(&name), png.get_ref())?;
        listing.push(serde_json::json!({"file": name, "index": index, "label": label}));
    }
    write_atomic(
        &out.join("samples.json"),
        serde_json::to_string_pretty(&listing)?.as_bytes(),
    )?;
    Ok(())
}
