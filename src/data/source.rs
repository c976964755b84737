//! Streaming documents out of corpus files without loading them into memory.
//!
//! Two formats: BERT's text format (one sentence per line, blank line between documents) and
//! JSONL (one document per line in a string field). Every document carries the byte offset it
//! starts at, so a reader can be re-opened exactly there: that offset is the heart of the
//! resumable cursor.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{BadRecordPolicy, DataFormat};
use crate::files::FileError;

/// A prepared dataset's manifest, by file name: a folder holding one is a prepared corpus, a
/// folder without one is not (the check is here, where corpus paths are expanded).
pub const MANIFEST: &str = "manifest.json";

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
    /// Line number at `start` (1 at the start of a file), for messages.
    pub start_line: u64,
    /// One past the last byte, or `None` for "to the end of the file".
    pub end: Option<u64>,
}

impl FileSpan {
    /// The whole file, format resolved from the extension when `format` is `Auto`.
    pub fn whole(path: PathBuf, format: DataFormat) -> Self {
        let format = resolve_format(&path, format);
        FileSpan { path, format, start: 0, start_line: 1, end: None }
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
    /// Word segmentation given with the text (JSONL field `words`): per sentence, per
    /// character, whether a word starts there. Chinese whole-word masking reads it.
    pub word_starts: Option<Vec<Vec<bool>>>,
}

/// The JSONL field that carries a document's segmentation: its words in order, as strings
/// (`{"text": "我爱北京", "words": ["我", "爱", "北京"]}`), kept apart from the text so the
/// tokenizer never sees the boundaries.
pub const WORDS_FIELD: &str = "words";

/// Marks, per sentence and character, where the `words` of a document start. Whitespace is
/// ignored on both sides (it is a boundary anyway); the words' characters must spell the
/// sentences' characters exactly.
///
/// Where a document's `words` and its text part ways.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WordsMismatch {
    /// A word's character differs from the text's.
    #[error("`words` spell {word:?} where the text has {text:?} (line {line} of the text, character {at})")]
    Spell {
        /// The words' character.
        word: char,
        /// The text's.
        text: char,
        /// 1-based line of the text.
        line: usize,
        /// Character index in the line.
        at: usize,
    },
    /// The words end before the text.
    #[error("`words` end before the text (line {line} of the text, character {at})")]
    EndEarly {
        /// 1-based line of the text.
        line: usize,
        /// Character index in the line.
        at: usize,
    },
    /// The words go on after the text.
    #[error("`words` go on after the text ends ({0:?})")]
    GoOn(char),
}

/// # Errors
/// [`WordsMismatch`]: where words and text part ways.
pub fn word_starts(sentences: &[String], words: &[&str]) -> Result<Vec<Vec<bool>>, WordsMismatch> {
    let mut chars = words.iter().flat_map(|w| w.chars().filter(|c| !c.is_whitespace()).enumerate().map(|(i, c)| (c, i == 0)));
    let mut out = Vec::with_capacity(sentences.len());
    for (k, sentence) in sentences.iter().enumerate() {
        let mut starts = Vec::with_capacity(sentence.chars().count());
        for (j, c) in sentence.chars().enumerate() {
            if c.is_whitespace() {
                starts.push(true);
                continue;
            }
            match chars.next() {
                Some((w, start)) if w == c => starts.push(start),
                Some((w, _)) => return Err(WordsMismatch::Spell { word: w, text: c, line: k + 1, at: j }),
                None => return Err(WordsMismatch::EndEarly { line: k + 1, at: j }),
            }
        }
        out.push(starts);
    }
    match chars.next() {
        Some((w, _)) => Err(WordsMismatch::GoOn(w)),
        None => Ok(out),
    }
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
    #[error("cannot read the corpus")]
    Io(#[from] FileError),
    /// A bad record under `on_error = "fail"`.
    #[error("{}:{}: {} ({})", .0.path.display(), .0.line, .0.detail, .0.reason)]
    BadRecord(BadRecord),
}

/// How records are read and judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSettings {
    /// JSONL field holding the text.
    pub text_field: String,
    /// Skip or fail on a bad record.
    pub on_error: BadRecordPolicy,
    /// Longest accepted line in bytes.
    pub max_line_bytes: usize,
}

