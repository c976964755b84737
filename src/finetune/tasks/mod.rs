//! Fine-tuning tasks as types: one file per task, each a [`Task`] that knows everything its
//! `task.kind` means, end to end: reading and encoding its labelled records, collating them,
//! its head and loss, its metrics, the monitored metric it defaults to, the line `predict`
//! writes, and the Hugging Face architecture `export` writes. The engine, `evaluate` and
//! `predict` are drivers over the trait; none of them asks which task it runs.
//!
//! Adding a task is one file with a [`TaskKind`] and one line: a built-in one in [`BUILTIN`],
//! a user's own through [`register`] before the config is resolved (`docs/extending.md`).

pub mod classification;
pub mod cloze;
pub mod generation;
pub mod multiple_choice;
pub mod question_answering;
pub mod regression;
pub mod tagging;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};

use super::data::{BadRecords, TaskDataError};
use crate::batch::HostBatch;
use crate::config::TaskConfig;
use crate::data::labelled::TaskExample;
use crate::data::tokenize::TextTokenizer;
use crate::objective::{DeviceBatch, Direction, EvalMetrics, ModelSpec, Monitor, Per};

/// Which records a task reads, and what it keeps of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training records: labels required; a task without configured labels learns them here.
    Train,
    /// Held-out records: labels required, and what scoring needs (QA: offsets, references).
    Eval,
    /// Records to predict: labels optional; each example keeps what its output line echoes.
    Predict,
}

impl Split {
    /// The split's records in a note: `12 of 1780 training texts cut to 128 tokens`.
    pub fn noun(self) -> &'static str {
        match self {
            Split::Train => "training",
            Split::Eval => "held-out",
            Split::Predict => "input",
        }
    }
}

/// The note for records that lost tokens to `train.max_seq_len` (`what`: texts, sentences),
/// none when no record did: truncation is what every BERT-style pipeline does, but a user who
/// reads "accuracy 0.71" should know that a fifth of the texts were read only in part.
pub fn cut_notes(examples: &[TaskExample], split: Split, what: &str, max_len: usize) -> Vec<String> {
    let cut = examples.iter().filter(|e| e.cut).count();
    if cut == 0 {
        return Vec::new();
    }
    vec![format!("{cut} of {} {} {what} cut to {max_len} tokens (train.max_seq_len)", examples.len(), split.noun())]
}

/// Encoded records of one split.
#[derive(Debug, Default)]
pub struct Encoded {
    /// The examples in file order (QA: windows, several per question).
    pub examples: Vec<TaskExample>,
    /// Records read (sentences, texts, questions).
    pub records: usize,
    /// What reading changed, for the run's start line (`12 of 1780 sources cut to 90 tokens`).
    pub notes: Vec<String>,
}

/// Why a task could not be built or could not read its data.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The `[task]` section does not fit the task: every problem, each with its key path.
    #[error("{}", .0.join("; "))]
    Config(Vec<String>),
    /// A data file could not be read, or a record was bad under `data.on_error = "fail"` (the
    /// error names the file, and the line).
    #[error(transparent)]
    Data(#[from] TaskDataError),
    /// No task of this name is registered.
    #[error("task.kind: `{kind}` is not a task ({})", known.join(", "))]
    Unknown {
        /// The name asked for.
        kind: String,
        /// The registered names.
        known: Vec<String>,
    },
    /// The task has no Hugging Face `transformers` architecture to export to.
    #[error("{0}")]
    NoExport(String),
}

impl TaskError {
    /// One config problem.
    pub fn config(message: impl Into<String>) -> Self {
        TaskError::Config(vec![message.into()])
    }

    /// The problems as a resolver lists them (key path first).
    pub fn problems(&self) -> Vec<String> {
        match self {
            TaskError::Config(p) => p.clone(),
            // A problem line starts with its key: the data's is `data`.
            TaskError::Data(e) => vec![format!("data: {}", crate::error_chain(e))],
            e => vec![crate::error_chain(e)],
        }
    }
}

/// What a task is built from: the `[task]` section (labels fixed when restoring a checkpoint),
/// the tokenizer (GLM's special tokens added when the encoder is a GLM), the encoder the task
/// sits on, the longest input, and `[generate]` for a task that generates.
pub struct TaskContext<'a> {
    /// `[task]` as resolved (or as a checkpoint recorded it, with its label set).
    pub config: &'a TaskConfig,
    /// The tokenizer the examples are encoded with.
    pub tokenizer: Arc<TextTokenizer>,
    /// The encoder's architecture and sizes.
    pub encoder: &'a ModelSpec,
    /// Longest input in tokens (`train.max_seq_len`).
    pub max_seq_len: usize,
    /// `[generate]`: how a generating task decodes (others ignore it).
    pub generate: crate::decode::DecodeSettings,
}

