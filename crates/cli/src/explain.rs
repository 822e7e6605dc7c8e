//! `nin explain`: where a model looks. Its class maps (one per class, whose mean is the logit)
//! drawn as class activation maps over the image: one PNG per image with the top-k (or a chosen)
//! class's panels beside the original, or a sheet of test images with the predicted class's map,
//! the predicted and the true label, wrong predictions framed in red. The maps, colours and
//! blending are `nin_zoo::cam`'s; this module reads inputs and lays the pictures out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use nin_data::{Dataset, LabelKind, Split};
use nin_zoo::{cam, Classifier};

use crate::common::{dataset_for_classes, load_dataset, parse_device, set_threads};
use crate::data::DatasetArg;
use crate::model_arg::resolve_model;
use crate::render::{Align, Canvas, GREY, INK, PAPER, RIGHT, WRONG};

/// Images per forward pass (bounds memory for long lists of images).
const BATCH: usize = 64;
/// The largest `--grid` (a 20×20 sheet of 400 images).
const MAX_GRID: usize = 20;
/// The panel sizes `--size` accepts, in pixels.
const SIZES: std::ops::RangeInclusive<u32> = 32..=1024;
const MARGIN: u32 = 10;
/// The narrowest per-image PNG (room for the colour bar's labels).
const MIN_PANELS_WIDTH: u32 = 420;

/// Arguments of `nin explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The model: a model directory (config.json + model.safetensors, e.g. a run folder or its
    /// best/), a pretrained tag (`nin list --pretrained`), or hf-hub:owner/name[@revision].
    #[arg(long, value_name = "MODEL")]
    model: String,
    /// Read Hub models from the local cache only, never the network (as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// PNG or JPEG files, any size (stretched to the model's input as `nin predict` does); one
    /// PNG per image is written into --out, named after the image.
    #[arg(value_name = "IMAGE", conflicts_with = "grid")]
    images: Vec<PathBuf>,
    /// With images: the folder to write into (created if needed). With --grid: the PNG file.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// How many of the most probable classes to show per image.
    #[arg(long, value_name = "K", default_value_t = 3, conflicts_with = "class")]
    top_k: usize,
    /// Show this class's map instead of the top-k: a label (`cat`) or a class index.
    #[arg(long, value_name = "LABEL")]
    class: Option<String>,
    /// An N×N sheet of the first N² test images of the dataset, each with the map of its
    /// predicted class, the predicted and the true label; wrong predictions are framed in red.
    #[arg(long, value_name = "N")]
    grid: Option<usize>,
    /// The dataset of --grid (default: CIFAR-10 for 10-class models, CIFAR-100 for 100-class
    /// ones).
    #[arg(long, value_enum, requires = "grid")]
    dataset: Option<DatasetArg>,
    /// CIFAR archive or folder for --grid (default: the cache, downloading on first use).
    #[arg(long, value_name = "PATH", requires = "grid")]
    data: Option<PathBuf>,
    /// Side of each panel in pixels (default: 192 per image, 96 on a --grid sheet).
    #[arg(long, value_name = "PIXELS")]
    size: Option<u32>,
    /// How much colour is blended over the image, from 0 (none) to 1 (only the map).
    #[arg(long, default_value_t = cam::DEFAULT_ALPHA)]
    alpha: f32,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `nin explain`.
pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    set_threads(args.threads)?;
    if !(0.0..=1.0).contains(&args.alpha) {
        bail!("--alpha {}: expected a number from 0 to 1", args.alpha);
    }
    if let Some(size) = args.size {
        if !SIZES.contains(&size) {
            bail!(
                "--size {size}: expected {} to {} pixels",
                SIZES.start(),
                SIZES.end()
            );
        }
    }
    if let Some(n) = args.grid {
        if !(1..=MAX_GRID).contains(&n) {
            bail!("--grid {n}: expected 1 to {MAX_GRID} (an N×N sheet)");
        }
        if args.class.is_some() {
            bail!("--class: a --grid sheet shows each image's predicted class; use --class with IMAGE files");
        }
    } else if args.images.is_empty() {
        bail!("nothing to explain: give IMAGE files (and --out DIR), or --grid N (and --out FILE.png)");
    }
    let device = parse_device(&args.device)?;
    let model = resolve_model(&args.model, args.offline)?;
    let classifier = Classifier::load(&model.dir, &device)
        .with_context(|| format!("--model {}", model.origin))?;
    let classes = classifier.config().num_classes;
    if args.top_k == 0 || args.top_k > classes {
        bail!(
            "--top-k {}: expected 1 to {classes} (the model's classes)",
            args.top_k
        );
    }
    match args.grid {
        Some(n) => grid(&args, &classifier, &model.origin, n),
        None => per_image(&args, &classifier),
    }
}

