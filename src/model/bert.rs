//! A BERT encoder and MLM head in tch, with Hugging Face parameter names; RoBERTa and XLM-R
//! are the same network with other names and positions, and ELECTRA's discriminator the same
//! with narrower embeddings projected to the width (`BertConfig::model_type`).
//!
//! Post-LayerNorm blocks, exact (erf) GELU, learned absolute positions and token types, as
//! `transformers`' `BertForMaskedLM`. Parameter paths match HF's (`bert.encoder.layer.0.
//! attention.self.query.weight`, `cls.predictions.transform.dense.weight`, ...) so weights move
//! between the two by name. Attention goes through libtorch's fused
//! `scaled_dot_product_attention` with a boolean key-padding mask built on the device from the
//! row lengths.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

use crate::batch::IGNORE;
use super::attention::attention;
use super::dropout::dropout;

/// Model sizes, serialized with the names of Hugging Face's `BertConfig` (`config.json`).
/// Missing fields take BERT-base's values, as `transformers` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// Embedding rows.
    pub vocab_size: i64,
    /// Residual width.
    pub hidden_size: i64,
    /// Transformer blocks (`num_hidden_layers`: 12 for BERT-base, 4 for BERT-mini).
    pub num_hidden_layers: i64,
    /// Heads per block.
    pub num_attention_heads: i64,
    /// Feed-forward width.
    pub intermediate_size: i64,
    /// Dropout on hidden states.
    pub hidden_dropout_prob: f64,
    /// Dropout on attention weights.
    pub attention_probs_dropout_prob: f64,
    /// Learned position table size.
    pub max_position_embeddings: i64,
    /// Segment vocabulary.
    pub type_vocab_size: i64,
    /// Normal init standard deviation.
    pub initializer_range: f64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// `[PAD]` id: its embedding row starts at zero and gets no gradient from the input side.
    pub pad_token_id: i64,
    /// `transformers`' `model_type`: `bert`, or `roberta` / `xlm-roberta` (the same blocks;
    /// parameters under `roberta.*`, positions counted from `pad_token_id + 1`, one token type,
    /// the `lm_head` MLM head and a two-layer classification head). Not written for BERT, so
    /// BERT checkpoints describe their model as before.
    #[serde(skip_serializing_if = "is_bert")]
    pub model_type: String,
    /// ELECTRA's embedding width when it differs from `hidden_size` (its small models embed
    /// into 128 and project, `electra.embeddings_project`); `None`: the hidden size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<i64>,
}

fn is_bert(model_type: &str) -> bool {
    model_type == "bert"
}

impl BertConfig {
    /// The sizes a `[model]` section describes, for a vocabulary and `[PAD]`.
    pub fn from_section(m: &crate::config::ModelConfig, vocab_size: i64, pad_token_id: i64) -> Self {
        BertConfig {
            vocab_size,
            hidden_size: m.hidden_size,
            num_hidden_layers: m.num_layers,
            num_attention_heads: m.num_heads,
            intermediate_size: m.intermediate_size,
            hidden_dropout_prob: m.hidden_dropout,
            attention_probs_dropout_prob: m.attention_dropout,
            max_position_embeddings: m.max_position_embeddings,
            type_vocab_size: m.type_vocab_size,
            initializer_range: m.initializer_range,
            layer_norm_eps: m.layer_norm_eps,
            pad_token_id,
            model_type: "bert".into(),
            embedding_size: None,
        }
    }
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            model_type: "bert".into(),
            embedding_size: None,
        }
    }
}

impl BertConfig {
    /// Per-head width.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// Whether this is RoBERTa's flavour (`roberta`, `xlm-roberta`).
    pub fn is_roberta(&self) -> bool {
        matches!(self.model_type.as_str(), "roberta" | "xlm-roberta")
    }

    /// Whether this is ELECTRA's discriminator (`electra`).
    pub fn is_electra(&self) -> bool {
        self.model_type == "electra"
    }

    /// The encoder's name in parameter paths (`bert`, `roberta`, `electra`).
    pub fn prefix(&self) -> &'static str {
        if self.is_roberta() {
            "roberta"
        } else if self.is_electra() {
            "electra"
        } else {
            "bert"
        }
    }

    /// The embeddings' width (ELECTRA's `embedding_size`, else the hidden size).
    pub fn embedding_width(&self) -> i64 {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    /// The longest sequence the position table holds (RoBERTa's first rows are padding's).
    pub fn max_positions(&self) -> i64 {
        self.max_position_embeddings - self.position_offset()
    }

    /// The first position id: RoBERTa counts positions from `padding_idx + 1` (its table's
    /// first rows belong to padding), BERT from 0.
    pub fn position_offset(&self) -> i64 {
        if self.is_roberta() {
            self.pad_token_id + 1
        } else {
            0
        }
    }
}

