//! Extractive question answering as `transformers`' `run_qa.py` does it: SQuAD records in,
//! overlapping windows over long contexts, start / end labels, and post-processing of the
//! start and end logits back into answer text.
//!
//! * Readers: SQuAD JSON (`data[].paragraphs[].context / qas[]`) and the JSONL the `datasets`
//!   library writes (`id`, `question`, `context`, `answers: {text: [..], answer_start: [..]}`).
//!   A training answer whose `answer_start` does not point at its text is a bad record.
//! * Windows: `[CLS] question [SEP] context [SEP]`, the question left-stripped, the context cut
//!   into windows of `max_seq_len` tokens that overlap by `doc_stride` tokens (the fast
//!   tokenizer's `truncation="only_second"` with `return_overflowing_tokens`), character
//!   offsets kept per context token. A window that does not hold the whole first answer is
//!   labelled at `[CLS]` (position 0).
//! * Post-processing (`postprocess_qa_predictions`): over all windows of a question, the
//!   `n_best_size` highest start and end logits, spans inside the context with `start <= end`
//!   and at most `max_answer_length` tokens, scored start + end logit; the best span's text is
//!   cut from the context by its offsets.
//! * SQuAD v2.0 (`version_2_with_negative`): a question may have no answer. Such a record
//!   (`is_impossible`, or no answers) is labelled at `[CLS]` in every window; its null score
//!   is `[CLS]`'s start + end logit, the lowest over its windows; the answer is empty when
//!   the null score minus the best span's score is above `null_score_diff_threshold`.
//!
//! Offsets count characters (Unicode scalar values), as Python and SQuAD do, never bytes.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::data::{BadRecords, TaskDataError};
use crate::files::FileError;
use crate::data::labelled::{QaAnswer, QaRecord, QaWindow, TaskExample};
use crate::data::tokenize::{TextTokenizer, TokenizerError};

/// The question-answering settings a checkpoint records (`task.*` keys).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QaSettings {
    /// Tokens shared by consecutive windows of a long context (`task.doc_stride`, 128).
    pub doc_stride: usize,
    /// Start and end candidates per window (`task.n_best_size`, 20).
    pub n_best_size: usize,
    /// Longest answer in tokens (`task.max_answer_length`, 30).
    pub max_answer_length: usize,
    /// SQuAD v2.0: questions may have no answer (`task.version_2_with_negative`).
    #[serde(default)]
    pub version_2_with_negative: bool,
    /// SQuAD v2.0: the null score minus the best span's score above which the answer is
    /// empty (`task.null_score_diff_threshold`, 0).
    #[serde(default)]
    pub null_score_diff_threshold: f32,
}

impl Default for QaSettings {
    fn default() -> Self {
        QaSettings { doc_stride: 128, n_best_size: 20, max_answer_length: 30, version_2_with_negative: false, null_score_diff_threshold: 0.0 }
    }
}

fn record_error(path: &Path, line: u64, message: String) -> TaskDataError {
    TaskDataError::Record { path: path.to_owned(), line, message }
}

/// Characters of `s` from `start` (a character index), `len` of them, if that many exist.
fn char_slice(s: &str, start: usize, len: usize) -> Option<&str> {
    let mut idx = s.char_indices().map(|(i, _)| i).chain(std::iter::once(s.len()));
    let from = idx.nth(start)?;
    let to = if len == 0 { from } else { idx.nth(len - 1)? };
    Some(&s[from..to])
}

/// What a reader asks of a record's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Training: at least one answer, each `answer_start` pointing at its text.
    Trained,
    /// Scoring: at least one reference answer (only the texts are used).
    Scored,
    /// Prediction: answers are ignored when present.
    Nothing,
}

