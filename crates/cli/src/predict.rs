//! `nin predict`: classify PNG/JPEG images of any size with a trained model directory.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::Args;
use image::imageops::FilterType;
use nin_data::Preprocess;

use crate::common::{parse_device, set_threads};
use crate::eval::preprocess_of;

/// Arguments of `nin predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model directory (config.json + model.safetensors), e.g. a run folder or its best/.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// PNG or JPEG files, any size: each is stretched (not cropped) to the model's 32×32 input
    /// with a triangle (bilinear) filter, then normalised as the model's config says.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// How many labels to show per image.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Print, per image, its path, the logits, the probabilities and the top-k labels.
    #[arg(long)]
    json: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `nin predict`.
pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    let loaded = nin_zoo::load_model_dir(&args.model, &device)
        .with_context(|| format!("--model {}", args.model.display()))?;
    let cfg = &loaded.config;
    let [channels, height, width] = cfg.pretrained_cfg.input_size;
    if channels != 3 {
        anyhow::bail!("config.json: pretrained_cfg.input_size has {channels} channels; only RGB (3) is supported");
    }
    let preprocess = preprocess_of(&args.model, &cfg.pretrained_cfg)?;
    if matches!(preprocess, Preprocess::GcnZca(_)) && [height, width] != [32, 32] {
        anyhow::bail!(
            "config.json: a whitened model takes 32×32 inputs, but pretrained_cfg.input_size is {:?}",
            cfg.pretrained_cfg.input_size
        );
    }
    // Each image resized to the model's input, as CHW bytes.
    let mut pixels = Vec::with_capacity(args.images.len() * 3 * height * width);
    for path in &args.images {
        let img = image::open(path)
            .with_context(|| format!("{}: not a readable PNG or JPEG image", path.display()))?
            .to_rgb8();
        let img = image::imageops::resize(&img, width as u32, height as u32, FilterType::Triangle);
        for c in 0..3 {
            for y in 0..height {
                for x in 0..width {
                    pixels.push(img.get_pixel(x as u32, y as u32)[c]);
                }
            }
        }
    }
    // The same transform as training's data pipeline.
    let inputs = match &preprocess {
        Preprocess::Normalize(n) => {
            let plane = height * width;
            pixels
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    let c = i / plane % 3;
                    (f32::from(p) / 255.0 - n.mean[c]) / n.std[c]
                })
                .collect()
        }
        Preprocess::GcnZca(zca) => zca.apply_images(&pixels)?,
    };
    let xs = Tensor::from_vec(inputs, (args.images.len(), 3, height, width), &Device::Cpu)?
        .to_device(&device)?;
    let logits = loaded.model.forward_t(&xs, false)?;
    let probs = candle_nn::ops::softmax(&logits, 1)?;
    let logits = logits.to_vec2::<f32>()?;
    let probs = probs.to_vec2::<f32>()?;
    let label = |i: usize| {
        cfg.label_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
    };
    let k = args.top_k.clamp(1, cfg.num_classes);
    let mut out = Vec::new();
    for ((path, logits), probs) in args.images.iter().zip(&logits).zip(&probs) {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top: Vec<_> = order[..k]
            .iter()
            .map(|&i| (i, label(i), probs[i]))
            .collect();
        if args.json {
            out.push(serde_json::json!({
                "path": path,
                "logits": logits,
                "probabilities": probs,
                "top_k": top.iter().map(|(i, l, p)| serde_json::json!({"index": i, "label": l, "probability": p})).collect::<Vec<_>>(),
            }));
        } else {
            let shown: Vec<_> = top
                .iter()
                .map(|(_, l, p)| format!("{l} {:.1} %", 100.0 * p))
                .collect();
            println!("{}: {}", path.display(), shown.join(", "));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
