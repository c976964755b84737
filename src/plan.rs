//! Raw config to one validated plan, for both phases: files found, tokenizer loaded, the
//! starting weights located, labelled data encoded, sizes and steps derived, every problem
//! reported at once (ripgrep's low-level / high-level args split). A `[task]` makes the run a
//! fine-tuning run; everything else is shared.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::Device;

use crate::config::{self, ConfigError, RunConfig};
use crate::data::prepared::PrepareInput;
use crate::data::source::FileSpan;
use crate::data::stream::{Cursor, ExampleSource};
use crate::data::tokenize::TextTokenizer;
use crate::init::InitSource;
use crate::workload::task_plan::TaskPlan;
use crate::objective::{Collator, ModelSpec, Objective};
use crate::workload::pretrain::PretrainPlan;
use crate::workload::{Phase, RunContext, Workload};

pub use crate::workload::pretrain::read_settings;

/// A run, validated and with everything derived that components need.
pub struct RunPlan {
    /// The config file (for messages).
    pub file: PathBuf,
    /// The config as written plus overrides.
    pub config: RunConfig,
    /// The tokenizer.
    pub tokenizer: Arc<TextTokenizer>,
    /// Model architecture and sizes, vocabulary from the tokenizer.
    pub model: ModelSpec,
    /// Where tensors live.
    pub device: Device,
    /// Warm-up updates (from `warmup_steps` or `warmup_ratio`).
    pub warmup_steps: u64,
    /// Prometheus endpoint, if on.
    pub metrics_addr: Option<SocketAddr>,
    /// `run_id` label.
    pub run_id: String,
    /// `--resume`: continue from a checkpoint.
    pub resume: Option<crate::checkpoint::resume::ResumeFrom>,
    /// Live-control endpoint, if on.
    pub control_addr: Option<SocketAddr>,
    /// This process's place in a data-parallel run (`WORLD_SIZE` > 1), from the torchrun
    /// variables.
    pub dist: Option<crate::distributed::DistEnv>,
    /// Starting weights (`[init]`): fresh, one of our checkpoints, or a Hugging Face folder.
    pub init: InitSource,
    /// What the run trains on: a pre-training corpus or a fine-tuning task.
    pub workload: Box<dyn Workload>,
}

impl RunPlan {
    /// Pre-training or fine-tuning: the `phase` label of every metric and event.
    pub fn phase(&self) -> Phase {
        self.workload.phase()
    }

    /// What the workload needs of the rest of the plan.
    pub fn context(&self) -> RunContext<'_> {
        RunContext { config: &self.config, tokenizer: &self.tokenizer, world: self.dist.as_ref().map_or(1, |d| d.world) }
    }

    /// The fine-tuning task, when the run is one.
    pub fn task(&self) -> Option<&TaskPlan> {
        self.workload.task()
    }

    /// The pre-training corpus, when the run is one.
    pub fn corpus(&self) -> Option<&PretrainPlan> {
        self.workload.corpus()
    }

    /// The training examples from `cursor` (`Cursor::default()` for the start).
    pub fn train_source(&self, cursor: Cursor) -> Box<dyn ExampleSource> {
        self.workload.train_source(&self.context(), cursor)
    }

    /// The workload's built-in collator.
    pub fn collator(&self) -> Arc<dyn Collator> {
        self.workload.collator(&self.context())
    }

    /// The workload's built-in objective.
    pub fn objective(&self) -> Arc<dyn Objective> {
        self.workload.objective(&self.model)
    }
}

/// `auto`, `cpu`, `cuda`, `cuda:N`, checked against the machine.
///
/// # Errors
/// [`DeviceError`], naming `run.device`.
pub fn parse_device(s: &str) -> Result<Device, DeviceError> {
    crate::cuda::load();
    match s {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "cuda:0" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) if n < tch::Cuda::device_count() as usize => Ok(Device::Cuda(n)),
            _ if s.starts_with("cuda") => Err(DeviceError::Unavailable(s.to_owned())),
            _ => Err(DeviceError::Unknown(s.to_owned())),
        },
    }
}

