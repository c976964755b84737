//! Where starting weights come from (`[init]`, both phases): one of our checkpoints, a Hugging
//! Face BERT folder, or nothing (fresh). Weights are copied by name; what the task needs but the source lacks is
//! initialised fresh and listed, and what the source has but the task does not use is listed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{nn, Tensor};

use crate::config::InitConfig;
use crate::model::bert::BertConfig;
use crate::objective::ModelSpec;


/// Why the starting weights (`[init]`) could not be located or loaded.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Both sources given.
    #[error("init: give either init.checkpoint or init.hf, not both")]
    Both,
    /// `reinitialize` without a starting point to take the sizes from.
    #[error("init.reinitialize: give init.checkpoint or init.hf, whose sizes and tokenizer to take")]
    ReinitializeAlone,
    /// The checkpoint could not be located or verified.
    #[error("init.checkpoint")]
    Checkpoint(#[source] crate::checkpoint::CheckpointError),
    /// Its `state.json` describes no model we know.
    #[error("init.checkpoint: {}: its {what} description is unreadable", dir.display())]
    Unreadable {
        /// The checkpoint folder.
        dir: PathBuf,
        /// `model` or `task`.
        what: &'static str,
        /// serde's message.
        source: serde_json::Error,
    },
    /// A Hugging Face folder's `config.json` is missing or not a BERT config.
    #[error("init.hf: {}", path.display())]
    HfConfig {
        /// The `config.json`.
        path: PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Hugging Face folder without `model.safetensors`.
    #[error("init.hf: {} has no model.safetensors (only safetensors is read){}", .0.display(), convert_hint(.0))]
    NoSafetensors(PathBuf),
    /// A sharded folder's `model.safetensors.index.json` is unreadable or names no shard.
    #[error("{}: not a safetensors index (a `weight_map` of tensor name to shard file)", path.display())]
    ShardIndex {
        /// The index file.
        path: PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The weights file could not be read.
    #[error("{}: cannot read the weights", file.display())]
    Read {
        /// The safetensors file.
        file: PathBuf,
        /// libtorch's error.
        source: tch::TchError,
    },
    /// A tensor whose shape differs from the model's.
    #[error("{}: `{name}` has shape {got:?}, the model needs {want:?}", file.display())]
    Shape {
        /// The safetensors file.
        file: PathBuf,
        /// The variable.
        name: String,
        /// The file's shape.
        got: Vec<i64>,
        /// The model's.
        want: Vec<i64>,
    },
    /// The starting point's architecture cannot start this objective.
    #[error("{0}")]
    Architecture(&'static str),
    /// A Hugging Face folder of an architecture pretune does not build.
    #[error("init.hf: {}: model_type {model_type:?} ({architectures}) is not supported: pretune reads {} folders", path.display(), SUPPORTED_MODEL_TYPES.join(", "))]
    Unsupported {
        /// The `config.json`.
        path: PathBuf,
        /// Its `model_type`.
        model_type: String,
        /// Its `architectures`, joined.
        architectures: String,
    },
    /// The starting weights lack tensors of the encoder itself: the run would train a random
    /// model. (Only a new head may start fresh.)
    #[error(
        "init: {start}: {} of the encoder's tensors are not in its weights ({}), and {} of its tensors match no variable ({}): it is not a starting point for this model (another architecture, or names pretune does not read)",
        missing.len(), sample(missing), unused.len(), sample(unused)
    )]
    EncoderMissing {
        /// `checkpoint DIR` or `hf DIR`.
        start: String,
        /// The encoder's variables the weights lack.
        missing: Vec<String>,
        /// The weights' tensors nothing used.
        unused: Vec<String>,
    },
}

/// `(model_type, architectures joined)` of a parsed `config.json`. Configs written before
/// `model_type` existed are BERT's (their only reader then).
fn architecture_of(config: &serde_json::Value) -> (String, String) {
    let model_type = config.get("model_type").and_then(|m| m.as_str()).unwrap_or("bert").to_owned();
    let architectures = config.get("architectures").and_then(|a| a.as_array()).map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    (model_type, architectures)
}

/// What a Hugging Face folder's `config.json` says it holds: `model_type (architectures)`.
pub fn hf_architecture(dir: &Path) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).ok()?).ok()?;
    let (model_type, architectures) = architecture_of(&value);
    Some(if architectures.is_empty() { model_type } else { format!("{model_type} ({architectures})") })
}

