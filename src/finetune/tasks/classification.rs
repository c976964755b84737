//! `task.kind = "sequence_classification"`: one label per text (or text pair), the pooled
//! `[CLS]` through `BertForSequenceClassification`'s head, cross-entropy; accuracy, macro-F1
//! and per-class precision / recall. Its scorer and its probability lines serve cloze too.
//!
//! On a GLM the text is all Part A (attended both ways) and the head reads the first token's
//! last hidden state, as THUDM/GLM's classification models pool: dense + tanh, dropout, a
//! linear layer to the classes (`classifier.dense`, `classifier.out_proj`). `transformers` has
//! no GLM, so such a checkpoint does not export.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use tch::nn::Module;
use tch::{nn, Kind, Reduction, Tensor};

use super::{pad_rows, read_texts, shown_text, Encoded, HfHead, Predictor, Scorer, Split, Task, TaskContext, TaskError, TaskKind, TaskModel};
use crate::batch::{HostBatch, IGNORE};
use crate::data::labelled::TaskExample;
use crate::data::tokenize::TextTokenizer;
use crate::finetune::data::{encode_classification, BadRecords, Fields, LabelSet};
use crate::finetune::metrics::Confusion;
use crate::model::glm::{Glm, GlmConfig};
use crate::model::heads::{EncoderForTask, HeadEncoder, HeadKind};
use crate::objective::{DeviceBatch, Direction, EvalMetrics, ModelSpec};

/// The registry entry.
pub const KIND: TaskKind = TaskKind { name: "sequence_classification", reuses_pretraining_head: false, on_glm: true, metrics: &[("accuracy", Direction::Higher), ("macro_f1", Direction::Higher)], own_keys: &["label_smoothing"], inference_keys: &[], train_defaults: &[], build };

fn build(cx: &TaskContext) -> Result<Box<dyn Task>, TaskError> {
    Ok(Box::new(Classification {
        labels: LabelSet { names: cx.config.labels.clone() },
        fields: super::fields(cx.config),
        tokenizer: cx.tokenizer.clone(),
        encoder: match cx.encoder {
            ModelSpec::Glm { config } => Encoder::Glm(config.clone()),
            other => Encoder::Head(head_encoder(other)?),
        },
        max_len: cx.max_seq_len,
        label_smoothing: super::label_smoothing(cx.config)?,
    }))
}

/// The encoder a classification head sits on.
#[derive(Clone)]
enum Encoder {
    Head(HeadEncoder),
    Glm(GlmConfig),
}

/// The encoder of a head task: BERT's family or ModernBERT.
///
/// # Errors
/// A GLM encoder: only cloze and classification sit on a GLM.
pub fn head_encoder(encoder: &ModelSpec) -> Result<HeadEncoder, TaskError> {
    match encoder {
        ModelSpec::Bert { config, .. } => Ok(HeadEncoder::Bert(config.clone())),
        ModelSpec::ModernBert { config } => Ok(HeadEncoder::ModernBert(config.clone())),
        ModelSpec::Electra { pair } => Ok(HeadEncoder::Bert(pair.discriminator.clone())),
        ModelSpec::Glm { .. } => Err(TaskError::config("init.checkpoint: a GLM checkpoint has no BERT encoder: only task.kind = \"cloze\" fine-tunes a GLM")),
    }
}

/// Sequence classification.
pub struct Classification {
    labels: LabelSet,
    fields: Fields,
    tokenizer: Arc<TextTokenizer>,
    encoder: Encoder,
    max_len: usize,
    label_smoothing: f64,
}

