//! `state.json`: everything besides tensors that a resume or an export needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::stream::Cursor;

/// Version of the checkpoint layout.
pub const FORMAT_VERSION: u32 = 1;

/// Contents of `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    /// Layout version.
    pub format_version: u32,
    /// Optimizer updates done.
    pub step: u64,
    /// Non-padding tokens trained on.
    pub tokens_seen: u64,
    /// Sequences trained on.
    pub samples_seen: u64,
    /// Batches consumed (the next batch's `seq`).
    pub batches_seen: u64,
    /// Data stream position after the last consumed batch.
    pub cursor: Cursor,
    /// Run seed.
    pub seed: u64,
    /// Learning rate of the last update.
    pub lr: f64,
    /// Model configuration (Hugging Face `config.json` fields).
    pub model: serde_json::Value,
    /// The resolved run configuration.
    pub config: serde_json::Value,
    /// Versions of pretune, tch and libtorch that wrote it.
    pub versions: BTreeMap<String, String>,
    /// The best checkpoint by held-out loss known when this one was written (the evaluation of
    /// this very step may come later; `checkpoints/best.json` has the final word).
    #[serde(default)]
    pub best: Option<Best>,
    /// sha256 of every other file in the folder.
    pub files: BTreeMap<String, String>,
    /// Ranks of the run that wrote it (a resume needs the same number: the data shards and the
    /// global batch depend on it).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Where the run's starting weights came from (`[init]`): `checkpoint DIR` or `hf DIR`;
    /// absent for a fresh start. Kept across resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// SHA-256 of the tokenizer the run used ([`crate::data::tokenize::TextTokenizer::fingerprint`]);
    /// the folder holds a copy as `tokenizer.json`. Absent in checkpoints of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_sha256: Option<String>,
}

fn one() -> usize {
    1
}

/// The best checkpoint by the monitored held-out number.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Best {
    /// Step of the best checkpoint (its folder is `step-<step>`).
    pub step: u64,
    /// Lower is better: the held-out loss in pre-training; in fine-tuning the task metric,
    /// negated when higher is better (accuracy, F1). (Read as `eval_loss` from early layouts.)
    #[serde(alias = "eval_loss")]
    pub score: f64,
}

/// Versions recorded in checkpoints and `pretune_build_info`.
pub fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("pretune".into(), env!("CARGO_PKG_VERSION").into());
    v.insert("tch".into(), "0.26.0".into());
    v.insert("libtorch".into(), "2.13.0".into());
    v
}
