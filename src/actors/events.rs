//! What the stages tell the Coordinator (and, later, any subscriber).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::objective::eval::EvalMetrics;

/// An error shared between the stage that failed and whoever reports it; keeps its causes.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// Where a thread outside actix sends its events: the Coordinator's mailbox in a run, a
/// collecting fake in tests.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A logged training step (only logging steps read scalars off the device).
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// `pretrain` or `finetune`.
    pub phase: &'static str,
    /// Updates done.
    pub step: u64,
    /// Mean loss of this update.
    pub loss: f64,
    /// Each objective's part of it (`mlm`, `nsp`, `glm`, a task), when there are parts.
    pub losses: std::collections::BTreeMap<&'static str, f64>,
    /// Learning rate of this update.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens trained on so far.
    pub tokens: u64,
    /// Throughput since the previous logged step.
    pub tokens_per_second: f64,
    /// Seconds since training started.
    pub elapsed_s: f64,
    /// Share of the time since the previous logged step that the Trainer waited for data.
    pub data_wait_share: f64,
    /// A data-parallel run's gradient buckets in this update (absent in one process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<BucketReport>,
}

/// When the reducer launched and finished each gradient bucket's all-reduce, in milliseconds
/// relative to the end of the backward pass (negative: before it ended, overlapping compute).
#[derive(Debug, Clone, Serialize)]
pub struct BucketReport {
    /// Launch times, bucket 0 (the last layers) first.
    pub launched_ms: Vec<f64>,
    /// Completion times.
    pub done_ms: Vec<f64>,
    /// Communication the backward pass waited for after its last gradient was ready.
    pub exposed_ms: f64,
}

impl BucketReport {
    /// From the reducer's times and the backward pass's end (ns on the same clock).
    pub fn new(t: &crate::distributed::BucketTimes, backward_end: i64) -> Self {
        let ms = |v: &[i64]| v.iter().map(|&x| if x == 0 { f64::NAN } else { (x - backward_end) as f64 / 1e6 }).collect();
        BucketReport { launched_ms: ms(&t.launched), done_ms: ms(&t.done), exposed_ms: t.exposed_ns(backward_end) as f64 / 1e6 }
    }
}

/// Totals the Trainer reports when it stops.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainerTotals {
    /// Updates done.
    pub steps: u64,
    /// Tokens trained on.
    pub tokens: u64,
    /// Sequences trained on.
    pub samples: u64,
    /// Seconds from the first batch request to the end.
    pub elapsed_s: f64,
    /// Seconds spent waiting for batches.
    pub data_wait_s: f64,
    /// Loss of the last logged update.
    pub final_loss: f64,
    /// Evaluations requested (the Coordinator waits for that many results).
    pub evals_requested: u64,
    /// Checkpoints requested (the Coordinator waits for that many results).
    pub checkpoints_requested: u64,
    /// Stopped early on a signal or a stop command (a checkpoint was written).
    pub interrupted: bool,
    /// Stopped by early stopping (no better monitored metric in `patience` evaluations).
    pub stopped_early: bool,
    /// What loading the starting weights (`[init]`) did; `None` on a resume.
    pub init: Option<crate::finetune::init::LoadReport>,
}

/// Every optimizer update, logged or not (no device sync: the loss is there only on logging
/// steps).
#[derive(Debug, Clone, Serialize)]
pub struct StepDone {
    /// `pretrain` or `finetune`.
    pub phase: &'static str,
    /// Updates done.
    pub step: u64,
    /// Learning rate of this update.
    pub lr: f64,
    /// Tokens trained on so far.
    pub tokens: u64,
    /// The loss, on logging steps.
    pub loss: Option<f64>,
}

/// Commands a subscriber (or the control endpoint) can give a running job. They take effect at
/// the next step boundary.
#[derive(Debug, Clone, PartialEq, actix::Message, Serialize, serde::Deserialize)]
#[rtype(result = "()")]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Finish the current step, checkpoint, stop (like SIGTERM).
    Stop,
    /// Evaluate after the current step.
    EvaluateNow,
    /// Checkpoint after the current step.
    CheckpointNow,
    /// Use this learning rate from the next step on (replaces the schedule).
    SetLearningRate {
        /// The new rate.
        lr: f64,
    },
    /// Stop taking steps until `Resume` (or `Stop`).
    Pause,
    /// Continue after `Pause`.
    Resume,
}

/// Messages to the Coordinator.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub enum Event {
    /// A logged training step.
    Step(StepReport),
    /// Every step (subscribers see these; the loss only on logging steps).
    StepDone(StepDone),
    /// A held-out evaluation finished.
    Eval {
        /// `pretrain` or `finetune`: which curve the evaluation belongs to.
        phase: &'static str,
        /// Step whose weights were evaluated.
        step: u64,
        /// The held-out metrics by name (losses, accuracy, F1, per-class details).
        metrics: EvalMetrics,
    },
    /// A checkpoint is on disk.
    Saved {
        /// The update the checkpoint was taken after.
        step: u64,
        /// Its folder.
        path: PathBuf,
        /// Seconds the write took (off the training thread).
        write_s: f64,
        /// Seconds the Trainer stalled to copy the weights and hand them over.
        stall_s: f64,
    },
    /// The Trainer obeyed `Pause`: no update runs until `Resumed`.
    Paused {
        /// `pretrain` or `finetune`.
        phase: &'static str,
        /// Updates done when it paused.
        step: u64,
    },
    /// The Trainer obeyed `Resume` (or a stop while paused) and takes the next update.
    Resumed {
        /// `pretrain` or `finetune`.
        phase: &'static str,
        /// Updates done when it resumed (the same as when it paused).
        step: u64,
    },
    /// The Trainer is done; results of its last requests may still be on their way.
    TrainerDone(TrainerTotals),
    /// A stage failed: the run stops.
    Failed {
        /// `loader`, `masker`, `trainer`, `evaluator` or `checkpointer`.
        stage: &'static str,
        /// What went wrong, with causes.
        error: SharedError,
    },
}
