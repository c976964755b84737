//! Run configuration: TOML structs that mirror the component tree and `--set` overrides.
//! Validation into a plan lives in [`crate::plan`].
//!
//! Every struct denies unknown fields, so a typo is an error that names the key path and the
//! file (`train.max_step: unknown field ...` in `configs/x.toml`), never a silently ignored knob.

mod overrides;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use overrides::{apply_override, set_value};

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

/// `[retention]`: at every evaluation of a fine-tuning run, the starting checkpoint's own
/// pre-training loss (MLM, or GLM's blank infilling) on held-out pre-training text, through
/// the checkpoint's *unchanged* output layer on the fine-tuned encoder: what fine-tuning
/// erased of what pre-training taught (`retention.*` in `events.jsonl`). The masks are the
/// checkpoint's own objective settings, drawn once, so every evaluation scores the same tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Held-out text files (globs) in the pre-training's format (empty: off).
    pub data: Vec<String>,
    /// Scores the first N packed sequences of it (rounded up to whole batches of 32).
    pub max_sequences: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { data: Vec::new(), max_sequences: 256 }
    }
}

/// `[[probe]]`: a labelled set scored zero-shot at each evaluation of a pre-training run, as
/// cloze on the model's own output layer (BERT's MLM head, GLM's blank infilling: no new
/// weights), so the run shows what it is learning for a downstream task while it trains.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Its name: the `probe` label of `pretune_probe_accuracy`, and `probe.NAME.accuracy` in
    /// `events.jsonl`.
    pub name: String,
    /// Labelled JSONL / CSV / TSV (the classification formats).
    pub data: PathBuf,
    /// The pattern, with `{text}` and one `[MASK]`.
    pub pattern: String,
    /// Verbalizer text per label.
    pub verbalizers: std::collections::BTreeMap<String, String>,
    /// Field of the text.
    pub text_field: String,
    /// Field of the label.
    pub label_field: String,
    /// Scores the first N records (0: all).
    pub max_examples: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { name: String::new(), data: PathBuf::new(), pattern: String::new(), verbalizers: Default::default(), text_field: "text".into(), label_field: "label".into(), max_examples: 256 }
    }
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

/// Arithmetic of the forward and backward passes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 where the hardware has bf16 units (CUDA 8.0+, a CPU with AMX-BF16 or
    /// AVX512-BF16), fp32 elsewhere: `train::precision::resolve` decides and logs why.
    #[default]
    Auto,
    /// Everything in fp32.
    Fp32,
    /// Autocast to bfloat16 (matmuls and attention in bf16; weights, gradients, optimizer
    /// moments and loss reductions in fp32), on any device: emulated, and slower than fp32,
    /// where the hardware has no bf16 units.
    Bf16,
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

