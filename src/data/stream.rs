//! The stream of training examples: read, tokenize, pack and shuffle, with a seekable cursor.
//!
//! Shuffling is a *block shuffle*: the Loader reads `shuffle_block_docs` documents, packs them
//! into segments, and permutes the segments with an RNG keyed by `(seed, epoch, file, block
//! offset)`; the file order is permuted per epoch. Unlike a classic shuffle buffer, every
//! position is then described by a few integers (the [`Cursor`]), so a resume re-opens the file
//! at the block's byte offset and skips the examples already consumed in that one block, instead
//! of replaying the epoch.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::packing::{pack_document, Segment};
use super::pairs::{create_instances_from_document, PairInstance, PairTask};
use super::prepared::PreparedSplit;
use super::source::{BadRecord, DocReader, FileSpan, ReadSettings, SourceError};
use super::tokenize::{TextTokenizer, TokSentence, TokenizerError};
use crate::rng::{Rng, Purpose};

/// Where the stream stands: enough to continue exactly from here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Pass over the data, from 0.
    pub epoch: u64,
    /// Index into this epoch's file order.
    pub file: usize,
    /// Byte offset where the current shuffle block starts.
    pub block_offset: u64,
    /// Line number at `block_offset` (for messages about bad records after a resume).
    pub block_line: u64,
    /// Examples of the current block already handed out.
    pub in_block: u64,
    /// Global index of the next example (keys its masking RNG).
    pub example: u64,
}

/// What one example holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// One packed segment (MLM, GLM).
    Single(Segment),
    /// A sentence pair with its NSP / SOP label.
    Pair(PairInstance),
    /// An encoded labelled example (fine-tuning), shared with the source that holds it.
    Labelled(Arc<super::examples::TaskExample>),
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Single(Segment::default())
    }
}

impl Payload {
    /// Text tokens (special tokens not counted).
    pub fn n_tokens(&self) -> usize {
        match self {
            Payload::Single(s) => s.ids.len(),
            Payload::Pair(p) => p.a.ids.len() + p.b.ids.len(),
            Payload::Labelled(e) => e.ids.len(),
        }
    }
}

/// One example, numbered.
#[derive(Debug, Clone)]
pub struct Example {
    /// Global example index; with `epoch` it keys the Masker's RNG.
    pub index: u64,
    /// Epoch this example belongs to.
    pub epoch: u64,
    /// Token ids: one packed segment, or an NSP / SOP pair.
    pub payload: Payload,
    /// `Some(base)` while the payload's ids are still token *positions* relative to `base` in
    /// a prepared corpus (a data-parallel rank reads the ids of its own examples only:
    /// [`ExampleSource::resolve`]); `None` once they are ids.
    pub positions_from: Option<u64>,
}

/// How a block of documents becomes examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// Pack each document's sentences into segments of at most `max_tokens`.
    Segments {
        /// Token budget per segment.
        max_tokens: usize,
    },
    /// Sentence pairs as Google's `create_instances_from_document` builds them.
    Pairs {
        /// `max_seq_len - 3`.
        max_num_tokens: usize,
        /// Chance of a shorter target length.
        short_seq_prob: f64,
        /// NSP or SOP.
        task: PairTask,
    },
}

/// Errors from the stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Tokenizing failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A whole pass over the files produced nothing.
    #[error("the corpus is empty: no document with text in {0}")]
    Empty(String),
    /// A whole pass produced nothing because every record was skipped.
    #[error("the corpus is empty: every record of {files} was skipped ({reasons}; data.on_error = \"skip\")")]
    AllSkipped {
        /// The files read.
        files: String,
        /// Skips by reason (`3 invalid_utf8, 1 too_long`).
        reasons: String,
    },
    /// A span names a file the prepared dataset does not hold.
    #[error("the prepared dataset {dir} holds no file {path}")]
    NotPrepared {
        /// The split's folder.
        dir: std::path::PathBuf,
        /// The span's file.
        path: std::path::PathBuf,
    },
}

