//! A user's own fine-tuning task, as one file plus one registration line: multi-label
//! classification with a sigmoid head. Each spam-set example gets two labels at once, `spam`
//! (from the data) and `long` (more than 48 tokens); BERT's pooled `[CLS]` goes through a
//! linear layer with one output per label, trained with binary cross-entropy, scored by
//! per-label accuracy and micro-F1. Once registered, `task.kind = "multilabel"` works in any
//! config: the engine, resume, signals, checkpoints, metrics, `evaluate`, `predict` and
//! `export` (as `transformers`' `BertForSequenceClassification` with
//! `problem_type = "multi_label_classification"`) come with it.
//!
//! ```sh
//! make build && cargo run --example multilabel_head
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use pretune::actors::Pipeline;
use pretune::batch::HostBatch;
use pretune::data::labelled::TaskExample;
use pretune::data::tokenize::TextTokenizer;
use pretune::finetune::data::{encode_classification, BadRecords, Fields};
use pretune::finetune::tasks::{self, Encoded, HfHead, Predictor, Scorer, Split, Task, TaskContext, TaskError, TaskKind, TaskModel};
use pretune::model::bert::{Bert, BertConfig};
use pretune::objective::{DeviceBatch, Direction, EvalMetrics, ModelSpec};
use serde_json::{json, Value};
use tch::nn::{self, Module};
use tch::{Reduction, Tensor};

const LABELS: [&str; 2] = ["spam", "long"];

/// The registry entry: the name configs use, the metrics `task.metric` may pick, the builder.
const MULTILABEL: TaskKind = TaskKind { name: "multilabel", reuses_pretraining_head: false, on_glm: false, metrics: &[("micro_f1", Direction::Higher)], own_keys: &[], inference_keys: &[], train_defaults: &[], build };

fn build(cx: &TaskContext) -> Result<Box<dyn Task>, TaskError> {
    let ModelSpec::Bert { config, .. } = cx.encoder else { return Err(TaskError::config("init.checkpoint: multilabel needs a BERT")) };
    Ok(Box::new(MultiLabel { config: config.clone(), tokenizer: cx.tokenizer.clone(), fields: tasks::fields(cx.config), max_len: cx.max_seq_len }))
}

struct MultiLabel {
    config: BertConfig,
    tokenizer: Arc<TextTokenizer>,
    fields: Fields,
    max_len: usize,
}

impl Task for MultiLabel {
    fn kind(&self) -> &'static str {
        MULTILABEL.name
    }
    fn loss_name(&self) -> &'static str {
        "multilabel"
    }
    fn labels(&self) -> &[String] {
        &[]
    }

    /// Texts as the built-in tasks read them; the two 0 / 1 targets go in `labels`.
    fn read(&mut self, files: &[PathBuf], split: Split, limit: usize, bad: &mut BadRecords) -> Result<Encoded, TaskError> {
        let records = tasks::read_texts(files, &self.fields, split, limit, bad)?;
        let mut examples = Vec::new();
        for r in &records {
            let mut e = encode_classification(&self.tokenizer, r, None, 0.0, self.max_len)?;
            e.labels = vec![(r.label == "spam") as i64, (e.ids.len() > 48) as i64];
            e.shown = tasks::shown_text(&r.text);
            examples.push(e);
        }
        Ok(Encoded { examples, records: records.len(), ..Default::default() })
    }

    fn collate(&self, examples: &[&TaskExample]) -> HostBatch {
        let mut b = tasks::pad_rows(examples, self.tokenizer.special_ids().pad);
        b.row_targets = examples.iter().flat_map(|e| e.labels.iter().map(|&l| l as f32)).collect();
        b
    }

    /// `transformers`' names: `bert.*`, `bert.pooler.dense`, `classifier`.
    fn build(&self, root: &nn::Path) -> Box<dyn TaskModel> {
        let h = self.config.hidden_size;
        let bert = Bert::new(root / "bert", &self.config);
        let pooler = nn::linear(root / "bert" / "pooler" / "dense", h, h, Default::default());
        let head = nn::linear(root / "classifier", h, LABELS.len() as i64, Default::default());
        Box::new(MultiLabelNet { bert, pooler, head })
    }

    /// Binary cross-entropy summed over labels and examples, over the label count (the Trainer
    /// divides by the examples).
    fn loss(&self, logits: &Tensor, b: &DeviceBatch) -> Tensor {
        let targets = b.row_targets.as_ref().expect("multi-label targets").view([-1, LABELS.len() as i64]);
        logits.binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, Reduction::Sum) / LABELS.len() as f64
    }

    fn scorer(&self) -> Box<dyn Scorer> {
        Box::new(Counts::default())
    }

    fn headline(&self) -> &'static [&'static str] {
        &["micro_f1", "accuracy.spam", "accuracy.long", "loss"]
    }

    fn predictor(&self) -> Box<dyn Predictor> {
        Box::new(Lines)
    }

    fn export(&self) -> Result<HfHead, TaskError> {
        let mut config = serde_json::Map::new();
        config.insert("num_labels".into(), json!(LABELS.len()));
        config.insert("problem_type".into(), json!("multi_label_classification"));
        config.insert("id2label".into(), json!({"0": LABELS[0], "1": LABELS[1]}));
        Ok(HfHead { architecture: "BertForSequenceClassification", config })
    }
}

