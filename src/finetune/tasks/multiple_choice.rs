//! `task.kind = "multiple_choice"`: pick one of several endings, as `transformers`'
//! `BertForMultipleChoice` and `run_swag.py` do. Each choice is the pair (context, choice)
//! through the encoder and the pooler, scored by a one-output classifier; the scores of an
//! example's choices are its logits, under a softmax cross-entropy against the right one.
//!
//! Records (JSONL): SWAG's (`sent1`, `sent2`, `ending0`.., `label`; the pairs are `sent1` and
//! `sent2 + " " + ending`, as `run_swag.py` builds them), or a context and a list of choices
//! (`task.text_field`, `choices`, `task.label_field` the right choice's index). Every record
//! has as many choices as the training data's first; the count is the task's label set
//! (`"0"`, `"1"`, ...), so a checkpoint keeps it.
//!
//! An example's choices ride in one [`TaskExample`]: their tokens one after another, each
//! choice's first position in `word_starts`, split back into rows by [`Task::collate`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use tch::{nn, Kind, Tensor};

use super::classification::{echo, SequenceHead};
use super::{Encoded, HfHead, Predictor, Scorer, Split, Task, TaskContext, TaskError, TaskKind, TaskModel};
use crate::batch::{HostBatch, IGNORE};
use crate::data::labelled::TaskExample;
use crate::data::tokenize::TextTokenizer;
use crate::files::FileError;
use crate::finetune::data::{encode_classification, jsonl_values, BadRecords, ClsRecord, LabelSet, TaskDataError};
use crate::model::heads::{EncoderForTask, HeadEncoder, HeadKind};
use crate::objective::{DeviceBatch, Direction, EvalMetrics};

/// The registry entry.
pub const KIND: TaskKind = TaskKind { name: "multiple_choice", reuses_pretraining_head: false, on_glm: false, metrics: &[("accuracy", Direction::Higher)], own_keys: &["label_smoothing"], inference_keys: &[], train_defaults: &[], build };

fn build(cx: &TaskContext) -> Result<Box<dyn Task>, TaskError> {
    let encoder = super::classification::head_encoder(cx.encoder)?;
    if encoder.model_type() != "bert" {
        // RoBERTa's, ELECTRA's and ModernBERT's multiple-choice heads are not their
        // classification heads (a pooler where those have none, a sequence summary): not built.
        return Err(TaskError::config(format!("task.kind: \"multiple_choice\" runs on a BERT encoder (BertForMultipleChoice), not a {} one", encoder.model_type())));
    }
    Ok(Box::new(MultipleChoice {
        choices: LabelSet { names: cx.config.labels.clone() },
        text_field: cx.config.text_field.clone(),
        label_field: cx.config.label_field.clone(),
        tokenizer: cx.tokenizer.clone(),
        encoder,
        max_len: cx.max_seq_len,
        label_smoothing: super::label_smoothing(cx.config)?,
    }))
}

/// Multiple choice.
pub struct MultipleChoice {
    /// `"0"`, `"1"`, ...: one name per choice position.
    choices: LabelSet,
    text_field: String,
    label_field: String,
    tokenizer: Arc<TextTokenizer>,
    encoder: HeadEncoder,
    max_len: usize,
    label_smoothing: f64,
}

/// One record: the context, its choices, the right one's index (`None` when predicting).
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceRecord {
    /// The first segment of every pair.
    pub context: String,
    /// The second segments.
    pub choices: Vec<String>,
    /// The right choice.
    pub label: Option<usize>,
}

/// The records of a JSONL file, SWAG's or a context with `choices`; `need_label`: training and
/// evaluation (a prediction's label, if any, is ignored).
///
/// # Errors
/// An unreadable or empty file; a bad record under `data.on_error = "fail"`.
pub fn read_choices(path: &Path, text_field: &str, label_field: &str, need_label: bool, bad: &mut BadRecords) -> Result<Vec<(u64, ChoiceRecord)>, TaskDataError> {
    let bytes = std::fs::read(path).map_err(FileError::at(path))?;
    let mut out = Vec::new();
    for (line, v) in jsonl_values(path, &bytes, bad)? {
        match record(&v, text_field, label_field, need_label) {
            Ok(r) => out.push((line, r)),
            Err((reason, message)) => bad.judge(path, line, reason, message)?,
        }
    }
    if out.is_empty() {
        return Err(bad.empty(path));
    }
    Ok(out)
}

