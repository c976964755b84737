//! Held-out metrics of a pre-training objective.

use tch::{Device, Kind, Tensor};

use super::{correct, DeviceBatch, ObjectiveModel, ObjectiveNames};
use crate::batch::HostBatch;

/// Held-out metrics.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EvalMetrics {
    /// Which objective.
    pub names: ObjectiveNames,
    /// Mean token-level cross-entropy per scored target (MLM or GLM Part B).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Share of scored targets whose arg-max prediction is right.
    pub accuracy: f64,
    /// Scored targets the numbers are over.
    pub scored_tokens: u64,
    /// Pair task (NSP / SOP): mean loss and accuracy over rows.
    pub pair: Option<(f64, f64)>,
}

impl EvalMetrics {
    /// `(name, value)` pairs, for metrics and events: `mlm_loss`, `perplexity`, `accuracy`,
    /// and `nsp_loss` / `nsp_accuracy` (or `sop_*`) with a pair task.
    pub fn pairs(&self) -> Vec<(String, f64)> {
        let mut v = vec![(format!("{}_loss", self.names.lm), self.loss), ("perplexity".into(), self.perplexity), ("accuracy".into(), self.accuracy)];
        if let (Some(task), Some((loss, acc))) = (self.names.pair, self.pair) {
            v.push((format!("{task}_loss"), loss));
            v.push((format!("{task}_accuracy"), acc));
        }
        v
    }
}

/// Evaluates `model` (eval mode, no grad) on host batches; sums on the device and reads the
/// totals once at the end.
pub fn evaluate(model: &dyn ObjectiveModel, batches: &[HostBatch], device: Device, names: ObjectiveNames) -> EvalMetrics {
    let _guard = tch::no_grad_guard();
    let zero = |k| Tensor::zeros([], (k, device));
    let (mut lm, mut lm_ok, mut pair, mut pair_ok) = (zero(Kind::Double), zero(Kind::Int64), zero(Kind::Double), zero(Kind::Int64));
    let (mut scored, mut rows) = (0u64, 0u64);
    for hb in batches {
        let b = DeviceBatch::new(hb, device);
        let out = model.sums(&b, false);
        if hb.n_scored > 0 {
            lm += out.lm.to_kind(Kind::Double);
            lm_ok += correct(&out.lm_logits, &b.masked_labels);
            scored += hb.n_scored as u64;
        }
        if let (Some((sum, logits)), Some(labels)) = (out.pair, &b.pair_labels) {
            pair += sum.to_kind(Kind::Double);
            pair_ok += correct(&logits, labels);
            rows += hb.batch_size as u64;
        }
    }
    let n = scored.max(1) as f64;
    let loss = lm.double_value(&[]) / n;
    let pair = (rows > 0).then(|| (pair.double_value(&[]) / rows as f64, pair_ok.int64_value(&[]) as f64 / rows as f64));
    EvalMetrics { names, loss, perplexity: loss.exp(), accuracy: lm_ok.int64_value(&[]) as f64 / n, scored_tokens: scored, pair }
}
