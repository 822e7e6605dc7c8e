//! `sweep report`: aggregates a sweep's run folders into `results.csv` (one row per run) and
//! `report.md` (per model, dataset and variant: mean ± std over seeds of the test error, with
//! size, cost, time and throughput; failed runs with their reason), then draws the charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;

use anyhow::Context;
use nin_format::files::MODEL_SAFETENSORS;
use nin_format::{read_metrics, RunConfig, TrainerState};

use super::runner::{self, RunRecord};
use super::status::{self, RunState};
use super::Manifest;

/// `results.csv`, in the sweep folder.
pub const RESULTS_CSV: &str = "results.csv";
/// `report.md`, in the sweep folder.
pub const REPORT_MD: &str = "report.md";

/// One run's results.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Run id.
    pub id: String,
    /// Preset as the plan names it.
    pub model: String,
    /// Preset as trained (a recipe preferring batch norm trains `nin_bn` for `nin`).
    pub trained_model: String,
    /// Family of the trained preset.
    pub family: String,
    /// Dataset.
    pub dataset: String,
    /// Seed.
    pub seed: u64,
    /// Variant id.
    pub variant: String,
    /// Recipe keys the plan changed, then its `model_args`, `;`-separated.
    pub overrides: String,
    /// Trainable parameters.
    pub params: Option<u64>,
    /// Multiply-accumulates per image (unknown with `model_args` overrides).
    pub macs: Option<u64>,
    /// Best evaluation top-1 (percent) and its epoch.
    pub best_top1: Option<f64>,
    /// Epoch of the best top-1.
    pub best_epoch: Option<usize>,
    /// Last epoch's evaluation top-1 and top-5.
    pub final_top1: Option<f64>,
    /// Last epoch's evaluation top-5.
    pub final_top5: Option<f64>,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Epochs of the run.
    pub epochs: usize,
    /// Wall-clock seconds over all attempts (the sweep's measurement).
    pub wall_seconds: Option<f64>,
    /// Training images per second of epoch time (evaluation included).
    pub images_per_s: Option<f64>,
    /// Peak resident memory of any attempt, MiB.
    pub peak_mib: Option<f64>,
    /// `done`, `failed`, `running`, ….
    pub status: String,
    /// Why a run failed or stopped.
    pub reason: String,
    /// Evaluation top-1 per epoch: `(epoch, seconds of training and evaluation up to that
    /// epoch's end, top-1)`.
    pub curve: Vec<(usize, f64, f64)>,
}

/// Reads every run of the sweep in `dir`.
pub fn rows(dir: &Path, manifest: &Manifest) -> Vec<Row> {
    let states = status::states(dir, manifest);
    manifest
        .plan
        .runs
        .iter()
        .zip(states)
        .map(|(spec, state)| {
            let run_dir = dir.join(&spec.id);
            let run = RunConfig::load(&run_dir).ok();
            let metrics = read_metrics(&run_dir).unwrap_or_default();
            let state_file = TrainerState::load(&run_dir).ok();
            let record = RunRecord::load(&run_dir).ok().flatten();
            let trained = run
                .as_ref()
                .map_or_else(|| spec.model.clone(), |r| r.model.name.clone());
            let zoo = manifest
                .zoo_entry(&trained)
                .or(manifest.zoo_entry(&spec.model));
            let params = if spec.model_args.is_none() {
                zoo.map(|z| {
                    if spec.dataset == "cifar100" {
                        z.params_cifar100
                    } else {
                        z.params_cifar10
                    }
                })
            } else {
                count_params(&run_dir.join(MODEL_SAFETENSORS)).ok()
            };
            let macs = if spec.model_args.is_none() {
                zoo.map(|z| z.macs_per_image_cifar10)
            } else {
                None
            };
            let train_seconds: f64 = metrics.iter().map(|m| m.seconds).sum();
            let images_per_s = state_file.as_ref().and_then(|s| {
                let per_epoch = (s.steps_per_epoch
                    * run
                        .as_ref()
                        .map_or(spec.recipe.batch_size, |r| r.recipe.batch_size))
                    as f64;
                (train_seconds > 0.0 && !metrics.is_empty())
                    .then(|| per_epoch * metrics.len() as f64 / train_seconds)
            });
            let last = metrics.last();
            let reason = match &state {
                RunState::Failed(r) | RunState::Stopped(r) => r.clone(),
                _ => String::new(),
            };
            Row {
                id: spec.id.clone(),
                model: spec.model.clone(),
                trained_model: trained,
                family: zoo.map_or_else(|| "?".into(), |z| z.family.clone()),
                dataset: spec.dataset.clone(),
                seed: spec.seed,
                variant: spec.variant.clone().unwrap_or_default(),
                overrides: overrides_with_model_args(spec),
                params,
                macs,
                best_top1: state_file.as_ref().and_then(|s| s.best_eval_top1),
                best_epoch: state_file.as_ref().and_then(|s| s.best_epoch),
                final_top1: last.and_then(|m| m.eval_top1),
                final_top5: last.and_then(|m| m.eval_top5),
                epochs_done: metrics.len(),
                epochs: run.as_ref().map_or(spec.recipe.epochs, |r| r.recipe.epochs),
                wall_seconds: record.as_ref().map(|r| r.wall_seconds),
                images_per_s,
                peak_mib: record.as_ref().and_then(|r| r.peak_rss_mib),
                status: state.label().to_string(),
                reason,
                curve: metrics
                    .iter()
                    .scan(0.0, |elapsed, m| {
                        *elapsed += m.seconds;
                        Some((m.epoch, *elapsed, m.eval_top1))
                    })
                    .filter_map(|(epoch, elapsed, top1)| Some((epoch, elapsed, top1?)))
                    .collect(),
            }
        })
        .collect()
}

