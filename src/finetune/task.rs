//! A fine-tuning task as an objective: its [`Collator`] turns labelled examples into batches in
//! the Masker workers, its [`Objective`] builds the task network (BERT with a head, or the
//! pre-trained GLM for cloze) on the Trainer and the Evaluator, with the loss and held-out
//! metrics of the task. Nothing else about fine-tuning is special: it runs on the same
//! pipeline as pre-training.

use std::path::PathBuf;

use tch::{nn, Device, Kind, Reduction, Tensor};

use super::cloze::ClozeSpec;
use super::qa::{Answers, QaSettings};
use super::data::LabelSet;
use super::metrics::{pearson, spearman, Confusion, EntityCounts, SquadScore};
use crate::batch::{HostBatch, RawBatch, IGNORE};
use crate::data::labelled::TaskExample;
use crate::data::stream::Payload;
use crate::model::bert::{BertConfig, BertForMaskedLM};
use crate::model::glm::{Glm, GlmConfig};
use crate::model::heads::{BertForTask, HeadKind};
use crate::objective::{Collator, DeviceBatch, EvalMetrics, LossPart, Monitor, Objective, ObjectiveModel, Per};
use crate::rng::Purpose;

/// What a task checkpoint's `state.json` says about its model (`model` field).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    /// Always `"BertForTask"`.
    pub architecture: String,
    /// Encoder sizes (Hugging Face names).
    pub config: BertConfig,
    /// The task head, so `predict` and `export` rebuild the same model.
    pub kind: HeadKind,
    /// Class names by id.
    pub labels: Vec<String>,
    /// The tokenizer used.
    pub tokenizer: PathBuf,
    /// Longest input.
    pub max_seq_len: usize,
    /// Cloze on a GLM: its sizes (cloze without it runs on BERT's MLM head, sized by `config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glm: Option<GlmConfig>,
    /// Question answering: windows and post-processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<QaSettings>,
}

/// The `objective` label of a task's loss.
pub fn task_label(kind: HeadKind) -> &'static str {
    match kind {
        HeadKind::SequenceClassification => "cls",
        HeadKind::Regression => "regression",
        HeadKind::TokenClassification => "tag",
        HeadKind::Cloze => "cloze",
        HeadKind::QuestionAnswering => "qa",
    }
}

/// The start / end logit of padding positions: far below any real logit, so padding is never
/// an answer and takes no share of the softmax (`transformers` scores padding too, which makes
/// its loss depend on how far a batch is padded).
pub const QA_PAD_LOGIT: f64 = -1e4;

/// Collates labelled examples: padded rows, the labels where the task's loss reads them.
#[derive(Debug, Clone)]
pub struct TaskCollator {
    /// The task: where its labels go in the batch (rows, scored tokens, start / end).
    pub kind: HeadKind,
    /// Cloze: pattern answers and GLM ids.
    pub cloze: Option<ClozeSpec>,
    /// `[PAD]`.
    pub pad: u32,
}

impl TaskCollator {
    /// A batch of `examples` (no randomness: labelled batches are a pure function of the
    /// examples).
    pub fn batch(&self, examples: &[&TaskExample]) -> HostBatch {
        match (&self.cloze, self.kind) {
            (Some(spec), HeadKind::Cloze) => super::cloze::collate(examples, spec, self.pad),
            _ => collate_plain(examples, self.pad, self.kind),
        }
    }
}

impl Collator for TaskCollator {
    fn collate(&self, raw: RawBatch, _stream: Purpose) -> HostBatch {
        let examples: Vec<&TaskExample> = raw
            .examples
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::Labelled(t) => Some(t.as_ref()),
                _ => None,
            })
            .collect();
        let mut b = self.batch(&examples);
        b.seq = raw.seq;
        b.cursor = raw.cursor;
        b
    }
}