/// Reads SQuAD JSON (`.json`) or JSONL (any other extension), asking of the answers what
/// `need` says; with `unanswerable` (SQuAD v2.0) a question may have none (`is_impossible:
/// true`, whose answers are then ignored, or an empty list).
///
/// # Errors
/// An unreadable or empty file; a malformed record under `data.on_error = "fail"` (JSONL: its
/// line; JSON: the question's id, with line 0).
pub fn read_squad(path: &Path, need: Need, unanswerable: bool, bad: &mut BadRecords) -> Result<Vec<QaRecord>, TaskDataError> {
    let need = Needs { need, unanswerable };
    let bytes = std::fs::read(path).map_err(FileError::at(path))?;
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "json") {
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| record_error(path, e.line() as u64, format!("bad JSON: {e}")))?;
        let Some(articles) = v.get("data").and_then(Value::as_array) else {
            return Err(record_error(path, 1, "a SQuAD JSON file has a `data` array of articles".into()));
        };
        for (a, article) in articles.iter().enumerate() {
            for (p, para) in article.get("paragraphs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
                let Some(context) = para.get("context").and_then(Value::as_str) else {
                    bad.judge(path, 0, "missing_field", format!("data[{a}].paragraphs[{p}]: no `context` string"))?;
                    continue;
                };
                let context: Arc<str> = Arc::from(context);
                for (q, qa) in para.get("qas").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
                    let answers = qa.get("answers").and_then(Value::as_array).map(|v| {
                        v.iter().map(|x| (x.get("text").and_then(Value::as_str), x.get("answer_start").and_then(Value::as_u64))).collect::<Vec<_>>()
                    });
                    let place = || match qa.get("id").and_then(Value::as_str) {
                        Some(id) => format!("question `{id}`"),
                        None => format!("data[{a}].paragraphs[{p}].qas[{q}]"),
                    };
                    match record(qa.get("id"), qa.get("question"), &context, answers.unwrap_or_default(), impossible(qa), need) {
                        Ok(r) => out.push(r),
                        Err((reason, msg)) => bad.judge(path, 0, reason, format!("{}: {msg}", place()))?,
                    }
                }
            }
        }
    } else {
        for (line, v) in super::data::jsonl_values(path, &bytes, bad)? {
            let Some(context) = v.get("context").and_then(Value::as_str) else {
                bad.judge(path, line, "missing_field", "no `context` string".into())?;
                continue;
            };
            let a = v.get("answers");
            let texts = a.and_then(|a| a.get("text")).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let starts = a.and_then(|a| a.get("answer_start")).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let answers = (0..texts.len().max(starts.len())).map(|k| (texts.get(k).and_then(Value::as_str), starts.get(k).and_then(Value::as_u64))).collect();
            match record(v.get("id"), v.get("question"), &Arc::from(context), answers, impossible(&v), need) {
                Ok(r) => out.push(r),
                Err((reason, msg)) => bad.judge(path, line, reason, msg)?,
            }
        }
    }
    if out.is_empty() {
        return Err(bad.empty(path));
    }
    Ok(out)
}