struct MultiLabelNet {
    bert: Bert,
    pooler: nn::Linear,
    head: nn::Linear,
}

impl TaskModel for MultiLabelNet {
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        let h = self.bert.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train);
        self.head.forward(&self.pooler.forward(&h.select(1, 0)).tanh().dropout(0.1, train))
    }
}

/// Per-label hits and micro-averaged true / false positives and false negatives.
#[derive(Default)]
struct Counts {
    right: [u64; 2],
    tp: u64,
    fp: u64,
    fneg: u64,
    n: u64,
}

impl Scorer for Counts {
    fn add(&mut self, logits: &Tensor, hb: &HostBatch) {
        let pred = tasks::to_f64s(&logits.gt(0.0));
        for (i, (p, &t)) in pred.iter().zip(&hb.row_targets).enumerate() {
            let (p, t) = (*p == 1.0, t == 1.0);
            self.right[i % 2] += (p == t) as u64;
            self.tp += (p && t) as u64;
            self.fp += (p && !t) as u64;
            self.fneg += (!p && t) as u64;
        }
        self.n += hb.n_examples as u64;
    }

    fn finish(self: Box<Self>) -> EvalMetrics {
        let mut m = EvalMetrics::default();
        for (i, l) in LABELS.iter().enumerate() {
            m.values.insert(format!("accuracy.{l}"), self.right[i] as f64 / self.n.max(1) as f64);
        }
        m.values.insert("micro_f1".into(), 2.0 * self.tp as f64 / (2 * self.tp + self.fp + self.fneg).max(1) as f64);
        m
    }
}

/// `{"text", "labels", "probabilities"}`: every label over 0.5.
struct Lines;

impl Predictor for Lines {
    fn add(&mut self, logits: &Tensor, _batch: &HostBatch, examples: &[&TaskExample]) -> Vec<Value> {
        let p = tasks::to_f64s(&logits.sigmoid());
        examples
            .iter()
            .zip(p.chunks(LABELS.len()))
            .map(|(e, p)| {
                let on: Vec<&str> = LABELS.iter().zip(p).filter(|(_, &v)| v > 0.5).map(|(l, _)| *l).collect();
                let text = e.shown.as_deref().and_then(|s| s.get("text")).cloned().unwrap_or(Value::Null);
                json!({"text": text, "labels": on, "probabilities": {LABELS[0]: p[0], LABELS[1]: p[1]}})
            })
            .collect()
    }
}

fn main() -> anyhow::Result<()> {
    // The one registration line: from here on, `task.kind = "multilabel"` resolves.
    tasks::register(MULTILABEL)?;
    // The tiny spam config with fresh tiny weights (no pre-trained checkpoint needed here).
    let overrides: Vec<String> = [
        "task.kind=\"multilabel\"",
        "task.metric=\"micro_f1\"",
        "init.checkpoint=\"\"",
        "model.hidden_size=64",
        "model.num_layers=2",
        "model.num_heads=2",
        "model.intermediate_size=128",
        "model.max_position_embeddings=128",
        "tokenizer.path=\"data/sotu/tokenizer.json\"",
        "train.epochs=3",
        "train.patience=0",
        "run.out_dir=\"runs/example-multilabel\"",
        "metrics.listen=\"\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let plan = pretune::plan::load_and_resolve(std::path::Path::new("configs/finetune-cls-tiny.toml"), &overrides)?;
    let summary = Pipeline::new(plan).run()?;
    let (step, m) = summary.eval.clone().expect("an evaluation");
    println!("multi-label: {} steps ({} ended it); eval at step {step}: {}", summary.steps, summary.ended_by, m.summary());
    println!("per label: accuracy.spam {:.3}, accuracy.long {:.3}", m.get("accuracy.spam").unwrap_or(0.0), m.get("accuracy.long").unwrap_or(0.0));
    Ok(())
}