impl Default for ReadSettings {
    fn default() -> Self {
        ReadSettings { text_field: "text".into(), on_error: BadRecordPolicy::Skip, max_line_bytes: 1 << 20 }
    }
}

/// One line as read: its text, or why it cannot be used.
enum Line {
    Text(String),
    Bad(&'static str, String),
}

/// Reads documents from one [`FileSpan`], starting at any document boundary.
pub struct DocReader {
    span: FileSpan,
    reader: BufReader<File>,
    /// Byte offset of the next unread byte (to stop at `span.end`, and to report offsets).
    pos: u64,
    /// 1-based number of the next line, for messages (the cursor carries it across a seek).
    line: u64,
    settings: ReadSettings,
    buf: Vec<u8>,
}

impl DocReader {
    /// Opens `span` and seeks to `offset`, a document boundary (a [`RawDoc::offset`] seen
    /// before, or `span.start`); `line` is the line number there (1 at the start of a file).
    ///
    /// # Errors
    /// [`SourceError::Io`] when the file cannot be opened or seeked.
    pub fn open(span: &FileSpan, offset: u64, line: u64, settings: &ReadSettings) -> Result<Self, SourceError> {
        let io = |source| FileError { path: span.path.clone(), source };
        let mut f = File::open(&span.path).map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        Ok(DocReader {
            span: span.clone(),
            reader: BufReader::with_capacity(1 << 16, f),
            pos: offset,
            line: line.max(1),
            settings: settings.clone(),
            buf: Vec::new(),
        })
    }

