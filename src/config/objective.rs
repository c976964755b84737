//! `[objective]`: what pre-training corrupts and predicts (MLM, GLM, ELECTRA; masking rates,
//! units, sentence pairs) and each objective's own table.

use serde::{Deserialize, Serialize};

/// Pre-training objective.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObjectiveKind {
    /// BERT masked language modelling (optionally with NSP or SOP).
    Mlm,
    /// GLM autoregressive blank infilling.
    Glm,
    /// ELECTRA's replaced-token detection: a small generator fills MLM's masks, the encoder
    /// tells every token replaced or original (`[objective.electra]`).
    Electra,
}

/// What MLM chooses to mask.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MaskUnit {
    /// Single tokens.
    Token,
    /// Whole words (all sub-tokens of a chosen word), from the tokenizer's word ids.
    Word,
    /// SpanBERT spans of whole words.
    Span,
}

/// The sentence-pair task trained beside MLM.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SentencePair {
    /// Single segments, no pair task.
    None,
    /// Next sentence prediction.
    Nsp,
    /// Sentence-order prediction.
    Sop,
}

/// `[objective.glm]`: GLM blank infilling (defaults from THUDM/GLM `arguments.py`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GlmObjectiveConfig {
    /// Chance a batch uses token-level spans.
    pub bert_prob: f64,
    /// Chance a batch uses sentence-level spans (the rest is document level).
    pub gap_sentence_prob: f64,
    /// Share of tokens covered by token-level spans (a floor).
    pub mask_ratio: f64,
    /// Poisson lambda of token-level span lengths.
    pub avg_block_length: f64,
    /// Span lengths are drawn from 1..max_block_length-1.
    pub max_block_length: usize,
    /// Share of tokens covered by sentence-level spans.
    pub gap_sentence_ratio: f64,
    /// Document level: the blank is at least this share of the shortest sample.
    pub gpt_min_ratio: f64,
    /// Document level: chance of the prefix-LM layout instead of one blank at a random place.
    pub gpt_infill_prob: f64,
    /// Part B spans in random order (the paper), or in text order.
    pub shuffle_blocks: bool,
}

impl Default for GlmObjectiveConfig {
    fn default() -> Self {
        GlmObjectiveConfig {
            bert_prob: 0.5,
            gap_sentence_prob: 0.0,
            mask_ratio: 0.15,
            avg_block_length: 3.0,
            max_block_length: 40,
            gap_sentence_ratio: 0.15,
            gpt_min_ratio: 0.5,
            gpt_infill_prob: 0.5,
            shuffle_blocks: true,
        }
    }
}

/// How MLM positions are chosen.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Google's script: exactly `min(max_predictions, max(1, round(len * mask_prob)))` positions.
    Exact,
    /// Hugging Face's collator: each position independently with probability `mask_prob`.
    Bernoulli,
}

/// `[objective]`
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    /// Which objective.
    pub kind: ObjectiveKind,
    /// Share of (non-special) tokens scored.
    pub mask_prob: f64,
    /// Of the scored tokens, the share replaced by `[MASK]`.
    pub mask_token_prob: f64,
    /// Of the scored tokens, the share replaced by a random token (the rest stay unchanged).
    pub random_token_prob: f64,
    /// `exact` or `bernoulli`.
    pub selection: Selection,
    /// Cap on scored positions per sequence for `exact` (0: no cap).
    pub max_predictions: usize,
    /// `token`, `word` (whole-word masking) or `span` (SpanBERT).
    pub unit: MaskUnit,
    /// SpanBERT geometric parameter.
    pub span_p: f64,
    /// SpanBERT longest span, in words.
    pub span_max: usize,
    /// `none`, `nsp` or `sop`.
    pub sentence_pair: SentencePair,
    /// Pair construction: chance of a shorter target length.
    pub short_seq_prob: f64,
    /// GLM settings (with `kind = "glm"`).
    pub glm: GlmObjectiveConfig,
    /// ELECTRA settings (with `kind = "electra"`).
    pub electra: ElectraObjectiveConfig,
}

/// `[objective.electra]`: replaced-token detection (defaults from the paper and
/// google-research/electra's `configure_pretraining.py`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ElectraObjectiveConfig {
    /// The generator's hidden size; 0 takes `generator_fraction` of the discriminator's.
    pub generator_hidden_size: i64,
    /// The generator's width as a fraction of the discriminator's (the paper: 1/4 to 1/2).
    pub generator_fraction: f64,
    /// λ: the weight of the discriminator's loss against the generator's.
    pub rtd_weight: f64,
    /// The generator's sampling temperature.
    pub temperature: f64,
}

impl Default for ElectraObjectiveConfig {
    fn default() -> Self {
        ElectraObjectiveConfig { generator_hidden_size: 0, generator_fraction: 0.25, rtd_weight: 50.0, temperature: 1.0 }
    }
}

impl ElectraObjectiveConfig {
    /// The generator's width for a discriminator `hidden` wide, a whole number of heads of
    /// `head_dim`.
    pub fn generator_width(&self, hidden: i64, head_dim: i64) -> i64 {
        let want = if self.generator_hidden_size > 0 { self.generator_hidden_size } else { (hidden as f64 * self.generator_fraction).round() as i64 };
        let head_dim = head_dim.max(1);
        (want.saturating_add(head_dim / 2) / head_dim).max(1).saturating_mul(head_dim)
    }
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            kind: ObjectiveKind::Mlm,
            mask_prob: 0.15,
            mask_token_prob: 0.8,
            random_token_prob: 0.1,
            selection: Selection::Exact,
            max_predictions: 0,
            unit: MaskUnit::Token,
            span_p: 0.2,
            span_max: 10,
            sentence_pair: SentencePair::None,
            short_seq_prob: 0.1,
            glm: GlmObjectiveConfig::default(),
            electra: ElectraObjectiveConfig::default(),
        }
    }
}
