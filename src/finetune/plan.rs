//! A fine-tuning config resolved: starting weights found, tokenizer loaded, labelled data read
//! and encoded, steps and the monitored metric derived.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::Device;

use super::data::{self, Fields, LabelSet, TaskExample};
use super::init::{find_checkpoint, InitSource};
use super::policy::Direction;
use crate::config::{ConfigError, RunConfig};
use crate::data::tokenize::TextTokenizer;
use crate::model::bert::BertConfig;
use crate::model::heads::HeadKind;
use crate::model::glm::GlmConfig;
use crate::objective::ModelSpec;
use super::cloze::{self, ClozeSpec};
use crate::masking::glm::GlmIds;

/// A validated fine-tuning run.
pub struct FinetunePlan {
    /// Config file.
    pub file: PathBuf,
    /// The config.
    pub config: RunConfig,
    /// The head.
    pub kind: HeadKind,
    /// Class names (empty for regression).
    pub labels: LabelSet,
    /// Encoded training examples.
    pub train: Vec<TaskExample>,
    /// Encoded held-out examples (may be empty).
    pub eval: Vec<TaskExample>,
    /// Tokenizer (saved with checkpoints and exports).
    pub tokenizer: Arc<TextTokenizer>,
    /// Where the tokenizer came from.
    pub tokenizer_path: PathBuf,
    /// Encoder sizes.
    pub bert: BertConfig,
    /// Cloze: the GLM and its pattern.
    pub cloze: Option<(GlmConfig, ClozeSpec)>,
    /// Starting weights.
    pub init: InitSource,
    /// Device.
    pub device: Device,
    /// Updates per epoch.
    pub steps_per_epoch: u64,
    /// Updates in the run.
    pub max_steps: u64,
    /// Warm-up updates.
    pub warmup_steps: u64,
    /// Monitored metric and its direction.
    pub metric: (String, Direction),
    /// Prometheus endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// `run_id` label.
    pub run_id: String,
}

fn resolve_path(p: &Path, base: Option<&Path>) -> PathBuf {
    match base {
        Some(b) if p.is_relative() && !p.exists() => b.join(p),
        _ => p.to_owned(),
    }
}