/// Pads and stacks examples (length rounded up to a multiple of 8). Token classification puts
/// its labelled positions (first sub-tokens) in `masked_positions`, so the head and the loss
/// run on those only, as the MLM decoder does.
pub fn collate_plain(examples: &[&TaskExample], pad: u32, kind: HeadKind) -> HostBatch {
    let b = examples.len();
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut batch = HostBatch { n_examples: b, ..HostBatch::padded(b, longest, pad) };
    let t = batch.seq_len;
    for (r, e) in examples.iter().enumerate() {
        for (j, (&id, &ty)) in e.ids.iter().zip(&e.types).enumerate() {
            batch.input_ids[r * t + j] = id as i64;
            batch.token_type_ids[r * t + j] = ty as i64;
        }
        match kind {
            HeadKind::TokenClassification => {
                for (j, &l) in e.labels.iter().enumerate() {
                    if l != IGNORE {
                        batch.masked_positions.push((r * t + j) as i64);
                        batch.masked_labels.push(l);
                    }
                }
                batch.word_starts.push(e.word_starts.clone());
            }
            HeadKind::Regression => batch.row_targets.push(e.target),
            HeadKind::QuestionAnswering => {
                batch.row_labels.extend(e.labels.iter().take(2));
                batch.windows.extend(e.window.clone());
            }
            _ => batch.row_labels.push(e.labels.first().copied().unwrap_or(IGNORE)),
        }
        batch.lengths.push(e.ids.len() as i64);
        batch.n_tokens += e.ids.len();
    }
    batch.n_scored = batch.masked_positions.len();
    batch
}

/// A task as an [`Objective`]: builds the network and says what to monitor.
#[derive(Debug, Clone)]
pub struct TaskObjective {
    /// What the checkpoint records.
    pub spec: TaskSpec,
    /// The monitored metric.
    pub monitor: Monitor,
}

impl Objective for TaskObjective {
    fn build(&self, root: &nn::Path) -> Box<dyn ObjectiveModel> {
        Box::new(TaskNet::new(root, &self.spec))
    }
    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }
    fn monitor(&self) -> Monitor {
        self.monitor.clone()
    }
}

enum Net {
    Bert(BertForTask),
    Cloze(Glm),
    /// Cloze on BERT's MLM head (`BertForMaskedLM`'s weights, nothing new).
    BertCloze(BertForMaskedLM),
}

/// The network of a task: a BERT with a head, or a pre-trained GLM or BERT MLM scoring cloze
/// answers.
pub struct TaskNet {
    net: Net,
    kind: HeadKind,
    labels: LabelSet,
    qa: QaSettings,
}

impl TaskNet {
    /// Creates the task network's variables under `root` (Hugging Face names).
    pub fn new(root: &nn::Path, s: &TaskSpec) -> Self {
        let net = match (&s.glm, s.kind) {
            (Some(g), HeadKind::Cloze) => Net::Cloze(Glm::new(root, g)),
            (None, HeadKind::Cloze) => Net::BertCloze(BertForMaskedLM::new(root, &s.config)),
            _ => Net::Bert(BertForTask::new(root, &s.config, s.kind, s.labels.len().max(1) as i64)),
        };
        TaskNet { net, kind: s.kind, labels: LabelSet { names: s.labels.clone() }, qa: s.qa.unwrap_or_default() }
    }

