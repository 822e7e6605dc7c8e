//! The metrics table of a run folder: one row per epoch, as `metrics.csv` and `metrics.jsonl`.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::{read_bounded, write_atomic, MAX_JSON_BYTES};
use crate::error::{Error, Result};
use crate::files::{METRICS_CSV, METRICS_JSONL};

/// One row of the metrics table, with timm-like columns; accuracies in percent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, starting at 1 (as timm's summary does).
    pub epoch: usize,
    /// Mean training loss over the epoch (with dropout and label smoothing as trained).
    pub train_loss: f64,
    /// Training top-1 accuracy over the epoch, as the weights were while training.
    pub train_top1: f64,
    /// Validation loss, when an evaluation source was given.
    pub eval_loss: Option<f64>,
    /// Validation top-1 accuracy.
    pub eval_top1: Option<f64>,
    /// Validation top-5 accuracy.
    pub eval_top5: Option<f64>,
    /// The scheduled base learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall-clock seconds spent on the epoch (training and evaluation).
    pub seconds: f64,
}

/// The columns of the metrics table, in order: `metrics.csv`'s header and the keys of every
/// `metrics.jsonl` line. **API boundary:** the sweep and users' scripts read them.
pub const METRICS_COLUMNS: [&str; 8] = [
    "epoch",
    "train_loss",
    "train_top1",
    "eval_loss",
    "eval_top1",
    "eval_top5",
    "lr",
    "seconds",
];

/// The CSV header of the metrics table ([`METRICS_COLUMNS`] joined by commas).
pub const CSV_HEADER: &str = "epoch,train_loss,train_top1,eval_loss,eval_top1,eval_top5,lr,seconds";

/// Renders `records` as CSV with [`CSV_HEADER`]; absent values are empty cells.
pub fn to_csv(records: &[EpochRecord]) -> String {
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let mut out = format!("{CSV_HEADER}\n");
    for r in records {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            r.epoch,
            r.train_loss,
            r.train_top1,
            opt(r.eval_loss),
            opt(r.eval_top1),
            opt(r.eval_top5),
            r.lr,
            r.seconds
        );
    }
    out
}

/// Renders `records` as JSON lines, one object per epoch.
pub fn to_jsonl(records: &[EpochRecord]) -> Result<String> {
    let mut out = String::new();
    for r in records {
        let line = serde_json::to_string(r).map_err(|source| Error::Json {
            path: "metrics.jsonl".into(),
            source,
        })?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// Rewrites `metrics.csv` and `metrics.jsonl` in `dir` atomically from the full history, so the
/// files always agree with the checkpoint that recorded it.
pub fn write_metrics(dir: &Path, records: &[EpochRecord]) -> Result<()> {
    write_atomic(&dir.join(METRICS_CSV), to_csv(records).as_bytes())?;
    write_atomic(&dir.join(METRICS_JSONL), to_jsonl(records)?.as_bytes())
}

/// Reads a run folder's `metrics.jsonl` (empty when the run has not finished an epoch yet).
pub fn read_metrics(dir: &Path) -> Result<Vec<EpochRecord>> {
    let path = dir.join(METRICS_JSONL);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = read_bounded(&path, METRICS_JSONL, MAX_JSON_BYTES)?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_jsonl_have_timm_columns() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![
            EpochRecord {
                epoch: 1,
                train_loss: 2.5,
                train_top1: 10.0,
                eval_loss: None,
                eval_top1: None,
                eval_top5: None,
                lr: 0.1,
                seconds: 3.0,
            },
            EpochRecord {
                epoch: 2,
                train_loss: 2.0,
                train_top1: 20.0,
                eval_loss: Some(1.9),
                eval_top1: Some(25.0),
                eval_top5: Some(70.0),
                lr: 0.05,
                seconds: 3.5,
            },
        ];
        write_metrics(dir.path(), &rows).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
        assert_eq!(
            csv,
            "epoch,train_loss,train_top1,eval_loss,eval_top1,eval_top5,lr,seconds\n\
             1,2.5,10,,,,0.1,3\n2,2,20,1.9,25,70,0.05,3.5\n"
        );
        let jsonl = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        let back: Vec<EpochRecord> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, rows);
        assert_eq!(read_metrics(dir.path()).unwrap(), rows);
        assert_eq!(CSV_HEADER, METRICS_COLUMNS.join(","));
    }
}
