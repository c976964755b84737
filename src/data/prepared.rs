//! Prepared corpora: the training text tokenized once (`pretune data prepare`) into flat files
//! that every rank memory-maps, as Megatron-LM's indexed datasets do.
//!
//! A prepared folder holds `manifest.json` and one folder per split (`train/`, and `eval/`
//! when the config names held-out files). A split is four little-endian arrays:
//!
//! * `tokens.bin`: every sentence's token ids back to back, `u16` when the vocabulary fits,
//!   else `u32`;
//! * `word_starts.bin`: one bit per token (least significant first), set where a word
//!   starts: the tokenizer's word ids, or the corpus' own segmentation for Chinese;
//! * `sentences.bin`: `u64` token offset of each sentence, plus the total at the end;
//! * `docs.bin`: per document four `u64`: its first sentence, the source file's byte offset
//!   where it starts, and the byte offset and line where the reader stood after it.
//!
//! Documents keep their source byte offsets, so a prepared run and a run on the text files
//! share cursors, shuffle keys and hold-out cuts: the batches are the same, and a checkpoint
//! of one resumes on the other. The manifest names the tokenizer (a hash of its serialized
//! form), the sources (size, SHA-256, and a quick fingerprint checked at every start) and the
//! format version; it is written last, so a folder without one is never mistaken for a
//! complete dataset.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::source::{BadRecord, DocReader, FileSpan, ReadSettings, SourceError};
use super::tokenize::{TextTokenizer, TokSentence, TokenizerError};
use crate::config::DataFormat;
use crate::files::{sha256_file, FileError};

/// Version of the on-disk layout; a reader refuses any other.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name in a prepared folder.
pub use super::source::MANIFEST;
/// Bytes hashed at each end of a source file for its quick fingerprint.
const FINGERPRINT_BYTES: u64 = 1 << 20;
/// `u64`s per document record in `docs.bin`.
const DOC_FIELDS: usize = 4;

/// What went wrong preparing or opening a prepared dataset.
#[derive(Debug, thiserror::Error)]
pub enum PreparedError {
    /// Reading or writing a file failed.
    #[error("prepared dataset I/O failed")]
    Io(#[from] FileError),
    /// Reading a source failed (or a bad record under `on_error = "fail"`).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Tokenizing failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The folder is not a complete prepared dataset, or not one this build reads.
    #[error("{path}: {message}")]
    Invalid {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The dataset was made with something other than what the config uses now.
    #[error("the prepared dataset {path} does not match the config: {message}; run `pretune data prepare` again")]
    Mismatch {
        /// The prepared folder.
        path: PathBuf,
        /// Which input, with both hashes.
        message: String,
    },
}

/// The tokenizer a dataset was prepared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerId {
    /// Where it was loaded from (for messages).
    pub path: PathBuf,
    /// SHA-256 of its serialized form (vocabulary, normalizer, pre-tokenizer, added tokens).
    pub sha256: String,
    /// Size of its vocabulary.
    pub vocab_size: usize,
}

/// One source file of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// The file as the config named it.
    pub path: PathBuf,
    /// Its format (text or JSONL).
    pub format: DataFormat,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: String,
    /// SHA-256 of its size and first and last MiB: what a run checks when the file is there.
    pub fingerprint: String,
    /// Index of its first document in the split.
    pub first_doc: u64,
    /// Documents it contributed to the split.
    pub docs: u64,
    /// Records skipped as unreadable while preparing (counted and reported then).
    pub skipped: u64,
}

/// One split of a prepared dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitManifest {
    /// Source files in the config's order.
    pub files: Vec<SourceFile>,
    /// Documents in the split (pre-training examples are packed from them).
    pub docs: u64,
    /// Sentences, what NSP / SOP pairs are drawn from.
    pub sentences: u64,
    /// Tokens after tokenization, special tokens excluded.
    pub tokens: u64,
    /// SHA-256 of each array file (`tokens.bin`, ...): what `data prepare` and `data verify`
    /// check, so a damaged folder is rebuilt, never declared up to date. Absent in folders of
    /// earlier versions (prepared again).
    #[serde(default)]
    pub sha256: std::collections::BTreeMap<String, String>,
}

/// The array files of a split.
const ARRAYS: [&str; 4] = ["tokens.bin", "word_starts.bin", "sentences.bin", "docs.bin"];

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] at the time of writing.
    pub format_version: u32,
    /// The pretune version that wrote it.
    pub pretune: String,
    /// The tokenizer the ids came from: a run with another one is refused.
    pub tokenizer: TokenizerId,
    /// Bytes per token id in `tokens.bin` (2 or 4).
    pub token_bytes: u8,
    /// JSONL field read as the text.
    pub text_field: String,
    /// Longest line accepted.
    pub max_line_bytes: usize,
    /// `train` and, when held-out files were given, `eval`.
    pub splits: std::collections::BTreeMap<String, SplitManifest>,
}

