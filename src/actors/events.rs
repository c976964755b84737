//! What the stages tell the Coordinator (and, later, any subscriber).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::files::FileError;
use crate::objective::eval::EvalMetrics;
use crate::workload::Phase;

/// An error shared between the stage that failed and whoever reports it; keeps its causes.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// Where a thread outside actix sends its events: the Coordinator's mailbox in a run, a
/// collecting fake in tests.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A logged training step (only logging steps read scalars off the device).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    /// `pretrain` or `finetune`.
    pub phase: crate::workload::Phase,
    /// Updates done.
    pub step: u64,
    /// Mean loss of this update (`null` in the file when not finite).
    #[serde(deserialize_with = "lossy::f64")]
    pub loss: f64,
    /// Each objective's part of it (`mlm`, `nsp`, `glm`, a task), when there are parts.
    #[serde(deserialize_with = "lossy::map")]
    pub losses: std::collections::BTreeMap<String, f64>,
    /// Learning rate of this update.
    pub lr: f64,
    /// Gradient norm before clipping (`null` in the file when not finite).
    #[serde(deserialize_with = "lossy::f64")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<BucketReport>,
    /// Model FLOPs utilisation since the previous logged step (absent without a peak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
}

/// When the reducer launched and finished each gradient bucket's all-reduce, in milliseconds
/// relative to the end of the backward pass (negative: before it ended, overlapping compute).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketReport {
    /// Launch times, bucket 0 (the last layers) first (`null`: never launched).
    #[serde(deserialize_with = "lossy::vec")]
    pub launched_ms: Vec<f64>,
    /// Completion times.
    #[serde(deserialize_with = "lossy::vec")]
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
    pub init: Option<crate::init::LoadReport>,
    /// Model FLOPs of this rank's updates (dense-equivalent, 3 × forward).
    pub model_flops: f64,
    /// The peak MFU is measured against, FLOP/s (0: unknown).
    pub peak_flops: f64,
}

/// Every optimizer update, logged or not (no device sync: the loss is there only on logging
/// steps).
#[derive(Debug, Clone, Serialize)]
pub struct StepDone {
    /// `pretrain` or `finetune`.
    pub phase: crate::workload::Phase,
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
        phase: crate::workload::Phase,
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
        phase: crate::workload::Phase,
        /// Updates done when it paused.
        step: u64,
    },
    /// The Trainer obeyed `Resume` (or a stop while paused) and takes the next update.
    Resumed {
        /// `pretrain` or `finetune`.
        phase: crate::workload::Phase,
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

/// One line of a run's `events.jsonl`, tagged by what it records (`"kind"`). The Coordinator
/// writes them; the report, the bench and the tests read them back through [`read_records`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A logged training step.
    Step(StepReport),
    /// A held-out evaluation.
    Eval {
        /// Which curve it belongs to.
        phase: Phase,
        /// The step whose weights were evaluated.
        step: u64,
        /// The metrics by name.
        eval: EvalMetrics,
    },
    /// A checkpoint on disk.
    Checkpoint {
        /// The update it was taken after.
        step: u64,
        /// Its folder.
        checkpoint: PathBuf,
        /// Seconds the write took (off the training thread).
        write_s: f64,
        /// Seconds the Trainer stalled to hand the weights over.
        stall_s: f64,
    },
    /// A command received (from a subscriber or the control endpoint).
    Command(Command),
    /// The Trainer paused.
    Paused {
        /// Its phase.
        phase: Phase,
        /// Updates done.
        step: u64,
    },
    /// The Trainer resumed.
    Resumed {
        /// Its phase.
        phase: Phase,
        /// Updates done.
        step: u64,
    },
    /// The launcher restarted the ranks after a failure (`--max-restarts`); this process is
    /// the restart.
    Restarted {
        /// The restart's number, from 1.
        restart: u32,
        /// The launcher's limit.
        max_restarts: u32,
        /// The step the run continues from (0: no checkpoint yet).
        step: u64,
    },
    /// The run ended without a failure, after its last evaluation and checkpoint: the last
    /// record of a finished run (a sweep knows a cell is done by it).
    Finished {
        /// Its phase.
        phase: Phase,
        /// Updates done.
        step: u64,
        /// What ended it (`interrupted`: a signal or a stop command; a resume continues it).
        ended_by: super::EndedBy,
        /// Seconds of training.
        elapsed_s: f64,
        /// Tokens trained on.
        tokens: u64,
        /// The monitored metric.
        metric: String,
        /// The step of the best evaluation by it (the checkpoint `export` and `predict` use).
        best_step: Option<u64>,
    },
    /// A stage failed.
    Failed {
        /// `loader`, `masker`, `trainer`, `evaluator` or `checkpointer`.
        stage: String,
        /// The error with its causes.
        error: String,
    },
}

/// Why `events.jsonl` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// A line is not a record.
    #[error("{}:{line}: not an event record", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// The records of an `events.jsonl`, in order. A last line cut short (a run killed while
