//! `pretune predict --checkpoint DIR --input FILE [--output FILE]`: JSONL predictions from a
//! fine-tuned checkpoint (a run's best by default): label and probabilities per text
//! (classification, and cloze on GLM or BERT's MLM head), a score for regression, word-level tags for NER, and for question answering (SQuAD JSON or JSONL
//! in) `{"id", "answer", "score", "start"}` per question, `start` a character offset in the
//! context (`null` with an empty answer when no span qualifies).

use std::io::Write;
use std::path::Path;

use serde_json::json;
use tch::{nn, Device, Kind};

use super::data::{self, Fields, LabelSet, TaggedSentence};
use super::qa;
use super::task::{add_window_logits, collate_plain, TaskNet};
use crate::config::BadRecordPolicy;
use crate::objective::DeviceBatch;
use super::export::{describe, SavedModel, ExportError};
use crate::checkpoint::resume::locate as find_checkpoint;
use crate::data::tokenize::TextTokenizer;
use crate::model::heads::HeadKind;

/// Question-answering windows per forward pass.
const PREDICT_WINDOWS: usize = 32;

/// Writes predictions for `input` to `output` (stdout when `None`); returns the checkpoint used
/// and the number of records.
///
/// # Errors
/// A message naming what failed.
pub fn predict(checkpoint: &Path, input: &Path, output: Option<&Path>) -> Result<(std::path::PathBuf, usize), String> {
    let (dir, state) = find_checkpoint(checkpoint).map_err(|e| crate::error_chain(&e))?;
    let spec = match describe(&state.model, &state.config).map_err(|e: ExportError| e.to_string())? {
        SavedModel::Task(s) => s,
        SavedModel::Pretrain { .. } => return Err(format!("{} is a pre-training checkpoint: predict needs a fine-tuned one", dir.display())),
    };
    let mut tok = TextTokenizer::load(&spec.tokenizer, None).map_err(|e| crate::error_chain(&e))?;
    let cloze_model = super::cloze::model_of(&spec, &mut tok)?;
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = TaskNet::new(&vs.root(), &spec);
    vs.load(dir.join("model.safetensors")).map_err(|e| e.to_string())?;
    let labels = LabelSet { names: spec.labels.clone() };
    let task = state.config.get("task").cloned().unwrap_or_default();
    let field = |k: &str, d: &str| task.get(k).and_then(|v| v.as_str()).unwrap_or(d).to_owned();
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?)),
        None => Box::new(std::io::stdout().lock()),
    };
    let pad = tok.special_ids().pad;
    let _guard = tch::no_grad_guard();
    let mut n = 0;
    match spec.kind {
        HeadKind::QuestionAnswering => {
            let settings = spec.qa.unwrap_or_default();
            let records = qa::read_squad(input, qa::Need::Nothing, &mut data::BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).map_err(|e| crate::error_chain(&e))?;
            let mut windows = qa::QaWindows::new(&tok, spec.max_seq_len, settings.doc_stride)?;
            let mut answers = qa::Answers::new(settings);
            let mut pending: Vec<data::TaskExample> = Vec::new();
            let run = |pending: &mut Vec<data::TaskExample>, answers: &mut qa::Answers| {
                let refs: Vec<&data::TaskExample> = pending.iter().collect();
                let b = collate_plain(&refs, pad, HeadKind::QuestionAnswering);
                add_window_logits(&model.outputs(&DeviceBatch::new(&b, Device::Cpu), false), &b, answers);
                pending.clear();
            };
            // Batched over windows, whatever question they belong to.
            for (i, r) in records.into_iter().enumerate() {
                pending.extend(windows.windows(i, &std::sync::Arc::new(r), true).map_err(|e| crate::error_chain(&e))?);
                if pending.len() >= PREDICT_WINDOWS {
                    run(&mut pending, &mut answers);
                }
                // Windows ready so far are answered; write finished questions as they come.
                for (rec, p) in answers.done.drain(..) {
                    writeln!(out, "{}", json!({"id": rec.id, "answer": p.text, "score": p.score, "start": p.start})).map_err(|e| e.to_string())?;
                    n += 1;
                }
            }
            if !pending.is_empty() {
                run(&mut pending, &mut answers);
            }
            for (rec, p) in answers.finish() {
                writeln!(out, "{}", json!({"id": rec.id, "answer": p.text, "score": p.score, "start": p.start})).map_err(|e| e.to_string())?;
                n += 1;
            }
        }
        HeadKind::TokenClassification => {
            let sentences = read_words(input)?;
            for s in &sentences {
                let tagged = TaggedSentence { words: s.clone(), tags: vec![labels.names[0].clone(); s.len()], path: input.to_owned(), line: 0 };
                let ex = data::encode_tagged(&tok, &tagged, &labels, spec.max_seq_len).map_err(|e| e.to_string())?;
                let b = collate_plain(&[&ex], pad, HeadKind::TokenClassification);
                // Tag logits at each surviving word's first sub-token, in word order.
                let logits = model.outputs(&DeviceBatch::new(&b, Device::Cpu), false);
                let pred = Vec::<i64>::try_from(&logits.argmax(-1, false).view([-1])).unwrap_or_default();
                let mut next = pred.iter();
                let tags: Vec<&str> = ex.word_starts.iter().map(|w| w.and_then(|_| next.next()).map_or("O", |&p| labels.names[p as usize].as_str())).collect();
                writeln!(out, "{}", json!({"tokens": s, "tags": tags})).map_err(|e| e.to_string())?;
                n += 1;
            }
        }
        kind => {
            let fields = Fields { text: field("text_field", "text"), text_pair: field("text_pair_field", "text_pair"), label: field("label_field", "label") };
            let records = data::read_texts(input, &fields).map_err(|e| crate::error_chain(&e))?;
            // Cloze (GLM or BERT's MLM head): the label scores are the verbalizers' summed
            // log-probabilities in the blank; the probabilities their softmax, as in training.
            let cloze = match cloze_model {
                Some(m) => {
                    let verbalizers: std::collections::BTreeMap<String, String> =
                        task.get("verbalizers").cloned().map(serde_json::from_value).transpose().map_err(|e| format!("{}: state.json task.verbalizers: {e}", dir.display()))?.unwrap_or_default();
                    Some(super::cloze::ClozeSpec { pattern: field("pattern", ""), answers: super::cloze::answers(&tok, &labels.names, &verbalizers)?, model: m })
                }
                None => None,
            };
            for r in &records {
                let b = match &cloze {
                    Some(c) => super::cloze::collate(&[&super::cloze::encode(&tok, r, 0, c, spec.max_seq_len).map_err(|e| e.to_string())?], c, pad),
                    None => collate_plain(&[&data::encode_classification(&tok, r, None, 0.0, spec.max_seq_len).map_err(|e| e.to_string())?], pad, kind),
                };
                let logits = model.outputs(&DeviceBatch::new(&b, Device::Cpu), false);
                let line = if kind == HeadKind::Regression {
                    json!({"text": r.text, "score": logits.double_value(&[0])})
                } else {
                    let p = Vec::<f64>::try_from(&logits.softmax(-1, Kind::Double).view([-1])).unwrap_or_default();
                    let best = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |x| x.0);
                    let probs: serde_json::Map<String, serde_json::Value> = labels.names.iter().zip(&p).map(|(l, v)| (l.clone(), json!(v))).collect();
                    json!({"text": r.text, "label": labels.names[best], "probabilities": probs})
                };
                writeln!(out, "{line}").map_err(|e| e.to_string())?;
                n += 1;
            }
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok((dir, n))
}

/// Words per sentence from a CoNLL-style file (first column; tags, if any, ignored) or JSONL
/// with a `tokens` array.
fn read_words(path: &Path) -> Result<Vec<Vec<String>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "jsonl") {
        return text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                let v: serde_json::Value = serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
                serde_json::from_value(v["tokens"].clone()).map_err(|e| format!("{}:{}: `tokens`: {e}", path.display(), i + 1))
            })
            .collect();
    }
    let mut out = vec![];
    let mut cur = vec![];
    for l in text.lines() {
        match l.split(['\t', ' ']).find(|c| !c.is_empty()) {
            Some(w) => cur.push(w.to_owned()),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}