/// SHA-256 of a file's size, first MiB and last MiB: cheap at every start, and any append,
/// truncation or edit near either end changes it.
///
/// # Errors
/// When the file cannot be read.
pub fn fingerprint(path: &Path) -> Result<String, PreparedError> {
    let mut f = File::open(path).map_err(FileError::at(path))?;
    let size = f.metadata().map_err(FileError::at(path))?.len();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut buf = vec![0u8; FINGERPRINT_BYTES.min(size) as usize];
    f.read_exact(&mut buf).map_err(FileError::at(path))?;
    h.update(&buf);
    if size > FINGERPRINT_BYTES {
        let tail = FINGERPRINT_BYTES.min(size - FINGERPRINT_BYTES);
        f.seek(SeekFrom::Start(size - tail)).map_err(FileError::at(path))?;
        buf.resize(tail as usize, 0);
        f.read_exact(&mut buf).map_err(FileError::at(path))?;
        h.update(&buf);
    }
    Ok(hex::encode(h.finalize()))
}

/// A document's place in its source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocEntry {
    /// First sentence (index into the split's sentences).
    pub first_sentence: u64,
    /// Byte offset where the document starts.
    pub offset: u64,
    /// Byte offset where the reader stood after it (the next block or hold-out cut starts
    /// there).
    pub end: u64,
    /// Line number there.
    pub end_line: u64,
}

/// A read-only array of little-endian integers in a memory-mapped file.
struct Mapped {
    map: Option<memmap2::Mmap>,
}

impl Mapped {
    fn open(path: &Path) -> Result<Self, PreparedError> {
        let f = File::open(path).map_err(FileError::at(path))?;
        let len = f.metadata().map_err(FileError::at(path))?.len();
        // An empty file cannot be mapped; it reads as no bytes.
        // SAFETY: the prepared files are written once and renamed into place; nothing
        // modifies them while mapped (a re-prepare writes new files and renames them).
        let map = if len == 0 { None } else { Some(unsafe { memmap2::Mmap::map(&f) }.map_err(FileError::at(path))?) };
        Ok(Mapped { map })
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    fn u64_at(&self, i: usize) -> u64 {
        let b = &self.bytes()[i * 8..i * 8 + 8];
        u64::from_le_bytes(b.try_into().expect("8 bytes"))
    }
}

/// Drops this process's copies of the whole pages inside bytes `a..b` of `m` (a page shared
/// with a neighbouring range stays).
fn advise_dontneed(m: &Mapped, a: usize, b: usize) {
    if let Some(map) = &m.map {
        let page = 4096;
        let (a, b) = (a.div_ceil(page) * page, (b / page) * page);
        if b > a && b <= map.len() {
            // SAFETY: a read-only shared file mapping; DONTNEED only drops this process's
            // copies of the pages, which refault with the file's bytes.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a) };
        }
    }
}

/// One split, memory-mapped: documents by source file, in the order they were read.
pub struct PreparedSplit {
    /// The split's folder.
    pub dir: PathBuf,
    /// Its manifest entry.
    pub manifest: SplitManifest,
    by_path: HashMap<PathBuf, usize>,
    token_bytes: usize,
    tokens: Mapped,
    word_starts: Mapped,
    sentences: Mapped,
    docs: Mapped,
}

impl PreparedSplit {
    /// Maps the split in `dir` described by `manifest`, checking the arrays' sizes and, in one
    /// pass over them, what would crash a run later: every token id below `vocab`, sentence
    /// offsets from 0 to the token count and never decreasing, documents' first sentences
    /// never decreasing and in range, each document's end not before its start.
    ///
    /// # Errors
    /// [`PreparedError::Invalid`] naming the array and what is wrong.
    pub fn open(dir: &Path, manifest: SplitManifest, token_bytes: u8, vocab: usize) -> Result<Self, PreparedError> {
        let open = |name: &str| Mapped::open(&dir.join(name));
        let split = PreparedSplit {
            dir: dir.to_owned(),
            by_path: manifest.files.iter().enumerate().map(|(i, f)| (f.path.clone(), i)).collect(),
            token_bytes: token_bytes as usize,
            tokens: open("tokens.bin")?,
            word_starts: open("word_starts.bin")?,
            sentences: open("sentences.bin")?,
            docs: open("docs.bin")?,
            manifest,
        };
        let m = &split.manifest;
        let expect = [
            ("tokens.bin", split.tokens.bytes().len() as u64, m.tokens * split.token_bytes as u64),
            ("word_starts.bin", split.word_starts.bytes().len() as u64, m.tokens.div_ceil(8)),
            ("sentences.bin", split.sentences.bytes().len() as u64, (m.sentences + 1) * 8),
            ("docs.bin", split.docs.bytes().len() as u64, m.docs * DOC_FIELDS as u64 * 8),
        ];
        for (name, have, want) in expect {
            if have != want {
                return Err(PreparedError::Invalid { path: dir.join(name), message: format!("{have} bytes where the manifest implies {want}: the dataset is damaged; prepare it again") });
            }
        }
        split.check_structure(vocab)?;
        Ok(split)
    }

