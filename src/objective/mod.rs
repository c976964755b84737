//! Objectives: what turns a raw batch into a collated one (a [`Collator`], run in the Masker
//! workers), and what builds the model that turns a device batch into losses and evaluation
//! metrics (an [`Objective`], built on the Trainer's and the Evaluator's threads). Pre-training
//! objectives (MLM, NSP / SOP, GLM) and fine-tuning tasks (classification, regression, token
//! classification, cloze) go through these same traits, and so does a user's own objective.
//!
//! Every objective returns *sums* of its per-target losses, each with what it is averaged
//! over ([`Per`]); the Trainer divides by the counts of the whole update (known on the host),
//! so gradient accumulation equals one big batch and normalising needs no sync.

pub mod electra;
pub mod eval;
pub mod flops;
mod monitor;

pub use monitor::{Direction, Monitor};

use tch::nn;
use tch::{Device, Kind, Reduction, Tensor};

use crate::batch::{HostBatch, RawBatch, IGNORE};
use crate::rng::Purpose;
use crate::model::bert::{BertConfig, BertForMaskedLM};
use crate::model::electra::{ElectraForPreTraining, ElectraPair};
use crate::model::modernbert::{ModernBertConfig, ModernBertForMaskedLM};
use crate::model::glm::{Glm, GlmConfig};

pub use eval::EvalMetrics;

/// A [`HostBatch`] moved to the device.
pub struct DeviceBatch {
    /// `[batch, seq]`
    pub input_ids: Tensor,
    /// `[batch, seq]`
    pub token_type_ids: Tensor,
    /// `[batch]`
    pub lengths: Tensor,
    /// `[n_scored]` flat positions.
    pub masked_positions: Tensor,
    /// `[n_scored]` labels.
    pub masked_labels: Tensor,
    /// GLM: `[batch, seq]` position and block-position rows, and `[batch]` Part A lengths.
    pub glm: Option<(Tensor, Tensor, Tensor)>,
    /// `[batch]` NSP / SOP labels.
    pub pair_labels: Option<Tensor>,
    /// `[examples]` class ids (classification, cloze).
    pub row_labels: Option<Tensor>,
    /// `[examples]` regression targets.
    pub row_targets: Option<Tensor>,
    /// `[n_scored]` cloze: the row of each answer token.
    pub target_rows: Option<Tensor>,
    /// Cloze: rows per example.
    pub candidates: usize,
    /// ELECTRA: `[n_scored]` uniforms for the generator's samples.
    pub sample_uniforms: Option<Tensor>,
    /// Scored tokens (host count).
    pub n_scored: usize,
    /// Rows (host count).
    pub rows: usize,
    /// Examples (host count).
    pub n_examples: usize,
}

impl DeviceBatch {
    /// Copies the buffers to `device`. On CUDA the host tensors are pinned first so the copies
    /// can run asynchronously; on CPU `from_slice` is the only copy.
    pub fn new(b: &HostBatch, device: Device) -> Self {
        let shape = [b.batch_size as i64, b.seq_len as i64];
        let up = |t: Tensor| if device.is_cuda() { t.pin_memory(device).to_device_(device, t.kind(), true, false) } else { t };
        let glm = (!b.prefix_len.is_empty()).then(|| {
            (
                up(Tensor::from_slice(&b.position_ids).view(shape)),
                up(Tensor::from_slice(&b.block_position_ids).view(shape)),
                up(Tensor::from_slice(&b.prefix_len)),
            )
        });
        let opt = |v: &[i64]| (!v.is_empty()).then(|| up(Tensor::from_slice(v)));
        DeviceBatch {
            input_ids: up(Tensor::from_slice(&b.input_ids).view(shape)),
            token_type_ids: up(Tensor::from_slice(&b.token_type_ids).view(shape)),
            lengths: up(Tensor::from_slice(&b.lengths)),
            masked_positions: up(Tensor::from_slice(&b.masked_positions)),
            masked_labels: up(Tensor::from_slice(&b.masked_labels)),
            glm,
            pair_labels: opt(&b.pair_labels),
            row_labels: opt(&b.row_labels),
            row_targets: (!b.row_targets.is_empty()).then(|| up(Tensor::from_slice(&b.row_targets))),
            target_rows: opt(&b.target_rows),
            candidates: b.candidates,
            sample_uniforms: (!b.sample_uniforms.is_empty()).then(|| up(Tensor::from_slice(&b.sample_uniforms))),
            n_scored: b.n_scored,
            rows: b.batch_size,
            n_examples: b.n_examples,
        }
    }
}

