//! A fine-tuning [`Task`] on the engine: its collator runs in the Masker workers
//! ([`TaskCollator`]), its network and loss on the Trainer and the Evaluator
//! ([`TaskObjective`], [`TaskNet`]); [`TaskSpec`] is what a checkpoint records so `evaluate`,
//! `predict` and `export` rebuild the same task ([`restore`]). Nothing here depends on which
//! task it is.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use tch::{nn, Device, Kind, Tensor};

use super::tasks::{Task, TaskContext, TaskError};
use crate::batch::{HostBatch, RawBatch};
use crate::config::TaskConfig;
use crate::data::labelled::TaskExample;
use crate::data::stream::Payload;
use crate::data::tokenize::TextTokenizer;
use crate::model::bert::BertConfig;
use crate::model::glm::GlmConfig;
use crate::model::modernbert::ModernBertConfig;
use crate::objective::{Collator, DeviceBatch, EvalMetrics, LossPart, ModelSpec, Monitor, Objective, ObjectiveModel, Per};
use crate::rng::Purpose;

/// What a task checkpoint's `state.json` says about its model (`model` field).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    /// Always `"BertForTask"`.
    pub architecture: String,
    /// Encoder sizes (Hugging Face names).
    pub config: BertConfig,
    /// The task kind (`task.kind`), so `predict` and `export` rebuild the same model.
    pub kind: String,
    /// Class names by id.
    pub labels: Vec<String>,
    /// The tokenizer used.
    pub tokenizer: PathBuf,
    /// Longest input.
    pub max_seq_len: usize,
    /// Cloze on a GLM: its sizes (cloze without it runs on BERT's MLM head, sized by `config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glm: Option<GlmConfig>,
    /// A task on ModernBERT: its sizes and switches (`config` is then unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modernbert: Option<ModernBertConfig>,
    /// The task's own settings ([`Task::saved`]: `qa` for question answering).
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl TaskSpec {
    /// The encoder the task sits on.
    pub fn encoder(&self) -> ModelSpec {
        match (&self.glm, &self.modernbert) {
            (Some(config), _) => ModelSpec::Glm { config: config.clone() },
            (None, Some(config)) => ModelSpec::ModernBert { config: config.clone() },
            (None, None) => ModelSpec::Bert { config: self.config.clone(), pair_head: false },
        }
    }
}

/// What a checkpoint holds, for export and prediction.
// Read once per command: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum SavedModel {
    /// A pre-training GLM.
    Glm,
    /// A pre-training BERT-family model (with the NSP / SOP head: `BertForPreTraining`, else
    /// `...ForMaskedLM`) or ModernBERT.
    Pretrain {
        /// Its architecture and sizes (never GLM).
        model: ModelSpec,
        /// The run's `tokenizer.json`.
        tokenizer: PathBuf,
    },
    /// A fine-tuned task model.
    Task(TaskSpec),
}

/// Reads the model description of a checkpoint's `state.json`.
///
/// # Errors
/// [`DescribeError`] for an unreadable description.
pub fn describe(model: &Value, config: &Value) -> Result<SavedModel, DescribeError> {
    if model.get("architecture").and_then(Value::as_str) == Some("BertForTask") {
        return serde_json::from_value(model.clone()).map(SavedModel::Task).map_err(DescribeError);
    }
    let tok = config.pointer("/tokenizer/path").and_then(Value::as_str).map(PathBuf::from).unwrap_or_default();
    match serde_json::from_value::<ModelSpec>(model.clone()) {
        Ok(ModelSpec::Glm { .. }) => Ok(SavedModel::Glm),
        Ok(model) => Ok(SavedModel::Pretrain { model, tokenizer: tok }),
        Err(e) => Err(DescribeError(e)),
    }
}

/// The tokenizer of the checkpoint in `dir`: its own copy (`tokenizer.json`, written with every
/// checkpoint), else the path its run recorded (checkpoints of earlier versions).
pub fn own_tokenizer(dir: &std::path::Path, recorded: PathBuf) -> PathBuf {
    let own = dir.join("tokenizer.json");
    if own.exists() { own } else { recorded }
}

/// A checkpoint whose `state.json` describes no model we know.
#[derive(Debug, thiserror::Error)]
#[error("unreadable model description")]
pub struct DescribeError(#[source] pub serde_json::Error);

/// Rebuilds the task of a fine-tuned checkpoint from its `state.json` (`model` and `config`):
/// the `[task]` section the run had, with the label set it learned, the tokenizer it used
/// (GLM's special tokens added as in the run), and `generate` (the run's `[generate]` with
/// the caller's overrides).
///
/// # Errors
/// An unreadable `[task]`, an unknown kind, a tokenizer that cannot be loaded.
pub fn restore(spec: &TaskSpec, config: &serde_json::Value, generate: crate::decode::DecodeSettings) -> Result<Box<dyn Task>, TaskError> {
    let task: TaskConfig = match config.get("task") {
        Some(t) => serde_json::from_value(t.clone()).map_err(|e| TaskError::config(format!("state.json task: {e}")))?,
        None => TaskConfig::default(),
    };
    let task = TaskConfig { labels: spec.labels.clone(), ..task };
    let kind = super::tasks::lookup(&spec.kind)?;
    let mut tokenizer = TextTokenizer::load(&spec.tokenizer, None).map_err(|e| TaskError::config(format!("tokenizer {}: {}", spec.tokenizer.display(), crate::error_chain(&e))))?;
    let encoder = spec.encoder();
    prepare_tokenizer(&mut tokenizer, &encoder)?;
    (kind.build)(&TaskContext { config: &task, tokenizer: Arc::new(tokenizer), encoder: &encoder, max_seq_len: spec.max_seq_len, generate })
}

/// Adds what the encoder needs to the tokenizer: GLM's `[sop]`, `[eop]`, `[sMASK]` and
/// `[gMASK]`, added in the order pre-training added them, so they get the same ids.
///
/// # Errors
/// The tokenizer refuses them.
pub fn prepare_tokenizer(tokenizer: &mut TextTokenizer, encoder: &ModelSpec) -> Result<(), TaskError> {
    if matches!(encoder, ModelSpec::Glm { .. }) {
        super::tasks::cloze::glm_ids(tokenizer)?;
    }
    Ok(())
}

/// A task's collator in the Masker workers.
#[derive(Clone)]
pub struct TaskCollator(pub Arc<dyn Task>);

impl Collator for TaskCollator {
    fn collate(&self, raw: RawBatch, _stream: Purpose) -> HostBatch {
        let examples: Vec<&TaskExample> = raw
            .examples
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::Labelled(t) => Some(t.as_ref()),
                _ => None,
            })
            .collect();
        let mut b = self.0.collate(&examples);
        b.seq = raw.seq;
        b.cursor = raw.cursor;
        b
    }
}

