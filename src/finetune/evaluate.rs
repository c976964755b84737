//! `pretune evaluate --checkpoint DIR --data FILE [--json]`: a fine-tuned checkpoint's task
//! metrics on a labelled file, computed by the same [`ObjectiveModel::evaluate`] the training
//! run's Evaluator uses, whatever the task (its headline metrics and `loss`).
//!
//! The file is read as the training run read its held-out split: the task rebuilt from the
//! checkpoint's `state.json` (fields, labels, pattern, windows), its `data.on_error` policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::nn;

use super::data::BadRecords;
use super::drive::{open, DriveError, Inference, Opened};
use super::task::TaskNet;
use super::tasks::Split;
use crate::config::BadRecordPolicy;
use crate::data::source::BadRecord;
use crate::objective::{EvalMetrics, ObjectiveModel};


/// What `pretune evaluate` found.
pub struct Evaluation {
    /// The checkpoint used (a run's best when given a run).
    pub checkpoint: PathBuf,
    /// The task kind (`task.kind`).
    pub kind: &'static str,
    /// The task's headline metrics, in table order.
    pub headline: &'static [&'static str],
    /// The task's metrics on the held-out set, by name.
    pub metrics: EvalMetrics,
    /// Records scored (questions for QA).
    pub records: usize,
    /// Malformed records skipped (`data.on_error = "skip"` in the checkpoint's config).
    pub skipped: Vec<BadRecord>,
    /// What reading the file changed (`3 of 40 held-out texts cut to 128 tokens`).
    pub notes: Vec<String>,
}

/// Evaluates the checkpoint at (or under) `checkpoint` on `file` with the model where `run` says;
/// `generate` overrides the run's `[generate]` (`generate.KEY=VALUE`) for a generating task.
///
/// # Errors
/// [`DriveError`]: no task checkpoint, an unreadable file, a bad record under `fail`, a label
/// the model does not know, a bad override.
pub fn evaluate(checkpoint: &Path, file: &Path, generate: &[String], run: Inference) -> Result<Evaluation, DriveError> {
    let device = run.device;
    let Opened { dir, state, mut task } = open(checkpoint, "evaluate", generate)?;
    let policy: BadRecordPolicy = state.config.pointer("/data/on_error").cloned().map(serde_json::from_value).transpose().ok().flatten().unwrap_or(BadRecordPolicy::Fail);
    let mut skipped = Vec::new();
    let encoded = task.read(&[file.to_owned()], Split::Eval, 0, &mut BadRecords { policy, skipped: &mut skipped })?;
    let task: Arc<dyn super::tasks::Task> = Arc::from(task);
    let batches: Vec<_> = encoded.examples.chunks(run.batch_size.max(1)).map(|c| task.collate(&c.iter().collect::<Vec<_>>())).collect();
    let mut vs = nn::VarStore::new(device);
    let model = TaskNet::new(&vs.root(), task.clone());
    vs.load(dir.join("model.safetensors")).map_err(|e| DriveError::Weights { dir: dir.clone(), source: e })?;
    let metrics = model.evaluate(&batches, device);
    Ok(Evaluation { checkpoint: dir, kind: task.kind(), headline: task.headline(), metrics, records: encoded.records, skipped, notes: encoded.notes })
}
