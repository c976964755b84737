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

mod manifest;
mod read;
mod write;

use std::path::PathBuf;

use super::source::SourceError;
use super::tokenize::TokenizerError;
use crate::files::FileError;

pub use manifest::{fingerprint, is_prepared, read_manifest, Manifest, SourceFile, SplitManifest, TokenizerId};
pub use read::{verify, DocEntry, PreparedData, PreparedSplit};
pub use write::{prepare, PrepareInput, PrepareReport};

/// Version of the on-disk layout; a reader refuses any other.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name in a prepared folder.
pub use super::source::MANIFEST;
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