/// What a loss part is averaged over: the update's scored tokens or its examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// Scored tokens (`n_scored`): MLM, GLM, token classification.
    Target,
    /// Examples (`n_examples`): NSP / SOP, classification, regression, cloze.
    Example,
    /// Real (non-padding) tokens (`n_tokens`): ELECTRA's replaced-token detection.
    Token,
}

/// One named part of an objective's loss: a sum over this batch's targets or examples.
pub struct LossPart {
    /// Metric label and log name (`mlm`, `nsp`, `glm`, `cls`, `tag`, ...).
    pub name: &'static str,
    /// Sum of the per-target (or per-example) losses.
    pub sum: Tensor,
    /// What `sum` is divided by: scored tokens or examples of the whole batch.
    pub per: Per,
    /// Its weight in the loss minimised (ELECTRA's λ; 1 for every other part). Metrics show
    /// the part unweighted.
    pub weight: f64,
}

impl LossPart {
    /// A part of weight 1.
    pub fn new(name: &'static str, sum: Tensor, per: Per) -> Self {
        LossPart { name, sum, per, weight: 1.0 }
    }

    /// The part with weight `w` in the loss minimised.
    pub fn weighted(self, w: f64) -> Self {
        LossPart { weight: w, ..self }
    }
}

/// The model behind a pre-training objective.
// One per run and thread: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum PretrainModel {
    /// BERT with the MLM head (and a pair head for NSP / SOP).
    Bert(BertForMaskedLM),
    /// GLM with its tied output layer.
    Glm(Glm),
    /// ModernBERT with its MLM head.
    ModernBert(ModernBertForMaskedLM),
    /// ELECTRA's pair; as an MLM, its generator.
    Electra(ElectraForPreTraining),
}

/// The collating half of an objective: encodes, corrupts and collates a raw batch in a Masker
/// worker (or for the held-out split, with `Purpose::EvalMask`). It must be a pure function of
/// the batch, its randomness keyed by the examples' indices, so that the worker count and
/// resumes never change a batch.
pub trait Collator: Send + Sync + 'static {
    /// One host batch from one raw batch (keep `seq` and `cursor`).
    fn collate(&self, raw: RawBatch, stream: Purpose) -> HostBatch;
}

/// A model turning a device batch into loss parts, and held-out batches into metrics.
pub trait ObjectiveModel: Send {
    /// The loss parts of one batch (sums); the Trainer divides each by the update's count.
    fn losses(&self, batch: &DeviceBatch, train: bool) -> Vec<LossPart>;

    /// Held-out metrics over `batches` (eval mode, no grad). The default reports each part's
    /// mean loss as `{part}_loss` and their total as `loss`; objectives override it to add
    /// accuracies, F1 and the like.
    fn evaluate(&self, batches: &[HostBatch], device: Device) -> EvalMetrics {
        eval::loss_means(self, batches, device)
    }
}

/// The model-building half of an objective: creates its variables (encoder and heads) under a
/// VarStore root, on the Trainer's and the Evaluator's threads alike.
pub trait Objective: Send + Sync + 'static {
    /// Creates the variables and returns the model.
    fn build(&self, root: &nn::Path) -> Box<dyn ObjectiveModel>;
    /// What `state.json` records as the model; a resume must match it.
    fn describe(&self) -> serde_json::Value;
    /// The evaluation metric that picks the best checkpoint and drives early stopping.
    fn monitor(&self) -> Monitor {
        Monitor { metric: "loss".into(), direction: Direction::Lower }
    }
    /// Checked once the starting weights (`[init]`) are loaded, with the variables they
    /// lacked (initialised fresh): an objective that adds no weights (cloze) refuses a start
    /// missing some.
    ///
    /// # Errors
    /// What is missing, and what to start from instead.
    fn check_start(&self, missing: &[String]) -> Result<(), IncompleteStart> {
        let _ = missing;
        Ok(())
    }
    /// Model FLOPs of one forward pass over `batch`, dense-equivalent ([`crate::objective::flops`]):
    /// the numerator of MFU. The default, 0, reports no MFU (a custom objective that does not
    /// count its FLOPs).
    fn forward_flops(&self, batch: &HostBatch) -> f64 {
        let _ = batch;
        0.0
    }
}