    /// The checks of [`PreparedSplit::open`] past the sizes.
    fn check_structure(&self, vocab: usize) -> Result<(), PreparedError> {
        let m = &self.manifest;
        let damaged = |name: &str, message: String| PreparedError::Invalid { path: self.dir.join(name), message: format!("{message}: the dataset is damaged; run `pretune data prepare` again") };
        if let Some(i) = (0..m.tokens as usize).find(|&i| self.token(i) as usize >= vocab) {
            return Err(damaged("tokens.bin", format!("token {i} has id {} but the vocabulary has {vocab}", self.token(i))));
        }
        let mut prev = 0;
        for i in 0..=m.sentences as usize {
            let at = self.sentences.u64_at(i);
            if at < prev || at > m.tokens || (i == 0 && at != 0) || (i == m.sentences as usize && at != m.tokens) {
                return Err(damaged("sentences.bin", format!("sentence offset {i} is {at} (after {prev}; {} tokens)", m.tokens)));
            }
            prev = at;
        }
        let mut prev = 0;
        for i in 0..m.docs {
            let d = self.doc(i);
            if d.first_sentence < prev || d.first_sentence > m.sentences || d.end < d.offset {
                return Err(damaged("docs.bin", format!("document {i} starts at sentence {} (after {prev}; {} sentences), bytes {}..{}", d.first_sentence, m.sentences, d.offset, d.end)));
            }
            prev = d.first_sentence;
        }
        for (f, file) in m.files.iter().enumerate() {
            if file.first_doc.checked_add(file.docs).is_none_or(|end| end > m.docs) {
                return Err(damaged("manifest.json", format!("file {f} claims documents {}..+{} of {}", file.first_doc, file.docs, m.docs)));
            }
        }
        Ok(())
    }

    /// The source file's index, by the path the manifest records.
    pub fn file_index(&self, path: &Path) -> Option<usize> {
        self.by_path.get(path).copied()
    }

    /// Documents of file `f`, as indexes into the split.
    pub fn file_docs(&self, f: usize) -> Range<u64> {
        let file = &self.manifest.files[f];
        file.first_doc..file.first_doc + file.docs
    }

    /// Document `i`.
    pub fn doc(&self, i: u64) -> DocEntry {
        let at = i as usize * DOC_FIELDS;
        DocEntry {
            first_sentence: self.docs.u64_at(at),
            offset: self.docs.u64_at(at + 1),
            end: self.docs.u64_at(at + 2),
            end_line: self.docs.u64_at(at + 3),
        }
    }

    /// The first document of file `f` that starts at or after byte `offset` (binary search:
    /// a resume deep into a corpus costs a few page reads).
    pub fn seek(&self, f: usize, offset: u64) -> u64 {
        let docs = self.file_docs(f);
        let (mut lo, mut hi) = (docs.start, docs.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.doc(mid).offset < offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn token(&self, i: usize) -> u32 {
        let b = self.tokens.bytes();
        match self.token_bytes {
            2 => u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])),
            _ => u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes")),
        }
    }

    /// Document `i`'s sentences, as the tokenizer made them.
    pub fn sentences(&self, i: u64) -> Vec<TokSentence> {
        let (first, last) = self.sentence_range(i);
        let bits = self.word_starts.bytes();
        (first..last)
            .map(|s| {
                let range = self.sentences.u64_at(s) as usize..self.sentences.u64_at(s + 1) as usize;
                TokSentence {
                    ids: range.clone().map(|t| self.token(t)).collect(),
                    word_start: range.map(|t| bits[t / 8] >> (t % 8) & 1 == 1).collect(),
                }
            })
            .collect()
    }

    /// Document `i`'s sentences as token *positions* relative to `base` (the first token of
    /// the block), with every word-start flag `false`: what packing and pairing need (lengths
    /// and sentence boundaries) from the index arrays alone, without reading a token. A
    /// data-parallel rank reads the ids of its own examples only ([`PreparedSplit::read_into`]).
    /// `None` when a position does not fit 32 bits past `base` (a block of over 4 G tokens).
    pub fn sentence_positions(&self, i: u64, base: u64) -> Option<Vec<TokSentence>> {
        let (first, last) = self.sentence_range(i);
        (first..last)
            .map(|s| {
                let (a, b) = (self.sentences.u64_at(s), self.sentences.u64_at(s + 1));
                let (a, b) = (u32::try_from(a.checked_sub(base)?).ok()?, u32::try_from(b - base).ok()?);
                Some(TokSentence { ids: (a..b).collect(), word_start: vec![false; (b - a) as usize] })
            })
            .collect()
    }