/// A `run.device` this machine cannot run on.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A CUDA device that is not there.
    #[error("run.device: `{0}` is not available on this machine")]
    Unavailable(String),
    /// Not a device name.
    #[error("run.device: `{0}` is not one of auto, cpu, cuda, cuda:N")]
    Unknown(String),
}

/// Validates `config` and derives a [`RunPlan`].
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem found, each with its key path.
pub fn resolve(file: &Path, config: RunConfig) -> Result<RunPlan, ConfigError> {
    resolve_with(file, config, &toml::Table::new())
}

/// Keys only one phase reads: set in the other, they would be silently ignored, so they are
/// errors naming the key and saying why.
fn phase_key_problems(table: &toml::Table, finetune: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let has = |section: &str, key: &str| table.get(section).and_then(|t| t.get(key)).is_some();
    if finetune {
        if table.contains_key("objective") {
            problems.push("objective: fine-tuning trains the [task]'s objective; [objective] configures pre-training corruption (remove it)".into());
        }
        if table.contains_key("probe") {
            problems.push("probe: [[probe]] scores a pre-training run zero-shot; a fine-tuning run's own evaluation is its task's (remove it)".into());
        }
        for key in ["eval_holdout_docs", "eval_batches", "format", "text_field", "shuffle_block_docs", "max_line_bytes"] {
            if has("data", key) {
                problems.push(format!("data.{key}: applies to the pre-training corpus; labelled data is read with [task] fields (remove it)"));
            }
        }
    } else {
        if table.get("task").and_then(toml::Value::as_table).is_some_and(|t| !t.is_empty()) {
            problems.push("task.kind: [task] keys are set but no task.kind: set task.kind to fine-tune (or remove [task])".into());
        }
        if table.contains_key("retention") {
            problems.push("retention: [retention] measures what fine-tuning erased of a pre-trained checkpoint; a pre-training run's own evaluation is its objective's (remove it)".into());
        }
        if has("train", "epochs") {
            problems.push("train.epochs: pre-training streams its corpus and counts updates: set train.max_steps".into());
        }
    }
    problems
}

/// [`resolve`], with the table the config came from, to tell keys set in the file from
/// defaults. Named steps over one problem list: phase keys, the data-parallel environment,
/// the workload (a task, or a corpus with its model), the shared `[train]` / `[pipeline]` /
/// `[data]` / `[dist]` checks, the device and endpoints.
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem found, each with its key path.
pub fn resolve_with(file: &Path, mut config: RunConfig, table: &toml::Table) -> Result<RunPlan, ConfigError> {
    let finetune = config.task.kind.is_some();
    let mut problems = phase_key_problems(table, finetune);
    let dist = crate::distributed::DistEnv::from_env().map_err(|e| problems.push(e.to_string())).unwrap_or(None);
    let task = if finetune { resolve_task(&config, table, dist.as_ref(), &mut problems) } else { None };
    if let Some(t) = &task {
        config.train.max_steps = t.max_steps;
    }
    problems.extend(shared_problems(&config));
    if !finetune {
        problems.extend(crate::workload::pretrain::problems(&config));
    }
    let endpoints = endpoints(&config, dist.as_ref(), &mut problems);
    let invalid = |problems| ConfigError::Invalid { file: file.to_owned(), problems };
    let parts = match (finetune, task) {
        (true, Some(t)) if problems.is_empty() => Parts { tokenizer: t.tokenizer.clone(), model: t.model.clone(), init: t.init.clone(), workload: Box::new(t) },
        (true, _) => return Err(invalid(problems)),
        (false, _) => match crate::workload::pretrain::resolve(&config, table, &mut problems) {
            Some(r) if problems.is_empty() => Parts { tokenizer: r.tokenizer, model: r.model, init: r.init, workload: Box::new(r.plan) },
            _ => return Err(invalid(problems)),
        },
    };
    if let InitSource::Checkpoint(dir) = &parts.init {
        let recorded = crate::checkpoint::CheckpointStore::verify(dir).ok().and_then(|s| s.tokenizer_sha256);
        if let Some(p) = tokenizer_mismatch(recorded.as_deref(), &parts.tokenizer, dir, &config.tokenizer) {
            return Err(invalid(vec![format!("tokenizer.path: {p}")]));
        }
    }
    Ok(finish(file, config, parts, endpoints, dist))
}

