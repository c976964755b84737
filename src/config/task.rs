//! What a fine-tuning run starts from and learns (`[task]`, `[init]`, `[retention]`) and the
//! zero-shot probes a pre-training run scores (`[[probe]]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Question answering: SQuAD v2.0, where a question may have no answer in its context
    /// (`run_qa.py`'s `--version_2_with_negative`): such records train on `[CLS]`, are scored
    /// against the empty answer, and a question's answer is empty when its null score beats
    /// its best span by more than `null_score_diff_threshold`. `evaluate` and `predict` take
    /// it too (a v1.1 model scored on v2.0 questions, its `[CLS]` learnt from windows without
    /// the answer).
    pub version_2_with_negative: bool,
    /// Question answering, SQuAD v2.0: answer nothing when the null score (`[CLS]`'s start +
    /// end logit, the lowest over the question's windows) minus the best span's score is above
    /// this (`run_qa.py`'s `--null_score_diff_threshold`, 0). Evaluation reports the best one
    /// for the held-out set (`best_f1_threshold`); `evaluate` and `predict` take it with
    /// `--set task.null_score_diff_threshold=V`.
    pub null_score_diff_threshold: f64,
    /// Label smoothing of the cross-entropy (`transformers`' `label_smoothing_factor`, 0 to
    /// below 1): the target puts `1 - ε` on the label and spreads `ε` evenly over every class,
    /// tag or token. Classification, token classification, multiple choice, cloze and generation (the training
    /// and the held-out loss alike, as the `Trainer`'s).
    pub label_smoothing: f64,
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
            version_2_with_negative: false,
            null_score_diff_threshold: 0.0,
            label_smoothing: 0.0,
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
