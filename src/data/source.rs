//! Streaming documents out of corpus files without loading them into memory.
//!
//! Two formats: BERT's text format (one sentence per line, blank line between documents) and
//! JSONL (one document per line in a string field). Every document carries the byte offset it
//! starts at, so a reader can be re-opened exactly there: that offset is the heart of the
//! resumable cursor.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{BadRecordPolicy, DataFormat};

/// A byte range of one corpus file: the unit the Loader reads. Held-out documents at the end
/// of a file are excluded from training by ending its span early.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpan {
    /// The file.
    pub path: PathBuf,
    /// Resolved format (never `Auto`).
    pub format: DataFormat,
    /// First byte of the span.
    pub start: u64,
    /// One past the last byte, or `None` for "to the end of the file".
    pub end: Option<u64>,
}

impl FileSpan {
    /// The whole file, format resolved from the extension when `format` is `Auto`.
    pub fn whole(path: PathBuf, format: DataFormat) -> Self {
        let format = resolve_format(&path, format);
        FileSpan { path, format, start: 0, end: None }
    }
}

/// `Auto` becomes JSONL for `.jsonl` / `.json` / `.ndjson`, text otherwise.
pub fn resolve_format(path: &Path, format: DataFormat) -> DataFormat {
    match format {
        DataFormat::Auto => match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "json" | "ndjson") => DataFormat::Jsonl,
            _ => DataFormat::Text,
        },
        f => f,
    }
}

/// One document: its sentences (lines) and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDoc {
    /// Byte offset of the document's first line in its file.
    pub offset: u64,
    /// Non-empty, trimmed lines. For JSONL, the text split on newlines.
    pub sentences: Vec<String>,
}

/// A record that could not be read, counted under `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// File of the record.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: u64,
    /// Bounded label value for `pretune_records_skipped_total{reason}`.
    pub reason: &'static str,
    /// Human detail.
    pub detail: String,
}

/// Errors while reading a corpus.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Opening, seeking or reading failed.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A bad record under `on_bad_record = "error"`.
    #[error("{}:{}: {} ({})", .0.path.display(), .0.line, .0.detail, .0.reason)]
    BadRecord(BadRecord),
}

/// Reads documents from one [`FileSpan`], starting at any document boundary.
pub struct DocReader {
    span: FileSpan,
    reader: BufReader<File>,
    /// Byte offset of the next unread byte (to stop at `span.end`, and to report offsets).
    pos: u64,
    /// Line number of the next line, for error messages; only exact when reading from the
    /// start of the file (a seek does not know how many lines it skipped).
    line: u64,
    text_field: String,
    on_bad: BadRecordPolicy,
    buf: Vec<u8>,
}

impl DocReader {
    /// Opens `span` and seeks to `offset` (which must be a document boundary, e.g. a
    /// [`RawDoc::offset`] seen before, or `span.start`).
    ///
    /// # Errors
    /// [`SourceError::Io`] when the file cannot be opened or seeked.
    pub fn open(span: &FileSpan, offset: u64, text_field: &str, on_bad: BadRecordPolicy) -> Result<Self, SourceError> {
        let io = |source| SourceError::Io { path: span.path.clone(), source };
        let mut f = File::open(&span.path).map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        Ok(DocReader {
            span: span.clone(),
            reader: BufReader::with_capacity(1 << 16, f),
            pos: offset,
            line: 1,
            text_field: text_field.to_owned(),
            on_bad,
            buf: Vec::new(),
        })
    }