/// The `model_type`s of Hugging Face folders pretune reads.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert", "roberta", "xlm-roberta", "electra", "modernbert"];

/// The first few names, for a message.
fn sample(names: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut out = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(", and {} more", names.len() - SHOWN));
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

/// Whether `name` is a variable of an encoder body (embeddings and blocks), which a starting
/// point must provide: BERT's `bert.embeddings.*` / `bert.encoder.*`, GLM's `word_embeddings`
/// and `transformer.*`. Poolers and heads may start fresh, as in `transformers`.
pub fn is_encoder_variable(name: &str) -> bool {
    ["bert.embeddings.", "bert.encoder.", "roberta.embeddings.", "roberta.encoder.", "electra.embeddings", "electra.encoder.", "transformer.", "model.embeddings.", "model.layers.", "model.final_norm."].iter().any(|p| name.starts_with(p)) || name == "word_embeddings.weight"
}

/// The starting point.
#[derive(Debug, Clone, PartialEq)]
pub enum InitSource {
    /// Fresh weights.
    Fresh,
    /// One of our checkpoint folders (verified).
    Checkpoint(PathBuf),
    /// A Hugging Face folder.
    Hf(PathBuf),
}

impl InitSource {
    /// What `state.json` records: `checkpoint DIR`, `hf DIR`, or nothing for a fresh start.
    pub fn describe(&self) -> Option<String> {
        match self {
            InitSource::Fresh => None,
            InitSource::Checkpoint(d) => Some(format!("checkpoint {}", d.display())),
            InitSource::Hf(d) => Some(format!("hf {}", d.display())),
        }
    }
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Variables copied from the source.
    pub loaded: usize,
    /// Variables the source lacks (initialised fresh).
    pub missing: Vec<String>,
    /// Source tensors nothing used.
    pub unused: Vec<String>,
}

impl LoadReport {
    /// Whether the start gave the whole encoder ([`is_encoder_variable`]).
    ///
    /// # Errors
    /// [`InitError::EncoderMissing`] naming what is missing and what went unused.
    pub fn check_encoder(&self, source: &InitSource) -> Result<(), InitError> {
        let missing: Vec<String> = self.missing.iter().filter(|n| is_encoder_variable(n)).cloned().collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(InitError::EncoderMissing { start: source.describe().unwrap_or_default(), missing, unused: self.unused.clone() })
    }
}

/// What a starting point says about the model it holds.
#[derive(Debug, Clone)]
pub enum StartModel {
    /// A pre-training checkpoint of ours.
    Pretrain(ModelSpec),
    /// A fine-tuned checkpoint of ours: its encoder (never a pair head).
    Task(ModelSpec),
    /// A Hugging Face folder of the BERT family or ModernBERT (never a pair head: a
    /// `BertForPreTraining` folder's NSP head loads by name when the objective has one).
    Hf(ModelSpec),
}

/// A located starting point (`[init]`).
#[derive(Debug, Clone)]
pub struct Start {
    /// Where the weights are.
    pub source: InitSource,
    /// Its architecture and sizes.
    pub model: StartModel,
    /// The tokenizer that goes with it, if it names one.
    pub tokenizer: Option<PathBuf>,
}

impl StartModel {
    /// The encoder a head task sits on (no pair head), unless it is a GLM.
    pub fn encoder(&self) -> Option<ModelSpec> {
        match self {
            StartModel::Pretrain(ModelSpec::Bert { config, .. }) => Some(ModelSpec::Bert { config: config.clone(), pair_head: false }),
            StartModel::Pretrain(ModelSpec::Glm { .. }) => None,
            // ELECTRA's discriminator is the encoder tasks start from.
            StartModel::Pretrain(ModelSpec::Electra { pair }) => Some(ModelSpec::Bert { config: pair.discriminator.clone(), pair_head: false }),
            StartModel::Pretrain(m) | StartModel::Hf(m) | StartModel::Task(m) => Some(m.clone()),
        }
    }

