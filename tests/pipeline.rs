//! Whole-pipeline tests on the tiny preset: training, checkpoints, determinism, the cursor.

use std::sync::Arc;

use pretune::actors::control::StopFlag;
use pretune::actors::trainer::Reorder;
use pretune::actors::{eval_data, run, spawn_data_plane, stream_settings, train_stream};
use pretune::batch::HostBatch;
use pretune::checkpoint::CheckpointStore;
use pretune::config;
use pretune::data::stream::ExampleStream;
use pretune::objective::PretrainModel;
use tch::{nn, Device};

use crate::util::tiny_config;

fn plan(dir: &std::path::Path, overrides: &[&str]) -> config::RunPlan {
    let path = tiny_config(dir);
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    config::resolve(&path, config::load(&path, &overrides).unwrap()).unwrap()
}

fn first_batches(plan: &config::RunPlan, workers: usize, n: usize) -> Vec<HostBatch> {
    let stop = StopFlag::new();
    let (rx, handles) = spawn_data_plane(plan, &Default::default(), workers, stop.clone(), Arc::new(|e| panic!("data plane failed: {e:?}"))).unwrap();
    let mut reorder = Reorder::new(0);
    let out: Vec<HostBatch> = (0..n).map(|_| reorder.next(&rx, &stop).expect("a batch")).collect();
    stop.abort();
    drop(rx);
    for h in handles {
        h.join().unwrap();
    }
    out
}

#[test]
fn one_and_four_masker_workers_produce_identical_batches() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &[]);
    let one = first_batches(&p, 1, 12);
    let four = first_batches(&p, 4, 12);
    assert_eq!(one.len(), 12);
    for (a, b) in one.iter().zip(&four) {
        assert_eq!(a, b, "batch {} differs between 1 and 4 workers", a.seq);
    }
    assert!(one.iter().all(|b| b.seq_len <= 64 && b.n_scored > 0));
}

#[test]
fn stream_resumed_from_a_cursor_continues_with_the_same_examples() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &["data.shuffle_block_docs=3"]);
    let mut s = train_stream(&p, Default::default());
    let mut all = Vec::new();
    let mut cursors = Vec::new();
    for _ in 0..400 {
        cursors.push(s.cursor());
        all.push(s.next_example().unwrap().unwrap());
    }
    for at in [0usize, 1, 57, 203, 399] {
        let mut r = ExampleStream::new(p.train_spans.clone(), p.tokenizer.clone(), stream_settings(&p, true), cursors[at]);
        for want in &all[at..] {
            let got = r.next_example().unwrap().unwrap();
            assert_eq!((got.index, &got.payload), (want.index, &want.payload), "resumed at {at}");
        }
    }
}

#[test]
fn tiny_mlm_run_learns_checkpoints_and_reloads_to_the_same_eval() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &[]);
    let eval_plan = plan(dir.path(), &[]);
    let summary = run(p).unwrap();
    assert_eq!(summary.steps, 60);

    // The loss falls by a clear margin: ln(8000) ~ 9.0 at the start.
    let events = std::fs::read_to_string(dir.path().join("run/events.jsonl")).unwrap();
    let losses: Vec<f64> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
        .collect();
    assert!(losses.len() >= 6, "{events}");
    assert!(losses[0] > 8.5, "starts near ln(vocab): {losses:?}");
    assert!(*losses.last().unwrap() < losses[0] - 1.5, "loss did not fall: {losses:?}");

    // Checkpoints at 30 and 60, `latest` at 60, checksums good.
    let store = CheckpointStore::new(dir.path().join("run/checkpoints"));
    let mut steps = store.steps();
    steps.sort();
    assert_eq!(steps, vec![30, 60]);
    let latest = store.latest().unwrap();
    let state = CheckpointStore::verify(&latest).unwrap();
    assert_eq!(state.step, 60);
    assert!(state.tokens_seen > 0 && state.files.contains_key("model.safetensors"));

    // A fresh model loaded from the checkpoint gives exactly the Evaluator's numbers.
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = PretrainModel::new(&vs.root(), &eval_plan.model);
    vs.load(latest.join("model.safetensors")).unwrap();
    let (step, reported) = summary.eval.expect("an evaluation at the end");
    assert_eq!(step, 60);
    let data = eval_data(&eval_plan);
    let again = pretune::objective::eval::evaluate(&model, &data.build().unwrap(), Device::Cpu, eval_plan.names);
    assert_eq!(again.scored_tokens, reported.scored_tokens);
    assert!((again.loss - reported.loss).abs() < 1e-9, "{again:?} vs {reported:?}");
    assert_eq!(again.accuracy, reported.accuracy);
}

#[test]
fn eval_holdout_docs_moves_the_last_documents_out_of_training() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), &["data.eval=[]", "data.eval_holdout_docs=3"]);
    let whole = pretune::data::source::FileSpan::whole(crate::util::root().join("data/sotu/train.txt"), pretune::config::DataFormat::Auto);
    let offsets = pretune::data::source::document_offsets(&whole, &Default::default()).unwrap();
    let cut = offsets[offsets.len() - 3].0;
    assert_eq!(p.train_spans.len(), 1);
    assert_eq!(p.train_spans[0].end, Some(cut));
    assert_eq!(p.eval_spans.len(), 1);
    assert_eq!(p.eval_spans[0].start, cut);
    let held = eval_data(&p).build().unwrap();
    assert!(!held.is_empty());
}

#[test]
fn jsonl_and_globs_feed_the_same_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(crate::util::root().join("data/sotu/valid.txt")).unwrap();
    let docs: Vec<&str> = text.split("\n\n").collect();
    for (i, chunk) in docs.chunks(2).enumerate() {
        let lines: Vec<String> = chunk.iter().map(|d| serde_json::json!({ "text": d }).to_string()).collect();
        std::fs::write(dir.path().join(format!("part-{i}.jsonl")), lines.join("\n") + "\nnot json\n").unwrap();
    }
    let glob = format!("data.train=[\"{}/part-*.jsonl\"]", dir.path().display());
    let p = plan(dir.path(), &[&glob, "data.eval=[]"]);
    assert_eq!(p.train_spans.len(), 2);
    let batches = first_batches(&p, 2, 3);
    assert!(batches.iter().all(|b| b.batch_size == 16 && b.n_scored > 0));
}
