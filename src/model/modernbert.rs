//! ModernBERT as `transformers`' `ModernBertModel` / `ModernBertForMaskedLM` define it, with
//! their parameter names (`model.layers.N.attn.Wqkv`, `head.dense`, `decoder.bias`): token
//! embeddings and a LayerNorm (no position embeddings: rotary ones on queries and keys, theta
//! 160,000 in global layers and 10,000 in local ones), pre-norm blocks (no norm before the first
//! block's attention), every LayerNorm and linear layer without bias by default, a GeGLU MLP
//! (`Wi` gives input and gate, GELU(input) · gate), global attention every
//! `global_attn_every_n_layers` layers (layer 0 first) and a bidirectional sliding window of
//! `local_attention / 2` tokens on each side in the others, a final norm, and the MLM head
//! (dense, GELU, norm, then the decoder tied to the token embeddings with its own bias).
//!
//! The networks have `transformers`' numbers (`tests/parity.rs`): the encoder and the MLM head
//! here, the sequence, token and span heads in [`super::heads`]. Reading a folder as `[init] hf`, pre-training and the
//! tasks build on them.

use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Device, Kind, Tensor};

use super::attention::attention;
use super::dropout::dropout;

/// ModernBERT's sizes and switches, as its `config.json` names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModernBertConfig {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Hidden size.
    pub hidden_size: i64,
    /// GeGLU width (`Wi` is twice this).
    pub intermediate_size: i64,
    /// Blocks.
    pub num_hidden_layers: i64,
    /// Attention heads.
    pub num_attention_heads: i64,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
    /// LayerNorms with a bias.
    pub norm_bias: bool,
    /// The MLP's linear layers with biases.
    pub mlp_bias: bool,
    /// The attention's linear layers with biases.
    pub attention_bias: bool,
    /// The MLM head's dense layer with a bias.
    pub classifier_bias: bool,
    /// The decoder with a bias.
    pub decoder_bias: bool,
    /// Rotary theta of the global layers (older configs' name).
    pub global_rope_theta: f64,
    /// Rotary theta of the local layers (older configs' name).
    pub local_rope_theta: f64,
    /// `transformers` 5's rotary settings per layer type (`full_attention`,
    /// `sliding_attention`), when the config has them: they win over the thetas above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<std::collections::BTreeMap<String, RopeParameters>>,
    /// The local layers' window, both sides together.
    pub local_attention: i64,
    /// Every n-th layer (from layer 0) attends globally.
    pub global_attn_every_n_layers: i64,
    /// `full_attention` / `sliding_attention` per layer, when the config lists them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// The padding token.
    pub pad_token_id: i64,
    /// Longest sequence.
    pub max_position_embeddings: i64,
    /// `model_type` (`modernbert`).
    pub model_type: String,
    /// Sequence classification pools the first token (`cls`) or the mean of the real ones.
    pub classifier_pooling: String,
    /// Dropout after the embeddings' norm.
    pub embedding_dropout: f64,
    /// Dropout on attention probabilities and after the attention's output projection.
    pub attention_dropout: f64,
    /// Dropout on the GeGLU product, before the MLP's output projection.
    pub mlp_dropout: f64,
    /// Dropout between a task's prediction head and its classifier.
    pub classifier_dropout: f64,
    /// Standard deviation of the normal initialisation of weights a start lacks.
    pub initializer_range: f64,
}

/// What a ModernBERT `config.json` asks for that this network does not compute (an activation
/// other than GELU, rotary scaling other than plain rotary), said as an error; `None` when
/// every switch it sets is built. Reading such a folder as the default would give other
/// logits without a word.
pub fn unbuilt_switch(config: &serde_json::Value) -> Option<String> {
    for key in ["hidden_activation", "classifier_activation"] {
        match config.get(key).and_then(|v| v.as_str()) {
            Some(act) if act != "gelu" => return Some(format!("{key} = {act:?}: only \"gelu\" (exact GELU, ModernBERT's) is built")),
            _ => {}
        }
    }
    let ropes = config.get("rope_parameters").and_then(|r| r.as_object());
    for (layer, p) in ropes.into_iter().flatten() {
        match p.get("rope_type").and_then(|v| v.as_str()) {
            Some(kind) if kind != "default" => return Some(format!("rope_parameters.{layer}.rope_type = {kind:?}: only \"default\" (plain rotary positions) is built")),
            _ => {}
        }
    }
    None
}

