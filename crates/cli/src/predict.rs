//! `nin predict`: classify PNG/JPEG images of any size with a trained model directory.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use nin_zoo::Classifier;

use crate::common::{parse_device, set_threads};
use crate::model_arg::resolve_model;

/// Arguments of `nin predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model: a model directory (config.json + model.safetensors, e.g. a run folder or its
    /// best/), a pretrained tag (`nin list --pretrained`), or hf-hub:owner/name[@revision].
    #[arg(long, value_name = "MODEL")]
    model: String,
    /// Read Hub models from the local cache only, never the network (as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
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
    if args.top_k == 0 {
        anyhow::bail!("--top-k: expected at least 1, got 0");
    }
    let device = parse_device(&args.device)?;
    let model = resolve_model(&args.model, args.offline)?;
    let classifier = Classifier::load(&model.dir, &device)
        .with_context(|| format!("--model {}", model.origin))?;
    let mut pixels = Vec::new();
    for path in &args.images {
        pixels.extend(classifier.load_image(path)?);
    }
    let inputs = classifier.inputs_from_pixels(&pixels)?;
    let predictions = classifier.classify(&inputs)?;
    let mut out = Vec::new();
    for (i, path) in args.images.iter().enumerate() {
        let top: Vec<_> = predictions
            .top_k(i, args.top_k)
            .into_iter()
            .map(|(c, p)| (c, classifier.label(c), p))
            .collect();
        if args.json {
            out.push(serde_json::json!({
                "path": path,
                "logits": predictions.logits[i],
                "probabilities": predictions.probabilities[i],
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