/// The class `--class` names: a label of the model (exactly, else ignoring case) or an index.
fn parse_class(spec: &str, classifier: &Classifier) -> anyhow::Result<usize> {
    let classes = classifier.config().num_classes;
    let labels: Vec<String> = (0..classes).map(|c| classifier.label(c)).collect();
    if let Some(c) = labels.iter().position(|l| l == spec) {
        return Ok(c);
    }
    if let Some(c) = labels.iter().position(|l| l.eq_ignore_ascii_case(spec)) {
        return Ok(c);
    }
    if let Ok(c) = spec.parse::<usize>() {
        if c < classes {
            return Ok(c);
        }
    }
    bail!(
        "--class {spec}: not a class of the model; expected a label ({}) or an index from 0 to {}",
        labels.join(", "),
        classes - 1
    )
}

/// Classifies CHW images in batches: the probabilities and the class maps of each.
fn explain_batches(
    classifier: &Classifier,
    pixels: &[u8],
) -> anyhow::Result<(Vec<Vec<f32>>, Vec<cam::ClassMaps>)> {
    let (h, w) = classifier.input_size();
    let per_batch = BATCH * 3 * h * w;
    let mut probabilities = Vec::new();
    let mut maps = Vec::new();
    for chunk in pixels.chunks(per_batch) {
        let inputs = classifier.inputs_from_pixels(chunk)?;
        let predictions = classifier.classify(&inputs)?;
        probabilities.extend(predictions.probabilities);
        maps.push(cam::ClassMaps::from_tensor(&predictions.class_maps)?);
    }
    Ok((probabilities, maps))
}

/// The map of `class` for image `i` of batches of [`BATCH`].
fn map_of(
    maps: &[cam::ClassMaps],
    i: usize,
    class: usize,
) -> anyhow::Result<(&[f32], (usize, usize))> {
    let batch = maps
        .get(i / BATCH)
        .context("an image past the last batch")?;
    let map = batch
        .map(i % BATCH, class)
        .context("a class past the model's classes")?;
    Ok((map, batch.size()))
}

/// One PNG per image: the original, then one panel per class shown.
fn per_image(args: &ExplainArgs, classifier: &Classifier) -> anyhow::Result<()> {
    let chosen = args
        .class
        .as_deref()
        .map(|spec| parse_class(spec, classifier))
        .transpose()?;
    // Output names first, so that a clash is found before any work.
    let mut names: BTreeMap<String, &Path> = BTreeMap::new();
    for path in &args.images {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .with_context(|| format!("{}: not a file name", path.display()))?;
        if let Some(first) = names.insert(format!("{stem}.png"), path) {
            bail!(
                "{} and {} would both be written to {}: explain them in two runs or rename one",
                first.display(),
                path.display(),
                args.out.join(format!("{stem}.png")).display()
            );
        }
    }
    for (name, path) in &names {
        let target = args.out.join(name);
        let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
        if let Some(input) = args.images.iter().find(|i| same(i, &target)) {
            bail!(
                "--out {}: explaining {} would overwrite the input {}; write into another folder",
                args.out.display(),
                path.display(),
                input.display()
            );
        }
    }
    let mut pixels = Vec::new();
    for path in &args.images {
        pixels.extend(classifier.load_image(path)?);
    }
    let (probabilities, maps) = explain_batches(classifier, &pixels)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out {}: cannot create the folder", args.out.display()))?;
    let side = args.size.unwrap_or(192);
    let panel = side as usize;
    let title_h = 26;
    for (i, path) in args.images.iter().enumerate() {
        let shown: Vec<(usize, f32)> = match chosen {
            Some(c) => vec![(c, probabilities[i][c])],
            None => top_k(&probabilities[i], args.top_k),
        };
        // The original at panel size, stretched as the model sees it.
        let base_chw = nin_zoo::load_rgb_chw(path, panel, panel)?;
        let base = cam::upsample_rgb(&base_chw, (panel, panel), (panel, panel))?;
        let columns = 1 + shown.len() as u32;
        // At least wide enough for the colour bar and its labels.
        let content = MARGIN + columns * (side + MARGIN);
        let width = content.max(MIN_PANELS_WIDTH);
        // Panels centred when the canvas is wider than they are.
        let left = MARGIN + (width - content) / 2;
        let height = MARGIN + title_h + side + MARGIN + 16 + MARGIN;
        let mut canvas = Canvas::new(width, height, PAPER);
        let file_name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let top = MARGIN + title_h;
        canvas.blit(left, top, side, side, &base);
        canvas.text(
            (left + side / 2) as i32,
            MARGIN as i32,
            &file_name,
            15.0,
            GREY,
            Align::Center,
            side,
        )?;
        for (k, &(class, probability)) in shown.iter().enumerate() {
            let (map, size) = map_of(&maps, i, class)?;
            let heat = cam::heatmap(map, size, (panel, panel))?;
            let overlay = cam::blend(&base, &heat, args.alpha)?;
            let x = left + (k as u32 + 1) * (side + MARGIN);
            canvas.blit(x, top, side, side, &overlay);
            canvas.text(
                (x + side / 2) as i32,
                MARGIN as i32,
                &format!("{} {:.1} %", classifier.label(class), 100.0 * probability),
                15.0,
                INK,
                Align::Center,
                side,
            )?;
        }
        let bar_w = (width / 3).max(60);
        canvas.colour_bar(
            (width - bar_w) / 2,
            top + side + MARGIN,
            bar_w,
            14,
            "weak",
            "strong evidence",
            cam::viridis,
        )?;
        let out = args.out.join(format!(
            "{}.png",
            path.file_stem().unwrap_or_default().to_string_lossy()
        ));
        canvas.save_png(&out)?;
        let listed: Vec<String> = shown
            .iter()
            .map(|&(c, p)| format!("{} {:.1} %", classifier.label(c), 100.0 * p))
            .collect();
        println!(
            "{} -> {}: {}",
            path.display(),
            out.display(),
            listed.join(", ")
        );
    }
    Ok(())
}

