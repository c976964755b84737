//! The pipeline's queues as series: `pretune_queue_depth{queue}` beside
//! `pretune_queue_capacity{queue}` for every bounded channel (Loader → stages → Maskers →
//! Trainer) and the Evaluator's and Checkpointer's mailboxes. Producers set the depth after
//! each send and consumers after each receive, so the gauge follows the queue from both ends:
//! a full queue means its consumer is the bottleneck, an empty one its producer.

use metrics::{gauge, Gauge};

use crate::metrics::names;

/// One queue's depth gauge; its capacity gauge is set when it is made.
#[derive(Clone)]
pub struct QueueGauge {
    depth: Gauge,
}

impl QueueGauge {
    /// The gauges of queue `name`, bounded at `capacity`.
    pub fn new(name: &str, capacity: usize) -> Self {
        gauge!(names::QUEUE_CAPACITY, "queue" => name.to_owned()).set(capacity as f64);
        QueueGauge { depth: gauge!(names::QUEUE_DEPTH, "queue" => name.to_owned()) }
    }

    /// Items in the queue now.
    pub fn observe(&self, len: usize) {
        self.depth.set(len as f64);
    }
}

/// The data plane's channel names in pipeline order: from the Loader through each custom stage
/// (`stage-I-NAME`) to the Maskers, then `masker_to_trainer`.
pub fn channel_names(stages: &[String]) -> Vec<String> {
    let mut hops = vec!["loader".to_owned()];
    hops.extend(stages.iter().enumerate().map(|(i, s)| format!("stage-{i}-{s}")));
    hops.push("masker".into());
    let mut names: Vec<String> = hops.windows(2).map(|w| format!("{}_to_{}", w[0], w[1])).collect();
    names.push("masker_to_trainer".into());
    names
}

#[cfg(test)]
mod tests {
    #[test]
    fn channels_are_named_by_the_hops_they_join() {
        assert_eq!(super::channel_names(&[]), vec!["loader_to_masker", "masker_to_trainer"]);
        assert_eq!(super::channel_names(&["dedup".into(), "lower".into()]), vec!["loader_to_stage-0-dedup", "stage-0-dedup_to_stage-1-lower", "stage-1-lower_to_masker", "masker_to_trainer"]);
    }
}