type Rejected = (&'static str, String);

/// What a reader asks, and whether a question may have no answer.
#[derive(Clone, Copy)]
struct Needs {
    need: Need,
    unanswerable: bool,
}

/// SQuAD v2.0's `is_impossible: true` (JSON), also read from a JSONL record.
fn impossible(v: &Value) -> bool {
    v.get("is_impossible").and_then(Value::as_bool).unwrap_or(false)
}

/// One record from its fields; the reason and message of a bad one.
fn record(id: Option<&Value>, question: Option<&Value>, context: &Arc<str>, answers: Vec<(Option<&str>, Option<u64>)>, impossible: bool, needs: Needs) -> Result<QaRecord, Rejected> {
    let Needs { need, unanswerable } = needs;
    let id = match id {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(("missing_field", "no `id` (a string or number)".into())),
    };
    let Some(question) = question.and_then(Value::as_str) else { return Err(("missing_field", format!("question `{id}`: no `question` string"))) };
    if impossible && !unanswerable {
        return Err(("unanswerable", format!("question `{id}` has no answer (`is_impossible`): a SQuAD v2.0 record, read under task.version_2_with_negative = true")));
    }
    let mut kept = Vec::with_capacity(answers.len());
    for (k, (text, start)) in answers.into_iter().enumerate() {
        // Nothing to read, or SQuAD v2.0's unanswerable question (its `answers` are empty; a
        // file that lists some anyway is not trained or scored on them).
        if need == Need::Nothing || impossible {
            break;
        }
        let (Some(text), Some(start)) = (text, start) else {
            return Err(("bad_answer", format!("question `{id}`: answer {k} needs `text` and a non-negative `answer_start`")));
        };
        let start = start as usize;
        // Training reads the first answer's span; every answer of a training record must be
        // where it says (an off-by-some offset would teach the wrong span silently).
        if need == Need::Trained && char_slice(context, start, text.chars().count()) != Some(text) {
            let found = char_slice(context, start, text.chars().count()).map_or_else(|| "past the end of the context".to_owned(), |s| format!("{s:?}"));
            return Err(("bad_answer", format!("question `{id}`: answer {text:?} at character {start} does not match the context there ({found})")));
        }
        kept.push(QaAnswer { text: text.to_owned(), start });
    }
    // SQuAD v1.1 asks an answer of every question; v2.0 trains one without on `[CLS]` and
    // scores it against the empty answer.
    let v1 = " (a question without one is SQuAD v2.0's: task.version_2_with_negative = true)";
    match need {
        Need::Trained if kept.is_empty() && !unanswerable => return Err(("unanswerable", format!("question `{id}`: no answer to train on{v1}"))),
        Need::Scored if kept.is_empty() && !unanswerable => return Err(("unanswerable", format!("question `{id}`: no reference answer to score against{v1}"))),
        Need::Nothing => kept.clear(),
        _ => {}
    }
    Ok(QaRecord { id, question: question.to_owned(), context: context.clone(), answers: kept })
}

/// Cuts questions with their contexts into windows.
///
/// The windows are built here from the question's and the context's own encodings rather
/// than by the tokenizer's `only_second` truncation: the `tokenizers` crate (0.23.2) returns
/// one short overflow where the Python binding (0.23.3) returns every window, and sliding
/// over the context's tokens is the same arithmetic (`max_len - stride` tokens apart, the
/// last window ending at the context's end) with the context tokenized once.
pub struct QaWindows {
    tokenizer: Tokenizer,
    cls: u32,
    sep: u32,
    /// Separators between question and context: 1 (`[SEP]`), or 2 for RoBERTa (`</s></s>`).
    seps: usize,
    max_len: usize,
    stride: usize,
    /// Questions cut short so a window keeps room for context (run_qa.py would stop).
    pub questions_truncated: usize,
    /// The last context and its encoding: SQuAD asks several questions in a row about one
    /// paragraph, which is then tokenized once.
    last_context: Option<(Arc<str>, tokenizers::Encoding)>,
}

/// A stride that leaves a window no room for new context.
#[derive(Debug, thiserror::Error)]
#[error("task.doc_stride: {stride} leaves no room for the context in windows of train.max_seq_len = {max_len} tokens (must be below {})", max_len.saturating_sub(4))]
pub struct StrideError {
    /// `task.doc_stride`.
    pub stride: usize,
    /// `train.max_seq_len`.
    pub max_len: usize,
}

/// The tokens a window keeps for the context beyond its stride: a question longer than
/// `max_len - 3 - stride - MIN_NEW_CONTEXT` is cut to that length.
const MIN_NEW_CONTEXT: usize = 1;

impl QaWindows {
    /// Windows of `max_len` tokens overlapping by `stride` context tokens.
    ///
    /// # Errors
    /// When the stride leaves no room for the context (`stride + 4 >= max_len`) or the
    /// tokenizer refuses the settings.
    pub fn new(tok: &TextTokenizer, max_len: usize, stride: usize) -> Result<Self, StrideError> {
        let seps = tok.pair_separators();
        if stride + 2 + seps + MIN_NEW_CONTEXT + 1 > max_len {
            return Err(StrideError { stride, max_len });
        }
        let ids = tok.special_ids();
        Ok(QaWindows { tokenizer: tok.inner().clone(), cls: ids.cls, sep: ids.sep, seps, max_len, stride, questions_truncated: 0, last_context: None })
    }

    /// The windows of question `index` of a set: training windows carry `[start, end]` labels;
    /// with `keep_offsets` (evaluation, prediction) each also carries its [`QaWindow`].
    ///
    /// # Errors
    /// Tokenization errors.
    pub fn windows(&mut self, index: usize, rec: &Arc<QaRecord>, keep_offsets: bool) -> Result<Vec<TaskExample>, TokenizerError> {
        let encode = |text: &str| self.tokenizer.encode_char_offsets(text, false).map_err(TokenizerError::Encode);
        let question = encode(rec.question.trim_start())?;
        let same = self.last_context.as_ref().is_some_and(|(c, _)| Arc::ptr_eq(c, &rec.context) || **c == *rec.context);
        if !same {
            let encoding = encode(&rec.context)?;
            self.last_context = Some((rec.context.clone(), encoding));
        }
        let context = &self.last_context.as_ref().expect("set just above").1;
        // Room for context beyond the stride, or the window could not slide.
        let specials = 2 + self.seps;
        let room = self.max_len - specials - self.stride - MIN_NEW_CONTEXT;
        let mut q: &[u32] = question.get_ids();
        if q.len() > room {
            q = &q[..room];
            self.questions_truncated += 1;
        }
        let (c_ids, c_offsets) = (context.get_ids(), context.get_offsets());
        // `Encoding::truncate`'s ranges: `budget` tokens, `budget - stride` apart, the last
        // ending at the context's end (one window when it all fits).
        let budget = self.max_len - specials - q.len();
        let step = budget - self.stride;
        let answer = rec.answers.first().map(|a| (a.start as u32, (a.start + a.text.chars().count()) as u32));
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let stop = (start + budget).min(c_ids.len());
            out.push(self.window(index, rec, q, &c_ids[start..stop], &c_offsets[start..stop], answer, keep_offsets));
            if stop == c_ids.len() {
                return Ok(out);
            }
            start += step;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn window(&self, index: usize, rec: &Arc<QaRecord>, q: &[u32], ids: &[u32], offsets: &[(usize, usize)], answer: Option<(u32, u32)>, keep_offsets: bool) -> TaskExample {
        // `[CLS] q [SEP] c [SEP]`, RoBERTa's `<s> q </s></s> c </s>`.
        let n = q.len() + ids.len() + 2 + self.seps;
        let mut all = Vec::with_capacity(n);
        all.push(self.cls);
        all.extend_from_slice(q);
        all.extend(std::iter::repeat_n(self.sep, self.seps));
        let head = all.len();
        all.extend_from_slice(ids);
        all.push(self.sep);
        let mut types = vec![0u8; head];
        types.resize(n, 1);
        let mut window_offsets = vec![None; head];
        window_offsets.extend(offsets.iter().map(|&(a, b)| Some((a as u32, b as u32))));
        window_offsets.push(None);
        // [CLS] is position 0 of every window.
        let (start, end) = answer.map_or((0, 0), |(s, t)| span_labels(&window_offsets, s, t));
        TaskExample {
            ids: all,
            types,
            labels: vec![start, end],
            target: 0.0,
            word_starts: Vec::new(),
            window: keep_offsets.then(|| Arc::new(QaWindow { question: index, record: rec.clone(), offsets: window_offsets })),
            shown: None,
            references: None,
            // A long context becomes more windows, not a cut one; a cut question is counted
            // in `questions_truncated`.
            cut: false,
        }
    }
}

/// The start and end token of the answer `[s, t)` (characters) in a window, `(0, 0)` when the
/// window does not hold all of it: `run_qa.py`'s walk, kept inside the context tokens (its
/// walk can step past the last context token onto `[SEP]` and padding when the answer starts
/// in that token; here it stops at the token).
pub fn span_labels(offsets: &[Option<(u32, u32)>], s: u32, t: u32) -> (i64, i64) {
    let context: Vec<usize> = (0..offsets.len()).filter(|&i| offsets[i].is_some()).collect();
    let (Some(&first), Some(&last)) = (context.first(), context.last()) else { return (0, 0) };
    let at = |i: usize| offsets[i].unwrap_or_default();
    if !(at(first).0 <= s && at(last).1 >= t) {
        return (0, 0);
    }
    let mut a = first;
    while a <= last && at(a).0 <= s {
        a += 1;
    }
    let mut b = last;
    while b >= first && at(b).1 >= t {
        if b == 0 {
            break;
        }
        b -= 1;
    }
    ((a - 1) as i64, (b + 1) as i64)
}

/// A predicted answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The answer text, cut from the context (empty when no span qualified, or, under SQuAD
    /// v2.0, when the null answer won).
    pub text: String,
    /// Its first character in the context (`None` when empty).
    pub start: Option<usize>,
    /// The best span's start logit + end logit.
    pub score: f32,
    /// SQuAD v2.0: the null score minus the best span's score (`None` under v1.1, or when no
    /// span qualified): above `null_score_diff_threshold`, the answer is empty.
    pub null_score_diff: Option<f32>,
    /// The best span's text, whether or not it is the answer (SQuAD v2.0 scores it against
    /// every threshold for `best_f1_threshold`).
    pub best_span: String,
}

/// A window's candidate answer: `(score, char start, char end)`.
pub type Span = (f32, u32, u32);

/// The best span of one window by `postprocess_qa_predictions`' rules, as
/// `(score, char start, char end)`; `None` when no span qualifies. Ties keep the first
/// candidate in (start rank, end rank) order, as Python's stable sort does.
pub fn best_span(offsets: &[Option<(u32, u32)>], start_logits: &[f32], end_logits: &[f32], s: QaSettings) -> Option<Span> {
    let top = |logits: &[f32]| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        // `np.argsort(x)[-1 : -n - 1 : -1]`: highest first.
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        idx.truncate(s.n_best_size);
        idx
    };
    let mut best: Option<Span> = None;
    for &a in &top(start_logits) {
        for &b in &top(end_logits) {
            let (Some(Some(sa)), Some(Some(sb))) = (offsets.get(a), offsets.get(b)) else { continue };
            if b < a || b - a + 1 > s.max_answer_length {
                continue;
            }
            let score = start_logits[a] + end_logits[b];
            if best.is_none_or(|(x, ..)| score > x) {
                best = Some((score, sa.0, sb.1));
            }
        }
    }
    best
}