fn linear(p: nn::Path, i: i64, o: i64, std: f64) -> nn::Linear {
    let cfg = nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: std }, bs_init: Some(nn::Init::Const(0.0)), bias: true };
    nn::linear(p, i, o, cfg)
}

fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![dim], nn::LayerNormConfig { eps, ..Default::default() })
}

fn embedding(p: nn::Path, n: i64, dim: i64, std: f64, padding_idx: i64) -> nn::Embedding {
    let cfg = nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: std }, padding_idx, ..Default::default() };
    let e = nn::embedding(p, n, dim, cfg);
    if padding_idx >= 0 {
        // HF zeroes the padding row at init.
        tch::no_grad(|| {
            let _ = e.ws.get(padding_idx).zero_();
        });
    }
    e
}

/// Word, position and token-type tables and their LayerNorm, as plain tensors so that two
/// encoders can read the same ones (ELECTRA's generator and discriminator share them: one set
/// of variables, whose gradients from both graphs add up).
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm_weight: Tensor,
    norm_bias: Tensor,
    eps: f64,
    pad: i64,
    dropout: f64,
}

impl Embeddings {
    fn new(e: nn::Path, cfg: &BertConfig) -> Self {
        let (w, std) = (cfg.embedding_width(), cfg.initializer_range);
        let norm = layer_norm(&e / "LayerNorm", w, cfg.layer_norm_eps);
        Embeddings {
            word: embedding(&e / "word_embeddings", cfg.vocab_size, w, std, cfg.pad_token_id).ws,
            position: embedding(&e / "position_embeddings", cfg.max_position_embeddings, w, std, -1).ws,
            token_type: embedding(&e / "token_type_embeddings", cfg.type_vocab_size, w, std, -1).ws,
            norm_weight: norm.ws.expect("an affine LayerNorm"),
            norm_bias: norm.bs.expect("an affine LayerNorm"),
            eps: cfg.layer_norm_eps,
            pad: cfg.pad_token_id,
            dropout: cfg.hidden_dropout_prob,
        }
    }

    /// The same variables (not copies), for another encoder.
    fn shared(&self) -> Self {
        Embeddings {
            word: self.word.shallow_clone(),
            position: self.position.shallow_clone(),
            token_type: self.token_type.shallow_clone(),
            norm_weight: self.norm_weight.shallow_clone(),
            norm_bias: self.norm_bias.shallow_clone(),
            ..*self
        }
    }

    /// The summed embeddings of ids, positions and token types.
    fn sum(&self, input_ids: &Tensor, position_ids: &Tensor, types: &Tensor) -> Tensor {
        let lookup = |table: &Tensor, ids: &Tensor, pad: i64| Tensor::embedding(table, ids, pad, false, false);
        lookup(&self.word, input_ids, self.pad) + lookup(&self.position, position_ids, -1).unsqueeze(0) + lookup(&self.token_type, types, -1)
    }

    /// LayerNorm and dropout of the summed embeddings `x` (`[..., embedding_width]`).
    fn finish(&self, x: &Tensor, train: bool) -> Tensor {
        let w = *x.size().last().expect("embeddings have a width");
        dropout(&x.layer_norm([w], Some(&self.norm_weight), Some(&self.norm_bias), self.eps, false), self.dropout, train)
    }
}

struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    out_norm: nn::LayerNorm,
}

/// The encoder: embeddings and a stack of post-LN blocks (`bert.*`).
pub struct Bert {
    cfg: BertConfig,
    embeddings: Embeddings,
    /// ELECTRA's `embeddings_project` when the embeddings are narrower than the blocks.
    project: Option<nn::Linear>,
    layers: Vec<Layer>,
}

impl Bert {
    /// Creates the encoder's variables under `p` (pass `root / cfg.prefix()`).
    pub fn new(p: nn::Path, cfg: &BertConfig) -> Self {
        let embeddings = Embeddings::new(&p / "embeddings", cfg);
        Self::with_embeddings(p, cfg, embeddings)
    }

    /// An encoder under `p` that reads `other`'s embeddings (the same variables): ELECTRA's
    /// generator, whose blocks (and projection, when its width differs from the embeddings')
    /// are its own. `cfg`'s embedding width, vocabulary and tables must be `other`'s.
    pub fn sharing_embeddings(p: nn::Path, cfg: &BertConfig, other: &Bert) -> Self {
        Self::with_embeddings(p, cfg, other.embeddings.shared())
    }

