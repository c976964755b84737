//! `pretune tokenizer train`: a BERT-style WordPiece tokenizer from text files.
//!
//! BERT's pipeline: BertNormalizer (clean text, CJK spacing, strip accents, lower-case),
//! BertPreTokenizer (whitespace and punctuation), WordPiece with `##` continuations, and the
//! `[CLS] A [SEP] B [SEP]` post-processor. Special tokens come first: `[PAD]`=0, `[UNK]`=1,
//! `[CLS]`=2, `[SEP]`=3, `[MASK]`=4.

use std::path::{Path, PathBuf};

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::files::FileError;

/// BERT's special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Errors of tokenizer training.
#[derive(Debug, thiserror::Error)]
pub enum TrainTokenizerError {
    /// A file is missing.
    #[error("file not found: {0}")]
    Missing(PathBuf),
    /// A vocabulary with no room beside the special tokens.
    #[error("--vocab-size {0}: must exceed the {n} special tokens", n = SPECIAL_TOKENS.len())]
    VocabSize(usize),
    /// A line that is not UTF-8 (a binary file, another encoding): named before training.
    #[error("{}:{line}: not UTF-8 text", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// Its line, from 1.
        line: u64,
    },
    /// No text at all in the files: the vocabulary would be the special tokens alone.
    #[error("no text to learn a vocabulary from in {0}")]
    Empty(String),
    /// Reading a file.
    #[error("cannot read a text file")]
    Read(#[source] FileError),
    /// The output cannot be written: found before training, or on saving.
    #[error("cannot write the tokenizer")]
    Write(#[source] FileError),
    /// Training or saving failed.
    #[error("tokenizer training failed")]
    Train(#[source] tokenizers::Error),
}

impl TrainTokenizerError {
    /// Whether the command line asked for what cannot be (exit 2): a missing file, a
    /// vocabulary size too small.
    pub fn is_usage(&self) -> bool {
        matches!(self, TrainTokenizerError::Missing(_) | TrainTokenizerError::VocabSize(_))
    }
}

/// Every line of every file is UTF-8, and some line has text. A pass over the files before
/// training, which reads them again: `tokenizers` would stop with "stream did not contain
/// valid UTF-8", naming neither the file nor the line.
fn check_text(files: &[PathBuf]) -> Result<(), TrainTokenizerError> {
    use std::io::BufRead;
    let mut any_text = false;
    for path in files {
        let read = |e| TrainTokenizerError::Read(FileError::at(path)(e));
        let mut r = std::io::BufReader::new(std::fs::File::open(path).map_err(read)?);
        let mut line = Vec::new();
        for n in 1u64.. {
            line.clear();
            if r.read_until(b'\n', &mut line).map_err(read)? == 0 {
                break;
            }
            let text = std::str::from_utf8(&line).map_err(|_| TrainTokenizerError::NotText { path: path.clone(), line: n })?;
            any_text |= !text.trim().is_empty();
        }
    }
    if any_text {
        Ok(())
    } else {
        Err(TrainTokenizerError::Empty(files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")))
    }
}

/// Trains a WordPiece vocabulary of `vocab_size` on `files` and saves `tokenizer.json` to `out`
/// (whole or not at all: written beside it and renamed).
///
/// # Errors
/// [`TrainTokenizerError`]: what the command line or the files get wrong is found before
/// training, an output that cannot be written too.
pub fn train_wordpiece(files: &[PathBuf], vocab_size: usize, lowercase: bool, out: &Path) -> Result<Tokenizer, TrainTokenizerError> {
    if let Some(f) = files.iter().find(|f| !f.is_file()) {
        return Err(TrainTokenizerError::Missing(f.clone()));
    }
    if vocab_size <= SPECIAL_TOKENS.len() {
        return Err(TrainTokenizerError::VocabSize(vocab_size));
    }
    let partial = {
        let mut p = out.as_os_str().to_owned();
        p.push(".partial");
        PathBuf::from(p)
    };
    // Minutes of training are not spent on a tokenizer that cannot be saved.
    std::fs::write(&partial, b"").map_err(|e| TrainTokenizerError::Write(FileError::at(&partial)(e)))?;
    let trained = check_text(files).and_then(|()| train(files, vocab_size, lowercase, &partial));
    if trained.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let tokenizer = trained?;
    std::fs::rename(&partial, out).map_err(|e| TrainTokenizerError::Write(FileError::at(out)(e)))?;
    Ok(tokenizer)
}

fn train(files: &[PathBuf], vocab_size: usize, lowercase: bool, out: &Path) -> Result<Tokenizer, TrainTokenizerError> {
    let mut tokenizer = Tokenizer::new(WordPiece::builder().unk_token("[UNK]".into()).build().map_err(TrainTokenizerError::Train)?);
    tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase))).map_err(TrainTokenizerError::Train)?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_decoder(Some(WordPieceDecoder::default()));
    let trainer = WordPieceTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect())
        .continuing_subword_prefix("##".into())
        .build();
    let mut trainer = TrainerWrapper::WordPieceTrainer(trainer);
    let files: Vec<String> = files.iter().map(|f| f.to_string_lossy().into_owned()).collect();
    tokenizer.train_from_files(&mut trainer, files).map_err(TrainTokenizerError::Train)?;
    let id = |t: &str| tokenizer.token_to_id(t).expect("special tokens are in the trained vocabulary");
    let (cls, sep) = (id("[CLS]"), id("[SEP]"));
    tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    tokenizer.save(out, true).map_err(TrainTokenizerError::Train)?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What would make training fail or write a useless tokenizer is found first, named, and
    /// leaves no file behind.
    #[test]
    fn bad_input_and_output_are_named_before_training() {
        let d = tempfile::tempdir().unwrap();
        let text = d.path().join("a.txt");
        std::fs::write(&text, "the people of the united states\nin order to form\n").unwrap();
        let binary = d.path().join("b.txt");
        std::fs::write(&binary, b"fine line\n\xff\xfe not text\n").unwrap();
        let blank = d.path().join("c.txt");
        std::fs::write(&blank, " \n\n").unwrap();
        let out = d.path().join("tok.json");
        let err = |files: &[&Path], vocab: usize, out: &Path| train_wordpiece(&files.iter().map(|f| f.to_path_buf()).collect::<Vec<_>>(), vocab, true, out).unwrap_err();
        assert!(matches!(err(&[&text], 5, &out), TrainTokenizerError::VocabSize(5)));
        assert!(err(&[&text], 5, &out).is_usage());
        assert!(matches!(err(&[&text, &d.path().join("missing.txt")], 100, &out), TrainTokenizerError::Missing(_)));
        let e = err(&[&text, &binary], 100, &out);
        assert_eq!(e.to_string(), format!("{}:2: not UTF-8 text", binary.display()));
        assert!(matches!(err(&[&blank], 100, &out), TrainTokenizerError::Empty(_)));
        assert!(matches!(err(&[&text], 100, &d.path().join("no/such/dir/tok.json")), TrainTokenizerError::Write(_)));
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 3, "no output, no partial file left");
        let t = train_wordpiece(&[text], 100, true, &out).unwrap();
        assert!(t.get_vocab_size(true) > SPECIAL_TOKENS.len() && out.is_file());
    }
}