    /// The BERT-family encoder's sizes, if it is one.
    pub fn bert(&self) -> Option<BertConfig> {
        match self.encoder()? {
            ModelSpec::Bert { config, .. } => Some(config),
            _ => None,
        }
    }

    /// The pre-training model to continue: `want`'s architecture and heads with the starting
    /// point's sizes.
    ///
    /// # Errors
    /// [`InitError::Architecture`] when the architectures differ (GLM weights for a BERT
    /// objective or the reverse).
    pub fn pretrain_spec(&self, want: &ModelSpec) -> Result<ModelSpec, InitError> {
        let pair_head = matches!(want, ModelSpec::Bert { pair_head: true, .. });
        match (self, want) {
            (StartModel::Pretrain(ModelSpec::Glm { config }), ModelSpec::Glm { .. }) => return Ok(ModelSpec::Glm { config: config.clone() }),
            (_, ModelSpec::Glm { .. }) => return Err(InitError::Architecture("init: BERT weights cannot start GLM pre-training (objective.kind = \"glm\")")),
            (StartModel::Pretrain(ModelSpec::Electra { pair }), ModelSpec::Electra { .. }) => return Ok(ModelSpec::Electra { pair: pair.clone() }),
            (_, ModelSpec::Electra { .. }) => {
                return Err(InitError::Architecture(
                    "init: objective.kind = \"electra\" continues only an ELECTRA pre-training checkpoint of ours (it holds the generator too; a folder holds one network): start fresh, or fine-tune from the folder",
                ))
            }
            _ => {}
        }
        match self.encoder() {
            Some(ModelSpec::Electra { .. }) => Err(InitError::Architecture("init.checkpoint: an ELECTRA checkpoint continues with objective.kind = \"electra\" (its discriminator has no MLM head)")),
            None | Some(ModelSpec::Glm { .. }) => Err(InitError::Architecture("init.checkpoint: a GLM checkpoint cannot start a BERT objective (objective.kind = \"mlm\")")),
            Some(ModelSpec::ModernBert { .. }) if pair_head => Err(InitError::Architecture("objective.sentence_pair: ModernBERT has no next-sentence head (it pre-trains with MLM alone): set objective.sentence_pair = \"none\"")),
            Some(m @ ModelSpec::ModernBert { .. }) => Ok(m),
            Some(ModelSpec::Bert { .. }) if matches!(want, ModelSpec::ModernBert { .. }) => Err(InitError::Architecture("model.architecture: \"modernbert\" does not fit a BERT-family starting point (a start keeps its own architecture: remove the key)")),
            Some(ModelSpec::Bert { config, .. }) if config.is_electra() => Err(InitError::Architecture("init.hf: an ELECTRA discriminator has no MLM head to continue MLM pre-training with (replaced-token detection, objective.kind = \"electra\", needs its generator too: it continues our own ELECTRA checkpoints); start fine-tuning from it instead")),
            Some(ModelSpec::Bert { config, .. }) if config.is_roberta() && pair_head => Err(InitError::Architecture("objective.sentence_pair: RoBERTa has no next-sentence head (it pre-trains with MLM alone): set objective.sentence_pair = \"none\"")),
            Some(ModelSpec::Bert { config, .. }) => Ok(ModelSpec::Bert { config, pair_head }),
        }
    }
}

/// `model.hidden_dropout` / `model.attention_dropout` when the file (or `--set`) gives them:
/// they override the starting point's, as `from_pretrained(..., hidden_dropout_prob=0.0)`
/// does in `transformers`.
pub fn dropout_overrides(table: &toml::Table) -> (Option<f64>, Option<f64>) {
    let get = |k: &str| table.get("model").and_then(|m| m.get(k)).and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)));
    (get("hidden_dropout"), get("attention_dropout"))
}

