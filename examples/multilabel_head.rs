//! A user's own task head through the traits the built-in tasks use: multi-label
//! classification with a sigmoid head. Each spam-set example gets two labels at once, `spam`
//! (from the data) and `long` (more than 48 tokens), derived in the collator from the labelled
//! examples the Loader hands it; the objective puts a linear layer (`multilabel.*`) with one
//! output per label on BERT's pooled `[CLS]`, trains it with binary cross-entropy, and reports
//! per-label accuracy and micro-F1. Resume, signals, checkpoints and metrics come with the
//! engine.
//!
//! ```sh
//! make build && cargo run --example multilabel_head
//! ```

use pretune::actors::Pipeline;
use pretune::batch::{HostBatch, RawBatch};
use pretune::data::stream::Payload;
use pretune::finetune::data::TaskExample;
use pretune::finetune::task::collate_plain;
use pretune::model::bert::{Bert, BertConfig};
use pretune::model::heads::HeadKind;
use pretune::objective::{Collator, DeviceBatch, Direction, EvalMetrics, LossPart, Monitor, Objective, ObjectiveModel, Per};
use pretune::rng::Purpose;
use tch::nn::{self, Module};
use tch::{Device, Kind, Reduction, Tensor};

const LABELS: [&str; 2] = ["spam", "long"];

/// Collator: the plain padded rows, and `LABELS.len()` targets per example in `row_targets`.
struct MultiLabelCollator {
    pad: u32,
}

impl Collator for MultiLabelCollator {
    fn collate(&self, raw: RawBatch, _stream: Purpose) -> HostBatch {
        let examples: Vec<&TaskExample> = raw.examples.iter().filter_map(|e| if let Payload::Labelled(t) = &e.payload { Some(t.as_ref()) } else { None }).collect();
        let mut b = collate_plain(&examples, self.pad, HeadKind::Regression);
        b.row_targets = examples.iter().flat_map(|e| [(e.labels.first() == Some(&1)) as u8 as f32, (e.ids.len() > 48) as u8 as f32]).collect();
        (b.seq, b.cursor) = (raw.seq, raw.cursor);
        b
    }
}

/// Objective: BERT, its pooler, and the sigmoid head.
struct MultiLabel {
    config: BertConfig,
}

struct MultiLabelNet {
    bert: Bert,
    pooler: nn::Linear,
    head: nn::Linear,
}

impl MultiLabelNet {
    fn logits(&self, b: &DeviceBatch, train: bool) -> Tensor {
        let h = self.bert.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train);
        self.head.forward(&self.pooler.forward(&h.select(1, 0)).tanh().dropout(0.1, train))
    }
}

impl ObjectiveModel for MultiLabelNet {
    fn losses(&self, b: &DeviceBatch, train: bool) -> Vec<LossPart> {
        let logits = self.logits(b, train);
        let targets = b.row_targets.as_ref().expect("multi-label targets").view([-1, LABELS.len() as i64]);
        // Summed over labels and examples; the Trainer divides by the examples.
        let sum = logits.binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, Reduction::Sum) / LABELS.len() as f64;
        vec![LossPart { name: "multilabel", sum, per: Per::Example }]
    }

    fn evaluate(&self, batches: &[HostBatch], device: Device) -> EvalMetrics {
        let _g = tch::no_grad_guard();
        let mut m = pretune::objective::eval::loss_means(self, batches, device);
        let (mut right, mut tp, mut fp, mut fneg, mut n) = ([0i64; 2], 0i64, 0i64, 0i64, 0i64);
        for hb in batches {
            let b = DeviceBatch::new(hb, device);
            let pred = Vec::<f32>::try_from(self.logits(&b, false).gt(0.0).to_kind(Kind::Float).view([-1])).unwrap();
            for (i, (p, t)) in pred.iter().zip(&hb.row_targets).enumerate() {
                right[i % 2] += (p == t) as i64;
                tp += (*p == 1.0 && *t == 1.0) as i64;
                fp += (*p == 1.0 && *t == 0.0) as i64;
                fneg += (*p == 0.0 && *t == 1.0) as i64;
            }
            n += hb.n_examples as i64;
        }
        for (i, l) in LABELS.iter().enumerate() {
            m.values.insert(format!("accuracy.{l}"), right[i] as f64 / n.max(1) as f64);
        }
        m.values.insert("micro_f1".into(), 2.0 * tp as f64 / (2 * tp + fp + fneg).max(1) as f64);
        m
    }
}

impl Objective for MultiLabel {
    fn build(&self, root: &nn::Path) -> Box<dyn ObjectiveModel> {
        let h = self.config.hidden_size;
        let bert = Bert::new(root / "bert", &self.config);
        let pooler = nn::linear(root / "bert" / "pooler" / "dense", h, h, Default::default());
        let head = nn::linear(root / "multilabel", h, LABELS.len() as i64, Default::default());
        Box::new(MultiLabelNet { bert, pooler, head })
    }
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "architecture": "BertForMultiLabel", "labels": LABELS, "config": self.config })
    }
    fn monitor(&self) -> Monitor {
        Monitor { metric: "micro_f1".into(), direction: Direction::Higher }
    }
}

fn main() -> anyhow::Result<()> {
    // The tiny spam config with fresh tiny weights (no pre-trained checkpoint needed here).
    let overrides: Vec<String> = [
        "init.checkpoint=\"\"",
        "model.hidden_size=64",
        "model.num_layers=2",
        "model.num_heads=2",
        "model.intermediate_size=128",
        "model.max_position_embeddings=128",
        "tokenizer.path=\"data/sotu/tokenizer.json\"",
        "train.epochs=3",
        "train.patience=0",
        "run.out_dir=\"runs/example-multilabel\"",
        "metrics.listen=\"\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let plan = pretune::plan::load_and_resolve(std::path::Path::new("configs/finetune-cls-tiny.toml"), &overrides)?;
    let config = match &plan.model {
        pretune::objective::ModelSpec::Bert { config, .. } => config.clone(),
        _ => anyhow::bail!("a BERT config"),
    };
    let pad = plan.tokenizer.special_ids().pad;
    let summary = Pipeline::new(plan).objective(MultiLabelCollator { pad }, MultiLabel { config }).run()?;
    let (step, m) = summary.eval.clone().expect("an evaluation");
    println!("multi-label: {} steps ({} ended it); eval at step {step}: {}", summary.steps, summary.ended_by, m.summary());
    println!("per label: accuracy.spam {:.3}, accuracy.long {:.3}", m.get("accuracy.spam").unwrap_or(0.0), m.get("accuracy.long").unwrap_or(0.0));
    Ok(())
}