    /// Tokens of document `i`.
    pub fn doc_tokens(&self, i: u64) -> u64 {
        let (first, last) = self.sentence_range(i);
        self.sentences.u64_at(last) - self.sentences.u64_at(first)
    }

    /// Bytes per token id in `tokens.bin` (2 or 4).
    pub fn token_bytes(&self) -> u64 {
        self.token_bytes as u64
    }

    /// The first token position of document `i`.
    pub fn doc_first_token(&self, i: u64) -> u64 {
        self.sentences.u64_at(self.doc(i).first_sentence as usize)
    }

    /// Document `i`'s sentences: `(first, end)` indexes into the sentence array.
    fn sentence_range(&self, i: u64) -> (usize, usize) {
        let first = self.doc(i).first_sentence as usize;
        let last = if i + 1 < self.manifest.docs { self.doc(i + 1).first_sentence as usize } else { self.manifest.sentences as usize };
        (first, last)
    }

    /// Replaces positions relative to `base` (from [`PreparedSplit::sentence_positions`]) by
    /// the token ids and word-start flags stored there; returns the bytes of `tokens.bin` read.
    /// The pages read are dropped from this process afterwards (they stay in the page cache),
    /// as [`PreparedSplit::release`] does for a block.
    pub fn read_into(&self, base: u64, ids: &mut [u32], word_start: &mut [bool]) -> u64 {
        let bits = self.word_starts.bytes();
        let (mut lo, mut hi) = (usize::MAX, 0usize);
        for (id, ws) in ids.iter_mut().zip(word_start.iter_mut()) {
            let t = (base + u64::from(*id)) as usize;
            *id = self.token(t);
            *ws = bits[t / 8] >> (t % 8) & 1 == 1;
            (lo, hi) = (lo.min(t), hi.max(t + 1));
        }
        if lo < hi {
            self.drop_pages(lo, hi);
        }
        (ids.len() * self.token_bytes) as u64
    }

    /// Drops this process's pages holding tokens `t0..t1` and their word-start bits, every
    /// page touched (a neighbouring example another call still reads refaults it from the page
    /// cache: cheaper than a process that maps a whole epoch by its end).
    fn drop_pages(&self, t0: usize, t1: usize) {
        let page = 4096;
        let ranges = [(&self.tokens, t0 * self.token_bytes, t1 * self.token_bytes), (&self.word_starts, t0 / 8, t1.div_ceil(8))];
        for (m, a, b) in ranges {
            if let Some(map) = &m.map {
                let (a, b) = ((a / page) * page, (b.div_ceil(page) * page).min(map.len()));
                if b > a {
                    // SAFETY: as in `advise_dontneed`.
                    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a) };
                }
            }
        }
    }

    /// Drops documents `docs`' pages from this process's memory once a block is built from them
    /// (`MADV_DONTNEED` on a read-only file mapping: the kernel keeps them in its page cache,
    /// shared with every rank, and a later read faults them back). Streaming an epoch then
    /// holds about one block of the corpus in the process, as the text reader does, instead
    /// of the whole mapped file by the end of the epoch.
    pub fn release(&self, docs: Range<u64>) {
        if docs.is_empty() {
            return;
        }
        let first_sentence = self.doc(docs.start).first_sentence as usize;
        let end_sentence = if docs.end < self.manifest.docs { self.doc(docs.end).first_sentence as usize } else { self.manifest.sentences as usize };
        let (t0, t1) = (self.sentences.u64_at(first_sentence) as usize, self.sentences.u64_at(end_sentence) as usize);
        let ranges = [
            (&self.tokens, t0 * self.token_bytes, t1 * self.token_bytes),
            (&self.word_starts, t0 / 8, t1.div_ceil(8)),
            (&self.sentences, first_sentence * 8, end_sentence * 8),
            (&self.docs, docs.start as usize * DOC_FIELDS * 8, docs.end as usize * DOC_FIELDS * 8),
        ];
        for (m, a, b) in ranges {
            advise_dontneed(m, a, b);
        }
    }

    /// `(position, line)` before each document of file `f` from byte `start` on, as
    /// [`super::source::document_offsets`] reports them for the text: the hold-out cut points.
    pub fn document_offsets(&self, f: usize, start: (u64, u64)) -> Vec<(u64, u64)> {
        let docs = self.file_docs(f);
        let mut prev = start;
        let mut out = Vec::new();
        for i in self.seek(f, start.0)..docs.end {
            let d = self.doc(i);
            out.push(prev);
            prev = (d.end, d.end_line);
        }
        out
    }
}

