//! Held-out metrics: named values an objective computes over the held-out batches.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use super::{correct, DeviceBatch, ObjectiveModel, ObjectiveNames, Per, PretrainModel};
use crate::batch::HostBatch;

/// Held-out metrics by name (`mlm_loss`, `perplexity`, `accuracy`, `f1`, `precision.spam`,
/// ...). Names with a dot are per-class details: logged in `events.jsonl`, not exported as
/// gauges.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EvalMetrics {
    /// Metric name to value, sorted by name (the order logs and `events.jsonl` show; a
    /// non-finite value is written `null` and read back as NaN).
    #[serde(deserialize_with = "nan_for_null")]
    pub values: BTreeMap<String, f64>,
}

fn nan_for_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    Ok(<BTreeMap<String, Option<f64>> as serde::Deserialize>::deserialize(d)?.into_iter().map(|(k, v)| (k, v.unwrap_or(f64::NAN))).collect())
}

impl EvalMetrics {
    /// `(name, value)` pairs in name order.
    pub fn pairs(&self) -> Vec<(String, f64)> {
        self.values.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// One value.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// The headline values (no per-class details), as `name value` text.
    pub fn summary(&self) -> String {
        let mut shown: Vec<String> = self.values.iter().filter(|(k, _)| !k.contains('.')).map(|(k, v)| format!("{k} {v:.4}")).collect();
        // `[[probe]]`s: their accuracy (the rest is in events.jsonl).
        shown.extend(self.values.iter().filter_map(|(k, v)| Some(format!("probe {} accuracy {v:.4}", k.strip_prefix("probe.")?.strip_suffix(".accuracy")?))));
        // `task.eval_train`: the training examples' accuracy, beside the held-out one.
        shown.extend(self.values.get("train.accuracy").map(|v| format!("train accuracy {v:.4}")));
        shown.join(", ")
    }

    fn insert(&mut self, k: impl Into<String>, v: f64) {
        self.values.insert(k.into(), v);
    }
}

/// Pre-training metrics: mean token-level cross-entropy per scored target (`mlm_loss` or
/// `glm_loss`), `perplexity`, arg-max `accuracy`, and with a pair task `nsp_loss` /
/// `nsp_accuracy` (or `sop_*`), and the count they are over (`scored_tokens`). Sums stay on
/// the device; the totals are read once at the end.
pub fn evaluate(model: &PretrainModel, batches: &[HostBatch], device: Device, names: ObjectiveNames) -> EvalMetrics {
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
    let mut m = EvalMetrics::default();
    m.insert(format!("{}_loss", names.lm), loss);
    m.insert("perplexity", loss.exp());
    m.insert("accuracy", lm_ok.int64_value(&[]) as f64 / n);
    m.insert("scored_tokens", scored as f64);
    if let (Some(task), true) = (names.pair, rows > 0) {
        m.insert(format!("{task}_loss"), pair.double_value(&[]) / rows as f64);
        m.insert(format!("{task}_accuracy"), pair_ok.int64_value(&[]) as f64 / rows as f64);
    }
    m
}

/// The default held-out metrics of any objective: each loss part's mean over its divisor
/// (`{part}_loss`) and their sum (`loss`).
pub fn loss_means<M: ObjectiveModel + ?Sized>(model: &M, batches: &[HostBatch], device: Device) -> EvalMetrics {
    let _guard = tch::no_grad_guard();
    let mut sums: BTreeMap<&'static str, (Tensor, Per, f64)> = BTreeMap::new();
    let (mut scored, mut examples, mut tokens) = (0usize, 0usize, 0usize);
    for hb in batches {
        let b = DeviceBatch::new(hb, device);
        for part in model.losses(&b, false) {
            let s = part.sum.to_kind(Kind::Double);
            match sums.get_mut(part.name) {
                Some((acc, _, _)) => *acc += s,
                None => {
                    sums.insert(part.name, (s, part.per, part.weight));
                }
            }
        }
        scored += hb.n_scored;
        examples += hb.n_examples;
        tokens += hb.n_tokens;
    }
    let mut m = EvalMetrics::default();
    let mut total = 0.0;
    for (name, (sum, per, weight)) in sums {
        let n = match per {
            Per::Target => scored,
            Per::Example => examples,
            Per::Token => tokens,
        };
        let v = sum.double_value(&[]) / n.max(1) as f64;
        total += weight * v;
        m.insert(format!("{name}_loss"), v);
    }
    m.insert("loss", total);
    m
}
