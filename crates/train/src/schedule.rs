//! Learning-rate schedules (as `nin_format::Schedule` records them), evaluated per iteration so warm-up and cosine move smoothly within an
//! epoch, with the one stateful schedule (reduce-on-plateau) keeping its state in a serde struct
//! that checkpoints carry.

use nin_format::{Schedule, ScheduleState};

use crate::error::{Error, Result};

/// A schedule bound to a run's length, with its state.
#[derive(Clone, Debug)]
pub struct LrScheduler {
    schedule: Schedule,
    base_lr: f64,
    epochs: usize,
    steps_per_epoch: usize,
    state: ScheduleState,
}

impl LrScheduler {
    /// Binds `schedule` to a run of `epochs` epochs of `steps_per_epoch` steps each.
    pub fn new(
        schedule: Schedule,
        base_lr: f64,
        epochs: usize,
        steps_per_epoch: usize,
    ) -> Result<Self> {
        schedule.validate()?;
        if steps_per_epoch == 0 {
            return Err(Error::invalid(
                "schedule",
                "steps_per_epoch",
                "must be > 0, got 0 (empty data source?)",
            ));
        }
        Ok(Self {
            schedule,
            base_lr,
            epochs,
            steps_per_epoch,
            state: ScheduleState::new(),
        })
    }

    /// The state to save in a checkpoint.
    pub fn state(&self) -> &ScheduleState {
        &self.state
    }

    /// Restores a saved state.
    pub fn restore(&mut self, state: ScheduleState) {
        self.state = state;
    }

