//! What fine-tuning erased of pre-training (`[retention]`): at every evaluation of a
//! fine-tuning run, the starting checkpoint's own pre-training loss on held-out pre-training
//! text, computed with the checkpoint's output layer exactly as it was saved (BERT's MLM head
//! and pooler / pair head; GLM's tied output layer is its embeddings) on top of the encoder as
//! fine-tuning has moved it. `encoder_drift` says how far the weights went; this says what the
//! distance cost the model's knowledge of its pre-training text.
//!
//! The pre-training side is the checkpoint's own: its config (masking rate, units, sequence
//! length, objective) resolved as a pre-training workload over the held-out files, so the masks
//! are drawn by the evaluation stream's seed once and every evaluation scores the same tokens;
//! `retention.loss_increase` is the loss now minus the loss of the starting weights.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tch::{nn, Device, Tensor};

use super::held_out::HeldOut;
use super::pretrain::PretrainPlan;
use super::{RunContext, Workload};
use crate::batch::HostBatch;
use crate::config::RunConfig;
use crate::data::stream::StreamError;
use crate::data::tokenize::TextTokenizer;
use crate::init::InitSource;
use crate::objective::{EvalMetrics, ModelSpec, ObjectiveModel};

/// Sequences per held-out batch (the loss is a mean per scored token: the batching does not
/// change it).
const BATCH: usize = 32;

/// `[retention]` resolved: the starting checkpoint's pre-training workload over the held-out
/// files.
pub struct Retention {
    /// The checkpoint's pre-training config, its data the held-out files.
    config: RunConfig,
    /// Its corpus and corruption.
    plan: PretrainPlan,
    /// Its tokenizer.
    tokenizer: Arc<TextTokenizer>,
    /// Its model.
    model: ModelSpec,
    /// The checkpoint: its output layer is read from here and never changes.
    start: InitSource,
}

/// Resolves `[retention]` for a fine-tuning run starting from `init`; `None` when it is off
/// or when `problems` got one (each with its key path).
pub fn resolve(c: &RunConfig, init: &InitSource, problems: &mut Vec<String>) -> Option<Arc<Retention>> {
    let r = &c.retention;
    if r.data.is_empty() {
        return None;
    }
    if r.max_sequences == 0 {
        problems.push("retention.max_sequences: must be positive".into());
        return None;
    }
    let InitSource::Checkpoint(dir) = init else {
        if !c.init.checkpoint.as_os_str().is_empty() && !c.init.reinitialize {
            // A checkpoint that did not resolve: `init.checkpoint` says why.
            return None;
        }
        problems.push("retention: needs init.checkpoint, a pre-training checkpoint of ours (its output layer and masking are what it measures through), without init.reinitialize".into());
        return None;
    };
    let state = match crate::checkpoint::CheckpointStore::verify(dir) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("retention: {}", crate::error_chain(&e)));
            return None;
        }
    };
    if state.model.get("architecture").and_then(|a| a.as_str()) == Some("BertForTask") {
        problems.push(format!("retention: {} is a fine-tuned checkpoint; retention is measured from a pre-training checkpoint (its MLM or GLM output layer)", dir.display()));
        return None;
    }
    let mut config: RunConfig = match serde_json::from_value(state.config.clone()) {
        Ok(c) => c,
        Err(e) => {
            problems.push(format!("retention: cannot read the pre-training config recorded in {}: {e}", dir.join("state.json").display()));
            return None;
        }
    };
    config.data.train.clone_from(&r.data);
    config.data.eval.clone_from(&r.data);
    config.data.eval_holdout_docs = 0;
    config.data.format = crate::config::DataFormat::Auto;
    config.data.eval_batches = r.max_sequences.div_ceil(BATCH);
    config.train.batch_size = BATCH;
    config.init = Default::default();
    config.probe.clear();
    config.retention = Default::default();
    let tokenizer_file = dir.join("tokenizer.json");
    if tokenizer_file.exists() {
        config.tokenizer.path = tokenizer_file;
    }
    let mut found = Vec::new();
    let resolved = super::pretrain::resolve(&config, &toml::Table::new(), &mut found);
    // The held-out files are the only keys the user gave: problems with `data.*` are theirs.
    // (both data.train and data.eval name them: each problem once).
    for p in found {
        let p = match p.strip_prefix("data.train").or_else(|| p.strip_prefix("data.eval")) {
            Some(rest) => format!("retention.data{rest}"),
            None => format!("retention: the checkpoint's pre-training config: {p}"),
        };
        if !problems.contains(&p) {
            problems.push(p);
        }
    }
    let resolved = resolved?;
    if resolved.plan.eval_spans.is_empty() {
        problems.push(format!("retention.data: {:?} holds no text", r.data));
        return None;
    }
    Some(Arc::new(Retention { config, plan: resolved.plan, tokenizer: resolved.tokenizer, model: resolved.model, start: init.clone() }))
}

