//! `task.kind = "token_classification"` (NER): a tag per word of CoNLL-style sentences, each
//! word's tag on its first sub-token, `BertForTokenClassification`'s head run on the labelled
//! positions only; entity precision / recall / F1 (seqeval's chunking) and token accuracy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use tch::{nn, Reduction, Tensor};

use super::classification::{echo, label_maps};
use super::{pad_rows, Encoded, HfHead, Predictor, Scorer, Split, Task, TaskContext, TaskError, TaskKind, TaskModel};
use crate::batch::{HostBatch, IGNORE};
use crate::data::labelled::TaskExample;
use crate::data::tokenize::TextTokenizer;
use crate::files::FileError;
use crate::finetune::data::{encode_tagged, read_conll_with, BadRecords, LabelSet, TaggedSentence, TaskDataError};
use crate::finetune::metrics::{Confusion, EntityCounts};
use crate::model::heads::{EncoderForTask, HeadEncoder, HeadKind};
use crate::objective::{DeviceBatch, Direction, EvalMetrics, Per};

/// The registry entry.
pub const KIND: TaskKind = TaskKind { name: "token_classification", reuses_pretraining_head: false, on_glm: false, metrics: &[("f1", Direction::Higher)], own_keys: &["label_smoothing"], inference_keys: &[], train_defaults: &[], build };

fn build(cx: &TaskContext) -> Result<Box<dyn Task>, TaskError> {
    Ok(Box::new(Tagging {
        labels: LabelSet { names: cx.config.labels.clone() },
        tokenizer: cx.tokenizer.clone(),
        encoder: super::classification::head_encoder(cx.encoder)?,
        max_len: cx.max_seq_len,
        label_smoothing: super::label_smoothing(cx.config)?,
    }))
}

/// Token classification.
pub struct Tagging {
    labels: LabelSet,
    tokenizer: Arc<TextTokenizer>,
    encoder: HeadEncoder,
    max_len: usize,
    label_smoothing: f64,
}

impl Task for Tagging {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    /// The tag classifier on every real token.
    fn head_flops(&self, b: &HostBatch, d: &crate::objective::flops::Dims) -> f64 {
        d.linear(b.n_tokens, self.labels().len())
    }
    fn loss_name(&self) -> &'static str {
        "tag"
    }
    fn labels(&self) -> &[String] {
        &self.labels.names
    }

    fn read(&mut self, files: &[PathBuf], split: Split, limit: usize, bad: &mut BadRecords) -> Result<Encoded, TaskError> {
        if split == Split::Predict {
            return self.read_words(files);
        }
        let mut sentences = Vec::new();
        for f in files {
            sentences.extend(read_conll_with(f, bad)?);
        }
        let sentences = super::first(sentences, limit);
        if split == Split::Train && self.labels.names.is_empty() {
            self.labels = LabelSet::from_data(&[], sentences.iter().flat_map(|s| s.tags.iter().map(String::as_str)));
        }
        let examples = sentences.iter().map(|s| encode_tagged(&self.tokenizer, s, &self.labels, self.max_len)).collect::<Result<Vec<_>, _>>()?;
        let notes = cut_notes(&examples, split, self.max_len);
        Ok(Encoded { examples, records: sentences.len(), notes })
    }

    fn check_trained(&self) -> Result<(), TaskError> {
        super::classification::at_least_two(&self.labels)
    }

    /// Labelled positions (first sub-tokens) go to `masked_positions`, so the head and the
    /// loss run on those only, as the MLM decoder does.
    fn collate(&self, examples: &[&TaskExample]) -> HostBatch {
        let mut b = pad_rows(examples, self.tokenizer.special_ids().pad);
        let t = b.seq_len;
        for (r, e) in examples.iter().enumerate() {
            for (j, &l) in e.labels.iter().enumerate() {
                if l != IGNORE {
                    b.masked_positions.push((r * t + j) as i64);
                    b.masked_labels.push(l);
                }
            }
            b.word_starts.push(e.word_starts.clone());
        }
        b.n_scored = b.masked_positions.len();
        b
    }

    fn build(&self, root: &nn::Path) -> Box<dyn TaskModel> {
        Box::new(TokenHead(EncoderForTask::new(root, &self.encoder, HeadKind::TokenClassification, self.labels.names.len().max(1) as i64)))
    }

    fn loss(&self, outputs: &Tensor, batch: &DeviceBatch) -> Tensor {
        outputs.cross_entropy_loss::<Tensor>(&batch.masked_labels, None, Reduction::Sum, IGNORE, self.label_smoothing)
    }

    fn per(&self) -> Per {
        Per::Target
    }

    fn scorer(&self) -> Box<dyn Scorer> {
        Box::new(EntityScorer { names: self.labels.names.clone(), confusion: Confusion::new(self.labels.names.len().max(1)), entities: EntityCounts::default() })
    }

    fn headline(&self) -> &'static [&'static str] {
        &["precision", "recall", "f1", "accuracy", "loss"]
    }

    fn predictor(&self) -> Box<dyn Predictor> {
        Box::new(TagLines { names: self.labels.names.clone() })
    }

    /// Each tagged word's first sub-token and its tag (`paris/B-loc`).
    fn explain(&self, batch: &HostBatch, row: usize) -> String {
        let ids = batch.row(&batch.input_ids, row);
        let tags: Vec<String> = super::scored_in_row(batch, row).iter().map(|&(j, l)| format!("{}/{}", self.tokenizer.id_to_token(ids[j] as u32), super::label_name(&self.labels.names, l))).collect();
        tags.join(" ")
    }

    fn export(&self) -> Result<HfHead, TaskError> {
        let mut config = label_maps(&self.labels.names);
        config.insert("num_labels".into(), json!(self.labels.names.len()));
        Ok(HfHead { architecture: "BertForTokenClassification", config })
    }
}