/// A prepared dataset: its manifest and its splits, mapped.
pub struct PreparedData {
    /// The prepared folder.
    pub root: PathBuf,
    /// `manifest.json`: inputs, tokenizer, format and split sizes.
    pub manifest: Manifest,
    /// The training split.
    pub train: Arc<PreparedSplit>,
    /// The held-out split, when prepared.
    pub eval: Option<Arc<PreparedSplit>>,
}

impl PreparedData {
    /// Opens the prepared folder `root` for a run with `tokenizer` and `read` settings:
    /// checks the format version, the tokenizer's hash and the reading settings, and every
    /// source file still present against its fingerprint (a file that is not there is fine:
    /// the text need not travel with the prepared data).
    ///
    /// # Errors
    /// [`PreparedError::Invalid`] for an incomplete or foreign folder,
    /// [`PreparedError::Mismatch`] naming both hashes.
    pub fn open(root: &Path, tokenizer: &TextTokenizer, read: &ReadSettings) -> Result<Self, PreparedError> {
        let manifest = read_manifest(root)?;
        let mismatch = |message: String| PreparedError::Mismatch { path: root.to_owned(), message };
        let ours = tokenizer.identity();
        if manifest.tokenizer.sha256 != ours {
            return Err(mismatch(format!(
                "it was tokenized with {} (sha256 {}) and the config's tokenizer hashes {}",
                manifest.tokenizer.path.display(),
                manifest.tokenizer.sha256,
                ours
            )));
        }
        if manifest.text_field != read.text_field || manifest.max_line_bytes != read.max_line_bytes {
            return Err(mismatch(format!(
                "it was read with data.text_field = {:?} and data.max_line_bytes = {}, the config has {:?} and {}",
                manifest.text_field, manifest.max_line_bytes, read.text_field, read.max_line_bytes
            )));
        }
        for split in manifest.splits.values() {
            for f in &split.files {
                if !f.path.is_file() {
                    continue;
                }
                let now = fingerprint(&f.path)?;
                if now != f.fingerprint {
                    return Err(mismatch(format!("its source {} had fingerprint {} and now has {}", f.path.display(), f.fingerprint, now)));
                }
            }
        }
        let open = |name: &str| -> Result<Option<Arc<PreparedSplit>>, PreparedError> {
            manifest.splits.get(name).map(|m| PreparedSplit::open(&root.join(name), m.clone(), manifest.token_bytes, tokenizer.vocab_size()).map(Arc::new)).transpose()
        };
        let train = open("train")?.ok_or_else(|| PreparedError::Invalid { path: root.to_owned(), message: "the manifest has no train split".into() })?;
        let eval = open("eval")?;
        Ok(PreparedData { root: root.to_owned(), manifest, train, eval })
    }

    /// The training files as spans (whole files, the config's order).
    pub fn spans(split: &PreparedSplit) -> Vec<FileSpan> {
        split.manifest.files.iter().map(|f| FileSpan { path: f.path.clone(), format: f.format, start: 0, start_line: 1, end: None }).collect()
    }
}

/// Checks a prepared folder whole: the manifest, every array's SHA-256 against it, and each
/// split's structure ([`PreparedSplit::open`]'s checks, against the manifest's vocabulary).
/// What `pretune data verify` and `data prepare` run; a run opening the folder checks only the
/// structure (the checksums read every byte).
///
/// # Errors
/// [`PreparedError::Invalid`] naming the first damaged file.
pub fn verify(root: &Path) -> Result<Manifest, PreparedError> {
    let m = read_manifest(root)?;
    for (name, split) in &m.splits {
        let dir = root.join(name);
        for a in ARRAYS {
            let Some(want) = split.sha256.get(a) else {
                return Err(PreparedError::Invalid { path: dir.join(a), message: "the manifest records no checksum for it (an earlier version's dataset): prepare it again".into() });
            };
            let have = sha256_file(&dir.join(a))?;
            if &have != want {
                return Err(PreparedError::Invalid { path: dir.join(a), message: format!("sha256 {have} where the manifest records {want}: the dataset is damaged; run `pretune data prepare` again") });
            }
        }
        PreparedSplit::open(&dir, split.clone(), m.token_bytes, m.tokenizer.vocab_size)?;
    }
    Ok(m)
}

/// Whether `dir` is a prepared dataset folder (it has a manifest).
pub fn is_prepared(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// Reads and checks `root/manifest.json`.
///
/// # Errors
/// [`PreparedError::Invalid`].
pub fn read_manifest(root: &Path) -> Result<Manifest, PreparedError> {
    let path = root.join(MANIFEST);
    let invalid = |message: String| PreparedError::Invalid { path: path.clone(), message };
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(format!("not a prepared dataset ({e}); make one with `pretune data prepare CONFIG --out {}`", root.display())))?;
    let version: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(format!("not a manifest: {e}")))?;
    match version.get("format_version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        v => return Err(invalid(format!("format version {} where this pretune reads {FORMAT_VERSION}; prepare it again", v.map_or("none".into(), |v| v.to_string())))),
    }
    serde_json::from_str(&text).map_err(|e| invalid(format!("not a manifest: {e}")))
}

