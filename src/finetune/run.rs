//! The fine-tuning loop: a Loader thread shuffles and collates labelled batches into a bounded
//! channel (so collation overlaps compute), and the Trainer steps, evaluates on the held-out
//! set, stops early, and keeps the best checkpoint. Everything is reported with
//! `phase="finetune"`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use metrics::{counter, gauge, histogram};
use serde_json::json;
use tch::{nn, Device, Kind, Reduction, Tensor};

use super::cloze::{ClozeParts, ClozeSpec};
use super::data::{collate, LabelSet, TaskBatch, TaskExample};
use super::init::{load_into, InitSource, LoadReport};
use super::metrics::{Confusion, EntityCounts};
use super::plan::FinetunePlan;
use super::policy::{frozen, lr_scale, Direction, EarlyStopping};
use crate::actors::control::StopFlag;
use crate::actors::progress::Progress;
use crate::actors::events::StepReport;
use crate::checkpoint::state::{versions, Best, CheckpointState, FORMAT_VERSION};
use crate::checkpoint::CheckpointStore;
use crate::masking::mlm::IGNORE;
use crate::metrics::names;
use crate::model::bert::BertConfig;
use crate::model::glm::{Glm, GlmConfig};
use crate::model::heads::{BertForTask, HeadKind};
use crate::rng::{Rng, Stream};
use crate::train::adamw::{AdamW, AdamWConfig};
use crate::train::schedule::LrSchedule;
use crate::train::step::cpu_copies;

/// Phase label of fine-tuning.
pub const FINETUNE: &str = "finetune";

/// What a task checkpoint's `state.json` says about its model (`model` field).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    /// Always `"BertForTask"`.
    pub architecture: String,
    /// Encoder sizes (Hugging Face names).
    pub config: BertConfig,
    /// The head.
    pub kind: HeadKind,
    /// Class names by id.
    pub labels: Vec<String>,
    /// The tokenizer used.
    pub tokenizer: PathBuf,
    /// Longest input.
    pub max_seq_len: usize,
    /// Cloze: the GLM's sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glm: Option<GlmConfig>,
}

/// Errors of a fine-tuning run.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// The output folder.
    #[error("cannot prepare the output folder {path}")]
    OutDir {
        /// Folder.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The starting weights.
    #[error("cannot load the starting weights: {0}")]
    Init(String),
    /// Metrics endpoint.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// Checkpoint writing.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Non-finite updates.
    #[error("non-finite loss or gradient norm at step {0}, {1} in a row")]
    NonFinite(u64, u32),
}

/// What a fine-tuning run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FinetuneSummary {
    /// Updates done.
    pub steps: u64,
    /// Epochs (fractional).
    pub epochs: f64,
    /// Tokens trained on.
    pub tokens: u64,
    /// Seconds of training.
    pub elapsed_s: f64,
    /// Tokens per second.
    pub tokens_per_second: f64,
    /// Share of time the Trainer waited for a batch.
    pub data_wait_share: f64,
    /// Last logged training loss.
    pub final_loss: f64,
    /// Monitored metric name.
    pub metric: String,
    /// Best value and its step.
    pub best: Option<(u64, f64)>,
    /// Metrics of the last evaluation.
    pub last_eval: Option<BTreeMap<String, f64>>,
    /// Stopped early by patience.
    pub stopped_early: bool,
    /// Best checkpoint folder (what `export` and `predict` use by default).
    pub best_checkpoint: Option<PathBuf>,
    /// What the weight load did.
    pub init: LoadReport,
    /// Output folder.
    pub out_dir: PathBuf,
}

/// A device batch of a task.
struct DevBatch {
    input_ids: Tensor,
    token_type_ids: Tensor,
    lengths: Tensor,
    labels: Tensor,
    targets: Tensor,
}

fn to_device(b: &TaskBatch, device: Device) -> DevBatch {
    let shape = [b.batch_size as i64, b.seq_len as i64];
    DevBatch {
        input_ids: Tensor::from_slice(&b.input_ids).view(shape).to_device(device),
        token_type_ids: Tensor::from_slice(&b.token_type_ids).view(shape).to_device(device),
        lengths: Tensor::from_slice(&b.lengths).to_device(device),
        labels: Tensor::from_slice(&b.labels).to_device(device),
        targets: Tensor::from_slice(&b.targets).to_device(device),
    }
}

