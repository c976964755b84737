//! `objective.kind = "electra"`: replaced-token detection (Clark et al. 2020). The Masker masks
//! as for MLM (rate, 80/10/10, whole words and spans alike) and draws one uniform number per
//! masked position from the counter-based generator, keyed by the example; on the device the
//! generator predicts the masked tokens, a token is sampled from its distribution at each of
//! them (the inverse of its cumulative distribution at that number), the sample replaces the
//! masked input, and the discriminator scores every real position: replaced or original. A
//! sample equal to the original counts as original, as in the paper.
//!
//! Loss = generator MLM cross-entropy (mean over masked positions) + λ · the discriminator's
//! binary cross-entropy (mean over real tokens), λ = `objective.electra.rtd_weight` (50).
//! The sample is drawn from detached logits: nothing flows from the discriminator into the
//! generator, as in the paper.
//!
//! Sampling by inverse CDF rather than Gumbel-max: both draw exactly from the softmax, but
//! Gumbel-max needs a noise value per vocabulary entry (masked positions × vocabulary floats
//! per batch, to ship from the Masker or to draw with libtorch's generator, which the worker
//! count and the device would change); one uniform per position keyed by (seed, example,
//! position) makes every sample independent of batching, workers, ranks and resumes.

use tch::{nn, Device, Kind, Reduction, Tensor};

use super::{correct, Collator, DeviceBatch, EvalMetrics, LossPart, Objective, ObjectiveModel, Per};
use crate::batch::{HostBatch, RawBatch, IGNORE};
use crate::model::electra::{ElectraForPreTraining, ElectraPair};
use crate::rng::{Purpose, Rng};

/// The objective's settings (`[objective.electra]`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ElectraSettings {
    /// λ, the weight of the discriminator's loss.
    pub rtd_weight: f64,
    /// The generator's sampling temperature.
    pub temperature: f64,
}

/// ELECTRA: the pair's sizes and the loss settings.
pub struct Electra {
    /// Discriminator and generator.
    pub pair: ElectraPair,
    /// λ and the temperature.
    pub settings: ElectraSettings,
}

impl Objective for Electra {
    fn build(&self, root: &nn::Path) -> Box<dyn ObjectiveModel> {
        Box::new(ElectraNet { model: ElectraForPreTraining::new(root, &self.pair), settings: self.settings })
    }
    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(super::ModelSpec::Electra { pair: self.pair.clone() }).unwrap_or_default()
    }
    /// Both encoders over every row, the generator's head on the masked positions, the
    /// discriminator's head on every real token.
    fn forward_flops(&self, b: &HostBatch) -> f64 {
        let spec = |c: &crate::model::bert::BertConfig| super::ModelSpec::Bert { config: c.clone(), pair_head: false };
        let (d, g) = (crate::objective::flops::Dims::of(&spec(&self.pair.discriminator)), crate::objective::flops::Dims::of(&spec(&self.pair.generator)));
        // The generator's head: its `h_g × E` transform and the `E × V` decoder (E: the shared
        // embeddings' width).
        let e = self.pair.generator.embedding_width() as f64;
        let gen_head = b.masked_positions.len() as f64 * 2.0 * e * (g.hidden + g.vocab);
        d.encoder_of(b) + g.encoder_of(b) + gen_head + d.linear(b.n_tokens, d.hidden as usize) + d.linear(b.n_tokens, 1)
    }
}

/// The network with its losses and metrics.
pub struct ElectraNet {
    /// Discriminator and generator.
    pub model: ElectraForPreTraining,
    settings: ElectraSettings,
}

/// One forward pass of the pair over a masked batch.
pub struct ElectraOutput {
    /// The generator's logits at the masked positions `[n_masked, vocab]`.
    pub generator_logits: Tensor,
    /// The sampled tokens `[n_masked]`.
    pub sampled: Tensor,
    /// The discriminator's input: the masked batch with the samples in place `[batch, seq]`.
    pub replaced_input: Tensor,
    /// The discriminator's logits `[batch * seq]`.
    pub logits: Tensor,
    /// 1 where the input differs from the original, flat `[batch * seq]`.
    pub labels: Tensor,
    /// 1 at real tokens, flat `[batch * seq]`.
    pub real: Tensor,
}

