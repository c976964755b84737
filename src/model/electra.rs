//! ELECTRA's pre-training pair as `transformers` names it: the discriminator
//! (`ElectraForPreTraining`: the encoder under `electra.*` and `discriminator_predictions`, a
//! dense layer, GELU and one logit per token: "was this token replaced?") and a smaller
//! generator (`ElectraForMaskedLM` under `generator.*`: its own blocks, the prediction head
//! `generator_predictions` back to the embedding width, and the decoder tied to the word
//! embeddings with its own bias `generator_lm_head.bias`).
//!
//! The two share the token, position and token-type embeddings and their LayerNorm, as in the
//! paper (section 3.2): one set of variables read by both graphs, so their gradients add up
//! and AdamW keeps one set of moments. Export writes the discriminator's folder and, beside
//! it, the generator's, each with a copy of those embeddings (`src/export.rs`).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

use super::bert::{Bert, BertConfig};

/// The pair's sizes: the discriminator's (`model_type = "electra"`) and the generator's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectraPair {
    /// The discriminator, the encoder fine-tuning starts from.
    pub discriminator: BertConfig,
    /// The generator: the discriminator's depth, embeddings and vocabulary, a narrower width.
    pub generator: BertConfig,
}

impl ElectraPair {
    /// A generator `hidden` wide for `discriminator` (ELECTRA's recipe: a quarter to a third
    /// of the discriminator's width): heads and feed-forward width scaled by the same fraction
    /// (at least one head of the discriminator's head width), the same depth, embeddings,
    /// vocabulary and dropout.
    pub fn with_generator_width(discriminator: BertConfig, hidden: i64) -> Self {
        // Sizes a config check has yet to refuse (zero heads, huge widths) must not panic here.
        let head_dim = (discriminator.hidden_size / discriminator.num_attention_heads.max(1)).max(1);
        let heads = (hidden / head_dim).max(1);
        let scaled = discriminator.intermediate_size as i128 * hidden as i128 / discriminator.hidden_size.max(1) as i128;
        let intermediate = scaled.clamp(1, i64::MAX as i128) as i64;
        let generator = BertConfig {
            hidden_size: hidden,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            embedding_size: Some(discriminator.embedding_width()),
            ..discriminator.clone()
        };
        ElectraPair { discriminator, generator }
    }
}

/// The pair's networks.
pub struct ElectraForPreTraining {
    /// The discriminator's encoder (`electra.*`).
    pub discriminator: Bert,
    dense: nn::Linear,
    dense_prediction: nn::Linear,
    /// The generator's encoder (`generator.electra.*`), reading the discriminator's embeddings.
    pub generator: Bert,
    gen_dense: nn::Linear,
    gen_norm: nn::LayerNorm,
    gen_bias: Tensor,
}

fn linear(p: nn::Path, i: i64, o: i64, std: f64) -> nn::Linear {
    nn::linear(p, i, o, nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: std }, bs_init: Some(nn::Init::Const(0.0)), bias: true })
}

impl ElectraForPreTraining {
    /// Creates the variables under `root` with `transformers`' names (the generator's under
    /// `generator.`).
    pub fn new(root: &nn::Path, pair: &ElectraPair) -> Self {
        let (d, g) = (&pair.discriminator, &pair.generator);
        let discriminator = Bert::new(root / "electra", d);
        let p = root / "discriminator_predictions";
        let dense = linear(&p / "dense", d.hidden_size, d.hidden_size, d.initializer_range);
        let dense_prediction = linear(&p / "dense_prediction", d.hidden_size, 1, d.initializer_range);
        let gr = root / "generator";
        let generator = Bert::sharing_embeddings(&gr / "electra", g, &discriminator);
        let w = g.embedding_width();
        let gen_dense = linear(&gr / "generator_predictions" / "dense", g.hidden_size, w, g.initializer_range);
        let gen_norm = nn::layer_norm(&gr / "generator_predictions" / "LayerNorm", vec![w], nn::LayerNormConfig { eps: g.layer_norm_eps, ..Default::default() });
        let gen_bias = (&gr / "generator_lm_head").zeros("bias", &[g.vocab_size]);
        ElectraForPreTraining { discriminator, dense, dense_prediction, generator, gen_dense, gen_norm, gen_bias }
    }

    /// The generator's vocabulary logits of its hidden states `[.., generator hidden]`.
    pub fn generator_logits(&self, hidden: &Tensor) -> Tensor {
        let h = self.gen_norm.forward(&self.gen_dense.forward(hidden).gelu("none"));
        h.linear(self.discriminator.word_embeddings(), Some(&self.gen_bias))
    }

    /// The discriminator's "replaced" logit per position `[..]` of hidden states `[.., hidden]`.
    pub fn replaced_logits(&self, hidden: &Tensor) -> Tensor {
        self.dense_prediction.forward(&self.dense.forward(hidden).gelu("none")).squeeze_dim(-1)
    }
}