impl Tagging {
    /// Sentences to tag: CoNLL-style (first column; tags, if any, ignored), or JSONL with a
    /// `tokens` array (words as the training data splits them) or a `text` string (split into
    /// words here, as the tokenizer's pre-tokenizer splits them, with each word's place).
    fn read_words(&self, files: &[PathBuf]) -> Result<Encoded, TaskError> {
        let mut examples = Vec::new();
        for f in files {
            for (line, input) in read_inputs(f)? {
                let (words, shown) = match input {
                    Input::Words(words) => {
                        let shown = json!({ "tokens": words });
                        (words, shown)
                    }
                    Input::Text(text) => {
                        let split = split_words(&self.tokenizer, &text).map_err(|e| TaskDataError::Record { path: f.clone(), line, message: crate::error_chain(&e) })?;
                        let (words, places): (Vec<String>, Vec<(usize, usize)>) = split.into_iter().unzip();
                        (words.clone(), json!({ "text": text, "tokens": words, PLACES: places }))
                    }
                };
                // Any known tag will do: predictions ignore the labels.
                let tags = vec![self.labels.names.first().cloned().unwrap_or_default(); words.len()];
                let s = TaggedSentence { words, tags, path: f.clone(), line };
                let mut e = encode_tagged(&self.tokenizer, &s, &self.labels, self.max_len)?;
                e.shown = Some(Arc::new(shown));
                examples.push(e);
            }
        }
        let notes = cut_notes(&examples, Split::Predict, self.max_len);
        Ok(Encoded { records: examples.len(), examples, notes })
    }
}

/// The key under which a text's word places ride to the predictor (not written out).
const PLACES: &str = "\u{0}places";

/// A word and its place in its text (characters, end exclusive).
pub type PlacedWord = (String, (usize, usize));

