//! The pre-training workload: a corpus (text files, or a prepared memory-mapped dataset) with
//! its held-out documents, the corruption of the objective (MLM with NSP / SOP, or GLM), and
//! the model it trains; resolved from the config in named steps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Phase, RunContext, Workload};
use crate::config::{self, ObjectiveKind, RunConfig, SentencePair};
use crate::data::pairs::PairTask;
use crate::data::prepared::{is_prepared, PreparedData};
use crate::data::source::{document_offsets, FileSpan, ReadSettings, MANIFEST};
use crate::data::stream::{Corpus, Cursor, ExampleSource, ExampleStream, Layout, OpenSource, StreamSettings};
use crate::data::tokenize::TextTokenizer;
use crate::init::{InitSource, Start};
use crate::masking::collate::{Corruption, MaskContext};
use crate::masking::glm::{GlmIds, GlmSettings};
use crate::masking::mlm::MlmSettings;
use crate::model::bert::BertConfig;
use crate::model::modernbert::ModernBertConfig;
use crate::model::glm::GlmConfig;
use crate::model::electra::ElectraPair;
use crate::objective::electra::{Electra, ElectraCollator, ElectraSettings};
use crate::objective::{BuiltinCollator, Collator, ModelSpec, Objective, ObjectiveNames, Pretraining};
use crate::rng::Purpose;

/// A pre-training corpus and the objective's corruption.
pub struct PretrainPlan {
    /// Training input.
    pub train_spans: Vec<FileSpan>,
    /// Held-out input (may be empty: then no evaluation).
    pub eval_spans: Vec<FileSpan>,
    /// The prepared dataset the spans refer to (`data.format = "prepared"`), memory-mapped;
    /// `None`: the spans are text files, tokenized as they are read.
    pub prepared: Option<Arc<PreparedData>>,
    /// Names of the objective's parts (`mlm` + `nsp`, `glm`, ...).
    pub names: ObjectiveNames,
    /// GLM's special ids (with `objective.kind = "glm"`).
    pub glm_ids: Option<GlmIds>,
    /// ELECTRA's loss settings (with `objective.kind = "electra"`).
    pub electra: Option<ElectraSettings>,
    /// `[[probe]]`s, resolved against the tokenizer and model.
    pub probes: Vec<super::probe::Probe>,
}

/// A resolved pre-training workload with what the rest of the plan takes from it.
pub struct Resolved {
    /// The workload.
    pub plan: PretrainPlan,
    /// The tokenizer (GLM's special tokens added).
    pub tokenizer: Arc<TextTokenizer>,
    /// The model: from `[model]`, or the starting point's architecture.
    pub model: ModelSpec,
    /// Starting weights.
    pub init: InitSource,
}

/// Resolves the pre-training part of a config; `None` when `problems` has any (each with its
/// key path).
pub fn resolve(c: &RunConfig, table: &toml::Table, problems: &mut Vec<String>) -> Option<Resolved> {
    let start = crate::init::resolve_start(&c.init).map_err(|e| problems.push(crate::error_chain(&e))).unwrap_or(None);
    if c.data.train.is_empty() {
        problems.push("data.train: no training files given".into());
    }
    let prepared_dir = prepared_dir(&c.data).map_err(|e| problems.push(e.to_string())).unwrap_or(None);
    let (mut train_spans, mut eval_spans) = match &prepared_dir {
        None => text_spans(&c.data, problems),
        Some(_) => (Vec::new(), Vec::new()),
    };
    let tokenizer = super::load_tokenizer(c, start.as_ref().and_then(|s| s.tokenizer.as_ref()), problems).map(|(t, _)| t);
    let mut tokenizer = tokenizer.filter(|_| problems.is_empty())?;
    let prepared = match &prepared_dir {
        Some(dir) => {
            let (data, train, eval) = open_prepared(dir, &c.data, &tokenizer).map_err(|p| problems.extend(p)).ok()?;
            (train_spans, eval_spans) = (train, eval);
            Some(data)
        }
        None => None,
    };
    let glm_ids = match c.objective.kind {
        ObjectiveKind::Glm => Some(add_glm_tokens(&mut tokenizer, problems)?),
        ObjectiveKind::Mlm | ObjectiveKind::Electra => None,
    };
    let tokenizer = Arc::new(tokenizer);
    let (model, names) = model_of(c, &tokenizer);
    let (model, init) = continued(start, model, table).map_err(|p| problems.extend(p)).ok()?;
    let init = if c.init.reinitialize { InitSource::Fresh } else { init };
    let probes = super::probe::resolve(c, &tokenizer, &model, problems);
    let e = &c.objective.electra;
    let electra = (c.objective.kind == ObjectiveKind::Electra).then_some(ElectraSettings { rtd_weight: e.rtd_weight, temperature: e.temperature });
    Some(Resolved { plan: PretrainPlan { train_spans, eval_spans, prepared, names, glm_ids, electra, probes }, tokenizer, model, init })
}

