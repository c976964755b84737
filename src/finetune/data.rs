//! Labelled data for fine-tuning: reading, label sets, encoding and collation.
//!
//! * Classification and regression: JSONL (`text`, optional `text_pair`, `label`; names
//!   configurable) or CSV / TSV with a header naming the columns.
//! * Token classification: CoNLL (`token<TAB>tag` per line, a blank line between sentences);
//!   the label goes on the first sub-token of each word, -100 on the rest.
//!
//! Labelled sets are small, so they are read whole (unlike the pre-training corpus).

use std::path::{Path, PathBuf};

use crate::data::tokenize::{TextTokenizer, TokenizerError};
use crate::batch::IGNORE;
use crate::config::BadRecordPolicy;
use crate::data::source::BadRecord;
use crate::files::FileError;

/// Errors reading or encoding labelled data.
#[derive(Debug, thiserror::Error)]
pub enum TaskDataError {
    /// A file could not be read (the error names it).
    #[error(transparent)]
    Io(#[from] FileError),
    /// A record is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Record {
        /// The data file holding the bad record.
        path: PathBuf,
        /// 1-based line (CSV: record number + 1 for the header).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A label the training data never had.
    #[error("{}:{line}: label `{label}` is not in the label set {known:?} (from the training data or task.labels)", path.display())]
    UnknownLabel {
        /// The data file holding the record.
        path: PathBuf,
        /// 1-based line of the record (CoNLL: the sentence's first line).
        line: u64,
        /// The label as written in the record.
        label: String,
        /// Known labels.
        known: Vec<String>,
    },
    /// Tokenization failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// No records: none in the file, or every one skipped as malformed (`skipped` of them,
    /// the first `first`: what was wrong with it), which says more than "empty" when the
    /// fields are named differently.
    #[error("{}: no labelled records{}", path.display(), match first { Some((line, why)) => format!(" (all {skipped} skipped as malformed; line {line}: {why})"), None => String::new() })]
    Empty {
        /// The file.
        path: PathBuf,
        /// Its records skipped under `data.on_error = "skip"`.
        skipped: usize,
        /// The first skipped record's line and what was wrong with it.
        first: Option<(u64, String)>,
    },
}

/// Column / field names of classification data.
#[derive(Debug, Clone)]
pub struct Fields {
    /// Text field.
    pub text: String,
    /// Optional second text.
    pub text_pair: String,
    /// Label field.
    pub label: String,
}

/// One classification record.
#[derive(Debug, Clone, PartialEq)]
pub struct ClsRecord {
    /// First text.
    pub text: String,
    /// Second text, for pair tasks.
    pub pair: Option<String>,
    /// Label as written (a class name, or a number for regression).
    pub label: String,
    /// Where it came from.
    pub path: PathBuf,
    /// 1-based line where the sentence starts, for error messages.
    pub line: u64,
}

/// One tagged sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedSentence {
    /// The sentence's words as the file splits them (one per CoNLL line).
    pub words: Vec<String>,
    /// One tag per word.
    pub tags: Vec<String>,
    /// Where it came from.
    pub path: PathBuf,
    /// Line of its first word.
    pub line: u64,
}

fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What to do with a malformed record: `data.on_error` (`skip`: count it and go on; `fail`:
/// stop with its file and line).
pub struct BadRecords<'a> {
    /// Skip (count and go on) or fail (stop with the file and line).
    pub policy: BadRecordPolicy,
    /// Records skipped so far (under `skip`).
    pub skipped: &'a mut Vec<BadRecord>,
}

impl BadRecords<'_> {
    /// [`TaskDataError::Empty`] for `path`, with what was skipped of it.
    pub(crate) fn empty(&self, path: &Path) -> TaskDataError {
        let mine: Vec<&BadRecord> = self.skipped.iter().filter(|b| b.path == path).collect();
        TaskDataError::Empty { path: path.to_owned(), skipped: mine.len(), first: mine.first().map(|b| (b.line, b.detail.clone())) }
    }

    pub(crate) fn judge(&mut self, path: &Path, line: u64, reason: &'static str, message: String) -> Result<(), TaskDataError> {
        match self.policy {
            BadRecordPolicy::Fail => Err(TaskDataError::Record { path: path.to_owned(), line, message }),
            BadRecordPolicy::Skip => {
                self.skipped.push(BadRecord { path: path.to_owned(), line, reason, detail: message });
                Ok(())
            }
        }
    }
}

