//! Zero-shot probes of a pre-training run (`[[probe]]`): a labelled set scored as cloze at every
//! evaluation, on the model's own output layer (BERT's MLM head, GLM's blank infilling), so a
//! pre-training run shows, while it trains, what it has learnt for a task downstream.
//!
//! A probe adds no weights: its network is the cloze task's (`BertForMaskedLM` or the GLM),
//! built in the Evaluator on variables that *share storage* with the Evaluator's own copy of
//! the model ([`ProbeRunner::new`]), so scoring costs the probe's forward passes on the
//! Evaluator's thread and nothing on the Trainer's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tch::{nn, Device, Tensor};

use crate::batch::HostBatch;
use crate::config::{RunConfig, TaskConfig};
use crate::data::labelled::TaskExample;
use crate::data::tokenize::TextTokenizer;
use crate::finetune::data::BadRecords;
use crate::finetune::task::TaskNet;
use crate::finetune::tasks::{self, Split, Task, TaskContext};
use crate::objective::{EvalMetrics, ModelSpec, ObjectiveModel};

/// A probe, resolved: its task and the examples it scores.
#[derive(Clone)]
pub struct Probe {
    /// `[[probe]].name`.
    pub name: String,
    /// What its metrics are called in an evaluation: `probe.NAME.` (`train.` for a
    /// fine-tuning run's own training examples, `task.eval_train`).
    pub prefix: String,
    /// The cloze task (pattern, verbalizers, the encoder's blank).
    pub task: Arc<dyn Task>,
    /// The encoded examples.
    pub examples: Arc<Vec<TaskExample>>,
}

/// Resolves `[[probe]]` against the pre-training tokenizer and model; problems are pushed
/// with their key paths.
pub fn resolve(c: &RunConfig, tokenizer: &Arc<TextTokenizer>, model: &ModelSpec, problems: &mut Vec<String>) -> Vec<Probe> {
    let mut out = Vec::new();
    for (i, p) in c.probe.iter().enumerate() {
        let at = format!("probe[{i}]");
        if p.name.is_empty() || !p.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') || c.probe[..i].iter().any(|q| q.name == p.name) {
            problems.push(format!("{at}.name: a unique name of letters, digits, '_' or '-' (the metric's label)"));
            continue;
        }
        if p.data.as_os_str().is_empty() {
            problems.push(format!("{at}.data: the labelled file to score"));
            continue;
        }
        let config = TaskConfig { kind: Some("cloze".into()), pattern: p.pattern.clone(), verbalizers: p.verbalizers.clone(), text_field: p.text_field.clone(), label_field: p.label_field.clone(), ..TaskConfig::default() };
        let cx = TaskContext { config: &config, tokenizer: tokenizer.clone(), encoder: model, max_seq_len: c.train.max_seq_len, generate: c.generate.clone() };
        let task = match (tasks::cloze::KIND.build)(&cx) {
            Ok(mut task) => {
                let mut skipped = Vec::new();
                let mut bad = BadRecords { policy: c.data.on_error, skipped: &mut skipped };
                match task.read(std::slice::from_ref(&p.data), Split::Eval, p.max_examples, &mut bad) {
                    Ok(e) if e.examples.is_empty() => Err(vec![format!("data: {} has no records", p.data.display())]),
                    Ok(e) => {
                        for s in &skipped {
                            tracing::warn!(probe = %p.name, file = %s.path.display(), line = s.line, "probe record skipped: {}", s.detail);
                        }
                        Ok((task, e.examples))
                    }
                    Err(e) => Err(e.problems()),
                }
            }
            Err(e) => Err(e.problems()),
        };
        match task {
            Ok((task, examples)) => out.push(Probe { prefix: format!("probe.{}.", p.name), name: p.name.clone(), task: Arc::from(task), examples: Arc::new(examples) }),
            // The task's problems name `task.pattern` / `task.verbalizers`: here they are the probe's.
            Err(ps) => problems.extend(ps.into_iter().map(|m| format!("{at}.{}", m.strip_prefix("task.").unwrap_or(&m)))),
        }
    }
    out
}

/// Why a probe cannot run on a model.
#[derive(Debug, thiserror::Error)]
#[error("probe {name}: the pre-training model has no {missing:?} for the cloze network (a probe needs the model's output layer: an MLM objective, or GLM)")]
pub struct ProbeError {
    /// The probe.
    pub name: String,
    /// Variables of the cloze network the model lacks (or has in another shape).
    pub missing: Vec<String>,
}

/// A probe on the Evaluator: its network on the Evaluator's weights and its batches.
pub struct ProbeRunner {
    name: String,
    prefix: String,
    net: TaskNet,
    _vs: nn::VarStore,
    batches: Vec<HostBatch>,
}

impl ProbeRunner {
    /// Builds the probe's network on `device` with every variable sharing the storage of the
    /// same-named variable of `model` (the Evaluator's), and collates its batches.
    ///
    /// # Errors
    /// [`ProbeError`] when the model lacks a variable of the network.
    pub fn new(probe: &Probe, device: Device, batch_size: usize, model: &HashMap<String, Tensor>) -> Result<Self, ProbeError> {
        let vs = nn::VarStore::new(device);
        let net = TaskNet::new(&vs.root(), probe.task.clone());
        let mut missing = Vec::new();
        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                match model.get(&name) {
                    Some(m) if m.size() == v.size() => v.set_data(m),
                    _ => missing.push(name),
                }
            }
        });
        if !missing.is_empty() {
            missing.sort();
            return Err(ProbeError { name: probe.name.clone(), missing });
        }
        let refs: Vec<&TaskExample> = probe.examples.iter().collect();
        let batches = refs.chunks(batch_size.max(1)).map(|chunk| probe.task.collate(chunk)).collect();
        Ok(ProbeRunner { name: probe.name.clone(), prefix: probe.prefix.clone(), net, _vs: vs, batches })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What its metrics are called: `probe.NAME.` or `train.`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether it is a `[[probe]]` (with its own Prometheus series).
    pub fn is_probe(&self) -> bool {
        self.prefix.starts_with("probe.")
    }

    /// Scores the probe on the current weights: the cloze metrics (`accuracy`, `macro_f1`,
    /// `loss`) and `seconds`, what it took.
    pub fn score(&self, device: Device) -> EvalMetrics {
        let t0 = Instant::now();
        let mut m = self.net.evaluate(&self.batches, device);
        m.values.insert("seconds".into(), t0.elapsed().as_secs_f64());
        m
    }
}
