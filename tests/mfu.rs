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

/// `scripts/gpu-check.sh` on a machine without CUDA stops at once with the reason; its summary
/// reads what a run writes (a CPU run stands in for the GPU's) and reports what is missing as
/// missing.
#[test]
fn gpu_check_fails_fast_without_cuda_and_its_summary_reads_the_runs() {
    let t0 = std::time::Instant::now();
    let out = Command::new(root().join("scripts/gpu-check.sh")).env("PATH", "/usr/bin:/bin").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no CUDA device here"));
    assert!(t0.elapsed() < std::time::Duration::from_secs(30));

    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let cfg = tiny_config(tmp.path());
    let (code, o, e) = crate::util::run_cli(&["train".to_string(), cfg.display().to_string(), "--set".into(), "train.max_steps=40".into(), "--set".into(), "train.log_every=5".into(), "--set".into(), format!("run.out_dir=\"{}\"", work.join("bert").display())]);
    assert_eq!(code, 0, "{o}\n{e}");
    std::fs::write(work.join("device.txt"), "1 x Test GPU").unwrap();
    std::fs::write(work.join("mem-bert.txt"), "1000\n3072\n2048\n").unwrap();
    std::fs::write(work.join("hf-trainer.json"), "{\"side\": \"transformers.Trainer\", \"tokens_per_s\": 1000}\n").unwrap();
    let result = tmp.path().join("out/results.json");
    let out = Command::new(root().join(".venv/bin/python")).arg(root().join("scripts/gpu_check_summary.py")).arg(&work).arg(&result).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    let bert = &r["bert_base_mlm_nsp"];
    // tokens/s over the steps after the 20-step warm-up, from the run's own step records.
    let steps: Vec<pretune::actors::events::StepReport> = crate::util::records(&work.join("bert")).into_iter().filter_map(|x| match x {
        pretune::actors::events::Record::Step(s) => Some(s),
        _ => None,
    }).collect();
    let (a, b) = (steps.iter().find(|s| s.step == 20).unwrap(), steps.last().unwrap());
    let want = ((b.tokens - a.tokens) as f64 / (b.elapsed_s - a.elapsed_s)).round();
    assert_eq!(bert["tokens_per_s"].as_f64(), Some(want), "{r}");
    assert!(bert["mfu"].as_f64().is_some_and(|m| m > 0.0), "{r}");
    assert_eq!(bert["peak_device_mem_gb"].as_f64(), Some(3.0));
    assert_eq!(r["ratio_bert_tokens_per_s_ours_over_hf_trainer"].as_f64(), Some((want / 1000.0 * 1000.0).round() / 1000.0), "{r}");
    assert!(r["glm_base"]["missing"].as_str().is_some_and(|m| m.contains("glm/events.jsonl")), "{r}");
    assert!(r["hf_plain_loop_bert_base"]["missing"].is_string(), "{r}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("| BERT-base MLM+NSP (pretune) |"));

    // The whole script's plumbing on the CPU (SMOKE=1: tiny batches and steps): every run
    // writes its numbers and the summary reads them.
    let work = tmp.path().join("smoke");
    let result = work.join("results.json");
    let out = Command::new(root().join("scripts/gpu-check.sh"))
        .env("SMOKE", "1")
        .env("BIN", crate::util::bin())
        .env("WORK", &work)
        .env("RESULT", &result)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    for run in ["bert_base_mlm_nsp", "glm_base"] {
        assert!(r[run]["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0) && r[run]["mfu"].as_f64().is_some_and(|m| m > 0.0), "{run}: {r}");
    }
    assert!(r["hf_plain_loop_bert_base"]["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0), "{r}");
    assert!(r["hf_plain_loop_bert_base"]["mfu_same_formula"].is_number(), "{r}");
    assert!(r["minilm_squad"]["eval"]["f1"].is_number() || !root().join(".cache/squad").exists(), "{r}");
    assert!(r["check"].as_str().is_some_and(|c| c.contains("ok: pretrain run") && c.contains("MFU peak")), "{r}");
    // Benchmark runs write no checkpoint (`train.save_checkpoints = false`): BERT-base's with
    // its AdamW moments is 1.3 GB of disk and seconds of the GPU's budget. The QA run keeps
    // its last one, for `predict` on each device.
    for run in ["bert", "glm"] {
        assert!(work.join(run).join("events.jsonl").exists(), "{run} ran");
        assert!(!work.join(run).join("checkpoints").exists(), "{run} wrote a checkpoint");
    }
    if root().join(".cache/squad").exists() {
        let p = &r["minilm_squad_predict"];
        assert_eq!((p["questions"].as_u64(), p["same_answers"].as_u64(), p["device"].as_str()), (Some(12), Some(12), Some("cpu")), "{r}");
        assert!(p["seconds_device"].as_f64().is_some_and(|s| s > 0.0) && p["max_score_diff"].as_f64() == Some(0.0), "{r}");
    }
}