    /// The byte offset the next document will start at (or past).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The line number at [`DocReader::position`].
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Reads one line, holding at most `max_line_bytes` of it in memory: the rest of an
    /// over-long line is consumed and dropped. Returns the line's start offset and content.
    fn read_line(&mut self) -> Result<Option<(u64, Line)>, SourceError> {
        if self.span.end.is_some_and(|end| self.pos >= end) {
            return Ok(None);
        }
        let io = |source| FileError { path: self.span.path.clone(), source };
        self.buf.clear();
        let limit = self.settings.max_line_bytes as u64 + 1;
        let n = (&mut self.reader).take(limit).read_until(b'\n', &mut self.buf).map_err(io)?;
        if n == 0 {
            return Ok(None);
        }
        let start = self.pos;
        let mut consumed = n as u64;
        let too_long = self.buf.last() != Some(&b'\n') && n as u64 == limit;
        if too_long {
            // Skip to the end of the line without keeping it.
            loop {
                let avail = self.reader.fill_buf().map_err(io)?;
                if avail.is_empty() {
                    break;
                }
                match avail.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.reader.consume(i + 1);
                        consumed += i as u64 + 1;
                        break;
                    }
                    None => {
                        let k = avail.len();
                        self.reader.consume(k);
                        consumed += k as u64;
                    }
                }
            }
        }
        self.pos += consumed;
        self.line += 1;
        let line = if too_long {
            Line::Bad("line_too_long", format!("line longer than data.max_line_bytes = {}", self.settings.max_line_bytes))
        } else {
            match std::str::from_utf8(&self.buf) {
                Ok(t) => Line::Text(t.trim().to_owned()),
                Err(e) => Line::Bad("invalid_utf8", format!("invalid UTF-8 at byte {} of the line", e.valid_up_to())),
            }
        };
        Ok(Some((start, line)))
    }

    fn bad(&self, line: u64, reason: &'static str, detail: String) -> BadRecord {
        BadRecord { path: self.span.path.clone(), line, reason, detail }
    }

    /// Applies the policy to a bad record: collect it (skip) or fail.
    fn judge(&self, b: BadRecord, skipped: &mut Vec<BadRecord>) -> Result<(), SourceError> {
        match self.settings.on_error {
            BadRecordPolicy::Skip => {
                skipped.push(b);
                Ok(())
            }
            BadRecordPolicy::Fail => Err(SourceError::BadRecord(b)),
        }
    }

    /// The next document, or `None` at the end of the span. Bad records are returned in
    /// `skipped` (policy `skip`) or as an error (policy `fail`).
    ///
    /// # Errors
    /// I/O errors, and bad records under `on_error = "fail"`.
    pub fn next_doc(&mut self, skipped: &mut Vec<BadRecord>) -> Result<Option<RawDoc>, SourceError> {
        match self.span.format {
            DataFormat::Jsonl => self.next_jsonl(skipped),
            _ => self.next_text(skipped),
        }
    }

    /// Text format: a document is a run of non-blank lines. A bad line spoils its whole
    /// document (the record), which is skipped as one.
    fn next_text(&mut self, skipped: &mut Vec<BadRecord>) -> Result<Option<RawDoc>, SourceError> {
        loop {
            let mut doc: Option<RawDoc> = None;
            let mut spoiled: Option<BadRecord> = None;
            while let Some((start, line)) = self.read_line()? {
                let lineno = self.line - 1;
                match line {
                    Line::Text(t) if t.is_empty() => {
                        if doc.is_some() || spoiled.is_some() {
                            break;
                        }
                    }
                    Line::Text(t) => doc.get_or_insert_with(|| RawDoc { offset: start, sentences: Vec::new(), word_starts: None }).sentences.push(t),
                    Line::Bad(reason, detail) => {
                        doc.get_or_insert_with(|| RawDoc { offset: start, sentences: Vec::new(), word_starts: None });
                        if spoiled.is_none() {
                            spoiled = Some(self.bad(lineno, reason, detail));
                        }
                    }
                }
            }
            match spoiled {
                Some(b) => self.judge(b, skipped)?,
                None => return Ok(doc),
            }
        }
    }

    fn next_jsonl(&mut self, skipped: &mut Vec<BadRecord>) -> Result<Option<RawDoc>, SourceError> {
        while let Some((start, line)) = self.read_line()? {
            let lineno = self.line - 1;
            let text = match line {
                Line::Bad(reason, detail) => {
                    self.judge(self.bad(lineno, reason, detail), skipped)?;
                    continue;
                }
                Line::Text(t) if t.is_empty() => continue,
                Line::Text(t) => t,
            };
            let field = &self.settings.text_field;
            let record = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => match v.get(field) {
                    Some(serde_json::Value::String(s)) => {
                        let sentences: Vec<String> = s.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
                        match v.get(WORDS_FIELD) {
                            None | Some(serde_json::Value::Null) => Ok((sentences, None)),
                            Some(serde_json::Value::Array(a)) => match a.iter().map(serde_json::Value::as_str).collect::<Option<Vec<&str>>>() {
                                Some(words) => word_starts(&sentences, &words).map(|w| (sentences, Some(w))).map_err(|e| ("bad_words", e.to_string())),
                                None => Err(("bad_words", format!("field `{WORDS_FIELD}` is not an array of strings"))),
                            },
                            Some(_) => Err(("bad_words", format!("field `{WORDS_FIELD}` is not an array of strings"))),
                        }
                    }
                    Some(_) => Err(("bad_field", format!("field `{field}` is not a string"))),
                    None => Err(("missing_field", format!("no field `{field}`"))),
                },
                Err(e) => Err(("bad_json", e.to_string())),
            };
            let (sentences, word_starts) = match record {
                Ok(t) => t,
                Err((reason, detail)) => {
                    self.judge(self.bad(lineno, reason, detail), skipped)?;
                    continue;
                }
            };
            if sentences.is_empty() {
                self.judge(self.bad(lineno, "empty", "empty document".into()), skipped)?;
                continue;
            }
            return Ok(Some(RawDoc { offset: start, sentences, word_starts }));
        }
        Ok(None)
    }
}

/// Boundaries (byte offset, line number) before each document of a span, in order (a cheap pass: no
/// tokenization). Used to split off the last N documents as a held-out set.
///
/// # Errors
/// As [`DocReader::next_doc`].
pub fn document_offsets(span: &FileSpan, settings: &ReadSettings) -> Result<Vec<(u64, u64)>, SourceError> {
    let mut r = DocReader::open(span, span.start, span.start_line, settings)?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    loop {
        // The reader's position before a document is a boundary (blank lines are skipped).
        let at = (r.position(), r.line());
        if r.next_doc(&mut skipped)?.is_none() {
            break;
        }
        out.push(at);
    }
    Ok(out)
}

