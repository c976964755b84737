//! `pretune evaluate --checkpoint DIR --data FILE [--json]`: a fine-tuned checkpoint's task
//! metrics on a labelled file, computed by the same [`ObjectiveModel::evaluate`] the training
//! run's Evaluator uses (question answering: `exact_match`, `f1`; classification and cloze:
//! `accuracy`, `macro_f1`; NER: entity `precision`, `recall`, `f1`; regression: `pearson`,
//! `spearman`, `mse`; every task: `loss`).
//!
//! The file is read as the training run read its held-out split: the fields, labels, pattern
//! and windows recorded in the checkpoint's `state.json`, its `data.on_error` policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::{nn, Device};

use super::data::{self, BadRecords, Fields, LabelSet, TaskExample};
use super::export::{describe, SavedModel};
use super::qa;
use super::task::{TaskCollator, TaskNet};
use crate::checkpoint::resume::locate;
use crate::config::{BadRecordPolicy, TaskConfig};
use crate::data::source::BadRecord;
use crate::data::tokenize::TextTokenizer;
use crate::model::heads::HeadKind;
use crate::objective::{EvalMetrics, ObjectiveModel};

/// Examples per evaluation batch.
const EVAL_BATCH: usize = 32;

/// What `pretune evaluate` found.
pub struct Evaluation {
    /// The checkpoint used (a run's best when given a run).
    pub checkpoint: PathBuf,
    /// The checkpoint's task head: which metrics apply.
    pub kind: HeadKind,
    /// The task's metrics on the held-out set, by name.
    pub metrics: EvalMetrics,
    /// Records scored (questions for QA).
    pub records: usize,
    /// Malformed records skipped (`data.on_error = "skip"` in the checkpoint's config).
    pub skipped: Vec<BadRecord>,
}

/// Evaluates the checkpoint at (or under) `checkpoint` on `file`.
///
/// # Errors
/// A message naming what failed: no task checkpoint, an unreadable file, a bad record under
/// `fail`, a label the model does not know.
pub fn evaluate(checkpoint: &Path, file: &Path) -> Result<Evaluation, String> {
    let (dir, state) = locate(checkpoint).map_err(|e| crate::error_chain(&e))?;
    let spec = match describe(&state.model, &state.config).map_err(|e| e.to_string())? {
        SavedModel::Task(s) => s,
        SavedModel::Pretrain { .. } => return Err(format!("{} is a pre-training checkpoint: evaluate needs a fine-tuned one", dir.display())),
    };
    let task: TaskConfig = state.config.get("task").cloned().map(serde_json::from_value).transpose().map_err(|e| format!("{}: state.json task: {e}", dir.display()))?.unwrap_or_default();
    let policy: BadRecordPolicy = state.config.pointer("/data/on_error").cloned().map(serde_json::from_value).transpose().ok().flatten().unwrap_or(BadRecordPolicy::Fail);
    let mut tok = TextTokenizer::load(&spec.tokenizer, None).map_err(|e| crate::error_chain(&e))?;
    let cloze_model = super::cloze::model_of(&spec, &mut tok)?;
    let labels = LabelSet { names: spec.labels.clone() };
    let mut skipped = Vec::new();
    let mut bad = BadRecords { policy, skipped: &mut skipped };
    let err = |e: data::TaskDataError| crate::error_chain(&e);
    let fields = Fields { text: task.text_field.clone(), text_pair: task.text_pair_field.clone(), label: task.label_field.clone() };
    let max_len = spec.max_seq_len;
    let mut cloze = None;
    let (examples, records): (Vec<TaskExample>, usize) = match spec.kind {
        HeadKind::QuestionAnswering => {
            let recs = qa::read_squad(file, qa::Need::Scored, &mut bad).map_err(err)?;
            let mut windows = qa::QaWindows::new(&tok, max_len, spec.qa.unwrap_or_default().doc_stride)?;
            let mut out = Vec::new();
            for (i, r) in recs.iter().enumerate() {
                out.extend(windows.windows(i, &Arc::new(r.clone()), true).map_err(|e| crate::error_chain(&e))?);
            }
            (out, recs.len())
        }
        HeadKind::TokenClassification => {
            let sents = data::read_conll_with(file, &mut bad).map_err(err)?;
            let out = sents.iter().map(|s| data::encode_tagged(&tok, s, &labels, max_len)).collect::<Result<Vec<_>, _>>().map_err(err)?;
            (out, sents.len())
        }
        kind => {
            let recs = data::read_classification_with(file, &fields, &mut bad).map_err(err)?;
            let spec_cloze = match cloze_model {
                Some(model) => Some(super::cloze::ClozeSpec { pattern: task.pattern.clone(), answers: super::cloze::answers(&tok, &labels.names, &task.verbalizers)?, model }),
                None => None,
            };
            let mut out = Vec::with_capacity(recs.len());
            for r in &recs {
                out.push(match (kind, &spec_cloze) {
                    (HeadKind::Regression, _) => {
                        let t: f32 = r.label.parse().map_err(|_| format!("{}:{}: regression label `{}` is not a number", r.path.display(), r.line, r.label))?;
                        data::encode_classification(&tok, r, None, t, max_len).map_err(err)?
                    }
                    (_, Some(c)) => super::cloze::encode(&tok, r, labels.id(&r.label, &r.path, r.line).map_err(err)?, c, max_len).map_err(err)?,
                    _ => data::encode_classification(&tok, r, Some(labels.id(&r.label, &r.path, r.line).map_err(err)?), 0.0, max_len).map_err(err)?,
                });
            }
            cloze = spec_cloze;
            (out, recs.len())
        }
    };
    let collator = TaskCollator { kind: spec.kind, cloze, pad: tok.special_ids().pad };
    let batches: Vec<_> = examples.chunks(EVAL_BATCH).map(|c| collator.batch(&c.iter().collect::<Vec<_>>())).collect();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = TaskNet::new(&vs.root(), &spec);
    vs.load(dir.join("model.safetensors")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let metrics = model.evaluate(&batches, Device::Cpu);
    Ok(Evaluation { checkpoint: dir, kind: spec.kind, metrics, records, skipped })
}

/// The headline metrics of a task, in the order a table shows them.
pub fn headline(kind: HeadKind) -> &'static [&'static str] {
    match kind {
        HeadKind::QuestionAnswering => &["exact_match", "f1", "loss"],
        HeadKind::TokenClassification => &["precision", "recall", "f1", "accuracy", "loss"],
        HeadKind::Regression => &["pearson", "spearman", "mse", "loss"],
        HeadKind::SequenceClassification | HeadKind::Cloze => &["accuracy", "macro_f1", "loss"],
    }
}