/// Collation for a task; cheap to clone into the Loader thread.
#[derive(Debug, Clone)]
pub struct Batcher {
    kind: HeadKind,
    cloze: Option<ClozeSpec>,
    pad: u32,
}

/// A collated batch, with the cloze rows' extra fields.
pub struct Batch {
    /// Plain fields.
    pub hb: TaskBatch,
    /// Cloze: positions, Part A lengths, answer targets.
    pub cloze: Option<ClozeParts>,
}

impl Batcher {
    /// A batcher for `kind` (`cloze` needed for [`HeadKind::Cloze`]).
    pub fn new(kind: HeadKind, cloze: Option<ClozeSpec>, pad: u32) -> Self {
        Batcher { kind, cloze, pad }
    }

    /// Pads and stacks examples.
    pub fn batch(&self, refs: &[&TaskExample]) -> Batch {
        match &self.cloze {
            Some(spec) if self.kind == HeadKind::Cloze => {
                let (hb, parts) = super::cloze::collate(refs, spec, self.pad);
                Batch { hb, cloze: Some(parts) }
            }
            _ => Batch { hb: collate(refs, self.pad, self.kind == HeadKind::TokenClassification), cloze: None },
        }
    }
}

/// The network of a task: a BERT with a head, or the pre-trained GLM scoring cloze answers.
pub enum TaskNet {
    /// BERT + head.
    Bert(BertForTask),
    /// GLM, its output layer reused unchanged.
    Cloze(Glm),
}

impl TaskNet {
    /// Logits (cloze: candidate scores `[examples, candidates]`) and the loss sum.
    pub fn forward(&self, kind: HeadKind, b: &Batch, device: Device, train: bool) -> (Tensor, Tensor) {
        match (self, &b.cloze) {
            (TaskNet::Cloze(glm), Some(parts)) => {
                let scores = super::cloze::scores(glm, &b.hb, parts, device, train);
                let labels = Tensor::from_slice(&b.hb.labels).to_device(device);
                let loss = scores.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Sum, IGNORE, 0.0);
                (scores, loss)
            }
            (TaskNet::Bert(m), _) => {
                let d = to_device(&b.hb, device);
                let logits = m.forward(&d.input_ids, &d.token_type_ids, &d.lengths, train);
                let loss = loss_sum(kind, &logits, &d);
                (logits, loss)
            }
            (TaskNet::Cloze(_), None) => unreachable!("a cloze net gets cloze batches"),
        }
    }
}

/// Sum of the per-target losses (cross-entropy, or squared error for regression).
fn loss_sum(kind: HeadKind, logits: &Tensor, b: &DevBatch) -> Tensor {
    match kind {
        HeadKind::SequenceClassification | HeadKind::Cloze => logits.cross_entropy_loss::<Tensor>(&b.labels, None, Reduction::Sum, IGNORE, 0.0),
        HeadKind::TokenClassification => {
            let n = logits.size()[2];
            logits.view([-1, n]).cross_entropy_loss::<Tensor>(&b.labels, None, Reduction::Sum, IGNORE, 0.0)
        }
        HeadKind::Regression => logits.view([-1]).mse_loss(&b.targets, Reduction::Sum),
    }
}