    /// The task's outputs: class logits `[examples, labels]`, regression scores `[examples]`,
    /// tag logits at the scored positions `[n_scored, labels]`, or cloze candidate scores
    /// `[examples, candidates]` (summed answer log-probabilities), or answer start and end
    /// logits `[windows, seq, 2]` (padding at -10⁴: never a candidate, no share of the loss).
    pub fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        match &self.net {
            Net::Cloze(glm) => super::cloze::scores(glm, b, train),
            Net::BertCloze(mlm) => super::cloze::bert_scores(mlm, b, train),
            Net::Bert(m) => match self.kind {
                HeadKind::TokenClassification => m.logits_at(&b.input_ids, &b.token_type_ids, &b.lengths, &b.masked_positions, train),
                HeadKind::Regression => m.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train).view([-1]),
                HeadKind::QuestionAnswering => {
                    let logits = m.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train);
                    let t = logits.size()[1];
                    let pad = Tensor::arange(t, (Kind::Int64, logits.device())).unsqueeze(0).ge_tensor(&b.lengths.unsqueeze(1));
                    logits.masked_fill(&pad.unsqueeze(2), QA_PAD_LOGIT)
                }
                _ => m.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train),
            },
        }
    }

    /// Loss sum of outputs against the batch's labels.
    fn loss_sum(&self, out: &Tensor, b: &DeviceBatch) -> Tensor {
        let ce = |labels: &Tensor| out.cross_entropy_loss::<Tensor>(labels, None, Reduction::Sum, IGNORE, 0.0);
        match self.kind {
            HeadKind::TokenClassification => ce(&b.masked_labels),
            // `BertForQuestionAnswering`: the mean of the start and end cross-entropies.
            HeadKind::QuestionAnswering => match &b.row_labels {
                Some(l) => {
                    let l = l.view([-1, 2]);
                    let ce = |k: i64| out.select(2, k).cross_entropy_loss::<Tensor>(&l.select(1, k), None, Reduction::Sum, IGNORE, 0.0);
                    (ce(0) + ce(1)) * 0.5
                }
                None => out.sum(Kind::Float) * 0.0,
            },
            HeadKind::Regression => match &b.row_targets {
                Some(t) => out.to_kind(Kind::Float).mse_loss(t, Reduction::Sum),
                None => out.sum(Kind::Float) * 0.0,
            },
            _ => match &b.row_labels {
                Some(l) => ce(l),
                None => out.sum(Kind::Float) * 0.0,
            },
        }
    }

    fn per(&self) -> Per {
        if self.kind == HeadKind::TokenClassification {
            Per::Target
        } else {
            Per::Example
        }
    }
}

impl ObjectiveModel for TaskNet {
    fn losses(&self, b: &DeviceBatch, train: bool) -> Vec<LossPart> {
        let out = self.outputs(b, train);
        vec![LossPart { name: task_label(self.kind), sum: self.loss_sum(&out, b), per: self.per() }]
    }

    /// Streaming counts per batch (never all logits at once): `loss`, and `accuracy`,
    /// `macro_f1`, `precision.X` / `recall.X` (classification, cloze), entity `precision`,
    /// `recall`, `f1` and token `accuracy` (token classification, seqeval's chunking), or
    /// `mse`, `pearson`, `spearman` (regression).
    fn evaluate(&self, batches: &[HostBatch], device: Device) -> EvalMetrics {
        let _guard = tch::no_grad_guard();
        let names = &self.labels.names;
        let mut confusion = Confusion::new(names.len().max(1));
        let mut entities = EntityCounts::default();
        let (mut loss, mut n_targets) = (0.0, 0usize);
        let (mut preds, mut golds) = (Vec::new(), Vec::new());
        let mut answers = Answers::new(self.qa);
        for hb in batches {
            let b = DeviceBatch::new(hb, device);
            let out = self.outputs(&b, false);
            loss += self.loss_sum(&out, &b).double_value(&[]);
            n_targets += if self.per() == Per::Target { hb.n_scored } else { hb.n_examples };
            match self.kind {
                HeadKind::QuestionAnswering => add_window_logits(&out, hb, &mut answers),
                HeadKind::Regression => {
                    preds.extend(Vec::<f64>::try_from(&out.to_kind(Kind::Double).to_device(Device::Cpu)).unwrap_or_default());
                    golds.extend(hb.row_targets.iter().map(|&t| t as f64));
                }
                HeadKind::TokenClassification => {
                    let pred = Vec::<i64>::try_from(&out.argmax(-1, false).to_device(Device::Cpu)).unwrap_or_default();
                    // The k-th scored position is the k-th word start that survived truncation.
                    let mut k = 0;
                    for starts in &hb.word_starts {
                        let (mut gold, mut got) = (Vec::new(), Vec::new());
                        for s in starts {
                            match s {
                                Some(_) if k < pred.len() => {
                                    let (g, p) = (hb.masked_labels[k] as usize, pred[k] as usize);
                                    gold.push(names.get(g).map_or("O", String::as_str));
                                    got.push(names.get(p).map_or("O", String::as_str));
                                    confusion.add(g.min(names.len() - 1), p.min(names.len() - 1));
                                    k += 1;
                                }
                                // A word cut off by truncation: nothing was predicted.
                                _ => {
                                    gold.push("O");
                                    got.push("O");
                                }
                            }
                        }
                        entities.add(&gold, &got);
                    }
                }
                _ => {
                    let pred = Vec::<i64>::try_from(&out.argmax(-1, false).to_device(Device::Cpu)).unwrap_or_default();
                    for (&g, p) in hb.row_labels.iter().zip(pred) {
                        if g >= 0 {
                            confusion.add(g as usize, p as usize);
                        }
                    }
                }
            }
        }
        let mut m = EvalMetrics::default();
        m.values.insert("loss".into(), loss / n_targets.max(1) as f64);
        match self.kind {
            HeadKind::QuestionAnswering => {
                let mut score = SquadScore::default();
                for (rec, p) in answers.finish() {
                    let refs: Vec<&str> = rec.answers.iter().map(|a| a.text.as_str()).collect();
                    score.add(&p.text, &refs);
                }
                let (em, f1) = score.percent();
                m.values.insert("exact_match".into(), em);
                m.values.insert("f1".into(), f1);
                m.values.insert("questions".into(), score.questions() as f64);
            }
            HeadKind::Regression => {
                let mse = preds.iter().zip(&golds).map(|(p, g)| (p - g).powi(2)).sum::<f64>() / preds.len().max(1) as f64;
                m.values.insert("mse".into(), mse);
                m.values.insert("pearson".into(), pearson(&preds, &golds));
                m.values.insert("spearman".into(), spearman(&preds, &golds));
            }
            HeadKind::TokenClassification => {
                let e = entities.metrics();
                m.values.insert("accuracy".into(), confusion.metrics().accuracy);
                m.values.insert("precision".into(), e.precision);
                m.values.insert("recall".into(), e.recall);
                m.values.insert("f1".into(), e.f1);
            }
            _ => {
                let c = confusion.metrics();
                m.values.insert("accuracy".into(), c.accuracy);
                m.values.insert("macro_f1".into(), c.macro_f1);
                for (i, name) in names.iter().enumerate() {
                    m.values.insert(format!("precision.{name}"), c.precision[i]);
                    m.values.insert(format!("recall.{name}"), c.recall[i]);
                }
            }
        }
        m
    }
}

