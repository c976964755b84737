//! Run configuration: TOML structs that mirror the component tree and `--set` overrides.
//! Validation into a plan lives in [`crate::plan`].
//!
//! Every struct denies unknown fields, so a typo is an error that names the key path and the
//! file (`train.max_step: unknown field ...` in `configs/x.toml`), never a silently ignored knob.

mod data;
mod objective;
mod overrides;
mod task;
mod train;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use data::{BadRecordPolicy, DataConfig, DataFormat, TokenizerConfig};
pub use objective::{ElectraObjectiveConfig, GlmObjectiveConfig, MaskUnit, ObjectiveConfig, ObjectiveKind, Selection, SentencePair};
pub use overrides::{apply_override, attribute_problems, set_value};
pub use task::{InitConfig, ProbeConfig, RetentionConfig, TaskConfig};
pub use train::{Decay, NonFinitePolicy, Precision, TrainConfig};

/// Errors from reading, overriding or validating a config. All are usage errors (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {file}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{file}: not valid TOML")]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// The parser's message, with line and column.
        #[source]
        source: toml::de::Error,
    },
    /// A `--set key=value` override is malformed.
    #[error("bad override `{0}`: expected key.path=value")]
    Override(String),
    /// Unknown or mistyped keys, and values that make no sense; every problem is listed,
    /// each starting with its key path.
    #[error("{file}: invalid configuration:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// One line per problem, each starting with its key path.
        problems: Vec<String>,
    },
}

/// The whole run, exactly as the file (plus overrides) says.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Identity, seed, output folder and device.
    pub run: RunSection,
    /// Where the text comes from.
    pub data: DataConfig,
    /// Which tokenizer turns it into ids.
    pub tokenizer: TokenizerConfig,
    /// Encoder sizes.
    pub model: ModelConfig,
    /// What the Masker does to each sequence.
    pub objective: ObjectiveConfig,
    /// Optimisation, schedule and the step-based policies.
    pub train: TrainConfig,
    /// Worker counts and channel bounds.
    pub pipeline: PipelineConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Fine-tuning: the task (absent for pre-training).
    pub task: TaskConfig,
    /// Fine-tuning: where the weights come from.
    pub init: InitConfig,
    /// The live-control endpoint.
    pub control: ControlConfig,
    /// Data-parallel settings (used when `WORLD_SIZE` > 1).
    pub dist: DistConfig,
    /// How a generating task (and `pretune generate`) chooses new tokens.
    pub generate: crate::decode::DecodeSettings,
    /// Pre-training: zero-shot cloze probes scored at every evaluation (`[[probe]]`).
    pub probe: Vec<ProbeConfig>,
    /// Fine-tuning: what the encoder still knows of its pre-training (`[retention]`).
    pub retention: RetentionConfig,
}

/// `[dist]`: data-parallel training over c10d; the ranks come from the torchrun variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistConfig {
    /// Gradient bucket size for the all-reduce, in MiB (PyTorch DDP's default is 25).
    pub bucket_mb: f64,
    /// Seconds a rendezvous or a collective may take before the run fails: how long a hung
    /// rank can hold the others (a rank that dies is noticed at once).
    pub timeout_s: f64,
    /// DDP's `find_unused_parameters`: set it when some trainable parameters get no gradient in
    /// an update (a head the loss does not use). Every update then walks the autograd graph
    /// from the loss, and the buckets stay in reverse parameter order instead of being rebuilt
    /// in the order gradients arrive. Without it such a model fails at the second update with
    /// c10d's list of the parameters that got no gradient.
    pub find_unused_parameters: bool,
    /// Overlap the gradient all-reduce with the backward pass (DDP's buckets, the default).
    /// `false` puts every gradient in one bucket, reduced once the backward pass has produced
    /// the last one: the plain all-reduce after the backward, for comparison (BENCHMARKS.md).
    pub overlap: bool,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig { bucket_mb: 25.0, timeout_s: 120.0, find_unused_parameters: false, overlap: true }
    }
}

/// `[control]`: live control over HTTP (off by default).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// `host:port`; empty turns it off. Anything but loopback needs `token`.
    pub listen: String,
    /// Shared secret: requests must send `Authorization: Bearer TOKEN`.
    pub token: String,
}

