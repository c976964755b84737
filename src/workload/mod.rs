//! What a run trains on, behind one seam: a [`Workload`] hands the engine its training
//! source, its held-out source, its collator, its objective and what `check` says of its
//! data. Pre-training ([`pretrain::PretrainPlan`]: a corpus and a corruption) and fine-tuning
//! ([`crate::workload::task_plan::TaskPlan`]: a task and its labelled examples) are the two
//! workloads; the engine never asks which one it runs.

pub mod finetune;
pub mod held_out;
pub mod pretrain;
pub mod probe;
pub mod retention;
pub mod task_plan;

use std::sync::Arc;

use crate::config::RunConfig;
use crate::data::source::BadRecord;
use crate::data::stream::{Cursor, ExampleSource, OpenSource};
use crate::data::tokenize::TextTokenizer;
use crate::workload::task_plan::TaskPlan;
use crate::objective::{Collator, ModelSpec, Objective};

/// `tokenizer.path`, else the starting point's (`[init]`: fine-tuning and continued
/// pre-training keep the vocabulary the embeddings were trained with), with the path it came
/// from. When `[init]` names a starting point that could not be read, its own problem says
/// why and this one says nothing more.
pub(crate) fn load_tokenizer(c: &RunConfig, from_start: Option<&std::path::PathBuf>, problems: &mut Vec<String>) -> Option<(TextTokenizer, std::path::PathBuf)> {
    let path = if c.tokenizer.path.as_os_str().is_empty() { from_start } else { Some(&c.tokenizer.path) };
    let Some(path) = path else {
        let init_named = !c.init.checkpoint.as_os_str().is_empty() || !c.init.hf.as_os_str().is_empty();
        let init_failed = problems.iter().any(|p| p.starts_with("init"));
        match (init_named, init_failed) {
            (false, _) => problems.push("tokenizer.path: no tokenizer given, and no init.checkpoint / init.hf to take one from".into()),
            (true, false) => problems.push("tokenizer.path: not given, and the starting point has no tokenizer (tokenizer.json or vocab.txt beside its weights)".into()),
            (true, true) => {}
        }
        return None;
    };
    let hint = if path.exists() { String::new() } else { crate::data::source::relative_to_cwd(path) };
    let tokenizer = TextTokenizer::load(path, c.tokenizer.lowercase).map_err(|e| problems.push(format!("tokenizer.path: {}{hint}", crate::error_chain(&e)))).ok()?;
    Some((tokenizer, path.clone()))
}

/// The phase of a run: the `phase` label of every metric and event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Pre-training on a corpus.
    Pretrain,
    /// Fine-tuning on a task.
    Finetune,
}

impl Phase {
    /// `pretrain` or `finetune`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pretrain => "pretrain",
            Phase::Finetune => "finetune",
        }
    }
}

/// The `phase` label of the metrics.
impl From<Phase> for metrics::SharedString {
    fn from(p: Phase) -> Self {
        metrics::SharedString::from(p.as_str())
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a workload needs of the rest of the plan.
#[derive(Clone, Copy)]
pub struct RunContext<'a> {
    /// The resolved config.
    pub config: &'a RunConfig,
    /// The tokenizer.
    pub tokenizer: &'a Arc<TextTokenizer>,
    /// Ranks sharing each global batch (1 without data parallelism).
    pub world: usize,
}

/// A run's workload, as the engine sees it.
pub trait Workload: Send + Sync {
    /// Its phase.
    fn phase(&self) -> Phase;
    /// The training examples from `cursor` (`Cursor::default()` for the start).
    fn train_source(&self, cx: &RunContext, cursor: Cursor) -> Box<dyn ExampleSource>;
    /// Opens the held-out examples from their start; `None` when there are none (no
    /// evaluation).
    fn eval_source(&self, cx: &RunContext) -> Option<OpenSource>;
    /// At most this many held-out batches per evaluation.
    fn max_eval_batches(&self, cx: &RunContext) -> usize;
    /// The built-in collator, run in the Masker workers and for the held-out batches.
    fn collator(&self, cx: &RunContext) -> Arc<dyn Collator>;
    /// The built-in objective on a model of `model`'s architecture.
    fn objective(&self, model: &ModelSpec) -> Arc<dyn Objective>;
    /// What `check` says of the data (counts of examples, spans, documents).
    fn describe_data(&self) -> String;
    /// What reading the data changed (`653 of 720 training texts cut to 128 tokens`), each a
    /// line of its own in `check` and the run's start-up log.
    fn notes(&self) -> &[String] {
        &[]
    }
    /// Updates per epoch when the run counts epochs, else 0.
    fn epoch_steps(&self) -> u64 {
        0
    }
    /// The batch or accumulation changed after planning (a resume on another world size):
    /// recounts what depends on them; returns the new `train.max_steps` when the run counts
    /// epochs.
    fn rebatched(&mut self, _config: &crate::config::RunConfig, _world: usize) -> Option<u64> {
        None
    }
    /// Malformed records skipped while resolving (`data.on_error = "skip"`).
    fn skipped(&self) -> &[BadRecord] {
        &[]
    }
    /// The fine-tuning task, when this is one.
    fn task(&self) -> Option<&TaskPlan> {
        None
    }
    /// Zero-shot probes scored at each evaluation (`[[probe]]`, pre-training only).
    fn probes(&self) -> &[probe::Probe] {
        &[]
    }
    /// What fine-tuning erased of pre-training (`[retention]`), when measured.
    fn retention(&self) -> Option<Arc<retention::Retention>> {
        None
    }
    /// The pre-training corpus, when this is one.
    fn corpus(&self) -> Option<&pretrain::PretrainPlan> {
        None
    }
}
