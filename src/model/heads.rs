//! Task heads on the BERT encoder, with Hugging Face's names and semantics:
//! `BertForSequenceClassification` (pooled `[CLS]`, dropout, `classifier`; one output for
//! regression), `BertForTokenClassification` (dropout, per-token `classifier`, no pooler) and
//! `BertForQuestionAnswering` (`qa_outputs` to start and end logits, no pooler, no dropout);
//! [`ModernBertForTask`] gives ModernBERT's three (`ModernBertFor{SequenceClassification,
//! TokenClassification, QuestionAnswering}`), and [`EncoderForTask`] puts either family under
//! a task (BERT's, with RoBERTa and ELECTRA, or ModernBERT's).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::bert::{Bert, BertConfig};
use super::dropout::dropout;
use super::modernbert::{linear, ModernBert, ModernBertConfig, PredictionHead};

/// The encoder a task head sits on, with its sizes.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadEncoder {
    /// BERT, RoBERTa / XLM-R or an ELECTRA discriminator (`BertConfig::model_type`).
    Bert(BertConfig),
    /// ModernBERT.
    ModernBert(ModernBertConfig),
}

impl HeadEncoder {
    /// `transformers`' `model_type`.
    pub fn model_type(&self) -> &str {
        match self {
            HeadEncoder::Bert(c) => &c.model_type,
            HeadEncoder::ModernBert(c) => &c.model_type,
        }
    }

    /// The hidden size.
    pub fn hidden_size(&self) -> i64 {
        match self {
            HeadEncoder::Bert(c) => c.hidden_size,
            HeadEncoder::ModernBert(c) => c.hidden_size,
        }
    }
}

/// An encoder with a task head, of either family.
pub enum EncoderForTask {
    /// BERT-family blocks with BERT's (RoBERTa's, ELECTRA's) heads.
    Bert(BertForTask),
    /// ModernBERT with its heads.
    ModernBert(ModernBertForTask),
}

impl EncoderForTask {
    /// Creates the variables under `root` with `transformers`' names for `kind`.
    pub fn new(root: &nn::Path, encoder: &HeadEncoder, kind: HeadKind, num_labels: i64) -> Self {
        match encoder {
            HeadEncoder::Bert(c) => EncoderForTask::Bert(BertForTask::new(root, c, kind, num_labels)),
            HeadEncoder::ModernBert(c) => EncoderForTask::ModernBert(ModernBertForTask::new(root, c, kind, num_labels)),
        }
    }

    /// Logits as [`BertForTask::forward`] gives them (ModernBERT has no token types).
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, lengths: &Tensor, train: bool) -> Tensor {
        match self {
            EncoderForTask::Bert(m) => m.forward(input_ids, token_type_ids, lengths, train),
            EncoderForTask::ModernBert(m) => m.forward(input_ids, lengths, train),
        }
    }

    /// Per-token logits at flat positions only ([`BertForTask::logits_at`]).
    pub fn logits_at(&self, input_ids: &Tensor, token_type_ids: &Tensor, lengths: &Tensor, positions: &Tensor, train: bool) -> Tensor {
        match self {
            EncoderForTask::Bert(m) => m.logits_at(input_ids, token_type_ids, lengths, positions, train),
            EncoderForTask::ModernBert(m) => m.logits_at(input_ids, lengths, positions, train),
        }
    }
}

/// Which of `transformers`' BERT heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `BertForSequenceClassification`: pooled `[CLS]`, dropout, `classifier` (one output for
    /// regression).
    SequenceClassification,
    /// `BertForTokenClassification`: dropout, per-token `classifier`, no pooler.
    TokenClassification,
    /// `BertForQuestionAnswering`: per-token `qa_outputs` (start, end), no pooler, no dropout.
    QuestionAnswering,
}

/// The encoder with a task head.
pub struct BertForTask {
    /// The encoder (`bert.*` in Hugging Face names), shared with pre-training checkpoints.
    pub bert: Bert,
    pooler: Option<nn::Linear>,
    /// RoBERTa's and ELECTRA's sequence head: `classifier.dense` on the first token, then tanh
    /// (RoBERTa) or GELU (ELECTRA), before `classifier.out_proj` (in `classifier`), in place of
    /// BERT's pooler.
    dense: Option<nn::Linear>,
    /// ELECTRA's head uses GELU where RoBERTa's uses tanh.
    gelu_head: bool,
    classifier: nn::Linear,
    dropout: f64,
    /// The task the head is for: decides pooling, output width and loss.
    pub kind: HeadKind,
}

