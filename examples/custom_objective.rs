//! A new objective through the same traits the built-in ones use: shuffled-sentence
//! detection beside MLM. The collator (run in the Masker workers) rotates the sentences of half
//! the sequences, keyed by each example's index, and labels them; the objective adds its own
//! head (mean-pooled hidden states, a 2-way linear layer named `shuffle_head`) to a BERT with
//! the MLM head, and returns both loss parts. Its evaluation adds `shuffle_accuracy` to the
//! default (each part's mean loss); the best checkpoint follows `mlm_loss`.
//!
//! ```sh
//! make build && cargo run --example custom_objective -- configs/pretrain-mlm-tiny.toml
//! ```

use std::sync::Arc;

use pretune::actors::Pipeline;
use pretune::batch::{HostBatch, RawBatch};
use pretune::data::packing::Segment;
use pretune::data::stream::Payload;
use pretune::model::bert::{BertConfig, BertForMaskedLM};
use pretune::batch::IGNORE;
use pretune::objective::eval::loss_means;
use pretune::objective::{Collator, DeviceBatch, Direction, EvalMetrics, LossPart, ModelSpec, Monitor, Objective, ObjectiveModel, Per};
use pretune::rng::{Rng, Purpose};
use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

/// Collator: rotate the sentences of about half the sequences (label 1), then MLM as usual.
struct ShuffleCpu {
    mlm: Arc<dyn Collator>,
    seed: u64,
}

/// The sentences of a segment, in order.
fn sentences(seg: &Segment) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut start = 0usize;
    for &end in &seg.sentence_ends {
        let end = end as usize;
        out.push(Segment { ids: seg.ids[start..end].to_vec(), word_start: seg.word_start[start..end].to_vec(), sentence_ends: vec![(end - start) as u32] });
        start = end;
    }
    out
}

impl Collator for ShuffleCpu {
    fn collate(&self, mut raw: RawBatch, stream: Purpose) -> HostBatch {
        let labels: Vec<i64> = raw
            .examples
            .iter_mut()
            .map(|ex| {
                let Payload::Single(seg) = &mut ex.payload else { return 0 };
                let mut rng = Rng::keyed(self.seed, stream, &[u64::MAX - 7, ex.index]);
                let mut parts = sentences(seg);
                if parts.len() < 2 || rng.next_f64() < 0.5 {
                    return 0;
                }
                let k = 1 + rng.below(parts.len() as u64 - 1) as usize;
                parts.rotate_left(k);
                let mut rotated = Segment::default();
                for p in &parts {
                    rotated.extend(p);
                }
                *seg = rotated;
                1
            })
            .collect();
        let mut batch = self.mlm.collate(raw, stream);
        batch.pair_labels = labels;
        batch
    }
}

/// Objective: BERT + MLM head + its own shuffle head.
struct ShuffleDevice {
    config: BertConfig,
}

struct ShuffleModel {
    mlm: BertForMaskedLM,
    head: nn::Linear,
}

impl ShuffleModel {
    fn shuffle_logits(&self, h: &Tensor, b: &DeviceBatch) -> Tensor {
        let (rows, t, _) = h.size3().expect("[batch, seq, hidden]");
        // Mean over each row's real tokens.
        let real = Tensor::arange(t, (Kind::Int64, h.device())).view([1, t]).lt_tensor(&b.lengths.view([rows, 1])).to_kind(Kind::Float).unsqueeze(-1);
        let pooled = (h * &real).sum_dim_intlist(1, false, Kind::Float) / real.sum_dim_intlist(1, false, Kind::Float);
        self.head.forward(&pooled)
    }
}

impl ObjectiveModel for ShuffleModel {
    /// The default metrics (`mlm_loss`, `shuffle_loss`, `loss`) plus `shuffle_accuracy`.
    fn evaluate(&self, batches: &[HostBatch], device: tch::Device) -> EvalMetrics {
        let mut m = loss_means(self, batches, device);
        let _g = tch::no_grad_guard();
        let (mut right, mut n) = (0i64, 0i64);
        for hb in batches {
            let b = DeviceBatch::new(hb, device);
            let Some(labels) = &b.pair_labels else { continue };
            let h = self.mlm.bert.forward(&b.input_ids, &b.token_type_ids, &b.lengths, false);
            right += self.shuffle_logits(&h, &b).argmax(-1, false).eq_tensor(labels).sum(Kind::Int64).int64_value(&[]);
            n += labels.ne(IGNORE).sum(Kind::Int64).int64_value(&[]);
        }
        m.values.insert("shuffle_accuracy".into(), right as f64 / n.max(1) as f64);
        m
    }

    fn losses(&self, b: &DeviceBatch, train: bool) -> Vec<LossPart> {
        let h = self.mlm.bert.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train);
        let width = h.size()[2];
        let lm_logits = self.mlm.predict(&h.view([-1, width]).index_select(0, &b.masked_positions));
        let lm = lm_logits.cross_entropy_loss::<Tensor>(&b.masked_labels, None, Reduction::Sum, -100, 0.0);
        let logits = self.shuffle_logits(&h, b);
        let mut parts = vec![LossPart::new("mlm", lm, Per::Target)];
        if let Some(l) = &b.pair_labels {
            parts.push(LossPart::new("shuffle", logits.cross_entropy_loss::<Tensor>(l, None, Reduction::Sum, -100, 0.0), Per::Example));
        }
        parts
    }
}

impl Objective for ShuffleDevice {
    fn build(&self, root: &nn::Path) -> Box<dyn ObjectiveModel> {
        let mlm = BertForMaskedLM::new(root, &self.config);
        let head = nn::linear(root / "shuffle_head", self.config.hidden_size, 2, Default::default());
        Box::new(ShuffleModel { mlm, head })
    }
    fn monitor(&self) -> Monitor {
        Monitor { metric: "mlm_loss".into(), direction: Direction::Lower }
    }
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "architecture": "BertWithShuffleHead", "config": self.config })
    }
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "configs/pretrain-mlm-tiny.toml".into());
    let overrides: Vec<String> = ["train.max_steps=60", "train.eval_every=60", "train.log_every=20", "run.out_dir=runs/example-custom-objective", "metrics.listen="]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let plan = pretune::plan::load_and_resolve(std::path::Path::new(&path), &overrides)?;
    let ModelSpec::Bert { config, .. } = plan.model.clone() else { anyhow::bail!("use an MLM config") };
    let cpu = ShuffleCpu { mlm: plan.collator(), seed: plan.config.run.seed };
    let summary = Pipeline::new(plan).objective(cpu, ShuffleDevice { config }).run()?;
    let (step, m) = summary.eval.expect("an evaluation at the end");
    println!("{} steps, final loss {:.4}; eval at step {step}: {}", summary.steps, summary.final_loss, m.summary());
    Ok(())
}