/// Reads classification records from JSONL, CSV or TSV (by extension); a malformed record is
/// an error with its file and line.
///
/// # Errors
/// [`TaskDataError`] naming the file and line of a bad record.
pub fn read_classification(path: &Path, fields: &Fields) -> Result<Vec<ClsRecord>, TaskDataError> {
    let mut skipped = Vec::new();
    read_records(path, fields, true, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut skipped })
}

/// [`read_classification`] under a bad-record policy.
///
/// # Errors
/// An unreadable or empty file; a bad record under `fail`.
pub fn read_classification_with(path: &Path, fields: &Fields, bad: &mut BadRecords) -> Result<Vec<ClsRecord>, TaskDataError> {
    read_records(path, fields, true, bad)
}

/// Reads texts to predict (labels optional).
///
/// # Errors
/// [`TaskDataError`] naming the file and line of a bad record.
pub fn read_texts(path: &Path, fields: &Fields) -> Result<Vec<ClsRecord>, TaskDataError> {
    let mut skipped = Vec::new();
    read_records(path, fields, false, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut skipped })
}

/// The JSON values of a JSONL file's lines with their 1-based line numbers, blank lines
/// skipped; a line that is not UTF-8 or not JSON is judged by `bad` (counted and skipped, or
/// the error) — the one place every JSONL reader of labelled data gets this from.
///
/// # Errors
/// A bad line under `fail`.
pub(crate) fn jsonl_values(path: &Path, bytes: &[u8], bad: &mut BadRecords) -> Result<Vec<(u64, serde_json::Value)>, TaskDataError> {
    let mut out = Vec::new();
    for (line, raw) in byte_lines(bytes) {
        let Ok(l) = std::str::from_utf8(raw) else {
            bad.judge(path, line, "invalid_utf8", "not valid UTF-8".into())?;
            continue;
        };
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(v) => out.push((line, v)),
            Err(e) => bad.judge(path, line, "bad_json", format!("bad JSON: {e}"))?,
        }
    }
    Ok(out)
}

/// Lines of a file as bytes (`\r\n` or `\n`), numbered from 1.
pub(crate) fn byte_lines(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    bytes.split(|&b| b == b'\n').enumerate().map(|(i, l)| (i as u64 + 1, l.strip_suffix(b"\r").unwrap_or(l)))
}

fn read_records(path: &Path, fields: &Fields, need_label: bool, bad_records: &mut BadRecords) -> Result<Vec<ClsRecord>, TaskDataError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let bad = |line: u64, message: String| TaskDataError::Record { path: path.to_owned(), line, message };
    let mut out = Vec::new();
    if matches!(ext, "csv" | "tsv") {
        let mut r = csv::ReaderBuilder::new().delimiter(if ext == "tsv" { b'\t' } else { b',' }).flexible(false).from_path(path).map_err(|e| bad(1, e.to_string()))?;
        let headers = r.headers().map_err(|e| bad(1, e.to_string()))?.clone();
        let col = |name: &str| headers.iter().position(|h| h.trim_start_matches('\u{feff}') == name);
        let (t, l) = match (col(&fields.text), col(&fields.label)) {
            (Some(t), l) if l.is_some() || !need_label => (t, l),
            _ => return Err(bad(1, format!("the header needs columns `{}` and `{}`, it has {:?}", fields.text, fields.label, headers.iter().collect::<Vec<_>>()))),
        };
        let p = col(&fields.text_pair);
        for (i, rec) in r.records().enumerate() {
            let line = i as u64 + 2;
            let rec = match rec {
                Ok(rec) => rec,
                Err(e) => {
                    bad_records.judge(path, line, "bad_csv", e.to_string())?;
                    continue;
                }
            };
            out.push(ClsRecord {
                text: rec.get(t).unwrap_or_default().to_owned(),
                pair: p.and_then(|p| rec.get(p)).map(str::to_owned),
                label: l.and_then(|l| rec.get(l)).unwrap_or_default().trim().to_owned(),
                path: path.to_owned(),
                line,
            });
        }
    } else {
        let bytes = std::fs::read(path).map_err(FileError::at(path))?;
        for (line, v) in jsonl_values(path, &bytes, bad_records)? {
            let get = |k: &str| v.get(k).and_then(json_text);
            let Some(text) = get(&fields.text) else {
                bad_records.judge(path, line, "missing_field", format!("no text field `{}` (a string, number or boolean)", fields.text))?;
                continue;
            };
            let label = match get(&fields.label) {
                Some(l) => l,
                None if !need_label => String::new(),
                None => {
                    bad_records.judge(path, line, "missing_field", format!("no label field `{}`", fields.label))?;
                    continue;
                }
            };
            out.push(ClsRecord { text, pair: get(&fields.text_pair), label, path: path.to_owned(), line });
        }
    }
    if out.is_empty() {
        return Err(bad_records.empty(path));
    }
    Ok(out)
}

