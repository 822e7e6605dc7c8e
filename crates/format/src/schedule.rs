//! Learning-rate schedules as a recipe records them; `nin-train` evaluates them per iteration.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A learning-rate schedule; the scheduled rate is the recipe's base rate times a factor (except
/// one-cycle, which sets its own peak).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `step_size` epochs (PyTorch `StepLR`).
    Step {
        /// Epochs between reductions, > 0.
        step_size: usize,
        /// Factor per reduction.
        gamma: f64,
    },
    /// Multiply by `gamma` at each milestone epoch (PyTorch `MultiStepLR`).
    MultiStep {
        /// Epochs (0-based) from which one more factor applies, increasing.
        milestones: Vec<usize>,
        /// Factor per milestone.
        gamma: f64,
    },
    /// Linear warm-up from 0 over `warmup_epochs` (fractional epochs allowed), then a half cosine
    /// from the base rate down to `min_lr` at the end of training.
    Cosine {
        /// Length of the warm-up, in epochs.
        warmup_epochs: f64,
        /// The rate at the end of training.
        min_lr: f64,
    },
    /// Smith's one-cycle policy with cosine annealing (PyTorch `OneCycleLR`, `three_phase =
    /// false`): from `max_lr / div_factor` up to `max_lr` over `pct_start` of training, then down
    /// to `max_lr / (div_factor · final_div_factor)`.
    OneCycle {
        /// Peak rate (replaces the recipe's base rate).
        max_lr: f64,
        /// Fraction of the steps spent rising, in (0, 1).
        pct_start: f64,
        /// Initial rate is `max_lr / div_factor` (PyTorch default 25).
        div_factor: f64,
        /// Final rate is the initial rate over this (PyTorch default 1e4).
        final_div_factor: f64,
    },
    /// Multiply by `factor` when the monitored metric has not improved for more than `patience`
    /// epochs (PyTorch `ReduceLROnPlateau`, relative threshold), never below `min_lr`.
    ReduceOnPlateau {
        /// The metric watched at the end of each epoch.
        monitor: Monitor,
        /// Factor per reduction, in (0, 1).
        factor: f64,
        /// Epochs without improvement tolerated before a reduction.
        patience: usize,
        /// Relative improvement that counts: `a > best·(1 + threshold)` for accuracies,
        /// `a < best·(1 − threshold)` for losses.
        threshold: f64,
        /// The rate never goes below this.
        min_lr: f64,
    },
}

/// The metric a reduce-on-plateau schedule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Training top-1 accuracy (the NIN authors' criterion); higher is better.
    TrainTop1,
    /// Validation top-1 accuracy; higher is better.
    EvalTop1,
    /// Validation loss; lower is better.
    EvalLoss,
}

impl Monitor {
    /// Whether a larger value of the metric is an improvement.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Self::EvalLoss)
    }
}

impl Schedule {
    /// Checks the fields.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, problem: String| Err(Error::invalid("schedule", field, problem));
        match self {
            Self::Constant => Ok(()),
            Self::Step { step_size, .. } if *step_size == 0 => {
                bad("step_size", "must be > 0, got 0".into())
            }
            Self::Step { .. } => Ok(()),
            Self::MultiStep { milestones, .. } if milestones.windows(2).any(|w| w[0] >= w[1]) => {
                bad(
                    "milestones",
                    format!("must be strictly increasing, got {milestones:?}"),
                )
            }
            Self::MultiStep { .. } => Ok(()),
            Self::Cosine {
                warmup_epochs,
                min_lr,
            } => {
                if !nonneg(*warmup_epochs) {
                    return bad(
                        "warmup_epochs",
                        format!("must be >= 0, got {warmup_epochs}"),
                    );
                }
                if !nonneg(*min_lr) {
                    return bad("min_lr", format!("must be >= 0, got {min_lr}"));
                }
                Ok(())
            }
            Self::OneCycle {
                max_lr,
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                if !(max_lr.is_finite() && *max_lr > 0.0) {
                    return bad("max_lr", format!("must be > 0, got {max_lr}"));
                }
                if !(*pct_start > 0.0 && *pct_start < 1.0) {
                    return bad("pct_start", format!("must be in (0, 1), got {pct_start}"));
                }
                if !(*div_factor > 0.0 && *final_div_factor > 0.0) {
                    return bad(
                        "div_factor",
                        format!("div_factor and final_div_factor must be > 0, got {div_factor} and {final_div_factor}"),
                    );
                }
                Ok(())
            }
            Self::ReduceOnPlateau {
                factor,
                threshold,
                min_lr,
                ..
            } => {
                if !(*factor > 0.0 && *factor < 1.0) {
                    return bad("factor", format!("must be in (0, 1), got {factor}"));
                }
                if !nonneg(*threshold) {
                    return bad("threshold", format!("must be >= 0, got {threshold}"));
                }
                if !nonneg(*min_lr) {
                    return bad("min_lr", format!("must be >= 0, got {min_lr}"));
                }
                Ok(())
            }
        }
    }

    /// The metric this schedule watches, if it is reduce-on-plateau.
    pub fn monitor(&self) -> Option<Monitor> {
        match self {
            Self::ReduceOnPlateau { monitor, .. } => Some(*monitor),
            _ => None,
        }
    }
}

/// Finite and not negative.
fn nonneg(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}