/// A window's null score: its `[CLS]` (position 0) start logit + end logit.
pub fn null_score(start_logits: &[f32], end_logits: &[f32]) -> f32 {
    start_logits.first().copied().unwrap_or(0.0) + end_logits.first().copied().unwrap_or(0.0)
}

/// Turns per-window best spans of one question (in window order) into its answer; `null` is
/// the lowest null score over its windows under SQuAD v2.0 (`None` under v1.1).
pub fn answer(context: &str, spans: impl IntoIterator<Item = Option<Span>>, null: Option<f32>, s: QaSettings) -> Prediction {
    let mut best: Option<Span> = None;
    for (score, a, b) in spans.into_iter().flatten() {
        if best.is_none_or(|(x, ..)| score > x) {
            best = Some((score, a, b));
        }
    }
    let Some((score, a, b)) = best else {
        return Prediction { text: String::new(), start: None, score: 0.0, null_score_diff: None, best_span: String::new() };
    };
    let text = char_slice(context, a as usize, b.saturating_sub(a) as usize).unwrap_or_default().to_owned();
    // `postprocess_qa_predictions`: `score_diff = null_score - best_non_null_score`, the null
    // answer when it is above the threshold.
    let diff = null.map(|n| n - score);
    if diff.is_some_and(|d| d > s.null_score_diff_threshold) {
        return Prediction { text: String::new(), start: None, score, null_score_diff: diff, best_span: text };
    }
    Prediction { best_span: text.clone(), text, start: Some(a as usize), score, null_score_diff: diff }
}