/// Reads CoNLL-style `token<TAB>tag` lines (extra columns ignored; the tag is the last); a
/// malformed line is an error with its file and line.
///
/// # Errors
/// [`TaskDataError`] naming the file and line of a line without a tag.
pub fn read_conll(path: &Path) -> Result<Vec<TaggedSentence>, TaskDataError> {
    let mut skipped = Vec::new();
    read_conll_with(path, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut skipped })
}

/// [`read_conll`] under a bad-record policy: under `skip`, a sentence with a malformed line is
/// skipped whole.
///
/// # Errors
/// An unreadable or empty file; a bad line under `fail`.
pub fn read_conll_with(path: &Path, bad_records: &mut BadRecords) -> Result<Vec<TaggedSentence>, TaskDataError> {
    let bytes = std::fs::read(path).map_err(FileError::at(path))?;
    let mut out = Vec::new();
    let mut cur = TaggedSentence { words: vec![], tags: vec![], path: path.to_owned(), line: 1 };
    let mut broken = false;
    for (line, raw) in byte_lines(&bytes) {
        let Ok(l) = std::str::from_utf8(raw) else {
            bad_records.judge(path, line, "invalid_utf8", "not valid UTF-8".into())?;
            broken = true;
            continue;
        };
        let l = l.trim_end();
        if l.is_empty() || l.starts_with("-DOCSTART-") {
            let done = std::mem::replace(&mut cur, TaggedSentence { words: vec![], tags: vec![], path: path.to_owned(), line: line + 1 });
            if !done.words.is_empty() && !broken {
                out.push(done);
            }
            broken = false;
            continue;
        }
        let cols: Vec<&str> = l.split(['\t', ' ']).filter(|c| !c.is_empty()).collect();
        if cols.len() < 2 {
            bad_records.judge(path, line, "bad_conll", format!("expected `token<TAB>tag`, got {:?}", l.chars().take(80).collect::<String>()))?;
            broken = true;
            continue;
        }
        cur.words.push(cols[0].to_owned());
        cur.tags.push(cols[cols.len() - 1].to_owned());
    }
    if !cur.words.is_empty() && !broken {
        out.push(cur);
    }
    if out.is_empty() {
        return Err(bad_records.empty(path));
    }
    Ok(out)
}

/// The label set of a task: names in a fixed order; the index is the class id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelSet {
    /// Class names by id.
    pub names: Vec<String>,
}

impl LabelSet {
    /// From the config when given, else the sorted distinct labels of the training data.
    pub fn from_data<'a>(configured: &[String], seen: impl Iterator<Item = &'a str>) -> Self {
        if !configured.is_empty() {
            return LabelSet { names: configured.to_vec() };
        }
        let mut names: Vec<String> = seen.map(str::to_owned).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        names.shrink_to_fit();
        LabelSet { names }
    }

    /// The note for labels so rare in training data whose label set was learnt from it that
    /// they look like stray values (a number `1` among `ham` / `spam`, a typo): each became a
    /// class of its own. Fires for a label with at most 2 of at least 50 examples while another
    /// has 20 or more; names where it first occurs.
    pub fn rare_note<'a>(seen: impl Iterator<Item = (&'a str, &'a Path, u64)>) -> Option<String> {
        let mut counts: std::collections::BTreeMap<&str, (usize, &Path, u64)> = Default::default();
        let mut total = 0;
        for (label, path, line) in seen {
            counts.entry(label).or_insert((0, path, line)).0 += 1;
            total += 1;
        }
        let most = counts.values().map(|c| c.0).max().unwrap_or(0);
        if total < 50 || most < 20 {
            return None;
        }
        let rare: Vec<String> = counts
            .iter()
            .filter(|(_, c)| c.0 <= 2)
            .map(|(label, (n, path, line))| format!("`{label}` ({n}, first at {}:{line})", path.display()))
            .collect();
        (!rare.is_empty()).then(|| {
            format!("{} of {} labels with at most 2 of {total} training examples, each a class of its own: {} (a stray value? task.labels fixes the set, and a label outside it is an error)", rare.len(), counts.len(), rare.join(", "))
        })
    }

    /// The id of `label`.
    ///
    /// # Errors
    /// [`TaskDataError::UnknownLabel`] with the record's place.
    pub fn id(&self, label: &str, path: &Path, line: u64) -> Result<usize, TaskDataError> {
        self.names.iter().position(|n| n == label).ok_or_else(|| TaskDataError::UnknownLabel {
            path: path.to_owned(),
            line,
            label: label.to_owned(),
            known: self.names.clone(),
        })
    }
}

