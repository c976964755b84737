//! Extractive question answering against `transformers` (fixture made by
//! `scripts/make_qa_fixture.py`): the head and its loss, the windows and their labels, the
//! post-processing, the SQuAD metrics; then a run, `predict`, `evaluate` and `export` end to
//! end on SQuAD-shaped data.

use std::collections::HashMap;
use std::sync::Arc;

use pretune::batch::HostBatch;
use pretune::config::BadRecordPolicy;
use pretune::data::tokenize::TextTokenizer;
use pretune::finetune::data::BadRecords;
use pretune::finetune::metrics::{squad_exact, squad_f1};
use pretune::finetune::qa::{self, Answers, QaSettings, QaWindows};
use pretune::finetune::squad_v2::SquadV2Score;
use pretune::finetune::task::{TaskNet, TaskSpec};
use pretune::finetune::tasks::question_answering::{add_window_logits, QA_PAD_LOGIT};
use pretune::finetune::tasks::{Task, TaskContext};
use pretune::model::bert::BertConfig;
use pretune::objective::{DeviceBatch, ObjectiveModel};
use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};

use crate::util::{fixture, root};

/// The QA task on a BERT of `config` (the tokenizer only pads here), windows as in the tests.
fn qa_task(config: BertConfig) -> std::sync::Arc<dyn Task> {
    let tokenizer = pretune::data::tokenize::TextTokenizer::load(&root().join("data/sotu/tokenizer.json"), None).unwrap();
    let task = pretune::config::TaskConfig { kind: Some("question_answering".into()), doc_stride: 32, n_best_size: 20, max_answer_length: 12, ..Default::default() };
    let encoder = pretune::objective::ModelSpec::Bert { config, pair_head: false };
    let cx = TaskContext { config: &task, tokenizer: std::sync::Arc::new(tokenizer), encoder: &encoder, max_seq_len: 96, generate: Default::default() };
    std::sync::Arc::from((pretune::finetune::tasks::question_answering::KIND.build)(&cx).unwrap())
}

#[test]
fn qa_head_logits_and_loss_match_bert_for_question_answering() {
    let dir = fixture("qa");
    let cfg: BertConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("head_config.json")).unwrap()).unwrap();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = TaskNet::new(&vs.root(), qa_task(cfg));
    vs.load(dir.join("head_weights.safetensors")).unwrap();
    let f: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("head_batch.safetensors")).unwrap().into_iter().collect();
    let v = |k: &str| Vec::<i64>::try_from(&f[k].view([-1])).unwrap();
    let lengths = v("lengths");
    let (b, t) = (lengths.len(), f["input_ids"].size()[1] as usize);
    let mut row_labels = Vec::new();
    for (s, e) in v("start_positions").into_iter().zip(v("end_positions")) {
        row_labels.extend([s, e]);
    }
    let hb = HostBatch {
        batch_size: b,
        seq_len: t,
        input_ids: v("input_ids"),
        token_type_ids: v("token_type_ids"),
        lengths: lengths.clone(),
        n_examples: b,
        row_labels,
        ..Default::default()
    };
    let _g = tch::no_grad_guard();
    let db = DeviceBatch::new(&hb, Device::Cpu);
    let out = net.outputs(&db, false);
    let valid = Tensor::arange(t as i64, (Kind::Int64, Device::Cpu)).unsqueeze(0).lt_tensor(&f["lengths"].unsqueeze(1));
    for (k, name) in [(0, "start_logits"), (1, "end_logits")] {
        let d = (out.select(2, k) - &f[name]).abs().masked_fill(&valid.logical_not(), 0.0).max().double_value(&[]);
        assert!(d < 1e-5, "{name} differ from transformers by {d}");
    }
    // Our loss is a sum over windows; transformers' the mean of each window's loss, run alone.
    let parts = net.losses(&db, false);
    let got = parts[0].sum.double_value(&[]) / b as f64;
    let want = f["loss"].double_value(&[0]);
    assert!((got - want).abs() < 1e-5, "loss {got} vs transformers {want}");
}