/// One layer type's rotary settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    /// The base.
    pub rope_theta: f64,
    /// Only `default` (plain rotary) is built.
    #[serde(default = "default_rope")]
    pub rope_type: String,
}

fn default_rope() -> String {
    "default".into()
}

impl Default for ModernBertConfig {
    /// `answerdotai/ModernBERT-base`'s switches (sizes of a small model).
    fn default() -> Self {
        ModernBertConfig {
            vocab_size: 50368,
            hidden_size: 768,
            intermediate_size: 1152,
            num_hidden_layers: 22,
            num_attention_heads: 12,
            norm_eps: 1e-5,
            norm_bias: false,
            mlp_bias: false,
            attention_bias: false,
            classifier_bias: false,
            decoder_bias: true,
            global_rope_theta: 160_000.0,
            local_rope_theta: 10_000.0,
            rope_parameters: None,
            local_attention: 128,
            global_attn_every_n_layers: 3,
            layer_types: None,
            pad_token_id: 50283,
            max_position_embeddings: 8192,
            model_type: "modernbert".into(),
            classifier_pooling: "cls".into(),
            embedding_dropout: 0.0,
            attention_dropout: 0.0,
            mlp_dropout: 0.0,
            classifier_dropout: 0.0,
            initializer_range: 0.02,
        }
    }
}

impl ModernBertConfig {
    /// Whether layer `i` attends globally.
    pub fn is_global(&self, i: i64) -> bool {
        match &self.layer_types {
            Some(types) => types.get(i as usize).is_none_or(|t| t != "sliding_attention"),
            None => i % self.global_attn_every_n_layers.max(1) == 0,
        }
    }

    /// Tokens a local layer sees on each side of a query.
    pub fn sliding_window(&self) -> i64 {
        self.local_attention / 2
    }

    /// The rotary base of global (`true`) or local layers.
    pub fn rope_theta(&self, global: bool) -> f64 {
        let key = if global { "full_attention" } else { "sliding_attention" };
        self.rope_parameters.as_ref().and_then(|p| p.get(key)).map_or(if global { self.global_rope_theta } else { self.local_rope_theta }, |p| p.rope_theta)
    }

    fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// The sizes a `[model]` section describes (`model.architecture = "modernbert"`), for a
    /// vocabulary and its padding id; the other switches are `ModernBERT-base`'s.
    pub fn from_section(m: &crate::config::ModelConfig, vocab_size: i64, pad_token_id: i64) -> Self {
        ModernBertConfig {
            vocab_size,
            hidden_size: m.hidden_size,
            intermediate_size: m.intermediate_size,
            num_hidden_layers: m.num_layers,
            num_attention_heads: m.num_heads,
            norm_eps: m.layer_norm_eps,
            local_attention: m.local_attention,
            global_attn_every_n_layers: m.global_attn_every_n_layers,
            pad_token_id,
            max_position_embeddings: m.max_position_embeddings,
            embedding_dropout: m.hidden_dropout,
            mlp_dropout: m.hidden_dropout,
            attention_dropout: m.attention_dropout,
            initializer_range: m.initializer_range,
            ..ModernBertConfig::default()
        }
    }
}

/// A LayerNorm whose bias is optional (ModernBERT's have none).
#[derive(Debug)]
struct Norm {
    weight: Tensor,
    bias: Option<Tensor>,
    dim: i64,
    eps: f64,
}

impl Norm {
    fn new(p: nn::Path, dim: i64, cfg: &ModernBertConfig) -> Self {
        let weight = p.ones("weight", &[dim]);
        let bias = cfg.norm_bias.then(|| p.zeros("bias", &[dim]));
        Norm { weight, bias, dim, eps: cfg.norm_eps }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.dim], Some(&self.weight), self.bias.as_ref(), self.eps, false)
    }
}