/// Applies the file's overrides to the starting point's model: [`dropout_overrides`] in
/// either architecture, and for BERT `model.initializer_range` (it only draws the weights the
/// starting point lacks, such as a new head).
pub fn apply_overrides(model: &mut ModelSpec, table: &toml::Table) {
    let (hidden, attention) = dropout_overrides(table);
    let (h, a) = match model {
        ModelSpec::Bert { config, .. } => {
            if let Some(r) = table.get("model").and_then(|m| m.get("initializer_range")).and_then(toml::Value::as_float) {
                config.initializer_range = r;
            }
            (&mut config.hidden_dropout_prob, &mut config.attention_probs_dropout_prob)
        }
        ModelSpec::Glm { config } => (&mut config.hidden_dropout, &mut config.attention_dropout),
        ModelSpec::Electra { pair } => {
            let g = &mut pair.generator;
            if let Some(v) = hidden {
                g.hidden_dropout_prob = v;
            }
            if let Some(v) = attention {
                g.attention_probs_dropout_prob = v;
            }
            (&mut pair.discriminator.hidden_dropout_prob, &mut pair.discriminator.attention_probs_dropout_prob)
        }
        ModelSpec::ModernBert { config } => {
            if let Some(v) = hidden {
                (config.embedding_dropout, config.mlp_dropout) = (v, v);
            }
            if let Some(r) = table.get("model").and_then(|m| m.get("initializer_range")).and_then(toml::Value::as_float) {
                config.initializer_range = r;
            }
            (&mut config.classifier_dropout, &mut config.attention_dropout)
        }
    };
    if let Some(v) = hidden {
        *h = v;
    }
    if let Some(v) = attention {
        *a = v;
    }
}

/// `[model]` sizes the file sets that differ from the starting point's: the architecture comes
/// from `[init]`, so a size may be restated but not changed.
pub fn size_conflicts(table: &toml::Table, start: &ModelSpec) -> Vec<String> {
    let Some(model) = table.get("model").and_then(toml::Value::as_table) else { return Vec::new() };
    let bert = |c: &BertConfig| {
        let sizes = vec![
            ("hidden_size", c.hidden_size),
            ("num_layers", c.num_hidden_layers),
            ("num_heads", c.num_attention_heads),
            ("intermediate_size", c.intermediate_size),
            ("max_position_embeddings", c.max_position_embeddings),
            ("type_vocab_size", c.type_vocab_size),
        ];
        (sizes, Some(c.layer_norm_eps))
    };
    let (sizes, eps) = match start {
        ModelSpec::Bert { config: c, .. } => bert(c),
        // The sizes `[model]` describes are the discriminator's.
        ModelSpec::Electra { pair } => bert(&pair.discriminator),
        ModelSpec::Glm { config: c } => (
            vec![
                ("hidden_size", c.hidden_size),
                ("num_layers", c.num_layers),
                ("num_heads", c.num_attention_heads),
                ("intermediate_size", c.intermediate_size),
                ("max_position_embeddings", c.max_sequence_length),
            ],
            None,
        ),
        ModelSpec::ModernBert { config: c } => (
            vec![
                ("hidden_size", c.hidden_size),
                ("num_layers", c.num_hidden_layers),
                ("num_heads", c.num_attention_heads),
                ("intermediate_size", c.intermediate_size),
                ("max_position_embeddings", c.max_position_embeddings),
                ("local_attention", c.local_attention),
                ("global_attn_every_n_layers", c.global_attn_every_n_layers),
            ],
            Some(c.norm_eps),
        ),
    };
    let mut out: Vec<String> = sizes
        .iter()
        .filter_map(|(k, want)| {
            let got = model.get(*k)?.as_integer()?;
            (got != *want).then(|| format!("model.{k}: {got} differs from the starting point's {want} (the architecture comes from [init]; remove the key)"))
        })
        .collect();
    if let (Some(want), Some(got)) = (eps, model.get("layer_norm_eps").and_then(toml::Value::as_float)) {
        if got != want {
            out.push(format!("model.layer_norm_eps: {got} differs from the starting point's {want} (remove the key)"));
        }
    }
    out
}