fn fixture_windows() -> (Vec<Arc<pretune::data::labelled::QaRecord>>, Vec<pretune::data::labelled::TaskExample>, Vec<Value>) {
    let dir = fixture("qa");
    let recs: Vec<_> = qa::read_squad(&dir.join("records.jsonl"), qa::Need::Trained, false, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() })
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    let tok = TextTokenizer::load(&root().join(".cache/minilm/model/tokenizer.json"), None).unwrap();
    let mut w = QaWindows::new(&tok, 96, 32).unwrap();
    let mut ours = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        ours.extend(w.windows(i, r, true).unwrap());
    }
    let want: Vec<Value> = std::fs::read_to_string(dir.join("windows.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (recs, ours, want)
}

#[test]
fn windows_and_labels_match_the_fast_tokenizer_and_run_qa() {
    let (recs, ours, want) = fixture_windows();
    assert_eq!(recs.len(), 155);
    assert_eq!(ours.len(), want.len(), "window count");
    let mut overran = 0;
    for (k, (o, w)) in ours.iter().zip(&want).enumerate() {
        let ids: Vec<u32> = serde_json::from_value(w["input_ids"].clone()).unwrap();
        let types: Vec<u8> = serde_json::from_value(w["token_type_ids"].clone()).unwrap();
        let offsets: Vec<Option<(u32, u32)>> = serde_json::from_value(w["offsets"].clone()).unwrap();
        let window = o.window.as_ref().unwrap();
        assert_eq!(window.question as u64, w["question"].as_u64().unwrap(), "window {k}: question");
        assert_eq!(o.ids, ids, "window {k}: input ids");
        assert_eq!(o.types, types, "window {k}: token types");
        assert_eq!(window.offsets, offsets, "window {k}: offsets");
        let (s, e) = (w["start"].as_i64().unwrap(), w["end"].as_i64().unwrap());
        if w["overran"].as_bool().unwrap() {
            // run_qa.py walks onto [SEP] when the answer starts in the window's last context
            // token; we stay on that token.
            overran += 1;
            let last = offsets.iter().rposition(Option::is_some).unwrap() as i64;
            assert_eq!(o.labels, vec![last, e], "window {k}: labels where run_qa.py overruns");
        } else {
            assert_eq!(o.labels, vec![s, e], "window {k}: start / end labels");
        }
    }
    assert!(overran <= 2, "{overran} windows where run_qa.py walks off the context");
    assert!(ours.iter().filter(|o| o.labels == [0, 0]).count() > 50, "windows without the answer are labelled at [CLS]");
}

#[test]
fn postprocessing_matches_run_qa_on_fixed_logits() {
    let (_, ours, _) = fixture_windows();
    let dir = fixture("qa");
    let f: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("logits.safetensors")).unwrap().into_iter().collect();
    let (start, end) = (Vec::<f32>::try_from(&f["start"]).unwrap(), Vec::<f32>::try_from(&f["end"]).unwrap());
    let mut answers = Answers::new(QaSettings { doc_stride: 32, n_best_size: 20, max_answer_length: 12, ..QaSettings::default() });
    let mut at = 0;
    for o in &ours {
        let n = o.ids.len();
        answers.add(o.window.as_ref().unwrap(), &start[at..at + n], &end[at..at + n]);
        at += n;
    }
    let want: HashMap<String, String> = serde_json::from_str(&std::fs::read_to_string(dir.join("predictions.json")).unwrap()).unwrap();
    let got = answers.finish();
    assert_eq!(got.len(), want.len());
    for (rec, p) in &got {
        assert_eq!(&p.text, &want[&rec.id], "question {}", rec.id);
        if let Some(s) = p.start {
            // The offset is a character index into the context.
            assert!(rec.context.chars().skip(s).collect::<String>().starts_with(&p.text));
        }
    }
    // The same through batches: padding and batch boundaries change nothing.
    let mut batched = Answers::new(QaSettings { doc_stride: 32, n_best_size: 20, max_answer_length: 12, ..QaSettings::default() });
    let mut at = 0;
    for chunk in ours.chunks(7) {
        let refs: Vec<_> = chunk.iter().collect();
        let hb = qa_task(BertConfig::default()).collate(&refs);
        let mut logits = vec![QA_PAD_LOGIT as f32; hb.batch_size * hb.seq_len * 2];
        for (r, o) in chunk.iter().enumerate() {
            for j in 0..o.ids.len() {
                logits[(r * hb.seq_len + j) * 2] = start[at + j];
                logits[(r * hb.seq_len + j) * 2 + 1] = end[at + j];
            }
            at += o.ids.len();
        }
        add_window_logits(&Tensor::from_slice(&logits).view([hb.batch_size as i64, hb.seq_len as i64, 2]), &hb, &mut batched);
    }
    let batched = batched.finish();
    assert_eq!(batched.iter().map(|(_, p)| p.text.clone()).collect::<Vec<_>>(), got.iter().map(|(_, p)| p.text.clone()).collect::<Vec<_>>());
}