pub(super) fn linear(p: nn::Path, i: i64, o: i64, bias: bool, cfg: &ModernBertConfig) -> nn::Linear {
    let ws_init = nn::Init::Randn { mean: 0.0, stdev: cfg.initializer_range };
    nn::linear(p, i, o, nn::LinearConfig { bias, ws_init, bs_init: Some(nn::Init::Const(0.0)) })
}

#[derive(Debug)]
struct Layer {
    attn_norm: Option<Norm>,
    wqkv: nn::Linear,
    wo: nn::Linear,
    mlp_norm: Norm,
    wi: nn::Linear,
    mlp_wo: nn::Linear,
    global: bool,
}

/// The encoder (`ModernBertModel`, under `model.`).
#[derive(Debug)]
pub struct ModernBert {
    cfg: ModernBertConfig,
    tok_embeddings: nn::Embedding,
    emb_norm: Norm,
    layers: Vec<Layer>,
    final_norm: Norm,
}

/// Rotary cos / sin `[seq, head_dim]` for base `theta` (`transformers`' default rope: the
/// frequencies repeated over both halves).
fn rotary(t: i64, dim: i64, theta: f64, device: Device) -> (Tensor, Tensor) {
    let inv = Tensor::arange_start_step(0, dim, 2, (Kind::Float, device)).divide_scalar(dim as f64);
    let inv = Tensor::from(theta).to_device(device).to_kind(Kind::Float).pow(&inv).reciprocal();
    let freqs = Tensor::arange(t, (Kind::Float, device)).unsqueeze(1) * inv.unsqueeze(0);
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    (emb.cos(), emb.sin())
}

/// `x · cos + rotate_half(x) · sin`, rotate_half(x) = (−x₂, x₁), in `x`'s precision (cos and
/// sin are computed in fp32 and cast, as `transformers` does under bf16).
fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let (x1, x2) = (x.narrow(-1, 0, half), x.narrow(-1, half, half));
    let rotated = Tensor::cat(&[&x2.neg(), &x1], -1);
    x * cos.to_kind(x.kind()) + rotated * sin.to_kind(x.kind())
}