/// Feeds a batch's start / end logits (`[rows, seq, 2]`), row by row cut at its length, to
/// the answer collector (rows without a window are skipped).
pub fn add_window_logits(out: &Tensor, hb: &HostBatch, answers: &mut Answers) {
    let logits = out.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
    let flat = Vec::<f32>::try_from(&logits.view([-1])).unwrap_or_default();
    let t = hb.seq_len;
    for (r, w) in hb.windows.iter().enumerate() {
        let n = hb.lengths[r] as usize;
        let (start, end): (Vec<f32>, Vec<f32>) = flat[r * t * 2..(r * t + n) * 2].chunks(2).map(|p| (p[0], p[1])).unzip();
        answers.add(w, &start, &end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_classification_scores_first_sub_tokens_only() {
        let a = TaskExample { ids: vec![2, 10, 11, 12, 3], types: vec![0; 5], labels: vec![IGNORE, 1, IGNORE, 0, IGNORE], word_starts: vec![Some(1), Some(3)], ..Default::default() };
        let b = TaskExample { ids: vec![2, 10, 3], types: vec![0; 3], labels: vec![IGNORE, 2, IGNORE], word_starts: vec![Some(1), None], ..Default::default() };
        let hb = collate_plain(&[&a, &b], 0, HeadKind::TokenClassification);
        assert_eq!(hb.seq_len, 8);
        assert_eq!(hb.masked_positions, vec![1, 3, 9]);
        assert_eq!(hb.masked_labels, vec![1, 0, 2]);
        assert_eq!((hb.n_scored, hb.n_examples, hb.n_tokens), (3, 2, 8));
        assert_eq!(&hb.input_ids[8..12], &[2, 10, 3, 0]);
        let hb = collate_plain(&[&a, &b], 0, HeadKind::SequenceClassification);
        assert_eq!((hb.row_labels.clone(), hb.n_scored), (vec![IGNORE, IGNORE], 0));
    }
}