/// What `prepare` reads.
pub struct PrepareInput {
    /// `("train", spans)` and optionally `("eval", spans)`: whole files in the config's order.
    pub splits: Vec<(String, Vec<FileSpan>)>,
    /// The tokenizer as the config loads it (before any objective adds tokens).
    pub tokenizer: Arc<TextTokenizer>,
    /// Its file, for the manifest.
    pub tokenizer_path: PathBuf,
    /// How records are read.
    pub read: ReadSettings,
    /// Tokenizing threads.
    pub workers: usize,
}

/// What `prepare` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareReport {
    /// The dataset was already complete and up to date: nothing was done.
    pub up_to_date: bool,
    /// The manifest written (or found).
    pub manifest: Manifest,
    /// Bad records met (each counted in its file's `skipped`), at most the first 20.
    pub bad_records: Vec<BadRecord>,
}

/// Documents sent to the tokenizing workers at a time.
const CHUNK_DOCS: usize = 64;

/// A chunk of raw documents with their positions, numbered in reading order.
struct RawChunk {
    seq: u64,
    docs: Vec<(super::source::RawDoc, u64, u64)>,
}

/// A tokenized document: its offset, end and end line, and its sentences.
type TokDoc = ([u64; 3], Vec<TokSentence>);

/// Tokenized documents of a chunk, in order.
struct DoneChunk {
    seq: u64,
    docs: Result<Vec<TokDoc>, TokenizerError>,
}

/// Appends a split's arrays; tracks the counts for the manifest.
struct SplitWriter {
    dir: PathBuf,
    token_bytes: u8,
    tokens: BufWriter<File>,
    word_starts: BufWriter<File>,
    sentences: BufWriter<File>,
    docs: BufWriter<File>,
    n_tokens: u64,
    n_sentences: u64,
    n_docs: u64,
    bit_acc: u8,
}

impl SplitWriter {
    fn create(dir: &Path, token_bytes: u8) -> Result<Self, PreparedError> {
        std::fs::create_dir_all(dir).map_err(FileError::at(dir))?;
        let open = |name: &str| -> Result<BufWriter<File>, PreparedError> {
            let p = dir.join(name);
            Ok(BufWriter::with_capacity(1 << 20, File::create(&p).map_err(FileError::at(&p))?))
        };
        Ok(SplitWriter {
            dir: dir.to_owned(),
            token_bytes,
            tokens: open("tokens.bin")?,
            word_starts: open("word_starts.bin")?,
            sentences: open("sentences.bin")?,
            docs: open("docs.bin")?,
            n_tokens: 0,
            n_sentences: 0,
            n_docs: 0,
            bit_acc: 0,
        })
    }

    fn push_doc(&mut self, fields: [u64; 3], sentences: &[TokSentence]) -> std::io::Result<()> {
        self.docs.write_all(&self.n_sentences.to_le_bytes())?;
        for v in fields {
            self.docs.write_all(&v.to_le_bytes())?;
        }
        self.n_docs += 1;
        for s in sentences {
            self.sentences.write_all(&self.n_tokens.to_le_bytes())?;
            self.n_sentences += 1;
            for (&id, &start) in s.ids.iter().zip(&s.word_start) {
                if self.token_bytes == 2 {
                    self.tokens.write_all(&(id as u16).to_le_bytes())?;
                } else {
                    self.tokens.write_all(&id.to_le_bytes())?;
                }
                let bit = (self.n_tokens % 8) as u8;
                if start {
                    self.bit_acc |= 1 << bit;
                }
                self.n_tokens += 1;
                if bit == 7 {
                    self.word_starts.write_all(&[self.bit_acc])?;
                    self.bit_acc = 0;
                }
            }
        }
        Ok(())
    }

    /// Writes the trailing bits and the sentence sentinel, flushes and syncs every file.
    fn finish(mut self) -> Result<(u64, u64, u64), PreparedError> {
        let dir = self.dir.clone();
        let e = FileError::at(&dir);
        if !self.n_tokens.is_multiple_of(8) {
            self.word_starts.write_all(&[self.bit_acc]).map_err(&e)?;
        }
        self.sentences.write_all(&self.n_tokens.to_le_bytes()).map_err(&e)?;
        for w in [self.tokens, self.word_starts, self.sentences, self.docs] {
            let f = w.into_inner().map_err(|e| FileError { path: dir.clone(), source: e.into_error() })?;
            f.sync_all().map_err(&e)?;
        }
        Ok((self.n_docs, self.n_sentences, self.n_tokens))
    }
}

