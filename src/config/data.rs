//! `[data]` (the corpus or the labelled files, their format and what to do with a bad record)
//! and `[tokenizer]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Input format of a corpus file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Pick by extension: `.jsonl` / `.json` is JSONL, anything else is text.
    Auto,
    /// BERT's format: one sentence per line, a blank line between documents.
    Text,
    /// One JSON object per line with the document in a string field (`text` by default).
    Jsonl,
    /// A folder made by `pretune data prepare`: already tokenized, memory-mapped.
    Prepared,
}

/// What to do with a record that cannot be read (invalid UTF-8, a line over the limit, bad
/// JSON, a missing field, an empty document).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BadRecordPolicy {
    /// Count it (`pretune_records_skipped_total{reason}`), warn with file and line, go on.
    Skip,
    /// Stop the run with an error naming the file and line.
    Fail,
}

/// `[data]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Training files or glob patterns: a list, or one string for one (as `datasets`'
    /// `data_files` takes either).
    #[serde(deserialize_with = "one_or_many")]
    pub train: Vec<String>,
    /// Held-out files or globs (optional): a list or one string.
    #[serde(deserialize_with = "one_or_many")]
    pub eval: Vec<String>,
    /// Hold out the last N documents of the training files instead of using `eval` files.
    pub eval_holdout_docs: usize,
    /// Evaluate on at most this many batches of the held-out split.
    pub eval_batches: usize,
    /// File format.
    pub format: DataFormat,
    /// JSONL field holding the document text.
    pub text_field: String,
    /// Documents read, packed and shuffled together; the shuffle window.
    pub shuffle_block_docs: usize,
    /// Skip or reject unreadable records.
    pub on_error: BadRecordPolicy,
    /// Longest accepted line in bytes; a longer one makes its record unreadable.
    pub max_line_bytes: usize,
}

/// A list of strings, or one string as a list of one.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a file name or a list of file names")]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            train: Vec::new(),
            eval: Vec::new(),
            eval_holdout_docs: 0,
            eval_batches: 20,
            format: DataFormat::Auto,
            text_field: "text".into(),
            shuffle_block_docs: 256,
            on_error: BadRecordPolicy::Skip,
            max_line_bytes: 1 << 20,
        }
    }
}

/// `[tokenizer]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    /// A `tokenizer.json`, or a WordPiece `vocab.txt`.
    pub path: PathBuf,
    /// For a `vocab.txt`: lower-case the text (uncased BERT vocabularies).
    pub lowercase: Option<bool>,
    /// Go on when this tokenizer differs from the one the resumed or starting checkpoint was
    /// trained with (its ids would no longer match the embeddings: only for users who mean it).
    pub allow_mismatch: bool,
}