fn record(v: &Value, text_field: &str, label_field: &str, need_label: bool) -> Result<ChoiceRecord, (&'static str, String)> {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let (context, choices, label) = if v.get("ending0").is_some() {
        // SWAG: `run_swag.py`'s pairs.
        let (Some(sent1), Some(sent2)) = (text("sent1"), text("sent2")) else {
            return Err(("missing_field", "a SWAG record needs `sent1` and `sent2` strings".into()));
        };
        let endings: Option<Vec<String>> = (0..).map_while(|i| v.get(format!("ending{i}"))).map(|e| e.as_str().map(|e| format!("{sent2} {e}"))).collect();
        let Some(endings) = endings else { return Err(("missing_field", "every `endingN` is a string".into())) };
        (sent1, endings, v.get("label"))
    } else {
        let Some(context) = text(text_field) else { return Err(("missing_field", format!("no text field `{text_field}` (a string)"))) };
        let choices: Option<Vec<String>> = v.get("choices").and_then(Value::as_array).and_then(|a| a.iter().map(|c| c.as_str().map(str::to_owned)).collect());
        let Some(choices) = choices else { return Err(("missing_field", "no `choices` (a list of strings)".into())) };
        (context, choices, v.get(label_field))
    };
    if choices.len() < 2 {
        return Err(("bad_choices", format!("{} choice(s): a record needs at least 2", choices.len())));
    }
    let label = match label.and_then(|l| l.as_u64().or_else(|| l.as_str()?.parse().ok())) {
        Some(l) if (l as usize) < choices.len() => Some(l as usize),
        Some(l) => return Err(("bad_label", format!("label {l}: there are {} choices (0 to {})", choices.len(), choices.len() - 1))),
        None if need_label => return Err(("missing_field", format!("no label (the right choice's index, 0 to {})", choices.len() - 1))),
        None => None,
    };
    Ok(ChoiceRecord { context, choices, label })
}

impl MultipleChoice {
    /// One example: every (context, choice) pair encoded, one after another.
    fn encode(&self, r: &ChoiceRecord) -> Result<TaskExample, TaskDataError> {
        let mut e = TaskExample { labels: vec![r.label.map_or(IGNORE, |l| l as i64)], ..Default::default() };
        for choice in &r.choices {
            let pair = ClsRecord { text: r.context.clone(), pair: Some(choice.clone()), label: String::new(), path: PathBuf::new(), line: 0 };
            let one = encode_classification(&self.tokenizer, &pair, None, 0.0, self.max_len)?;
            e.word_starts.push(Some(e.ids.len()));
            e.ids.extend(one.ids);
            e.types.extend(one.types);
            e.cut |= one.cut;
        }
        Ok(e)
    }
}

/// An example's choices as `(start, end)` in its tokens.
fn rows(e: &TaskExample) -> impl Iterator<Item = (usize, usize)> + '_ {
    let starts: Vec<usize> = e.word_starts.iter().flatten().copied().collect();
    let ends: Vec<usize> = starts.iter().skip(1).copied().chain(std::iter::once(e.ids.len())).collect();
    starts.into_iter().zip(ends)
}

impl Task for MultipleChoice {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    /// The pooler and the one-output classifier, per choice.
    fn head_flops(&self, b: &HostBatch, d: &crate::objective::flops::Dims) -> f64 {
        d.linear(b.batch_size, d.hidden as usize) + d.linear(b.batch_size, 1)
    }
    fn loss_name(&self) -> &'static str {
        "choice"
    }
    fn labels(&self) -> &[String] {
        &self.choices.names
    }

    fn read(&mut self, files: &[PathBuf], split: Split, limit: usize, bad: &mut BadRecords) -> Result<Encoded, TaskError> {
        let mut records = Vec::new();
        for f in files {
            records.extend(read_choices(f, &self.text_field, &self.label_field, split != Split::Predict, bad)?.into_iter().map(|(line, r)| (f.clone(), line, r)));
        }
        let records = super::first(records, limit);
        if split == Split::Train && self.choices.names.is_empty() {
            let k = records.first().map_or(0, |(_, _, r)| r.choices.len());
            self.choices = LabelSet { names: (0..k).map(|i| i.to_string()).collect() };
        }
        let k = self.choices.names.len();
        let mut examples = Vec::with_capacity(records.len());
        for (path, line, r) in &records {
            if r.choices.len() != k {
                bad.judge(path, *line, "bad_choices", format!("{} choices where the task has {k}", r.choices.len()))?;
                continue;
            }
            let mut e = self.encode(r)?;
            if split == Split::Predict {
                e.shown = Some(Arc::new(json!({ "context": r.context, "choices": r.choices })));
            }
            examples.push(e);
        }
        let notes = super::cut_notes(&examples, split, "records with a choice", self.max_len);
        Ok(Encoded { records: records.len(), examples, notes })
    }

    fn check_trained(&self) -> Result<(), TaskError> {
        super::classification::at_least_two(&self.choices)
    }

    fn class_of(&self, example: &TaskExample) -> Option<usize> {
        example.labels.first().and_then(|&l| usize::try_from(l).ok())
    }

    /// A row per choice, `candidates` rows per example; `row_labels` per example.
    fn collate(&self, examples: &[&TaskExample]) -> HostBatch {
        let k = self.choices.names.len().max(1);
        let pad = self.tokenizer.special_ids().pad;
        let longest = examples.iter().flat_map(|e| rows(e).map(|(a, b)| b - a)).max().unwrap_or(1);
        let mut b = HostBatch { n_examples: examples.len(), candidates: k, ..HostBatch::padded(examples.len() * k, longest, pad) };
        let t = b.seq_len;
        for (i, e) in examples.iter().enumerate() {
            for (c, (start, end)) in rows(e).enumerate() {
                let r = i * k + c;
                for (j, (&id, &ty)) in e.ids[start..end].iter().zip(&e.types[start..end]).enumerate() {
                    b.input_ids[r * t + j] = i64::from(id);
                    b.token_type_ids[r * t + j] = i64::from(ty);
                }
                b.lengths.push((end - start) as i64);
                b.n_tokens += end - start;
            }
            b.row_labels.push(e.labels.first().copied().unwrap_or(IGNORE));
        }
        b
    }

    fn build(&self, root: &nn::Path) -> Box<dyn TaskModel> {
        Box::new(ChoiceHead(SequenceHead(EncoderForTask::new(root, &self.encoder, HeadKind::SequenceClassification, 1))))
    }

    /// `BertForMultipleChoice`'s loss: cross-entropy over each example's choice scores.
    fn loss(&self, outputs: &Tensor, batch: &DeviceBatch) -> Tensor {
        super::classification::class_loss(outputs, batch, self.label_smoothing)
    }

    fn scorer(&self) -> Box<dyn Scorer> {
        Box::new(Accuracy::default())
    }

    fn headline(&self) -> &'static [&'static str] {
        &["accuracy", "loss"]
    }

    fn predictor(&self) -> Box<dyn Predictor> {
        Box::new(ChoiceLines)
    }

    fn explain(&self, batch: &HostBatch, row: usize) -> String {
        let k = batch.candidates.max(1);
        let gold = batch.row_labels.get(row / k).copied().unwrap_or(IGNORE);
        format!("choice {} of {k} ({})", row % k, if gold == (row % k) as i64 { "the right one" } else { "wrong" })
    }

    fn export(&self) -> Result<HfHead, TaskError> {
        let mut config = serde_json::Map::new();
        config.insert("num_labels".into(), json!(1));
        Ok(HfHead { architecture: "BertForMultipleChoice", config })
    }
}