    fn with_embeddings(p: nn::Path, cfg: &BertConfig, embeddings: Embeddings) -> Self {
        let (h, std) = (cfg.hidden_size, cfg.initializer_range);
        let w = cfg.embedding_width();
        let project = (w != h).then(|| linear(&p / "embeddings_project", w, h, std));
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = &p / "encoder" / "layer" / i;
                let a = &l / "attention";
                Layer {
                    query: linear(&a / "self" / "query", h, h, std),
                    key: linear(&a / "self" / "key", h, h, std),
                    value: linear(&a / "self" / "value", h, h, std),
                    attn_out: linear(&a / "output" / "dense", h, h, std),
                    attn_norm: layer_norm(&a / "output" / "LayerNorm", h, cfg.layer_norm_eps),
                    intermediate: linear(&l / "intermediate" / "dense", h, cfg.intermediate_size, std),
                    output: linear(&l / "output" / "dense", cfg.intermediate_size, h, std),
                    out_norm: layer_norm(&l / "output" / "LayerNorm", h, cfg.layer_norm_eps),
                }
            })
            .collect();
        Bert { cfg: cfg.clone(), embeddings, project, layers }
    }

    /// Its sizes.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// The embeddings' LayerNorm and dropout, then the projection to the blocks' width.
    fn embed(&self, x: &Tensor, train: bool) -> Tensor {
        let x = self.embeddings.finish(x, train);
        match &self.project {
            Some(p) => p.forward(&x),
            None => x,
        }
    }

    /// The input embedding matrix `[vocab, hidden]` (the MLM decoder is tied to it).
    pub fn word_embeddings(&self) -> &Tensor {
        &self.embeddings.word
    }

    /// Encodes a padded batch.
    ///
    /// * `input_ids`, `token_type_ids`: `[batch, seq]` int64
    /// * `lengths`: `[batch]` int64, the unpadded length of each row
    ///
    /// # Returns
    /// Hidden states `[batch, seq, hidden]`. Rows past a row's length hold values that nothing
    /// should read (zeros on the unpadded path).
    ///
    /// On the CPU, when padding is worth removing, every position-wise operation (the linear
    /// layers, GELU, LayerNorm, dropout: 90 % of the FLOPs) runs on the real tokens only, packed
    /// `[tokens, hidden]`, and only attention sees the padded `[batch, heads, seq, dim]` layout
    /// (MosaicBERT's "unpadding"). Same mathematics; on CUDA finding the tokens would cost a
    /// host sync per forward, so it stays padded there.
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, lengths: &Tensor, train: bool) -> Tensor {
        let (b, t) = input_ids.size2().expect("input_ids is [batch, seq]");
        let device = input_ids.device();
        let positions = Tensor::arange(t, (Kind::Int64, device));
        let offset = self.cfg.position_offset();
        let position_ids = if offset == 0 { positions.shallow_clone() } else { &positions + offset };
        // RoBERTa has one token type: pair segments all read row 0, as `transformers` does.
        let types = if self.cfg.type_vocab_size == 1 { token_type_ids.zeros_like() } else { token_type_ids.shallow_clone() };
        let x = self.embeddings.sum(input_ids, &position_ids, &types);
        // True where a key may be attended to: [batch, 1, 1, seq].
        let key_mask = positions.unsqueeze(0).lt_tensor(&lengths.unsqueeze(1)).view([b, 1, 1, t]);
        if device == tch::Device::Cpu && worth_unpadding(lengths, b, t) {
            return self.forward_unpadded(x, &key_mask, b, t, train);
        }
        self.forward_padded(x, &key_mask, b, t, train)
    }

    /// [`Bert::forward`] on the padded `[b, t, hidden]` layout; `x` is the embedding sum.
    fn forward_padded(&self, x: Tensor, key_mask: &Tensor, b: i64, t: i64, train: bool) -> Tensor {
        let mut x = self.embed(&x, train);
        let (heads, d) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let attn_p = self.cfg.attention_probs_dropout_prob;
        for l in &self.layers {
            let split = |y: Tensor| y.view([b, t, heads, d]).transpose(1, 2);
            let q = split(l.query.forward(&x));
            let k = split(l.key.forward(&x));
            let v = split(l.value.forward(&x));
            let ctx = attention(&q, &k, &v, key_mask, attn_p, train);
            let ctx = ctx.transpose(1, 2).reshape([b, t, self.cfg.hidden_size]);
            let a = l.attn_norm.forward(&(dropout(&l.attn_out.forward(&ctx), self.cfg.hidden_dropout_prob, train) + &x));
            let i = l.intermediate.forward(&a).gelu("none");
            x = l.out_norm.forward(&(dropout(&l.output.forward(&i), self.cfg.hidden_dropout_prob, train) + &a));
        }
        x
    }

    /// [`Bert::forward`] on packed real tokens; `x` is the embedding sum `[b, t, hidden]`.
    fn forward_unpadded(&self, x: Tensor, key_mask: &Tensor, b: i64, t: i64, train: bool) -> Tensor {
        let h = self.cfg.hidden_size;
        let idx = key_mask.view([b * t]).nonzero().squeeze_dim(1);
        let w = self.cfg.embedding_width();
        let mut x = self.embed(&x.view([b * t, w]).index_select(0, &idx), train);
        let (heads, d) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let attn_p = self.cfg.attention_probs_dropout_prob;
        let pad = |y: &Tensor| Tensor::zeros([b * t, h], (y.kind(), y.device())).index_copy(0, &idx, y).view([b, t, heads, d]).transpose(1, 2);
        for l in &self.layers {
            let (q, k, v) = (pad(&l.query.forward(&x)), pad(&l.key.forward(&x)), pad(&l.value.forward(&x)));
            let ctx = attention(&q, &k, &v, key_mask, attn_p, train);
            let ctx = ctx.transpose(1, 2).reshape([b * t, h]).index_select(0, &idx);
            let a = l.attn_norm.forward(&(dropout(&l.attn_out.forward(&ctx), self.cfg.hidden_dropout_prob, train) + &x));
            let i = l.intermediate.forward(&a).gelu("none");
            x = l.out_norm.forward(&(dropout(&l.output.forward(&i), self.cfg.hidden_dropout_prob, train) + &a));
        }
        Tensor::zeros([b * t, h], (x.kind(), x.device())).index_copy(0, &idx, &x).view([b, t, h])
    }
}