/// Validates a fine-tuning config (one with `[task] kind`).
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem, with key paths.
pub fn resolve(file: &Path, config: RunConfig) -> Result<FinetunePlan, ConfigError> {
    let c = &config;
    let kind = c.task.kind.expect("a fine-tuning config has task.kind");
    let mut problems: Vec<String> = Vec::new();
    let invalid = |problems: Vec<String>| ConfigError::Invalid { file: file.to_owned(), problems };
    if c.train.batch_size == 0 || c.train.grad_accum == 0 {
        problems.push("train.batch_size, train.grad_accum: must be positive".into());
    }
    if c.train.epochs == 0 && c.train.max_steps == 0 {
        problems.push("train.epochs: give epochs or max_steps".into());
    }
    if !(0.0..=1.0).contains(&c.train.layerwise_lr_decay) || c.train.layerwise_lr_decay == 0.0 {
        problems.push("train.layerwise_lr_decay: must be in (0, 1]".into());
    }
    if !c.init.checkpoint.as_os_str().is_empty() && !c.init.hf.as_os_str().is_empty() {
        problems.push("init: give either init.checkpoint or init.hf, not both".into());
    }
    let metric = match (kind, c.task.metric.as_str()) {
        (HeadKind::SequenceClassification, "" | "accuracy") => ("accuracy".to_owned(), Direction::Higher),
        (HeadKind::SequenceClassification, "macro_f1") => ("macro_f1".to_owned(), Direction::Higher),
        (HeadKind::TokenClassification, "" | "f1") => ("f1".to_owned(), Direction::Higher),
        (HeadKind::Regression, "" | "mse") => ("mse".to_owned(), Direction::Lower),
        (HeadKind::Cloze, "" | "accuracy") => ("accuracy".to_owned(), Direction::Higher),
        (_, "loss") => ("loss".to_owned(), Direction::Lower),
        (_, m) => {
            problems.push(format!("task.metric: `{m}` does not fit task.kind {kind:?} (accuracy, macro_f1, f1, mse or loss)"));
            ("loss".to_owned(), Direction::Lower)
        }
    };
    let device = crate::config::plan::parse_device(&c.run.device).map_err(|e| problems.push(e)).unwrap_or(Device::Cpu);
    let metrics_addr = crate::metrics::parse_listen(&c.metrics.listen).map_err(|e| problems.push(e.to_string())).unwrap_or(None);

    if kind == HeadKind::Cloze {
        if c.init.checkpoint.as_os_str().is_empty() {
            problems.push("init.checkpoint: cloze fine-tuning starts from a GLM pre-training checkpoint".into());
        }
        if c.task.pattern.matches("[MASK]").count() != 1 || !c.task.pattern.contains("{text}") {
            problems.push("task.pattern: needs `{text}` and exactly one `[MASK]`".into());
        }
        if c.task.verbalizers.len() < 2 {
            problems.push("task.verbalizers: give verbalizer text for at least two labels".into());
        }
    }
    let mut glm_config: Option<GlmConfig> = None;
    // Starting point: its model sizes and tokenizer.
    let (init, mut bert, init_tokenizer) = if !c.init.checkpoint.as_os_str().is_empty() {
        match find_checkpoint(&c.init.checkpoint) {
            Ok((dir, state)) => match serde_json::from_value::<ModelSpec>(state.model.clone()) {
                Ok(ModelSpec::Glm { config }) if kind == HeadKind::Cloze => {
                    let tok = state.config.pointer("/tokenizer/path").and_then(|v| v.as_str()).map(PathBuf::from);
                    glm_config = Some(config);
                    (InitSource::Checkpoint(dir), BertConfig::default(), tok)
                }
                Ok(_) if kind == HeadKind::Cloze => {
                    problems.push(format!("init.checkpoint: {} is not a GLM checkpoint (cloze needs one)", dir.display()));
                    (InitSource::Fresh, BertConfig::default(), None)
                }
                Ok(ModelSpec::Bert { config, .. }) => {
                    let tok = state.config.pointer("/tokenizer/path").and_then(|v| v.as_str()).map(PathBuf::from);
                    // A checkpoint of ours carries its tokenizer beside the weights when it can.
                    let tok = if dir.join("tokenizer.json").exists() { Some(dir.join("tokenizer.json")) } else { tok };
                    (InitSource::Checkpoint(dir), config, tok)
                }
                Ok(_) => {
                    problems.push(format!("init.checkpoint: {} is not a BERT checkpoint", dir.display()));
                    (InitSource::Fresh, BertConfig::default(), None)
                }
                // A fine-tuned checkpoint of ours: continue from its encoder (and head).
                Err(_) if state.model.get("architecture").and_then(|a| a.as_str()) == Some("BertForTask") => {
                    match serde_json::from_value::<super::run::TaskSpec>(state.model.clone()) {
                        Ok(spec) => (InitSource::Checkpoint(dir), spec.config, Some(spec.tokenizer)),
                        Err(e) => {
                            problems.push(format!("init.checkpoint: {}: its task description is unreadable: {e}", dir.display()));
                            (InitSource::Fresh, BertConfig::default(), None)
                        }
                    }
                }
                Err(e) => {
                    problems.push(format!("init.checkpoint: {}: its model description is unreadable: {e}", dir.display()));
                    (InitSource::Fresh, BertConfig::default(), None)
                }
            },
            Err(e) => {
                problems.push(format!("init.checkpoint: {}", crate::error_chain(&e)));
                (InitSource::Fresh, BertConfig::default(), None)
            }
        }
    } else if !c.init.hf.as_os_str().is_empty() {
        let dir = c.init.hf.clone();
        let cfg = std::fs::read_to_string(dir.join("config.json")).map_err(|e| e.to_string()).and_then(|t| serde_json::from_str::<BertConfig>(&t).map_err(|e| e.to_string()));
        let tok = ["tokenizer.json", "vocab.txt"].iter().map(|f| dir.join(f)).find(|p| p.exists());
        if !dir.join("model.safetensors").exists() {
            problems.push(format!("init.hf: {} has no model.safetensors (only safetensors is read)", dir.display()));
        }
        match cfg {
            Ok(cfg) => (InitSource::Hf(dir), cfg, tok),
            Err(e) => {
                problems.push(format!("init.hf: {}/config.json: {e}", dir.display()));
                (InitSource::Fresh, BertConfig::default(), None)
            }
        }
    } else {
        // Vocabulary and [PAD] come from the tokenizer below.
        (InitSource::Fresh, c.model.bert(0, 0), None)
    };
    let tokenizer_path = if !c.tokenizer.path.as_os_str().is_empty() { Some(c.tokenizer.path.clone()) } else { init_tokenizer };
    let tokenizer = match &tokenizer_path {
        None => {
            problems.push("tokenizer.path: no tokenizer given and the starting point has none".into());
            None
        }
        Some(p) => TextTokenizer::load(p, c.tokenizer.lowercase).map_err(|e| problems.push(format!("tokenizer.path: {}", crate::error_chain(&e)))).ok(),
    };
    let positions = glm_config.as_ref().map_or(bert.max_position_embeddings, |g| g.max_sequence_length - 1);
    if c.train.max_seq_len as i64 > positions || c.train.max_seq_len < 4 {
        problems.push(format!("train.max_seq_len: must be in [4, {positions}] (the model's positions)"));
    }
    let expand = |key: &str, pats: &[String], problems: &mut Vec<String>| -> Vec<PathBuf> {
        let mut out = Vec::new();
        for p in pats {
            let found: Vec<PathBuf> = glob::glob(p).map(|g| g.filter_map(Result::ok).filter(|p| p.is_file()).collect()).unwrap_or_default();
            if found.is_empty() {
                problems.push(format!("{key}: file not found: `{p}`"));
            }
            out.extend(found);
        }
        out
    };
    let train_files = expand("data.train", &c.data.train, &mut problems);
    let eval_files = expand("data.eval", &c.data.eval, &mut problems);
    if c.data.train.is_empty() {
        problems.push("data.train: no training files given".into());
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let mut tokenizer = tokenizer.expect("no problems means the tokenizer loaded");
    let glm_ids = if kind == HeadKind::Cloze {
        // The same tokens, added in the same order as in pre-training: the same ids.
        let added = tokenizer.ensure_special(&["[sop]", "[eop]", "[sMASK]", "[gMASK]"]).map_err(|e| invalid(vec![format!("tokenizer.path: {}", crate::error_chain(&e))]))?;
        let ids = tokenizer.special_ids();
        Some(GlmIds { cls: ids.cls, mask: ids.mask, sop: added[0], eop: added[1], smask: added[2], gmask: added[3] })
    } else {
        None
    };
    let tokenizer = Arc::new(tokenizer);
    bert.vocab_size = bert.vocab_size.max(tokenizer.vocab_size() as i64);
    bert.pad_token_id = tokenizer.special_ids().pad as i64;

    // Data.
    let data_err = |e: data::TaskDataError| invalid(vec![format!("data: {}", crate::error_chain(&e))]);
    let max_len = c.train.max_seq_len;
    let fields = Fields { text: c.task.text_field.clone(), text_pair: c.task.text_pair_field.clone(), label: c.task.label_field.clone() };
    let mut cloze_spec: Option<ClozeSpec> = None;
    let read = |files: &[PathBuf]| -> Result<Vec<data::ClsRecord>, data::TaskDataError> {
        let mut v = Vec::new();
        for f in files {
            v.extend(data::read_classification(f, &fields)?);
        }
        Ok(v)
    };
    let (labels, train, eval) = match kind {
        HeadKind::TokenClassification => {
            let read = |files: &[PathBuf]| -> Result<Vec<data::TaggedSentence>, data::TaskDataError> {
                let mut v = Vec::new();
                for f in files {
                    v.extend(data::read_conll(f)?);
                }
                Ok(v)
            };
            let tr = read(&train_files).map_err(data_err)?;
            let ev = read(&eval_files).map_err(data_err)?;
            let labels = LabelSet::from_data(&c.task.labels, tr.iter().flat_map(|s| s.tags.iter().map(String::as_str)));
            let enc = |s: &data::TaggedSentence| data::encode_tagged(&tokenizer, s, &labels, max_len);
            let train = tr.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            let eval = ev.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            (labels, train, eval)
        }
        HeadKind::Cloze => {
            let tr = read(&train_files).map_err(data_err)?;
            let ev = read(&eval_files).map_err(data_err)?;
            let labels = if c.task.labels.is_empty() { LabelSet { names: c.task.verbalizers.keys().cloned().collect() } } else { LabelSet { names: c.task.labels.clone() } };
            let mut answers = Vec::new();
            for l in &labels.names {
                let text = c.task.verbalizers.get(l).ok_or_else(|| invalid(vec![format!("task.verbalizers: no verbalizer for label `{l}`")]))?;
                let ids = tokenizer.encode(text).map_err(|e| invalid(vec![format!("task.verbalizers.{l}: {}", crate::error_chain(&e))]))?.ids;
                if ids.is_empty() {
                    return Err(invalid(vec![format!("task.verbalizers.{l}: `{text}` has no tokens")]));
                }
                answers.push(ids);
            }
            let spec = ClozeSpec { pattern: c.task.pattern.clone(), answers, ids: glm_ids.expect("set for cloze") };
            let enc = |r: &data::ClsRecord| -> Result<TaskExample, data::TaskDataError> {
                let id = labels.id(&r.label, &r.path, r.line)?;
                cloze::encode(&tokenizer, r, id, &spec, max_len)
            };
            let train = tr.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            let eval = ev.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            cloze_spec = Some(spec);
            (labels, train, eval)
        }
        _ => {
            let tr = read(&train_files).map_err(data_err)?;
            let ev = read(&eval_files).map_err(data_err)?;
            let regression = kind == HeadKind::Regression;
            let labels = if regression { LabelSet { names: vec![] } } else { LabelSet::from_data(&c.task.labels, tr.iter().map(|r| r.label.as_str())) };
            let enc = |r: &data::ClsRecord| -> Result<TaskExample, data::TaskDataError> {
                if regression {
                    let t: f32 = r.label.parse().map_err(|_| data::TaskDataError::Record { path: r.path.clone(), line: r.line, message: format!("regression label `{}` is not a number", r.label) })?;
                    data::encode_classification(&tokenizer, r, None, t, max_len)
                } else {
                    let id = labels.id(&r.label, &r.path, r.line)?;
                    data::encode_classification(&tokenizer, r, Some(id), 0.0, max_len)
                }
            };
            let train = tr.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            let eval = ev.iter().map(enc).collect::<Result<Vec<_>, _>>().map_err(data_err)?;
            (labels, train, eval)
        }
    };
    if kind != HeadKind::Regression && labels.names.len() < 2 {
        return Err(invalid(vec![format!("task.labels: need at least 2 labels, found {:?}", labels.names)]));
    }
    let per_step = (c.train.batch_size * c.train.grad_accum) as u64;
    let steps_per_epoch = (train.len() as u64).div_ceil(per_step).max(1);
    let max_steps = if c.train.epochs > 0 { c.train.epochs * steps_per_epoch } else { c.train.max_steps };
    let warmup_steps = if c.train.warmup_steps > 0 { c.train.warmup_steps } else { (c.train.warmup_ratio * max_steps as f64).round() as u64 };
    let run_id = if c.metrics.run_id.is_empty() { c.run.name.clone() } else { c.metrics.run_id.clone() };
    let tokenizer_path = resolve_path(&tokenizer_path.expect("checked above"), None);
    Ok(FinetunePlan {
        file: file.to_owned(),
        config,
        kind,
        labels,
        train,
        eval,
        tokenizer,
        tokenizer_path,
        bert,
        cloze: glm_config.zip(cloze_spec),
        init,
        device,
        steps_per_epoch,
        max_steps,
        warmup_steps,
        metric,
        metrics_addr,
        run_id,
    })
}
