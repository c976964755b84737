//! Reading a prepared dataset: its arrays memory-mapped, checked at open, and read back by
//! document, sentence or token position; `verify` checks a folder whole.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::manifest::{fingerprint, read_manifest, Manifest, SplitManifest, ARRAYS};
use super::{PreparedError, DOC_FIELDS};
use crate::data::source::{FileSpan, ReadSettings};
use crate::data::tokenize::{TextTokenizer, TokSentence};
use crate::files::{sha256_file, FileError};

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
    /// [`crate::data::source::document_offsets`] reports them for the text: the hold-out cut points.
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