/// The words of a text with their places (characters, end exclusive), as the tokenizer reads
/// it: its normaliser (a BERT tokenizer puts each CJK character apart) and pre-tokenizer
/// (whitespace and punctuation), a word being the tokens of one pre-tokenized piece. Each
/// word is the text's own spelling (cased, accented) between its places.
///
/// # Errors
/// The tokenizer's.
pub fn split_words(tokenizer: &TextTokenizer, text: &str) -> Result<Vec<PlacedWord>, crate::data::tokenize::TokenizerError> {
    let enc = tokenizer.inner().encode_char_offsets(text, false).map_err(crate::data::tokenize::TokenizerError::Encode)?;
    let at: Vec<usize> = text.char_indices().map(|(i, _)| i).chain(std::iter::once(text.len())).collect();
    let mut words: Vec<(Option<u32>, usize, usize)> = Vec::new();
    for (w, &(a, b)) in enc.get_word_ids().iter().zip(enc.get_offsets()) {
        match words.last_mut() {
            Some((last, _, end)) if w.is_some() && *last == *w => *end = (*end).max(b),
            _ => words.push((*w, a, b)),
        }
    }
    Ok(words
        .into_iter()
        .filter_map(|(_, a, b)| {
            let (a, b) = (a.min(at.len() - 1), b.min(at.len() - 1));
            let slice = text.get(at[a]..at[b])?;
            // A byte-level BPE token can carry the space before its word.
            let lead = slice.chars().take_while(|c| c.is_whitespace()).count();
            let word = slice.trim();
            (!word.is_empty()).then(|| (word.to_owned(), (a + lead, a + lead + word.chars().count())))
        })
        .collect())
}

/// One sentence to tag.
enum Input {
    /// Its words.
    Words(Vec<String>),
    /// Its text, to split into words.
    Text(String),
}

/// The sentences that lost words to `max_len`, and what that means for them.
fn cut_notes(examples: &[TaskExample], split: Split, max_len: usize) -> Vec<String> {
    super::cut_notes(examples, split, "sentences", max_len).into_iter().map(|n| format!("{n}: the words past the end are not read (tagged O, as run_ner.py drops them)")).collect()
}

/// Sentences with the line each starts on.
fn read_inputs(path: &Path) -> Result<Vec<(u64, Input)>, TaskError> {
    let text = std::fs::read_to_string(path).map_err(|e| TaskDataError::from(FileError::at(path)(e)))?;
    let bad = |line: usize, message: String| TaskDataError::Record { path: path.to_owned(), line: line as u64, message };
    if path.extension().is_some_and(|e| e == "jsonl") {
        let mut out = Vec::new();
        for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(l).map_err(|e| bad(i + 1, format!("bad JSON: {e}")))?;
            let input = match (v.get("tokens"), v.get("text")) {
                (Some(t), _) => Input::Words(serde_json::from_value(t.clone()).map_err(|e| bad(i + 1, format!("`tokens`: {e}")))?),
                (None, Some(Value::String(t))) => Input::Text(t.clone()),
                _ => return Err(bad(i + 1, "needs `tokens` (a list of words) or `text` (a string)".into()).into()),
            };
            out.push((i as u64 + 1, input));
        }
        return Ok(out);
    }
    let (mut out, mut cur, mut start) = (Vec::new(), Vec::new(), 1u64);
    for (i, l) in text.lines().enumerate() {
        match l.split(['\t', ' ']).find(|c| !c.is_empty()) {
            Some(w) => {
                if cur.is_empty() {
                    start = i as u64 + 1;
                }
                cur.push(w.to_owned());
            }
            None if !cur.is_empty() => out.push((start, Input::Words(std::mem::take(&mut cur)))),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push((start, Input::Words(cur)));
    }
    Ok(out)
}

/// An encoder with a per-token head, run at the labelled positions only: `[n_scored, tags]`.
struct TokenHead(EncoderForTask);

impl TaskModel for TokenHead {
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        self.0.logits_at(&b.input_ids, &b.token_type_ids, &b.lengths, &b.masked_positions, train)
    }
}

struct EntityScorer {
    names: Vec<String>,
    confusion: Confusion,
    entities: EntityCounts,
}

