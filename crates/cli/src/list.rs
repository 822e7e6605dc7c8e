//! `nin list`: the zoo's presets with their size and cost, and the pretrained weights (`arch.tag`)
//! with their dataset, accuracy and source; shell-style patterns pick some (`nin list 'drnin*'`).

use clap::Args;
use nin_zoo::{tag_sources, wildcard_match, PretrainedTag, PRETRAINED};

/// Arguments of `nin list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show only presets and tags matching one of these patterns (`*` any run of characters,
    /// `?` one; quote them from the shell): `nin list 'drnin*'`. A tag also shows when its
    /// preset matches.
    #[arg(value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Show the pretrained weights only.
    #[arg(long)]
    pretrained: bool,
    /// Print as JSON: the presets, with each one's full configuration for 10 classes and its
    /// pretrained tags; with --pretrained, the tags with every field of the registry.
    #[arg(long)]
    json: bool,
}

/// Runs `nin list`.
pub fn run(args: ListArgs) -> anyhow::Result<()> {
    let matches = |name: &str| {
        args.patterns.is_empty() || args.patterns.iter().any(|p| wildcard_match(p, name))
    };
    let tags: Vec<&PretrainedTag> = PRETRAINED
        .iter()
        .filter(|t| matches(t.name) || matches(t.model))
        .collect();
    let presets: Vec<_> = nin_zoo::MODELS.iter().filter(|e| matches(e.name)).collect();
    if !args.patterns.is_empty() && presets.is_empty() && tags.is_empty() {
        anyhow::bail!(
            "no model or pretrained tag matches {}; `nin list` shows them all",
            args.patterns
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }
    if args.pretrained {
        return print_tags(&tags, args.json);
    }
    let mut rows = Vec::new();
    for entry in presets {
        let c10 = entry.family.info(entry.name, &(entry.default_args)(10))?;
        let c100 = entry.family.info(entry.name, &(entry.default_args)(100))?;
        rows.push((entry, c10, c100));
    }
    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|(e, c10, c100)| {
                serde_json::json!({
                    "name": e.name, "family": e.family_name, "summary": e.summary,
                    "params_cifar10": c10.param_count, "params_cifar100": c100.param_count,
                    "macs_per_image_cifar10": c10.macs_per_image,
                    "config_cifar10": (e.default_args)(10),
                    "pretrained": nin_zoo::tags_of(PRETRAINED, e.name).iter().map(|t| t.name).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<7} {:>12} {:>13} {:>14}  summary",
        "model", "family", "params (10)", "params (100)", "MMACs/image"
    );
    for (e, c10, c100) in rows {
        println!(
            "{:<10} {:<7} {:>12} {:>13} {:>14.1}  {}",
            e.name,
            e.family_name,
            c10.param_count,
            c100.param_count,
            c10.macs_per_image as f64 / 1e6,
            e.summary
        );
    }
    println!();
    print_tags(&tags, false)
}

/// The pretrained tags as a table or JSON; an empty selection says so.
fn print_tags(tags: &[&PretrainedTag], json: bool) -> anyhow::Result<()> {
    if json {
        let json: Vec<_> = tags
            .iter()
            .map(|t| {
                let mut v = serde_json::to_value(t)?;
                v["sources"] = serde_json::json!(tag_sources(t));
                Ok(v)
            })
            .collect::<serde_json::Result<_>>()?;
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::Value::Array(json))?
        );
        return Ok(());
    }
    if tags.is_empty() {
        println!(
            "pretrained weights: none {}(the registry lists weights once they are trained and measured; \
             meanwhile `nin predict --model` takes a model directory or hf-hub:owner/name)",
            if PRETRAINED.is_empty() { "yet " } else { "match " }
        );
        return Ok(());
    }
    println!(
        "{:<20} {:<9} {:>7} {:>7}  source",
        "pretrained", "dataset", "top-1", "top-5"
    );
    for t in tags {
        println!(
            "{:<20} {:<9} {:>6.2}% {:>6.2}%  {}",
            t.name,
            t.dataset,
            t.top1,
            t.top5,
            tag_sources(t).join(", ")
        );
    }
    Ok(())
}