/// `[task]`: set `kind` to fine-tune instead of pre-train.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// A registered task (`finetune::tasks`): `sequence_classification`, `regression`,
    /// `token_classification`, `cloze`, `question_answering`, or a user's own; absent =
    /// pre-training.
    pub kind: Option<String>,
    /// Label names in id order (default: the sorted labels of the training data).
    pub labels: Vec<String>,
    /// JSONL / CSV field of the text.
    pub text_field: String,
    /// JSONL / CSV field of the second text (pair tasks).
    pub text_pair_field: String,
    /// JSONL / CSV field of the label.
    pub label_field: String,
    /// Metric for early stopping and the best checkpoint: `accuracy`, `macro_f1`, `f1`
    /// (entity-level; SQuAD token F1 for question answering), `exact_match`, `mse`, `pearson`,
    /// `spearman` or `loss`.
    pub metric: String,
    /// Cloze: the pattern, with `{text}` and one `[MASK]` blank.
    pub pattern: String,
    /// Cloze: verbalizer text per label.
    pub verbalizers: std::collections::BTreeMap<String, String>,
    /// Question answering: context tokens shared by consecutive windows of a long context.
    pub doc_stride: usize,
    /// Question answering: start and end candidates per window in post-processing.
    pub n_best_size: usize,
    /// Question answering: the longest answer, in tokens.
    pub max_answer_length: usize,
    /// Use only the first N training records (0: all), as `run_qa.py`'s `--max_train_samples`:
    /// a CPU-sized run on a large set.
    pub max_train_examples: usize,
    /// Keep N training examples of each class (0: all), drawn with `run.seed`: a few-shot
    /// run (classification and cloze). A class with fewer keeps all of its own.
    pub train_per_class: usize,
    /// Evaluate on only the first N held-out records (0: all).
    pub max_eval_examples: usize,
    /// Also score the first N training examples at each evaluation (0: none), reported as
    /// `train.accuracy`, `train.loss`, ...: the train–dev gap of over-fitting, in every
    /// evaluation line and in `events.jsonl`.
    pub eval_train: usize,
    /// Generation: JSONL field of the source (Part A).
    pub source_field: String,
    /// Generation: JSONL field of the target (a string, or a list of references whose first
    /// one trains).
    pub target_field: String,
    /// Generation: the longest target in tokens, its `[eop]` included (longer ones are cut);
    /// the source gets what is left of `train.max_seq_len`.
    pub max_target_len: usize,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            kind: None,
            labels: Vec::new(),
            text_field: "text".into(),
            text_pair_field: "text_pair".into(),
            label_field: "label".into(),
            metric: String::new(),
            pattern: String::new(),
            verbalizers: Default::default(),
            doc_stride: 128,
            n_best_size: 20,
            max_answer_length: 30,
            max_train_examples: 0,
            train_per_class: 0,
            max_eval_examples: 0,
            eval_train: 0,
            source_field: "source".into(),
            target_field: "target".into(),
            max_target_len: 32,
        }
    }
}

/// `[init]`: the starting weights of fine-tuning (neither: a fresh model from `[model]`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct InitConfig {
    /// One of our checkpoints: a checkpoint folder, or a run's `checkpoints/` folder (its best,
    /// else its latest).
    pub checkpoint: PathBuf,
    /// A Hugging Face BERT folder: `config.json`, `model.safetensors`, `tokenizer.json` or
    /// `vocab.txt`.
    pub hf: PathBuf,
    /// Take the starting point's architecture, sizes and tokenizer but not its weights (fresh
    /// ones, from `run.seed`): the from-scratch control of a "what pre-training buys" table.
    pub reinitialize: bool,
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
    /// libtorch intra-op threads; 0 picks the number of cores.
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

/// What to do when an update's loss or gradient norm is not finite.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NonFinitePolicy {
    /// Drop the update (count it in `pretune_nonfinite_steps_total`); abort after
    /// `train.max_nonfinite_in_a_row` in a row.
    Skip,
    /// Stop the run at the first one.
    Abort,
}

/// `[data]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Training files or glob patterns.
    pub train: Vec<String>,
    /// Held-out files or globs (optional).
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

/// Pre-training objective.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObjectiveKind {
    /// BERT masked language modelling (optionally with NSP or SOP).
    Mlm,
    /// GLM autoregressive blank infilling.
    Glm,
    /// ELECTRA's replaced-token detection: a small generator fills MLM's masks, the encoder
    /// tells every token replaced or original (`[objective.electra]`).
    Electra,
}

/// What MLM chooses to mask.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MaskUnit {
    /// Single tokens.
    Token,
    /// Whole words (all sub-tokens of a chosen word), from the tokenizer's word ids.
    Word,
    /// SpanBERT spans of whole words.
    Span,
}

/// The sentence-pair task trained beside MLM.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SentencePair {
    /// Single segments, no pair task.
    None,
    /// Next sentence prediction.
    Nsp,
    /// Sentence-order prediction.
    Sop,
}

/// `[objective.glm]`: GLM blank infilling (defaults from THUDM/GLM `arguments.py`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GlmObjectiveConfig {
    /// Chance a batch uses token-level spans.
    pub bert_prob: f64,
    /// Chance a batch uses sentence-level spans (the rest is document level).
    pub gap_sentence_prob: f64,
    /// Share of tokens covered by token-level spans (a floor).
    pub mask_ratio: f64,
    /// Poisson lambda of token-level span lengths.
    pub avg_block_length: f64,
    /// Span lengths are drawn from 1..max_block_length-1.
    pub max_block_length: usize,
    /// Share of tokens covered by sentence-level spans.
    pub gap_sentence_ratio: f64,
    /// Document level: the blank is at least this share of the shortest sample.
    pub gpt_min_ratio: f64,
    /// Document level: chance of the prefix-LM layout instead of one blank at a random place.
    pub gpt_infill_prob: f64,
    /// Part B spans in random order (the paper), or in text order.
    pub shuffle_blocks: bool,
}