impl Scorer for EntityScorer {
    fn add(&mut self, outputs: &Tensor, hb: &HostBatch) {
        let pred = super::argmax(outputs);
        let names = &self.names;
        let tag = |i: usize| names.get(i).map_or("O", String::as_str);
        // The k-th scored position is the k-th word start that survived truncation.
        let mut k = 0;
        for starts in &hb.word_starts {
            let (mut gold, mut got) = (Vec::new(), Vec::new());
            for s in starts {
                match s {
                    Some(_) if k < pred.len() => {
                        let (g, p) = (hb.masked_labels[k] as usize, pred[k] as usize);
                        gold.push(tag(g));
                        got.push(tag(p));
                        self.confusion.add(g.min(names.len() - 1), p.min(names.len() - 1));
                        k += 1;
                    }
                    // A word cut off by truncation: nothing was predicted.
                    _ => {
                        gold.push("O");
                        got.push("O");
                    }
                }
            }
            self.entities.add(&gold, &got);
        }
    }

    fn finish(self: Box<Self>) -> EvalMetrics {
        let e = self.entities.metrics();
        let mut m = EvalMetrics::default();
        m.values.insert("accuracy".into(), self.confusion.metrics().accuracy);
        m.values.insert("precision".into(), e.precision);
        m.values.insert("recall".into(), e.recall);
        m.values.insert("f1".into(), e.f1);
        // Per entity type, as `run_ner.py --return_entity_level_metrics` (`seqeval`'s report):
        // dotted names, so the step log keeps to the totals and `events.jsonl` has them all.
        for (ty, t) in self.entities.by_type() {
            m.values.insert(format!("precision.{ty}"), t.precision);
            m.values.insert(format!("recall.{ty}"), t.recall);
            m.values.insert(format!("f1.{ty}"), t.f1);
            m.values.insert(format!("number.{ty}"), t.support as f64);
        }
        m
    }
}

/// `{"tokens", "tags", "entities"}` per sentence (`"text"` first when one was given): a word
/// cut off by truncation is tagged `O`. An entity is what `seqeval` reads in the tags (B- / I-
/// runs of one type), with its words `[first, last + 1)`, its text and its score: the mean over
/// its words of the probability of each word's tag (`transformers`' token-classification
/// pipeline with `aggregation_strategy="first"`); from a text, also its `start` and `end` in
/// characters.
struct TagLines {
    names: Vec<String>,
}

