//! `task.kind = "question_answering"`: extractive QA on SQuAD records, as `transformers`'
//! `run_qa.py` does it (windows over long contexts, start / end logits through
//! `BertForQuestionAnswering`'s head, post-processing back to answer text; official EM / F1).
//! Windows and post-processing live in [`crate::finetune::qa`].

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use tch::{nn, Kind, Reduction, Tensor};

use super::{pad_rows, Encoded, HfHead, Predictor, Scorer, Split, Task, TaskContext, TaskError, TaskKind, TaskModel};
use crate::batch::{HostBatch, IGNORE};
use crate::data::labelled::TaskExample;
use crate::data::tokenize::TextTokenizer;
use crate::finetune::data::BadRecords;
use crate::finetune::metrics::SquadScore;
use crate::finetune::squad_v2::SquadV2Score;
use crate::finetune::qa::{read_squad, Answers, Need, Prediction, QaSettings, QaWindows};
use crate::model::heads::{EncoderForTask, HeadEncoder, HeadKind};
use crate::objective::{DeviceBatch, Direction, EvalMetrics};

/// The registry entry.
pub const KIND: TaskKind = TaskKind { name: "question_answering", reuses_pretraining_head: false, on_glm: false, metrics: &[("f1", Direction::Higher), ("exact_match", Direction::Higher)], own_keys: &["doc_stride", "n_best_size", "max_answer_length", "version_2_with_negative", "null_score_diff_threshold"], inference_keys: &["null_score_diff_threshold", "version_2_with_negative", "n_best_size", "max_answer_length"], train_defaults: &[("max_seq_len", 384)], build };

/// The start / end logit of padding positions: far below any real logit, so padding is never
/// an answer and takes no share of the softmax (`transformers` scores padding too, which makes
/// its loss depend on how far a batch is padded).
pub const QA_PAD_LOGIT: f64 = -1e4;

fn build(cx: &TaskContext) -> Result<Box<dyn Task>, TaskError> {
    let c = cx.config;
    let settings = QaSettings {
        doc_stride: c.doc_stride,
        n_best_size: c.n_best_size,
        max_answer_length: c.max_answer_length,
        version_2_with_negative: c.version_2_with_negative,
        null_score_diff_threshold: c.null_score_diff_threshold as f32,
    };
    let mut problems = Vec::new();
    if !c.null_score_diff_threshold.is_finite() {
        problems.push(format!("task.null_score_diff_threshold: {} is not a number of logits", c.null_score_diff_threshold));
    } else if c.null_score_diff_threshold != 0.0 && !c.version_2_with_negative {
        // SQuAD v1.1 always answers: a threshold would be silently ignored.
        problems.push("task.null_score_diff_threshold: only read under task.version_2_with_negative = true (SQuAD v1.1 always answers)".to_owned());
    }
    if c.n_best_size == 0 {
        problems.push("task.n_best_size: must be positive".to_owned());
    }
    if c.max_answer_length == 0 {
        problems.push("task.max_answer_length: must be positive".to_owned());
    }
    if c.doc_stride + 5 > cx.max_seq_len {
        problems.push(format!("task.doc_stride: {} leaves no room for the context in windows of train.max_seq_len = {} tokens (must be at most {})", c.doc_stride, cx.max_seq_len, cx.max_seq_len.saturating_sub(5)));
    }
    let encoder = super::classification::head_encoder(cx.encoder);
    if let Err(e) = &encoder {
        problems.extend(e.problems());
    }
    if !problems.is_empty() {
        return Err(TaskError::Config(problems));
    }
    Ok(Box::new(QuestionAnswering { settings, tokenizer: cx.tokenizer.clone(), encoder: encoder?, max_len: cx.max_seq_len }))
}

/// Extractive question answering.
pub struct QuestionAnswering {
    settings: QaSettings,
    tokenizer: Arc<TextTokenizer>,
    encoder: HeadEncoder,
    max_len: usize,
}

