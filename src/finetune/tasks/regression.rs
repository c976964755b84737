//! `task.kind = "regression"`: one number per text (or text pair), the pooled `[CLS]` through
//! `BertForSequenceClassification`'s head with one output, mean squared error; `mse`,
//! `pearson` and `spearman`.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use tch::{nn, Kind, Reduction, Tensor};

use super::classification::{echo, SequenceHead};
use super::{pad_rows, read_texts, shown_text, Encoded, HfHead, Predictor, Scorer, Split, Task, TaskContext, TaskError, TaskKind, TaskModel};
use crate::batch::HostBatch;
use crate::data::labelled::TaskExample;
use crate::data::tokenize::TextTokenizer;
use crate::finetune::data::{encode_classification, BadRecords, Fields};
use crate::finetune::metrics::{pearson, spearman};
use crate::model::heads::{EncoderForTask, HeadEncoder, HeadKind};
use crate::objective::{DeviceBatch, Direction, EvalMetrics};

/// The registry entry.
pub const KIND: TaskKind = TaskKind { name: "regression", reuses_pretraining_head: false, on_glm: false, metrics: &[("mse", Direction::Lower), ("pearson", Direction::Higher), ("spearman", Direction::Higher)], own_keys: &[], inference_keys: &[], train_defaults: &[], build };

fn build(cx: &TaskContext) -> Result<Box<dyn Task>, TaskError> {
    Ok(Box::new(Regression { fields: super::fields(cx.config), tokenizer: cx.tokenizer.clone(), encoder: super::classification::head_encoder(cx.encoder)?, max_len: cx.max_seq_len }))
}

/// Regression.
pub struct Regression {
    fields: Fields,
    tokenizer: Arc<TextTokenizer>,
    encoder: HeadEncoder,
    max_len: usize,
}

impl Task for Regression {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    /// The pooler and the one-output layer, per row.
    fn head_flops(&self, b: &HostBatch, d: &crate::objective::flops::Dims) -> f64 {
        d.linear(b.batch_size, d.hidden as usize) + d.linear(b.batch_size, 1)
    }
    fn loss_name(&self) -> &'static str {
        "regression"
    }
    fn labels(&self) -> &[String] {
        &[]
    }

    fn read(&mut self, files: &[PathBuf], split: Split, limit: usize, bad: &mut BadRecords) -> Result<Encoded, TaskError> {
        let records = read_texts(files, &self.fields, split, limit, bad)?;
        let mut examples = Vec::with_capacity(records.len());
        for r in &records {
            let target = match split {
                Split::Predict => 0.0,
                _ => match finite_target(&r.label) {
                    Ok(t) => t,
                    Err(e) => {
                        // Counted and skipped, or fatal, by `data.on_error`.
                        bad.judge(&r.path, r.line, "bad_target", e.to_string())?;
                        continue;
                    }
                },
            };
            let mut e = encode_classification(&self.tokenizer, r, None, target, self.max_len)?;
            if split == Split::Predict {
                e.shown = shown_text(&r.text);
            }
            examples.push(e);
        }
        let notes = super::cut_notes(&examples, split, "texts", self.max_len);
        Ok(Encoded { records: examples.len(), examples, notes })
    }

    fn collate(&self, examples: &[&TaskExample]) -> HostBatch {
        let mut b = pad_rows(examples, self.tokenizer.special_ids().pad);
        b.row_targets = examples.iter().map(|e| e.target).collect();
        b
    }

    fn build(&self, root: &nn::Path) -> Box<dyn TaskModel> {
        Box::new(Scores(SequenceHead(EncoderForTask::new(root, &self.encoder, HeadKind::SequenceClassification, 1))))
    }

    fn loss(&self, outputs: &Tensor, batch: &DeviceBatch) -> Tensor {
        match &batch.row_targets {
            Some(t) => outputs.to_kind(Kind::Float).mse_loss(t, Reduction::Sum),
            None => outputs.sum(Kind::Float) * 0.0,
        }
    }

    fn scorer(&self) -> Box<dyn Scorer> {
        Box::new(RegressionScorer::default())
    }

    fn headline(&self) -> &'static [&'static str] {
        &["pearson", "spearman", "mse", "loss"]
    }

    fn predictor(&self) -> Box<dyn Predictor> {
        Box::new(ScoreLines)
    }

    fn explain(&self, batch: &HostBatch, row: usize) -> String {
        format!("target {}", batch.row_targets[row])
    }

    fn export(&self) -> Result<HfHead, TaskError> {
        let mut config = serde_json::Map::new();
        config.insert("num_labels".into(), json!(1));
        config.insert("problem_type".into(), json!("regression"));
        Ok(HfHead { architecture: "BertForSequenceClassification", config })
    }
}