/// The network of a task: the encoder with the task's head (or a pre-trained output layer).
pub trait TaskModel: Send {
    /// The task's outputs for a batch (logits, scores, ...): what its loss, scorer and
    /// predictor read.
    fn outputs(&self, batch: &DeviceBatch, train: bool) -> Tensor;
    /// A generating task's new tokens per row `[rows, longest]` (-1 after a row's end): what
    /// its scorer and predictor read instead of the outputs. `None`: the task does not
    /// generate.
    fn generate(&self, batch: &DeviceBatch) -> Option<Tensor> {
        let _ = batch;
        None
    }
}

/// Streaming held-out metrics: fed each batch's outputs, never all logits at once.
pub trait Scorer {
    /// Adds one batch.
    fn add(&mut self, outputs: &Tensor, batch: &HostBatch);
    /// The task's metrics (the driver adds `loss`).
    fn finish(self: Box<Self>) -> EvalMetrics;
}

/// Streaming predictions: fed each batch's outputs with its examples, returns the JSON lines
/// finished so far (QA answers a question once all its windows are in).
pub trait Predictor {
    /// One batch; the lines it finished.
    fn add(&mut self, outputs: &Tensor, batch: &HostBatch, examples: &[&TaskExample]) -> Vec<Value>;
    /// Lines still pending at the end.
    fn finish(self: Box<Self>) -> Vec<Value> {
        Vec::new()
    }
}

/// What `export` writes for a task model: the `transformers` architecture and the
/// `config.json` keys beyond the encoder's.
pub struct HfHead {
    /// `BertForSequenceClassification`, ...
    pub architecture: &'static str,
    /// Extra `config.json` keys (`num_labels`, `id2label`, ...).
    pub config: serde_json::Map<String, Value>,
}

/// One fine-tuning task, resolved: its labels and settings fixed, ready to read data and to
/// build its network on any thread.
pub trait Task: Send + Sync + 'static {
    /// The `task.kind` name, as configs and `state.json` write it.
    fn kind(&self) -> &'static str;
    /// The label of its loss part in logs and metrics (`cls`, `tag`, `qa`, ...).
    fn loss_name(&self) -> &'static str;
    /// Class names by id (empty when the task has none).
    fn labels(&self) -> &[String];
    /// Reads and encodes `files` (at most `limit` records when not 0); on [`Split::Train`] a
    /// task without configured labels learns them first.
    ///
    /// # Errors
    /// An unreadable file, a bad record under `fail`, an unknown label, or a tokenizer error.
    fn read(&mut self, files: &[PathBuf], split: Split, limit: usize, bad: &mut BadRecords) -> Result<Encoded, TaskError>;
    /// Checks what the training split taught the task (at least two classes, ...).
    ///
    /// # Errors
    /// The problems, with key paths.
    fn check_trained(&self) -> Result<(), TaskError> {
        Ok(())
    }
    /// The class a training example teaches, for `task.train_per_class` (`None`: the task
    /// has no single class per example, and the key is an error for it).
    fn class_of(&self, example: &TaskExample) -> Option<usize> {
        let _ = example;
        None
    }
    /// A padded batch of examples (a pure function of them: no randomness).
    fn collate(&self, examples: &[&TaskExample]) -> HostBatch;
    /// Creates the network's variables under `root` (Hugging Face names).
    fn build(&self, root: &nn::Path) -> Box<dyn TaskModel>;
    /// The loss sum of a batch's outputs against its labels.
    fn loss(&self, outputs: &Tensor, batch: &DeviceBatch) -> Tensor;
    /// What the loss is averaged over.
    fn per(&self) -> Per {
        Per::Example
    }
    /// Forward FLOPs of the head on `batch` (dense-equivalent, [`crate::objective::flops`]), added
    /// to the encoder's for MFU. The default counts none.
    fn head_flops(&self, batch: &HostBatch, dims: &crate::objective::flops::Dims) -> f64 {
        let _ = (batch, dims);
        0.0
    }
    /// A fresh metric accumulator.
    fn scorer(&self) -> Box<dyn Scorer>;
    /// The headline metrics, in the order tables show them.
    fn headline(&self) -> &'static [&'static str];
    /// A fresh prediction writer.
    fn predictor(&self) -> Box<dyn Predictor>;
    /// What row `row` of a collated batch is scored on, in words, for `pretune preview` (the
    /// class, the target, each tagged word's tag, the answer span, the cloze candidates).
    fn explain(&self, batch: &HostBatch, row: usize) -> String {
        let _ = (batch, row);
        String::new()
    }
    /// Task settings a checkpoint's `state.json` records beside the label set (`qa`: windows
    /// and post-processing), so `evaluate`, `predict` and `export` rebuild the same task.
    fn saved(&self) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }
    /// The Hugging Face architecture `export` writes.
    ///
    /// # Errors
    /// [`TaskError::NoExport`] when `transformers` has none for this model.
    fn export(&self) -> Result<HfHead, TaskError>;
    /// Whether the starting weights (`[init]`) suffice: a task that adds no weights (cloze)
    /// refuses a start that lacks some of them (`missing`: the variables initialised fresh).
    ///
    /// # Errors
    /// What is missing, and what to start from instead.
    fn check_start(&self, missing: &[String]) -> Result<(), crate::objective::IncompleteStart> {
        let _ = missing;
        Ok(())
    }
}