/// Whether a finished dataset at `root` was made from exactly these inputs.
fn up_to_date(root: &Path, input: &PrepareInput) -> Option<Manifest> {
    let m = read_manifest(root).ok()?;
    let same_tokenizer = m.tokenizer.sha256 == input.tokenizer.identity();
    let same_read = m.text_field == input.read.text_field && m.max_line_bytes == input.read.max_line_bytes;
    let same_sources = m.splits.len() == input.splits.len()
        && input.splits.iter().all(|(name, spans)| {
            m.splits.get(name).is_some_and(|s| {
                s.files.len() == spans.len()
                    && s.files.iter().zip(spans).all(|(f, sp)| {
                        f.path == sp.path && std::fs::metadata(&sp.path).is_ok_and(|md| md.len() == f.size) && fingerprint(&sp.path).is_ok_and(|h| h == f.fingerprint)
                    })
            })
        });
    let complete = verify(root).is_ok();
    (same_tokenizer && same_read && same_sources && complete).then_some(m)
}

/// Tokenizes `input`'s splits into `root`, in parallel on `input.workers` threads, streaming:
/// memory holds a bounded number of chunks whatever the corpus size. An existing complete
/// dataset made from the same inputs is left as it is; anything else there (an older
/// dataset, an interrupted one) is replaced. The manifest is removed first and written last,
/// atomically, so an interrupted run never leaves a folder that looks complete.
///
/// # Errors
/// [`PreparedError`]: I/O, tokenization, a bad record under `on_error = "fail"`.
pub fn prepare(root: &Path, input: &PrepareInput, mut progress: impl FnMut(&str, u64, u64)) -> Result<PrepareReport, PreparedError> {
    if let Some(manifest) = up_to_date(root, input) {
        return Ok(PrepareReport { up_to_date: true, manifest, bad_records: Vec::new() });
    }
    std::fs::create_dir_all(root).map_err(FileError::at(root))?;
    let manifest_path = root.join(MANIFEST);
    match std::fs::remove_file(&manifest_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FileError::at(&manifest_path)(e).into()),
    }
    let tok = &input.tokenizer;
    let token_bytes: u8 = if tok.vocab_size() <= usize::from(u16::MAX) + 1 { 2 } else { 4 };
    let mut splits = std::collections::BTreeMap::new();
    let mut bad_records = Vec::new();
    for (name, spans) in &input.splits {
        let dir = root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(FileError::at(&dir))?;
        }
        let mut writer = SplitWriter::create(&dir, token_bytes)?;
        // The old manifest is gone and this split's arrays are being rewritten.
        crate::failpoint::hit("prepare.split_created");
        let mut files = Vec::new();
        for span in spans {
            let size = std::fs::metadata(&span.path).map_err(FileError::at(&span.path))?.len();
            let (sha256, fp) = (sha256_file(&span.path)?, fingerprint(&span.path)?);
            let first_doc = writer.n_docs;
            let mut skipped = Vec::new();
            tokenize_file(span, input, &mut writer, &mut skipped, &mut |docs| progress(name, docs, size))?;
            files.push(SourceFile { path: span.path.clone(), format: span.format, size, sha256, fingerprint: fp, first_doc, docs: writer.n_docs - first_doc, skipped: skipped.len() as u64 });
            let room = 20usize.saturating_sub(bad_records.len());
            bad_records.extend(skipped.into_iter().take(room));
        }
        let (docs, sentences, tokens) = writer.finish()?;
        let sha256 = ARRAYS.iter().map(|a| Ok((a.to_string(), sha256_file(&dir.join(a))?))).collect::<Result<_, PreparedError>>()?;
        splits.insert(name.clone(), SplitManifest { files, docs, sentences, tokens, sha256 });
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        pretune: env!("CARGO_PKG_VERSION").into(),
        tokenizer: TokenizerId { path: input.tokenizer_path.clone(), sha256: tok.identity().to_owned(), vocab_size: tok.vocab_size() },
        token_bytes,
        text_field: input.read.text_field.clone(),
        max_line_bytes: input.read.max_line_bytes,
        splits,
    };
    let tmp = root.join(format!("{MANIFEST}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(FileError::at(&tmp))?;
        f.write_all(serde_json::to_string_pretty(&manifest).expect("a manifest serializes").as_bytes()).map_err(FileError::at(&tmp))?;
        f.sync_all().map_err(FileError::at(&tmp))?;
    }
    std::fs::rename(&tmp, &manifest_path).map_err(FileError::at(&manifest_path))?;
    if let Ok(d) = File::open(root) {
        let _ = d.sync_all();
    }
    Ok(PrepareReport { up_to_date: false, manifest, bad_records })
}