/// Unpad when real tokens are below 15/16 of the padded positions (below that the saved
/// GEMM work outweighs the gathers and scatters).
const UNPAD_BELOW_NUM: i64 = 16;
const UNPAD_BELOW_DEN: i64 = 15;

/// Whether rows of these lengths, padded to `[b, t]`, are worth packing (a host read of the
/// lengths' sum: for the CPU only).
pub(crate) fn worth_unpadding(lengths: &Tensor, b: i64, t: i64) -> bool {
    let real = i64::try_from(lengths.sum(Kind::Int64)).unwrap_or(b * t);
    real * UNPAD_BELOW_NUM < b * t * UNPAD_BELOW_DEN
}

/// `BertForMaskedLM`: the encoder plus `cls.predictions` with the decoder tied to the word
/// embeddings. With a pair head (`bert.pooler`, `cls.seq_relationship`) it is
/// `BertForPreTraining` (MLM + NSP / SOP).
pub struct BertForMaskedLM {
    /// The encoder (`bert.*`); its word embeddings double as the decoder's weight.
    pub bert: Bert,
    transform: nn::Linear,
    transform_norm: nn::LayerNorm,
    decoder_bias: Tensor,
    pair_head: Option<(nn::Linear, nn::Linear)>,
}

/// Loss and what evaluation needs, from one MLM forward pass.
pub struct MlmOutput {
    /// Sum of the cross-entropy over scored positions divided by their count.
    pub loss: Tensor,
    /// Logits at the scored positions only, `[n_scored, vocab]`.
    pub logits: Tensor,
}

impl BertForMaskedLM {
    /// Creates all variables under `root` with HF names.
    pub fn new(root: &nn::Path, cfg: &BertConfig) -> Self {
        let bert = Bert::new(root / cfg.prefix(), cfg);
        // RoBERTa's `lm_head.{dense, layer_norm, bias}`, BERT's `cls.predictions.*`.
        let (transform, transform_norm, decoder_bias) = if cfg.is_roberta() {
            let p = root / "lm_head";
            (linear(&p / "dense", cfg.hidden_size, cfg.hidden_size, cfg.initializer_range), layer_norm(&p / "layer_norm", cfg.hidden_size, cfg.layer_norm_eps), p.zeros("bias", &[cfg.vocab_size]))
        } else {
            let p = root / "cls" / "predictions";
            (
                linear(&p / "transform" / "dense", cfg.hidden_size, cfg.hidden_size, cfg.initializer_range),
                layer_norm(&p / "transform" / "LayerNorm", cfg.hidden_size, cfg.layer_norm_eps),
                p.zeros("bias", &[cfg.vocab_size]),
            )
        };
        BertForMaskedLM { bert, transform, transform_norm, decoder_bias, pair_head: None }
    }

