//! Accuracy and loss bookkeeping: confusion matrix, top-1/top-5, per-class accuracy. (The
//! per-epoch table is `nin_format`'s `EpochRecord`.)

use serde::{Deserialize, Serialize};

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
}