    /// The rate for step `step_in_epoch` of epoch `epoch` (both 0-based).
    pub fn lr(&self, epoch: usize, step_in_epoch: usize) -> f64 {
        let spe = self.steps_per_epoch as f64;
        let total_steps = (self.epochs * self.steps_per_epoch).max(1) as f64;
        let global = (epoch * self.steps_per_epoch + step_in_epoch) as f64;
        match &self.schedule {
            Schedule::Constant => self.base_lr,
            Schedule::Step { step_size, gamma } => {
                self.base_lr * gamma.powi((epoch / (*step_size).max(1)) as i32)
            }
            Schedule::MultiStep { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| m <= epoch).count();
                self.base_lr * gamma.powi(passed as i32)
            }
            Schedule::Cosine {
                warmup_epochs,
                min_lr,
            } => {
                let warmup_steps = warmup_epochs * spe;
                if global < warmup_steps {
                    // Rate for the step that ends at `global + 1`, so the first step moves.
                    return self.base_lr * (global + 1.0) / warmup_steps.ceil().max(1.0);
                }
                let span = (total_steps - warmup_steps).max(1.0);
                let t = ((global - warmup_steps) / span).clamp(0.0, 1.0);
                min_lr + 0.5 * (self.base_lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            Schedule::OneCycle {
                max_lr,
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                let initial = max_lr / div_factor;
                let min = initial / final_div_factor;
                let up_end = (pct_start * total_steps) - 1.0;
                let down_end = total_steps - 1.0;
                let cos_anneal = |start: f64, end: f64, pct: f64| {
                    end + (start - end) / 2.0
                        * ((std::f64::consts::PI * pct.clamp(0.0, 1.0)).cos() + 1.0)
                };
                if global <= up_end {
                    cos_anneal(initial, *max_lr, global / up_end.max(1.0))
                } else {
                    cos_anneal(
                        *max_lr,
                        min,
                        (global - up_end) / (down_end - up_end).max(1.0),
                    )
                }
            }
            Schedule::ReduceOnPlateau { min_lr, .. } => {
                (self.base_lr * self.state.scale).max(*min_lr)
            }
        }
    }

    /// Reports the end-of-epoch value of the monitored metric; reduce-on-plateau may lower the
    /// rate. Returns true when it did. Other schedules ignore the call.
    pub fn end_epoch(&mut self, value: f64) -> bool {
        let Schedule::ReduceOnPlateau {
            monitor,
            factor,
            patience,
            threshold,
            min_lr,
        } = &self.schedule
        else {
            return false;
        };
        let improved = match self.state.best {
            None => true,
            Some(best) if monitor.higher_is_better() => value > best * (1.0 + threshold),
            Some(best) => value < best * (1.0 - threshold),
        };
        if improved {
            self.state.best = Some(value);
            self.state.bad_epochs = 0;
            return false;
        }
        self.state.bad_epochs += 1;
        if self.state.bad_epochs > *patience {
            self.state.bad_epochs = 0;
            let before = (self.base_lr * self.state.scale).max(*min_lr);
            let after = (before * factor).max(*min_lr);
            // PyTorch's rule: reductions smaller than 1e-8 are not made (the rate is at its floor).
            if before - after > 1e-8 {
                self.state.scale *= factor;
                self.state.reductions += 1;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nin_format::Monitor;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn step_and_multistep() {
        let s = LrScheduler::new(
            Schedule::Step {
                step_size: 2,
                gamma: 0.1,
            },
            1.0,
            6,
            10,
        )
        .unwrap();
        close(s.lr(0, 9), 1.0);
        close(s.lr(1, 0), 1.0);
        close(s.lr(2, 0), 0.1);
        close(s.lr(5, 3), 0.001 * 10.0);
        let m = LrScheduler::new(
            Schedule::MultiStep {
                milestones: vec![2, 4],
                gamma: 0.5,
            },
            0.8,
            6,
            10,
        )
        .unwrap();
        close(m.lr(1, 9), 0.8);
        close(m.lr(2, 0), 0.4);
        close(m.lr(4, 0), 0.2);
        let err = Schedule::MultiStep {
            milestones: vec![3, 3],
            gamma: 0.1,
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("strictly increasing"), "{err}");
    }

    #[test]
    fn cosine_warms_up_per_step_then_anneals() {
        let s = LrScheduler::new(
            Schedule::Cosine {
                warmup_epochs: 1.0,
                min_lr: 0.0,
            },
            1.0,
            3,
            4,
        )
        .unwrap();
        close(s.lr(0, 0), 0.25);
        close(s.lr(0, 3), 1.0);
        close(s.lr(1, 0), 1.0);
        // Halfway through the 8 post-warm-up steps.
        close(s.lr(2, 0), 0.5);
        assert!(s.lr(2, 3) < 0.05 && s.lr(2, 3) > 0.0);
        assert!(s.lr(1, 1) < s.lr(1, 0));
    }

    #[test]
    fn one_cycle_matches_pytorch_endpoints() {
        let s = LrScheduler::new(
            Schedule::OneCycle {
                max_lr: 1.0,
                pct_start: 0.25,
                div_factor: 25.0,
                final_div_factor: 1e4,
            },
            0.1,
            4,
            5,
        )
        .unwrap();
        // 20 steps: up over steps 0..=4, down over 4..=19 (PyTorch's phase ends).
        close(s.lr(0, 0), 0.04);
        close(s.lr(0, 4), 1.0);
        close(s.lr(3, 4), 0.04 / 1e4);
        assert!(s.lr(0, 2) > 0.04 && s.lr(0, 2) < 1.0);
        assert!(s.lr(2, 0) < 1.0);
    }

    #[test]
    fn plateau_reduces_after_patience_and_state_round_trips() {
        let mut s = LrScheduler::new(
            Schedule::ReduceOnPlateau {
                monitor: Monitor::TrainTop1,
                factor: 0.1,
                patience: 1,
                threshold: 0.0,
                min_lr: 0.001,
            },
            0.1,
            20,
            1,
        )
        .unwrap();
        assert!(!s.end_epoch(50.0));
        assert!(!s.end_epoch(60.0));
        assert!(!s.end_epoch(60.0)); // one bad epoch: within patience
        assert!(s.end_epoch(59.0)); // two bad epochs: reduce
        close(s.lr(4, 0), 0.01);
        let saved = serde_json::to_string(s.state()).unwrap();
        let mut t = LrScheduler::new(s.schedule.clone(), 0.1, 20, 1).unwrap();
        t.restore(serde_json::from_str(&saved).unwrap());
        assert_eq!(t.state(), s.state());
        assert!(!t.end_epoch(59.0));
        assert!(t.end_epoch(59.0));
        close(t.lr(6, 0), 0.001);
        // At the floor: no more reductions.
        assert!(!t.end_epoch(1.0));
        assert!(!t.end_epoch(1.0));
        close(t.lr(8, 0), 0.001);
        assert_eq!(t.state().reductions, 2);
    }

    #[test]
    fn plateau_on_loss_wants_lower_values() {
        let mut s = LrScheduler::new(
            Schedule::ReduceOnPlateau {
                monitor: Monitor::EvalLoss,
                factor: 0.5,
                patience: 0,
                threshold: 0.0,
                min_lr: 0.0,
            },
            1.0,
            5,
            1,
        )
        .unwrap();
        assert!(!s.end_epoch(2.0));
        assert!(!s.end_epoch(1.5));
        assert!(s.end_epoch(1.6));
        close(s.lr(3, 0), 0.5);
    }

    #[test]
    fn schedules_serialise_tagged() {
        let s = Schedule::Cosine {
            warmup_epochs: 5.0,
            min_lr: 0.0,
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"cosine","warmup_epochs":5.0,"min_lr":0.0}"#
        );
        let back: Schedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