impl ModernBert {
    /// The encoder's variables under `p` (HF's `model`).
    pub fn new(p: &nn::Path, cfg: &ModernBertConfig) -> Self {
        let e = p / "embeddings";
        let init = nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: cfg.initializer_range }, ..Default::default() };
        let tok_embeddings = nn::embedding(&e / "tok_embeddings", cfg.vocab_size, cfg.hidden_size, init);
        let emb_norm = Norm::new(&e / "norm", cfg.hidden_size, cfg);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = p / "layers" / i;
                Layer {
                    attn_norm: (i > 0).then(|| Norm::new(&l / "attn_norm", cfg.hidden_size, cfg)),
                    wqkv: linear(&l / "attn" / "Wqkv", cfg.hidden_size, 3 * cfg.hidden_size, cfg.attention_bias, cfg),
                    wo: linear(&l / "attn" / "Wo", cfg.hidden_size, cfg.hidden_size, cfg.attention_bias, cfg),
                    mlp_norm: Norm::new(&l / "mlp_norm", cfg.hidden_size, cfg),
                    wi: linear(&l / "mlp" / "Wi", cfg.hidden_size, 2 * cfg.intermediate_size, cfg.mlp_bias, cfg),
                    mlp_wo: linear(&l / "mlp" / "Wo", cfg.intermediate_size, cfg.hidden_size, cfg.mlp_bias, cfg),
                    global: cfg.is_global(i),
                }
            })
            .collect();
        let final_norm = Norm::new(p / "final_norm", cfg.hidden_size, cfg);
        ModernBert { cfg: cfg.clone(), tok_embeddings, emb_norm, layers, final_norm }
    }

    /// The token embeddings (the MLM decoder's tied weight).
    pub fn word_embeddings(&self) -> &Tensor {
        &self.tok_embeddings.ws
    }

    /// Last hidden states `[batch, seq, hidden]` of right-padded rows of `lengths` real tokens;
    /// the config's dropouts apply while `train` (ModernBERT's recipe sets them all to 0).
    ///
    /// On the CPU, with padding worth removing (the rule BERT's encoder uses), every
    /// position-wise operation (the projections, the GeGLU, the norms: nearly all the FLOPs)
    /// runs on the real tokens packed `[tokens, hidden]`, as ModernBERT's unpadded path does;
    /// only rotary positions and attention see the padded layout. Padding rows then hold zeros.
    pub fn forward(&self, input_ids: &Tensor, lengths: &Tensor, train: bool) -> Tensor {
        let (b, t) = input_ids.size2().expect("input_ids is [batch, seq]");
        let unpad = input_ids.device() == Device::Cpu && super::bert::worth_unpadding(lengths, b, t);
        self.encode(input_ids, lengths, train, unpad)
    }

    /// [`ModernBert::forward`] on packed real tokens (`unpad`) or on the padded layout.
    fn encode(&self, input_ids: &Tensor, lengths: &Tensor, train: bool, unpad: bool) -> Tensor {
        let (b, t) = input_ids.size2().expect("input_ids is [batch, seq]");
        let device = input_ids.device();
        let c = &self.cfg;
        let (heads, d, width) = (c.num_attention_heads, c.head_dim(), c.hidden_size);
        let positions = Tensor::arange(t, (Kind::Int64, device));
        // Keys a query may see: real ones, and in local layers those within the window.
        let keys = positions.unsqueeze(0).lt_tensor(&lengths.unsqueeze(1)).view([b, 1, 1, t]);
        let distance = (positions.unsqueeze(1) - positions.unsqueeze(0)).abs();
        let local = keys.logical_and(&distance.le(c.sliding_window()).view([1, 1, t, t]));
        let global_rope = rotary(t, d, c.rope_theta(true), device);
        let local_rope = rotary(t, d, c.rope_theta(false), device);
        let real = unpad.then(|| keys.view([b * t]).nonzero().squeeze_dim(1));
        // `[b, t, w]` → the layout the position-wise layers run on, and back.
        let pack = |y: Tensor| match &real {
            Some(idx) => y.reshape([b * t, -1]).index_select(0, idx),
            None => y,
        };
        let unpack = |y: &Tensor| -> Tensor {
            match &real {
                Some(idx) => {
                    let w = *y.size().last().expect("packed rows are [tokens, width]");
                    Tensor::zeros([b * t, w], (y.kind(), y.device())).index_copy(0, idx, y).view([b, t, w])
                }
                None => y.shallow_clone(),
            }
        };
        let ids = match &real {
            Some(idx) => input_ids.reshape([b * t]).index_select(0, idx),
            None => input_ids.shallow_clone(),
        };
        let mut x = dropout(&self.emb_norm.forward(&self.tok_embeddings.forward(&ids)), c.embedding_dropout, train);
        for l in &self.layers {
            let (allowed, (cos, sin)) = if l.global { (&keys, &global_rope) } else { (&local, &local_rope) };
            let h = match &l.attn_norm {
                Some(n) => n.forward(&x),
                None => x.shallow_clone(),
            };
            let qkv = unpack(&l.wqkv.forward(&h)).view([b, t, 3, heads, d]);
            let split = |i: i64| qkv.select(2, i).transpose(1, 2);
            let (q, k, v) = (apply_rotary(&split(0), cos, sin), apply_rotary(&split(1), cos, sin), split(2));
            let a = pack(attention(&q, &k, &v, allowed, c.attention_dropout, train).transpose(1, 2).reshape([b, t, width]));
            // Out of place: the norm above saved `x` for its backward pass.
            x = &x + dropout(&l.wo.forward(&a), c.attention_dropout, train);
            let gated = l.wi.forward(&l.mlp_norm.forward(&x));
            let parts = gated.chunk(2, -1);
            x = &x + l.mlp_wo.forward(&dropout(&(parts[0].gelu("none") * &parts[1]), c.mlp_dropout, train));
        }
        unpack(&self.final_norm.forward(&x))
    }
}

/// `ModernBertPredictionHead` (`head.`): dense, GELU, norm; before the MLM decoder and before
/// the classifier.
#[derive(Debug)]
pub(super) struct PredictionHead {
    dense: nn::Linear,
    norm: Norm,
}

impl PredictionHead {
    pub(super) fn new(h: nn::Path, cfg: &ModernBertConfig) -> Self {
        PredictionHead { dense: linear(&h / "dense", cfg.hidden_size, cfg.hidden_size, cfg.classifier_bias, cfg), norm: Norm::new(&h / "norm", cfg.hidden_size, cfg) }
    }

    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        self.norm.forward(&self.dense.forward(x).gelu("none"))
    }
}