/// Starting weights an objective cannot start from: what they lack and what to start from.
#[derive(Debug, thiserror::Error)]
#[error("{reason}, but the starting weights lack {missing:?} ({instead})")]
pub struct IncompleteStart {
    /// Why every variable must come from the start.
    pub reason: String,
    /// The variables the start lacks.
    pub missing: Vec<String>,
    /// What to start from instead.
    pub instead: String,
}

/// The built-in pre-training objectives' collator: MLM (with pairs) or GLM corruption.
pub struct BuiltinCollator {
    /// Masking for training batches.
    pub train: crate::masking::collate::MaskContext,
    /// Masking for held-out batches.
    pub eval: crate::masking::collate::MaskContext,
}

impl Collator for BuiltinCollator {
    fn collate(&self, raw: RawBatch, stream: Purpose) -> HostBatch {
        let ctx = if matches!(stream, Purpose::EvalMask) { &self.eval } else { &self.train };
        crate::masking::collate::mask_and_collate(&raw, ctx)
    }
}

/// The built-in pre-training objectives: BERT (MLM, + NSP / SOP) or GLM from the config.
pub struct Pretraining {
    /// Architecture and sizes.
    pub spec: ModelSpec,
    /// Part names.
    pub names: ObjectiveNames,
}

impl Objective for Pretraining {
    fn build(&self, root: &nn::Path) -> Box<dyn ObjectiveModel> {
        Box::new(PretrainNet { model: PretrainModel::new(root, &self.spec), names: self.names })
    }
    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }
    fn monitor(&self) -> Monitor {
        Monitor { metric: format!("{}_loss", self.names.lm), direction: Direction::Lower }
    }
    /// The encoder, the output layer on the scored positions only, and with a pair task the
    /// pooler and its two-way classifier per row.
    fn forward_flops(&self, b: &HostBatch) -> f64 {
        let d = crate::objective::flops::Dims::of(&self.spec);
        let pair = if self.names.pair.is_some() { d.linear(b.batch_size, d.hidden as usize) + d.linear(b.batch_size, 2) } else { 0.0 };
        d.encoder_of(b) + d.lm_head(b.masked_positions.len()) + pair
    }
}

/// A pre-training model with its part names: what [`Pretraining`] builds.
pub struct PretrainNet {
    /// BERT (MLM, with NSP / SOP when the config has a pair task) or GLM.
    pub model: PretrainModel,
    /// Its parts' names.
    pub names: ObjectiveNames,
}

impl ObjectiveModel for PretrainNet {
    fn losses(&self, batch: &DeviceBatch, train: bool) -> Vec<LossPart> {
        let out = self.model.sums(batch, train);
        let names = self.names;
        let mut parts = vec![LossPart::new(names.lm, out.lm, Per::Target)];
        if let (Some((sum, _)), Some(pair)) = (out.pair, names.pair) {
            parts.push(LossPart::new(pair, sum, Per::Example));
        }
        parts
    }

    fn evaluate(&self, batches: &[HostBatch], device: Device) -> EvalMetrics {
        eval::evaluate(&self.model, batches, device, self.names)
    }
}

/// Names of a pre-training objective's parts, for metric labels and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ObjectiveNames {
    /// The token-level part: `mlm` or `glm`.
    pub lm: &'static str,
    /// The pair part: `nsp`, `sop`, or none.
    pub pair: Option<&'static str>,
}

/// Token-level and pair-level loss sums of a pre-training model, with the logits evaluation
/// needs.
pub struct LossSums {
    /// Sum of the token-level cross-entropy (MLM or GLM) over scored targets.
    pub lm: Tensor,
    /// Logits at the scored positions `[n_scored, vocab]`.
    pub lm_logits: Tensor,
    /// Sum of the pair cross-entropy over rows, and the pair logits `[batch, 2]`.
    pub pair: Option<(Tensor, Tensor)>,
}