/// A task kind in the registry: its name, what it asks of the starting point, the `[task]`
/// keys only it reads, and how it is built.
#[derive(Clone, Copy)]
pub struct TaskKind {
    /// `task.kind`.
    pub name: &'static str,
    /// Reuses a pre-trained output layer instead of adding a head (cloze): it needs
    /// `[init]`, may sit on a GLM, and cannot start from a fine-tuned checkpoint.
    pub reuses_pretraining_head: bool,
    /// May start from a pre-trained GLM: cloze and generation (its own output layer),
    /// sequence classification (a head on its first token). The others need a BERT encoder.
    pub on_glm: bool,
    /// The metrics `task.metric` may name (the first is the default; `loss` always fits),
    /// with the direction that is better.
    pub metrics: &'static [(&'static str, Direction)],
    /// `[task]` keys only this kind reads (set under another kind, they are errors).
    pub own_keys: &'static [&'static str],
    /// Its own keys that `predict` and `evaluate` may change on a trained checkpoint with
    /// `--set task.KEY=VALUE`: post-processing, not the model (question answering's
    /// `null_score_diff_threshold`, `n_best_size`, `max_answer_length`).
    pub inference_keys: &'static [&'static str],
    /// `[train]` defaults of this kind where the file sets none (question answering:
    /// `max_seq_len = 384`, `run_qa.py`'s windows), beside the fine-tuning defaults.
    pub train_defaults: &'static [(&'static str, i64)],
    /// Builds the task from its context.
    pub build: fn(&TaskContext) -> Result<Box<dyn Task>, TaskError>,
}

impl TaskKind {
    /// The monitored metric for `task.metric` (`""`: the kind's default); `None` when the
    /// metric does not fit the kind.
    pub fn monitor(&self, metric: &str) -> Option<Monitor> {
        let (name, direction) = match metric {
            "loss" => ("loss", Direction::Lower),
            "" => *self.metrics.first()?,
            m => *self.metrics.iter().find(|(n, _)| *n == m)?,
        };
        Some(Monitor { metric: name.to_owned(), direction })
    }

    /// The metric names `task.metric` accepts, for messages.
    pub fn metric_names(&self) -> Vec<&'static str> {
        self.metrics.iter().map(|(n, _)| *n).chain(["loss"]).collect()
    }
}

/// The built-in tasks.
pub const BUILTIN: [TaskKind; 7] = [classification::KIND, regression::KIND, tagging::KIND, cloze::KIND, question_answering::KIND, generation::KIND, multiple_choice::KIND];

static REGISTERED: RwLock<Vec<TaskKind>> = RwLock::new(Vec::new());

/// Registers a user's own task kind (before the config naming it is resolved); a later
/// registration of the same name replaces the earlier one. Built-in names cannot be replaced.
///
/// # Errors
/// The name of a built-in task.
pub fn register(kind: TaskKind) -> Result<(), TaskError> {
    if BUILTIN.iter().any(|k| k.name == kind.name) {
        return Err(TaskError::config(format!("task.kind: `{}` is a built-in task", kind.name)));
    }
    let mut r = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    r.retain(|k| k.name != kind.name);
    r.push(kind);
    Ok(())
}

/// Every task kind: the built-in ones, then the registered ones.
pub fn kinds() -> Vec<TaskKind> {
    let r = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
    BUILTIN.iter().copied().chain(r.iter().copied()).collect()
}

/// The task kind called `name`.
///
/// # Errors
/// [`TaskError::Unknown`] listing the known names.
pub fn lookup(name: &str) -> Result<TaskKind, TaskError> {
    let all = kinds();
    all.iter().find(|k| k.name == name).copied().ok_or_else(|| TaskError::Unknown { kind: name.to_owned(), known: all.iter().map(|k| k.name.to_owned()).collect() })
}