/// Where a stream's documents come from: text files tokenized as they are read, or a prepared
/// dataset (`pretune data prepare`) whose documents are already ids. Both give the same
/// documents at the same source offsets, so the stream's blocks, shuffles and cursors are the
/// same.
#[derive(Clone)]
pub enum Corpus {
    /// Text files, read and tokenized block by block.
    Text(Arc<TextTokenizer>),
    /// A memory-mapped prepared split.
    Prepared(Arc<PreparedSplit>),
}

impl From<Arc<TextTokenizer>> for Corpus {
    fn from(t: Arc<TextTokenizer>) -> Self {
        Corpus::Text(t)
    }
}

/// The stream's reading position in the current file.
enum Reading {
    /// An open text reader.
    Text(DocReader),
    /// The next document of a prepared file, and the source position after the last one read.
    Prepared {
        /// File index in the prepared split.
        file: usize,
        /// Next document (index into the split).
        next: u64,
        /// Byte offset after the last document read.
        pos: u64,
        /// Line there.
        line: u64,
    },
}

impl Reading {
    fn position(&self) -> (u64, u64) {
        match self {
            Reading::Text(r) => (r.position(), r.line()),
            Reading::Prepared { pos, line, .. } => (*pos, *line),
        }
    }
}

/// Settings of an [`ExampleStream`].
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Seeds the file order and block permutations.
    pub seed: u64,
    /// Documents per shuffle block.
    pub block_docs: usize,
    /// Segments or sentence pairs.
    pub layout: Layout,
    /// How records are read and judged.
    pub read: ReadSettings,
    /// Shuffle files and blocks (training) or keep file order (evaluation).
    pub shuffle: bool,
    /// Start a new epoch at the end (training) or stop (evaluation).
    pub repeat: bool,
    /// `group_by_length` with batches of this many examples (0: off): each block's shuffled
    /// examples are sorted by length in windows of 50 batches and the batches shuffled, as the
    /// labelled source does.
    pub group_batch: usize,
    /// Whole-word masking reads the words: warn once when Chinese text comes without its
    /// segmentation (each character is then a word of its own).
    pub whole_words: bool,
}

/// CJK Unified Ideographs (and extension A, compatibility ideographs): the characters BERT's
/// pre-tokenizer splits one by one.
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF | 0x20000..=0x2A6DF)
}

/// Opens a source from its start (the held-out examples: no shuffle, no repeat), as often as
/// an evaluation needs it.
pub type OpenSource = Box<dyn Fn() -> Box<dyn ExampleSource> + Send>;

/// Where the Loader takes examples from: the streamed pre-training corpus
/// ([`ExampleStream`]) or a labelled set ([`super::labelled::LabelledStream`]). Both number
/// their examples and describe their position with a [`Cursor`], so a resume seeks.
pub trait ExampleSource: Send {
    /// The next example; `None` at the end (only without repeat).
    ///
    /// # Errors
    /// Reading or tokenizing failed (or a bad record under `on_error = "fail"`).
    fn next_example(&mut self) -> Result<Option<Example>, StreamError>;
    /// Position after the last example handed out.
    fn cursor(&self) -> Cursor;
    /// Records skipped since the last call.
    fn take_skipped(&mut self) -> Vec<BadRecord> {
        Vec::new()
    }
    /// Whether a batch must end after the last example handed out (an epoch boundary of a
    /// labelled set: its last batch may be short, as with a `DataLoader`).
    fn batch_ends_here(&self) -> bool {
        false
    }
    /// Asks the source to hand out examples whose token ids are read later, by
    /// [`ExampleSource::resolve`], so a data-parallel rank reads only its own examples' ids;
    /// `true` when the source does so (a prepared corpus), `false` when it always hands out ids.
    fn defer_reads(&mut self) -> bool {
        false
    }
    /// Reads the token ids of an example handed out with [`Example::positions_from`] set
    /// (a no-op on one whose ids are read).
    fn resolve(&mut self, _example: &mut Example) {}
    /// Bytes of token ids this source has read from a prepared corpus so far.
    fn token_bytes_read(&self) -> u64 {
        0
    }
}