/// `[run]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// A name for humans; also the default `run_id` label.
    pub name: String,
    /// Seeds weights, shuffling and masking.
    pub seed: u64,
    /// Checkpoints, `events.jsonl` and the resolved config go here.
    pub out_dir: PathBuf,
    /// `auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads; 0: `OMP_NUM_THREADS` if set, else the cores (shared among
    /// the local ranks of a data-parallel run).
    pub threads: usize,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            name: "pretune".into(),
            seed: 42,
            out_dir: PathBuf::from("runs/pretune"),
            device: "auto".into(),
            threads: 0,
        }
    }
}

/// `[model]`: BERT sizes, with Hugging Face's names where they exist.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The encoder built from scratch: `bert` (post-norm blocks, learned positions) or
    /// `modernbert` (pre-norm, rotary positions, GeGLU, alternating global / sliding-window
    /// attention). A start from `[init]` takes the starting point's.
    pub architecture: String,
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Transformer layers.
    pub num_layers: i64,
    /// Attention heads; must divide `hidden_size`.
    pub num_heads: i64,
    /// Width of the feed-forward layer.
    pub intermediate_size: i64,
    /// Size of the learned position table.
    pub max_position_embeddings: i64,
    /// Segment (token type) vocabulary.
    pub type_vocab_size: i64,
    /// Dropout on hidden states.
    pub hidden_dropout: f64,
    /// Dropout on attention probabilities.
    pub attention_dropout: f64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Standard deviation of the normal initialisation.
    pub initializer_range: f64,
    /// ELECTRA: the embeddings' width when narrower than the blocks (projected to
    /// `hidden_size`, as its small models do); 0: the hidden size.
    pub embedding_size: i64,
    /// ModernBERT: the sliding window of its local layers, both sides together.
    pub local_attention: i64,
    /// ModernBERT: every n-th layer (from the first) attends globally.
    pub global_attn_every_n_layers: i64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            architecture: "bert".into(),
            embedding_size: 0,
            local_attention: 128,
            global_attn_every_n_layers: 3,
            hidden_size: 768,
            num_layers: 12,
            num_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
        }
    }
}

/// `[pipeline]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Parallel Masker workers.
    pub masker_workers: usize,
    /// Bound of every data-plane channel: how far data preparation may run ahead.
    pub prefetch: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig { masker_workers: 2, prefetch: 4 }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of the Prometheus endpoint; empty turns it off.
    pub listen: String,
    /// `run_id` label on every series (default: the run name).
    pub run_id: String,
    /// Keep serving `/metrics` this many seconds after the run, for a last scrape.
    pub linger_s: f64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: "127.0.0.1:9464".into(), run_id: String::new(), linger_s: 0.0 }
    }
}

/// Reads `file`, applies `--set` overrides in order, and deserializes, reporting key paths.
///
/// # Errors
/// [`ConfigError`] for an unreadable file, bad TOML, a bad override, or an unknown, missing or
/// mistyped key.
pub fn load(file: &Path, overrides: &[String]) -> Result<RunConfig, ConfigError> {
    from_table(file, read_table(file, overrides)?)
}

/// Deserializes a (possibly overridden) table, naming the offending key on error.
///
/// # Errors
/// [`ConfigError::Invalid`] listing every unknown, mistyped or bad key.
pub fn from_table(file: &Path, table: toml::Table) -> Result<RunConfig, ConfigError> {
    let (config, problems) = from_table_lenient(table);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid { file: file.to_owned(), problems })
    }
}

/// Deserializes as much as possible: each bad key is reported, dropped (so its default
/// applies) and deserialization retried, so one pass reports every key problem at once.
pub fn from_table_lenient(mut table: toml::Table) -> (RunConfig, Vec<String>) {
    let mut problems = Vec::new();
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, RunConfig>(toml::Value::Table(table.clone())) {
            Ok(c) => return (c, problems),
            Err(e) => {
                let key = e.path().to_string();
                // toml's messages can span lines; keep each problem on one.
                let message = e.into_inner().to_string().trim().replace('\n', " ");
                problems.push(format!("{key}: {message}"));
                if !remove_key(&mut table, &key) {
                    break;
                }
            }
        }
    }
    (RunConfig::default(), problems)
}