pub use crate::data::labelled::TaskExample;

/// Encodes a classification record (`label_id` none for regression).
///
/// # Errors
/// Tokenization errors.
pub fn encode_classification(tok: &TextTokenizer, rec: &ClsRecord, label: Option<usize>, target: f32, max_len: usize) -> Result<TaskExample, TaskDataError> {
    let ids = tok.special_ids();
    let mut a = tok.encode(&rec.text)?.ids;
    let mut b = match &rec.pair {
        Some(p) => Some(tok.encode(p)?.ids),
        None => None,
    };
    // Longest-first truncation, as Hugging Face tokenizers do.
    let seps = tok.pair_separators();
    let budget = max_len - if b.is_some() { 2 + seps } else { 2 };
    let cut = a.len() + b.as_ref().map_or(0, Vec::len) > budget;
    while a.len() + b.as_ref().map_or(0, Vec::len) > budget {
        match &mut b {
            Some(bb) if bb.len() > a.len() => {
                bb.pop();
            }
            _ => {
                a.pop();
            }
        }
    }
    let mut out = vec![ids.cls];
    out.extend(&a);
    out.push(ids.sep);
    let mut types = vec![0u8; out.len()];
    if let Some(bb) = b {
        // RoBERTa: `<s> A </s></s> B </s>` (its one token type reads every position as 0).
        out.extend(std::iter::repeat_n(ids.sep, seps - 1));
        types.resize(out.len(), 0);
        out.extend(&bb);
        out.push(ids.sep);
        types.resize(out.len(), 1);
    }
    Ok(TaskExample { ids: out, types, labels: label.map(|l| vec![l as i64]).unwrap_or_default(), target, word_starts: vec![], window: None, shown: None, references: None, cut })
}