impl Predictor for TagLines {
    fn add(&mut self, outputs: &Tensor, _batch: &HostBatch, examples: &[&TaskExample]) -> Vec<Value> {
        let pred = super::argmax(outputs);
        let best: Vec<f64> = super::to_f64s(&outputs.to_kind(tch::Kind::Float).softmax(-1, tch::Kind::Float).amax([-1i64].as_slice(), false));
        let mut next = pred.iter().zip(&best);
        examples
            .iter()
            .map(|e| {
                let (tags, scores): (Vec<&str>, Vec<f64>) = e
                    .word_starts
                    .iter()
                    .map(|w| w.and_then(|_| next.next()).map_or(("O", 0.0), |(&p, &s)| (self.names[p as usize].as_str(), s)))
                    .unzip();
                let mut line = echo(e);
                let places: Option<Vec<(usize, usize)>> = line.remove(PLACES).and_then(|v| serde_json::from_value(v).ok());
                let text = line.get("text").and_then(Value::as_str).map(str::to_owned);
                let words: Vec<String> = line.get("tokens").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
                let entities: Vec<Value> = crate::finetune::metrics::entities(&tags)
                    .into_iter()
                    .map(|(ty, a, b)| {
                        let score = scores[a..b].iter().sum::<f64>() / (b - a) as f64;
                        match (&text, &places) {
                            (Some(t), Some(p)) => {
                                let (start, end) = (p[a].0, p[b - 1].1);
                                let span: String = t.chars().skip(start).take(end - start).collect();
                                json!({"type": ty, "text": span, "start": start, "end": end, "words": [a, b], "score": score})
                            }
                            _ => json!({"type": ty, "text": words[a..b].join(" "), "words": [a, b], "score": score}),
                        }
                    })
                    .collect();
                line.insert("tags".into(), json!(tags));
                line.insert("entities".into(), Value::Array(entities));
                Value::Object(line)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bert::BertConfig;

    fn tagging() -> Tagging {
        let tokenizer = TextTokenizer::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sotu/tokenizer.json"), None).unwrap();
        Tagging { labels: LabelSet { names: vec!["O".into(), "B-loc".into(), "I-loc".into()] }, tokenizer: Arc::new(tokenizer), encoder: HeadEncoder::Bert(BertConfig::default()), max_len: 16, label_smoothing: 0.0 }
    }

    /// Words past `max_seq_len` get no position (and no tag); the sentence counts as cut.
    #[test]
    fn sentences_that_lose_words_are_counted_in_the_notes() {
        let mut task = tagging();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.conll");
        let words = ["the", "people", "of", "the", "united", "states", "of", "america", "in", "order", "to", "form", "a", "more", "perfect", "union"];
        let long: String = words.iter().map(|w| format!("{w} O\n")).collect();
        std::fs::write(&f, format!("{long}\nthe O\npeople B-loc\n")).unwrap();
        let enc = task.read(&[f], Split::Train, 0, &mut BadRecords { policy: crate::config::BadRecordPolicy::Fail, skipped: &mut Vec::new() }).unwrap();
        assert!(enc.examples[0].cut && enc.examples[0].word_starts.last() == Some(&None));
        assert!(!enc.examples[1].cut);
        assert_eq!(enc.notes, ["1 of 2 training sentences cut to 16 tokens (train.max_seq_len): the words past the end are not read (tagged O, as run_ner.py drops them)"]);
    }

    #[test]
    fn token_classification_scores_first_sub_tokens_only() {
        let task = tagging();
        let pad = task.tokenizer.special_ids().pad as i64;
        let a = TaskExample { ids: vec![2, 10, 11, 12, 3], types: vec![0; 5], labels: vec![IGNORE, 1, IGNORE, 0, IGNORE], word_starts: vec![Some(1), Some(3)], ..Default::default() };
        let b = TaskExample { ids: vec![2, 10, 3], types: vec![0; 3], labels: vec![IGNORE, 2, IGNORE], word_starts: vec![Some(1), None], ..Default::default() };
        let hb = task.collate(&[&a, &b]);
        assert_eq!(hb.seq_len, 8);
        assert_eq!(hb.masked_positions, vec![1, 3, 9]);
        assert_eq!(hb.masked_labels, vec![1, 0, 2]);
        assert_eq!((hb.n_scored, hb.n_examples, hb.n_tokens), (3, 2, 8));
        assert_eq!(&hb.input_ids[8..12], &[2, 10, 3, pad]);
        assert_eq!(task.explain(&hb, 1), format!("{}/I-loc", task.tokenizer.id_to_token(10)));
        // A sequence task reads no scored positions: one label per row.
        let labelled = |l: i64| TaskExample { labels: vec![l], ..a.clone() };
        let cls = super::super::classification::KIND;
        let cx_tok = task.tokenizer.clone();
        let encoder = crate::objective::ModelSpec::Bert { config: BertConfig::default(), pair_head: false };
        let config = crate::config::TaskConfig { labels: vec!["x".into(), "y".into()], ..Default::default() };
        let seq = (cls.build)(&TaskContext { config: &config, tokenizer: cx_tok, encoder: &encoder, max_seq_len: 16, generate: Default::default() }).unwrap();
        let hb = seq.collate(&[&labelled(1), &labelled(IGNORE)]);
        assert_eq!((hb.row_labels.clone(), hb.n_scored), (vec![1, IGNORE], 0));
    }
}
