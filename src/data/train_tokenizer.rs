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

/// BERT's special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Errors of tokenizer training.
#[derive(Debug, thiserror::Error)]
pub enum TrainTokenizerError {
    /// A file is missing.
    #[error("file not found: {0}")]
    Missing(PathBuf),
    /// Training or saving failed.
    #[error("tokenizer training failed")]
    Train(#[source] tokenizers::Error),
}

/// Trains a WordPiece vocabulary of `vocab_size` on `files` and saves `tokenizer.json` to `out`.
///
/// # Errors
/// [`TrainTokenizerError`].
pub fn train_wordpiece(files: &[PathBuf], vocab_size: usize, lowercase: bool, out: &Path) -> Result<Tokenizer, TrainTokenizerError> {
    if let Some(f) = files.iter().find(|f| !f.is_file()) {
        return Err(TrainTokenizerError::Missing(f.clone()));
    }
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