impl BertForTask {
    /// Creates `bert.*` (with `bert.pooler` for sequence heads) and `classifier` under `root`.
    pub fn new(root: &nn::Path, cfg: &BertConfig, kind: HeadKind, num_labels: i64) -> Self {
        let bert = Bert::new(root / cfg.prefix(), cfg);
        let init = nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: cfg.initializer_range }, bs_init: Some(nn::Init::Const(0.0)), bias: true };
        let sequence = kind == HeadKind::SequenceClassification;
        let roberta_head = sequence && (cfg.is_roberta() || cfg.is_electra());
        let pooler = (sequence && !roberta_head).then(|| nn::linear(root / cfg.prefix() / "pooler" / "dense", cfg.hidden_size, cfg.hidden_size, init));
        let dense = roberta_head.then(|| nn::linear(root / "classifier" / "dense", cfg.hidden_size, cfg.hidden_size, init));
        let (path, outputs, dropout) = match kind {
            HeadKind::QuestionAnswering => (root / "qa_outputs", 2, 0.0),
            _ if roberta_head => (root / "classifier" / "out_proj", num_labels, cfg.hidden_dropout_prob),
            _ => (root / "classifier", num_labels, cfg.hidden_dropout_prob),
        };
        let classifier = nn::linear(path, cfg.hidden_size, outputs, init);
        BertForTask { bert, pooler, dense, gelu_head: cfg.is_electra(), classifier, dropout, kind }
    }

    /// Logits: `[batch, labels]` (regression: `[batch, 1]`) or `[batch, seq, labels]`
    /// (question answering: `[batch, seq, 2]`, start and end).
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, lengths: &Tensor, train: bool) -> Tensor {
        let h = self.bert.forward(input_ids, token_type_ids, lengths, train);
        let x = match (&self.pooler, &self.dense) {
            (Some(p), _) => p.forward(&h.select(1, 0)).tanh(),
            // RobertaClassificationHead: dropout, dense, tanh (then dropout, out_proj below).
            (None, Some(d)) => {
                let x = d.forward(&dropout(&h.select(1, 0), self.dropout, train));
                if self.gelu_head {
                    x.gelu("none")
                } else {
                    x.tanh()
                }
            }
            (None, None) => h,
        };
        self.classifier.forward(&dropout(&x, self.dropout, train))
    }

    /// Token-classification logits at flat positions (`row * seq + col`) only: the head and
    /// the loss skip every unlabelled token, as the MLM decoder skips unmasked ones.
    pub fn logits_at(&self, input_ids: &Tensor, token_type_ids: &Tensor, lengths: &Tensor, positions: &Tensor, train: bool) -> Tensor {
        let h = self.bert.forward(input_ids, token_type_ids, lengths, train);
        let h = h.view([-1, h.size()[2]]).index_select(0, positions);
        self.classifier.forward(&dropout(&h, self.dropout, train))
    }
}

/// `ModernBertForSequenceClassification` (the first token, `classifier_pooling = "cls"`, or
/// the mean of the real ones, `"mean"`), `ModernBertForTokenClassification` (every token) and
/// `ModernBertForQuestionAnswering` (every token, start and end): the encoder under `model`,
/// the prediction head under `head`, dropout, and a classifier with a bias.
#[derive(Debug)]
pub struct ModernBertForTask {
    /// The encoder.
    pub model: ModernBert,
    head: PredictionHead,
    classifier: nn::Linear,
    mean_pooling: bool,
    dropout: f64,
    /// Which head.
    pub kind: HeadKind,
}

impl ModernBertForTask {
    /// Creates the variables under `root`, with `labels` outputs (per row or per token;
    /// question answering has 2).
    pub fn new(root: &nn::Path, cfg: &ModernBertConfig, kind: HeadKind, labels: i64) -> Self {
        let model = ModernBert::new(&(root / "model"), cfg);
        let head = PredictionHead::new(root / "head", cfg);
        let labels = if kind == HeadKind::QuestionAnswering { 2 } else { labels };
        let classifier = linear(root / "classifier", cfg.hidden_size, labels, true, cfg);
        ModernBertForTask { model, head, classifier, mean_pooling: cfg.classifier_pooling == "mean", dropout: cfg.classifier_dropout, kind }
    }

    /// Logits `[batch, labels]` (sequence classification) or `[batch, seq, labels]` of
    /// right-padded rows of `lengths` real tokens.
    pub fn forward(&self, input_ids: &Tensor, lengths: &Tensor, train: bool) -> Tensor {
        let h = self.model.forward(input_ids, lengths, train);
        let x = match self.kind {
            HeadKind::SequenceClassification if self.mean_pooling => {
                let t = h.size()[1];
                let real = Tensor::arange(t, (Kind::Int64, h.device())).unsqueeze(0).lt_tensor(&lengths.unsqueeze(1)).to_kind(h.kind()).unsqueeze(-1);
                (&h * &real).sum_dim_intlist(1, false, h.kind()) / real.sum_dim_intlist(1, false, h.kind())
            }
            HeadKind::SequenceClassification => h.select(1, 0),
            _ => h,
        };
        self.classifier.forward(&dropout(&self.head.forward(&x), self.dropout, train))
    }

    /// Per-token logits at flat positions (`row * seq + col`) only.
    pub fn logits_at(&self, input_ids: &Tensor, lengths: &Tensor, positions: &Tensor, train: bool) -> Tensor {
        let h = self.model.forward(input_ids, lengths, train);
        let h = h.view([-1, h.size()[2]]).index_select(0, positions);
        self.classifier.forward(&dropout(&self.head.forward(&h), self.dropout, train))
    }
}
