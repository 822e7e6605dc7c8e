//! `nin list`: the zoo's presets with their size and cost.

use clap::Args;

/// Arguments of `nin list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print as JSON, with each preset's full configuration for 10 classes.
    #[arg(long)]
    json: bool,
}

/// Runs `nin list`.
pub fn run(args: ListArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for entry in nin_zoo::MODELS {
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
    Ok(())
}
