//! The task of a fine-tuning config resolved: starting weights found, tokenizer loaded,
//! labelled data read and encoded, steps and the monitored metric derived.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::data::{self, Fields, LabelSet, TaskExample};
use super::init::{InitSource, StartModel};
use super::task::TaskSpec;
use crate::config::RunConfig;
use crate::objective::{Direction, Monitor};
use crate::data::tokenize::TextTokenizer;
use crate::model::bert::BertConfig;
use crate::model::heads::HeadKind;
use crate::model::glm::GlmConfig;
use crate::objective::ModelSpec;
use super::cloze::{self, ClozeSpec};
use super::qa::{self, QaSettings};
use crate::data::labelled::QaRecord;

/// The fine-tuning part of a [`crate::plan::RunPlan`]: the task, its encoded labelled data,
/// the starting model and the derived step counts.
pub struct TaskPlan {
    /// What checkpoints record about the task model.
    pub spec: TaskSpec,
    /// Class names (empty for regression).
    pub labels: LabelSet,
    /// Encoded training examples.
    pub train: Arc<Vec<Arc<TaskExample>>>,
    /// Encoded held-out examples (may be empty: then no evaluation).
    pub eval: Arc<Vec<Arc<TaskExample>>>,
    /// Cloze: the pattern's answers.
    pub cloze: Option<ClozeSpec>,
    /// Metric for the best checkpoint and early stopping.
    pub monitor: Monitor,
    /// Tokenizer (saved with checkpoints and exports).
    pub tokenizer: Arc<TextTokenizer>,
    /// The network's base architecture (the BERT encoder, or the GLM for cloze).
    pub model: ModelSpec,
    /// Starting weights.
    pub init: InitSource,
    /// Updates in the run (`train.max_steps` when set, else epochs × updates per epoch).
    pub max_steps: u64,
    /// Updates per epoch when counting epochs, else 0.
    pub epoch_steps: u64,
    /// Malformed records skipped while reading (`data.on_error = "skip"`), reported when the
    /// run starts.
    pub skipped: Vec<crate::data::source::BadRecord>,
}

/// The first `n` records (all when `n` is 0): `task.max_train_examples` / `max_eval_examples`.
fn first<T>(mut v: Vec<T>, n: usize) -> Vec<T> {
    if n > 0 {
        v.truncate(n);
    }
    v
}

fn resolve_path(p: &Path, base: Option<&Path>) -> PathBuf {
    match base {
        Some(b) if p.is_relative() && !p.exists() => b.join(p),
        _ => p.to_owned(),
    }
}