/// The `k` most probable classes, most probable first.
fn top_k(probabilities: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    order
        .into_iter()
        .take(k)
        .map(|c| (c, probabilities[c]))
        .collect()
}

/// An N×N sheet of the first N² test images.
fn grid(args: &ExplainArgs, classifier: &Classifier, origin: &str, n: usize) -> anyhow::Result<()> {
    let cfg = classifier.config();
    let dataset = match args.dataset {
        Some(d) => Dataset::from(d),
        None => dataset_for_classes(cfg.num_classes)?,
    };
    let cifar = load_dataset(dataset, args.data.as_deref(), LabelKind::Fine)?;
    if cifar.train.n_classes != cfg.num_classes {
        bail!(
            "--model {origin} has {} classes but {dataset} has {}",
            cfg.num_classes,
            cifar.train.n_classes
        );
    }
    if classifier.input_size() != (32, 32) {
        bail!(
            "--grid: the model takes {:?} inputs, but {dataset}'s images are 32×32",
            classifier.input_size()
        );
    }
    let set = cifar.split(Split::Test, None)?.limit(n * n);
    let count = set.len();
    let label = |c: usize| -> String {
        if cfg.label_names.len() == cfg.num_classes {
            classifier.label(c)
        } else {
            cifar
                .label_names
                .get(c)
                .cloned()
                .unwrap_or_else(|| classifier.label(c))
        }
    };
    let (probabilities, maps) = explain_batches(classifier, &set.pixels)?;
    let side = args.size.unwrap_or(96);
    let panel = side as usize;
    let line = 16;
    let cell_w = 2 * side + 4;
    let cell_h = side + 4 + 2 * line;
    let header = 58;
    let cols = n.min(count.max(1)) as u32;
    let rows = count.div_ceil(n) as u32;
    let content = MARGIN + cols * (cell_w + MARGIN);
    let width = content.max(520);
    let left = MARGIN + (width - content) / 2;
    let footer = 30;
    let height = header + rows * (cell_h + MARGIN) + footer;
    let mut canvas = Canvas::new(width, height, PAPER);
    let mut wrong = 0;
    for (i, probs) in probabilities.iter().enumerate() {
        let (row, col) = ((i / n) as u32, (i % n) as u32);
        let x = left + col * (cell_w + MARGIN);
        let y = header + row * (cell_h + MARGIN);
        let (predicted, probability) =
            *top_k(probs, 1).first().context("a model without classes")?;
        let truth = set.labels[i] as usize;
        let base = cam::upsample_rgb(set.image(i), (32, 32), (panel, panel))?;
        let (map, size) = map_of(&maps, i, predicted)?;
        let heat = cam::heatmap(map, size, (panel, panel))?;
        let overlay = cam::blend(&base, &heat, args.alpha)?;
        canvas.blit(x, y, side, side, &base);
        canvas.blit(x + side + 4, y, side, side, &overlay);
        let caption_y = (y + side + 3) as i32;
        canvas.text(
            x as i32,
            caption_y,
            &format!("{} {:.0} %", label(predicted), 100.0 * probability),
            13.0,
            INK,
            Align::Left,
            cell_w,
        )?;
        let right = predicted == truth;
        canvas.text(
            x as i32,
            caption_y + line as i32,
            &format!("true: {}", label(truth)),
            13.0,
            if right { RIGHT } else { WRONG },
            Align::Left,
            cell_w,
        )?;
        if !right {
            wrong += 1;
            canvas.frame(x, y, cell_w, side + 4 + 2 * line, 3, WRONG);
        }
    }
    canvas.text(
        MARGIN as i32,
        8,
        &format!(
            "{origin} on {dataset} test images 0–{}: {} of {count} right",
            count.saturating_sub(1),
            count - wrong
        ),
        16.0,
        INK,
        Align::Left,
        width - 2 * MARGIN,
    )?;
    canvas.text(
        MARGIN as i32,
        32,
        "each: the image, the map of the predicted class; red frame: wrong",
        13.0,
        GREY,
        Align::Left,
        width - 2 * MARGIN,
    )?;
    let bar_w = (width / 3).max(60);
    canvas.colour_bar(
        (width - bar_w) / 2,
        height - footer + 4,
        bar_w,
        12,
        "weak",
        "strong evidence",
        cam::viridis,
    )?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("--out {}: cannot create its folder", args.out.display()))?;
    }
    canvas.save_png(&args.out)?;
    println!(
        "{}: {count} {dataset} test images, {} right, {wrong} wrong",
        args.out.display(),
        count - wrong
    );
    Ok(())
}