/// Held-out evaluation: streaming counts, never all logits at once.
pub fn evaluate(net: &TaskNet, kind: HeadKind, batcher: &Batcher, examples: &[TaskExample], labels: &LabelSet, batch_size: usize, device: Device) -> BTreeMap<String, f64> {
    let _guard = tch::no_grad_guard();
    let mut confusion = Confusion::new(labels.names.len().max(1));
    let mut entities = EntityCounts::default();
    let (mut loss, mut n_targets, mut sq) = (0.0, 0usize, 0.0);
    for chunk in examples.chunks(batch_size) {
        let refs: Vec<&TaskExample> = chunk.iter().collect();
        let batch = batcher.batch(&refs);
        let (logits, l) = net.forward(kind, &batch, device, false);
        let hb = &batch.hb;
        loss += l.double_value(&[]);
        n_targets += hb.n_targets;
        match kind {
            HeadKind::SequenceClassification | HeadKind::Cloze => {
                let pred = Vec::<i64>::try_from(&logits.argmax(-1, false).to_device(Device::Cpu)).unwrap_or_default();
                for (g, p) in hb.labels.iter().zip(pred) {
                    confusion.add(*g as usize, p as usize);
                }
            }
            HeadKind::Regression => {
                let pred = Vec::<f32>::try_from(&logits.view([-1]).to_kind(Kind::Float).to_device(Device::Cpu)).unwrap_or_default();
                sq += pred.iter().zip(&hb.targets).map(|(p, t)| ((p - t) as f64).powi(2)).sum::<f64>();
            }
            HeadKind::TokenClassification => {
                let pred = Vec::<i64>::try_from(&logits.argmax(-1, false).view([-1]).to_device(Device::Cpu)).unwrap_or_default();
                for (r, ex) in chunk.iter().enumerate() {
                    let base = r * hb.seq_len;
                    let mut gold = Vec::new();
                    let mut got = Vec::new();
                    for (w, start) in ex.word_starts.iter().enumerate() {
                        let _ = w;
                        match start {
                            Some(s) => {
                                gold.push(labels.names[ex.labels[*s] as usize].as_str());
                                got.push(labels.names[pred[base + s] as usize].as_str());
                                confusion.add(ex.labels[*s] as usize, pred[base + s] as usize);
                            }
                            // A word cut off by truncation: its gold tag counts, nothing was predicted.
                            None => {
                                gold.push("O");
                                got.push("O");
                            }
                        }
                    }
                    entities.add(&gold, &got);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    out.insert("loss".to_owned(), loss / n_targets.max(1) as f64);
    match kind {
        HeadKind::SequenceClassification | HeadKind::TokenClassification | HeadKind::Cloze => {
            let m = confusion.metrics();
            out.insert("accuracy".into(), m.accuracy);
            if kind != HeadKind::TokenClassification {
                out.insert("macro_f1".into(), m.macro_f1);
                for (i, name) in labels.names.iter().enumerate() {
                    out.insert(format!("precision.{name}"), m.precision[i]);
                    out.insert(format!("recall.{name}"), m.recall[i]);
                }
            } else {
                let e = entities.metrics();
                out.insert("precision".into(), e.precision);
                out.insert("recall".into(), e.recall);
                out.insert("f1".into(), e.f1);
            }
        }
        HeadKind::Regression => {
            out.insert("mse".into(), sq / examples.len().max(1) as f64);
        }
    }
    out
}

/// Builds the task model on `device` and loads the starting weights.
///
/// # Errors
/// [`FinetuneError::Init`].
pub fn build_model(plan_bert: &BertConfig, glm: Option<&GlmConfig>, kind: HeadKind, num_labels: usize, init: &InitSource, device: Device, seed: u64) -> Result<(nn::VarStore, TaskNet, LoadReport), FinetuneError> {
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let model = match glm {
        Some(g) if kind == HeadKind::Cloze => TaskNet::Cloze(Glm::new(&vs.root(), g)),
        _ => TaskNet::Bert(BertForTask::new(&vs.root(), plan_bert, kind, num_labels.max(1) as i64)),
    };
    let report = match init {
        InitSource::Fresh => LoadReport { loaded: 0, missing: vs.variables().into_keys().collect(), unused: vec![] },
        InitSource::Checkpoint(dir) => load_into(&vs, &dir.join("model.safetensors")).map_err(FinetuneError::Init)?,
        InitSource::Hf(dir) => load_into(&vs, &dir.join("model.safetensors")).map_err(FinetuneError::Init)?,
    };
    Ok((vs, model, report))
}

/// Runs fine-tuning as the plan says.
///
/// # Errors
/// [`FinetuneError`].
pub fn run(plan: FinetunePlan) -> Result<FinetuneSummary, FinetuneError> {
    let c = plan.config.clone();
    let out_dir = c.run.out_dir.clone();
    let out_err = |source| FinetuneError::OutDir { path: out_dir.clone(), source };
    std::fs::create_dir_all(&out_dir).map_err(out_err)?;
    std::fs::write(out_dir.join("config.toml"), toml::to_string(&c).unwrap_or_default()).map_err(out_err)?;
    if let Some(addr) = plan.metrics_addr {
        crate::metrics::install(addr, &plan.run_id)?;
    }
    if c.run.threads > 0 {
        tch::set_num_threads(c.run.threads as i32);
    }
    let device = plan.device;
    let kind = plan.kind;
    let glm_cfg = plan.cloze.as_ref().map(|(g, _)| g.clone());
    let (vs, model, report) = build_model(&plan.bert, glm_cfg.as_ref(), kind, plan.labels.names.len(), &plan.init, device, c.run.seed)?;
    if !matches!(plan.init, InitSource::Fresh) {
        tracing::info!(loaded = report.loaded, missing = ?report.missing, unused = ?report.unused, "starting weights");
    }

    // Freezing and layer-wise decay: frozen parameters never reach the optimizer.
    let layers = plan.bert.num_hidden_layers;
    let t = &c.train;
    let mut params = Vec::new();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in vars {
        if frozen(&name, t.freeze_embeddings, t.freeze_layers, layers) {
            let _ = var.set_requires_grad(false);
            continue;
        }
        let scale = lr_scale(&name, layers, t.layerwise_lr_decay);
        params.push((name, var, scale));
    }
    let mut opt = AdamW::with_lr_scales(params, AdamWConfig { beta1: t.betas[0], beta2: t.betas[1], eps: t.eps, weight_decay: t.weight_decay });
    let schedule = LrSchedule { lr: t.lr, warmup: plan.warmup_steps, total: plan.max_steps, decay: t.decay, min_lr_ratio: t.min_lr_ratio };

    // Data plane: shuffled, collated batches through a bounded channel.
    let stop = StopFlag::new();
    let (tx, rx) = bounded::<Batch>(c.pipeline.prefetch.max(1));
    let pad = plan.tokenizer.special_ids().pad;
    let batcher = Batcher::new(kind, plan.cloze.as_ref().map(|(_, s)| s.clone()), pad);
    let (bs, accum, seed, total_batches) = (t.batch_size, t.grad_accum, c.run.seed, plan.max_steps * t.grad_accum as u64);
    let group_by_length = t.group_by_length;
    let train = std::sync::Arc::new(plan.train.clone());
    let loader = {
        let (train, stop, batcher) = (train.clone(), stop.clone(), batcher.clone());
        std::thread::Builder::new()
            .name("finetune-loader".into())
            .spawn(move || {
                let tokens = counter!(names::TOKENS, "phase" => FINETUNE, "stage" => "loader");
                let samples = counter!(names::SAMPLES, "phase" => FINETUNE, "stage" => "loader");
                let mut sent = 0u64;
                for epoch in 0.. {
                    let mut rng = Rng::keyed(seed, Stream::Block, &[u64::MAX, epoch]);
                    let lens: Vec<usize> = train.iter().map(|e| e.ids.len()).collect();
                    let order = super::policy::epoch_batches(&lens, bs, group_by_length, &mut rng);
                    for chunk in order.chunks(bs) {
                        if sent >= total_batches || stop.is_stopping() {
                            return;
                        }
                        let refs: Vec<&TaskExample> = chunk.iter().map(|&i| &train[i]).collect();
                        let b = batcher.batch(&refs);
                        tokens.increment(b.hb.n_tokens as u64);
                        samples.increment(refs.len() as u64);
                        if tx.send(b).is_err() {
                            return;
                        }
                        sent += 1;
                    }
                }
            })
            .map_err(|e| FinetuneError::Init(format!("cannot start the loader: {e}")))?
    };

    let store = CheckpointStore::new(out_dir.join("checkpoints"));
    store.clean_temporaries();
    let mut events = std::io::BufWriter::new(std::fs::OpenOptions::new().create(true).append(true).open(out_dir.join("events.jsonl")).map_err(out_err)?);
    let progress = Progress::new(plan.max_steps, FINETUNE);
    let tokens_c = counter!(names::TOKENS, "phase" => FINETUNE, "stage" => "trainer");
    let samples_c = counter!(names::SAMPLES, "phase" => FINETUNE, "stage" => "trainer");
    let steps_c = counter!(names::STEPS, "phase" => FINETUNE);
    let wait_c = names::data_wait(FINETUNE);
    let step_h = histogram!(names::STEP_DURATION, "phase" => FINETUNE);
    let lr_g = gauge!(names::LEARNING_RATE, "phase" => FINETUNE);
    let loss_g = gauge!(names::LOSS, "phase" => FINETUNE, "objective" => task_label(kind));
    let grad_g = gauge!(names::GRAD_NORM, "phase" => FINETUNE);
    let depth = gauge!(names::QUEUE_DEPTH, "queue" => "finetune_loader_to_trainer");
    let device_memory = crate::metrics::device::DeviceMemory::new(device);
    let spec = TaskSpec {
        architecture: "BertForTask".into(),
        config: plan.bert.clone(),
        kind,
        labels: plan.labels.names.clone(),
        tokenizer: plan.tokenizer_path.clone(),
        max_seq_len: t.max_seq_len,
        glm: glm_cfg.clone(),
    };
    let spec_json = serde_json::to_value(&spec).unwrap_or_default();
    let config_json = serde_json::to_value(&c).unwrap_or_default();

    let checkpoint_state = |step: u64, tokens: u64, lr: f64, best: Option<Best>| CheckpointState {
        format_version: FORMAT_VERSION,
        step,
        tokens_seen: tokens,
        samples_seen: 0,
        batches_seen: step * accum as u64,
        cursor: Default::default(),
        seed,
        lr,
        model: spec_json.clone(),
        config: config_json.clone(),
        versions: versions(),
        best,
        files: Default::default(),
        world_size: 1,
    };
    let (metric, direction) = plan.metric.clone();
    let mut early = EarlyStopping::new(t.patience, direction);
    let mut summary = FinetuneSummary {
        steps: 0,
        epochs: 0.0,
        tokens: 0,
        elapsed_s: 0.0,
        tokens_per_second: 0.0,
        data_wait_share: 0.0,
        final_loss: f64::NAN,
        metric: metric.clone(),
        best: None,
        last_eval: None,
        stopped_early: false,
        best_checkpoint: None,
        init: report,
        out_dir: out_dir.clone(),
    };
    let start = Instant::now();
    let (mut wait, mut last_log, mut last_tokens, mut last_wait) = (Duration::ZERO, start, 0u64, Duration::ZERO);
    let mut nonfinite = 0u32;
    let mut step = 0u64;
    let eval_due = |s: u64| {
        let every = if t.eval_every > 0 { t.eval_every } else { plan.steps_per_epoch };
        s % every == 0 || s == plan.max_steps
    };
    'train: while step < plan.max_steps {
        let w0 = Instant::now();
        let mut micro = Vec::with_capacity(accum);
        for _ in 0..accum {
            match rx.recv() {
                Ok(b) => micro.push(b),
                Err(_) => break 'train,
            }
        }
        let waited = w0.elapsed();
        wait += waited;
        wait_c.increment(waited.as_secs_f64());
        depth.set(rx.len() as f64);
        let t0 = Instant::now();
        tch::manual_seed((Rng::keyed(seed, Stream::Dropout, &[u64::MAX, step]).next_u64() >> 1) as i64);
        let n_targets = micro.iter().map(|b| b.hb.n_targets).sum::<usize>().max(1) as f64;
        let mut total = Tensor::zeros([], (Kind::Float, device));
        for b in &micro {
            let (_, loss) = model.forward(kind, b, device, true);
            let loss = loss / n_targets;
            loss.backward();
            total += loss.detach();
        }
        let grad_norm = opt.clip_grad_norm(t.clip_grad_norm);
        let lr = schedule.at(step);
        let finite = bool::try_from(total.isfinite().logical_and(&grad_norm.isfinite())).unwrap_or(false);
        if !finite {
            opt.zero_grad();
            nonfinite += 1;
            counter!(names::NONFINITE_STEPS, "phase" => FINETUNE).increment(1);
            if nonfinite >= t.max_nonfinite_in_a_row || t.nonfinite == crate::config::NonFinitePolicy::Abort {
                stop.abort();
                return Err(FinetuneError::NonFinite(step + 1, nonfinite));
            }
            continue;
        }
        nonfinite = 0;
        opt.step(lr);
        opt.zero_grad();
        step += 1;
        step_h.record(t0.elapsed().as_secs_f64());
        let (n_tok, n_seq) = micro.iter().fold((0u64, 0u64), |a, b| (a.0 + b.hb.n_tokens as u64, a.1 + b.hb.n_targets as u64));
        summary.tokens += n_tok;
        tokens_c.increment(n_tok);
        samples_c.increment(n_seq);
        steps_c.increment(1);
        lr_g.set(lr);
        if step == 1 || step % t.log_every == 0 || step == plan.max_steps {
            let loss = total.double_value(&[]);
            let gn = grad_norm.double_value(&[]);
            loss_g.set(loss);
            grad_g.set(gn);
            device_memory.record();
            let now = Instant::now();
            let dt = now.duration_since(last_log).as_secs_f64().max(1e-9);
            let r = StepReport {
                phase: FINETUNE,
                step,
                loss,
                losses: [(task_label(kind), loss)].into_iter().collect(),
                lr,
                grad_norm: gn,
                tokens: summary.tokens,
                tokens_per_second: (summary.tokens - last_tokens) as f64 / dt,
                elapsed_s: now.duration_since(start).as_secs_f64(),
                data_wait_share: (wait - last_wait).as_secs_f64() / dt,
            };
            progress.step(&r);
            let _ = writeln!(events, "{}", serde_json::to_value(&r).unwrap_or_default());
            summary.final_loss = loss;
            (last_log, last_tokens, last_wait) = (now, summary.tokens, wait);
        }
        if !plan.eval.is_empty() && eval_due(step) {
            let m = evaluate(&model, kind, &batcher, &plan.eval, &plan.labels, bs, device);
            for (k, v) in &m {
                if !k.contains('.') {
                    gauge!(names::EVAL_METRIC, "phase" => FINETUNE, "metric" => k.clone()).set(*v);
                }
            }
            let value = m.get(&metric).copied().unwrap_or(f64::NAN);
            let verdict = early.update(value);
            let shown: Vec<String> = m.iter().filter(|(k, _)| !k.contains('.')).map(|(k, v)| format!("{k} {v:.4}")).collect();
            progress.println(&format!("eval  step {step} (epoch {:.2}): {}", step as f64 / plan.steps_per_epoch as f64, shown.join(", ")));
            let _ = writeln!(events, "{}", json!({ "phase": FINETUNE, "step": step, "eval": m }));
            let score = |v: f64| if direction == Direction::Higher { -v } else { v };
            let best = summary.best.map(|(s, v)| Best { step: s, score: score(v) });
            let state = checkpoint_state(step, summary.tokens, lr, best);
            let moments: Vec<(String, Tensor)> = opt.state_tensors().into_iter().map(|(n, t)| (n, t.to_device(Device::Cpu).copy())).collect();
            let t_ck = Instant::now();
            let dir = store.save(&cpu_copies(&vs), &moments, state, t.keep_last.max(1))?;
            histogram!(names::CHECKPOINT_DURATION).record(t_ck.elapsed().as_secs_f64());
            if verdict.improved {
                store.set_best(Best { step, score: score(value) })?;
                store.retain(t.keep_last.max(1));
                summary.best = Some((step, value));
                summary.best_checkpoint = Some(dir);
            }
            summary.last_eval = Some(m);
            let _ = events.flush();
            if verdict.stop {
                progress.println(&format!("early stop: no better {metric} in {} evaluations", t.patience));
                summary.stopped_early = true;
                break;
            }
        }
    }
    stop.abort();
    drop(rx);
    let _ = loader.join();
    progress.finish();
    let _ = events.flush();
    summary.steps = step;
    summary.epochs = step as f64 / plan.steps_per_epoch as f64;
    summary.elapsed_s = start.elapsed().as_secs_f64();
    summary.tokens_per_second = summary.tokens as f64 / summary.elapsed_s.max(1e-9);
    summary.data_wait_share = wait.as_secs_f64() / summary.elapsed_s.max(1e-9);
    if summary.best_checkpoint.is_none() {
        // No held-out set: the last state is what there is.
        let state = checkpoint_state(step, summary.tokens, schedule.at(step), None);
        summary.best_checkpoint = Some(store.save(&cpu_copies(&vs), &[], state, t.keep_last.max(1))?);
    }
    if plan.metrics_addr.is_some() && c.metrics.linger_s > 0.0 {
        // Keep serving /metrics for a last scrape.
        std::thread::sleep(Duration::from_secs_f64(c.metrics.linger_s));
    }
    Ok(summary)
}

/// The `objective` label of a task's loss.
pub fn task_label(kind: HeadKind) -> &'static str {
    match kind {
        HeadKind::SequenceClassification => "cls",
        HeadKind::Regression => "regression",
        HeadKind::TokenClassification => "tag",
        HeadKind::Cloze => "cloze",
    }
}
