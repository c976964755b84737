//! Model FLOPs of an update, dense-equivalent, in the convention of PaLM (appendix B) and
//! Megatron-LM: only matrix multiplications count, 2 FLOPs per multiply-add; a forward pass
//! over a row of `l` real tokens costs, per layer,
//! `l·(8h² + 4h·i)` (the Q, K, V and output projections, the two MLP matrices; a gated MLP,
//! ModernBERT's GeGLU, has an input matrix twice as wide: `l·(8h² + 6h·i)`) plus
//! `4h·l²` (scores and the weighted sum of values, at the row's real length, not the padded
//! one); heads add their matrices (BERT's MLM transform and decoder on the scored positions
//! only, pooler, classifiers); embeddings, norms, softmax and activations are not counted. The
//! backward pass costs twice the forward, so an update is 3 × forward (no recomputation).

use crate::batch::HostBatch;
use super::ModelSpec;

/// An update (forward + backward) costs this many forward passes.
pub const TRAIN_FACTOR: f64 = 3.0;

/// The sizes the count needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    /// Hidden size `h`.
    pub hidden: f64,
    /// Transformer layers.
    pub layers: f64,
    /// MLP width `i`.
    pub intermediate: f64,
    /// Vocabulary size `V` (the output layer's width).
    pub vocab: f64,
    /// The output layer has a dense transform before the decoder (BERT's MLM head; GLM's
    /// output layer is its tied embeddings alone).
    pub lm_transform: bool,
    /// The MLP's input matrix gives input and gate (`h → 2i`, ModernBERT's GeGLU).
    pub gated_mlp: bool,
}

impl Dims {
    /// The sizes of `spec`.
    pub fn of(spec: &ModelSpec) -> Dims {
        match spec {
            ModelSpec::Bert { config: c, .. } => Dims { hidden: c.hidden_size as f64, layers: c.num_hidden_layers as f64, intermediate: c.intermediate_size as f64, vocab: c.vocab_size as f64, lm_transform: true, gated_mlp: false },
            ModelSpec::Glm { config: c } => Dims { hidden: c.hidden_size as f64, layers: c.num_layers as f64, intermediate: c.intermediate_size as f64, vocab: c.vocab_size as f64, lm_transform: false, gated_mlp: false },
            // The discriminator (ELECTRA's objective counts its generator itself).
            ModelSpec::Electra { pair } => Dims::of(&ModelSpec::Bert { config: pair.discriminator.clone(), pair_head: false }),
            ModelSpec::ModernBert { config: c } => Dims { hidden: c.hidden_size as f64, layers: c.num_hidden_layers as f64, intermediate: c.intermediate_size as f64, vocab: c.vocab_size as f64, lm_transform: true, gated_mlp: true },
        }
    }

    /// Forward FLOPs of the encoder over rows of these real lengths.
    pub fn encoder(&self, lengths: impl IntoIterator<Item = i64>) -> f64 {
        let (h, i) = (self.hidden, self.intermediate);
        let mlp = if self.gated_mlp { 6.0 * h * i } else { 4.0 * h * i };
        let per_token = 8.0 * h * h + mlp;
        let total: f64 = lengths.into_iter().map(|l| l.max(0) as f64).map(|l| l * per_token + 4.0 * h * l * l).sum();
        self.layers * total
    }

    /// Forward FLOPs of the output layer on `n` positions (the MLM head's transform and
    /// decoder, or GLM's tied output layer).
    pub fn lm_head(&self, n: usize) -> f64 {
        let h = self.hidden;
        let transform = if self.lm_transform { 2.0 * h * h } else { 0.0 };
        n as f64 * (transform + 2.0 * h * self.vocab)
    }

    /// Forward FLOPs of a dense `h → out` layer on `n` vectors.
    pub fn linear(&self, n: usize, out: usize) -> f64 {
        n as f64 * 2.0 * self.hidden * out as f64
    }

    /// The encoder over a collated batch's rows.
    pub fn encoder_of(&self, b: &HostBatch) -> f64 {
        self.encoder(b.lengths.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bert::BertConfig;

    fn base() -> Dims {
        let config = BertConfig { vocab_size: 30522, hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072, ..BertConfig::default() };
        Dims::of(&ModelSpec::Bert { config, pair_head: true })
    }

    /// BERT-base on one row of 512 tokens, counted by hand: per layer the four 768×768
    /// projections (4 · 2 · 512 · 768²), the MLP (2 · 2 · 512 · 768 · 3072), scores and
    /// values (2 · 2 · 512² · 768).
    #[test]
    fn bert_base_encoder_by_hand() {
        let per_layer = 4.0 * 2.0 * 512.0 * 768.0 * 768.0 + 2.0 * 2.0 * 512.0 * 768.0 * 3072.0 + 2.0 * 2.0 * 512.0 * 512.0 * 768.0;
        assert_eq!(base().encoder([512]), 12.0 * per_layer);
        // 12 · (2.416e9 + 4.832e9 + 0.805e9) ≈ 96.6 GFLOPs.
        assert!((base().encoder([512]) / 1e9 - 96.6).abs() < 0.1);
        // Real lengths: two rows of 128 cost twice one row of 128, far less than one of 256.
        assert_eq!(base().encoder([128, 128]), 2.0 * base().encoder([128]));
        assert!(base().encoder([256]) > base().encoder([128, 128]));
        assert_eq!(base().encoder([0, -3]), 0.0);
    }

    /// ModernBERT-base (22 layers, width 768, GeGLU of 1,152: `Wi` is 768 → 2,304) on one row
    /// of 512 tokens: the gated MLP's three matrices of 768 × 1,152. Sliding-window layers are
    /// counted at the full row length, as they are computed (a masked dense attention).
    #[test]
    fn modernbert_base_encoder_by_hand() {
        let config = crate::model::modernbert::ModernBertConfig::default();
        let d = Dims::of(&ModelSpec::ModernBert { config });
        let per_layer = 4.0 * 2.0 * 512.0 * 768.0 * 768.0 + 3.0 * 2.0 * 512.0 * 768.0 * 1152.0 + 2.0 * 2.0 * 512.0 * 512.0 * 768.0;
        assert_eq!(d.encoder([512]), 22.0 * per_layer);
        assert!(d.lm_transform && d.gated_mlp);
    }

    /// The MLM head: the 768×768 transform and the 768×30522 decoder per scored position.
    #[test]
    fn lm_head_and_linear_by_hand() {
        assert_eq!(base().lm_head(20), 20.0 * (2.0 * 768.0 * 768.0 + 2.0 * 768.0 * 30522.0));
        let glm = Dims { lm_transform: false, ..base() };
        assert_eq!(glm.lm_head(20), 20.0 * 2.0 * 768.0 * 30522.0);
        assert_eq!(base().linear(4, 2), 4.0 * 2.0 * 768.0 * 2.0);
    }
}