/// `ModernBertForMaskedLM`: the encoder under `model`, the prediction head under `head`, the
/// decoder's bias as `decoder.bias` (its weight is the token embeddings).
#[derive(Debug)]
pub struct ModernBertForMaskedLM {
    /// The encoder.
    pub model: ModernBert,
    head: PredictionHead,
    decoder_bias: Option<Tensor>,
}

impl ModernBertForMaskedLM {
    /// Creates the variables under `root`.
    pub fn new(root: &nn::Path, cfg: &ModernBertConfig) -> Self {
        let model = ModernBert::new(&(root / "model"), cfg);
        let head = PredictionHead::new(root / "head", cfg);
        let decoder_bias = cfg.decoder_bias.then(|| (root / "decoder").zeros("bias", &[cfg.vocab_size]));
        ModernBertForMaskedLM { model, head, decoder_bias }
    }

    /// Vocabulary logits of hidden states `[.., hidden]`.
    pub fn predict(&self, hidden: &Tensor) -> Tensor {
        let y = self.head.forward(hidden);
        let logits = y.matmul(&self.model.word_embeddings().transpose(0, 1));
        match &self.decoder_bias {
            Some(b) => logits + b,
            None => logits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder asking for what is not built is named, key and value; ModernBERT-base's own
    /// switches pass.
    #[test]
    fn unbuilt_switches_are_named() {
        let base = serde_json::json!({"hidden_activation": "gelu", "classifier_activation": "gelu", "rope_parameters": {"full_attention": {"rope_theta": 160000.0, "rope_type": "default"}}});
        assert_eq!(unbuilt_switch(&base), None);
        assert_eq!(unbuilt_switch(&serde_json::json!({})), None);
        let relu = serde_json::json!({"hidden_activation": "relu"});
        assert!(unbuilt_switch(&relu).is_some_and(|m| m.contains("hidden_activation = \"relu\"")));
        let yarn = serde_json::json!({"rope_parameters": {"sliding_attention": {"rope_theta": 1e4, "rope_type": "yarn"}}});
        assert!(unbuilt_switch(&yarn).is_some_and(|m| m.contains("sliding_attention.rope_type = \"yarn\"")));
    }

    /// The packed path computes what the padded one does at every real position, forward and
    /// backward, with a window that cuts the longer rows (dropout off: the two draw their
    /// masks over different shapes).
    #[test]
    fn unpadded_encoder_equals_padded_encoder_with_gradients() {
        tch::manual_seed(4);
        let cfg = ModernBertConfig { vocab_size: 50, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 3, num_attention_heads: 4, local_attention: 4, max_position_embeddings: 16, ..Default::default() };
        let vs = nn::VarStore::new(Device::Cpu);
        let model = ModernBert::new(&(vs.root() / "model"), &cfg);
        let (b, t) = (3, 12);
        let ids = Tensor::randint(50, [b, t], (Kind::Int64, Device::Cpu));
        let lengths = Tensor::from_slice(&[12i64, 5, 9]);
        let valid = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).lt_tensor(&lengths.unsqueeze(1)).view([b, t, 1]).to_kind(Kind::Float);
        let run = |unpad: bool| {
            vs.variables().values().for_each(|v| {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            });
            let out = model.encode(&ids, &lengths, true, unpad) * &valid;
            (&out * &out).sum(Kind::Float).backward();
            let mut grads: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, v)| (k, v.grad().copy())).collect();
            grads.sort_by(|x, y| x.0.cmp(&y.0));
            (out.detach(), grads)
        };
        let (padded, gp) = run(false);
        let (packed, gu) = run(true);
        let d = (&padded - &packed).abs().max().double_value(&[]);
        assert!(d < 1e-5, "hidden states differ by {d}");
        for ((name, a), (_, u)) in gp.iter().zip(&gu) {
            let d = (a - u).abs().max().double_value(&[]);
            assert!(d < 1e-4, "{name}: gradients differ by {d}");
        }
        assert!(super::super::bert::worth_unpadding(&lengths, b, t));
    }
}