/// `[task]` keys of other kinds set in `table`: each an error naming the kinds that read it.
pub fn foreign_keys(kind: &TaskKind, table: &toml::Table) -> Vec<String> {
    let Some(task) = table.get("task").and_then(toml::Value::as_table) else { return Vec::new() };
    // Key -> the kinds that read it, in registry order (a key several kinds share, such as
    // `label_smoothing`, is one problem naming them all).
    let mut readers: Vec<(&str, Vec<&str>)> = Vec::new();
    for other in kinds().iter().filter(|k| k.name != kind.name) {
        for key in other.own_keys.iter().filter(|key| task.contains_key(**key) && !kind.own_keys.contains(key)) {
            match readers.iter_mut().find(|(k, _)| k == key) {
                Some((_, names)) => names.push(other.name),
                None => readers.push((key, vec![other.name])),
            }
        }
    }
    readers
        .into_iter()
        .map(|(key, names)| {
            let names: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
            match names.as_slice() {
                [one] => format!("task.{key}: only task.kind = {one} reads it"),
                [init @ .., last] => format!("task.{key}: only task.kind = {} or {last} read it", init.join(", ")),
                [] => unreachable!("a key is listed with the kind that reads it"),
            }
        })
        .collect()
}

/// `task.label_smoothing`, checked: at least 0, below 1.
///
/// # Errors
/// [`TaskError::Config`] naming the key.
pub fn label_smoothing(config: &crate::config::TaskConfig) -> Result<f64, TaskError> {
    let e = config.label_smoothing;
    if !(0.0..1.0).contains(&e) {
        return Err(TaskError::config(format!("task.label_smoothing: {e} is not in [0, 1) (0.1 is usual; 1 would learn nothing of the labels)")));
    }
    Ok(e)
}

// Helpers the task files share.

/// The start check of a task that adds no weights (cloze, generation): every variable must
/// come from the starting point; `reason` says what is reused, `instead` what to start from.
///
/// # Errors
/// [`crate::objective::IncompleteStart`] listing what is missing.
pub fn all_weights_from_start(missing: &[String], reason: &str, instead: &str) -> Result<(), crate::objective::IncompleteStart> {
    if missing.is_empty() {
        return Ok(());
    }
    Err(crate::objective::IncompleteStart { reason: reason.into(), missing: missing.to_vec(), instead: instead.into() })
}

/// The first `limit` items (all when `limit` is 0): `task.max_train_examples` /
/// `max_eval_examples`.
pub fn first<T>(mut v: Vec<T>, limit: usize) -> Vec<T> {
    if limit > 0 {
        v.truncate(limit);
    }
    v
}

/// The JSONL / CSV fields a text task reads.
pub fn fields(c: &TaskConfig) -> super::data::Fields {
    super::data::Fields { text: c.text_field.clone(), text_pair: c.text_pair_field.clone(), label: c.label_field.clone() }
}

/// Text records of `files` (labels required unless predicting).
///
/// # Errors
/// An unreadable file, or a bad record under `fail`.
pub fn read_texts(files: &[PathBuf], fields: &super::data::Fields, split: Split, limit: usize, bad: &mut BadRecords) -> Result<Vec<super::data::ClsRecord>, TaskError> {
    let mut v = Vec::new();
    for f in files {
        if split == Split::Predict {
            v.extend(super::data::read_texts(f, fields)?);
        } else {
            v.extend(super::data::read_classification_with(f, fields, bad)?);
        }
    }
    Ok(first(v, limit))
}

/// The text a prediction line echoes.
pub fn shown_text(text: &str) -> Option<Arc<Value>> {
    Some(Arc::new(serde_json::json!({ "text": text })))
}

/// Pads and stacks examples' ids and segment ids (length rounded up to a multiple of 8), with
/// lengths and counts; the labels are the task's to add.
pub fn pad_rows(examples: &[&TaskExample], pad: u32) -> HostBatch {
    let b = examples.len();
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut batch = HostBatch { n_examples: b, ..HostBatch::padded(b, longest, pad) };
    let t = batch.seq_len;
    for (r, e) in examples.iter().enumerate() {
        for (j, (&id, &ty)) in e.ids.iter().zip(&e.types).enumerate() {
            batch.input_ids[r * t + j] = id as i64;
            batch.token_type_ids[r * t + j] = ty as i64;
        }
        batch.lengths.push(e.ids.len() as i64);
        batch.n_tokens += e.ids.len();
    }
    batch
}