/// Samples one token per row of `logits` at `temperature` from the uniforms `u` (`[rows]`
/// in [0, 1)): the first token whose cumulative probability exceeds `u`.
pub fn sample_tokens(logits: &Tensor, u: &Tensor, temperature: f64) -> Tensor {
    let _g = tch::no_grad_guard();
    let probs = (logits.detach().to_kind(Kind::Float) / temperature.max(1e-6)).softmax(-1, Kind::Float);
    let cdf = probs.cumsum(-1, Kind::Float);
    let vocab = cdf.size()[1];
    u.to_kind(Kind::Float).unsqueeze(1).searchsorted(&cdf, false, true, "right", None::<&Tensor>).squeeze_dim(1).clamp_max(vocab - 1)
}

impl ElectraNet {
    /// The pair's variables under `root`, with the loss settings.
    pub fn new(root: &nn::Path, pair: &ElectraPair, settings: ElectraSettings) -> Self {
        ElectraNet { model: ElectraForPreTraining::new(root, pair), settings }
    }

    /// The pair's forward pass: generator, samples, discriminator.
    pub fn forward(&self, b: &DeviceBatch, train: bool) -> ElectraOutput {
        let m = &self.model;
        let h = m.generator.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train);
        let hs = h.view([-1, h.size()[2]]).index_select(0, &b.masked_positions);
        let generator_logits = m.generator_logits(&hs);
        let u = b.sample_uniforms.as_ref().expect("an ELECTRA batch carries a uniform per masked position");
        let sampled = sample_tokens(&generator_logits, u, self.settings.temperature);
        let shape = b.input_ids.size();
        let replaced_input = b.input_ids.view([-1]).index_copy(0, &b.masked_positions, &sampled).view(shape.as_slice());
        let labels = Tensor::zeros([shape[0] * shape[1]], (Kind::Float, b.input_ids.device())).index_copy(0, &b.masked_positions, &sampled.ne_tensor(&b.masked_labels).to_kind(Kind::Float));
        let d = m.discriminator.forward(&replaced_input, &b.token_type_ids, &b.lengths, train);
        let logits = m.replaced_logits(&d).view([-1]);
        let t = shape[1];
        let real = Tensor::arange(t, (Kind::Int64, b.input_ids.device())).unsqueeze(0).lt_tensor(&b.lengths.unsqueeze(1)).view([-1]).to_kind(Kind::Float);
        ElectraOutput { generator_logits, sampled, replaced_input, logits, labels, real }
    }
}

/// The discriminator's binary cross-entropy summed over real tokens.
pub fn rtd_loss_sum(o: &ElectraOutput) -> Tensor {
    (o.logits.to_kind(Kind::Float).binary_cross_entropy_with_logits::<Tensor>(&o.labels, None, None, Reduction::None) * &o.real).sum(Kind::Float)
}

impl ObjectiveModel for ElectraNet {
    fn losses(&self, b: &DeviceBatch, train: bool) -> Vec<LossPart> {
        let o = self.forward(b, train);
        let generator = o.generator_logits.cross_entropy_loss::<Tensor>(&b.masked_labels, None, Reduction::Sum, IGNORE, 0.0);
        vec![
            LossPart::new("generator", generator, Per::Target),
            LossPart::new("rtd", rtd_loss_sum(&o), Per::Token).weighted(self.settings.rtd_weight),
        ]
    }