/// Trainable parameters in a `model.safetensors`, from its JSON header alone (batch-norm running
/// statistics are buffers, not parameters).
pub fn count_params(path: &Path) -> anyhow::Result<u64> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("reading {}", path.display()))?;
    let len = u64::from_le_bytes(len);
    anyhow::ensure!(len < 100 << 20, "{}: header of {len} bytes", path.display());
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("reading {}", path.display()))?;
    let json: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .with_context(|| format!("{}: not a safetensors header", path.display()))?;
    let mut total = 0u64;
    for (name, info) in json {
        if name == "__metadata__"
            || name.ends_with("running_mean")
            || name.ends_with("running_var")
            || name.ends_with("num_batches_tracked")
        {
            continue;
        }
        let shape = info
            .get("shape")
            .and_then(|s| s.as_array())
            .with_context(|| format!("{}: tensor {name} has no shape", path.display()))?;
        total += shape
            .iter()
            .map(|d| d.as_u64().unwrap_or(0))
            .product::<u64>();
    }
    Ok(total)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn opt_f(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_default()
}

/// CSV field quoting (the reason may hold commas).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The recipe keys the plan changed, then its `model_args` as `model_args.<key>=<value>`, so a
/// reader of the table sees every way a run differs from its preset and recipe.
fn overrides_with_model_args(spec: &super::plan::RunSpec) -> String {
    let mut all = spec.overrides.clone();
    if let Some(serde_json::Value::Object(args)) = &spec.model_args {
        all.extend(args.iter().map(|(k, v)| format!("model_args.{k}={v}")));
    }
    all.join(";")
}

/// The header of `results.csv`.
pub const CSV_HEADER: &str = "id,model,trained_model,family,dataset,seed,variant,overrides,params,macs_per_image,best_top1,best_epoch,final_top1,final_top5,epochs_done,epochs,wall_seconds,images_per_s,peak_memory_mib,status,reason";

