//! Which evaluation metric is "best": the one rule the Coordinator (best checkpoint, early
//! stopping) and fine-tuning plans share.

use super::EvalMetrics;

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Accuracy, F1.
    Higher,
    /// Loss, MSE.
    Lower,
}

/// The evaluation metric that picks the best checkpoint and drives early stopping.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Monitor {
    /// Metric name as the objective reports it (`mlm_loss`, `accuracy`, `f1`, ...).
    pub metric: String,
    /// Which way is better.
    pub direction: Direction,
}

impl Monitor {
    /// The metric as a score where lower is better (what `best.json` stores); `None` when the
    /// evaluation lacks it or it is not finite.
    pub fn score(&self, metrics: &EvalMetrics) -> Option<f64> {
        let v = metrics.get(&self.metric).filter(|v| v.is_finite())?;
        Some(match self.direction {
            Direction::Lower => v,
            Direction::Higher => -v,
        })
    }

    /// The metric's value behind a [`Monitor::score`] (what `best.json` stores, back to the
    /// metric as the objective reports it).
    pub fn value(&self, score: f64) -> f64 {
        match self.direction {
            Direction::Lower => score,
            Direction::Higher => -score,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_scores_lower_is_better() {
        let mut m = EvalMetrics::default();
        m.values.insert("accuracy".into(), 0.75);
        let acc = Monitor { metric: "accuracy".into(), direction: Direction::Higher };
        assert_eq!(acc.score(&m), Some(-0.75));
        assert_eq!(acc.value(-0.75), 0.75);
        assert_eq!(Monitor { metric: "f1".into(), direction: Direction::Higher }.score(&m), None);
    }
}