/// Why `tokenizer` is not the one the checkpoint in `dir` was trained with (`recorded`: its
/// fingerprint; absent in checkpoints of earlier versions), unless `tokenizer.allow_mismatch`.
pub fn tokenizer_mismatch(recorded: Option<&str>, tokenizer: &TextTokenizer, dir: &Path, c: &crate::config::TokenizerConfig) -> Option<String> {
    let recorded = recorded?;
    let ours = tokenizer.fingerprint();
    (ours != recorded && !c.allow_mismatch).then(|| {
        format!(
            "this run's tokenizer (sha256 {ours}) is not the one {} was trained with (sha256 {recorded}): its ids would not match the embeddings; use its own copy, {}, or set tokenizer.allow_mismatch = true",
            dir.display(),
            dir.join("tokenizer.json").display()
        )
    })
}

/// Fine-tuning's task: its data, labels, starting model and step count.
fn resolve_task(c: &RunConfig, table: &toml::Table, dist: Option<&crate::distributed::DistEnv>, problems: &mut Vec<String>) -> Option<TaskPlan> {
    let world = dist.map_or(1, |d| d.world);
    crate::workload::task_plan::resolve_task(c, table, world).map_err(|more| problems.extend(more)).ok()
}

/// What the workload gives the rest of the plan.
struct Parts {
    tokenizer: Arc<TextTokenizer>,
    model: ModelSpec,
    init: InitSource,
    workload: Box<dyn Workload>,
}

/// Checks of the keys both phases read: `[train]` (dropout once, here), `[pipeline]`,
/// `[data]`, `[dist]`.
fn shared_problems(c: &RunConfig) -> Vec<String> {
    let (t, m) = (&c.train, &c.model);
    [
        (t.batch_size > 0, "train.batch_size: must be positive"),
        (t.max_steps > 0, "train.max_steps: must be positive"),
        (t.grad_accum > 0, "train.grad_accum: must be positive"),
        (t.lr > 0.0, "train.lr: must be positive"),
        (t.log_every > 0, "train.log_every: must be positive"),
        ((0.0..=1.0).contains(&t.warmup_ratio), "train.warmup_ratio: must be in [0, 1]"),
        ((0.0..=1.0).contains(&t.min_lr_ratio), "train.min_lr_ratio: must be in [0, 1]"),
        (t.weight_decay >= 0.0, "train.weight_decay: must not be negative"),
        (t.betas.iter().all(|b| (0.0..1.0).contains(b)), "train.betas: each must be in [0, 1)"),
        (t.eps > 0.0, "train.eps: must be positive"),
        (t.clip_grad_norm >= 0.0, "train.clip_grad_norm: must not be negative (0 turns clipping off)"),
        (t.max_seq_len >= 3, "train.max_seq_len: must be at least 3 ([CLS], a token, [SEP])"),
        (t.layerwise_lr_decay > 0.0 && t.layerwise_lr_decay <= 1.0, "train.layerwise_lr_decay: must be in (0, 1]"),
        (t.freeze_layers >= 0, "train.freeze_layers: must not be negative"),
        ((0.0..1.0).contains(&m.hidden_dropout), "model.hidden_dropout: must be in [0, 1)"),
        ((0.0..1.0).contains(&m.attention_dropout), "model.attention_dropout: must be in [0, 1)"),
        (c.pipeline.masker_workers > 0, "pipeline.masker_workers: must be positive"),
        (c.pipeline.prefetch > 0, "pipeline.prefetch: must be positive"),
        (c.data.shuffle_block_docs > 0, "data.shuffle_block_docs: must be positive"),
        (c.data.max_line_bytes > 0, "data.max_line_bytes: must be positive"),
        (c.data.eval_holdout_docs == 0 || c.data.eval.is_empty(), "data.eval_holdout_docs: give either eval files or a hold-out count, not both"),
        (c.dist.bucket_mb > 0.0, "dist.bucket_mb: must be positive"),
        (c.dist.timeout_s > 0.0, "dist.timeout_s: must be positive"),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, m)| m.to_owned())
    .collect()
}