impl Task for QuestionAnswering {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    /// The start / end layer on every real token.
    fn head_flops(&self, b: &HostBatch, d: &crate::objective::flops::Dims) -> f64 {
        d.linear(b.n_tokens, 2)
    }
    fn loss_name(&self) -> &'static str {
        "qa"
    }
    fn labels(&self) -> &[String] {
        &[]
    }

    fn read(&mut self, files: &[PathBuf], split: Split, limit: usize, bad: &mut BadRecords) -> Result<Encoded, TaskError> {
        let need = match split {
            Split::Train => Need::Trained,
            Split::Eval => Need::Scored,
            Split::Predict => Need::Nothing,
        };
        let mut records = Vec::new();
        for f in files {
            records.extend(read_squad(f, need, self.settings.version_2_with_negative, bad)?.into_iter().map(Arc::new));
        }
        let records = super::first(records, limit);
        let mut windows = QaWindows::new(&self.tokenizer, self.max_len, self.settings.doc_stride).map_err(|e| TaskError::config(e.to_string()))?;
        let mut examples = Vec::new();
        for (i, r) in records.iter().enumerate() {
            // Training windows need only their labels; the others map logits back to text.
            examples.extend(windows.windows(i, r, split != Split::Train).map_err(crate::finetune::data::TaskDataError::from)?);
        }
        let mut notes = Vec::new();
        if windows.questions_truncated > 0 {
            // A long context slides over more windows; only a question too long for its window
            // (beside `doc_stride` tokens of context) loses tokens.
            notes.push(format!("{} of {} {} questions cut to leave room for the context (train.max_seq_len, task.doc_stride)", windows.questions_truncated, records.len(), split.noun()));
        }
        Ok(Encoded { examples, records: records.len(), notes })
    }

    fn collate(&self, examples: &[&TaskExample]) -> HostBatch {
        let mut b = pad_rows(examples, self.tokenizer.special_ids().pad);
        for e in examples {
            b.row_labels.extend(e.labels.iter().take(2));
            b.windows.extend(e.window.clone());
        }
        b
    }

    fn build(&self, root: &nn::Path) -> Box<dyn TaskModel> {
        Box::new(SpanHead(EncoderForTask::new(root, &self.encoder, HeadKind::QuestionAnswering, 2)))
    }

    /// `BertForQuestionAnswering`'s loss: the mean of the start and end cross-entropies.
    fn loss(&self, outputs: &Tensor, batch: &DeviceBatch) -> Tensor {
        match &batch.row_labels {
            Some(l) => {
                let l = l.view([-1, 2]);
                let ce = |k: i64| outputs.select(2, k).cross_entropy_loss::<Tensor>(&l.select(1, k), None, Reduction::Sum, IGNORE, 0.0);
                (ce(0) + ce(1)) * 0.5
            }
            None => outputs.sum(Kind::Float) * 0.0,
        }
    }

    fn scorer(&self) -> Box<dyn Scorer> {
        Box::new(SquadScorer { answers: Answers::new(self.settings) })
    }

    fn headline(&self) -> &'static [&'static str] {
        if self.settings.version_2_with_negative {
            &["exact_match", "f1", "has_answer_f1", "no_answer_f1", "best_f1", "best_f1_threshold", "loss"]
        } else {
            &["exact_match", "f1", "loss"]
        }
    }

    fn predictor(&self) -> Box<dyn Predictor> {
        Box::new(AnswerLines { answers: Answers::new(self.settings) })
    }

    /// The window's answer tokens, or that it holds none (labelled at `[CLS]`).
    fn explain(&self, batch: &HostBatch, row: usize) -> String {
        let (s, e) = (batch.row_labels[2 * row], batch.row_labels[2 * row + 1]);
        if s == 0 && e == 0 {
            return "no answer in this window ([CLS])".into();
        }
        let ids = batch.row(&batch.input_ids, row);
        let tokens: Vec<String> = (s..=e).map(|i| self.tokenizer.id_to_token(ids[i as usize] as u32)).collect();
        format!("answer tokens {s}..={e}: {}", tokens.join(" "))
    }

    fn saved(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("qa".into(), json!(self.settings));
        m
    }

    fn export(&self) -> Result<HfHead, TaskError> {
        let mut config = serde_json::Map::new();
        config.insert("num_labels".into(), json!(2));
        config.insert("doc_stride".into(), json!(self.settings.doc_stride));
        Ok(HfHead { architecture: "BertForQuestionAnswering", config })
    }
}

/// Start and end logits `[windows, seq, 2]`, padding at [`QA_PAD_LOGIT`].
struct SpanHead(EncoderForTask);