/// One question's windows so far: its record, index, best span and lowest null score.
struct Pending {
    record: Arc<QaRecord>,
    question: usize,
    best: Option<Span>,
    null: f32,
}

/// Collects windows' logits into answers, question by question: windows of a question are
/// consecutive (evaluation and prediction keep file order), so a question is done when the
/// next one starts.
#[derive(Default)]
pub struct Answers {
    settings: QaSettings,
    current: Option<Pending>,
    /// Finished questions in order: the record and its prediction.
    pub done: Vec<(Arc<QaRecord>, Prediction)>,
}

impl Answers {
    /// An empty collector.
    pub fn new(settings: QaSettings) -> Self {
        Answers { settings, current: None, done: Vec::new() }
    }

    /// Its post-processing settings.
    pub fn settings(&self) -> QaSettings {
        self.settings
    }

    /// Adds one window's logits (`len` real tokens).
    pub fn add(&mut self, w: &QaWindow, start_logits: &[f32], end_logits: &[f32]) {
        let span = best_span(&w.offsets, start_logits, end_logits, self.settings);
        let null = null_score(start_logits, end_logits);
        match &mut self.current {
            Some(p) if p.question == w.question => {
                if let Some(s) = span.filter(|s| p.best.is_none_or(|b| s.0 > b.0)) {
                    p.best = Some(s);
                }
                p.null = p.null.min(null);
            }
            _ => {
                self.flush();
                self.current = Some(Pending { record: w.record.clone(), question: w.question, best: span, null });
            }
        }
    }