impl Task for Classification {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    /// The pooler (or GLM's dense layer) and the classifier, per row.
    fn head_flops(&self, b: &HostBatch, d: &crate::objective::flops::Dims) -> f64 {
        d.linear(b.batch_size, d.hidden as usize) + d.linear(b.batch_size, self.labels().len())
    }
    fn loss_name(&self) -> &'static str {
        "cls"
    }
    fn labels(&self) -> &[String] {
        &self.labels.names
    }
    fn class_of(&self, example: &TaskExample) -> Option<usize> {
        example.labels.first().map(|&l| l as usize)
    }

    fn read(&mut self, files: &[PathBuf], split: Split, limit: usize, bad: &mut BadRecords) -> Result<Encoded, TaskError> {
        let records = read_texts(files, &self.fields, split, limit, bad)?;
        let mut notes = Vec::new();
        if split == Split::Train && self.labels.names.is_empty() {
            self.labels = LabelSet::from_data(&[], records.iter().map(|r| r.label.as_str()));
            notes.extend(LabelSet::rare_note(records.iter().map(|r| (r.label.as_str(), r.path.as_path(), r.line))));
        }
        let mut examples = Vec::with_capacity(records.len());
        for r in &records {
            let label = if split == Split::Predict { None } else { Some(self.labels.id(&r.label, &r.path, r.line)?) };
            let mut e = encode_classification(&self.tokenizer, r, label, 0.0, self.max_len)?;
            if split == Split::Predict {
                e.shown = shown_text(&r.text);
            }
            examples.push(e);
        }
        notes.extend(super::cut_notes(&examples, split, "texts", self.max_len));
        Ok(Encoded { examples, records: records.len(), notes })
    }

    fn check_trained(&self) -> Result<(), TaskError> {
        at_least_two(&self.labels)
    }

    fn collate(&self, examples: &[&TaskExample]) -> HostBatch {
        let mut b = pad_rows(examples, self.tokenizer.special_ids().pad);
        b.row_labels = examples.iter().map(|e| e.labels.first().copied().unwrap_or(IGNORE)).collect();
        b
    }

    fn build(&self, root: &nn::Path) -> Box<dyn TaskModel> {
        let n = self.labels.names.len().max(1) as i64;
        match &self.encoder {
            Encoder::Head(encoder) => Box::new(SequenceHead(EncoderForTask::new(root, encoder, HeadKind::SequenceClassification, n))),
            Encoder::Glm(config) => Box::new(GlmSequenceHead::new(root, config, n)),
        }
    }

    fn loss(&self, outputs: &Tensor, batch: &DeviceBatch) -> Tensor {
        class_loss(outputs, batch, self.label_smoothing)
    }

    fn scorer(&self) -> Box<dyn Scorer> {
        Box::new(ClassScorer::new(&self.labels.names))
    }

    fn headline(&self) -> &'static [&'static str] {
        &["accuracy", "macro_f1", "loss"]
    }

    fn predictor(&self) -> Box<dyn Predictor> {
        Box::new(Probabilities { labels: self.labels.names.clone() })
    }

    fn explain(&self, batch: &HostBatch, row: usize) -> String {
        format!("label {}", super::label_name(&self.labels.names, batch.row_labels[row]))
    }

    fn export(&self) -> Result<HfHead, TaskError> {
        if matches!(self.encoder, Encoder::Glm(_)) {
            return Err(TaskError::NoExport("a classification head on a GLM: transformers has no GLM model to load it into (export writes BERT-family folders only)".into()));
        }
        let mut config = label_maps(&self.labels.names);
        config.insert("num_labels".into(), json!(self.labels.names.len()));
        config.insert("problem_type".into(), json!("single_label_classification"));
        Ok(HfHead { architecture: "BertForSequenceClassification", config })
    }
}

/// A GLM with a classification head on its first token: logits `[examples, classes]`.
pub struct GlmSequenceHead {
    glm: Glm,
    dense: nn::Linear,
    out_proj: nn::Linear,
    dropout: f64,
}

impl GlmSequenceHead {
    /// The GLM under `root` (its pre-training names) and the head under `root/classifier`.
    pub fn new(root: &nn::Path, config: &GlmConfig, classes: i64) -> Self {
        let init = nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: config.init_method_std }, bs_init: Some(nn::Init::Const(0.0)), bias: true };
        let c = root / "classifier";
        let h = config.hidden_size;
        GlmSequenceHead { glm: Glm::new(root, config), dense: nn::linear(&c / "dense", h, h, init), out_proj: nn::linear(&c / "out_proj", h, classes, init), dropout: config.hidden_dropout }
    }
}