#[test]
fn squad_v2_postprocessing_and_metrics_match_run_qa_and_squad_evaluate() {
    let dir = fixture("qa");
    let recs: Vec<_> = qa::read_squad(&dir.join("records_v2.jsonl"), qa::Need::Scored, true, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() })
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    assert_eq!((recs.len(), recs.iter().filter(|r| r.answers.is_empty()).count()), (215, 60));
    let tok = TextTokenizer::load(&root().join(".cache/minilm/model/tokenizer.json"), None).unwrap();
    let mut w = QaWindows::new(&tok, 96, 32).unwrap();
    let mut windows = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        windows.extend(w.windows(i, r, true).unwrap());
    }
    let f: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("logits_v2.safetensors")).unwrap().into_iter().collect();
    assert_eq!(windows.len() as i64, f["windows"].int64_value(&[0]), "window count");
    let (start, end) = (Vec::<f32>::try_from(&f["start"]).unwrap(), Vec::<f32>::try_from(&f["end"]).unwrap());
    let want: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("squad_v2.json")).unwrap()).unwrap();
    for threshold in [0.0f32, -1.5] {
        let settings = QaSettings { doc_stride: 32, n_best_size: 20, max_answer_length: 12, version_2_with_negative: true, null_score_diff_threshold: threshold };
        let mut answers = Answers::new(settings);
        let mut at = 0;
        for o in &windows {
            let n = o.ids.len();
            answers.add(o.window.as_ref().unwrap(), &start[at..at + n], &end[at..at + n]);
            at += n;
        }
        let case = &want[format!("{threshold:?}")];
        let mut score = SquadV2Score::default();
        let mut empty = 0;
        for (rec, p) in answers.finish() {
            let w = &case["predictions"][&rec.id];
            let diff = p.null_score_diff.expect("every question has a span here");
            let want_diff = w["diff"].as_f64().unwrap() as f32;
            assert!((diff - want_diff).abs() < 1e-4, "question {}: score difference {diff} vs run_qa.py {want_diff}", rec.id);
            assert_eq!(p.best_span, w["span"].as_str().unwrap(), "question {}: best span", rec.id);
            if (diff - threshold).abs() > 1e-4 {
                assert_eq!(p.text, w["answer"].as_str().unwrap(), "question {} at threshold {threshold}", rec.id);
            }
            empty += usize::from(p.text.is_empty());
            let refs: Vec<&str> = rec.answers.iter().map(|a| a.text.as_str()).collect();
            score.add(&p.best_span, p.null_score_diff, &refs);
        }
        assert!(empty > 30 && empty < 185, "the null answer wins sometimes ({empty} of 215)");
        let t = score.totals(threshold);
        let e = &case["evaluation"];
        let close = |ours: f64, key: &str| assert!((ours - e[key].as_f64().unwrap()).abs() < 1e-6, "{key} at {threshold}: {ours} vs squad_evaluate {}", e[key]);
        close(t.exact, "exact");
        close(t.f1, "f1");
        close(t.has_answer.unwrap().0, "HasAns_exact");
        close(t.has_answer.unwrap().1, "HasAns_f1");
        close(t.no_answer.unwrap().0, "NoAns_exact");
        close(t.no_answer.unwrap().1, "NoAns_f1");
        assert_eq!((t.has_answer_questions, t.no_answer_questions), (155, 60));
        close(t.best_exact.0, "best_exact");
        close(t.best_f1.0, "best_f1");
        for (ours, key) in [(t.best_exact.1, "best_exact_thresh"), (t.best_f1.1, "best_f1_thresh")] {
            assert!((ours - e[key].as_f64().unwrap()).abs() < 1e-4, "{key}: {ours} vs squad_evaluate {}", e[key]);
        }
    }
}