impl ExampleSource for ExampleStream {
    fn next_example(&mut self) -> Result<Option<Example>, StreamError> {
        ExampleStream::next_example(self)
    }
    fn cursor(&self) -> Cursor {
        ExampleStream::cursor(self)
    }
    fn take_skipped(&mut self) -> Vec<BadRecord> {
        ExampleStream::take_skipped(self)
    }
    fn defer_reads(&mut self) -> bool {
        self.defer = matches!(self.corpus, Corpus::Prepared(_));
        self.defer
    }
    fn resolve(&mut self, example: &mut Example) {
        let (Some(base), Corpus::Prepared(split)) = (example.positions_from.take(), &self.corpus) else { return };
        let read = |seg: &mut super::packing::Segment| split.read_into(base, &mut seg.ids, &mut seg.word_start);
        self.token_bytes_read += match &mut example.payload {
            Payload::Single(seg) => read(seg),
            Payload::Pair(p) => read(&mut p.a) + read(&mut p.b),
            Payload::Labelled(_) => 0,
        };
    }
    fn token_bytes_read(&self) -> u64 {
        self.token_bytes_read
    }
}

/// Iterator-like source of [`Example`]s.
pub struct ExampleStream {
    spans: Vec<FileSpan>,
    corpus: Corpus,
    settings: StreamSettings,
    cursor: Cursor,
    /// File order of `cursor.epoch`.
    order: Vec<usize>,
    /// The open reader, positioned after the current block.
    reader: Option<Reading>,
    /// Examples of the current block in shuffled order; `cursor.in_block` indexes into it.
    block: Vec<Payload>,
    /// Whether `block` holds the block at `cursor.block_offset`.
    block_loaded: bool,
    /// Examples produced in the current epoch (an epoch of zero means an empty corpus).
    produced_this_epoch: u64,
    /// Records skipped since the last call to [`ExampleStream::take_skipped`].
    skipped: Vec<BadRecord>,
    /// Records skipped this epoch, by reason (what an empty corpus's error says).
    epoch_skips: std::collections::BTreeMap<&'static str, u64>,
    /// The unsegmented-Chinese warning was given.
    warned_unsegmented: bool,
    /// Hand out a prepared corpus's examples as token positions ([`ExampleSource::defer_reads`]).
    defer: bool,
    /// The current block's token positions are relative to this (deferred reads only).
    block_base: Option<u64>,
    /// Bytes of token ids read from a prepared corpus.
    token_bytes_read: u64,
}

impl ExampleStream {
    /// A stream over `spans` of `corpus` (a tokenizer for text files, or a prepared split)
    /// starting at `cursor` (use `Cursor::default()` to start afresh).
    pub fn new(spans: Vec<FileSpan>, corpus: impl Into<Corpus>, settings: StreamSettings, cursor: Cursor) -> Self {
        let mut s = ExampleStream {
            spans,
            corpus: corpus.into(),
            settings,
            cursor,
            order: Vec::new(),
            reader: None,
            block: Vec::new(),
            block_loaded: false,
            produced_this_epoch: cursor.example,
            skipped: Vec::new(),
            epoch_skips: Default::default(),
            warned_unsegmented: false,
            defer: false,
            block_base: None,
            token_bytes_read: 0,
        };
        s.order = s.file_order(cursor.epoch);
        s
    }

    /// The position of the next example.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Bad records met since the last call.
    pub fn take_skipped(&mut self) -> Vec<BadRecord> {
        self.count_skips();
        std::mem::take(&mut self.skipped)
    }

    /// Adds the records about to be handed over to this epoch's counts.
    fn count_skips(&mut self) {
        for b in &self.skipped {
            *self.epoch_skips.entry(b.reason).or_insert(0) += 1;
        }
    }

