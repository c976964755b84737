//! MFU's numerator: the dense-equivalent FLOPs pretune counts for an update's forward pass
//! equal what `torch.utils.flop_counter.FlopCounterMode` counts on `transformers`' model of
//! the same sizes (`scripts/flop_count.py`), for MLM + NSP pre-training and for sequence
//! classification, through the objectives the runs use.

use std::process::Command;

use pretune::batch::HostBatch;
use pretune::objective::ModelSpec;

use crate::util::{ft_config, load_plan, root, tiny_config};

/// FlopCounterMode's count of `kind` at these sizes on a `batch` × `seq` input.
fn counted(kind: &str, spec: &ModelSpec, batch: usize, seq: usize, labels: usize) -> f64 {
    let ModelSpec::Bert { config: c, .. } = spec else { panic!("a BERT") };
    let args: Vec<String> = [c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, batch as i64, seq as i64, labels as i64].iter().map(i64::to_string).collect();
    let out = Command::new(root().join(".venv/bin/python")).arg(root().join("scripts/flop_count.py")).arg(kind).args(&args).output().expect("the venv's python (`make setup`)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A batch of `rows` unpadded rows of `seq` tokens; `scored`: every position is scored (what
/// `transformers`' MLM head computes, the decoder on all positions).
fn batch(rows: usize, seq: usize, scored: bool) -> HostBatch {
    let n = rows * seq;
    HostBatch { batch_size: rows, seq_len: seq, lengths: vec![seq as i64; rows], n_tokens: n, n_examples: rows, masked_positions: if scored { (0..n as i64).collect() } else { Vec::new() }, ..HostBatch::default() }
}

#[test]
fn forward_flops_equal_the_flop_counter_of_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = load_plan(&tiny_config(tmp.path()), &["objective.sentence_pair=nsp"]);
    let ours = pre.objective().forward_flops(&batch(4, 32, true));
    let theirs = counted("pretraining", &pre.model, 4, 32, 2);
    assert!((ours - theirs).abs() <= 0.02 * theirs, "pre-training: ours {ours} vs FlopCounterMode {theirs}");
    // The decoder on the scored positions only: 15 % of them cost far less.
    let sparse = pre.objective().forward_flops(&HostBatch { masked_positions: (0..19).collect(), ..batch(4, 32, false) });
    assert!(sparse < 0.5 * ours, "{sparse} vs {ours}");

    let spam = root().join("data/spam");
    let cfg = ft_config(tmp.path(), "sequence_classification", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "");
    let ft = load_plan(&cfg, &["train.epochs=1"]);
    let ours = ft.objective().forward_flops(&batch(4, 32, false));
    let theirs = counted("classification", &ft.model, 4, 32, 2);
    assert!((ours - theirs).abs() <= 0.02 * theirs, "classification: ours {ours} vs FlopCounterMode {theirs}");
}