impl Default for GlmObjectiveConfig {
    fn default() -> Self {
        GlmObjectiveConfig {
            bert_prob: 0.5,
            gap_sentence_prob: 0.0,
            mask_ratio: 0.15,
            avg_block_length: 3.0,
            max_block_length: 40,
            gap_sentence_ratio: 0.15,
            gpt_min_ratio: 0.5,
            gpt_infill_prob: 0.5,
            shuffle_blocks: true,
        }
    }
}

/// How MLM positions are chosen.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Google's script: exactly `min(max_predictions, max(1, round(len * mask_prob)))` positions.
    Exact,
    /// Hugging Face's collator: each position independently with probability `mask_prob`.
    Bernoulli,
}

/// `[objective]`
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    /// Which objective.
    pub kind: ObjectiveKind,
    /// Share of (non-special) tokens scored.
    pub mask_prob: f64,
    /// Of the scored tokens, the share replaced by `[MASK]`.
    pub mask_token_prob: f64,
    /// Of the scored tokens, the share replaced by a random token (the rest stay unchanged).
    pub random_token_prob: f64,
    /// `exact` or `bernoulli`.
    pub selection: Selection,
    /// Cap on scored positions per sequence for `exact` (0: no cap).
    pub max_predictions: usize,
    /// `token`, `word` (whole-word masking) or `span` (SpanBERT).
    pub unit: MaskUnit,
    /// SpanBERT geometric parameter.
    pub span_p: f64,
    /// SpanBERT longest span, in words.
    pub span_max: usize,
    /// `none`, `nsp` or `sop`.
    pub sentence_pair: SentencePair,
    /// Pair construction: chance of a shorter target length.
    pub short_seq_prob: f64,
    /// GLM settings (with `kind = "glm"`).
    pub glm: GlmObjectiveConfig,
    /// ELECTRA settings (with `kind = "electra"`).
    pub electra: ElectraObjectiveConfig,
}

/// `[objective.electra]`: replaced-token detection (defaults from the paper and
/// google-research/electra's `configure_pretraining.py`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ElectraObjectiveConfig {
    /// The generator's hidden size; 0 takes `generator_fraction` of the discriminator's.
    pub generator_hidden_size: i64,
    /// The generator's width as a fraction of the discriminator's (the paper: 1/4 to 1/2).
    pub generator_fraction: f64,
    /// λ: the weight of the discriminator's loss against the generator's.
    pub rtd_weight: f64,
    /// The generator's sampling temperature.
    pub temperature: f64,
}

impl Default for ElectraObjectiveConfig {
    fn default() -> Self {
        ElectraObjectiveConfig { generator_hidden_size: 0, generator_fraction: 0.25, rtd_weight: 50.0, temperature: 1.0 }
    }
}

impl ElectraObjectiveConfig {
    /// The generator's width for a discriminator `hidden` wide, a whole number of heads of
    /// `head_dim`.
    pub fn generator_width(&self, hidden: i64, head_dim: i64) -> i64 {
        let want = if self.generator_hidden_size > 0 { self.generator_hidden_size } else { (hidden as f64 * self.generator_fraction).round() as i64 };
        let head_dim = head_dim.max(1);
        (want.saturating_add(head_dim / 2) / head_dim).max(1).saturating_mul(head_dim)
    }
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            kind: ObjectiveKind::Mlm,
            mask_prob: 0.15,
            mask_token_prob: 0.8,
            random_token_prob: 0.1,
            selection: Selection::Exact,
            max_predictions: 0,
            unit: MaskUnit::Token,
            span_p: 0.2,
            span_max: 10,
            sentence_pair: SentencePair::None,
            short_seq_prob: 0.1,
            glm: GlmObjectiveConfig::default(),
            electra: ElectraObjectiveConfig::default(),
        }
    }
}

/// Shape of the learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Linear to `min_lr_ratio * lr` at `max_steps`.
    Linear,
    /// Half cosine to `min_lr_ratio * lr` at `max_steps`.
    Cosine,
    /// No decay.
    Constant,
}

