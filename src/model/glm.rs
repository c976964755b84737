//! The GLM model (THUDM/GLM `model/modeling_glm.py`, `mpu/transformer.py`), with GLM's
//! parameter names.
//!
//! Pre-LayerNorm blocks, GELU, 2-D positions (`position_embeddings` for the position row and
//! `block_position_embeddings` for the intra-span row), prefix-causal attention built on the
//! device from each row's Part A length, a final LayerNorm, and the output layer tied to the
//! word embeddings (no bias). For decoding, [`Glm::prefill`] also returns every layer's keys and
//! values and [`Glm::extend`] runs one new token per row against them.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::attention::attention;
use super::dropout::dropout;

/// GLM sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlmConfig {
    /// Embedding rows.
    pub vocab_size: i64,
    /// Residual width.
    pub hidden_size: i64,
    /// Transformer blocks (GLM-large: 24).
    pub num_layers: i64,
    /// Attention heads per block; `hidden_size` must divide by it.
    pub num_attention_heads: i64,
    /// Feed-forward width (GLM uses 4 × hidden).
    pub intermediate_size: i64,
    /// Size of both position tables (`max_sequence_length + 1` in GLM).
    pub max_sequence_length: i64,
    /// Dropout on hidden states.
    pub hidden_dropout: f64,
    /// Dropout on attention weights.
    pub attention_dropout: f64,
    /// LayerNorm epsilon.
    pub layernorm_epsilon: f64,
    /// Normal init standard deviation.
    pub init_method_std: f64,
    /// Attention through explicit matmul + masked softmax instead of the fused kernel (a
    /// reference for tests).
    #[serde(default)]
    pub explicit_attention: bool,
}

struct Layer {
    input_layernorm: nn::LayerNorm,
    query_key_value: nn::Linear,
    dense: nn::Linear,
    post_attention_layernorm: nn::LayerNorm,
    dense_h_to_4h: nn::Linear,
    dense_4h_to_h: nn::Linear,
}

/// `GLMModel` with its tied output layer.
pub struct Glm {
    cfg: GlmConfig,
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    block_position_embeddings: nn::Embedding,
    layers: Vec<Layer>,
    final_layernorm: nn::LayerNorm,
}

fn linear(p: nn::Path, i: i64, o: i64, std: f64) -> nn::Linear {
    nn::linear(p, i, o, nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: std }, bs_init: Some(nn::Init::Const(0.0)), bias: true })
}

fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![dim], nn::LayerNormConfig { eps, ..Default::default() })
}

fn embedding(p: nn::Path, n: i64, dim: i64, std: f64) -> nn::Embedding {
    nn::embedding(p, n, dim, nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: std }, ..Default::default() })
}

/// The attention mask `[batch, 1, T, T]` (true = may attend): `tril(ones) | key < sep`.
pub fn prefix_causal_mask(prefix_len: &Tensor, t: i64) -> Tensor {
    let device = prefix_len.device();
    let ar = Tensor::arange(t, (Kind::Int64, device));
    let causal = ar.unsqueeze(0).le_tensor(&ar.unsqueeze(1)); // [T(q), T(k)]: k <= q
    let prefix = ar.view([1, 1, t]).lt_tensor(&prefix_len.view([-1, 1, 1])); // [B, 1, T(k)]
    causal.unsqueeze(0).logical_or(&prefix).unsqueeze(1)
}