/// `[model]` sizes and `[objective]` settings that pre-training reads.
pub fn problems(c: &RunConfig) -> Vec<String> {
    let mut problems = model_problems(c);
    problems.extend(objective_problems(c));
    problems
}

fn model_problems(c: &RunConfig) -> Vec<String> {
    let m = &c.model;
    let glm = c.objective.kind == ObjectiveKind::Glm;
    [
        (c.train.max_seq_len as i64 <= m.max_position_embeddings, "train.max_seq_len: must not exceed model.max_position_embeddings"),
        (m.hidden_size > 0, "model.hidden_size: must be positive"),
        (m.num_layers > 0, "model.num_layers: must be positive"),
        (m.num_heads > 0, "model.num_heads: must be positive"),
        (m.num_heads > 0 && m.hidden_size % m.num_heads.max(1) == 0, "model.num_heads: must divide model.hidden_size"),
        (m.intermediate_size > 0, "model.intermediate_size: must be positive"),
        (
            !glm || (c.train.max_seq_len as i64) < m.max_position_embeddings,
            "model.max_position_embeddings: GLM needs more than train.max_seq_len (the prefix-LM layout uses position max_seq_len)",
        ),
        (matches!(m.architecture.as_str(), "bert" | "modernbert"), "model.architecture: must be \"bert\" or \"modernbert\""),
        (!(glm && m.architecture == "modernbert"), "model.architecture: GLM is its own architecture (objective.kind = \"glm\" takes model.architecture = \"bert\", the default)"),
        (
            m.architecture != "modernbert" || c.objective.sentence_pair == SentencePair::None,
            "objective.sentence_pair: ModernBERT has no next-sentence head (it pre-trains with MLM alone): set objective.sentence_pair = \"none\"",
        ),
        (!(c.objective.kind == ObjectiveKind::Electra && m.architecture != "bert"), "model.architecture: ELECTRA's pair is BERT-family (leave model.architecture out)"),
        (m.architecture != "modernbert" || (m.hidden_size / m.num_heads.max(1)) % 2 == 0, "model.num_heads: ModernBERT's rotary positions need an even head width (hidden_size / num_heads)"),
        (m.local_attention >= 2 && m.local_attention % 2 == 0, "model.local_attention: must be an even number of at least 2 (the window, both sides together)"),
        (m.global_attn_every_n_layers >= 1, "model.global_attn_every_n_layers: must be at least 1"),
        (m.embedding_size == 0 || c.objective.kind == ObjectiveKind::Electra, "model.embedding_size: only ELECTRA's embeddings may be narrower than the blocks (objective.kind = \"electra\")"),
        (m.embedding_size >= 0, "model.embedding_size: must not be negative (0: the hidden size)"),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, m)| m.to_owned())
    .collect()
}