/// Encodes a tagged sentence: each word tokenized alone, its tag on the first sub-token.
///
/// # Errors
/// Unknown tags (with the sentence's place) and tokenization errors.
pub fn encode_tagged(tok: &TextTokenizer, s: &TaggedSentence, labels: &LabelSet, max_len: usize) -> Result<TaskExample, TaskDataError> {
    let sp = tok.special_ids();
    let mut ids = vec![sp.cls];
    let mut lab = vec![IGNORE];
    let mut word_starts = Vec::with_capacity(s.words.len());
    for (k, (w, t)) in s.words.iter().zip(&s.tags).enumerate() {
        let class = labels.id(t, &s.path, s.line + k as u64)? as i64;
        let mut pieces = tok.encode_word(w)?.ids;
        if pieces.is_empty() {
            pieces.push(sp.unk);
        }
        if ids.len() + pieces.len() > max_len - 1 {
            word_starts.push(None);
            continue;
        }
        word_starts.push(Some(ids.len()));
        for (j, p) in pieces.iter().enumerate() {
            ids.push(*p);
            lab.push(if j == 0 { class } else { IGNORE });
        }
    }
    ids.push(sp.sep);
    lab.push(IGNORE);
    let cut = word_starts.iter().any(Option::is_none);
    Ok(TaskExample { types: vec![0; ids.len()], ids, labels: lab, target: 0.0, word_starts, window: None, shown: None, references: None, cut })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields { text: "text".into(), text_pair: "text_pair".into(), label: "label".into() }
    }

    #[test]
    fn a_label_with_one_or_two_examples_among_many_is_noted() {
        let p = Path::new("train.jsonl");
        let data = |extra: &[&'static str]| -> Vec<(&'static str, &Path, u64)> {
            let mut v: Vec<(&str, &Path, u64)> = (0..60).map(|i| (if i % 2 == 0 { "ham" } else { "spam" }, p, i + 1)).collect();
            v.extend(extra.iter().enumerate().map(|(k, l)| (*l, p, 100 + k as u64)));
            v
        };
        assert_eq!(LabelSet::rare_note(data(&[]).into_iter()), None);
        let note = LabelSet::rare_note(data(&["1", "spma", "spma"]).into_iter()).unwrap();
        assert!(note.starts_with("2 of 4 labels with at most 2 of 63 training examples"), "{note}");
        assert!(note.contains("`1` (1, first at train.jsonl:100)") && note.contains("`spma` (2, first at train.jsonl:101)"), "{note}");
        // Few examples overall (few-shot data): no note.
        assert_eq!(LabelSet::rare_note(data(&["1"]).into_iter().skip(30)), None);
    }

    /// A file whose every record was skipped says why, not only that it is empty: the usual
    /// cause is fields named otherwise than `task.text_field` / `task.label_field` say.
    #[test]
    fn a_file_of_skipped_records_says_what_was_wrong_with_the_first() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.jsonl");
        std::fs::write(&f, "{\"sentence\": \"good\", \"label\": 1}\n{\"sentence\": \"bad\", \"label\": 0}\n").unwrap();
        let mut skipped = Vec::new();
        let e = read_classification_with(&f, &fields(), &mut BadRecords { policy: BadRecordPolicy::Skip, skipped: &mut skipped }).unwrap_err();
        assert!(matches!(&e, TaskDataError::Empty { skipped: 2, first: Some((1, _)), .. }), "{e}");
        assert!(e.to_string().ends_with("no labelled records (all 2 skipped as malformed; line 1: no text field `text` (a string, number or boolean))"), "{e}");
        std::fs::write(&f, "\n").unwrap();
        let e = read_classification_with(&f, &fields(), &mut BadRecords { policy: BadRecordPolicy::Skip, skipped: &mut Vec::new() }).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: no labelled records", f.display()));
    }

    #[test]
    fn jsonl_csv_and_tsv_read_the_same_records() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.jsonl"), "{\"text\": \"good film\", \"label\": \"pos\"}\n{\"text\": \"bad\", \"text_pair\": \"really\", \"label\": 0}\n").unwrap();
        std::fs::write(d.path().join("a.csv"), "\u{feff}label,text\npos,\"good, film\"\nneg,bad\n").unwrap();
        std::fs::write(d.path().join("a.tsv"), "text\tlabel\ngood film\tpos\n").unwrap();
        let j = read_classification(&d.path().join("a.jsonl"), &fields()).unwrap();
        assert_eq!((j[0].label.as_str(), j[1].label.as_str(), j[1].pair.as_deref()), ("pos", "0", Some("really")));
        let c = read_classification(&d.path().join("a.csv"), &fields()).unwrap();
        assert_eq!((c[0].text.as_str(), c[0].label.as_str(), c[1].line), ("good, film", "pos", 3));
        let t = read_classification(&d.path().join("a.tsv"), &fields()).unwrap();
        assert_eq!(t[0].text, "good film");
        std::fs::write(d.path().join("b.jsonl"), "{\"text\": \"x\"}\n").unwrap();
        let e = read_classification(&d.path().join("b.jsonl"), &fields()).unwrap_err().to_string();
        assert!(e.contains("b.jsonl:1") && e.contains("label"), "{e}");
    }

    #[test]
    fn unseen_labels_are_errors_naming_file_and_line() {
        let set = LabelSet::from_data(&[], ["b", "a", "b"].into_iter());
        assert_eq!(set.names, vec!["a", "b"]);
        let e = set.id("c", Path::new("dev.jsonl"), 7).unwrap_err().to_string();
        assert!(e.contains("dev.jsonl:7") && e.contains("`c`"), "{e}");
    }

    #[test]
    fn conll_sentences_split_on_blank_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.txt");
        std::fs::write(&p, "Empire\tB-facility\nState\tI-facility\n\nhi\tO\n").unwrap();
        let s = read_conll(&p).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].tags, vec!["B-facility", "I-facility"]);
        assert_eq!(s[1].line, 4);
    }
}
