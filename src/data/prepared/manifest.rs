//! `manifest.json`: what a prepared folder holds and was made from, the quick fingerprint of a
//! source file, and reading the manifest back.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{PreparedError, FORMAT_VERSION, MANIFEST};
use crate::config::DataFormat;
use crate::files::FileError;

/// Bytes hashed at each end of a source file for its quick fingerprint.
const FINGERPRINT_BYTES: u64 = 1 << 20;

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
pub(super) const ARRAYS: [&str; 4] = ["tokens.bin", "word_starts.bin", "sentences.bin", "docs.bin"];

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