/// Validates the task of a fine-tuning config (one with `[task] kind`) and encodes its data;
/// `world` ranks share each global batch.
///
/// # Errors
/// Every problem found, each starting with its key path.
pub fn resolve_task(c: &RunConfig, table: &toml::Table, world: usize) -> Result<TaskPlan, Vec<String>> {
    let Some(kind) = c.task.kind else { return Err(vec!["task.kind: missing".into()]) };
    let mut problems: Vec<String> = Vec::new();
    let invalid = |problems: Vec<String>| problems;
    if c.train.batch_size == 0 || c.train.grad_accum == 0 {
        // Reported by the shared checks (`train.batch_size` / `train.grad_accum: must be
        // positive`); nothing below can be derived without them.
        return Err(Vec::new());
    }
    if c.train.epochs == 0 && c.train.max_steps == 0 {
        problems.push("train.epochs: give epochs or max_steps".into());
    }
    let (metric, direction) = match (kind, c.task.metric.as_str()) {
        (HeadKind::SequenceClassification, "" | "accuracy") => ("accuracy".to_owned(), Direction::Higher),
        (HeadKind::SequenceClassification, "macro_f1") => ("macro_f1".to_owned(), Direction::Higher),
        (HeadKind::TokenClassification, "" | "f1") => ("f1".to_owned(), Direction::Higher),
        (HeadKind::Regression, "" | "mse") => ("mse".to_owned(), Direction::Lower),
        (HeadKind::Regression, m @ ("pearson" | "spearman")) => (m.to_owned(), Direction::Higher),
        (HeadKind::Cloze, "" | "accuracy") => ("accuracy".to_owned(), Direction::Higher),
        (HeadKind::QuestionAnswering, m @ ("" | "f1" | "exact_match")) => (if m.is_empty() { "f1" } else { m }.to_owned(), Direction::Higher),
        (_, "loss") => ("loss".to_owned(), Direction::Lower),
        (_, m) => {
            problems.push(format!("task.metric: `{m}` does not fit task.kind {kind:?} (accuracy, macro_f1, f1, exact_match, mse, pearson, spearman or loss)"));
            ("loss".to_owned(), Direction::Lower)
        }
    };

    if kind == HeadKind::Cloze {
        if c.init.checkpoint.as_os_str().is_empty() && c.init.hf.as_os_str().is_empty() {
            problems.push("init: cloze fine-tuning reuses a pre-trained output layer: give init.checkpoint (a GLM or BERT MLM pre-training checkpoint) or init.hf (a BertForMaskedLM / BertForPreTraining folder)".into());
        }
        if c.task.pattern.matches("[MASK]").count() != 1 || !c.task.pattern.contains("{text}") {
            problems.push("task.pattern: needs `{text}` and exactly one `[MASK]`".into());
        }
        if c.task.verbalizers.len() < 2 {
            problems.push("task.verbalizers: give verbalizer text for at least two labels".into());
        }
    }
    if kind != HeadKind::QuestionAnswering {
        let task = table.get("task").and_then(toml::Value::as_table);
        for key in ["doc_stride", "n_best_size", "max_answer_length"] {
            if task.is_some_and(|t| t.contains_key(key)) {
                problems.push(format!("task.{key}: only task.kind = \"question_answering\" reads it"));
            }
        }
    }
    let qa_settings = QaSettings { doc_stride: c.task.doc_stride, n_best_size: c.task.n_best_size, max_answer_length: c.task.max_answer_length };
    if kind == HeadKind::QuestionAnswering {
        if c.task.n_best_size == 0 {
            problems.push("task.n_best_size: must be positive".into());
        }
        if c.task.max_answer_length == 0 {
            problems.push("task.max_answer_length: must be positive".into());
        }
        if c.task.doc_stride + 5 > c.train.max_seq_len {
            problems.push(format!("task.doc_stride: {} leaves no room for the context in windows of train.max_seq_len = {} tokens (must be at most {})", c.task.doc_stride, c.train.max_seq_len, c.train.max_seq_len.saturating_sub(5)));
        }
    }
    let mut glm_config: Option<GlmConfig> = None;
    // Starting point: its model sizes and tokenizer.
    let (init, mut bert, init_tokenizer) = match super::init::resolve_start(&c.init) {
        Err(e) => {
            problems.push(e);
            (InitSource::Fresh, BertConfig::default(), None)
        }
        Ok(None) => (InitSource::Fresh, crate::model::bert::BertConfig::from_section(&c.model, 0, 0), None),
        Ok(Some(st)) => match (&st.model, kind) {
            (StartModel::Pretrain(ModelSpec::Glm { config }), HeadKind::Cloze) => {
                glm_config = Some(config.clone());
                (st.source.clone(), BertConfig::default(), st.tokenizer.clone())
            }
            (StartModel::Task(_), HeadKind::Cloze) => {
                problems.push(format!("init.checkpoint: {:?} is a fine-tuned task checkpoint; cloze starts from a pre-training checkpoint (GLM, or BERT with its MLM head)", st.source));
                (InitSource::Fresh, BertConfig::default(), None)
            }
            (m, _) => match m.bert() {
                Some(cfg) => (st.source.clone(), cfg, st.tokenizer.clone()),
                None => {
                    problems.push(format!("init.checkpoint: {:?} is not a BERT checkpoint", st.source));
                    (InitSource::Fresh, BertConfig::default(), None)
                }
            },
        },
    };
    if !matches!(init, InitSource::Fresh) {
        let mut start = match glm_config.take() {
            Some(config) => ModelSpec::Glm { config },
            None => ModelSpec::Bert { config: bert, pair_head: false },
        };
        super::init::apply_overrides(&mut start, table);
        problems.extend(super::init::size_conflicts(table, &start));
        (bert, glm_config) = match start {
            ModelSpec::Glm { config } => (BertConfig::default(), Some(config)),
            ModelSpec::Bert { config, .. } => (config, None),
        };
    }
    let tokenizer_path = if !c.tokenizer.path.as_os_str().is_empty() { Some(c.tokenizer.path.clone()) } else { init_tokenizer };
    let tokenizer = match &tokenizer_path {
        None => {
            problems.push("tokenizer.path: no tokenizer given, and no init.checkpoint / init.hf to take one from".into());
            None
        }
        Some(p) => TextTokenizer::load(p, c.tokenizer.lowercase).map_err(|e| problems.push(format!("tokenizer.path: {}", crate::error_chain(&e)))).ok(),
    };
    let positions = glm_config.as_ref().map_or(bert.max_position_embeddings, |g| g.max_sequence_length - 1);
    if c.train.max_seq_len as i64 > positions || c.train.max_seq_len < 4 {
        problems.push(format!("train.max_seq_len: must be in [4, {positions}] (the model's positions)"));
    }
    let train_files = crate::data::source::expand(&c.data.train, "data.train", &mut problems);
    let eval_files = crate::data::source::expand(&c.data.eval, "data.eval", &mut problems);
    if c.data.train.is_empty() {
        problems.push("data.train: no training files given".into());
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let mut tokenizer = tokenizer.expect("no problems means the tokenizer loaded");
    let cloze_model = match (kind, &glm_config) {
        (HeadKind::Cloze, Some(_)) => Some(cloze::ClozeModel::Glm(cloze::glm_ids(&mut tokenizer).map_err(|e| vec![e])?)),
        (HeadKind::Cloze, None) => Some(cloze::ClozeModel::bert(&tokenizer)),
        _ => None,
    };
    let tokenizer = Arc::new(tokenizer);
    bert.vocab_size = bert.vocab_size.max(tokenizer.vocab_size() as i64);
    bert.pad_token_id = tokenizer.special_ids().pad as i64;

    // Data.
    let data_err = |e: data::TaskDataError| vec![format!("data: {}", crate::error_chain(&e))];
    let max_len = c.train.max_seq_len;
    let fields = Fields { text: c.task.text_field.clone(), text_pair: c.task.text_pair_field.clone(), label: c.task.label_field.clone() };
    let mut cloze_spec: Option<ClozeSpec> = None;
    // Malformed records are skipped and counted, or fatal, per `data.on_error`.
    let skipped = std::cell::RefCell::new(Vec::new());
    let read = |files: &[PathBuf]| -> Result<Vec<data::ClsRecord>, data::TaskDataError> {
        let mut v = Vec::new();
        for f in files {
            let mut sk = skipped.borrow_mut();
            v.extend(data::read_classification_with(f, &fields, &mut data::BadRecords { policy: c.data.on_error, skipped: &mut sk })?);
        }
        Ok(v)
    };
    let (train_limit, eval_limit) = (c.task.max_train_examples, c.task.max_eval_examples);
    let (labels, train, eval) = match kind {
        HeadKind::QuestionAnswering => {
            let read = |files: &[PathBuf], need: qa::Need| -> Result<Vec<Arc<QaRecord>>, data::TaskDataError> {
                let mut v = Vec::new();
                for f in files {
                    let mut sk = skipped.borrow_mut();
                    v.extend(qa::read_squad(f, need, &mut data::BadRecords { policy: c.data.on_error, skipped: &mut sk })?.into_iter().map(Arc::new));
                }
                Ok(v)
            };
            let tr = first(read(&train_files, qa::Need::Trained).map_err(data_err)?, train_limit);
            let ev = first(read(&eval_files, qa::Need::Scored).map_err(data_err)?, eval_limit);
            let mut windows = qa::QaWindows::new(&tokenizer, max_len, c.task.doc_stride).map_err(|e| vec![e])?;
            let mut cut = |recs: &[Arc<QaRecord>], keep_offsets: bool| -> Result<Vec<TaskExample>, data::TaskDataError> {
                let mut out = Vec::new();
                for (i, r) in recs.iter().enumerate() {
                    out.extend(windows.windows(i, r, keep_offsets)?);
                }
                Ok(out)
            };
            let train = cut(&tr, false).map_err(data_err)?;
            let eval = cut(&ev, true).map_err(data_err)?;
            (LabelSet { names: vec![] }, train, eval)
        }
        HeadKind::TokenClassification => {
            let read = |files: &[PathBuf]| -> Result<Vec<data::TaggedSentence>, data::TaskDataError> {
                let mut v = Vec::new();
                for f in files {
                    let mut sk = skipped.borrow_mut();
                    v.extend(data::read_conll_with(f, &mut data::BadRecords { policy: c.data.on_error, skipped: &mut sk })?);
                }
                Ok(v)
            };
            let tr = first(read(&train_files).map_err(data_err)?, train_limit);
            let ev = first(read(&eval_files).map_err(data_err)?, eval_limit);
            let labels = LabelSet::from_data(&c.task.labels, tr.iter().flat_map(|s| s.tags.iter().map(String::as_str)));
            let enc = |s: &data::TaggedSentence| data::encode_tagged(&tokenizer, s, &labels, max_len);
            let train = tr.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            let eval = ev.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            (labels, train, eval)
        }
        HeadKind::Cloze => {
            let tr = first(read(&train_files).map_err(data_err)?, train_limit);
            let ev = first(read(&eval_files).map_err(data_err)?, eval_limit);
            let labels = if c.task.labels.is_empty() { LabelSet { names: c.task.verbalizers.keys().cloned().collect() } } else { LabelSet { names: c.task.labels.clone() } };
            let answers = cloze::answers(&tokenizer, &labels.names, &c.task.verbalizers).map_err(|e| invalid(vec![e]))?;
            let spec = ClozeSpec { pattern: c.task.pattern.clone(), answers, model: cloze_model.expect("set for cloze") };
            let enc = |r: &data::ClsRecord| -> Result<TaskExample, data::TaskDataError> {
                let id = labels.id(&r.label, &r.path, r.line)?;
                cloze::encode(&tokenizer, r, id, &spec, max_len)
            };
            let train = tr.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            let eval = ev.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            cloze_spec = Some(spec);
            (labels, train, eval)
        }
        _ => {
            let tr = first(read(&train_files).map_err(data_err)?, train_limit);
            let ev = first(read(&eval_files).map_err(data_err)?, eval_limit);
            let regression = kind == HeadKind::Regression;
            let labels = if regression { LabelSet { names: vec![] } } else { LabelSet::from_data(&c.task.labels, tr.iter().map(|r| r.label.as_str())) };
            let enc = |r: &data::ClsRecord| -> Result<TaskExample, data::TaskDataError> {
                if regression {
                    let t: f32 = r.label.parse().map_err(|_| data::TaskDataError::Record { path: r.path.clone(), line: r.line, message: format!("regression label `{}` is not a number", r.label) })?;
                    data::encode_classification(&tokenizer, r, None, t, max_len)
                } else {
                    let id = labels.id(&r.label, &r.path, r.line)?;
                    data::encode_classification(&tokenizer, r, Some(id), 0.0, max_len)
                }
            };
            let train = tr.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            let eval = ev.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            (labels, train, eval)
        }
    };
    if !matches!(kind, HeadKind::Regression | HeadKind::QuestionAnswering) && labels.names.len() < 2 {
        return Err(invalid(vec![format!("task.labels: need at least 2 labels, found {:?}", labels.names)]));
    }
    let monitor = Monitor { metric, direction };
    // Batches of an epoch end at its last example (a short last batch, as a DataLoader), and
    // the ranks of a data-parallel run share each global batch.
    let batches_per_epoch = (train.len() as u64).div_ceil(c.train.batch_size.saturating_mul(world) as u64).max(1);
    let epoch_steps = batches_per_epoch.div_ceil(c.train.grad_accum as u64).max(1);
    let (max_steps, epoch_steps) = if c.train.epochs > 0 { (c.train.epochs.saturating_mul(epoch_steps), epoch_steps) } else { (c.train.max_steps, 0) };
    let tokenizer_path = resolve_path(&tokenizer_path.expect("checked above"), None);
    let spec = TaskSpec {
        architecture: "BertForTask".into(),
        config: bert.clone(),
        kind,
        labels: labels.names.clone(),
        tokenizer: tokenizer_path,
        max_seq_len: c.train.max_seq_len,
        glm: glm_config.clone(),
        qa: (kind == HeadKind::QuestionAnswering).then_some(qa_settings),
    };
    let model = match &glm_config {
        Some(g) => ModelSpec::Glm { config: g.clone() },
        None => ModelSpec::Bert { config: bert, pair_head: false },
    };
    let share = |v: Vec<TaskExample>| Arc::new(v.into_iter().map(Arc::new).collect::<Vec<_>>());
    let skipped = skipped.into_inner();
    Ok(TaskPlan { spec, labels, train: share(train), eval: share(eval), cloze: cloze_spec, monitor, tokenizer, model, init, max_steps, epoch_steps, skipped })
}