/// The scored positions of row `row` of a batch, as (column, label) in order.
pub fn scored_in_row(b: &HostBatch, row: usize) -> Vec<(usize, i64)> {
    let t = b.seq_len;
    b.masked_positions.iter().zip(&b.masked_labels).filter(|(&p, _)| p as usize / t == row).map(|(&p, &l)| (p as usize % t, l)).collect()
}

/// A label's name (its id when the set has no such class).
pub fn label_name(names: &[String], id: i64) -> String {
    names.get(id as usize).cloned().unwrap_or_else(|| id.to_string())
}

/// A CPU copy of `t` as `f64`s (any float or integer kind).
pub fn to_f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).to_device(Device::Cpu).contiguous().view([-1])).expect("a contiguous f64 tensor converts")
}

/// A CPU copy of `t` as `i64`s.
pub fn to_i64s(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(&t.to_kind(Kind::Int64).to_device(Device::Cpu).contiguous().view([-1])).expect("a contiguous i64 tensor converts")
}

/// The arg-max over the last dimension, on the CPU.
pub fn argmax(outputs: &Tensor) -> Vec<i64> {
    to_i64s(&outputs.argmax(-1, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn the_registry_finds_kinds_and_refuses_to_replace_a_built_in() {
        assert_eq!(lookup("cloze").unwrap().name, "cloze");
        let e = lookup("summarization").err().unwrap().to_string();
        assert!(e.starts_with("task.kind: `summarization` is not a task") && e.contains("question_answering"), "{e}");
        assert!(register(TaskKind { name: "regression", ..classification::KIND }).is_err());
        register(TaskKind { name: "test-only-kind", ..classification::KIND }).unwrap();
        assert_eq!(lookup("test-only-kind").unwrap().name, "test-only-kind");
        assert!(kinds().iter().filter(|k| k.name == "test-only-kind").count() == 1);
        register(TaskKind { name: "test-only-kind", reuses_pretraining_head: true, ..classification::KIND }).unwrap();
        assert!(lookup("test-only-kind").unwrap().reuses_pretraining_head, "a later registration replaces the earlier one");
    }

    #[test]
    fn a_kind_resolves_its_metric_and_another_kinds_keys_are_errors() {
        let qa = question_answering::KIND;
        assert_eq!(qa.monitor("").unwrap().metric, "f1");
        assert_eq!(qa.monitor("exact_match").unwrap().direction, Direction::Higher);
        assert_eq!(regression::KIND.monitor("").unwrap().direction, Direction::Lower);
        assert_eq!(cloze::KIND.monitor("loss").unwrap().direction, Direction::Lower);
        assert!(cloze::KIND.monitor("macro_f1").is_none());
        let t = toml("[task]\nkind = \"sequence_classification\"\ndoc_stride = 64\npattern = \"{text} [MASK]\"\n");
        let problems = foreign_keys(&classification::KIND, &t);
        assert_eq!(problems, vec!["task.pattern: only task.kind = \"cloze\" reads it".to_owned(), "task.doc_stride: only task.kind = \"question_answering\" reads it".to_owned()]);
        assert!(foreign_keys(&qa, &toml("[task]\ndoc_stride = 64\n")).is_empty());
        // A key several kinds read is one problem naming them all.
        let p = foreign_keys(&qa, &toml("[task]\nlabel_smoothing = 0.1\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("task.label_smoothing: only task.kind = \"sequence_classification\", ") && p[0].ends_with(" read it"), "{p:?}");
        assert!(["token_classification", "cloze", "generation"].iter().all(|k| p[0].contains(&format!("\"{k}\""))), "{p:?}");
        assert!(foreign_keys(&classification::KIND, &toml("[task]\nlabel_smoothing = 0.1\n")).is_empty());
    }

    #[test]
    fn rows_keep_their_scored_positions() {
        let a = TaskExample { ids: vec![2, 10, 11, 3], types: vec![0; 4], ..Default::default() };
        let b = TaskExample { ids: vec![2, 12, 3], types: vec![0; 3], ..Default::default() };
        let mut hb = pad_rows(&[&a, &b], 0);
        assert_eq!((hb.seq_len, hb.lengths.clone(), hb.n_tokens), (8, vec![4, 3], 7));
        hb.masked_positions = vec![1, 2, 9];
        hb.masked_labels = vec![5, 6, 7];
        assert_eq!(scored_in_row(&hb, 0), vec![(1, 5), (2, 6)]);
        assert_eq!(scored_in_row(&hb, 1), vec![(1, 7)]);
        assert_eq!(label_name(&["O".into()], 3), "3");
    }
}