/// Sizes of either architecture.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "architecture")]
pub enum ModelSpec {
    /// BERT (Hugging Face config names); `pair_head` adds NSP / SOP.
    Bert {
        /// The encoder's sizes, as in its Hugging Face `config.json`.
        #[serde(flatten)]
        config: BertConfig,
        /// With `bert.pooler` and `cls.seq_relationship`.
        pair_head: bool,
    },
    /// GLM (GLM's names).
    Glm {
        /// GLM's sizes, with GLM's own names.
        #[serde(flatten)]
        config: GlmConfig,
    },
    /// ModernBERT (`transformers`' names; MLM only: it has no pair head).
    ModernBert {
        /// Its sizes and switches, as in its `config.json`.
        #[serde(flatten)]
        config: ModernBertConfig,
    },
    /// ELECTRA's discriminator and generator (replaced-token detection).
    Electra {
        /// Their sizes.
        #[serde(flatten)]
        pair: ElectraPair,
    },
}

impl ModelSpec {
    /// Vocabulary size.
    pub fn vocab_size(&self) -> i64 {
        match self {
            ModelSpec::Bert { config, .. } => config.vocab_size,
            ModelSpec::Glm { config } => config.vocab_size,
            ModelSpec::ModernBert { config } => config.vocab_size,
            ModelSpec::Electra { pair } => pair.discriminator.vocab_size,
        }
    }

    /// The longest input its positions allow.
    pub fn max_positions(&self) -> i64 {
        match self {
            ModelSpec::Glm { config } => config.max_sequence_length - 1,
            ModelSpec::Bert { config, .. } => config.max_positions(),
            ModelSpec::ModernBert { config } => config.max_position_embeddings,
            ModelSpec::Electra { pair } => pair.discriminator.max_positions(),
        }
    }

    /// What it is, for logs and `pretune check`: `bert`, `roberta`, `xlm-roberta`, `electra`,
    /// `modernbert` or `glm`.
    pub fn model_type(&self) -> &str {
        match self {
            ModelSpec::Bert { config, .. } => &config.model_type,
            ModelSpec::Glm { .. } => "glm",
            ModelSpec::ModernBert { config } => &config.model_type,
            ModelSpec::Electra { .. } => "electra",
        }
    }
}

impl PretrainModel {
    /// Creates the model's variables under `root`.
    pub fn new(root: &nn::Path, spec: &ModelSpec) -> Self {
        match spec {
            ModelSpec::Bert { config, pair_head: false } => PretrainModel::Bert(BertForMaskedLM::new(root, config)),
            ModelSpec::Bert { config, pair_head: true } => PretrainModel::Bert(BertForMaskedLM::with_pair_head(root, config)),
            ModelSpec::Glm { config } => PretrainModel::Glm(Glm::new(root, config)),
            ModelSpec::ModernBert { config } => PretrainModel::ModernBert(ModernBertForMaskedLM::new(root, config)),
            ModelSpec::Electra { pair } => PretrainModel::Electra(ElectraForPreTraining::new(root, pair)),
        }
    }

    /// Forward pass to the loss sums; output layers run on the scored positions only.
    pub fn sums(&self, b: &DeviceBatch, train: bool) -> LossSums {
        let (hidden, pair_logits) = match self {
            PretrainModel::Bert(m) => {
                let h = m.bert.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train);
                let pair = b.pair_labels.as_ref().and_then(|_| m.pair_logits(&h));
                (h, pair)
            }
            PretrainModel::Glm(m) => {
                let (pos, block, prefix) = b.glm.as_ref().expect("a GLM batch carries 2-D positions");
                (m.forward(&b.input_ids, pos, block, prefix, train), None)
            }
            PretrainModel::ModernBert(m) => (m.model.forward(&b.input_ids, &b.lengths, train), None),
            PretrainModel::Electra(m) => (m.generator.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train), None),
        };
        let h = hidden.view([-1, hidden.size()[2]]).index_select(0, &b.masked_positions);
        let lm_logits = match self {
            PretrainModel::Bert(m) => m.predict(&h),
            PretrainModel::Glm(m) => m.logits(&h),
            PretrainModel::ModernBert(m) => m.predict(&h),
            PretrainModel::Electra(m) => m.generator_logits(&h),
        };
        let lm = lm_logits.cross_entropy_loss::<Tensor>(&b.masked_labels, None, Reduction::Sum, IGNORE, 0.0);
        let pair = match (pair_logits, &b.pair_labels) {
            (Some(logits), Some(labels)) => Some((logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::Sum, IGNORE, 0.0), logits)),
            _ => None,
        };
        LossSums { lm, lm_logits, pair }
    }
}

/// Accuracy helpers on the device.
pub(crate) fn correct(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.argmax(-1, false).eq_tensor(labels).sum(Kind::Int64)
}