impl Glm {
    /// Creates the variables under `root` with GLM's names.
    pub fn new(root: &nn::Path, cfg: &GlmConfig) -> Self {
        let (h, std) = (cfg.hidden_size, cfg.init_method_std);
        let t = root / "transformer";
        // GLM scales the output projections' init by 1 / sqrt(2 * layers).
        let out_std = std / (2.0 * cfg.num_layers as f64).sqrt();
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let l = &t / "layers" / i;
                Layer {
                    input_layernorm: layer_norm(&l / "input_layernorm", h, cfg.layernorm_epsilon),
                    query_key_value: linear(&l / "attention" / "query_key_value", h, 3 * h, std),
                    dense: linear(&l / "attention" / "dense", h, h, out_std),
                    post_attention_layernorm: layer_norm(&l / "post_attention_layernorm", h, cfg.layernorm_epsilon),
                    dense_h_to_4h: linear(&l / "mlp" / "dense_h_to_4h", h, cfg.intermediate_size, std),
                    dense_4h_to_h: linear(&l / "mlp" / "dense_4h_to_h", cfg.intermediate_size, h, out_std),
                }
            })
            .collect();
        Glm {
            cfg: cfg.clone(),
            word_embeddings: embedding(root / "word_embeddings", cfg.vocab_size, h, std),
            position_embeddings: embedding(&t / "position_embeddings", cfg.max_sequence_length, h, std),
            block_position_embeddings: embedding(&t / "block_position_embeddings", cfg.max_sequence_length, h, std),
            layers,
            final_layernorm: layer_norm(&t / "final_layernorm", h, cfg.layernorm_epsilon),
        }
    }

    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let p = if train { self.cfg.attention_dropout } else { 0.0 };
        if !self.cfg.explicit_attention {
            return attention(q, k, v, mask, p, train);
        }
        let d = q.size()[3] as f64;
        let scores = q.matmul(&k.transpose(-2, -1)) / d.sqrt();
        let scores = scores.masked_fill(&mask.logical_not(), f64::NEG_INFINITY);
        dropout(&scores.softmax(-1, Kind::Float), p, train).matmul(v)
    }

    /// The shape it was built with.
    pub fn config(&self) -> &GlmConfig {
        &self.cfg
    }

    /// Hidden states after the final LayerNorm.
    ///
    /// * `input_ids`, `position_ids`, `block_position_ids`: `[batch, T]` int64
    /// * `prefix_len`: `[batch]` int64, each row's Part A length
    ///
    /// # Returns
    /// `[batch, T, hidden]`.
    // `h = h + ...`, not `h += ...`: tch's `+=` adds in place, into a tensor autograd saved for
    // the layer norm's backward.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward(&self, input_ids: &Tensor, position_ids: &Tensor, block_position_ids: &Tensor, prefix_len: &Tensor, train: bool) -> Tensor {
        let t = input_ids.size2().expect("input_ids is [batch, seq]").1;
        self.run(input_ids, position_ids, block_position_ids, &prefix_causal_mask(prefix_len, t), train, None)
    }

    /// [`Glm::forward`] in eval mode that also returns every layer's keys and values
    /// `[batch, heads, T, head_dim]`: the cache [`Glm::extend`] continues from.
    pub fn prefill(&self, input_ids: &Tensor, position_ids: &Tensor, block_position_ids: &Tensor, prefix_len: &Tensor) -> (Tensor, Vec<(Tensor, Tensor)>) {
        let t = input_ids.size2().expect("input_ids is [batch, seq]").1;
        let mut cache = Vec::with_capacity(self.layers.len());
        let h = self.run(input_ids, position_ids, block_position_ids, &prefix_causal_mask(prefix_len, t), false, Some(&mut cache));
        (h, cache)
    }

    /// One new token per row `[batch, 1]` (eval mode) attending to the cached keys and values
    /// where `key_ok` `[batch, T]` allows and to itself; appends its keys and values to
    /// `cache`. Returns its hidden state `[batch, 1, hidden]`.
    pub fn extend(&self, input_ids: &Tensor, position_ids: &Tensor, block_position_ids: &Tensor, key_ok: &Tensor, cache: &mut Vec<(Tensor, Tensor)>) -> Tensor {
        let b = key_ok.size()[0];
        let allowed = Tensor::cat(&[key_ok.shallow_clone(), Tensor::ones([b, 1], (Kind::Bool, key_ok.device()))], 1).view([b, 1, 1, -1]);
        self.run(input_ids, position_ids, block_position_ids, &allowed, false, Some(cache))
    }

    /// The layers over `[batch, T]` tokens with an attention mask `[batch, 1, T, T_keys]`; with
    /// `kv`, every layer's keys and values are pushed there (a prefill), or, when `kv` already
    /// holds one `(keys, values)` per layer, the new keys and values are appended to those
    /// before attending (a step).
    // `h = h + ...`, not `h += ...`: tch's `+=` adds in place, into a tensor autograd saved for
    // the layer norm's backward.
    #[allow(clippy::assign_op_pattern)]
    fn run(&self, input_ids: &Tensor, position_ids: &Tensor, block_position_ids: &Tensor, mask: &Tensor, train: bool, mut kv: Option<&mut Vec<(Tensor, Tensor)>>) -> Tensor {
        let (b, t) = input_ids.size2().expect("input_ids is [batch, seq]");
        let c = &self.cfg;
        let mut h = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(position_ids)
            + self.block_position_embeddings.forward(block_position_ids);
        h = dropout(&h, c.hidden_dropout, train);
        let (heads, d) = (c.num_attention_heads, c.hidden_size / c.num_attention_heads);
        for (i, l) in self.layers.iter().enumerate() {
            let x = l.input_layernorm.forward(&h);
            let qkv = l.query_key_value.forward(&x).view([b, t, 3, heads, d]).permute([2, 0, 3, 1, 4]);
            let (q, mut k, mut v) = (qkv.get(0), qkv.get(1), qkv.get(2));
            if let Some(cache) = kv.as_deref_mut() {
                match cache.get(i) {
                    // A step: the past keys and values first, then this token's.
                    Some((k0, v0)) if k0.size()[2] + t == mask.size()[3] => {
                        k = Tensor::cat(&[k0, &k], 2);
                        v = Tensor::cat(&[v0, &v], 2);
                        cache[i] = (k.shallow_clone(), v.shallow_clone());
                    }
                    _ => cache.push((k.shallow_clone(), v.shallow_clone())),
                }
            }
            let ctx = self.attention(&q, &k, &v, mask, train);
            let ctx = ctx.transpose(1, 2).reshape([b, t, c.hidden_size]);
            h = h + dropout(&l.dense.forward(&ctx), c.hidden_dropout, train);
            let x = l.post_attention_layernorm.forward(&h);
            let m = l.dense_4h_to_h.forward(&l.dense_h_to_4h.forward(&x).gelu("none"));
            h = h + dropout(&m, c.hidden_dropout, train);
        }
        self.final_layernorm.forward(&h)
    }

    /// Vocabulary logits through the tied output layer, for hidden states `[..., hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.word_embeddings.ws.tr())
    }
}
