//! Accuracy and loss bookkeeping (confusion matrix, top-1/top-5, per-class accuracy) and the
//! per-epoch table written as CSV and JSON lines with timm-like columns.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::loss::label_ranks;

/// A C×C matrix of counts, rows are true classes and columns predictions, plus top-5 hits and a
/// running loss, accumulated over batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    n_classes: usize,
    counts: Vec<u64>,
    top5: u64,
    loss_sum: f64,
    loss_samples: u64,
}

impl Confusion {
    /// An empty matrix for `n_classes` classes.
    pub fn new(n_classes: usize) -> Self {
        Self {
            n_classes,
            counts: vec![0; n_classes * n_classes],
            top5: 0,
            loss_sum: 0.0,
            loss_samples: 0,
        }
    }

    /// Adds a batch: row-major `logits` `[N, C]`, `labels` `[N]`, and the batch's mean loss.
    pub fn add_batch(&mut self, logits: &[f32], labels: &[u32], mean_loss: f64) -> Result<()> {
        let c = self.n_classes;
        if logits.len() != labels.len() * c {
            return Err(Error::invalid(
                "metrics",
                "logits",
                format!(
                    "expected {} values ({} samples × {c} classes), got {}",
                    labels.len() * c,
                    labels.len(),
                    logits.len()
                ),
            ));
        }
        if let Some(&bad) = labels.iter().find(|&&y| y as usize >= c) {
            return Err(Error::invalid(
                "metrics",
                "labels",
                format!("must be < {c}, got {bad}"),
            ));
        }
        let ranks = label_ranks(logits, c, labels);
        let preds = crate::loss::argmax(logits, c);
        for ((&y, &p), &r) in labels.iter().zip(&preds).zip(&ranks) {
            self.counts[y as usize * c + p as usize] += 1;
            if r < 5 {
                self.top5 += 1;
            }
        }
        self.loss_sum += mean_loss * labels.len() as f64;
        self.loss_samples += labels.len() as u64;
        Ok(())
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Counts, row `true class`, column `prediction`.
    pub fn counts(&self) -> Vec<Vec<u64>> {
        self.counts
            .chunks(self.n_classes.max(1))
            .map(<[u64]>::to_vec)
            .collect()
    }

    /// Samples seen.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Top-1 accuracy in percent (0 when empty).
    pub fn top1(&self) -> f64 {
        let correct: u64 = (0..self.n_classes)
            .map(|i| self.counts[i * self.n_classes + i])
            .sum();
        percent(correct, self.total())
    }

    /// Top-5 accuracy in percent (0 when empty).
    pub fn top5(&self) -> f64 {
        percent(self.top5, self.total())
    }

    /// Per-class accuracy (recall) in percent; classes never seen score 0.
    pub fn per_class(&self) -> Vec<f64> {
        (0..self.n_classes)
            .map(|i| {
                let row = &self.counts[i * self.n_classes..(i + 1) * self.n_classes];
                percent(row[i], row.iter().sum())
            })
            .collect()
    }

    /// Mean loss per sample (batch means weighted by batch size).
    pub fn mean_loss(&self) -> f64 {
        if self.loss_samples == 0 {
            0.0
        } else {
            self.loss_sum / self.loss_samples as f64
        }
    }
}

fn percent(hits: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * hits as f64 / total as f64
    }
}

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

/// The CSV header of the metrics table.
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
    write_atomic(&dir.join("metrics.csv"), to_csv(records).as_bytes())?;
    write_atomic(&dir.join("metrics.jsonl"), to_jsonl(records)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_counts_top1_top5_per_class() {
        let mut m = Confusion::new(6);
        // Sample 0: label 0, predicted 0. Sample 1: label 1, predicted 5, label ranked 5th → not
        // top-5. Sample 2: label 2, predicted 0, ranked 2nd.
        let logits = [
            9.0f32, 1.0, 2.0, 3.0, 4.0, 5.0, //
            1.0, 1.0, 3.0, 4.0, 5.0, 6.0, //
            9.0, 0.0, 8.0, 0.0, 0.0, 0.0,
        ];
        m.add_batch(&logits, &[0, 1, 2], 1.5).unwrap();
        assert_eq!(m.total(), 3);
        assert!((m.top1() - 100.0 / 3.0).abs() < 1e-9);
        assert!((m.top5() - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(m.per_class()[..3], [100.0, 0.0, 0.0]);
        assert_eq!(m.counts()[1][5], 1);
        assert_eq!(m.counts()[2][0], 1);
        m.add_batch(&logits[..6], &[0], 0.5).unwrap();
        assert!((m.mean_loss() - (4.5 + 0.5) / 4.0).abs() < 1e-12);
        let err = m.add_batch(&logits[..6], &[6], 0.0).unwrap_err();
        assert!(err.to_string().contains("must be < 6, got 6"), "{err}");
    }

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
    }
}
