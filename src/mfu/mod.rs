//! Model FLOPs utilisation: the FLOPs an update's model does (the objective's count, in the
//! convention of [`crate::objective::flops`]) over the time it took and the hardware's peak
//! ([`peak`]), the number a long run is judged by on a new machine.

pub mod peak;

use std::sync::Arc;

pub use crate::objective::flops::TRAIN_FACTOR;
pub use peak::Peak;

use crate::batch::HostBatch;
use crate::objective::Objective;

/// Counts the model FLOPs of a run's updates (this rank's micro-batches) and turns them into
/// MFU over a logging interval and over the run.
pub struct Meter {
    objective: Arc<dyn Objective>,
    /// The denominator.
    pub peak: Peak,
    window: f64,
    total: f64,
}

impl Meter {
    /// A meter for `objective`'s updates against `peak`.
    pub fn new(objective: Arc<dyn Objective>, peak: Peak) -> Self {
        Meter { objective, peak, window: 0.0, total: 0.0 }
    }

    /// Counts one update over `micro`; returns its FLOPs.
    pub fn update(&mut self, micro: &[HostBatch]) -> f64 {
        let f = TRAIN_FACTOR * micro.iter().map(|b| self.objective.forward_flops(b)).sum::<f64>();
        self.window += f;
        self.total += f;
        f
    }

    /// MFU of the updates since the previous call, which took `seconds` of wall time (data
    /// waits included, as torchtitan and Megatron count it); `None` without a peak or FLOPs.
    pub fn interval(&mut self, seconds: f64) -> Option<f64> {
        let flops = std::mem::take(&mut self.window);
        self.peak.mfu(flops, seconds).filter(|m| *m > 0.0)
    }

    /// Model FLOPs of every update counted so far.
    pub fn total(&self) -> f64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objective::flops::Dims;
    use crate::objective::{ObjectiveModel, Pretraining};

    struct Fixed(f64);
    impl Objective for Fixed {
        fn build(&self, _: &tch::nn::Path) -> Box<dyn ObjectiveModel> {
            unreachable!("not built")
        }
        fn describe(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn forward_flops(&self, b: &HostBatch) -> f64 {
            self.0 * b.batch_size as f64
        }
    }

    #[test]
    fn an_interval_is_three_forwards_over_time_over_peak() {
        let mut m = Meter::new(Arc::new(Fixed(1e9)), Peak { flops: 1e12, source: peak::Source::Config });
        let b = HostBatch { batch_size: 4, ..HostBatch::default() };
        assert_eq!(m.update(&[b.clone(), b.clone()]), 3.0 * 8e9);
        assert_eq!(m.interval(0.048), Some(3.0 * 8e9 / 0.048 / 1e12));
        // The window restarts; the total does not.
        assert_eq!(m.interval(1.0), None);
        m.update(&[b]);
        assert_eq!(m.total(), 3.0 * 12e9);
    }

    /// MLM pre-training counts the decoder on the scored positions only, and the pair head
    /// per row.
    #[test]
    fn pretraining_counts_its_heads_on_what_they_score() {
        let config = crate::model::bert::BertConfig { vocab_size: 1000, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128, ..Default::default() };
        let spec = crate::objective::ModelSpec::Bert { config, pair_head: true };
        let names = crate::objective::ObjectiveNames { lm: "mlm", pair: Some("nsp") };
        let o = Pretraining { spec: spec.clone(), names };
        let b = HostBatch { batch_size: 2, lengths: vec![10, 6], masked_positions: vec![1, 2, 17], ..HostBatch::default() };
        let d = Dims::of(&spec);
        let want = d.encoder([10, 6]) + 3.0 * (2.0 * 64.0 * 64.0 + 2.0 * 64.0 * 1000.0) + 2.0 * (2.0 * 64.0 * 64.0) + 2.0 * 2.0 * 64.0 * 2.0;
        assert_eq!(o.forward_flops(&b), want);
        let mlm = Pretraining { spec, names: crate::objective::ObjectiveNames { lm: "mlm", pair: None } };
        assert_eq!(mlm.forward_flops(&b), d.encoder([10, 6]) + d.lm_head(3));
    }
}
