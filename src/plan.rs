//! Raw config to one validated plan, for both phases: files found, tokenizer loaded, the
//! starting weights located, labelled data encoded, sizes and steps derived, every problem
//! reported at once (ripgrep's low-level / high-level args split). A `[task]` makes the run a
//! fine-tuning run; everything else is shared.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::Device;

use crate::config::{self, ConfigError, ObjectiveKind, RunConfig, SentencePair};
use crate::data::prepared::{is_prepared, PrepareInput, PreparedData};
use crate::data::source::{document_offsets, FileSpan, ReadSettings};
use crate::data::tokenize::TextTokenizer;
use crate::finetune::init::InitSource;
use crate::finetune::plan::TaskPlan;
use crate::masking::glm::GlmIds;
use crate::model::glm::GlmConfig;
use crate::objective::{ModelSpec, ObjectiveNames};

/// Phase label of pre-training.
pub const PRETRAIN: &str = "pretrain";
/// Phase label of fine-tuning.
pub const FINETUNE: &str = "finetune";

/// A run, validated and with everything derived that components need.
pub struct RunPlan {
    /// The config file (for messages).
    pub file: PathBuf,
    /// The config as written plus overrides.
    pub config: RunConfig,
    /// Training input.
    pub train_spans: Vec<FileSpan>,
    /// Held-out input (may be empty: then no evaluation).
    pub eval_spans: Vec<FileSpan>,
    /// The prepared dataset the spans refer to (`data.format = "prepared"`), memory-mapped;
    /// `None`: the spans are text files, tokenized as they are read.
    pub prepared: Option<Arc<PreparedData>>,
    /// The tokenizer.
    pub tokenizer: Arc<TextTokenizer>,
    /// Model architecture and sizes, vocabulary from the tokenizer.
    pub model: ModelSpec,
    /// Names of the objective's parts (`mlm` + `nsp`, `glm`, ...).
    pub names: ObjectiveNames,
    /// GLM's special ids (with `kind = "glm"`).
    pub glm_ids: Option<GlmIds>,
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
    /// Fine-tuning: the task, its labelled data and its monitored metric.
    pub task: Option<TaskPlan>,
    /// Updates per epoch when the run counts epochs (`train.epochs`), else 0.
    pub epoch_steps: u64,
}

impl RunPlan {
    /// `pretrain` or `finetune`: the `phase` label of every metric and event.
    pub fn phase(&self) -> &'static str {
        if self.task.is_some() {
            FINETUNE
        } else {
            PRETRAIN
        }
    }
}


/// `auto`, `cpu`, `cuda`, `cuda:N`, checked against the machine.
///
/// # Errors
/// A message naming `run.device`.
pub fn parse_device(s: &str) -> Result<Device, String> {
    crate::cuda::load();
    match s {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "cuda:0" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) if n < tch::Cuda::device_count() as usize => Ok(Device::Cuda(n)),
            _ if s.starts_with("cuda") => Err(format!("run.device: `{s}` is not available on this machine")),
            _ => Err(format!("run.device: `{s}` is not one of auto, cpu, cuda, cuda:N")),
        },
    }
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
        for key in ["eval_holdout_docs", "eval_batches", "format", "text_field", "shuffle_block_docs", "max_line_bytes"] {
            if has("data", key) {
                problems.push(format!("data.{key}: applies to the pre-training corpus; labelled data is read with [task] fields (remove it)"));
            }
        }
    } else {
        if table.get("task").and_then(toml::Value::as_table).is_some_and(|t| !t.is_empty()) {
            problems.push("task.kind: [task] keys are set but no task.kind: set task.kind to fine-tune (or remove [task])".into());
        }
        if has("train", "epochs") {
            problems.push("train.epochs: pre-training streams its corpus and counts updates: set train.max_steps".into());
        }
    }
    problems
}

