//! `pretune data prepare`: the corpus read in chunks, tokenized by worker threads, written in
//! reading order into a split's arrays, the manifest last.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::manifest::{fingerprint, read_manifest, Manifest, SourceFile, SplitManifest, TokenizerId, ARRAYS};
use super::read::verify;
use super::{PreparedError, FORMAT_VERSION, MANIFEST};
use crate::data::source::{BadRecord, DocReader, FileSpan, ReadSettings};
use crate::data::tokenize::{TextTokenizer, TokSentence, TokenizerError};
use crate::files::{sha256_file, FileError};

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
    docs: Vec<(crate::data::source::RawDoc, u64, u64)>,
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