    /// The byte offset the next document will start at (or past).
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn read_line(&mut self) -> Result<Option<(u64, String)>, SourceError> {
        if self.span.end.is_some_and(|end| self.pos >= end) {
            return Ok(None);
        }
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| SourceError::Io { path: self.span.path.clone(), source })?;
        if n == 0 {
            return Ok(None);
        }
        let start = self.pos;
        self.pos += n as u64;
        self.line += 1;
        // Invalid UTF-8 is replaced rather than dropped: a stray Latin-1 byte should not
        // cost a whole document.
        Ok(Some((start, String::from_utf8_lossy(&self.buf).trim().to_owned())))
    }

    /// The next document, or `None` at the end of the span. Bad records are returned in
    /// `skipped` (policy `skip`) or as an error (policy `error`).
    ///
    /// # Errors
    /// I/O errors, and bad records under `on_bad_record = "error"`.
    pub fn next_doc(&mut self, skipped: &mut Vec<BadRecord>) -> Result<Option<RawDoc>, SourceError> {
        match self.span.format {
            DataFormat::Jsonl => self.next_jsonl(skipped),
            _ => self.next_text(),
        }
    }

    fn next_text(&mut self) -> Result<Option<RawDoc>, SourceError> {
        let mut doc: Option<RawDoc> = None;
        while let Some((start, line)) = self.read_line()? {
            if line.is_empty() {
                if doc.is_some() {
                    break;
                }
                continue;
            }
            doc.get_or_insert_with(|| RawDoc { offset: start, sentences: Vec::new() }).sentences.push(line);
        }
        Ok(doc)
    }

    fn next_jsonl(&mut self, skipped: &mut Vec<BadRecord>) -> Result<Option<RawDoc>, SourceError> {
        while let Some((start, line)) = self.read_line()? {
            if line.is_empty() {
                continue;
            }
            let lineno = self.line - 1;
            let bad = |reason: &'static str, detail: String| BadRecord {
                path: self.span.path.clone(),
                line: lineno,
                reason,
                detail,
            };
            let record = match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) => match v.get(&self.text_field) {
                    Some(serde_json::Value::String(s)) => Ok(s.clone()),
                    Some(_) => Err(bad("bad_field", format!("field `{}` is not a string", self.text_field))),
                    None => Err(bad("missing_field", format!("no field `{}`", self.text_field))),
                },
                Err(e) => Err(bad("bad_json", e.to_string())),
            };
            match record {
                Ok(text) => {
                    let sentences: Vec<String> =
                        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
                    if sentences.is_empty() {
                        skipped.push(bad("empty", "empty text".into()));
                        continue;
                    }
                    return Ok(Some(RawDoc { offset: start, sentences }));
                }
                Err(b) => match self.on_bad {
                    BadRecordPolicy::Skip => skipped.push(b),
                    BadRecordPolicy::Error => return Err(SourceError::BadRecord(b)),
                },
            }
        }
        Ok(None)
    }
}

/// Byte offsets of the documents of a whole file, in order (a cheap pass: no tokenization).
/// Used to split off the last N documents as a held-out set.
///
/// # Errors
/// As [`DocReader::next_doc`].
pub fn document_offsets(span: &FileSpan, text_field: &str, on_bad: BadRecordPolicy) -> Result<Vec<u64>, SourceError> {
    let mut r = DocReader::open(span, span.start, text_field, on_bad)?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    while let Some(d) = r.next_doc(&mut skipped)? {
        out.push(d.offset);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmp(content: &str, ext: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(format!("c.{ext}"));
        std::fs::File::create(&p).unwrap().write_all(content.as_bytes()).unwrap();
        (d, p)
    }

    fn read_all(span: &FileSpan, offset: u64, skipped: &mut Vec<BadRecord>) -> Vec<RawDoc> {
        let mut r = DocReader::open(span, offset, "text", BadRecordPolicy::Skip).unwrap();
        std::iter::from_fn(|| r.next_doc(skipped).unwrap()).collect()
    }

    #[test]
    fn text_documents_are_split_on_blank_lines_and_reopen_at_their_offset() {
        let (_d, p) = tmp("\n\nA one.\nA two.\n\n\nB one.\n\nC one.\nC two.\n", "txt");
        let span = FileSpan::whole(p, DataFormat::Auto);
        let docs = read_all(&span, 0, &mut vec![]);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].sentences, vec!["A one.", "A two."]);
        assert_eq!(docs[2].sentences, vec!["C one.", "C two."]);
        let again = read_all(&span, docs[1].offset, &mut vec![]);
        assert_eq!(again, docs[1..].to_vec());
    }

    #[test]
    fn jsonl_bad_lines_are_counted_not_fatal_under_skip() {
        let (_d, p) = tmp("{\"text\": \"one\\ntwo\"}\nnot json\n{\"body\": 1}\n{\"text\": \"three\"}\n", "jsonl");
        let span = FileSpan::whole(p, DataFormat::Auto);
        let mut skipped = vec![];
        let docs = read_all(&span, 0, &mut skipped);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].sentences, vec!["one", "two"]);
        assert_eq!(skipped.iter().map(|b| (b.line, b.reason)).collect::<Vec<_>>(), vec![(2, "bad_json"), (3, "missing_field")]);
    }

    #[test]
    fn jsonl_bad_line_is_an_error_under_error_policy() {
        let (_d, p) = tmp("{\"text\": \"ok\"}\n{oops\n", "jsonl");
        let span = FileSpan::whole(p, DataFormat::Auto);
        let mut r = DocReader::open(&span, 0, "text", BadRecordPolicy::Error).unwrap();
        assert!(r.next_doc(&mut vec![]).unwrap().is_some());
        let e = r.next_doc(&mut vec![]).unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn span_end_stops_before_held_out_documents() {
        let (_d, p) = tmp("A.\n\nB.\n\nC.\n", "txt");
        let whole = FileSpan::whole(p, DataFormat::Text);
        let offs = document_offsets(&whole, "text", BadRecordPolicy::Skip).unwrap();
        let head = FileSpan { end: Some(offs[2]), ..whole.clone() };
        let docs = read_all(&head, 0, &mut vec![]);
        assert_eq!(docs.iter().map(|d| d.sentences[0].as_str()).collect::<Vec<_>>(), vec!["A.", "B."]);
    }
}