/// [`resolve`], with the table the config came from, to tell keys set in the file from defaults.
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem found, each with its key path.
pub fn resolve_with(file: &Path, mut config: RunConfig, table: &toml::Table) -> Result<RunPlan, ConfigError> {
    let finetune = config.task.kind.is_some();
    let mut problems = phase_key_problems(table, finetune);
    let dist = crate::distributed::DistEnv::from_env().map_err(|e| problems.push(e.to_string())).unwrap_or(None);
    // Fine-tuning's task: its data, labels, starting model and step count.
    let task = if finetune {
        let world = dist.as_ref().map_or(1, |d| d.world);
        match crate::finetune::plan::resolve_task(&config, table, world) {
            Ok(t) => Some(t),
            Err(more) => {
                problems.extend(more);
                None
            }
        }
    } else {
        None
    };
    if let Some(t) = &task {
        config.train.max_steps = t.max_steps;
    }
    let c = &config;
    let mut check = |ok: bool, msg: &str| {
        if !ok {
            problems.push(msg.to_owned());
        }
    };
    check(c.train.batch_size > 0, "train.batch_size: must be positive");
    check(c.train.max_steps > 0, "train.max_steps: must be positive");
    check(c.train.grad_accum > 0, "train.grad_accum: must be positive");
    check(c.train.lr > 0.0, "train.lr: must be positive");
    check(c.train.log_every > 0, "train.log_every: must be positive");
    check((0.0..=1.0).contains(&c.train.warmup_ratio), "train.warmup_ratio: must be in [0, 1]");
    check((0.0..=1.0).contains(&c.train.min_lr_ratio), "train.min_lr_ratio: must be in [0, 1]");
    check(c.train.weight_decay >= 0.0, "train.weight_decay: must not be negative");
    check(c.train.betas.iter().all(|b| (0.0..1.0).contains(b)), "train.betas: each must be in [0, 1)");
    check(c.train.eps > 0.0, "train.eps: must be positive");
    check(c.train.clip_grad_norm >= 0.0, "train.clip_grad_norm: must not be negative (0 turns clipping off)");
    check(c.train.max_seq_len >= 3, "train.max_seq_len: must be at least 3 ([CLS], a token, [SEP])");
    check(c.train.layerwise_lr_decay > 0.0 && c.train.layerwise_lr_decay <= 1.0, "train.layerwise_lr_decay: must be in (0, 1]");
    check(c.train.freeze_layers >= 0, "train.freeze_layers: must not be negative");
    check((0.0..1.0).contains(&c.model.hidden_dropout), "model.hidden_dropout: must be in [0, 1)");
    check((0.0..1.0).contains(&c.model.attention_dropout), "model.attention_dropout: must be in [0, 1)");
    if !finetune {
        check(
            c.train.max_seq_len as i64 <= c.model.max_position_embeddings,
            "train.max_seq_len: must not exceed model.max_position_embeddings",
        );
        check(c.model.hidden_size > 0, "model.hidden_size: must be positive");
        check(c.model.num_layers > 0, "model.num_layers: must be positive");
        check(c.model.num_heads > 0, "model.num_heads: must be positive");
        check(c.model.num_heads > 0 && c.model.hidden_size % c.model.num_heads.max(1) == 0, "model.num_heads: must divide model.hidden_size");
        check(c.model.intermediate_size > 0, "model.intermediate_size: must be positive");
        check((0.0..1.0).contains(&c.model.hidden_dropout), "model.hidden_dropout: must be in [0, 1)");
        check((0.0..1.0).contains(&c.model.attention_dropout), "model.attention_dropout: must be in [0, 1)");
        let o = &c.objective;
        check(o.mask_prob > 0.0 && o.mask_prob < 1.0, "objective.mask_prob: must be in (0, 1)");
        check(
            o.mask_token_prob >= 0.0 && o.random_token_prob >= 0.0 && o.mask_token_prob + o.random_token_prob <= 1.0,
            "objective.mask_token_prob + objective.random_token_prob: must be within [0, 1]",
        );
        let glm = o.kind == ObjectiveKind::Glm;
        check(!(glm && o.sentence_pair != SentencePair::None), "objective.sentence_pair: GLM has no sentence-pair task (use kind = \"mlm\")");
        check(
            !glm || (c.train.max_seq_len as i64) < c.model.max_position_embeddings,
            "model.max_position_embeddings: GLM needs more than train.max_seq_len (the prefix-LM layout uses position max_seq_len)",
        );
        let g = &o.glm;
        check(
            (0.0..=1.0).contains(&g.bert_prob) && (0.0..=1.0).contains(&g.gap_sentence_prob) && g.bert_prob + g.gap_sentence_prob <= 1.0,
            "objective.glm.bert_prob + objective.glm.gap_sentence_prob: must be within [0, 1]",
        );
        check(g.max_block_length >= 2, "objective.glm.max_block_length: must be at least 2");
        check(g.avg_block_length > 0.0, "objective.glm.avg_block_length: must be positive");
        check(o.span_p > 0.0 && o.span_p < 1.0, "objective.span_p: must be in (0, 1)");
        check(o.span_max > 0, "objective.span_max: must be positive");
        check((0.0..=1.0).contains(&o.short_seq_prob), "objective.short_seq_prob: must be in [0, 1]");
    }
    check(c.pipeline.masker_workers > 0, "pipeline.masker_workers: must be positive");
    check(c.pipeline.prefetch > 0, "pipeline.prefetch: must be positive");
    check(c.data.shuffle_block_docs > 0, "data.shuffle_block_docs: must be positive");
    check(c.data.max_line_bytes > 0, "data.max_line_bytes: must be positive");
    check(!(c.data.eval_holdout_docs > 0 && !c.data.eval.is_empty()), "data.eval_holdout_docs: give either eval files or a hold-out count, not both");

    check(c.dist.bucket_mb > 0.0, "dist.bucket_mb: must be positive");
    check(c.dist.timeout_s > 0.0, "dist.timeout_s: must be positive");
    let mut device = parse_device(&c.run.device).map_err(|e| problems.push(e)).unwrap_or(Device::Cpu);
    let mut metrics_addr = crate::metrics::parse_listen(&c.metrics.listen).map_err(|e| problems.push(e.to_string())).unwrap_or(None);
    if let Some(d) = &dist {
        // One GPU per local rank; each rank serves metrics on base port + local rank, so every
        // machine of a multi-node run answers on the same ports (one scrape config for all);
        // the `rank` label is the global rank.
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

    if finetune {
        let Some(t) = task.filter(|_| problems.is_empty()) else {
            return Err(ConfigError::Invalid { file: file.to_owned(), problems });
        };
        let (tokenizer, model, init, epoch_steps) = (t.tokenizer.clone(), t.model.clone(), t.init.clone(), t.epoch_steps);
        let names = ObjectiveNames { lm: crate::finetune::task::task_label(t.spec.kind), pair: None };
        return Ok(finish(file, config, (Vec::new(), Vec::new()), tokenizer, model, names, None, device, metrics_addr, control_addr, dist, init, Some(t), epoch_steps));
    }
    let start = crate::finetune::init::resolve_start(&c.init).map_err(|e| problems.push(e)).unwrap_or(None);
    if c.data.train.is_empty() {
        problems.push("data.train: no training files given".into());
    }
    let prepared_dir = prepared_dir(&c.data).map_err(|e| problems.push(e)).unwrap_or(None);
    let (mut train_spans, mut eval_spans) = (Vec::new(), Vec::new());
    if prepared_dir.is_none() {
        train_spans = crate::data::source::expand(&c.data.train, "data.train", &mut problems).into_iter().map(|p| FileSpan::whole(p, c.data.format)).collect();
        eval_spans = crate::data::source::expand(&c.data.eval, "data.eval", &mut problems).into_iter().map(|p| FileSpan::whole(p, c.data.format)).collect();
        if c.data.eval_holdout_docs > 0 && !train_spans.is_empty() {
            let read = read_settings(&c.data);
            match hold_out(&mut train_spans, c.data.eval_holdout_docs, |span| document_offsets(span, &read).map_err(|e| crate::error_chain(&e))) {
                Ok(spans) => eval_spans = spans,
                Err(e) => problems.push(format!("data.eval_holdout_docs: {e}")),
            }
        }
    }

    let tokenizer = if c.tokenizer.path.as_os_str().is_empty() {
        problems.push("tokenizer.path: no tokenizer given".into());
        None
    } else {
        TextTokenizer::load(&c.tokenizer.path, c.tokenizer.lowercase)
            .map_err(|e| problems.push(format!("tokenizer.path: {}", crate::error_chain(&e))))
            .ok()
    };

    if !problems.is_empty() {
        return Err(ConfigError::Invalid { file: file.to_owned(), problems });
    }
    let mut tokenizer = tokenizer.expect("no problems means the tokenizer loaded");
    let prepared = match &prepared_dir {
        Some(dir) => {
            let (data, train, eval) = open_prepared(dir, &c.data, &tokenizer).map_err(|problems| ConfigError::Invalid { file: file.to_owned(), problems })?;
            (train_spans, eval_spans) = (train, eval);
            Some(data)
        }
        None => None,
    };
    let glm_ids = if c.objective.kind == ObjectiveKind::Glm {
        let added = tokenizer.ensure_special(&["[sop]", "[eop]", "[sMASK]", "[gMASK]"]).map_err(|e| ConfigError::Invalid {
            file: file.to_owned(),
            problems: vec![format!("tokenizer.path: cannot add GLM's special tokens: {}", crate::error_chain(&e))],
        })?;
        let ids = tokenizer.special_ids();
        Some(GlmIds { cls: ids.cls, mask: ids.mask, sop: added[0], eop: added[1], smask: added[2], gmask: added[3] })
    } else {
        None
    };
    let tokenizer = Arc::new(tokenizer);
    let m = &c.model;
    let vocab_size = tokenizer.vocab_size() as i64;
    let (mut model, names) = match c.objective.kind {
        ObjectiveKind::Mlm => {
            let pair = match c.objective.sentence_pair {
                SentencePair::None => None,
                SentencePair::Nsp => Some("nsp"),
                SentencePair::Sop => Some("sop"),
            };
            let config = crate::model::bert::BertConfig::from_section(m, vocab_size, tokenizer.special_ids().pad as i64);
            (ModelSpec::Bert { config, pair_head: pair.is_some() }, ObjectiveNames { lm: "mlm", pair })
        }
        ObjectiveKind::Glm => {
            let config = GlmConfig {
                vocab_size,
                hidden_size: m.hidden_size,
                num_layers: m.num_layers,
                num_attention_heads: m.num_heads,
                intermediate_size: m.intermediate_size,
                max_sequence_length: m.max_position_embeddings,
                hidden_dropout: m.hidden_dropout,
                attention_dropout: m.attention_dropout,
                layernorm_epsilon: m.layer_norm_eps,
                init_method_std: m.initializer_range,
                explicit_attention: false,
            };
            (ModelSpec::Glm { config }, ObjectiveNames { lm: "glm", pair: None })
        }
    };
    // Continued pre-training: the architecture comes from the starting point.
    let init = match start {
        Some(st) => {
            let mut problems = Vec::new();
            match st.model.pretrain_spec(&model) {
                Ok(spec) => model = spec,
                Err(e) => problems.push(e),
            }
            problems.extend(crate::finetune::init::size_conflicts(table, &model));
            if !problems.is_empty() {
                return Err(ConfigError::Invalid { file: file.to_owned(), problems });
            }
            crate::finetune::init::apply_overrides(&mut model, table);
            st.source
        }
        None => InitSource::Fresh,
    };
    if let ModelSpec::Bert { config: b, .. } = &mut model {
        b.vocab_size = b.vocab_size.max(vocab_size);
    }
    let mut plan = finish(file, config, (train_spans, eval_spans), tokenizer, model, names, glm_ids, device, metrics_addr, control_addr, dist, init, None, 0);
    plan.prepared = prepared;
    Ok(plan)
}

/// The prepared folder `data.train` names, if it names one: with `data.format = "prepared"`,
/// or (`auto`) when its one entry is a folder holding a manifest.
fn prepared_dir(d: &config::DataConfig) -> Result<Option<PathBuf>, String> {
    let one = match d.train.as_slice() {
        [one] => Some(Path::new(one)),
        _ => None,
    };
    match d.format {
        config::DataFormat::Prepared => match one {
            Some(dir) if is_prepared(dir) => Ok(Some(dir.to_owned())),
            Some(dir) => Err(format!("data.train: `{}` is not a prepared dataset folder (no {}); make one with `pretune data prepare`", dir.display(), crate::data::prepared::MANIFEST)),
            None => Err("data.train: with data.format = \"prepared\" give the one prepared folder".into()),
        },
        config::DataFormat::Auto => Ok(one.filter(|dir| is_prepared(dir)).map(Path::to_owned)),
        _ => Ok(None),
    }
}

/// Maps the prepared dataset at `dir` and derives the spans from it: its training files, and
/// held-out documents from its eval split (prepared from `data.eval`) or cut from the end of
/// the training files by `data.eval_holdout_docs`, exactly where a text run would cut them.
fn open_prepared(dir: &Path, d: &config::DataConfig, tokenizer: &TextTokenizer) -> Result<(Arc<PreparedData>, Vec<FileSpan>, Vec<FileSpan>), Vec<String>> {
    let data = PreparedData::open(dir, tokenizer, &read_settings(d)).map_err(|e| vec![format!("data.train: {}", crate::error_chain(&e))])?;
    let mut train = PreparedData::spans(&data.train);
    let mut eval = Vec::new();
    if d.eval_holdout_docs > 0 {
        let split = data.train.clone();
        eval = hold_out(&mut train, d.eval_holdout_docs, |span| {
            let f = split.file_index(&span.path).ok_or_else(|| format!("{} is not in the prepared dataset", span.path.display()))?;
            Ok(split.document_offsets(f, (span.start, span.start_line)).into_iter().filter(|&(at, _)| span.end.is_none_or(|end| at < end)).collect())
        })
        .map_err(|e| vec![format!("data.eval_holdout_docs: {e}")])?;
    } else if let Some(split) = &data.eval {
        let prepared: Vec<&Path> = split.manifest.files.iter().map(|f| f.path.as_path()).collect();
        let named: Vec<PathBuf> = d.eval.iter().map(PathBuf::from).collect();
        if !d.eval.is_empty() && named.iter().map(PathBuf::as_path).collect::<Vec<_>>() != prepared {
            return Err(vec![format!("data.eval: {:?} are not the held-out files the prepared dataset {} holds ({:?}); leave data.eval empty to use those", d.eval, dir.display(), prepared)]);
        }
        eval = PreparedData::spans(split);
    } else if !d.eval.is_empty() {
        return Err(vec![format!("data.eval: the prepared dataset {} has no held-out split; prepare it with data.eval set, or use data.eval_holdout_docs", dir.display())]);
    }
    Ok((Arc::new(data), train, eval))
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
    if plan.task.is_some() {
        return Err(invalid("[task]: fine-tuning data is labelled and small; `data prepare` prepares pre-training corpora".into()));
    }
    if plan.prepared.is_some() {
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

#[allow(clippy::too_many_arguments)]
fn finish(
    file: &Path,
    config: RunConfig,
    (train_spans, eval_spans): (Vec<FileSpan>, Vec<FileSpan>),
    tokenizer: Arc<TextTokenizer>,
    model: ModelSpec,
    names: ObjectiveNames,
    glm_ids: Option<GlmIds>,
    device: Device,
    metrics_addr: Option<SocketAddr>,
    control_addr: Option<SocketAddr>,
    dist: Option<crate::distributed::DistEnv>,
    init: InitSource,
    task: Option<TaskPlan>,
    epoch_steps: u64,
) -> RunPlan {
    let c = &config;
    let warmup_steps = if c.train.warmup_steps > 0 {
        c.train.warmup_steps
    } else {
        (c.train.warmup_ratio * c.train.max_steps as f64).round() as u64
    };
    let run_id = if c.metrics.run_id.is_empty() { c.run.name.clone() } else { c.metrics.run_id.clone() };
    RunPlan { file: file.to_owned(), config, train_spans, eval_spans, prepared: None, tokenizer, model, device, warmup_steps, metrics_addr, run_id, resume: None, names, glm_ids, control_addr, dist, init, task, epoch_steps }
}

/// How the Loader reads records, from `[data]`.
pub fn read_settings(d: &config::DataConfig) -> ReadSettings {
    ReadSettings { text_field: d.text_field.clone(), on_error: d.on_error, max_line_bytes: d.max_line_bytes }
}

/// Moves the last `n` documents of the training spans into held-out spans; `offsets` lists a
/// span's `(position, line)` before each of its documents.
fn hold_out(train: &mut Vec<FileSpan>, n: usize, offsets: impl Fn(&FileSpan) -> Result<Vec<(u64, u64)>, String>) -> Result<Vec<FileSpan>, String> {
    let mut need = n;
    let mut held = Vec::new();
    while need > 0 {
        let Some(span) = train.pop() else {
            return Err(format!("the training files hold fewer than {n} documents"));
        };
        let offsets = offsets(&span)?;
        if offsets.len() <= need {
            need -= offsets.len();
            held.push(span);
            continue;
        }
        let (cut, line) = offsets[offsets.len() - need];
        held.push(FileSpan { start: cut, start_line: line, ..span.clone() });
        train.push(FileSpan { end: Some(cut), ..span });
        need = 0;
    }
    if train.is_empty() {
        return Err(format!("holding out {n} documents leaves nothing to train on"));
    }
    held.reverse();
    Ok(held)
}

/// Reads, overrides, deserializes and validates in one go, for either phase (`[task] kind`
/// makes it fine-tuning, with its defaults for unset keys), reporting every problem of the file
/// at once: bad keys and invalid values together.
///
/// # Errors
/// [`ConfigError`].
pub fn load_and_resolve(file: &Path, overrides: &[String]) -> Result<RunPlan, ConfigError> {
    let mut table = config::read_table(file, overrides)?;
    let finetune = table.get("task").and_then(|t| t.get("kind")).is_some();
    if finetune {
        config::apply_finetune_defaults(&mut table);
    }
    let (config, mut problems) = config::from_table_lenient(table.clone());
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