impl Retention {
    /// The held-out files.
    pub fn data(&self) -> &[String] {
        &self.config.data.eval
    }
}

/// Why retention cannot be measured on a model.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The checkpoint's weights could not be read.
    #[error("retention: the starting checkpoint")]
    Init(#[from] crate::init::InitError),
    /// The fine-tuned model lacks an encoder variable of the pre-training network.
    #[error("retention: the fine-tuned model has no {0:?} to put under the pre-training output layer")]
    Missing(Vec<String>),
    /// The checkpoint lacks a variable of its own pre-training network.
    #[error("retention: the checkpoint has no {0:?}")]
    Incomplete(Vec<String>),
    /// The held-out text could not be read.
    #[error("retention.data")]
    Stream(#[from] StreamError),
}

/// Retention on the Evaluator: the checkpoint's pre-training network, its encoder sharing
/// storage with the Evaluator's model, its output layer the checkpoint's; the held-out batches.
pub struct RetentionRunner {
    model: Box<dyn ObjectiveModel>,
    _vs: nn::VarStore,
    batches: Vec<HostBatch>,
    /// The pre-training loss of the starting weights.
    start_loss: f64,
    /// The loss's name (`mlm_loss`, `glm_loss`).
    loss: String,
}

impl RetentionRunner {
    /// Builds the network on `device`: every variable read from the checkpoint, then every
    /// encoder variable pointed at the storage of `model`'s (the Evaluator's) same-named one.
    /// Call it while `model` holds the starting weights: the loss it measures then is
    /// `start_loss`.
    ///
    /// # Errors
    /// [`RetentionError`].
    pub fn new(r: &Retention, device: Device, model: &HashMap<String, Tensor>) -> Result<Self, RetentionError> {
        let vs = nn::VarStore::new(device);
        let net = r.plan.objective(&r.model).build(&vs.root());
        let report = crate::init::load_start(&vs, &r.start)?;
        if !report.missing.is_empty() {
            return Err(RetentionError::Incomplete(report.missing));
        }
        let mut missing = Vec::new();
        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                if !crate::init::is_encoder_variable(&name) {
                    continue;
                }
                match model.get(&name) {
                    Some(m) if m.size() == v.size() => v.set_data(m),
                    _ => missing.push(name),
                }
            }
        });
        if !missing.is_empty() {
            missing.sort();
            return Err(RetentionError::Missing(missing));
        }
        let cx = RunContext { config: &r.config, tokenizer: &r.tokenizer, world: 1 };
        let source = r.plan.eval_source(&cx).ok_or_else(|| RetentionError::Stream(StreamError::Empty("retention.data".into())))?;
        let batches = HeldOut { source, cpu: r.plan.collator(&cx), batch_size: BATCH, max_batches: r.config.data.eval_batches }.build()?;
        let loss = format!("{}_loss", r.plan.names.lm);
        let start_loss = net.evaluate(&batches, device).values.get(&loss).copied().unwrap_or(f64::NAN);
        Ok(RetentionRunner { model: net, _vs: vs, batches, start_loss, loss })
    }

    /// The pre-training metrics on the current weights, each `retention.NAME`, with
    /// `retention.loss_increase` (now minus at the start) and `retention.seconds`.
    pub fn score(&self, device: Device) -> Vec<(String, f64)> {
        let t0 = Instant::now();
        let m: EvalMetrics = self.model.evaluate(&self.batches, device);
        let mut out: Vec<(String, f64)> = m.pairs().into_iter().map(|(k, v)| (format!("retention.{k}"), v)).collect();
        if let Some(loss) = m.values.get(&self.loss) {
            out.push(("retention.loss_increase".into(), loss - self.start_loss));
        }
        out.push(("retention.seconds".into(), t0.elapsed().as_secs_f64()));
        out
    }
}