/// The reader of [`tokenize_file`]: documents cut into chunks of [`CHUNK_DOCS`], one chunk per
/// free slot; the records it skipped.
fn read_chunks(span: &FileSpan, input: &PrepareInput, slots: &crossbeam_channel::Receiver<()>, raw_tx: &crossbeam_channel::Sender<RawChunk>) -> Result<Vec<BadRecord>, PreparedError> {
    let mut r = DocReader::open(span, span.start, span.start_line, &input.read)?;
    let mut skipped = Vec::new();
    let mut seq = 0;
    loop {
        if slots.recv().is_err() {
            return Ok(skipped);
        }
        let mut docs = Vec::with_capacity(CHUNK_DOCS);
        while docs.len() < CHUNK_DOCS {
            let Some(doc) = r.next_doc(&mut skipped)? else { break };
            docs.push((doc, r.position(), r.line()));
        }
        let last = docs.len() < CHUNK_DOCS;
        if !docs.is_empty() && raw_tx.send(RawChunk { seq, docs }).is_err() {
            return Ok(skipped);
        }
        seq += 1;
        if last {
            return Ok(skipped);
        }
    }
}

/// A tokenizing worker of [`tokenize_file`]: chunks in, their documents' sentences as ids out.
fn tokenize_chunks(tok: &TextTokenizer, raw_rx: &crossbeam_channel::Receiver<RawChunk>, done_tx: &crossbeam_channel::Sender<DoneChunk>) {
    for chunk in raw_rx {
        let docs = chunk
            .docs
            .into_iter()
            .map(|(doc, end, end_line)| {
                let sentences = match &doc.word_starts {
                    Some(starts) => doc.sentences.iter().zip(starts).map(|(s, w)| tok.encode_segmented(s, w)).collect::<Result<Vec<_>, _>>()?,
                    None => doc.sentences.iter().map(|s| tok.encode(s)).collect::<Result<Vec<_>, _>>()?,
                };
                Ok(([doc.offset, end, end_line], sentences))
            })
            .collect();
        if done_tx.send(DoneChunk { seq: chunk.seq, docs }).is_err() {
            return;
        }
    }
}

/// One file: a reader thread cuts documents into chunks, `workers` threads tokenize them,
/// this thread writes them in reading order. At most `4 × workers` chunks are in flight (a
/// slot is taken before a chunk is read and returned once it is written), so memory stays
/// flat.
fn tokenize_file(span: &FileSpan, input: &PrepareInput, writer: &mut SplitWriter, skipped: &mut Vec<BadRecord>, progress: &mut dyn FnMut(u64)) -> Result<(), PreparedError> {
    let workers = input.workers.max(1);
    let in_flight = 4 * workers;
    let (slot_tx, slot_rx) = crossbeam_channel::bounded::<()>(in_flight);
    for _ in 0..in_flight {
        slot_tx.send(()).expect("room for every slot");
    }
    let (raw_tx, raw_rx) = crossbeam_channel::bounded::<RawChunk>(in_flight);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<DoneChunk>(in_flight);
    std::thread::scope(|scope| -> Result<(), PreparedError> {
        let reader = scope.spawn(move || read_chunks(span, input, &slot_rx, &raw_tx));
        for _ in 0..workers {
            let (raw_rx, done_tx) = (raw_rx.clone(), done_tx.clone());
            // Its own copy per worker: threads sharing one tokenizer contend on its regex
            // caches (measured: two workers sharing one used twice the CPU time per token).
            let tok = (*input.tokenizer).clone();
            scope.spawn(move || tokenize_chunks(&tok, &raw_rx, &done_tx));
        }
        drop((raw_rx, done_tx));
        // Written in reading order; out-of-order chunks wait (bounded by the slots).
        let mut pending: std::collections::BTreeMap<u64, DoneChunk> = std::collections::BTreeMap::new();
        let mut next = 0;
        let mut written = 0u64;
        let mut failure = None;
        for chunk in &done_rx {
            pending.insert(chunk.seq, chunk);
            while let Some(chunk) = pending.remove(&next) {
                next += 1;
                match chunk.docs {
                    Ok(docs) => {
                        for (fields, sentences) in &docs {
                            writer.push_doc(*fields, sentences).map_err(FileError::at(&writer.dir))?;
                        }
                        written += docs.len() as u64;
                        progress(written);
                    }
                    Err(e) => failure = Some(PreparedError::Tokenizer(e)),
                }
                let _ = slot_tx.send(());
            }
            if failure.is_some() {
                break;
            }
        }
        // Stop the reader (no more slots) and drain, so every thread ends.
        drop(slot_tx);
        drop(done_rx);
        let read = reader.join().expect("the reader thread does not panic");
        if let Some(e) = failure {
            return Err(e);
        }
        skipped.extend(read?);
        Ok(())
    })
}