#[test]
fn squad_exact_match_and_f1_match_transformers_squad_metrics() {
    let dir = fixture("qa");
    let mut n = 0;
    for l in std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let (p, g) = (v["pred"].as_str().unwrap(), v["gold"].as_str().unwrap());
        assert_eq!(squad_exact(p, g), v["exact"].as_f64().unwrap(), "exact match of {p:?} vs {g:?}");
        assert!((squad_f1(p, g) - v["f1"].as_f64().unwrap()).abs() < 1e-12, "F1 of {p:?} vs {g:?}: {} vs {}", squad_f1(p, g), v["f1"]);
        n += 1;
    }
    assert!(n > 100);
}

/// The first `n` SQuAD dev questions as `datasets`-style JSONL (long ones first: several
/// windows each at 128 tokens), and the same questions as SQuAD JSON.
fn squad_subset(dir: &std::path::Path, skip: usize, n: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let dev: Value = serde_json::from_str(&std::fs::read_to_string(root().join(".cache/squad/dev-v1.1.json")).unwrap()).unwrap();
    let mut rows = Vec::new();
    let mut paragraphs = Vec::new();
    'all: for article in dev["data"].as_array().unwrap() {
        for para in article["paragraphs"].as_array().unwrap() {
            let mut qas = Vec::new();
            for qa in para["qas"].as_array().unwrap() {
                rows.push(serde_json::json!({"id": qa["id"], "question": qa["question"], "context": para["context"],
                    "answers": {"text": qa["answers"].as_array().unwrap().iter().map(|a| a["text"].clone()).collect::<Vec<_>>(),
                                "answer_start": qa["answers"].as_array().unwrap().iter().map(|a| a["answer_start"].clone()).collect::<Vec<_>>()}}));
                if rows.len() > skip {
                    qas.push(qa.clone());
                }
                if rows.len() >= skip + n {
                    paragraphs.push(serde_json::json!({"context": para["context"], "qas": qas}));
                    break 'all;
                }
            }
            if !qas.is_empty() {
                paragraphs.push(serde_json::json!({"context": para["context"], "qas": qas}));
            }
        }
    }
    let jsonl = dir.join(format!("squad-{skip}.jsonl"));
    std::fs::write(&jsonl, rows[skip..].iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let json = dir.join(format!("squad-{skip}.json"));
    std::fs::write(&json, serde_json::json!({"version": "1.1", "data": [{"title": "subset", "paragraphs": paragraphs}]}).to_string()).unwrap();
    (jsonl, json)
}