/// The one-output head's scores `[examples]`.
struct Scores(SequenceHead);

impl TaskModel for Scores {
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        self.0.outputs(b, train).view([-1])
    }
}

#[derive(Default)]
struct RegressionScorer {
    preds: Vec<f64>,
    golds: Vec<f64>,
}

impl Scorer for RegressionScorer {
    fn add(&mut self, outputs: &Tensor, batch: &HostBatch) {
        self.preds.extend(super::to_f64s(outputs));
        self.golds.extend(batch.row_targets.iter().map(|&t| t as f64));
    }

    fn finish(self: Box<Self>) -> EvalMetrics {
        let (p, g) = (&self.preds, &self.golds);
        let mse = p.iter().zip(g).map(|(p, g)| (p - g).powi(2)).sum::<f64>() / p.len().max(1) as f64;
        let mut m = EvalMetrics::default();
        m.values.insert("mse".into(), mse);
        m.values.insert("pearson".into(), pearson(p, g));
        m.values.insert("spearman".into(), spearman(p, g));
        m
    }
}

/// `{"text", "score"}` per example.
struct ScoreLines;

impl Predictor for ScoreLines {
    fn add(&mut self, outputs: &Tensor, _batch: &HostBatch, examples: &[&TaskExample]) -> Vec<Value> {
        examples
            .iter()
            .zip(super::to_f64s(outputs))
            .map(|(e, s)| {
                let mut line = echo(e);
                line.insert("score".into(), json!(s));
                Value::Object(line)
            })
            .collect()
    }
}
/// A regression label that cannot be a target.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadTarget {
    /// Not a number at all.
    #[error("regression label `{0}` is not a number")]
    NotANumber(String),
    /// `NaN`, an infinity, or past f32's range.
    #[error("regression label `{0}` is not a finite number within f32's range")]
    NotFinite(String),
}

/// A regression target: a finite number that fits an f32 (`NaN`, `inf` and `1e39` would
/// make every batch holding them a skipped non-finite update, and every evaluation `inf`).
///
/// # Errors
/// [`BadTarget`], for the bad-record message.
pub fn finite_target(label: &str) -> Result<f32, BadTarget> {
    let v: f64 = label.trim().parse().map_err(|_| BadTarget::NotANumber(label.to_owned()))?;
    let t = v as f32;
    if !t.is_finite() {
        return Err(BadTarget::NotFinite(label.to_owned()));
    }
    Ok(t)
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_finite_f32_numbers() {
        assert_eq!(finite_target(" 2.5 "), Ok(2.5));
        assert_eq!(finite_target("-1e3"), Ok(-1000.0));
        for bad in ["NaN", "nan", "inf", "-Infinity", "1e39", "-3.5e38", "", "x"] {
            assert!(finite_target(bad).is_err(), "{bad}");
        }
        assert_eq!(finite_target("1e39"), Err(BadTarget::NotFinite("1e39".into())));
        assert_eq!(finite_target("x"), Err(BadTarget::NotANumber("x".into())));
    }
}