/// `[train]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Longest sequence, special tokens included.
    pub max_seq_len: usize,
    /// Optimizer updates in the run.
    pub max_steps: u64,
    /// Micro-batches per optimizer update.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (takes precedence over `warmup_ratio` when non-zero).
    pub warmup_steps: u64,
    /// Warm-up as a share of `max_steps`.
    pub warmup_ratio: f64,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Final learning rate as a share of `lr`.
    pub min_lr_ratio: f64,
    /// AdamW decoupled weight decay (never on biases and LayerNorm).
    pub weight_decay: f64,
    /// AdamW betas.
    pub betas: [f64; 2],
    /// AdamW epsilon.
    pub eps: f64,
    /// Clip the global gradient norm to this (0: off).
    pub clip_grad_norm: f64,
    /// Read the loss off the device and log every N steps (the only sync points).
    pub log_every: u64,
    /// Evaluate every N steps (0: only at the end).
    pub eval_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Keep the last K checkpoints (and the best one by held-out loss).
    pub keep_last: usize,
    /// `skip` or `abort` on a non-finite loss or gradient norm.
    pub nonfinite: NonFinitePolicy,
    /// Under `skip`, abort after this many non-finite updates in a row.
    pub max_nonfinite_in_a_row: u32,
    /// Fine-tuning: passes over the training set (sets `max_steps` when non-zero).
    pub epochs: u64,
    /// Fine-tuning: stop after this many evaluations without improvement (0: never).
    pub patience: u32,
    /// Fine-tuning: learning rate of layer `l` (of L, head = L + 1) is `lr * decay^(L + 1 - l)`.
    pub layerwise_lr_decay: f64,
    /// Fine-tuning: keep the embeddings fixed.
    pub freeze_embeddings: bool,
    /// Fine-tuning: keep the first K encoder layers fixed.
    pub freeze_layers: i64,
    /// `auto` (bf16 where the hardware computes it natively), `fp32`, or `bf16` autocast.
    pub precision: Precision,
    /// AdamW through libtorch's fused kernel (`torch.optim.AdamW(fused=True)`); `false`: the
    /// tensor-by-tensor reference (same arithmetic, eight passes over the moments).
    pub fused_adamw: bool,
    /// Profile this many updates with libtorch's profiler (0: off) into `OUT_DIR/profile/`
    /// (`trace.json` for chrome://tracing or Perfetto, `breakdown.json`: self time per op group).
    pub profile_steps: u64,
    /// The first profiled update (after warm-up: allocations and oneDNN's kernel choices
    /// happen in the first steps).
    pub profile_start: u64,
    /// Fine-tuning: batch examples of similar length (shuffled, then sorted by length within
    /// windows of 50 batches, batches shuffled), like `transformers`' `group_by_length`: less
    /// padding, same examples per epoch.
    pub group_by_length: bool,
    /// The hardware's peak in TFLOP/s for MFU (0: a known CUDA device's data sheet, or a GEMM
    /// probe on the CPU; see `pretune check`).
    pub peak_tflops: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 32,
            max_seq_len: 128,
            max_steps: 1000,
            grad_accum: 1,
            lr: 1e-4,
            warmup_steps: 0,
            warmup_ratio: 0.01,
            decay: Decay::Linear,
            min_lr_ratio: 0.0,
            weight_decay: 0.01,
            betas: [0.9, 0.999],
            eps: 1e-6,
            clip_grad_norm: 1.0,
            log_every: 10,
            eval_every: 0,
            checkpoint_every: 0,
            keep_last: 3,
            nonfinite: NonFinitePolicy::Skip,
            max_nonfinite_in_a_row: 5,
            epochs: 0,
            patience: 0,
            layerwise_lr_decay: 1.0,
            freeze_embeddings: false,
            freeze_layers: 0,
            precision: Precision::Auto,
            fused_adamw: true,
            profile_steps: 0,
            peak_tflops: 0.0,
            profile_start: 3,
            group_by_length: false,
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
    let config = from_table(file, table)?;
    let problems = config.generate.problems();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid { file: file.to_owned(), problems });
    }
    Ok(config.generate)
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