impl TaskModel for GlmSequenceHead {
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        let (rows, t) = b.input_ids.size2().expect("input_ids is [batch, seq]");
        let device = b.input_ids.device();
        // All Part A: positions 0..T, block positions 0, every real token attended both ways.
        let positions = Tensor::arange(t, (Kind::Int64, device)).unsqueeze(0).expand([rows, t], true);
        let blocks = Tensor::zeros([rows, t], (Kind::Int64, device));
        let h = self.glm.forward(&b.input_ids, &positions, &blocks, &b.lengths.to_kind(Kind::Int64), train);
        let first = h.select(1, 0);
        let pooled = self.dense.forward(&crate::model::dropout::dropout(&first, self.dropout, train)).tanh();
        self.out_proj.forward(&crate::model::dropout::dropout(&pooled, self.dropout, train))
    }
}

/// An encoder with a sequence-level head: logits `[examples, outputs]`.
pub struct SequenceHead(pub EncoderForTask);

impl TaskModel for SequenceHead {
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        self.0.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train)
    }
}

/// Classes need two of them.
///
/// # Errors
/// Fewer than two labels.
pub fn at_least_two(labels: &LabelSet) -> Result<(), TaskError> {
    if labels.names.len() < 2 {
        return Err(TaskError::config(format!("task.labels: need at least 2 labels, found {:?}", labels.names)));
    }
    Ok(())
}

/// Cross-entropy of class scores `[examples, classes]` against the batch's row labels, with
/// label smoothing `smoothing` (`task.label_smoothing`).
pub fn class_loss(outputs: &Tensor, batch: &DeviceBatch, smoothing: f64) -> Tensor {
    match &batch.row_labels {
        Some(l) => outputs.cross_entropy_loss::<Tensor>(l, None, Reduction::Sum, IGNORE, smoothing),
        None => outputs.sum(Kind::Float) * 0.0,
    }
}

/// `id2label` and `label2id` of a `transformers` config.
pub fn label_maps(labels: &[String]) -> serde_json::Map<String, Value> {
    let id2label: serde_json::Map<String, Value> = labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
    let label2id: serde_json::Map<String, Value> = labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
    let mut m = serde_json::Map::new();
    m.insert("id2label".into(), Value::Object(id2label));
    m.insert("label2id".into(), Value::Object(label2id));
    m
}

/// Accuracy, macro-F1 and per-class precision / recall from a confusion matrix of the arg-max
/// class against the gold one.
pub struct ClassScorer {
    names: Vec<String>,
    confusion: Confusion,
}

impl ClassScorer {
    /// An empty matrix over `names`.
    pub fn new(names: &[String]) -> Self {
        ClassScorer { names: names.to_vec(), confusion: Confusion::new(names.len().max(1)) }
    }
}

impl Scorer for ClassScorer {
    fn add(&mut self, outputs: &Tensor, batch: &HostBatch) {
        for (&g, p) in batch.row_labels.iter().zip(super::argmax(outputs)) {
            if g >= 0 {
                self.confusion.add(g as usize, p as usize);
            }
        }
    }

    fn finish(self: Box<Self>) -> EvalMetrics {
        let c = self.confusion.metrics();
        let mut m = EvalMetrics::default();
        m.values.insert("accuracy".into(), c.accuracy);
        m.values.insert("macro_f1".into(), c.macro_f1);
        for (i, name) in self.names.iter().enumerate() {
            m.values.insert(format!("precision.{name}"), c.precision[i]);
            m.values.insert(format!("recall.{name}"), c.recall[i]);
        }
        m
    }
}

/// `{"text", "label", "probabilities"}` per example: the softmax of its class scores.
pub struct Probabilities {
    /// Class names by id.
    pub labels: Vec<String>,
}

impl Predictor for Probabilities {
    fn add(&mut self, outputs: &Tensor, _batch: &HostBatch, examples: &[&TaskExample]) -> Vec<Value> {
        let k = self.labels.len().max(1);
        let p = super::to_f64s(&outputs.softmax(-1, Kind::Double));
        examples
            .iter()
            .zip(p.chunks(k))
            .map(|(e, p)| {
                let best = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |x| x.0);
                let probs: serde_json::Map<String, Value> = self.labels.iter().zip(p).map(|(l, v)| (l.clone(), json!(v))).collect();
                let mut line = echo(e);
                line.insert("label".into(), json!(self.labels[best]));
                line.insert("probabilities".into(), Value::Object(probs));
                Value::Object(line)
            })
            .collect()
    }
}