/// Locates `[init]`: `None` without one.
///
/// # Errors
/// [`InitError`], whose message starts with the key (`init.checkpoint: ...`, `init.hf: ...`).
pub fn resolve_start(init: &InitConfig) -> Result<Option<Start>, InitError> {
    let (ck, hf) = (!init.checkpoint.as_os_str().is_empty(), !init.hf.as_os_str().is_empty());
    if ck && hf {
        return Err(InitError::Both);
    }
    if init.reinitialize && !ck && !hf {
        return Err(InitError::ReinitializeAlone);
    }
    if ck {
        let (dir, state) = crate::checkpoint::resume::locate(&init.checkpoint).map_err(InitError::Checkpoint)?;
        let tok = state.config.pointer("/tokenizer/path").and_then(|v| v.as_str()).map(PathBuf::from);
        // A checkpoint of ours carries its tokenizer beside the weights when it can.
        let tok = if dir.join("tokenizer.json").exists() { Some(dir.join("tokenizer.json")) } else { tok };
        let model = if state.model.get("architecture").and_then(|a| a.as_str()) == Some("BertForTask") {
            // What a task checkpoint's `state.json` says of its encoder and tokenizer.
            let spec: crate::finetune::task::TaskSpec = serde_json::from_value(state.model.clone()).map_err(|source| InitError::Unreadable { dir: dir.clone(), what: "task", source })?;
            let encoder = match spec.encoder() {
                ModelSpec::Glm { .. } => ModelSpec::Bert { config: spec.config.clone(), pair_head: false },
                other => other,
            };
            return Ok(Some(Start { source: InitSource::Checkpoint(dir), model: StartModel::Task(encoder), tokenizer: Some(spec.tokenizer) }));
        } else {
            serde_json::from_value::<ModelSpec>(state.model.clone()).map_err(|source| InitError::Unreadable { dir: dir.clone(), what: "model", source })?
        };
        return Ok(Some(Start { source: InitSource::Checkpoint(dir), model: StartModel::Pretrain(model), tokenizer: tok }));
    }
    if hf {
        let dir = init.hf.clone();
        let path = dir.join("config.json");
        let hf_err = |source: Box<dyn std::error::Error + Send + Sync>| InitError::HfConfig { path: path.clone(), source };
        let text = std::fs::read_to_string(&path).map_err(|e| hf_err(e.into()))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| hf_err(e.into()))?;
        let (model_type, architectures) = architecture_of(&value);
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(InitError::Unsupported { path, model_type, architectures: if architectures.is_empty() { "no architectures listed".into() } else { architectures } });
        }
        let cfg = if model_type == "modernbert" {
            if let Some(what) = crate::model::modernbert::unbuilt_switch(&value) {
                return Err(hf_err(what.into()));
            }
            ModelSpec::ModernBert { config: serde_json::from_value(value).map_err(|e| hf_err(e.into()))? }
        } else {
            ModelSpec::Bert { config: serde_json::from_value(value).map_err(|e| hf_err(e.into()))?, pair_head: false }
        };
        tracing::info!(dir = %dir.display(), model_type, architectures, "starting point: a Hugging Face folder");
        if !dir.join("model.safetensors").exists() && !dir.join(SHARD_INDEX).exists() {
            return Err(InitError::NoSafetensors(dir));
        }
        let tok = ["tokenizer.json", "vocab.txt"].iter().map(|f| dir.join(f)).find(|p| p.exists());
        return Ok(Some(Start { source: InitSource::Hf(dir), model: StartModel::Hf(cfg), tokenizer: tok }));
    }
    Ok(None)
}

/// Loads `source`'s weights into `vs` by name (nothing for a fresh start).
///
/// # Errors
/// [`InitError`] naming the file or a mis-shaped tensor.
pub fn load_start(vs: &nn::VarStore, source: &InitSource) -> Result<LoadReport, InitError> {
    match source {
        InitSource::Fresh => Ok(LoadReport { loaded: 0, missing: Vec::new(), unused: Vec::new() }),
        InitSource::Checkpoint(dir) => load_into(vs, &dir.join("model.safetensors")),
        InitSource::Hf(dir) => load_files(vs, &weight_files(dir)?),
    }
}