/// `results.csv`.
pub fn csv(rows: &[Row]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for r in rows {
        let fields = [
            r.id.clone(),
            r.model.clone(),
            r.trained_model.clone(),
            r.family.clone(),
            r.dataset.clone(),
            r.seed.to_string(),
            r.variant.clone(),
            r.overrides.clone(),
            opt(r.params),
            opt(r.macs),
            opt_f(r.best_top1, 2),
            opt(r.best_epoch),
            opt_f(r.final_top1, 2),
            opt_f(r.final_top5, 2),
            r.epochs_done.to_string(),
            r.epochs.to_string(),
            opt_f(r.wall_seconds, 1),
            opt_f(r.images_per_s, 1),
            opt_f(r.peak_mib, 0),
            r.status.clone(),
            r.reason.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// Mean and sample standard deviation (`None` for one value).
pub fn mean_std(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, None);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some(var.sqrt()))
}

fn mean_of(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = values.flatten().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// `report.md`.
pub fn markdown(manifest: &Manifest, dir: &Path, rows: &[Row], charts: &[String]) -> String {
    let plan = &manifest.plan;
    let mut md = format!("# Sweep `{}`\n\n", plan.name);
    if !plan.description.is_empty() {
        let _ = writeln!(md, "{}\n", plan.description.trim());
    }
    let states: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    let count = |s: &str| states.iter().filter(|x| **x == s).count();
    let _ = writeln!(
        md,
        "Plan `{}`: {} runs, {} done, {} failed, {} not finished. Made by `cargo xtask sweep report {}`.\n",
        plan.source.display(),
        rows.len(),
        count("done"),
        count("failed"),
        rows.len() - count("done") - count("failed"),
        plan.name
    );
    md.push_str(
        "Test error is 100 − the last epoch's top-1 on the evaluation split (the test set unless the plan \
         holds out a validation split), mean ± sample standard deviation over seeds, finished runs only. \
         Time is the sweep's wall clock per run (data loading included); images/s is training images \
         per second of epoch time (evaluation included); memory is the peak resident set of `nin train`.\n\n",
    );
    md.push_str("| model | trained as | dataset | variant | seeds | test error % | best top-1 % | top-5 % | params | MMACs/image | time (s) | images/s | peak memory (MiB) |\n");
    md.push_str("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let mut groups: BTreeMap<(String, String, String), Vec<&Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status == "done") {
        groups
            .entry((r.dataset.clone(), r.model.clone(), r.variant.clone()))
            .or_default()
            .push(r);
    }
    for ((dataset, model, variant), g) in &groups {
        let errors: Vec<f64> = g
            .iter()
            .filter_map(|r| r.final_top1.map(|t| 100.0 - t))
            .collect();
        let error = if errors.is_empty() {
            "—".to_string()
        } else {
            match mean_std(&errors) {
                (m, Some(s)) => format!("{m:.2} ± {s:.2}"),
                (m, None) => format!("{m:.2}"),
            }
        };
        let fmt = |v: Option<f64>, d: usize| v.map_or("—".into(), |x| format!("{x:.d$}"));
        let _ = writeln!(
            md,
            "| {model} | {} | {dataset} | {} | {} | {error} | {} | {} | {} | {} | {} | {} | {} |",
            g[0].trained_model,
            if variant.is_empty() { "—" } else { variant },
            g.len(),
            fmt(mean_of(g.iter().map(|r| r.best_top1)), 2),
            fmt(mean_of(g.iter().map(|r| r.final_top5)), 2),
            g[0].params.map_or("—".into(), |p| p.to_string()),
            g[0].macs
                .map_or("—".into(), |m| format!("{:.1}", m as f64 / 1e6)),
            fmt(mean_of(g.iter().map(|r| r.wall_seconds)), 1),
            fmt(mean_of(g.iter().map(|r| r.images_per_s)), 1),
            fmt(mean_of(g.iter().map(|r| r.peak_mib)), 0),
        );
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.status == "failed").collect();
    md.push_str("\n## Failed runs\n\n");
    if failed.is_empty() {
        md.push_str("None.\n");
    }
    for r in failed {
        let _ = writeln!(
            md,
            "- `{}`: {} (log: `{}`)",
            r.id,
            r.reason,
            dir.join(&r.id).join(runner::STDERR_LOG).display()
        );
    }
    let unfinished: Vec<&Row> = rows
        .iter()
        .filter(|r| r.status != "failed" && r.status != "done")
        .collect();
    if !unfinished.is_empty() {
        md.push_str("\n## Not finished\n\n");
        for r in unfinished {
            let _ = writeln!(
                md,
                "- `{}`: {} ({}/{} epochs)",
                r.id, r.status, r.epochs_done, r.epochs
            );
        }
    }
    if !charts.is_empty() {
        md.push_str("\n## Charts\n\n");
        for c in charts {
            let _ = writeln!(md, "![{c}](charts/{c}.png) ([SVG](charts/{c}.svg))\n");
        }
    }
    md
}

/// Writes `results.csv`, `report.md` and the charts of the sweep in `dir`; returns the rows.
pub fn write(dir: &Path, manifest: &Manifest) -> anyhow::Result<Vec<Row>> {
    let rows = rows(dir, manifest);
    nin_format::write_atomic(&dir.join(RESULTS_CSV), csv(&rows).as_bytes())
        .with_context(|| format!("writing {}", dir.join(RESULTS_CSV).display()))?;
    let charts = super::charts::draw_all(&dir.join(super::charts::CHARTS_DIR), &rows)?;
    nin_format::write_atomic(
        &dir.join(REPORT_MD),
        markdown(manifest, dir, &rows, &charts).as_bytes(),
    )
    .with_context(|| format!("writing {}", dir.join(REPORT_MD).display()))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[10.0, 12.0, 14.0]);
        assert!((m - 12.0).abs() < 1e-12);
        assert!((s.unwrap_or(0.0) - 2.0).abs() < 1e-12);
        assert_eq!(mean_std(&[3.0]), (3.0, None));
    }

    #[test]
    fn csv_quotes_reasons_with_commas() {
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("say, \"x\""), "\"say, \"\"x\"\"\"");
    }

    #[test]
    fn the_overrides_column_names_model_args_too() -> anyhow::Result<()> {
        let plan = super::super::plan::parse(
            "name = \"t\"\n[grid]\nmodels = [\"drnin_l3\"]\ndatasets = [\"cifar10\"]\n\
             [recipe]\nepochs = 2\n[per_model.drnin_l3]\nmodel_args = { dropout = 0.0 }\n",
            Path::new("sweeps/t.toml"),
            None,
            None,
        )?;
        assert_eq!(
            overrides_with_model_args(&plan.runs[0]),
            "epochs=2;model_args.dropout=0.0"
        );
        Ok(())
    }
}