/// Data file paths from `patterns` (globs sorted, plain paths as given) for config key `key`;
/// every missing file, empty glob or half-prepared folder becomes a line in `problems`.
pub fn expand(patterns: &[String], key: &str, problems: &mut Vec<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in patterns {
        if p.contains(['*', '?', '[']) {
            match glob::glob(p) {
                Ok(paths) => {
                    let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
                    found.sort();
                    if found.is_empty() {
                        problems.push(format!("{key}: no file matches `{p}`{}", relative_to_cwd(Path::new(p))));
                    }
                    out.extend(found);
                }
                Err(e) => problems.push(format!("{key}: bad pattern `{p}`: {e}")),
            }
        } else if Path::new(p).is_file() {
            out.push(PathBuf::from(p));
        } else if Path::new(p).is_dir() {
            problems.push(format!(
                "{key}: `{p}` is a folder without a {}: not a prepared dataset (an interrupted `pretune data prepare`? run it again)",
                MANIFEST
            ));
        } else {
            problems.push(format!("{key}: `{p}`: {}", why_not_a_file(Path::new(p))));
        }
    }
    out
}

/// For a relative path that is not there: where it was looked for (paths in a config are
/// read from the working directory, as a shell reads them, not from the config's folder).
pub fn relative_to_cwd(path: &Path) -> String {
    match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => format!(" (looked for from the working directory {})", cwd.display()),
        _ => String::new(),
    }
}