    /// Finishes the last question.
    pub fn finish(mut self) -> Vec<(Arc<QaRecord>, Prediction)> {
        self.flush();
        self.done
    }

    fn flush(&mut self) {
        if let Some(p) = self.current.take() {
            let null = self.settings.version_2_with_negative.then_some(p.null);
            let answer = answer(&p.record.context, [p.best], null, self.settings);
            self.done.push((p.record, answer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BadRecordPolicy;

    #[test]
    fn char_slices_count_characters_not_bytes() {
        let s = "héllo 世界 👋!";
        assert_eq!(char_slice(s, 1, 4), Some("éllo"));
        assert_eq!(char_slice(s, 6, 2), Some("世界"));
        assert_eq!(char_slice(s, 9, 2), Some("👋!"));
        assert_eq!(char_slice(s, 11, 0), Some(""));
        assert_eq!(char_slice(s, 10, 2), None);
    }

    #[test]
    fn labels_point_at_the_answer_tokens_or_cls() {
        // [CLS] q [SEP] "The" "cat" "sat" [SEP]: context tokens 3..6 over "The cat sat".
        let off = vec![None, None, None, Some((0, 3)), Some((4, 7)), Some((8, 11)), None];
        assert_eq!(span_labels(&off, 4, 7), (4, 4));
        assert_eq!(span_labels(&off, 4, 11), (4, 5));
        // The answer starts in the last context token: stays on it (run_qa.py would walk on).
        assert_eq!(span_labels(&off, 9, 11), (5, 5));
        // Not wholly in the window.
        assert_eq!(span_labels(&off, 8, 15), (0, 0));
        assert_eq!(span_labels(&[None, None], 0, 1), (0, 0));
    }

    #[test]
    fn the_best_span_respects_order_length_and_context() {
        let s = QaSettings { doc_stride: 2, n_best_size: 20, max_answer_length: 1, ..QaSettings::default() };
        let off = vec![None, Some((0, 3)), Some((4, 7)), Some((8, 11)), None];
        // The highest pairs are refused: CLS and the final SEP are outside the context,
        // (3, 2) ends before it starts, (1, 2) and (1, 3) are longer than one token.
        let start = [9.0, 3.5, 0.0, 3.0, 8.0];
        let end = [9.0, 0.0, 3.0, 2.0, 8.0];
        assert_eq!(best_span(&off, &start, &end, s), Some((5.0, 8, 11)));
        let two = QaSettings { max_answer_length: 2, ..s };
        assert_eq!(best_span(&off, &start, &end, two), Some((6.5, 0, 7)));
        let few = QaSettings { n_best_size: 1, ..s };
        assert_eq!(best_span(&off, &start, &end, few), None, "only CLS survives the top-1 cut");
        let p = answer("The cat sat", [None, best_span(&off, &start, &end, s)], None, s);
        assert_eq!((p.text.as_str(), p.start, p.null_score_diff), ("sat", Some(8), None));
        assert_eq!(answer("x", [None], None, s).text, "");
    }

    #[test]
    fn a_training_answer_must_be_where_it_says() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("qa.jsonl");
        let ok = r#"{"id": "1", "question": "Who?", "context": "Ünïcödé 世界 Bob ran.", "answers": {"text": ["Bob"], "answer_start": [11]}}"#;
        let off = r#"{"id": "2", "question": "Who?", "context": "Bob ran.", "answers": {"text": ["Bob"], "answer_start": [1]}}"#;
        std::fs::write(&p, format!("{ok}\n{off}\n")).unwrap();
        let mut skipped = Vec::new();
        let recs = read_squad(&p, Need::Trained, false, &mut BadRecords { policy: BadRecordPolicy::Skip, skipped: &mut skipped }).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].answers[0], QaAnswer { text: "Bob".into(), start: 11 });
        assert_eq!((skipped.len(), skipped[0].line), (1, 2));
        let e = read_squad(&p, Need::Trained, false, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).unwrap_err().to_string();
        assert!(e.contains("qa.jsonl:2") && e.contains("question `2`") && e.contains("\"ob \""), "{e}");
        // Scoring reads texts only: the offset is not checked.
        assert_eq!(read_squad(&p, Need::Scored, false, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).unwrap().len(), 2);
    }

    #[test]
    fn unanswerable_questions_are_squad_v2_records() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dev.json");
        std::fs::write(&p, r#"{"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Paris is in France.", "qas": [
            {"id": "a", "question": "Where?", "is_impossible": false, "answers": [{"text": "France", "answer_start": 12}]},
            {"id": "b", "question": "Who?", "is_impossible": true, "answers": [], "plausible_answers": [{"text": "Paris", "answer_start": 0}]}]}]}]}"#).unwrap();
        let q = d.path().join("dev.jsonl");
        std::fs::write(&q, concat!(r#"{"id": "c", "question": "Why?", "context": "No reason.", "answers": {"text": [], "answer_start": []}}"#, "\n")).unwrap();
        for need in [Need::Trained, Need::Scored] {
            // SQuAD v1.1: each names the setting that reads it, as a bad record.
            let mut skipped = Vec::new();
            let recs = read_squad(&p, need, false, &mut BadRecords { policy: BadRecordPolicy::Skip, skipped: &mut skipped }).unwrap();
            assert_eq!(recs.len(), 1);
            assert_eq!((skipped.len(), skipped[0].reason), (1, "unanswerable"));
            assert!(skipped[0].detail.contains("`b`") && skipped[0].detail.contains("task.version_2_with_negative = true"), "{:?}", skipped[0]);
            let e = read_squad(&q, need, false, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).unwrap_err().to_string();
            assert!(e.contains("dev.jsonl:1") && e.contains("task.version_2_with_negative = true"), "{e}");
            // SQuAD v2.0: no answer, its plausible one neither trained nor scored.
            let recs = read_squad(&p, need, true, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).unwrap();
            assert_eq!(recs.iter().map(|r| r.answers.len()).collect::<Vec<_>>(), [1, 0]);
            assert!(read_squad(&q, need, true, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).unwrap()[0].answers.is_empty());
        }
    }

    #[test]
    fn squad_json_records_share_their_context() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dev.json");
        std::fs::write(&p, r#"{"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "Paris is in France.", "qas": [
            {"id": "a", "question": "Where?", "answers": [{"text": "France", "answer_start": 12}, {"text": "in France", "answer_start": 9}]},
            {"id": "b", "question": "What?", "answers": [{"text": "Paris", "answer_start": 0}]}]}]}]}"#).unwrap();
        let recs = read_squad(&p, Need::Trained, false, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).unwrap();
        assert_eq!(recs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(recs[0].answers.len(), 2);
        assert!(Arc::ptr_eq(&recs[0].context, &recs[1].context));
    }
}