/// The index `save_pretrained` writes beside the shards of a large model.
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// A Hugging Face folder's weight files: `model.safetensors`, else the shards its
/// `model.safetensors.index.json` names (each once, in the index's order of first use).
///
/// # Errors
/// [`InitError::ShardIndex`] for an index that cannot be read or names no shard.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    let single = dir.join("model.safetensors");
    let index = dir.join(SHARD_INDEX);
    if single.exists() || !index.exists() {
        return Ok(vec![single]);
    }
    let bad = |source: Box<dyn std::error::Error + Send + Sync>| InitError::ShardIndex { path: index.clone(), source };
    let text = std::fs::read_to_string(&index).map_err(|e| bad(e.into()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.into()))?;
    let map = value.get("weight_map").and_then(serde_json::Value::as_object).ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for shard in map.values() {
        let name = shard.as_str().filter(|n| !n.is_empty() && !n.contains('/') && !n.contains('\\')).ok_or_else(|| bad(format!("`{shard}` is not a file name in the folder").into()))?;
        let file = dir.join(name);
        if !files.contains(&file) {
            files.push(file);
        }
    }
    if files.is_empty() {
        return Err(bad("the `weight_map` is empty".into()));
    }
    Ok(files)
}

/// For a folder of PyTorch pickles (`pytorch_model.bin`, or shards of one): how to write
/// safetensors with `transformers` itself (pickles are Python objects; reading them means
/// running Python).
fn convert_hint(dir: &Path) -> String {
    let pickled = dir.join("pytorch_model.bin").exists() || dir.join("pytorch_model.bin.index.json").exists();
    if pickled {
        format!("; it has PyTorch weights (pytorch_model.bin): write model.safetensors with `AutoModelForMaskedLM.from_pretrained(\"{0}\").save_pretrained(\"{0}\")` (or the Auto class of its head)", dir.display())
    } else {
        String::new()
    }
}

/// Hugging Face `BertModel` / `RobertaModel` / `ElectraModel` / `ModernBertModel` files name
/// tensors without the `bert.` / `roberta.` / `electra.` / `model.` prefix (`encoder` is the
/// model's).
fn hf_name(name: &str, encoder: &str) -> String {
    if ["embeddings.", "encoder.", "pooler.", "embeddings_project.", "layers.", "final_norm."].iter().any(|p| name.starts_with(p)) {
        format!("{encoder}.{name}")
    } else {
        name.to_owned()
    }
}

/// Copies tensors from a safetensors file into `vs` by name (with the HF prefix fix).
///
/// # Errors
/// [`InitError`] naming the file, or a tensor whose shape differs.
pub fn load_into(vs: &nn::VarStore, file: &Path) -> Result<LoadReport, InitError> {
    load_files(vs, &[file.to_owned()])
}