/// The device and the two endpoints a run serves, as this rank sees them.
struct Endpoints {
    device: Device,
    metrics_addr: Option<SocketAddr>,
    control_addr: Option<SocketAddr>,
}

/// `run.device`, `metrics.listen` and `control.listen`. One GPU per local rank; each rank
/// serves metrics on base port + local rank, so every machine of a multi-node run answers on
/// the same ports (one scrape config for all); the `rank` label is the global rank.
fn endpoints(c: &RunConfig, dist: Option<&crate::distributed::DistEnv>, problems: &mut Vec<String>) -> Endpoints {
    let mut device = parse_device(&c.run.device).map_err(|e| problems.push(e.to_string())).unwrap_or(Device::Cpu);
    let mut metrics_addr = crate::metrics::parse_listen(&c.metrics.listen).map_err(|e| problems.push(e.to_string())).unwrap_or(None);
    if let Some(d) = dist {
        if let Device::Cuda(0) = device {
            device = Device::Cuda(d.local_rank);
        }
        if let Some(a) = metrics_addr.as_mut() {
            match u16::try_from(d.local_rank).ok().and_then(|r| a.port().checked_add(r)) {
                Some(port) => a.set_port(port),
                None => problems.push(format!("metrics.listen: port {} + local rank {} is past 65535", a.port(), d.local_rank)),
            }
        }
    }
    let control_addr = match c.control.listen.trim() {
        "" => None,
        a => match a.parse::<SocketAddr>() {
            Ok(addr) => {
                if !addr.ip().is_loopback() && c.control.token.is_empty() {
                    problems.push(format!("control.token: required when control.listen ({addr}) is not a loopback address"));
                }
                Some(addr)
            }
            Err(_) => {
                problems.push(format!("control.listen: `{a}` is not a socket address (host:port)"));
                None
            }
        },
    };
    Endpoints { device, metrics_addr, control_addr }
}

/// What `pretune data prepare CONFIG` tokenizes: the config's `data.train` and `data.eval`
/// files, whole (a hold-out is cut at training time, from the index), with the tokenizer as
/// the config loads it.
///
/// # Errors
/// [`ConfigError`] for an invalid config, a fine-tuning config, or one whose data is already
/// prepared.
pub fn prepare_input(file: &Path, overrides: &[String], workers: usize) -> Result<PrepareInput, ConfigError> {
    let plan = load_and_resolve(file, overrides)?;
    let invalid = |m: String| ConfigError::Invalid { file: file.to_owned(), problems: vec![m] };
    let Some(corpus) = plan.corpus() else {
        return Err(invalid("[task]: fine-tuning data is labelled and small; `data prepare` prepares pre-training corpora".into()));
    };
    if corpus.prepared.is_some() {
        return Err(invalid("data.train: already a prepared dataset; name the text files to prepare".into()));
    }
    let c = &plan.config;
    let mut problems = Vec::new();
    let mut splits = vec![("train".to_owned(), crate::data::source::expand(&c.data.train, "data.train", &mut problems).into_iter().map(|p| FileSpan::whole(p, c.data.format)).collect::<Vec<_>>())];
    if !c.data.eval.is_empty() {
        splits.push(("eval".to_owned(), crate::data::source::expand(&c.data.eval, "data.eval", &mut problems).into_iter().map(|p| FileSpan::whole(p, c.data.format)).collect()));
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid { file: file.to_owned(), problems });
    }
    let tokenizer = TextTokenizer::load(&c.tokenizer.path, c.tokenizer.lowercase).map_err(|e| invalid(format!("tokenizer.path: {}", crate::error_chain(&e))))?;
    Ok(PrepareInput { splits, tokenizer: Arc::new(tokenizer), tokenizer_path: c.tokenizer.path.clone(), read: read_settings(&c.data), workers })
}