    /// `BertForPreTraining`: adds the pooler (dense + tanh on `[CLS]`) and the 2-way
    /// `cls.seq_relationship` classifier for NSP or SOP.
    pub fn with_pair_head(root: &nn::Path, cfg: &BertConfig) -> Self {
        let mut m = Self::new(root, cfg);
        let pooler = linear(root / cfg.prefix() / "pooler" / "dense", cfg.hidden_size, cfg.hidden_size, cfg.initializer_range);
        let rel = linear(root / "cls" / "seq_relationship", cfg.hidden_size, 2, cfg.initializer_range);
        m.pair_head = Some((pooler, rel));
        m
    }

    /// NSP / SOP logits `[batch, 2]` from the `[CLS]` hidden state, if there is a pair head.
    pub fn pair_logits(&self, hidden: &Tensor) -> Option<Tensor> {
        let (pooler, rel) = self.pair_head.as_ref()?;
        Some(rel.forward(&pooler.forward(&hidden.select(1, 0)).tanh()))
    }

    /// Vocabulary logits for hidden states of any leading shape `[..., hidden]`.
    pub fn predict(&self, hidden: &Tensor) -> Tensor {
        let h = self.transform_norm.forward(&self.transform.forward(hidden).gelu("none"));
        h.linear(self.bert.word_embeddings(), Some(&self.decoder_bias))
    }

    /// MLM loss with the decoder run on the scored positions only.
    ///
    /// * `hidden`: `[batch, seq, hidden]` from [`Bert::forward`]
    /// * `positions`: `[n]` flat indices `row * seq + col` of the scored positions
    /// * `labels`: `[n]` their original ids
    /// * `n_scored`: the divisor, known on the host (no device sync to normalise)
    pub fn mlm_loss(&self, hidden: &Tensor, positions: &Tensor, labels: &Tensor, n_scored: usize) -> MlmOutput {
        let h = hidden.view([-1, hidden.size()[2]]).index_select(0, positions);
        let logits = self.predict(&h);
        let loss = logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::Sum, IGNORE, 0.0) / (n_scored.max(1) as f64);
        MlmOutput { loss, logits }
    }
}

#[cfg(test)]
mod unpad_tests {
    use super::*;

    /// The unpadded path computes what the padded one does at every real position, forward and
    /// backward (dropout off: the two draw their masks over different shapes).
    #[test]
    fn unpadded_encoder_equals_padded_encoder_with_gradients() {
        tch::manual_seed(3);
        let cfg = BertConfig {
            vocab_size: 50,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 16,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            ..Default::default()
        };
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let bert = Bert::new(vs.root() / cfg.prefix(), &cfg);
        let (b, t) = (3, 12);
        let ids = Tensor::randint(50, [b, t], (Kind::Int64, tch::Device::Cpu));
        let types = Tensor::zeros([b, t], (Kind::Int64, tch::Device::Cpu));
        let lengths = Tensor::from_slice(&[12i64, 5, 9]);
        let positions = Tensor::arange(t, (Kind::Int64, tch::Device::Cpu));
        let key_mask = positions.unsqueeze(0).lt_tensor(&lengths.unsqueeze(1)).view([b, 1, 1, t]);
        let valid = key_mask.view([b, t, 1]).to_kind(Kind::Float);
        let run = |unpadded: bool| {
            let x = bert.embeddings.sum(&ids, &positions, &types);
            let out = if unpadded { bert.forward_unpadded(x, &key_mask, b, t, true) } else { bert.forward_padded(x, &key_mask, b, t, true) };
            let out = out * &valid;
            for v in vs.variables().values() {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            (&out * &out).sum(Kind::Float).backward();
            let mut grads: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, v)| (k, v.grad().copy())).collect();
            grads.sort_by(|x, y| x.0.cmp(&y.0));
            (out.detach(), grads)
        };
        let (a, ga) = run(false);
        let (u, gu) = run(true);
        assert!((&a - &u).abs().max().double_value(&[]) < 1e-5);
        for ((k, x), (k2, y)) in ga.iter().zip(&gu) {
            assert_eq!(k, k2);
            assert!((x - y).abs().max().double_value(&[]) < 1e-4, "{k}");
        }
        assert!(a.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