/// Removes the key at a dotted path (`train.lr`, `data.train[0]` removes `data.train`).
fn remove_key(table: &mut toml::Table, path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').map(|p| p.split('[').next().unwrap_or(p)).collect();
    let Some((last, parents)) = parts.split_last() else { return false };
    let mut cur = table;
    for p in parents {
        match cur.get_mut(*p).and_then(toml::Value::as_table_mut) {
            Some(t) => cur = t,
            None => return false,
        }
    }
    cur.remove(*last).is_some()
}

/// `[generate]` as a checkpoint's `state.json` recorded it (`saved`, absent: the defaults),
/// with `--set generate.KEY=VALUE` overrides applied; `file` names the source in messages.
///
/// # Errors
/// [`ConfigError`] for an override outside `generate.`, a malformed one, or a bad key.
pub fn decode_settings(file: &Path, saved: Option<&serde_json::Value>, overrides: &[String]) -> Result<crate::decode::DecodeSettings, ConfigError> {
    let mut table = toml::Table::new();
    if let Some(v) = saved.and_then(|v| toml::Value::try_from(v).ok()) {
        table.insert("generate".into(), v);
    }
    for o in overrides {
        if !o.starts_with("generate.") {
            return Err(ConfigError::Invalid { file: file.to_owned(), problems: vec![format!("--set {o}: only generate.KEY=VALUE applies to a trained checkpoint")] });
        }
        apply_override(&mut table, o)?;
    }
    let (config, mut problems) = from_table_lenient(table);
    if problems.is_empty() {
        problems = config.generate.problems();
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid { file: file.to_owned(), problems: attribute_problems(problems, overrides) });
    }
    Ok(config.generate)
}

/// `[task]` as a checkpoint's `state.json` recorded it (`saved`), with `--set task.KEY=VALUE`
/// overrides applied and checked as a config file's keys are; `file` names the source in
/// messages. Which keys a trained checkpoint may change is the caller's to decide.
///
/// # Errors
/// [`ConfigError`] for a malformed override or a value of the wrong type.
pub fn task_settings(file: &Path, saved: Option<&serde_json::Value>, overrides: &[String]) -> Result<serde_json::Value, ConfigError> {
    let mut task = saved.cloned().unwrap_or_else(|| serde_json::json!({}));
    for o in overrides {
        let mut t = toml::Table::new();
        apply_override(&mut t, o)?;
        let Some((key, value)) = t.get("task").and_then(toml::Value::as_table).and_then(|t| t.iter().next()) else {
            return Err(ConfigError::Override(o.clone()));
        };
        // JSON, as `state.json` keeps the task, has no infinities.
        if value.as_float().is_some_and(|f| !f.is_finite()) {
            return Err(ConfigError::Invalid { file: file.to_owned(), problems: vec![format!("task.{key}: {value} is not a finite number (from --set {o})")] });
        }
        let value = serde_json::to_value(value).map_err(|_| ConfigError::Override(o.clone()))?;
        match task.as_object_mut() {
            Some(m) => m.insert(key.clone(), value),
            None => return Err(ConfigError::Override(o.clone())),
        };
    }
    if let Err(e) = serde_path_to_error::deserialize::<_, TaskConfig>(task.clone()) {
        let path = e.path().to_string();
        let problem = format!("task.{path}: {}", e.into_inner());
        return Err(ConfigError::Invalid { file: file.to_owned(), problems: attribute_problems(vec![problem], overrides) });
    }
    Ok(task)
}

