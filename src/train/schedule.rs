//! Learning-rate schedules: linear warm-up, then linear, cosine or no decay.
//!
//! The same curves as Hugging Face's `get_linear_schedule_with_warmup` and
//! `get_cosine_schedule_with_warmup`: update `s` (0-based) uses `lr * factor(s)`, where the
//! factor rises as `s / warmup` and then decays to `min_lr_ratio` at `total`.

use crate::config::Decay;

/// A pure schedule: the learning rate of every update is a function of its index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up updates.
    pub warmup: u64,
    /// Total updates.
    pub total: u64,
    /// Decay shape.
    pub decay: Decay,
    /// Floor as a share of `lr`.
    pub min_lr_ratio: f64,
}

impl LrSchedule {
    /// Learning rate for update `step` (0-based).
    ///
    /// ```
    /// use pretune::train::schedule::LrSchedule;
    /// use pretune::config::Decay;
    /// let s = LrSchedule { lr: 1.0, warmup: 10, total: 110, decay: Decay::Linear, min_lr_ratio: 0.0 };
    /// assert_eq!(s.at(5), 0.5);
    /// assert_eq!(s.at(10), 1.0);
    /// assert_eq!(s.at(60), 0.5);
    /// assert_eq!(s.at(110), 0.0);
    /// ```
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.lr * step as f64 / self.warmup.max(1) as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        let shape = match self.decay {
            Decay::Constant => return self.lr,
            Decay::Linear => 1.0 - progress,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_reaches_the_floor_and_is_halfway_at_the_midpoint() {
        let s = LrSchedule { lr: 2.0, warmup: 0, total: 100, decay: Decay::Cosine, min_lr_ratio: 0.1 };
        assert!((s.at(0) - 2.0).abs() < 1e-12);
        assert!((s.at(50) - 2.0 * (0.1 + 0.9 * 0.5)).abs() < 1e-12);
        assert!((s.at(100) - 0.2).abs() < 1e-12);
        assert!((s.at(1000) - 0.2).abs() < 1e-12, "clamped after the end");
    }

    #[test]
    fn warmup_is_monotone_and_constant_stays_flat() {
        let s = LrSchedule { lr: 1.0, warmup: 4, total: 10, decay: Decay::Constant, min_lr_ratio: 0.0 };
        let v: Vec<f64> = (0..6).map(|i| s.at(i)).collect();
        assert_eq!(v, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
    }
}