    fn file_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.spans.len()).collect();
        if self.settings.shuffle {
            Rng::keyed(self.settings.seed, Purpose::FileOrder, &[epoch]).shuffle(&mut order);
        }
        order
    }

    /// The next example, or `None` at the end of a non-repeating stream.
    ///
    /// # Errors
    /// [`StreamError`] on I/O, tokenization, a rejected record, or an empty corpus.
    pub fn next_example(&mut self) -> Result<Option<Example>, StreamError> {
        loop {
            if !self.block_loaded {
                if self.cursor.file >= self.spans.len() {
                    if self.produced_this_epoch == 0 {
                        let files: Vec<String> = self.spans.iter().map(|s| s.path.display().to_string()).collect();
                        // This epoch's skips: those handed over already and those not yet.
                        let mut skips = self.epoch_skips.clone();
                        for b in &self.skipped {
                            *skips.entry(b.reason).or_insert(0) += 1;
                        }
                        if skips.is_empty() {
                            return Err(StreamError::Empty(files.join(", ")));
                        }
                        let reasons: Vec<String> = skips.iter().map(|(r, n)| format!("{n} {r}")).collect();
                        return Err(StreamError::AllSkipped { files: files.join(", "), reasons: reasons.join(", ") });
                    }
                    if !self.settings.repeat {
                        return Ok(None);
                    }
                    self.cursor.epoch += 1;
                    self.cursor.file = 0;
                    self.produced_this_epoch = 0;
                    self.epoch_skips.clear();
                    self.order = self.file_order(self.cursor.epoch);
                    self.start_file();
                    self.reader = None;
                }
                if !self.load_block()? {
                    // End of this file: next file, from the start of its span.
                    self.cursor.file += 1;
                    self.start_file();
                    continue;
                }
            }
            let i = self.cursor.in_block as usize;
            if i < self.block.len() {
                let payload = std::mem::take(&mut self.block[i]);
                let ex = Example { index: self.cursor.example, epoch: self.cursor.epoch, payload, positions_from: self.block_base };
                self.cursor.in_block += 1;
                self.cursor.example += 1;
                self.produced_this_epoch += 1;
                return Ok(Some(ex));
            }
            // Block exhausted: the next one starts where the reader stands.
            self.block_loaded = false;
            if let Some(r) = &self.reader {
                (self.cursor.block_offset, self.cursor.block_line) = r.position();
            }
            self.cursor.in_block = 0;
        }
    }

    /// Points the cursor at the start of the span of `cursor.file` in this epoch's order.
    fn start_file(&mut self) {
        let span = self.order.get(self.cursor.file).map(|&f| &self.spans[f]);
        self.cursor.block_offset = span.map_or(0, |s| s.start);
        self.cursor.block_line = span.map_or(1, |s| s.start_line);
        self.cursor.in_block = 0;
        self.reader = None;
    }

    /// Reads, tokenizes, packs and permutes the block at the cursor. `false` at end of file.
    fn load_block(&mut self) -> Result<bool, StreamError> {
        let span = self.spans[self.order[self.cursor.file]].clone();
        if self.reader.is_none() {
            if self.cursor.block_offset < span.start {
                self.cursor.block_offset = span.start;
                self.cursor.block_line = span.start_line;
            }
            self.reader = Some(match &self.corpus {
                Corpus::Text(_) => Reading::Text(DocReader::open(&span, self.cursor.block_offset, self.cursor.block_line, &self.settings.read)?),
                Corpus::Prepared(split) => {
                    let file = split.file_index(&span.path).ok_or_else(|| StreamError::NotPrepared { dir: split.dir.clone(), path: span.path.clone() })?;
                    Reading::Prepared { file, next: split.seek(file, self.cursor.block_offset), pos: self.cursor.block_offset, line: self.cursor.block_line }
                }
            });
        }
        let docs = match (self.reader.as_mut().expect("reader was just opened"), &self.corpus) {
            (Reading::Text(reader), Corpus::Text(tokenizer)) => {
                let mut docs: Vec<Vec<TokSentence>> = Vec::new();
                while docs.len() < self.settings.block_docs {
                    let Some(doc) = reader.next_doc(&mut self.skipped)? else { break };
                    let sentences = match &doc.word_starts {
                        Some(starts) => doc.sentences.iter().zip(starts).map(|(s, w)| tokenizer.encode_segmented(s, w)).collect::<Result<Vec<_>, _>>()?,
                        None => {
                            if self.settings.whole_words && !self.warned_unsegmented && doc.sentences.iter().any(|s| s.chars().any(is_cjk)) {
                                self.warned_unsegmented = true;
                                tracing::warn!(file = %span.path.display(), "Chinese text without a word segmentation (JSONL field `words`): whole-word masking masks its characters one by one");
                            }
                            doc.sentences.iter().map(|s| tokenizer.encode(s)).collect::<Result<Vec<_>, _>>()?
                        }
                    };
                    docs.push(sentences);
                }
                docs
            }
            (Reading::Prepared { file, next, pos, line }, Corpus::Prepared(split)) => {
                // The documents a text reader would return from here: those of this file that
                // start before the span's end; the position after each is recorded.
                let first = *next;
                let last = split.file_docs(*file).end;
                while ((*next - first) as usize) < self.settings.block_docs && *next < last {
                    let d = split.doc(*next);
                    if span.end.is_some_and(|end| d.offset >= end) {
                        break;
                    }
                    (*next, *pos, *line) = (*next + 1, d.end, d.end_line);
                }
                // Deferred reads: positions from the index arrays, the ids read later for the
                // examples this rank keeps; else (or for a block past 32-bit positions) the ids.
                let base = (first < *next).then(|| split.doc_first_token(first));
                let positions = base.filter(|_| self.defer).and_then(|b| (first..*next).map(|i| split.sentence_positions(i, b)).collect::<Option<Vec<_>>>());
                self.block_base = positions.as_ref().and(base);
                let docs = match positions {
                    Some(docs) => docs,
                    None => {
                        let docs: Vec<Vec<TokSentence>> = (first..*next).map(|i| split.sentences(i)).collect();
                        self.token_bytes_read += (first..*next).map(|i| split.doc_tokens(i)).sum::<u64>() * split.token_bytes();
                        docs
                    }
                };
                split.release(first..*next);
                docs
            }
            _ => unreachable!("the reader is opened for the stream's corpus"),
        };
        if docs.is_empty() {
            return Ok(false);
        }
        // One RNG per block: pair construction and the shuffle are pure functions of the block.
        let key = [self.cursor.epoch, self.order[self.cursor.file] as u64, self.cursor.block_offset];
        let mut rng = Rng::keyed(self.settings.seed, Purpose::Block, &key);
        let mut examples: Vec<Payload> = match self.settings.layout {
            Layout::Segments { max_tokens } => {
                docs.iter().flat_map(|d| pack_document(d, max_tokens)).map(Payload::Single).collect()
            }
            Layout::Pairs { max_num_tokens, short_seq_prob, task } => (0..docs.len())
                .flat_map(|d| create_instances_from_document(&docs, d, max_num_tokens, short_seq_prob, task, &mut rng))
                .map(Payload::Pair)
                .collect(),
        };
        if self.settings.shuffle && self.settings.group_batch > 0 {
            let lens: Vec<usize> = examples.iter().map(Payload::n_tokens).collect();
            let order = super::examples::epoch_order(&lens, self.settings.group_batch, true, &mut rng);
            let mut slots: Vec<Option<Payload>> = examples.into_iter().map(Some).collect();
            examples = order.into_iter().filter_map(|i| slots[i].take()).collect();
        } else if self.settings.shuffle {
            rng.shuffle(&mut examples);
        }
        self.block = examples;
        self.block_loaded = true;
        Ok(true)
    }
}