/// Fine-tuning defaults that follow practice (BERT paper App. A.3, Hugging Face's Trainer):
/// lr 2e-5, 10 % linear warm-up then linear decay, weight decay 0.01, 3 epochs, batch 32,
/// evaluation every epoch. They fill only keys the file does not set (no default `epochs` when
/// `max_steps` is set).
pub fn apply_finetune_defaults(table: &mut toml::Table, task_defaults: &[(&str, i64)]) {
    let train = table.entry("train").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(train) = train.as_table_mut() else { return };
    let defaults: [(&str, toml::Value); 7] = [
        ("lr", toml::Value::Float(2e-5)),
        ("warmup_ratio", toml::Value::Float(0.1)),
        ("decay", toml::Value::String("linear".into())),
        ("weight_decay", toml::Value::Float(0.01)),
        ("epochs", toml::Value::Integer(3)),
        ("batch_size", toml::Value::Integer(32)),
        ("log_every", toml::Value::Integer(10)),
    ];
    // A file (or `--set`) that sets `max_steps` asks for that many updates: it overrides the
    // epoch count, as `transformers`' `max_steps` overrides `num_train_epochs`.
    if train.contains_key("max_steps") {
        train.insert("epochs".into(), toml::Value::Integer(0));
    }
    // The task's own `[train]` defaults (question answering: `run_qa.py`'s 384-token windows).
    for (k, v) in task_defaults {
        train.entry(*k).or_insert(toml::Value::Integer(*v));
    }
    for (k, v) in defaults {
        train.entry(k).or_insert(v);
    }
}

/// Reads `file` as TOML and applies `--set` overrides in order.
///
/// # Errors
/// [`ConfigError`] for an unreadable file, bad TOML or a bad override.
pub fn read_table(file: &Path, overrides: &[String]) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.to_owned(), source })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Syntax { file: file.to_owned(), source })?;
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RunConfig, ConfigError> {
        from_table(Path::new("x.toml"), toml::from_str(s).unwrap())
    }

    #[test]
    fn unknown_key_names_the_path_and_file() {
        let e = parse("[train]\nmax_step = 3\n").unwrap_err().to_string();
        assert!(e.contains("x.toml"), "{e}");
        assert!(e.contains("train.max_step"), "{e}");
    }

    #[test]
    fn data_files_are_one_string_or_a_list() {
        let c = parse("[data]\ntrain = \"a.txt\"\neval = [\"b.txt\", \"c.txt\"]\n").unwrap();
        assert_eq!((c.data.train, c.data.eval), (vec!["a.txt".to_owned()], vec!["b.txt".to_owned(), "c.txt".to_owned()]));
        let e = parse("[data]\ntrain = 5\n").unwrap_err().to_string();
        assert!(e.contains("data.train") && e.contains("a file name or a list of file names"), "{e}");
    }

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let e = parse("[train]\nmax_step = 3\nlr = \"fast\"\n[model]\nhiden_size = 3\n[metrics]\nlisten = 5\n").unwrap_err().to_string();
        for key in ["train.max_step", "train.lr", "model.hiden_size", "metrics.listen"] {
            assert!(e.contains(key), "{key} missing from: {e}");
        }
    }

    #[test]
    fn wrong_type_names_the_path() {
        let e = parse("[train]\nlr = \"fast\"\n").unwrap_err().to_string();
        assert!(e.contains("train.lr"), "{e}");
    }

    #[test]
    fn empty_config_takes_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.train.batch_size, 32);
        assert_eq!(c.objective.kind, ObjectiveKind::Mlm);
    }

    #[test]
    fn finetune_defaults_fill_unset_keys_and_leave_max_steps_alone() {
        let mut t: toml::Table = toml::from_str("[train]\nlr = 1e-3\n").unwrap();
        apply_finetune_defaults(&mut t, &[("max_seq_len", 384)]);
        let c = from_table(Path::new("x.toml"), t).unwrap();
        assert_eq!((c.train.lr, c.train.epochs, c.train.warmup_ratio, c.train.max_seq_len), (1e-3, 3, 0.1, 384));
        let mut t: toml::Table = toml::from_str("[train]\nmax_steps = 15\nepochs = 8\nmax_seq_len = 64\n").unwrap();
        apply_finetune_defaults(&mut t, &[("max_seq_len", 384)]);
        let c = from_table(Path::new("x.toml"), t).unwrap();
        assert_eq!((c.train.max_steps, c.train.epochs, c.train.max_seq_len), (15, 0, 64), "max_steps set: it overrides the epochs; a set key stays");
    }
}