fn objective_problems(c: &RunConfig) -> Vec<String> {
    let o = &c.objective;
    let g = &o.glm;
    let glm = o.kind == ObjectiveKind::Glm;
    let mut problems = [
        (o.mask_prob > 0.0 && o.mask_prob < 1.0, "objective.mask_prob: must be in (0, 1)"),
        (
            o.mask_token_prob >= 0.0 && o.random_token_prob >= 0.0 && o.mask_token_prob + o.random_token_prob <= 1.0,
            "objective.mask_token_prob + objective.random_token_prob: must be within [0, 1]",
        ),
        (!(glm && o.sentence_pair != SentencePair::None), "objective.sentence_pair: GLM has no sentence-pair task (use kind = \"mlm\")"),
        (
            (0.0..=1.0).contains(&g.bert_prob) && (0.0..=1.0).contains(&g.gap_sentence_prob) && g.bert_prob + g.gap_sentence_prob <= 1.0,
            "objective.glm.bert_prob + objective.glm.gap_sentence_prob: must be within [0, 1]",
        ),
        (g.max_block_length >= 2, "objective.glm.max_block_length: must be at least 2"),
        (g.avg_block_length > 0.0, "objective.glm.avg_block_length: must be positive"),
        (o.span_p > 0.0 && o.span_p < 1.0, "objective.span_p: must be in (0, 1)"),
        (o.span_max > 0, "objective.span_max: must be positive"),
        (!(o.kind == ObjectiveKind::Electra && o.sentence_pair != SentencePair::None), "objective.sentence_pair: ELECTRA has no sentence-pair task (set objective.sentence_pair = \"none\")"),
        (o.electra.rtd_weight > 0.0 && o.electra.rtd_weight.is_finite(), "objective.electra.rtd_weight: must be positive"),
        (o.electra.temperature > 0.0 && o.electra.temperature.is_finite(), "objective.electra.temperature: must be positive"),
        (o.electra.generator_hidden_size >= 0, "objective.electra.generator_hidden_size: must not be negative (0 takes generator_fraction)"),
        (o.kind != ObjectiveKind::Electra || o.electra.generator_hidden_size <= c.model.hidden_size, "objective.electra.generator_hidden_size: must not exceed model.hidden_size (the generator is the smaller network)"),
        (o.electra.generator_fraction > 0.0 && o.electra.generator_fraction <= 1.0, "objective.electra.generator_fraction: must be in (0, 1]"),
        ((0.0..=1.0).contains(&o.short_seq_prob), "objective.short_seq_prob: must be in [0, 1]"),
        // Below 5 no pair fits, every document is passed over, and the run would stop with
        // "the corpus is empty", which sends the reader to the data.
        (o.sentence_pair == SentencePair::None || c.train.max_seq_len >= 5, "train.max_seq_len: a sentence pair needs at least 5 ([CLS] A [SEP] B [SEP], a token of each sentence)"),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, m)| m.to_owned())
    .collect::<Vec<_>>();
    // The generator's heads are the discriminator's width (google-research/electra): a width
    // the user gives must be whole heads, not rounded behind their back.
    let head_dim = c.model.hidden_size / c.model.num_heads.max(1);
    let width = o.electra.generator_hidden_size;
    if o.kind == ObjectiveKind::Electra && width > 0 && head_dim > 0 && width % head_dim != 0 && width <= c.model.hidden_size {
        let near = o.electra.generator_width(c.model.hidden_size, head_dim);
        problems.push(format!("objective.electra.generator_hidden_size: {width} is not a whole number of the discriminator's heads ({head_dim} wide: model.hidden_size / model.num_heads); {near} is the nearest"));
    }
    problems
}

/// Text files' spans: `data.train`, and `data.eval` or documents held out from the end of the
/// training files (`data.eval_holdout_docs`).
fn text_spans(d: &config::DataConfig, problems: &mut Vec<String>) -> (Vec<FileSpan>, Vec<FileSpan>) {
    let mut train: Vec<FileSpan> = crate::data::source::expand(&d.train, "data.train", problems).into_iter().map(|p| FileSpan::whole(p, d.format)).collect();
    let mut eval: Vec<FileSpan> = crate::data::source::expand(&d.eval, "data.eval", problems).into_iter().map(|p| FileSpan::whole(p, d.format)).collect();
    if d.eval_holdout_docs > 0 && !train.is_empty() {
        let read = read_settings(d);
        match hold_out(&mut train, d.eval_holdout_docs, |span| document_offsets(span, &read).map_err(|e| Box::new(e) as _)) {
            Ok(spans) => eval = spans,
            Err(e) => problems.push(format!("data.eval_holdout_docs: {}", crate::error_chain(&e))),
        }
    }
    (train, eval)
}

/// GLM's `[sop]`, `[eop]`, `[sMASK]`, `[gMASK]`, added to the vocabulary where it lacks them.
fn add_glm_tokens(tokenizer: &mut TextTokenizer, problems: &mut Vec<String>) -> Option<GlmIds> {
    let added = tokenizer.ensure_special(&["[sop]", "[eop]", "[sMASK]", "[gMASK]"]).map_err(|e| problems.push(format!("tokenizer.path: cannot add GLM's special tokens: {}", crate::error_chain(&e)))).ok()?;
    let ids = tokenizer.special_ids();
    Some(GlmIds { cls: ids.cls, mask: ids.mask, sop: added[0], eop: added[1], smask: added[2], gmask: added[3] })
}