    /// `generator_loss` and `generator_accuracy` (arg-max at the masked positions), `rtd_loss`,
    /// the discriminator's `rtd_accuracy` over real tokens, the `precision` and `recall` of
    /// "replaced", `replaced_share` (so `1 - replaced_share` is the all-original baseline's
    /// accuracy), `rtd_auc` (the chance a replaced token scores above an original one: it
    /// shows what the discriminator has learnt while its probabilities are still below 0.5
    /// everywhere, as they are early on, when the accuracy equals the baseline's), and `loss`
    /// (generator + λ · rtd, what training minimises).
    fn evaluate(&self, batches: &[HostBatch], device: Device) -> EvalMetrics {
        let _guard = tch::no_grad_guard();
        let zero = |k| Tensor::zeros([], (k, device));
        let (mut gen, mut gen_ok, mut rtd) = (zero(Kind::Double), zero(Kind::Int64), zero(Kind::Double));
        let (mut ok, mut tp, mut pred, mut pos) = (zero(Kind::Double), zero(Kind::Double), zero(Kind::Double), zero(Kind::Double));
        let (mut masked, mut tokens) = (0usize, 0usize);
        let mut scores: Vec<(f32, bool)> = Vec::new();
        for hb in batches {
            let b = DeviceBatch::new(hb, device);
            let o = self.forward(&b, false);
            gen += o.generator_logits.cross_entropy_loss::<Tensor>(&b.masked_labels, None, Reduction::Sum, IGNORE, 0.0).to_kind(Kind::Double);
            gen_ok += correct(&o.generator_logits, &b.masked_labels);
            rtd += rtd_loss_sum(&o).to_kind(Kind::Double);
            let said = o.logits.gt(0.0).to_kind(Kind::Float) * &o.real;
            ok += ((said.eq_tensor(&o.labels).to_kind(Kind::Float)) * &o.real).sum(Kind::Double);
            tp += (&said * &o.labels).sum(Kind::Double);
            pred += said.sum(Kind::Double);
            pos += (&o.labels * &o.real).sum(Kind::Double);
            let real = o.real.gt(0.5);
            let logits = Vec::<f32>::try_from(&o.logits.masked_select(&real).to_kind(Kind::Float).to_device(Device::Cpu)).unwrap_or_default();
            let labels = Vec::<f32>::try_from(&o.labels.masked_select(&real).to_device(Device::Cpu)).unwrap_or_default();
            scores.extend(logits.into_iter().zip(labels.into_iter().map(|l| l > 0.5)));
            masked += hb.n_scored;
            tokens += hb.n_tokens;
        }
        let (m, t) = (masked.max(1) as f64, tokens.max(1) as f64);
        let (gen_loss, rtd_loss) = (gen.double_value(&[]) / m, rtd.double_value(&[]) / t);
        let (tp, pred, pos) = (tp.double_value(&[]), pred.double_value(&[]), pos.double_value(&[]));
        let mut out = EvalMetrics::default();
        for (k, v) in [
            ("generator_loss", gen_loss),
            ("generator_accuracy", gen_ok.int64_value(&[]) as f64 / m),
            ("rtd_loss", rtd_loss),
            ("rtd_accuracy", ok.double_value(&[]) / t),
            ("rtd_precision", if pred > 0.0 { tp / pred } else { 0.0 }),
            ("rtd_recall", if pos > 0.0 { tp / pos } else { 0.0 }),
            ("replaced_share", pos / t),
            ("rtd_auc", auc(&mut scores)),
            ("loss", gen_loss + self.settings.rtd_weight * rtd_loss),
            ("scored_tokens", masked as f64),
        ] {
            out.values.insert(k.into(), v);
        }
        out
    }
}

/// The area under the ROC curve of `(score, positive)` pairs: the Mann-Whitney statistic, ties
/// counted half; 0.5 without both classes.
pub fn auc(scores: &mut [(f32, bool)]) -> f64 {
    scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut positives, mut i) = (0.0f64, 0usize, 0usize);
    while i < scores.len() {
        let mut j = i;
        while j < scores.len() && scores[j].0 == scores[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their mean.
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        let pos = scores[i..j].iter().filter(|s| s.1).count();
        rank_sum += mean_rank * pos as f64;
        positives += pos;
        i = j;
    }
    let negatives = scores.len() - positives;
    if positives == 0 || negatives == 0 {
        return 0.5;
    }
    (rank_sum - (positives * (positives + 1)) as f64 / 2.0) / (positives as f64 * negatives as f64)
}

/// MLM masking, then one uniform per masked position for the generator's sample, drawn from
/// the example's own key (`Purpose::Replace`, the stream, its epoch and index), so the sample
/// does not depend on which worker, batch or rank the example went through.
pub struct ElectraCollator {
    /// MLM masking for both streams.
    pub masking: super::BuiltinCollator,
    /// The run seed.
    pub seed: u64,
}

impl Collator for ElectraCollator {
    fn collate(&self, raw: RawBatch, stream: Purpose) -> HostBatch {
        let keys: Vec<(u64, u64)> = raw.examples.iter().map(|e| (e.epoch, e.index)).collect();
        let mut b = self.masking.collate(raw, stream);
        b.sample_uniforms = uniforms(&keys, &b, self.seed, stream);
        b
    }
}