/// The scores `[examples, choices]`: one classifier output per (context, choice) row.
struct ChoiceHead(SequenceHead);

impl TaskModel for ChoiceHead {
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        self.0.outputs(b, train).view([-1, b.candidates.max(1) as i64])
    }
}

/// The share of examples whose best-scored choice is the right one.
#[derive(Default)]
struct Accuracy {
    right: u64,
    all: u64,
}

impl Scorer for Accuracy {
    fn add(&mut self, outputs: &Tensor, batch: &HostBatch) {
        for (&gold, pred) in batch.row_labels.iter().zip(super::argmax(outputs)) {
            if gold >= 0 {
                self.all += 1;
                self.right += u64::from(gold == pred);
            }
        }
    }

    fn finish(self: Box<Self>) -> EvalMetrics {
        let mut m = EvalMetrics::default();
        m.values.insert("accuracy".into(), if self.all == 0 { 0.0 } else { self.right as f64 / self.all as f64 });
        m
    }
}

/// `{"context", "choices", "label", "probabilities"}` per record: the best choice's index and
/// the softmax over the choices.
struct ChoiceLines;

impl Predictor for ChoiceLines {
    fn add(&mut self, outputs: &Tensor, _batch: &HostBatch, examples: &[&TaskExample]) -> Vec<Value> {
        let k = outputs.size().last().copied().unwrap_or(1).max(1) as usize;
        let probs = super::to_f64s(&outputs.softmax(-1, Kind::Float));
        examples
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let p = &probs[i * k..(i + 1) * k];
                let best = (0..k).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
                let mut line = echo(e);
                line.insert("label".into(), json!(best));
                line.insert("probabilities".into(), json!(p));
                Value::Object(line)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swag_and_choice_records_read_as_run_swag_pairs_them() {
        let swag = json!({"sent1": "Members of the group sing.", "sent2": "They", "ending0": "dance.", "ending1": "stop.", "label": 1});
        let r = record(&swag, "text", "label", true).unwrap();
        assert_eq!((r.context.as_str(), r.choices.clone(), r.label), ("Members of the group sing.", vec!["They dance.".to_owned(), "They stop.".to_owned()], Some(1)));
        let plain = json!({"text": "2 + 2 =", "choices": ["3", "4", "5"], "label": "1"});
        assert_eq!(record(&plain, "text", "label", true).unwrap().label, Some(1));
        for (bad, says) in [
            (json!({"text": "x", "choices": ["a", "b"], "label": 2}), "label 2: there are 2 choices"),
            (json!({"text": "x", "choices": ["a"], "label": 0}), "1 choice(s)"),
            (json!({"text": "x", "choices": ["a", 3], "label": 0}), "no `choices`"),
            (json!({"text": "x", "choices": ["a", "b"]}), "no label"),
            (json!({"sent1": "x", "ending0": "a", "label": 0}), "`sent1` and `sent2`"),
        ] {
            let e = record(&bad, "text", "label", true).unwrap_err().1;
            assert!(e.contains(says), "{bad}: {e}");
        }
        // Predicting needs no label.
        assert_eq!(record(&json!({"text": "x", "choices": ["a", "b"]}), "text", "label", false).unwrap().label, None);
    }
}