/// The model `[model]` and `[objective]` describe, sized to the tokenizer.
fn model_of(c: &RunConfig, tokenizer: &TextTokenizer) -> (ModelSpec, ObjectiveNames) {
    let m = &c.model;
    let vocab_size = tokenizer.vocab_size() as i64;
    match c.objective.kind {
        ObjectiveKind::Mlm => {
            let pair = match c.objective.sentence_pair {
                SentencePair::None => None,
                SentencePair::Nsp => Some("nsp"),
                SentencePair::Sop => Some("sop"),
            };
            let pad = tokenizer.special_ids().pad as i64;
            if m.architecture == "modernbert" {
                let config = ModernBertConfig::from_section(m, vocab_size, pad);
                return (ModelSpec::ModernBert { config }, ObjectiveNames { lm: "mlm", pair: None });
            }
            let config = BertConfig::from_section(m, vocab_size, pad);
            (ModelSpec::Bert { config, pair_head: pair.is_some() }, ObjectiveNames { lm: "mlm", pair })
        }
        ObjectiveKind::Electra => {
            let pad = tokenizer.special_ids().pad as i64;
            let embedding_size = (m.embedding_size > 0 && m.embedding_size != m.hidden_size).then_some(m.embedding_size);
            let discriminator = BertConfig { model_type: "electra".into(), embedding_size, ..BertConfig::from_section(m, vocab_size, pad) };
            let head_dim = discriminator.hidden_size / discriminator.num_attention_heads.max(1);
            let width = c.objective.electra.generator_width(discriminator.hidden_size, head_dim);
            let pair = ElectraPair::with_generator_width(discriminator, width);
            (ModelSpec::Electra { pair }, ObjectiveNames { lm: "generator", pair: None })
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
    }
}

/// Continued pre-training: the architecture and sizes come from the starting point, the
/// file's dropout and initializer overrides apply; the vocabulary grows to the tokenizer's.
fn continued(start: Option<Start>, mut model: ModelSpec, table: &toml::Table) -> Result<(ModelSpec, InitSource), Vec<String>> {
    let vocab_size = model.vocab_size();
    let init = match start {
        Some(st) => {
            let mut problems = Vec::new();
            match st.model.pretrain_spec(&model) {
                Ok(spec) => model = spec,
                Err(e) => problems.push(e.to_string()),
            }
            if let (ModelSpec::Bert { .. } | ModelSpec::ModernBert { .. } | ModelSpec::Electra { .. }, Some(len)) = (&model, table.get("train").and_then(|t| t.get("max_seq_len")).and_then(toml::Value::as_integer)) {
                if len > model.max_positions() {
                    problems.push(format!("train.max_seq_len: {len} is longer than the starting point's positions allow ({})", model.max_positions()));
                }
            }
            problems.extend(crate::init::size_conflicts(table, &model));
            if !problems.is_empty() {
                return Err(problems);
            }
            crate::init::apply_overrides(&mut model, table);
            st.source
        }
        None => InitSource::Fresh,
    };
    match &mut model {
        ModelSpec::Bert { config: b, .. } => b.vocab_size = b.vocab_size.max(vocab_size),
        ModelSpec::ModernBert { config: b } => b.vocab_size = b.vocab_size.max(vocab_size),
        ModelSpec::Electra { pair } => {
            for b in [&mut pair.discriminator, &mut pair.generator] {
                b.vocab_size = b.vocab_size.max(vocab_size);
            }
        }
        ModelSpec::Glm { .. } => {}
    }
    Ok((model, init))
}

/// How the Loader reads records, from `[data]`.
pub fn read_settings(d: &config::DataConfig) -> ReadSettings {
    ReadSettings { text_field: d.text_field.clone(), on_error: d.on_error, max_line_bytes: d.max_line_bytes }
}

/// `data.train` does not name one prepared folder where `data.format = "prepared"` asks for it.
#[derive(Debug, thiserror::Error)]
enum PreparedDirError {
    /// A folder without a manifest.
    #[error("data.train: `{}` is not a prepared dataset folder (no {MANIFEST}); make one with `pretune data prepare`", .0.display())]
    NotPrepared(PathBuf),
    /// Not exactly one entry.
    #[error("data.train: with data.format = \"prepared\" give the one prepared folder")]
    NotOne,
}

/// Why documents could not be held out of the training files.
#[derive(Debug, thiserror::Error)]
enum HoldOutError {
    /// Fewer documents than asked for.
    #[error("the training files hold fewer than {0} documents")]
    TooFew(usize),
    /// Nothing would be left to train on.
    #[error("holding out {0} documents leaves nothing to train on")]
    NothingLeft(usize),
    /// A span's document offsets could not be read.
    #[error("cannot find the documents of {}", .0.display())]
    Offsets(PathBuf, #[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The prepared folder `data.train` names, if it names one: with `data.format = "prepared"`,
/// or (`auto`) when its one entry is a folder holding a manifest.
fn prepared_dir(d: &config::DataConfig) -> Result<Option<PathBuf>, PreparedDirError> {
    let one = match d.train.as_slice() {
        [one] => Some(Path::new(one)),
        _ => None,
    };
    match d.format {
        config::DataFormat::Prepared => match one {
            Some(dir) if is_prepared(dir) => Ok(Some(dir.to_owned())),
            Some(dir) => Err(PreparedDirError::NotPrepared(dir.to_owned())),
            None => Err(PreparedDirError::NotOne),
        },
        config::DataFormat::Auto => Ok(one.filter(|dir| is_prepared(dir)).map(Path::to_owned)),
        _ => Ok(None),
    }
}

/// Maps the prepared dataset at `dir` and derives the spans from it: its training files, and
/// held-out documents from its eval split (prepared from `data.eval`) or cut from the end of
/// the training files by `data.eval_holdout_docs`, exactly where a text run would cut them.
/// A prepared dataset with its training and held-out spans.
type Prepared = (Arc<PreparedData>, Vec<FileSpan>, Vec<FileSpan>);

fn open_prepared(dir: &Path, d: &config::DataConfig, tokenizer: &TextTokenizer) -> Result<Prepared, Vec<String>> {
    let data = PreparedData::open(dir, tokenizer, &read_settings(d)).map_err(|e| vec![format!("data.train: {}", crate::error_chain(&e))])?;
    let mut train = PreparedData::spans(&data.train);
    let mut eval = Vec::new();
    if d.eval_holdout_docs > 0 {
        let split = data.train.clone();
        eval = hold_out(&mut train, d.eval_holdout_docs, |span| {
            let f = split.file_index(&span.path).ok_or_else(|| Box::<dyn std::error::Error + Send + Sync>::from("not in the prepared dataset"))?;
            Ok(split.document_offsets(f, (span.start, span.start_line)).into_iter().filter(|&(at, _)| span.end.is_none_or(|end| at < end)).collect())
        })
        .map_err(|e| vec![format!("data.eval_holdout_docs: {}", crate::error_chain(&e))])?;
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

/// Moves the last `n` documents of the training spans into held-out spans; `offsets` lists a
/// span's `(position, line)` before each of its documents.
fn hold_out(train: &mut Vec<FileSpan>, n: usize, offsets: impl Fn(&FileSpan) -> Result<Vec<(u64, u64)>, Box<dyn std::error::Error + Send + Sync>>) -> Result<Vec<FileSpan>, HoldOutError> {
    let mut need = n;
    let mut held = Vec::new();
    while need > 0 {
        let Some(span) = train.pop() else {
            return Err(HoldOutError::TooFew(n));
        };
        let offsets = offsets(&span).map_err(|e| HoldOutError::Offsets(span.path.clone(), e))?;
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
        return Err(HoldOutError::NothingLeft(n));
    }
    held.reverse();
    Ok(held)
}

impl PretrainPlan {
    /// Settings of the training stream (`train`) or of the held-out stream.
    pub fn stream_settings(&self, cx: &RunContext, train: bool) -> StreamSettings {
        let c = cx.config;
        let o = &c.objective;
        let layout = match (o.kind, o.sentence_pair) {
            (ObjectiveKind::Glm, _) => Layout::Segments { max_tokens: c.train.max_seq_len - 1 },
            (ObjectiveKind::Mlm | ObjectiveKind::Electra, SentencePair::None) => Layout::Segments { max_tokens: c.train.max_seq_len - 2 },
            (ObjectiveKind::Mlm | ObjectiveKind::Electra, pair) => Layout::Pairs {
                max_num_tokens: c.train.max_seq_len - 3,
                short_seq_prob: o.short_seq_prob,
                task: if pair == SentencePair::Sop { PairTask::Sop } else { PairTask::Nsp },
            },
        };
        StreamSettings {
            seed: c.run.seed,
            block_docs: c.data.shuffle_block_docs,
            layout,
            read: read_settings(&c.data),
            shuffle: train,
            repeat: train,
            group_batch: if train && c.train.group_by_length { c.train.batch_size.saturating_mul(cx.world) } else { 0 },
            whole_words: o.kind != ObjectiveKind::Glm && o.unit != config::MaskUnit::Token,
        }
    }

    /// The Masker's context for the training (`Purpose::Mask`) or held-out
    /// (`Purpose::EvalMask`) data.
    pub fn mask_context(&self, cx: &RunContext, stream: Purpose) -> MaskContext {
        let o = &cx.config.objective;
        let ids = cx.tokenizer.special_ids();
        let corruption = match self.glm_ids {
            Some(glm_ids) => Corruption::Glm(GlmSettings { blanks: o.glm, ids: glm_ids }),
            None => Corruption::Mlm(MlmSettings::from_objective(o, ids.mask, cx.tokenizer.vocab_size())),
        };
        MaskContext { seed: cx.config.run.seed, stream, corruption, special: Arc::new(cx.tokenizer.special_mask().to_vec()), ids, max_seq_len: cx.config.train.max_seq_len }
    }

    /// Where the training (`train`) or held-out documents come from: the prepared dataset's
    /// split (the held-out documents cut from the training files live in its train split),
    /// else the text files through the tokenizer.
    pub fn documents(&self, cx: &RunContext, train: bool) -> Corpus {
        match &self.prepared {
            Some(p) if !train && cx.config.data.eval_holdout_docs == 0 => Corpus::Prepared(p.eval.clone().unwrap_or_else(|| p.train.clone())),
            Some(p) => Corpus::Prepared(p.train.clone()),
            None => Corpus::Text(cx.tokenizer.clone()),
        }
    }
}

impl Workload for PretrainPlan {
    fn phase(&self) -> Phase {
        Phase::Pretrain
    }

    fn train_source(&self, cx: &RunContext, cursor: Cursor) -> Box<dyn ExampleSource> {
        Box::new(ExampleStream::new(self.train_spans.clone(), self.documents(cx, true), self.stream_settings(cx, true), cursor))
    }

    fn eval_source(&self, cx: &RunContext) -> Option<OpenSource> {
        if self.eval_spans.is_empty() {
            return None;
        }
        let (spans, corpus, settings) = (self.eval_spans.clone(), self.documents(cx, false), self.stream_settings(cx, false));
        Some(Box::new(move || Box::new(ExampleStream::new(spans.clone(), corpus.clone(), settings.clone(), Cursor::default())) as Box<dyn ExampleSource>))
    }

    fn max_eval_batches(&self, cx: &RunContext) -> usize {
        cx.config.data.eval_batches
    }

    fn collator(&self, cx: &RunContext) -> Arc<dyn Collator> {
        let masking = BuiltinCollator { train: self.mask_context(cx, Purpose::Mask), eval: self.mask_context(cx, Purpose::EvalMask) };
        match self.electra {
            Some(_) => Arc::new(ElectraCollator { masking, seed: cx.config.run.seed }),
            None => Arc::new(masking),
        }
    }

    fn objective(&self, model: &ModelSpec) -> Arc<dyn Objective> {
        match (model, self.electra) {
            (ModelSpec::Electra { pair }, Some(settings)) => Arc::new(Electra { pair: pair.clone(), settings }),
            _ => Arc::new(Pretraining { spec: model.clone(), names: self.names }),
        }
    }

    fn describe_data(&self) -> String {
        let spans = format!("{} training / {} held-out file spans", self.train_spans.len(), self.eval_spans.len());
        match &self.prepared {
            Some(p) => format!("{spans} of the prepared dataset {} ({} documents, {} tokens)", p.root.display(), p.manifest.splits["train"].docs, p.manifest.splits["train"].tokens),
            None => spans,
        }
    }

    fn corpus(&self) -> Option<&PretrainPlan> {
        Some(self)
    }
    fn probes(&self) -> &[super::probe::Probe] {
        &self.probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut RunConfig)) -> Vec<String> {
        let mut c = RunConfig::default();
        f(&mut c);
        problems(&c)
    }

    #[test]
    fn a_sentence_pair_needs_room_for_both_sentences() {
        let short = |p: &[String]| p.iter().any(|p| p.starts_with("train.max_seq_len: a sentence pair"));
        for (pair, len, bad) in [(SentencePair::Nsp, 4, true), (SentencePair::Sop, 3, true), (SentencePair::Nsp, 5, false), (SentencePair::None, 3, false)] {
            let p = with(|c| {
                c.objective.sentence_pair = pair;
                c.train.max_seq_len = len;
            });
            assert_eq!(short(&p), bad, "{pair:?} at {len}: {p:?}");
        }
    }
}