/// The uniforms of a collated batch's masked positions, in their order (row-major), each row's
/// drawn from its example's key (`(epoch, index)` per row).
pub fn uniforms(keys: &[(u64, u64)], b: &HostBatch, seed: u64, stream: Purpose) -> Vec<f32> {
    let seq = b.seq_len.max(1);
    let mut current: Option<(usize, Rng)> = None;
    b.masked_positions
        .iter()
        .map(|&p| {
            let row = p as usize / seq;
            if current.as_ref().is_none_or(|(r, _)| *r != row) {
                let (epoch, index) = keys.get(row).copied().unwrap_or_default();
                current = Some((row, Rng::keyed(seed, Purpose::Replace, &[stream as u64, epoch, index])));
            }
            let (_, rng) = current.as_mut().expect("set above");
            // Below 1: f64 → f32 may round up.
            (rng.next_f64() as f32).min(1.0 - f32::EPSILON)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inverse-CDF sampling draws from the softmax at the temperature: 40,000 uniforms over
    /// five tokens land in proportion to their probabilities (each within 0.01, about four
    /// standard errors), and a uniform in the first token's mass picks it.
    #[test]
    fn samples_follow_the_generator_distribution_at_its_temperature() {
        let logits = Tensor::from_slice(&[2.0f32, 1.0, 0.0, -1.0, 0.5]).view([1, 5]);
        let n = 40_000;
        let mut rng = Rng::keyed(1, Purpose::Replace, &[]);
        let u: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32).collect();
        for temperature in [1.0, 2.0] {
            let rows = logits.expand([n as i64, 5], true);
            let drawn = Vec::<i64>::try_from(&sample_tokens(&rows, &Tensor::from_slice(&u), temperature)).unwrap();
            let want = Vec::<f64>::try_from(&(&logits / temperature).softmax(-1, Kind::Double).view([-1])).unwrap();
            for (k, p) in want.iter().enumerate() {
                let got = drawn.iter().filter(|&&t| t == k as i64).count() as f64 / n as f64;
                assert!((got - p).abs() < 0.01, "temperature {temperature}: token {k} drawn {got}, probability {p}");
            }
        }
        let first = Vec::<i64>::try_from(&sample_tokens(&logits, &Tensor::from_slice(&[0.0f32]), 1.0)).unwrap();
        assert_eq!(first, [0]);
        let last = Vec::<i64>::try_from(&sample_tokens(&logits, &Tensor::from_slice(&[1.0f32 - f32::EPSILON]), 1.0)).unwrap();
        assert_eq!(last, [4]);
    }

    /// FLOPs by hand for a discriminator of width 128 (2 layers, FFN 512) and a generator of
    /// width 64 (FFN 256), embeddings 128, vocabulary 1,000, one row of 10 real tokens with 3
    /// masked.
    #[test]
    fn forward_flops_by_hand() {
        let d = crate::model::bert::BertConfig { vocab_size: 1000, hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 512, model_type: "electra".into(), ..Default::default() };
        let electra = Electra { pair: ElectraPair::with_generator_width(d, 64), settings: ElectraSettings { rtd_weight: 50.0, temperature: 1.0 } };
        assert_eq!((electra.pair.generator.intermediate_size, electra.pair.generator.num_attention_heads), (256, 1));
        let b = HostBatch { lengths: vec![10], masked_positions: vec![1, 4, 7], n_tokens: 10, ..Default::default() };
        let layer = |h: f64, i: f64| 10.0 * (8.0 * h * h + 4.0 * h * i) + 4.0 * h * 100.0;
        let encoders = 2.0 * layer(128.0, 512.0) + 2.0 * layer(64.0, 256.0);
        let generator_head = 3.0 * (2.0 * 64.0 * 128.0 + 2.0 * 128.0 * 1000.0);
        let discriminator_head = 10.0 * (2.0 * 128.0 * 128.0 + 2.0 * 128.0);
        assert_eq!(electra.forward_flops(&b), encoders + generator_head + discriminator_head);
    }

    /// AUC by hand: perfect ranking 1, reversed 0, all tied 0.5, one swap of four pairs 0.75.
    #[test]
    fn auc_counts_correctly_ranked_pairs() {
        assert_eq!(auc(&mut [(0.1, false), (0.2, false), (0.8, true), (0.9, true)]), 1.0);
        assert_eq!(auc(&mut [(0.9, false), (0.8, false), (0.2, true), (0.1, true)]), 0.0);
        assert_eq!(auc(&mut [(0.5, false), (0.5, true), (0.5, true)]), 0.5);
        assert_eq!(auc(&mut [(0.1, false), (0.3, false), (0.2, true), (0.4, true)]), 0.75);
        assert_eq!(auc(&mut [(0.1, false)]), 0.5);
    }
}