/// writing it) is skipped; any other bad line is an error naming it.
///
/// # Errors
/// [`RecordError`].
pub fn read_records(path: &std::path::Path) -> Result<Vec<Record>, RecordError> {
    let text = std::fs::read_to_string(path).map_err(FileError::at(path))?;
    parse_records(&text).map_err(|(line, source)| RecordError::Line { path: path.to_owned(), line, source })
}

/// [`read_records`] on text; the error is the 1-based line and why.
///
/// # Errors
/// A line that is not a record (but a cut-short last one).
pub fn parse_records(text: &str) -> Result<Vec<Record>, (usize, serde_json::Error)> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str(l).or_else(|e| legacy(l).ok_or(e)) {
            Ok(r) => out.push(r),
            Err(e) if e.is_eof() && !text.ends_with('\n') && Some(&l) == lines.last() => break,
            Err(e) => return Err((i + 1, e)),
        }
    }
    Ok(out)
}

/// A line written before records carried their `kind` (pretune 0.x), recognised by its keys.
fn legacy(line: &str) -> Option<Record> {
    let serde_json::Value::Object(mut o) = serde_json::from_str(line).ok()? else { return None };
    if o.contains_key("kind") {
        return None;
    }
    let kind = if o.contains_key("elapsed_s") {
        "step"
    } else if o.contains_key("eval") {
        "eval"
    } else if o.contains_key("checkpoint") {
        "checkpoint"
    } else if let Some(serde_json::Value::Object(c)) = o.remove("command") {
        o = c;
        "command"
    } else if let Some((k, v)) = ["paused", "resumed"].into_iter().find_map(|k| o.remove(k).map(|v| (k, v))) {
        o.insert("step".into(), v);
        k
    } else {
        let stage = o.remove("failed")?;
        o.insert("stage".into(), stage);
        "failed"
    };
    o.insert("kind".into(), kind.into());
    serde_json::from_value(serde_json::Value::Object(o)).ok()
}

/// Deserializers that read `null` (how JSON writes a non-finite number) back as NaN.
mod lossy {
    use serde::{Deserialize, Deserializer};

    pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    pub fn vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }

    pub fn map<'de, D: Deserializer<'de>>(d: D) -> Result<std::collections::BTreeMap<String, f64>, D::Error> {
        Ok(std::collections::BTreeMap::<String, Option<f64>>::deserialize(d)?.into_iter().map(|(k, v)| (k, v.unwrap_or(f64::NAN))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_non_finite_numbers_and_a_cut_short_last_line() {
        let step = StepReport { phase: Phase::Pretrain, step: 3, loss: f64::NAN, losses: [("mlm".to_owned(), 1.5)].into(), lr: 0.1, grad_norm: 2.0, tokens: 10, tokens_per_second: 5.0, elapsed_s: 1.0, data_wait_share: 0.0, buckets: None, mfu: None };
        let records = [
            Record::Step(step),
            Record::Eval { phase: Phase::Finetune, step: 3, eval: EvalMetrics { values: [("accuracy".to_owned(), 0.5)].into() } },
            Record::Command(Command::SetLearningRate { lr: 0.01 }),
            Record::Failed { stage: "trainer".into(), error: "boom".into() },
        ];
        let mut text: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        assert!(text.contains(r#"{"kind":"command","command":"set_learning_rate","lr":0.01}"#), "{text}");
        text.push_str(r#"{"kind":"step","pha"#);
        let back = parse_records(&text).unwrap();
        assert_eq!(back.len(), 4);
        assert!(matches!(&back[0], Record::Step(s) if s.loss.is_nan() && s.losses["mlm"] == 1.5));
        assert!(matches!(&back[1], Record::Eval { step: 3, eval, .. } if eval.get("accuracy") == Some(0.5)));
        assert!(matches!(&back[2], Record::Command(Command::SetLearningRate { lr }) if *lr == 0.01));
        let (line, _) = parse_records("{\"kind\":\"nope\"}\n{}\n").unwrap_err();
        assert_eq!(line, 1);
        // Lines written before the `kind` tag read by their keys.
        let old = r#"{"phase":"finetune","step":4,"loss":0.5,"losses":{"cls":0.5},"lr":0.001,"grad_norm":1.2,"tokens":900,"tokens_per_second":3000.0,"elapsed_s":0.3,"data_wait_share":0.01}
{"phase":"finetune","step":4,"eval":{"accuracy":0.75,"loss":null}}
{"command":{"command":"stop"}}
{"paused":4,"phase":"finetune"}
{"failed":"loader","error":"gone"}
"#;
        let back = parse_records(old).unwrap();
        assert!(matches!(&back[0], Record::Step(s) if s.step == 4 && s.losses["cls"] == 0.5));
        assert!(matches!(&back[1], Record::Eval { eval, .. } if eval.get("loss").is_some_and(f64::is_nan)));
        assert!(matches!(back[2], Record::Command(Command::Stop)));
        assert!(matches!(back[3], Record::Paused { step: 4, .. }));
        assert!(matches!(&back[4], Record::Failed { stage, .. } if stage == "loader"));
    }
}