fn finish(file: &Path, config: RunConfig, parts: Parts, e: Endpoints, dist: Option<crate::distributed::DistEnv>) -> RunPlan {
    let c = &config;
    let warmup_steps = if c.train.warmup_steps > 0 {
        c.train.warmup_steps
    } else {
        (c.train.warmup_ratio * c.train.max_steps as f64).round() as u64
    };
    let run_id = if c.metrics.run_id.is_empty() { c.run.name.clone() } else { c.metrics.run_id.clone() };
    let Parts { tokenizer, model, init, workload } = parts;
    RunPlan { file: file.to_owned(), config, tokenizer, model, device: e.device, warmup_steps, metrics_addr: e.metrics_addr, run_id, resume: None, control_addr: e.control_addr, dist, init, workload }
}

/// Reads, overrides, deserializes and validates in one go, for either phase (`[task] kind`
/// makes it fine-tuning, with its defaults for unset keys), reporting every problem of the file
/// at once: bad keys and invalid values together, each one a `--set` wrote naming that override.
///
/// # Errors
/// [`ConfigError`].
pub fn load_and_resolve(file: &Path, overrides: &[String]) -> Result<RunPlan, ConfigError> {
    load_and_resolve_file(file, overrides).map_err(|e| match e {
        ConfigError::Invalid { file, problems } => ConfigError::Invalid { file, problems: config::attribute_problems(problems, overrides) },
        e => e,
    })
}

/// The config's keys and types only, with the phase's defaults, without touching the data,
/// the tokenizer or the starting weights: what a launcher checks once before it starts ranks
/// that would each report the same typo.
///
/// # Errors
/// [`ConfigError`]: an unreadable file, bad TOML, a bad override, an unknown or mistyped key
/// (each one a `--set` wrote naming that override).
pub fn load_config(file: &Path, overrides: &[String]) -> Result<RunConfig, ConfigError> {
    let (config, problems, _) = read_config(file, overrides)?;
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid { file: file.to_owned(), problems: config::attribute_problems(problems, overrides) })
    }
}

/// Reads and deserializes leniently: the config, its key problems and the table it came from.
fn read_config(file: &Path, overrides: &[String]) -> Result<(RunConfig, Vec<String>, toml::Table), ConfigError> {
    let mut table = config::read_table(file, overrides)?;
    let finetune = table.get("task").and_then(|t| t.get("kind")).is_some();
    if finetune {
        let kind = table.get("task").and_then(|t| t.get("kind")).and_then(toml::Value::as_str);
        let task_defaults = kind.and_then(|k| crate::finetune::tasks::lookup(k).ok()).map_or(&[][..], |k| k.train_defaults);
        config::apply_finetune_defaults(&mut table, task_defaults);
    }
    let (config, problems) = config::from_table_lenient(table.clone());
    Ok((config, problems, table))
}

fn load_and_resolve_file(file: &Path, overrides: &[String]) -> Result<RunPlan, ConfigError> {
    let (config, mut problems, table) = read_config(file, overrides)?;
    let finetune = table.get("task").and_then(|t| t.get("kind")).is_some();
    if finetune && config.task.kind.is_none() {
        // An unknown task: nothing else can be judged without knowing the phase.
        return Err(ConfigError::Invalid { file: file.to_owned(), problems });
    }
    match resolve_with(file, config, &table) {
        Ok(plan) if problems.is_empty() => Ok(plan),
        Ok(_) => Err(ConfigError::Invalid { file: file.to_owned(), problems }),
        Err(ConfigError::Invalid { problems: more, .. }) => {
            problems.extend(more);
            Err(ConfigError::Invalid { file: file.to_owned(), problems })
        }
        Err(e) => Err(e),
    }
}