/// What an example's line echoes of its input, as an object to add fields to.
pub fn echo(e: &TaskExample) -> serde_json::Map<String, Value> {
    match e.shown.as_deref() {
        Some(Value::Object(m)) => m.clone(),
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BadRecordPolicy, TaskConfig};
    use crate::model::bert::BertConfig;

    /// `task.label_smoothing` is `transformers`' `LabelSmoother`: per labelled row,
    /// `(1 - ε) · (-log p_label) + ε · mean over classes of (-log p_k)`, summed; unlabelled
    /// rows (IGNORE) add nothing.
    #[test]
    fn label_smoothing_is_the_trainers_label_smoother() {
        let logits = [[2.0f64, -1.0, 0.5], [0.1, 0.2, 3.0], [1.0, 1.0, -4.0]];
        let labels = [0i64, 1, IGNORE];
        let hb = HostBatch { batch_size: 3, seq_len: 1, input_ids: vec![0; 3], token_type_ids: vec![0; 3], lengths: vec![1; 3], row_labels: labels.to_vec(), n_examples: 3, ..Default::default() };
        let batch = DeviceBatch::new(&hb, tch::Device::Cpu);
        let outputs = Tensor::from_slice2(&logits);
        for eps in [0.0, 0.1, 0.3] {
            let mut want = 0.0;
            for (row, &label) in logits.iter().zip(&labels) {
                if label == IGNORE {
                    continue;
                }
                let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
                let nll: Vec<f64> = row.iter().map(|x| lse - x).collect();
                want += (1.0 - eps) * nll[label as usize] + eps * nll.iter().sum::<f64>() / 3.0;
            }
            let got = class_loss(&outputs, &batch, eps).double_value(&[]);
            assert!((got - want).abs() < 1e-9, "ε = {eps}: {got} vs {want}");
        }
        let config = |e: f64| TaskConfig { label_smoothing: e, labels: vec!["a".into(), "b".into(), "c".into()], ..Default::default() };
        // The task built from `[task]` smooths its loss by the setting.
        let tokenizer = Arc::new(TextTokenizer::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sotu/tokenizer.json"), None).unwrap());
        let encoder = ModelSpec::Bert { config: BertConfig::default(), pair_head: false };
        let c = config(0.3);
        let task = (KIND.build)(&TaskContext { config: &c, tokenizer, encoder: &encoder, max_seq_len: 16, generate: Default::default() }).unwrap();
        assert_eq!(task.loss(&outputs, &batch).double_value(&[]), class_loss(&outputs, &batch, 0.3).double_value(&[]));
        assert!(super::super::label_smoothing(&config(0.1)).is_ok());
        for bad in [-0.1, 1.0, f64::NAN] {
            let e = super::super::label_smoothing(&config(bad)).unwrap_err().to_string();
            assert!(e.contains("task.label_smoothing"), "{e}");
        }
    }

    /// A text longer than `max_seq_len` is cut (longest first for a pair) and counted for the
    /// run's notes; a text that fits is not.
    #[test]
    fn cut_texts_are_counted_in_the_notes() {
        let tokenizer = Arc::new(TextTokenizer::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sotu/tokenizer.json"), None).unwrap());
        let encoder = ModelSpec::Bert { config: BertConfig::default(), pair_head: false };
        let config = TaskConfig { labels: vec!["a".into(), "b".into()], ..Default::default() };
        let mut task = (KIND.build)(&TaskContext { config: &config, tokenizer, encoder: &encoder, max_seq_len: 8, generate: Default::default() }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.jsonl");
        let long = "the people of the united states of america";
        std::fs::write(&f, format!("{{\"text\": \"{long}\", \"label\": \"a\"}}\n{{\"text\": \"the people\", \"label\": \"b\"}}\n{{\"text\": \"the\", \"text_pair\": \"{long}\", \"label\": \"b\"}}\n")).unwrap();
        let enc = task.read(&[f], Split::Eval, 0, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).unwrap();
        assert_eq!(enc.examples.iter().map(|e| (e.cut, e.ids.len())).collect::<Vec<_>>(), [(true, 8), (false, 4), (true, 8)]);
        assert_eq!(enc.notes, ["2 of 3 held-out texts cut to 8 tokens (train.max_seq_len)"]);
    }
}