/// A task as an [`Objective`]: builds the network, records the spec, says what to monitor.
#[derive(Clone)]
pub struct TaskObjective {
    /// The task.
    pub task: Arc<dyn Task>,
    /// What the checkpoint records.
    pub spec: TaskSpec,
    /// The monitored metric.
    pub monitor: Monitor,
}

impl Objective for TaskObjective {
    fn build(&self, root: &nn::Path) -> Box<dyn ObjectiveModel> {
        Box::new(TaskNet::new(root, self.task.clone()))
    }
    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).expect("a TaskSpec serializes")
    }
    fn monitor(&self) -> Monitor {
        self.monitor.clone()
    }
    /// The encoder and the task's head ([`Task::head_flops`]).
    fn forward_flops(&self, b: &HostBatch) -> f64 {
        let d = crate::objective::flops::Dims::of(&self.spec.encoder());
        d.encoder_of(b) + self.task.head_flops(b, &d)
    }
    fn check_start(&self, missing: &[String]) -> Result<(), crate::objective::IncompleteStart> {
        self.task.check_start(missing)
    }
}

/// The network of a task with its loss and metrics.
pub struct TaskNet {
    task: Arc<dyn Task>,
    model: Box<dyn super::tasks::TaskModel>,
}

impl TaskNet {
    /// Creates the task network's variables under `root` (Hugging Face names).
    pub fn new(root: &nn::Path, task: Arc<dyn Task>) -> Self {
        let model = task.build(root);
        TaskNet { task, model }
    }

    /// The task's outputs for a batch.
    pub fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        self.model.outputs(b, train)
    }

    /// The task's network.
    pub fn model(&self) -> &dyn super::tasks::TaskModel {
        self.model.as_ref()
    }
}

impl ObjectiveModel for TaskNet {
    fn losses(&self, b: &DeviceBatch, train: bool) -> Vec<LossPart> {
        let out = self.model.outputs(b, train);
        vec![LossPart::new(self.task.loss_name(), self.task.loss(&out, b), self.task.per())]
    }

    /// Streaming counts per batch (never all logits at once): `loss`, and the task's scorer's
    /// metrics; a generating task's scorer reads what it generated, and its throughput joins
    /// the metrics (`generated_tokens`, `generation_tokens_per_second`).
    fn evaluate(&self, batches: &[HostBatch], device: Device) -> EvalMetrics {
        let _guard = tch::no_grad_guard();
        let mut scorer = self.task.scorer();
        let mut loss = Tensor::zeros([], (Kind::Double, device));
        let mut n_targets = 0usize;
        let mut throughput = Throughput::default();
        for hb in batches {
            let b = DeviceBatch::new(hb, device);
            let out = self.model.outputs(&b, false);
            loss += self.task.loss(&out, &b).to_kind(Kind::Double);
            n_targets += if self.task.per() == Per::Target { hb.n_scored } else { hb.n_examples };
            match throughput.generate(self.model.as_ref(), &b) {
                Some(generated) => scorer.add(&generated, hb),
                None => scorer.add(&out, hb),
            }
        }
        let mut m = scorer.finish();
        m.values.insert("loss".into(), loss.double_value(&[]) / n_targets.max(1) as f64);
        throughput.record(&mut m);
        m
    }
}

/// New tokens and the time spent generating them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Throughput {
    /// New tokens (end tokens included).
    pub tokens: u64,
    /// Seconds in the model's `generate`.
    pub seconds: f64,
}

impl Throughput {
    /// Runs `model.generate` on a batch, counting its tokens and time.
    pub fn generate(&mut self, model: &dyn super::tasks::TaskModel, b: &DeviceBatch) -> Option<Tensor> {
        let t0 = std::time::Instant::now();
        let generated = model.generate(b)?;
        self.seconds += t0.elapsed().as_secs_f64();
        self.tokens += generated.ge(0).sum(Kind::Int64).int64_value(&[]) as u64;
        Some(generated)
    }

    /// New tokens per second (0 before any).
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.tokens as f64 / self.seconds } else { 0.0 }
    }

    /// Adds `generated_tokens` and `generation_tokens_per_second` when anything was generated.
    pub fn record(&self, m: &mut EvalMetrics) {
        if self.seconds > 0.0 {
            m.values.insert("generated_tokens".into(), self.tokens as f64);
            m.values.insert("generation_tokens_per_second".into(), self.per_second());
        }
    }
}