#[test]
fn question_answering_trains_predicts_evaluates_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = squad_subset(dir.path(), 0, 96);
    let (_, dev) = squad_subset(dir.path(), 200, 40);
    let cfg = dir.path().join("qa.toml");
    std::fs::write(&cfg, format!(r#"
[run]
name = "qa-test"
seed = 1
out_dir = "{out}"
device = "cpu"
threads = 1
[init]
hf = "{r}/.cache/minilm/model"
[task]
kind = "question_answering"
doc_stride = 32
[data]
train = ["{train}"]
eval = ["{dev}"]
[train]
batch_size = 8
max_seq_len = 128
max_steps = 12
lr = 5e-5
log_every = 4
keep_last = 1
[metrics]
listen = ""
"#, out = dir.path().join("run").display(), r = root().display(), train = train.display(), dev = dev.display())).unwrap();
    let s = crate::finetune::finetune(&cfg, &[]);
    let (_, m) = s.eval.clone().expect("an evaluation at the end");
    let (em, f1) = (m.get("exact_match").unwrap(), m.get("f1").unwrap());
    assert_eq!(m.get("questions"), Some(40.0));
    assert_eq!(s.metric, "f1");

    // `evaluate` on the checkpoint reproduces the run's evaluation.
    let run = dir.path().join("run/checkpoints");
    let (code, out, err) = crate::util::run_cli(&["evaluate", "--checkpoint", run.to_str().unwrap(), "--data", dev.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["task"], "question_answering");
    assert_eq!(v["records"], 40);
    for k in ["exact_match", "f1"] {
        assert!((v[k].as_f64().unwrap() - m.get(k).unwrap()).abs() < 1e-9, "{k}: evaluate {} vs the run {}", v[k], m.get(k).unwrap());
    }
    let (code, table, err) = crate::util::run_cli(&["evaluate", "--checkpoint", run.to_str().unwrap(), "--data", dev.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("exact_match") && table.contains("f1"), "{table}");
    // A SQuAD v1.1 model always answers: a null threshold would be ignored, so it is refused;
    // scored as SQuAD v2.0 (its `[CLS]` learnt from windows without the answer), it may
    // abstain, and every question here has an answer.
    let (code, _, err) = crate::util::run_cli(&["evaluate", "--checkpoint", run.to_str().unwrap(), "--data", dev.to_str().unwrap(), "--set", "task.null_score_diff_threshold=-1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("only read under task.version_2_with_negative = true"), "{err}");
    let (code, out, err) = crate::util::run_cli(&["evaluate", "--checkpoint", run.to_str().unwrap(), "--data", dev.to_str().unwrap(), "--json", "--set", "task.version_2_with_negative=true", "--set", "task.null_score_diff_threshold=1e9"]);
    assert_eq!(code, 0, "{err}");
    let v2: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v2["has_answer_questions"].as_f64(), v2["no_answer_questions"].as_f64()), (Some(40.0), Some(0.0)), "{v2}");
    assert!((v2["f1"].as_f64().unwrap() - f1).abs() < 1e-9, "answering every question is v1.1's score: {v2}");

    // `predict`: one line per question; `start` is a character offset whose text is the
    // answer, also for Unicode and a context of more than 100 windows.
    let long_context: String = (0..3000).map(|i| format!("Word{i} é 世 👋. ")).collect();
    let odd = [
        serde_json::json!({"id": "long", "question": "Which word?", "context": long_context}),
        serde_json::json!({"id": "empty-question", "question": "", "context": "Zoë met José in Paris."}),
        serde_json::json!({"id": "no-context", "question": "Who?", "context": ""}),
    ];
    let input = dir.path().join("predict.jsonl");
    let mut text = std::fs::read_to_string(dev.with_extension("jsonl")).unwrap();
    for o in &odd {
        text.push_str(&format!("{o}\n"));
    }
    std::fs::write(&input, text).unwrap();
    let (code, out, err) = crate::util::run_cli(&["predict", "--checkpoint", run.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 43);
    let contexts: HashMap<String, String> = std::fs::read_to_string(&input).unwrap().lines().map(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        (v["id"].as_str().unwrap().to_owned(), v["context"].as_str().unwrap().to_owned())
    }).collect();
    for l in &lines {
        let (id, answer) = (l["id"].as_str().unwrap(), l["answer"].as_str().unwrap());
        match l["start"].as_u64() {
            Some(s) => assert!(contexts[id].chars().skip(s as usize).collect::<String>().starts_with(answer), "{l}"),
            None => assert_eq!(answer, "", "{l}"),
        }
    }
    assert!(lines.iter().any(|l| l["id"] == "long" && !l["answer"].as_str().unwrap().is_empty()));
    // The run's EM / F1 again, from `predict`'s answers and the official normalisation (max over
    // each question's references, as `squad_metrics` does): another path to the same numbers.
    let references: HashMap<String, Vec<String>> = std::fs::read_to_string(dev.with_extension("jsonl")).unwrap().lines().map(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        (v["id"].as_str().unwrap().to_owned(), v["answers"]["text"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect())
    }).collect();
    let (mut em_sum, mut f1_sum) = (0.0, 0.0);
    for l in lines.iter().filter(|l| references.contains_key(l["id"].as_str().unwrap())) {
        let (p, refs) = (l["answer"].as_str().unwrap(), &references[l["id"].as_str().unwrap()]);
        em_sum += refs.iter().map(|g| squad_exact(p, g)).fold(0.0, f64::max);
        f1_sum += refs.iter().map(|g| squad_f1(p, g)).fold(0.0, f64::max);
    }
    let n = references.len() as f64;
    assert_eq!(n, 40.0);
    assert!((100.0 * em_sum / n - em).abs() < 1e-9 && (100.0 * f1_sum / n - f1).abs() < 1e-9, "predict gives EM {} / F1 {}, the run EM {em} / F1 {f1}", 100.0 * em_sum / n, 100.0 * f1_sum / n);
    assert_eq!(lines.iter().find(|l| l["id"] == "no-context").unwrap()["answer"], "");

    // `export --hf`: AutoModelForQuestionAnswering loads it with the same logits.
    let hf = dir.path().join("hf");
    let (code, _, err) = crate::util::run_cli(&["export", "--hf", hf.to_str().unwrap(), "--checkpoint", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForQuestionAnswering");
    let ids = vec![vec![101i64, 2040, 2003, 2009, 102, 3000, 2001, 2182, 1012, 102]];
    let theirs = crate::finetune::hf_logits(&hf, "AutoModelForQuestionAnswering", &ids);
    let ck = s.best_checkpoint.clone().unwrap();
    let state = pretune::checkpoint::CheckpointStore::verify(&ck).unwrap();
    let spec: TaskSpec = serde_json::from_value(state.model).unwrap();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = TaskNet::new(&vs.root(), std::sync::Arc::from(pretune::finetune::task::restore(&spec, &state.config, Default::default()).unwrap()));
    vs.load(ck.join("model.safetensors")).unwrap();
    let hb = HostBatch { batch_size: 1, seq_len: 10, input_ids: ids[0].clone(), token_type_ids: vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1], lengths: vec![10], n_examples: 1, ..Default::default() };
    let _g = tch::no_grad_guard();
    let ours = Vec::<f64>::try_from(&net.outputs(&DeviceBatch::new(&hb, Device::Cpu), false).to_kind(Kind::Double).view([-1])).unwrap();
    // hf_logits.py passes no token types: compare with all-zero types.
    let hb0 = HostBatch { token_type_ids: vec![0; 10], ..hb };
    let ours0 = Vec::<f64>::try_from(&net.outputs(&DeviceBatch::new(&hb0, Device::Cpu), false).to_kind(Kind::Double).view([-1])).unwrap();
    assert_eq!(ours0.len(), theirs.len());
    for (a, b) in ours0.iter().zip(&theirs) {
        assert!((a - b).abs() < 1e-4, "ours {ours0:?} vs transformers {theirs:?}");
    }
    assert_ne!(ours, ours0, "token types matter");
}

/// SQuAD v2.0-shaped JSONL: the first `n` dev questions from `skip` on, every third asked of
/// another question's context with no answer.
fn squad_v2_subset(dir: &std::path::Path, skip: usize, n: usize) -> std::path::PathBuf {
    let (jsonl, _) = squad_subset(dir, skip, n);
    let rows: Vec<Value> = std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut out = String::new();
    for (k, r) in rows.iter().enumerate() {
        let mut r = r.clone();
        if k % 3 == 2 {
            r["context"] = rows[(k + n / 2) % n]["context"].clone();
            r["answers"] = serde_json::json!({"text": [], "answer_start": []});
            r["id"] = format!("{}-none", r["id"].as_str().unwrap()).into();
        }
        out.push_str(&format!("{r}\n"));
    }
    let path = dir.join(format!("squad-v2-{skip}.jsonl"));
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn squad_v2_trains_on_unanswerable_questions_and_tunes_its_null_threshold_at_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let train = squad_v2_subset(dir.path(), 0, 48);
    let dev = squad_v2_subset(dir.path(), 200, 30);
    let cfg = dir.path().join("qa.toml");
    let write = |v2: bool| std::fs::write(&cfg, format!(r#"
[run]
seed = 1
out_dir = "{out}"
device = "cpu"
threads = 1
[tokenizer]
path = "{r}/.cache/minilm/model/tokenizer.json"
[model]
hidden_size = 32
num_layers = 1
num_heads = 2
intermediate_size = 64
max_position_embeddings = 128
[task]
kind = "question_answering"
doc_stride = 32
version_2_with_negative = {v2}
[data]
train = ["{train}"]
eval = ["{dev}"]
on_error = "fail"
[train]
batch_size = 8
max_seq_len = 96
max_steps = 4
lr = 1e-3
keep_last = 1
[metrics]
listen = ""
"#, out = dir.path().join("run").display(), r = root().display(), train = train.display(), dev = dev.display())).unwrap();

    // SQuAD v1.1 asks an answer of every question: the unanswerable ones name the setting.
    write(false);
    let (code, _, err) = crate::util::run_cli(&["train", cfg.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("no answer to train on") && err.contains("task.version_2_with_negative = true"), "{err}");

    write(true);
    let s = crate::finetune::finetune(&cfg, &[]);
    let (_, m) = s.eval.clone().expect("an evaluation at the end");
    assert_eq!((m.get("questions"), m.get("has_answer_questions"), m.get("no_answer_questions")), (Some(30.0), Some(20.0), Some(10.0)));
    for k in ["has_answer_exact_match", "has_answer_f1", "no_answer_exact_match", "no_answer_f1", "best_exact_match", "best_exact_match_threshold", "best_f1_threshold"] {
        assert!(m.get(k).is_some_and(f64::is_finite), "{k} in {m:?}");
    }
    let (f1, best) = (m.get("f1").unwrap(), m.get("best_f1").unwrap());
    assert!(best >= f1 - 1e-9, "the best threshold's F1 {best} is at least the run's {f1}");

    // The threshold is post-processing: `evaluate` and `predict` take it on the checkpoint.
    let run = dir.path().join("run/checkpoints");
    let evaluate = |sets: &[&str]| -> Value {
        let mut args = vec!["evaluate", "--checkpoint", run.to_str().unwrap(), "--data", dev.to_str().unwrap(), "--json"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let (code, out, err) = crate::util::run_cli(&args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(out.trim()).unwrap()
    };
    let same = evaluate(&[]);
    assert!((same["f1"].as_f64().unwrap() - f1).abs() < 1e-9, "evaluate {} vs the run {f1}", same["f1"]);
    // Answering nothing is right on exactly the unanswerable third.
    let none = evaluate(&["task.null_score_diff_threshold=-1e9"]);
    assert!((none["f1"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9 && none["no_answer_f1"] == 100.0 && none["has_answer_f1"] == 0.0, "{none}");
    // Answering everything is wrong on every unanswerable question.
    let all = evaluate(&["task.null_score_diff_threshold=1e9"]);
    assert_eq!(all["no_answer_exact_match"], 0.0, "{all}");
    assert!(all["best_f1"] == same["best_f1"] && best >= none["f1"].as_f64().unwrap() && best >= all["f1"].as_f64().unwrap() - 1e-9);
    let t = m.get("best_f1_threshold").unwrap();
    if t != 0.0 {
        // (0.0 is the official script's value when answering nothing is best.)
        let at = evaluate(&[&format!("task.null_score_diff_threshold={t}")]);
        assert!((at["f1"].as_f64().unwrap() - best).abs() < 1e-6, "F1 at best_f1_threshold {t}: {} vs best_f1 {best}", at["f1"]);
    }

    let (code, out, err) = crate::util::run_cli(&["predict", "--checkpoint", run.to_str().unwrap(), "--input", dev.to_str().unwrap(), "--set", "task.null_score_diff_threshold=-1e9"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 30);
    for l in &lines {
        assert!(l["answer"] == "" && l["start"].is_null() && l["null_score_diff"].is_number() && l["best_span"].is_string(), "{l}");
    }
    // Only post-processing keys apply to a trained model, each checked as a config key is.
    for (set, says) in [
        ("task.doc_stride=16", "takes generate.KEY=VALUE and task.null_score_diff_threshold, task.version_2_with_negative, task.n_best_size, task.max_answer_length"),
        ("task.null_score_diff_threshold=high", "task.null_score_diff_threshold: invalid type"),
        ("task.n_best_size=0", "task.n_best_size: must be positive"),
    ] {
        let (code, _, err) = crate::util::run_cli(&["evaluate", "--checkpoint", run.to_str().unwrap(), "--data", dev.to_str().unwrap(), "--set", set]);
        assert_eq!(code, 2, "{set}: {err}");
        assert!(err.contains(says), "{set}: {err}");
    }
}

#[test]
fn a_training_answer_that_is_not_in_its_context_is_a_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = squad_subset(dir.path(), 0, 20);
    let mut text = std::fs::read_to_string(&train).unwrap();
    text.push_str(r#"{"id": "wrong", "question": "Who?", "context": "Nobody was there.", "answers": {"text": ["Bob"], "answer_start": [0]}}"#);
    text.push('\n');
    std::fs::write(&train, text).unwrap();
    let cfg = dir.path().join("qa.toml");
    let write = |on_error: &str| std::fs::write(&cfg, format!(r#"
[run]
out_dir = "{out}"
device = "cpu"
[init]
hf = "{r}/.cache/minilm/model"
[task]
kind = "question_answering"
[data]
train = ["{train}"]
on_error = "{on_error}"
[train]
max_steps = 1
batch_size = 4
max_seq_len = 128
doc_stride = 32
[metrics]
listen = ""
"#, out = dir.path().join("run").display(), r = root().display(), train = train.display())).unwrap();
    write("fail");
    let (code, _, err) = crate::util::run_cli(&["check", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("train.doc_stride"), "a task key under [train] is named: {err}");
    let fixed = std::fs::read_to_string(&cfg).unwrap().replace("doc_stride = 32\n", "").replace("kind = \"question_answering\"\n", "kind = \"question_answering\"\ndoc_stride = 32\n");
    std::fs::write(&cfg, &fixed).unwrap();
    let (code, _, err) = crate::util::run_cli(&["check", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("squad-0.jsonl:21") && err.contains("question `wrong`") && err.contains("\"Bob\""), "{err}");
    std::fs::write(&cfg, fixed.replace("on_error = \"fail\"", "on_error = \"skip\"")).unwrap();
    let (code, out, err) = crate::util::run_cli(&["check", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(format!("{out}{err}").contains("1 malformed"), "the skipped record is reported: {out}{err}");
}