impl TaskModel for SpanHead {
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        let logits = self.0.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train);
        let t = logits.size()[1];
        let pad = Tensor::arange(t, (Kind::Int64, logits.device())).unsqueeze(0).ge_tensor(&b.lengths.unsqueeze(1));
        logits.masked_fill(&pad.unsqueeze(2), QA_PAD_LOGIT)
    }
}

/// Feeds a batch's start / end logits (`[rows, seq, 2]`), row by row cut at its length, to
/// the answer collector (rows without a window are skipped).
pub fn add_window_logits(out: &Tensor, hb: &HostBatch, answers: &mut Answers) {
    let flat: Vec<f32> = super::to_f64s(out).into_iter().map(|x| x as f32).collect();
    let t = hb.seq_len;
    for (r, w) in hb.windows.iter().enumerate() {
        let n = hb.lengths[r] as usize;
        let (start, end): (Vec<f32>, Vec<f32>) = flat[r * t * 2..(r * t + n) * 2].chunks(2).map(|p| (p[0], p[1])).unzip();
        answers.add(w, &start, &end);
    }
}

struct SquadScorer {
    answers: Answers,
}

impl Scorer for SquadScorer {
    fn add(&mut self, outputs: &Tensor, batch: &HostBatch) {
        add_window_logits(outputs, batch, &mut self.answers);
    }

    /// Exact match and F1 (`questions`: how many); under SQuAD v2.0 also over the questions
    /// with and without an answer, and the best of each over null thresholds with its
    /// threshold (the official script's names, in our spelling).
    fn finish(self: Box<Self>) -> EvalMetrics {
        let v2 = self.answers.settings().version_2_with_negative;
        let threshold = self.answers.settings().null_score_diff_threshold;
        let mut score = SquadScore::default();
        let mut v2_score = SquadV2Score::default();
        for (rec, p) in self.answers.finish() {
            let refs: Vec<&str> = rec.answers.iter().map(|a| a.text.as_str()).collect();
            score.add(&p.text, &refs);
            // SQuAD v1.1 has no null answers: its questions are not scored a second time.
            if v2 {
                v2_score.add(&p.best_span, p.null_score_diff, &refs);
            }
        }
        let (em, f1) = score.percent();
        let mut m = EvalMetrics::default();
        m.values.insert("exact_match".into(), em);
        m.values.insert("f1".into(), f1);
        m.values.insert("questions".into(), score.questions() as f64);
        if v2 {
            let t = v2_score.totals(threshold);
            for (name, value) in [("has_answer", t.has_answer), ("no_answer", t.no_answer)] {
                if let Some((em, f1)) = value {
                    m.values.insert(format!("{name}_exact_match"), em);
                    m.values.insert(format!("{name}_f1"), f1);
                }
            }
            m.values.insert("has_answer_questions".into(), t.has_answer_questions as f64);
            m.values.insert("no_answer_questions".into(), t.no_answer_questions as f64);
            m.values.insert("best_exact_match".into(), t.best_exact.0);
            m.values.insert("best_exact_match_threshold".into(), t.best_exact.1);
            m.values.insert("best_f1".into(), t.best_f1.0);
            m.values.insert("best_f1_threshold".into(), t.best_f1.1);
        }
        m
    }
}

/// `{"id", "answer", "score", "start"}` per question, written once its last window is in;
/// under SQuAD v2.0 with `null_score_diff` (and `best_span` when the answer is empty).
struct AnswerLines {
    answers: Answers,
}

fn answer_line(id: &str, p: &Prediction) -> Value {
    let mut line = json!({"id": id, "answer": p.text, "score": p.score, "start": p.start});
    if let Some(d) = p.null_score_diff {
        line["null_score_diff"] = json!(d);
        if p.text.is_empty() {
            line["best_span"] = json!(p.best_span);
        }
    }
    line
}

impl Predictor for AnswerLines {
    fn add(&mut self, outputs: &Tensor, batch: &HostBatch, _examples: &[&TaskExample]) -> Vec<Value> {
        add_window_logits(outputs, batch, &mut self.answers);
        self.answers.done.drain(..).map(|(rec, p)| answer_line(&rec.id, &p)).collect()
    }

    fn finish(self: Box<Self>) -> Vec<Value> {
        self.answers.finish().iter().map(|(rec, p)| answer_line(&rec.id, p)).collect()
    }
}
