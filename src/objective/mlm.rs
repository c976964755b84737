//! MLM on the device: forward to the loss, and held-out metrics.

use tch::{Kind, Tensor};

use super::DeviceBatch;
use crate::batch::HostBatch;
use crate::model::bert::{BertForMaskedLM, MlmOutput};

/// Forward pass to the MLM loss; the decoder sees only the scored positions.
pub fn forward(model: &BertForMaskedLM, b: &DeviceBatch, train: bool) -> MlmOutput {
    let hidden = model.bert.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train);
    model.mlm_loss(&hidden, &b.masked_positions, &b.masked_labels, b.n_scored)
}

/// Held-out MLM metrics.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy per scored token.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Share of scored tokens whose arg-max prediction is the original token.
    pub accuracy: f64,
    /// Scored tokens the numbers are over.
    pub scored_tokens: u64,
}

impl EvalMetrics {
    /// `(name, value)` pairs, for metrics and events.
    pub fn pairs(&self) -> [(&'static str, f64); 3] {
        [("mlm_loss", self.loss), ("perplexity", self.perplexity), ("accuracy", self.accuracy)]
    }
}

/// Evaluates `model` (in eval mode, no grad) on host batches; sums on the device and reads the
/// totals once at the end.
pub fn evaluate(model: &BertForMaskedLM, batches: &[HostBatch], device: tch::Device) -> EvalMetrics {
    let _guard = tch::no_grad_guard();
    let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
    let mut correct = Tensor::zeros([], (Kind::Int64, device));
    let mut scored = 0u64;
    for hb in batches.iter().filter(|b| b.n_scored > 0) {
        let b = DeviceBatch::new(hb, device);
        let out = forward(model, &b, false);
        loss_sum += out.loss.to_kind(Kind::Double) * hb.n_scored as f64;
        correct += out.logits.argmax(-1, false).eq_tensor(&b.masked_labels).sum(Kind::Int64);
        scored += hb.n_scored as u64;
    }
    let n = scored.max(1) as f64;
    let loss = loss_sum.double_value(&[]) / n;
    EvalMetrics { loss, perplexity: loss.exp(), accuracy: correct.int64_value(&[]) as f64 / n, scored_tokens: scored }
}