/// Why `path` cannot be read as a data file, in the OS's words or by what it is: missing, a
/// symlink loop, unreadable, or a FIFO / device / socket (not a regular file).
fn why_not_a_file(path: &Path) -> String {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::fs::symlink_metadata(path).is_ok() => format!("a symbolic link to nothing ({e})"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("file not found{}", relative_to_cwd(path)),
        Err(e) => format!("cannot be read: {e}"),
        Ok(m) => {
            let t = m.file_type();
            let what = if t.is_fifo() {
                "a FIFO"
            } else if t.is_char_device() {
                "a character device"
            } else if t.is_block_device() {
                "a block device"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            format!("{what}, not a regular file (data is read whole or by offset, so it must be a file)")
        }
    }
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
        let mut r = DocReader::open(span, offset, 1, &ReadSettings::default()).unwrap();
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
    fn jsonl_bad_line_is_an_error_under_fail_policy() {
        let (_d, p) = tmp("{\"text\": \"ok\"}\n{oops\n", "jsonl");
        let span = FileSpan::whole(p, DataFormat::Auto);
        let fail = ReadSettings { on_error: BadRecordPolicy::Fail, ..Default::default() };
        let mut r = DocReader::open(&span, 0, 1, &fail).unwrap();
        assert!(r.next_doc(&mut vec![]).unwrap().is_some());
        let e = r.next_doc(&mut vec![]).unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn invalid_utf8_long_lines_and_empty_documents_are_skipped_with_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bad.txt");
        let mut bytes = b"Good one.\n\nBad \xff byte.\nSame doc.\n\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 300));
        bytes.extend_from_slice(b"\nrest of long doc\n\nGood two.\n");
        std::fs::write(&p, &bytes).unwrap();
        let span = FileSpan::whole(p, DataFormat::Text);
        let settings = ReadSettings { max_line_bytes: 100, ..Default::default() };
        let mut r = DocReader::open(&span, 0, 1, &settings).unwrap();
        let mut skipped = vec![];
        let docs: Vec<RawDoc> = std::iter::from_fn(|| r.next_doc(&mut skipped).unwrap()).collect();
        assert_eq!(docs.iter().map(|d| d.sentences[0].as_str()).collect::<Vec<_>>(), vec!["Good one.", "Good two."]);
        assert_eq!(skipped.iter().map(|b| (b.line, b.reason)).collect::<Vec<_>>(), vec![(3, "invalid_utf8"), (6, "line_too_long")]);
        let (_d2, j) = tmp("{\"text\": \"\"}\n{\"text\": \"ok\"}\n", "jsonl");
        let mut skipped = vec![];
        let docs = read_all(&FileSpan::whole(j, DataFormat::Auto), 0, &mut skipped);
        assert_eq!(docs.len(), 1);
        assert_eq!(skipped[0].reason, "empty");
    }

    #[test]
    fn words_mark_where_segmented_words_start_and_must_spell_the_text() {
        let sentences = vec!["我爱 北京。".to_owned(), "天安门".to_owned()];
        let w = word_starts(&sentences, &["我", "爱", "北京", "。", "天安门"]).unwrap();
        assert_eq!(w[0], vec![true, true, true, true, false, true]);
        assert_eq!(w[1], vec![true, false, false]);
        assert!(word_starts(&sentences, &["我", "爱", "北", "。", "天安门"]).unwrap_err().to_string().contains("'京'"));
        assert!(word_starts(&sentences, &["我爱北京。天安门", "了"]).unwrap_err().to_string().contains("go on"));
        assert!(word_starts(&sentences, &["我爱北京。"]).unwrap_err().to_string().contains("end before"));
        // A JSONL document whose words do not spell it is a bad record, counted.
        let (_d, p) = tmp("{\"text\": \"我爱北京\", \"words\": [\"我\", \"爱\", \"北京\"]}\n{\"text\": \"你好\", \"words\": [\"你\"]}\n{\"text\": \"好\", \"words\": 3}\n", "jsonl");
        let mut skipped = Vec::new();
        let docs = read_all(&FileSpan::whole(p, DataFormat::Auto), 0, &mut skipped);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].word_starts, Some(vec![vec![true, true, true, false]]));
        assert_eq!(skipped.iter().map(|b| (b.line, b.reason)).collect::<Vec<_>>(), vec![(2, "bad_words"), (3, "bad_words")]);
    }

    #[test]
    fn span_end_stops_before_held_out_documents() {
        let (_d, p) = tmp("A.\n\nB.\n\nC.\n", "txt");
        let whole = FileSpan::whole(p, DataFormat::Text);
        let offs = document_offsets(&whole, &ReadSettings::default()).unwrap();
        assert_eq!(offs, vec![(0, 1), (4, 3), (8, 5)]);
        let head = FileSpan { end: Some(offs[2].0), ..whole.clone() };
        let docs = read_all(&head, 0, &mut vec![]);
        assert_eq!(docs.iter().map(|d| d.sentences[0].as_str()).collect::<Vec<_>>(), vec!["A.", "B."]);
    }

    #[test]
    fn special_files_say_what_they_are() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path in our own temporary folder.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nothing"), &dangling).unwrap();
        let mut problems = Vec::new();
        let paths = [fifo, a, PathBuf::from("/dev/null"), dangling, d.path().join("missing")];
        let found = expand(&paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(), "data.train", &mut problems);
        assert!(found.is_empty());
        assert!(problems[0].contains("a FIFO, not a regular file"), "{problems:?}");
        assert!(problems[1].contains("cannot be read") && problems[1].to_lowercase().contains("symbolic links"), "{problems:?}");
        assert!(problems[2].contains("a character device"), "{problems:?}");
        assert!(problems[3].contains("a symbolic link to nothing"), "{problems:?}");
        // An absolute path needs no word on where it was looked for.
        assert!(problems[4].ends_with("file not found"), "{problems:?}");
    }

    /// A relative path that is missing says it was looked for from the working directory
    /// (a config run from another folder than the one its paths were written for).
    #[test]
    fn a_missing_relative_path_names_the_working_directory() {
        let mut problems = Vec::new();
        expand(&["no/such/train.txt".into(), "no/such/*.txt".into()], "data.train", &mut problems);
        let cwd = std::env::current_dir().unwrap().display().to_string();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| p.ends_with(&format!("(looked for from the working directory {cwd})"))), "{problems:?}");
    }
}