/// [`load_into`] from the tensors of several files (a sharded model's), each error naming the
/// file the tensor came from.
fn load_files(vs: &nn::VarStore, files: &[PathBuf]) -> Result<LoadReport, InitError> {
    let encoder = ["roberta", "electra", "model"].into_iter().find(|p| vs.variables().keys().any(|k| k.starts_with(&format!("{p}.")))).unwrap_or("bert");
    let mut tensors: HashMap<String, (Tensor, &Path)> = HashMap::new();
    for file in files {
        let read = Tensor::read_safetensors(file).map_err(|source| InitError::Read { file: file.to_owned(), source })?;
        // Buffers, and RoBERTa's decoder (tied to the word embeddings, its bias to `lm_head.bias`).
        tensors.extend(read.into_iter().filter(|(k, _)| !k.ends_with("position_ids") && !k.starts_with("lm_head.decoder.")).map(|(k, v)| (hf_name(&k, encoder), (v, file.as_path()))));
    }
    let mut report = LoadReport::default();
    let mut used = std::collections::HashSet::new();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| -> Result<(), InitError> {
        for (name, mut var) in vars {
            match tensors.get(&name) {
                Some((t, _)) if t.size() == var.size() => {
                    var.copy_(&t.to_device(var.device()).to_kind(var.kind()));
                    used.insert(name);
                    report.loaded += 1;
                }
                Some((t, file)) => return Err(InitError::Shape { file: file.to_path_buf(), name, got: t.size(), want: var.size() }),
                None => report.missing.push(name),
            }
        }
        Ok(())
    })?;
    report.unused = tensors.keys().filter(|k| !used.contains(*k)).cloned().collect();
    report.unused.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder with a BERT `config.json` and no weights yet, and an `[init]` naming it.
    fn hf_folder() -> (tempfile::TempDir, crate::config::InitConfig) {
        let d = tempfile::tempdir().unwrap();
        let mut config = serde_json::to_value(BertConfig::default()).unwrap();
        config["architectures"] = serde_json::json!(["BertForMaskedLM"]);
        std::fs::write(d.path().join("config.json"), config.to_string()).unwrap();
        let init = crate::config::InitConfig { hf: d.path().to_owned(), ..Default::default() };
        (d, init)
    }

    /// A Hugging Face folder without `model.safetensors` says how to get one from PyTorch
    /// pickles.
    #[test]
    fn a_folder_without_safetensors_says_how_to_write_them() {
        let (d, init) = hf_folder();
        let message = || resolve_start(&init).map(|s| s.is_some()).expect_err("no weights is an error").to_string();
        assert!(message().ends_with("(only safetensors is read)"), "{}", message());
        std::fs::write(d.path().join("pytorch_model.bin"), b"").unwrap();
        assert!(message().contains("has PyTorch weights") && message().contains(".save_pretrained("), "{}", message());
    }

    /// A sharded folder (`save_pretrained` of a large model) loads from its shards as one file
    /// would; a tensor of the wrong shape names its shard; a broken index is named.
    #[test]
    fn a_sharded_folder_loads_from_its_shards() {
        let (d, init) = hf_folder();
        let (a, b) = (Tensor::from_slice(&[1.0f32, 2.0]), Tensor::from_slice(&[3.0f32, 4.0, 5.0]));
        Tensor::write_safetensors(&[("embeddings.a", &a)], d.path().join("model-00001-of-00002.safetensors")).unwrap();
        Tensor::write_safetensors(&[("cls.b", &b)], d.path().join("model-00002-of-00002.safetensors")).unwrap();
        let index = serde_json::json!({"metadata": {"total_size": 20}, "weight_map": {"embeddings.a": "model-00001-of-00002.safetensors", "cls.b": "model-00002-of-00002.safetensors"}});
        std::fs::write(d.path().join(SHARD_INDEX), index.to_string()).unwrap();
        assert!(matches!(resolve_start(&init), Ok(Some(_))), "a sharded folder is a starting point");
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let (x, y) = (vs.root().sub("bert").sub("embeddings").zeros("a", &[2]), vs.root().sub("cls").zeros("b", &[3]));
        let report = load_start(&vs, &InitSource::Hf(d.path().to_owned())).unwrap();
        assert_eq!((report.loaded, report.missing.len(), report.unused.len()), (2, 0, 0));
        assert_eq!((Vec::<f32>::try_from(&x).unwrap(), Vec::<f32>::try_from(&y).unwrap()), (vec![1.0, 2.0], vec![3.0, 4.0, 5.0]));
        let wrong = nn::VarStore::new(tch::Device::Cpu);
        let _ = wrong.root().sub("cls").zeros("b", &[4]);
        let e = load_start(&wrong, &InitSource::Hf(d.path().to_owned())).unwrap_err().to_string();
        assert!(e.contains("model-00002-of-00002.safetensors") && e.contains("cls.b"), "{e}");
        for broken in ["{}", r#"{"weight_map": {"x": "../elsewhere.safetensors"}}"#, r#"{"weight_map": {}}"#, "not json"] {
            std::fs::write(d.path().join(SHARD_INDEX), broken).unwrap();
            let e = load_start(&vs, &InitSource::Hf(d.path().to_owned())).unwrap_err().to_string();
            assert!(e.contains(SHARD_INDEX), "{broken}: {e}");
        }
    }
}
