//! Fine-tuning: heads against `transformers`, MiniLM import, export round trip, early stopping,
//! layer-wise decay and freezing, labels, prediction, and a real fine-tune of MiniLM.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use pretune::actors::{run, RunSummary};
use pretune::init::load_into;
use pretune::model::bert::BertConfig;
use pretune::model::heads::{BertForTask, HeadKind};
use tch::{nn, Device, Kind, Reduction, Tensor};

use crate::util::{fixture, ft_config, max_abs_diff, root, run_cli};

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

#[test]
fn task_heads_match_transformers_logits_and_losses() {
    let dir = fixture("heads");
    let cfg: BertConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let b = read(&dir.join("batch.safetensors"));
    let _g = tch::no_grad_guard();
    for (name, kind, n) in [("cls", HeadKind::SequenceClassification, 3), ("reg", HeadKind::SequenceClassification, 1), ("tag", HeadKind::TokenClassification, 5)] {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = BertForTask::new(&vs.root(), &cfg, kind, n);
        vs.load(dir.join(format!("{name}_weights.safetensors"))).unwrap();
        let logits = model.forward(&b["input_ids"], &b["token_type_ids"], &b["lengths"], false);
        let want = &b[&format!("{name}_logits")];
        let labels = &b[&format!("{name}_labels")];
        let (d, loss) = match (kind, n) {
            (HeadKind::TokenClassification, _) => {
                // Padding rows differ by design (nothing reads them): compare real tokens.
                let m = b["attention_mask"].to_kind(Kind::Bool).unsqueeze(-1);
                let d = (&logits - want).abs().masked_fill(&m.logical_not(), 0.0).max().double_value(&[]);
                let l = logits.view([-1, n]).cross_entropy_loss::<Tensor>(&labels.view([-1]), None, Reduction::Mean, -100, 0.0);
                (d, l)
            }
            (_, 1) => (max_abs_diff(&logits, want), logits.view([-1]).mse_loss(labels, Reduction::Mean)),
            _ => (max_abs_diff(&logits, want), logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)),
        };
        assert!(d < 1e-5, "{name}: logits differ by {d}");
        let dl = (loss.double_value(&[]) - b[&format!("{name}_loss")].double_value(&[0])).abs();
        assert!(dl < 1e-5, "{name}: loss differs by {dl}");
    }
}

#[test]
fn minilm_from_its_hugging_face_folder_matches_transformers_hidden_states() {
    let model_dir = root().join(".cache/minilm/model");
    assert!(model_dir.join("model.safetensors").exists(), "run `make setup` (scripts/fetch-finetune-data.sh) to fetch MiniLM");
    let dir = fixture("minilm");
    let cfg: BertConfig = serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!((cfg.num_hidden_layers, cfg.hidden_size), (6, 384));
    let vs = nn::VarStore::new(Device::Cpu);
    let model = BertForTask::new(&vs.root(), &cfg, HeadKind::SequenceClassification, 2);
    let report = load_into(&vs, &model_dir.join("model.safetensors")).unwrap();
    assert_eq!(report.missing, vec!["classifier.bias", "classifier.weight"], "only the new head is fresh");
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let b = read(&dir.join("batch.safetensors"));
    let _g = tch::no_grad_guard();
    let h = model.bert.forward(&b["input_ids"], &b["token_type_ids"], &b["lengths"], false);
    let m = b["attention_mask"].to_kind(Kind::Bool).unsqueeze(-1);
    let d = (&h - &b["hidden"]).abs().masked_fill(&m.logical_not(), 0.0).max().double_value(&[]);
    assert!(d < 1e-4, "MiniLM hidden states differ from transformers by {d}");
    // Our tokenizer gives the same ids as transformers' for these sentences.
    let tok = pretune::data::tokenize::TextTokenizer::load(&model_dir.join("tokenizer.json"), None).unwrap();
    let ids = tok.encode("A man is eating food.").unwrap().ids;
    let want: Vec<i64> = Vec::<i64>::try_from(&b["input_ids"].get(0)).unwrap();
    let ours: Vec<i64> = std::iter::once(101).chain(ids.iter().map(|&i| i as i64)).chain(std::iter::once(102)).collect();
    assert_eq!(&want[..ours.len()], &ours[..]);
}

pub(crate) fn finetune(cfg: &Path, overrides: &[&str]) -> RunSummary {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let plan = pretune::plan::load_and_resolve(cfg, &o).unwrap();
    assert_eq!(plan.phase(), pretune::workload::Phase::Finetune);
    run(plan).unwrap()
}

/// Runs `scripts/hf_logits.py` with the project's transformers and returns its logits.
pub(crate) fn hf_logits(model_dir: &Path, auto_class: &str, ids: &[Vec<i64>]) -> Vec<f64> {
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts/hf_logits.py"))
        .args([model_dir.to_str().unwrap(), auto_class, &serde_json::to_string(ids).unwrap()])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn exported_checkpoints_load_in_transformers_with_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let spam = root().join("data/spam");
    let cfg = ft_config(dir.path(), "sequence_classification", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "");
    let s = finetune(&cfg, &["train.epochs=0", "train.max_steps=6"]);
    let ck = s.best_checkpoint.clone().unwrap();
    let out = dir.path().join("hf");
    let (code, _, err) = run_cli(&["export", "--hf", out.to_str().unwrap(), "--checkpoint", dir.path().join("run").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ids = vec![vec![2i64, 500, 600, 700, 800, 3], vec![2, 40, 41, 42, 43, 3]];
    let theirs = hf_logits(&out, "AutoModelForSequenceClassification", &ids);

    let state = pretune::checkpoint::CheckpointStore::verify(&ck).unwrap();
    let spec: pretune::finetune::task::TaskSpec = serde_json::from_value(state.model).unwrap();
    let mut vs = nn::VarStore::new(Device::Cpu);
    assert_eq!(spec.kind, "sequence_classification");
    let model = BertForTask::new(&vs.root(), &spec.config, HeadKind::SequenceClassification, 2);
    vs.load(ck.join("model.safetensors")).unwrap();
    let _g = tch::no_grad_guard();
    let input = Tensor::from_slice(&ids.concat()).view([2, 6]);
    let ours = model.forward(&input, &input.zeros_like(), &Tensor::from_slice(&[6i64, 6]), false);
    let ours: Vec<f64> = Vec::<f64>::try_from(&ours.to_kind(Kind::Double).view([-1])).unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() < 1e-4, "ours {ours:?} vs transformers {theirs:?}");
    }
    let hf_config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(hf_config["id2label"]["1"], "spam");
}

#[test]
fn exported_mlm_and_token_classification_checkpoints_match_transformers() {
    // An MLM checkpoint from a short pre-training run.
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::util::tiny_config(dir.path());
    let plan = pretune::plan::load_and_resolve(&cfg, &["train.max_steps=3".into(), "data.eval=[]".into()]).unwrap();
    let model_spec = plan.model.clone();
    pretune::actors::run(plan).unwrap();
    let out = dir.path().join("hf-mlm");
    let ckdir = dir.path().join("run/checkpoints");
    let (code, _, err) = run_cli(&["export", "--hf", out.to_str().unwrap(), "--checkpoint", ckdir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ids = vec![vec![2i64, 100, 4, 300, 3]];
    let theirs = hf_logits(&out, "AutoModelForMaskedLM", &ids);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = pretune::objective::PretrainModel::new(&vs.root(), &model_spec);
    vs.load(ckdir.join("step-00000003/model.safetensors")).unwrap();
    let pretune::objective::PretrainModel::Bert(bert) = model else { panic!("BERT") };
    let ours: Vec<f64> = tch::no_grad(|| {
        let input = Tensor::from_slice(&ids[0]).view([1, 5]);
        let h = bert.bert.forward(&input, &input.zeros_like(), &Tensor::from_slice(&[5i64]), false);
        Vec::<f64>::try_from(&bert.predict(&h).to_kind(Kind::Double).view([-1])).unwrap()
    });
    let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert_eq!(ours.len(), theirs.len());
    assert!(worst < 1e-4, "MLM logits differ by {worst}");

    // A token-classification checkpoint (fresh tiny model, a few WNUT steps).
    let wnut = root().join(".cache/wnut");
    let cfg = ft_config(dir.path(), "token_classification", &wnut.join("train.txt").display().to_string(), &wnut.join("dev.txt").display().to_string(), "");
    let s = finetune(&cfg, &["train.epochs=0", "train.max_steps=4", &format!("run.out_dir={}", dir.path().join("ner").display())]);
    // Per entity type beside the totals (`run_ner.py --return_entity_level_metrics`): each of
    // WNUT-16's ten types, their gold counts adding up to the dev set's entities.
    let (_, m) = s.eval.clone().expect("an evaluation at the end");
    let dev = std::fs::read_to_string(wnut.join("dev.txt")).unwrap();
    let starts: Vec<&str> = dev.lines().filter_map(|l| l.split_whitespace().last()?.strip_prefix("B-")).collect();
    let types: std::collections::BTreeSet<&str> = starts.iter().copied().collect();
    assert_eq!(types.len(), 10);
    assert!(types.iter().all(|t| ["precision", "recall", "f1", "number"].iter().all(|k| m.get(&format!("{k}.{t}")).is_some())), "{m:?}");
    let gold: f64 = m.values.iter().filter(|(k, _)| k.starts_with("number.")).map(|(_, v)| v).sum();
    assert_eq!(gold, starts.len() as f64);
    let out = dir.path().join("hf-ner");
    let (code, _, err) = run_cli(&["export", "--hf", out.to_str().unwrap(), "--checkpoint", s.best_checkpoint.clone().unwrap().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let theirs = hf_logits(&out, "AutoModelForTokenClassification", &ids);
    assert_eq!(theirs.len(), 5 * 21, "21 WNUT tags per token");
    let ck = s.best_checkpoint.clone().unwrap();
    let spec: pretune::finetune::task::TaskSpec = serde_json::from_value(pretune::checkpoint::CheckpointStore::verify(&ck).unwrap().model).unwrap();
    let mut vs = nn::VarStore::new(Device::Cpu);
    assert_eq!(spec.kind, "token_classification");
    let model = BertForTask::new(&vs.root(), &spec.config, HeadKind::TokenClassification, spec.labels.len() as i64);
    vs.load(ck.join("model.safetensors")).unwrap();
    let ours: Vec<f64> = tch::no_grad(|| {
        let input = Tensor::from_slice(&ids[0]).view([1, 5]);
        let logits = model.forward(&input, &input.zeros_like(), &Tensor::from_slice(&[5i64]), false);
        Vec::<f64>::try_from(&logits.to_kind(Kind::Double).view([-1])).unwrap()
    });
    let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-4, "token-classification logits differ by {worst}");
}

#[test]
fn early_stopping_stops_on_a_stalled_metric_and_keeps_the_best_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let spam = root().join("data/spam");
    let cfg = ft_config(dir.path(), "sequence_classification", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "");
    // lr = 0 after warm-up never moves the weights: the metric stalls from the first evaluation.
    let s = finetune(&cfg, &["train.epochs=10", "train.lr=1e-30", "train.eval_every=3", "train.patience=2", "task.metric=\"loss\""]);
    assert!(s.stopped_early);
    assert_eq!(s.steps, 9, "evaluations at 3, 6, 9; the last two stale");
    assert_eq!(s.best.unwrap().0, 3);
    let store = pretune::checkpoint::CheckpointStore::new(dir.path().join("run/checkpoints"));
    assert_eq!(store.best().unwrap(), s.best_checkpoint.clone().unwrap());
    let mut steps = store.steps();
    steps.sort();
    assert_eq!(steps, vec![3, 9], "keep_last = 1 plus the best");
}

#[test]
fn freezing_and_layer_wise_decay_touch_exactly_the_intended_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let spam = root().join("data/spam");
    let cfg = ft_config(dir.path(), "sequence_classification", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "");
    // A first short run gives known starting weights (a fresh init would draw from libtorch's
    // process-wide generator, which other tests share).
    let start = finetune(&cfg, &["train.epochs=0", "train.max_steps=1", &format!("run.out_dir={}", dir.path().join("start").display())]);
    let start_ck = start.best_checkpoint.unwrap();
    let before = read(&start_ck.join("model.safetensors"));
    let o = [
        format!("init.checkpoint={}", start_ck.display()),
        "train.freeze_embeddings=true".into(),
        "train.freeze_layers=1".into(),
        "train.layerwise_lr_decay=0.5".into(),
        "train.epochs=0".into(),
        "train.max_steps=3".into(),
        format!("run.out_dir={}", dir.path().join("frozen").display()),
    ];
    let o: Vec<&str> = o.iter().map(String::as_str).collect();
    let s = finetune(&cfg, &o);
    assert_eq!(s.init.clone().unwrap().missing, Vec::<String>::new(), "every weight comes from the first run");
    let after = read(&s.best_checkpoint.unwrap().join("model.safetensors"));
    for (name, t) in &before {
        let same = t.equal(&after[name]);
        let should_freeze = name.starts_with("bert.embeddings.") || name.starts_with("bert.encoder.layer.0.");
        assert_eq!(same, should_freeze, "{name}: frozen = {should_freeze}, unchanged = {same}");
    }
    use pretune::train::groups::lr_scale;
    assert_eq!(lr_scale("bert.encoder.layer.1.output.dense.weight", 2, 0.5), 0.5);
    assert_eq!(lr_scale("classifier.weight", 2, 0.5), 1.0);
}

#[test]
fn a_label_unseen_in_training_is_a_clear_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("t.jsonl");
    let dev = dir.path().join("d.jsonl");
    std::fs::write(&train, "{\"text\": \"a b\", \"label\": \"x\"}\n{\"text\": \"c\", \"label\": \"y\"}\n").unwrap();
    std::fs::write(&dev, "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"z\"}\n").unwrap();
    let cfg = ft_config(dir.path(), "sequence_classification", &train.display().to_string(), &dev.display().to_string(), "");
    let (code, _, err) = run_cli(&["train", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("d.jsonl:2") && err.contains("`z`"), "{err}");
}

#[test]
fn predict_writes_labels_and_probabilities_and_word_tags() {
    let dir = tempfile::tempdir().unwrap();
    let spam = root().join("data/spam");
    let cfg = ft_config(dir.path(), "sequence_classification", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "");
    finetune(&cfg, &["train.epochs=0", "train.max_steps=4"]);
    let input = dir.path().join("in.csv");
    let long = "win money now ".repeat(100);
    std::fs::write(&input, format!("text\n\"Win money now, click here\"\nthe meeting is at noon\n{long}\n")).unwrap();
    let out = dir.path().join("pred.jsonl");
    let (code, _, err) = run_cli(&["predict", "--checkpoint", dir.path().join("run").to_str().unwrap(), "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("note: 1 of 3 input texts cut to"), "a text longer than the run's max_seq_len is said to be cut: {err}");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    for r in rows {
        let p: HashMap<String, f64> = serde_json::from_value(r["probabilities"].clone()).unwrap();
        assert!((p.values().sum::<f64>() - 1.0).abs() < 1e-6);
        assert!(["ham", "spam"].contains(&r["label"].as_str().unwrap()));
    }
    // `--device cpu` is where `auto` runs on a machine without a GPU; a device the machine
    // lacks, or no device at all, is a usage error naming the flag.
    let on_cpu = dir.path().join("pred-cpu.jsonl");
    let (code, _, err) = run_cli(&["predict", "--checkpoint", dir.path().join("run").to_str().unwrap(), "--input", input.to_str().unwrap(), "--output", on_cpu.to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(code, 0, "{err}");
    if !tch::Cuda::is_available() {
        assert_eq!(std::fs::read_to_string(&on_cpu).unwrap(), std::fs::read_to_string(&out).unwrap());
    }
    // One example per forward pass: the same labels, the same probabilities but for float
    // noise (padding to the longest in a batch changes the kernels' shapes).
    let one_by_one = dir.path().join("pred-1.jsonl");
    let (code, _, err) = run_cli(&["predict", "--checkpoint", dir.path().join("run").to_str().unwrap(), "--input", input.to_str().unwrap(), "--output", one_by_one.to_str().unwrap(), "--batch-size", "1"]);
    assert_eq!(code, 0, "{err}");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>();
    for (a, b) in read(&one_by_one).iter().zip(read(&out)) {
        assert_eq!(a["label"], b["label"]);
        for k in ["ham", "spam"] {
            assert!((a["probabilities"][k].as_f64().unwrap() - b["probabilities"][k].as_f64().unwrap()).abs() < 1e-5, "{a} vs {b}");
        }
    }
    let (code, _, err) = run_cli(&["predict", "--checkpoint", dir.path().join("run").to_str().unwrap(), "--input", input.to_str().unwrap(), "--batch-size", "0"]);
    assert!(code == 2 && err.contains("--batch-size"), "{err}");
    for (device, says) in [("cuda:99", "--device cuda:99: not available on this machine"), ("gpu", "--device gpu: not one of auto, cpu, cuda, cuda:N")] {
        let (code, _, err) = run_cli(&["predict", "--checkpoint", dir.path().join("run").to_str().unwrap(), "--input", input.to_str().unwrap(), "--device", device]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(says), "{err}");
    }
    // A line the task cannot read: the input named with the line, a usage error, nothing
    // written in its place.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"win money now\"}\n{\"txt\": \"typo\"}\n").unwrap();
    let (code, _, err) = run_cli(&["predict", "--checkpoint", dir.path().join("run").to_str().unwrap(), "--input", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.jsonl: cannot read the input") && err.contains("bad.jsonl:2: no text field `text`") && !err.contains("labelled"), "{err}");
}

/// MiniLM on 1,280 movie-review sentences (40 updates of 32), evaluated on 400 held-out ones:
/// the bar is 0.70 accuracy (chance is 0.5). The rate is 3e-4, the best at this budget in
/// docs/learning-rate.md: seeds 1, 2, 3 reach 0.82, 0.83, 0.81 on a Zen 4. At 1e-4 the loss
/// has barely moved after 40 updates (0.63) and the accuracy swung from 0.62 to 0.76 between
/// seeds and CPUs, too close to any bar.
#[test]
fn fine_tuning_minilm_on_polarity_beats_chance_clearly() {
    let pol = root().join(".cache/polarity");
    assert!(pol.join("train.jsonl").exists(), "run `make setup` to fetch the polarity set");
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("dev.jsonl");
    let text = std::fs::read_to_string(pol.join("dev.jsonl")).unwrap();
    std::fs::write(&dev, text.lines().take(400).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let cfg = root().join("configs/finetune-cls-minilm.toml");
    let o: Vec<String> = [
        format!("run.out_dir={}", dir.path().join("run").display()),
        format!("data.eval=[\"{}\"]", dev.display()),
        format!("data.train=[\"{}\"]", pol.join("train.jsonl").display()),
        format!("init.hf=\"{}\"", root().join(".cache/minilm/model").display()),
        "train.epochs=0".into(),
        "train.max_steps=40".into(),
        "train.eval_every=40".into(),
        "train.max_seq_len=48".into(),
        "train.lr=3e-4".into(),
        "metrics.listen=".into(),
    ]
    .to_vec();
    let s = run(pretune::plan::load_and_resolve(&cfg, &o).unwrap()).unwrap();
    let (_, acc) = s.best.unwrap();
    eprintln!("MiniLM polarity accuracy after 40 updates: {acc:.4} ({:.0} tokens/s)", s.tokens_per_second);
    assert!(acc >= 0.70, "accuracy {acc}");
}

/// Cloze scores from the batched path equal a direct computation: each candidate's row run
/// alone through the GLM, log-softmax over the whole vocabulary at every position, and the
/// answer tokens' log-probabilities summed by hand.
#[test]
fn cloze_scores_equal_a_direct_computation() {
    use pretune::finetune::tasks::cloze::{collate, scores, ClozeSpec};
    use pretune::objective::DeviceBatch;
    use pretune::finetune::data::TaskExample;
    use pretune::masking::glm::GlmIds;
    use pretune::model::glm::{Glm, GlmConfig};
    let cfg = GlmConfig {
        vocab_size: 40,
        hidden_size: 16,
        num_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        max_sequence_length: 33,
        hidden_dropout: 0.0,
        attention_dropout: 0.0,
        layernorm_epsilon: 1e-5,
        init_method_std: 0.3,
        explicit_attention: false,
    };
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let glm = Glm::new(&vs.root(), &cfg);
    let ids = GlmIds { cls: 1, mask: 2, smask: 3, gmask: 4, sop: 5, eop: 6 };
    let spec = ClozeSpec { pattern: String::new(), answers: vec![vec![20], vec![21, 22, 23]], model: pretune::finetune::tasks::cloze::ClozeModel::Glm(ids) };
    let ex = |toks: Vec<u32>, label: i64| {
        let blank = toks.iter().position(|&t| t == 2);
        TaskExample { types: vec![0; toks.len()], ids: toks, labels: vec![label], target: 0.0, word_starts: vec![blank], ..Default::default() }
    };
    let examples = [ex(vec![1, 10, 11, 2, 12], 1), ex(vec![1, 13, 2, 14, 15, 16, 17], 0)];
    let refs: Vec<&TaskExample> = examples.iter().collect();
    let batch = collate(&refs, &spec, 0);
    let _g = tch::no_grad_guard();
    let got = scores(&glm, &DeviceBatch::new(&batch, Device::Cpu), false);
    assert_eq!(got.size(), vec![2, 2]);
    for (i, e) in examples.iter().enumerate() {
        let blank = e.word_starts[0].unwrap() as i64;
        for (c, answer) in spec.answers.iter().enumerate() {
            let mut toks: Vec<i64> = e.ids.iter().map(|&t| t as i64).collect();
            let a = toks.len();
            toks.push(5);
            toks.extend(answer[..answer.len() - 1].iter().map(|&t| t as i64));
            let n = toks.len() as i64;
            let pos: Vec<i64> = (0..a as i64).chain(std::iter::repeat_n(blank, answer.len())).collect();
            let block: Vec<i64> = std::iter::repeat_n(0, a).chain(1..=answer.len() as i64).collect();
            let h = glm.forward(&Tensor::from_slice(&toks).view([1, n]), &Tensor::from_slice(&pos).view([1, n]), &Tensor::from_slice(&block).view([1, n]), &Tensor::from_slice(&[a as i64]), false);
            let lp = glm.logits(&h.get(0)).log_softmax(-1, Kind::Double);
            let direct: f64 = answer.iter().enumerate().map(|(j, &t)| lp.double_value(&[(a + j) as i64, t as i64])).sum();
            let batched = got.double_value(&[i as i64, c as i64]);
            assert!((direct - batched).abs() < 1e-4, "example {i} candidate {c}: direct {direct} vs batched {batched}");
        }
    }
}

/// Pre-train a GLM briefly, then fine-tune it as a cloze task: every weight comes from the
/// checkpoint (no new head) and the run evaluates.
#[test]
fn glm_cloze_fine_tuning_reuses_the_pretrained_glm_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::util::tiny_config(dir.path());
    let o: Vec<String> = ["train.max_steps=10", "data.eval=[]", "objective.kind=\"glm\"", "model.max_position_embeddings=65"].iter().map(|s| s.to_string()).collect();
    pretune::actors::run(pretune::plan::load_and_resolve(&cfg, &o).unwrap()).unwrap();
    let spam = root().join("data/spam");
    let ft = ft_config(dir.path(), "cloze", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "");
    let text = std::fs::read_to_string(&ft).unwrap().replace(
        "[task]\nkind = \"cloze\"",
        &format!(
            "[init]\ncheckpoint = \"{}\"\n[task]\nkind = \"cloze\"\npattern = \"{{text}} This message is [MASK].\"\n[task.verbalizers]\nham = \"a letter\"\nspam = \"an offer\"",
            dir.path().join("run/checkpoints").display()
        ),
    );
    // The GLM's sizes come from the checkpoint: drop the fresh-model [model] section.
    let (head, tail) = text.split_once("[model]").unwrap();
    let text = format!("{head}{}", &tail[tail.find("[train]").unwrap()..]);
    std::fs::write(&ft, text).unwrap();
    let s = finetune(&ft, &["train.epochs=0", "train.max_steps=6", "train.eval_every=6", &format!("run.out_dir={}", dir.path().join("cloze").display())]);
    let init = s.init.clone().expect("loaded from [init]");
    assert_eq!(init.missing, Vec::<String>::new(), "no new head");
    assert!(init.loaded > 10);
    let (_, acc) = s.best.unwrap();
    assert_eq!(s.metric, "accuracy");
    // The accuracy the run reported is what `pretune evaluate` finds in its best checkpoint.
    assert_reported_accuracy_is_the_checkpoints(&s, &spam.join("dev.jsonl"), acc);
}

/// A classification head on a GLM (the consistency table's "GLM with a head"): its logits are
/// the first token's last hidden state (the text all Part A) through dense + tanh and the
/// output layer, computed here from the GLM's forward and the head's weights; it trains from a
/// GLM checkpoint (only the head fresh), evaluates, and refuses to export with the reason.
#[test]
fn a_glm_classification_head_pools_the_first_token_and_refuses_export() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::util::tiny_config(dir.path());
    let o: Vec<String> = ["train.max_steps=4", "data.eval=[]", "objective.kind=\"glm\"", "model.max_position_embeddings=65"].iter().map(|s| s.to_string()).collect();
    pretune::actors::run(pretune::plan::load_and_resolve(&cfg, &o).unwrap()).unwrap();
    let spam = root().join("data/spam");
    let ft = dir.path().join("glm-cls.toml");
    std::fs::write(
        &ft,
        format!(
            "[run]\nout_dir = \"{out}\"\ndevice = \"cpu\"\n[init]\ncheckpoint = \"{ck}\"\n[task]\nkind = \"sequence_classification\"\nmax_eval_examples = 32\n[data]\ntrain = [\"{tr}\"]\neval = [\"{dev}\"]\n[train]\nmax_seq_len = 64\nbatch_size = 8\nepochs = 0\nmax_steps = 4\neval_every = 4\nprecision = \"fp32\"\n[metrics]\nlisten = \"\"\n",
            out = dir.path().join("cls").display(),
            ck = dir.path().join("run/checkpoints").display(),
            tr = spam.join("train.jsonl").display(),
            dev = spam.join("dev.jsonl").display()
        ),
    )
    .unwrap();
    let s = finetune(&ft, &[] as &[&str]);
    let init = s.init.clone().expect("loaded from [init]");
    assert_eq!(init.missing, ["classifier.dense.bias", "classifier.dense.weight", "classifier.out_proj.bias", "classifier.out_proj.weight"], "only the head starts fresh");

    let plan = crate::util::load_plan(&ft, &[] as &[&str]);
    let task = plan.task().unwrap();
    let pretune::objective::ModelSpec::Glm { config } = &task.model else { panic!("a GLM encoder") };
    let vs = nn::VarStore::new(Device::Cpu);
    let net = pretune::finetune::task::TaskNet::new(&vs.root(), task.task.clone());
    let glm_vs = nn::VarStore::new(Device::Cpu);
    let glm = pretune::model::glm::Glm::new(&glm_vs.root(), config);
    let w = crate::util::weights(&dir.path().join("cls/checkpoints/step-00000004"));
    tch::no_grad(|| {
        for (name, mut v) in vs.variables().into_iter().chain(glm_vs.variables()) {
            v.copy_(&w[&name]);
        }
    });
    let examples: Vec<&pretune::data::labelled::TaskExample> = task.eval.iter().take(5).map(|e| e.as_ref()).collect();
    let hb = task.task.collate(&examples);
    let b = pretune::objective::DeviceBatch::new(&hb, Device::Cpu);
    let got = tch::no_grad(|| net.outputs(&b, false));
    let (rows, t) = b.input_ids.size2().unwrap();
    let positions = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).expand([rows, t], true);
    let h = tch::no_grad(|| glm.forward(&b.input_ids, &positions, &Tensor::zeros([rows, t], (Kind::Int64, Device::Cpu)), &b.lengths.to_kind(Kind::Int64), false));
    let pooled = (h.select(1, 0).matmul(&w["classifier.dense.weight"].tr()) + &w["classifier.dense.bias"]).tanh();
    let want = pooled.matmul(&w["classifier.out_proj.weight"].tr()) + &w["classifier.out_proj.bias"];
    assert!(max_abs_diff(&got, &want) < 1e-5, "{got} vs {want}");

    let (code, _, err) = run_cli(&["export", "--hf", dir.path().join("hf").to_str().unwrap(), "--checkpoint", dir.path().join("cls/checkpoints").to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("a classification head on a GLM: transformers has no GLM model"), "{err}");
}

/// `pretune evaluate` on the run's best checkpoint and `dev` agrees with the accuracy the run
/// reported for it, to one example (batching may flip an exact tie).
fn assert_reported_accuracy_is_the_checkpoints(s: &RunSummary, dev: &Path, acc: f64) {
    let ckpt = s.best_checkpoint.as_ref().expect("a best checkpoint");
    let ev = pretune::finetune::evaluate::evaluate(ckpt, dev, &[], Default::default()).unwrap();
    let again = ev.metrics.get("accuracy").expect("accuracy");
    assert!((again - acc).abs() <= 1.0 / ev.records as f64 + 1e-9, "run reported {acc}, evaluate finds {again} on {} records", ev.records);
}

/// The labelled sets `make setup` fetches read with the expected label sets.
#[test]
fn fetched_labelled_sets_read_with_their_label_sets() {
    use pretune::finetune::data::{read_classification, read_conll, Fields, LabelSet};
    let fields = Fields { text: "text".into(), text_pair: "text_pair".into(), label: "label".into() };
    for (file, want, at_least) in [
        (".cache/bbc/train.jsonl", vec!["business", "entertainment", "politics", "sports", "tech"], 1700),
        (".cache/zh-sentiment/train.jsonl", vec!["negative", "positive"], 15000),
        (".cache/polarity/train.jsonl", vec!["negative", "positive"], 3200),
    ] {
        let recs = read_classification(&root().join(file), &fields).unwrap_or_else(|e| panic!("{file}: {e} (run `make setup`)"));
        assert!(recs.len() >= at_least, "{file}: {}", recs.len());
        let labels = LabelSet::from_data(&[], recs.iter().map(|r| r.label.as_str()));
        assert_eq!(labels.names, want.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{file}");
    }
    let ner = read_conll(&root().join(".cache/wnut/train.txt")).unwrap();
    let tags = LabelSet::from_data(&[], ner.iter().flat_map(|s| s.tags.iter().map(String::as_str)));
    assert_eq!(tags.names.len(), 21, "{:?}", tags.names);
    assert!(ner.len() > 1800);
}

/// Cloze on BERT's MLM head (PET): pre-train a tiny BERT briefly, fine-tune it as a cloze task
/// with a one-token and a two-token verbalizer. No weight is new; the label scores equal the
/// verbalizers' log-probabilities that `transformers`' `BertForMaskedLM` computes on the
/// exported weights; it beats the majority class; predict, evaluate and export serve it; a
/// BERT without an MLM head is refused.
#[test]
fn bert_cloze_fine_tuning_scores_with_the_mlm_head() {
    use pretune::finetune::tasks::cloze::{bert_scores, encode, ClozeModel, ClozeSpec};
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::util::tiny_config(dir.path());
    pretune::actors::run(pretune::plan::load_and_resolve(&cfg, &["train.max_steps=20".into(), "data.eval=[]".into()]).unwrap()).unwrap();
    let spam = root().join("data/spam");
    let ft = ft_config(dir.path(), "cloze", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "");
    let text = std::fs::read_to_string(&ft).unwrap().replace(
        "[task]\nkind = \"cloze\"",
        &format!(
            "[init]\ncheckpoint = \"{}\"\n[task]\nkind = \"cloze\"\npattern = \"{{text}} This message is [MASK].\"\n[task.verbalizers]\nham = \"personal\"\nspam = \"an offer\"",
            dir.path().join("run/checkpoints").display()
        ),
    );
    let (head, tail) = text.split_once("[model]").unwrap();
    std::fs::write(&ft, format!("{head}{}", &tail[tail.find("[train]").unwrap()..])).unwrap();
    let s = finetune(&ft, &["train.epochs=3", "train.eval_every=0", &format!("run.out_dir={}", dir.path().join("cloze").display())]);
    let init = s.init.clone().expect("loaded from [init]");
    assert_eq!(init.missing, Vec::<String>::new(), "no fresh parameter");
    let (_, acc) = s.best.unwrap();
    assert!(acc > 0.6, "cloze accuracy {acc} does not beat the majority class (0.54) clearly");

    // Scores against transformers on the exported BertForMaskedLM.
    let ck = s.best_checkpoint.clone().unwrap();
    let out = dir.path().join("hf-cloze");
    let (code, _, err) = run_cli(&["export", "--hf", out.to_str().unwrap(), "--checkpoint", ck.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForMaskedLM");
    assert_eq!(config["pretune_cloze"]["verbalizers"]["spam"], "an offer");
    let spec: pretune::finetune::task::TaskSpec = serde_json::from_value(pretune::checkpoint::CheckpointStore::verify(&ck).unwrap().model).unwrap();
    let tok = pretune::data::tokenize::TextTokenizer::load(&spec.tokenizer, None).unwrap();
    let answers = vec![tok.encode("personal").unwrap().ids, tok.encode("an offer").unwrap().ids];
    assert_eq!((answers[0].len(), answers[1].len()), (1, 2), "one single-token and one two-token verbalizer");
    let cloze = ClozeSpec { pattern: "{text} This message is [MASK].".into(), answers: answers.clone(), model: ClozeModel::bert(&tok) };
    let fields = pretune::finetune::data::Fields { text: "text".into(), text_pair: "text_pair".into(), label: "label".into() };
    let recs = pretune::finetune::data::read_classification(&spam.join("dev.jsonl"), &fields).unwrap();
    let examples: Vec<_> = recs.iter().take(3).map(|r| encode(&tok, r, 0, &cloze, 64).unwrap()).collect();
    let b = pretune::finetune::tasks::cloze::collate(&examples.iter().collect::<Vec<_>>(), &cloze, tok.special_ids().pad);
    assert_eq!(b.batch_size, 6, "one row per example and answer length");
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = pretune::model::bert::BertForMaskedLM::new(&vs.root(), &spec.config);
    vs.load(ck.join("model.safetensors")).unwrap();
    let ours = tch::no_grad(|| bert_scores(&net, &pretune::objective::DeviceBatch::new(&b, Device::Cpu), false));
    let ours = Vec::<f64>::try_from(&ours.to_kind(Kind::Double).view([-1])).unwrap();
    // transformers: each example's pattern with 1 and 2 [MASK]s, the log-softmax at the masks.
    let mask = tok.special_ids().mask as i64;
    let mut rows = Vec::new();
    for e in &examples {
        let blank = e.word_starts[0].unwrap();
        for m in [1, 2] {
            let mut r: Vec<i64> = e.ids.iter().map(|&t| t as i64).collect();
            r.splice(blank..=blank, std::iter::repeat_n(mask, m));
            rows.push((r, blank));
        }
    }
    let ids: Vec<Vec<i64>> = rows.iter().map(|r| r.0.clone()).collect();
    let logits = hf_logits(&out, "AutoModelForMaskedLM", &ids);
    let (longest, vocab) = (ids.iter().map(Vec::len).max().unwrap(), spec.config.vocab_size as usize);
    let log_p = |row: usize, pos: usize, token: u32| {
        let l = &logits[(row * longest + pos) * vocab..(row * longest + pos + 1) * vocab];
        let m = l.iter().cloned().fold(f64::MIN, f64::max);
        l[token as usize] - m - l.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    for (i, _) in examples.iter().enumerate() {
        let (_, blank) = rows[2 * i];
        let theirs = [log_p(2 * i, blank, answers[0][0]), log_p(2 * i + 1, blank, answers[1][0]) + log_p(2 * i + 1, blank + 1, answers[1][1])];
        for c in 0..2 {
            assert!((ours[2 * i + c] - theirs[c]).abs() < 1e-5, "example {i} label {c}: ours {} vs transformers {}", ours[2 * i + c], theirs[c]);
        }
    }

    // predict and evaluate serve the cloze checkpoint.
    let input = dir.path().join("texts.jsonl");
    std::fs::write(&input, "{\"text\": \"Win a free prize now, click here!\"}\n{\"text\": \"See you at lunch tomorrow.\"}\n").unwrap();
    let (code, stdout, err) = run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let p: f64 = ["ham", "spam"].iter().map(|l| v["probabilities"][l].as_f64().unwrap()).sum();
        assert!((p - 1.0).abs() < 1e-6 && v["label"].is_string(), "{line}");
    }
    assert_eq!(stdout.lines().count(), 2);
    let (code, stdout, err) = run_cli(&["evaluate", "--checkpoint", ck.to_str().unwrap(), "--data", spam.join("dev.jsonl").to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!((v["accuracy"].as_f64().unwrap() - acc).abs() < 1e-9, "evaluate {v} vs the run's {acc}");

    // A Hugging Face BertForMaskedLM folder starts a cloze run with every weight; a BERT
    // without an MLM head (a sentence-embedding model) cannot fill blanks.
    let text = std::fs::read_to_string(&ft).unwrap();
    let at = text.find("checkpoint = ").unwrap();
    let end = at + text[at..].find('\n').unwrap();
    let from_hf = |folder: &Path| format!("{}hf = \"{}\"{}", &text[..at], folder.display(), &text[end..]).replace("[tokenizer]\npath", "[tokenizer]\n# path");
    std::fs::write(&ft, from_hf(&out)).unwrap();
    let (code, stdout, err) = run_cli(&["check", ft.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains(" 0 fresh"), "{stdout}");
    std::fs::write(&ft, from_hf(&root().join(".cache/minilm/model"))).unwrap();
    let (code, _, err) = run_cli(&["check", ft.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cls.predictions"), "names the missing MLM head: {err}");
}

/// The Chinese path end to end with the shipped configs, cut short: the whole-word-masking
/// tiny BERT pre-trains on People's Daily, then fine-tunes on the Chinese review sentiment set
/// and evaluates on its held-out split.
#[test]
fn chinese_pretrain_then_finetune_configs_train_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let r = root();
    let zh = r.join(".cache/zh");
    let pre: Vec<String> = vec![
        format!("run.out_dir=\"{}\"", dir.path().join("pre").display()),
        format!("data.train=[\"{}\"]", zh.join("people-daily.jsonl").display()),
        format!("tokenizer.path=\"{}\"", zh.join("vocab.txt").display()),
        "data.eval_holdout_docs=50".into(),
        "train.max_steps=20".into(),
        "train.eval_every=20".into(),
        "train.checkpoint_every=20".into(),
        "metrics.listen=\"\"".into(),
    ];
    let s = run(pretune::plan::load_and_resolve(&r.join("configs/pretrain-mlm-chinese-tiny.toml"), &pre).unwrap()).unwrap();
    assert!(s.eval.is_some());
    let sent = r.join(".cache/zh-sentiment");
    let ft: Vec<String> = vec![
        format!("run.out_dir=\"{}\"", dir.path().join("ft").display()),
        format!("init.checkpoint=\"{}\"", dir.path().join("pre/checkpoints").display()),
        format!("data.train=[\"{}\"]", sent.join("train.jsonl").display()),
        format!("data.eval=[\"{}\"]", sent.join("dev.jsonl").display()),
        "task.max_train_examples=320".into(),
        "task.max_eval_examples=200".into(),
        "train.epochs=1".into(),
        "metrics.listen=\"\"".into(),
    ];
    let s = run(pretune::plan::load_and_resolve(&r.join("configs/finetune-cls-chinese-tiny.toml"), &ft).unwrap()).unwrap();
    let (_, acc) = s.best.expect("evaluated");
    assert_eq!(s.metric, "accuracy");
    // The run evaluated the first 200 dev records: `pretune evaluate` on those agrees.
    let text = std::fs::read_to_string(sent.join("dev.jsonl")).unwrap();
    let first: Vec<&str> = text.lines().take(200).collect();
    let dev = dir.path().join("dev-200.jsonl");
    std::fs::write(&dev, first.join("\n") + "\n").unwrap();
    assert_reported_accuracy_is_the_checkpoints(&s, &dev, acc);
    assert!(s.init.unwrap().loaded > 10, "starts from the Chinese checkpoint");
}

/// Regression targets that are not finite f32 numbers (`NaN`, `inf`, `1e39`) are bad
/// records: skipped and reported with file and line under `data.on_error = "skip"` (the run's
/// held-out metrics stay finite and a best checkpoint is chosen), fatal under `fail`.
#[test]
fn non_finite_regression_targets_are_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<String> = (0..40)
        .map(|i| {
            let label = match i {
                3 => "\"NaN\"".to_owned(),
                7 => "\"inf\"".to_owned(),
                11 => "\"1e39\"".to_owned(),
                _ => format!("{}", (i % 5) as f64 / 2.0),
            };
            format!("{{\"text\": \"sample text number {i} with words\", \"label\": {label}}}")
        })
        .collect();
    let train = dir.path().join("train.jsonl");
    std::fs::write(&train, rows.join("\n")).unwrap();
    let cfg = ft_config(dir.path(), "regression", train.to_str().unwrap(), train.to_str().unwrap(), "");
    let plan = pretune::plan::load_and_resolve(&cfg, &["data.on_error=\"skip\"".into(), "train.epochs=0".into(), "train.max_steps=3".into()]).unwrap();
    let skipped: Vec<(u64, &str)> = plan.workload.skipped().iter().map(|b| (b.line, b.reason)).collect();
    assert_eq!(skipped, [4, 8, 12, 4, 8, 12].iter().map(|&l| (l, "bad_target")).collect::<Vec<_>>(), "train and eval, each reported");
    let s = run(plan).unwrap();
    let (_, m) = s.eval.clone().unwrap();
    assert!(m.get("mse").unwrap().is_finite() && m.get("pearson").unwrap().is_finite(), "{}", m.summary());
    assert!(s.best_checkpoint.is_some());
    let e = pretune::plan::load_and_resolve(&cfg, &["data.on_error=\"fail\"".into()]).err().unwrap().to_string();
    assert!(e.contains("train.jsonl:4") && e.contains("`NaN`"), "{e}");
    // The same through the binary: exit 2, the file and line named, nothing trained.
    let (code, _, err) = crate::util::run_cli(&["train", cfg.to_str().unwrap(), "--set", "data.on_error=\"fail\""]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("train.jsonl:4") && err.contains("`NaN` is not a finite number"), "{err}");
}

/// `[init] hf` starts only from what pretune builds, and says what it found. A DeBERTa-v2 or an
/// ALBERT folder is an error naming its `model_type` and the supported ones (such folders
/// used to be read as a BERT with 0 of their tensors loaded and a random model trained); a BERT folder
/// whose tensors carry names pretune does not read, or a folder whose config says ModernBERT
/// over BERT's tensors, is an error naming the missing encoder tensors and the unused ones,
/// from `check` and from `train`, in both phases. The real MiniLM passes, named as what its
/// config says.
#[test]
fn a_start_that_is_not_this_encoder_is_an_error_in_both_phases() {
    let minilm = root().join(".cache/minilm/model");
    assert!(minilm.join("model.safetensors").exists(), "run `make setup` to fetch MiniLM");
    let dir = tempfile::tempdir().unwrap();
    let copy_side_files = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in ["config.json", "vocab.txt", "tokenizer.json"] {
            std::fs::copy(minilm.join(f), to.join(f)).unwrap();
        }
    };
    // MiniLM's tensors under another prefix (as another library might name them).
    let renamed = dir.path().join("renamed");
    copy_side_files(&renamed);
    let tensors = Tensor::read_safetensors(minilm.join("model.safetensors")).unwrap();
    let named: Vec<(String, Tensor)> = tensors.into_iter().map(|(k, v)| (format!("encoder_model.{k}"), v)).collect();
    Tensor::write_safetensors(&named, renamed.join("model.safetensors")).unwrap();
    // Folders of other architectures (their weights do not matter: the config is read first).
    let foreign = |name: &str, model_type: &str, arch: &str| {
        let d = dir.path().join(name);
        copy_side_files(&d);
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(minilm.join("config.json")).unwrap()).unwrap();
        cfg["model_type"] = model_type.into();
        cfg["architectures"] = serde_json::json!([arch]);
        std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
        // A link, not a copy: 90 MB three times over is disk the suite does not need.
        std::os::unix::fs::symlink(minilm.join("model.safetensors"), d.join("model.safetensors")).unwrap();
        d
    };
    let deberta = foreign("deberta", "deberta-v2", "DebertaV2ForMaskedLM");
    let albert = foreign("albert", "albert", "AlbertForMaskedLM");
    let modernbert = foreign("modernbert", "modernbert", "ModernBertForMaskedLM");
    let out = dir.path().join("run");
    // Continued pre-training from a folder: sizes and tokenizer come from [init] (given below).
    let pretrain_cfg = pretrain_config_from_hf(dir.path(), None);
    let args = |verb: &str, cfg: &str, init: &Path| -> Vec<String> {
        let path = if cfg.contains("finetune") { root().join(cfg) } else { pretrain_cfg.clone() };
        let mut a = vec![verb.to_string(), path.display().to_string()];
        for s in [format!("init.hf=\"{}\"", init.display()), "metrics.listen=\"\"".into(), format!("run.out_dir=\"{}\"", out.display()), "train.max_steps=2".into()] {
            a.extend(["--set".into(), s]);
        }
        if cfg.contains("finetune") {
            a.extend(["--set".into(), "train.epochs=0".into()]);
        }
        a
    };
    let (finetune, pretrain) = ("configs/finetune-cls-minilm.toml", "configs/pretrain-mlm-tiny.toml");
    for cfg in [finetune, pretrain] {
        let (code, stdout, err) = run_cli(&args("check", cfg, &minilm));
        assert_eq!(code, 0, "{cfg}: {err}");
        assert!(stdout.contains("bert (BertModel)"), "{cfg}: check names the architecture: {stdout}");
        for (folder, model_type, arch) in [(&deberta, "deberta-v2", "DebertaV2ForMaskedLM"), (&albert, "albert", "AlbertForMaskedLM")] {
            let (code, _, err) = run_cli(&args("check", cfg, folder));
            assert_ne!(code, 0, "{cfg} from {model_type}");
            assert!(err.contains(&format!("model_type \"{model_type}\"")) && err.contains(arch) && err.contains("pretune reads bert, roberta, xlm-roberta, electra, modernbert folders"), "{cfg}: {err}");
        }
        let (code, _, err) = run_cli(&args("check", cfg, &renamed));
        assert_ne!(code, 0, "{cfg}: a start without the encoder's tensors");
        assert!(err.contains("of the encoder's tensors are not in its weights") && err.contains("`bert.embeddings.") && err.contains("`encoder_model."), "{cfg}: {err}");
        let (code, _, err) = run_cli(&args("check", cfg, &modernbert));
        assert_ne!(code, 0, "{cfg}: a ModernBERT config over BERT's tensors");
        assert!(err.contains("of the encoder's tensors are not in its weights") && err.contains("`model.embeddings.tok_embeddings.") && err.contains("`model.embeddings.LayerNorm."), "{cfg}: {err}");
    }
    let (code, _, err) = run_cli(&args("train", finetune, &renamed));
    assert_ne!(code, 0);
    assert!(err.contains("of the encoder's tensors are not in its weights") && err.contains("`encoder_model."), "{err}");
    assert!(crate::util::steps(&out).is_empty(), "no step trained on a random encoder");
}

/// The tiny MLM pre-training config without its own sizes and tokenizer, starting from the
/// Hugging Face folder `init` (both come from it), written into `dir`.
fn pretrain_config_from_hf(dir: &Path, init: Option<&Path>) -> std::path::PathBuf {
    let tiny = std::fs::read_to_string(root().join("configs/pretrain-mlm-tiny.toml")).unwrap();
    let (head, rest) = tiny.split_once("[tokenizer]").unwrap();
    let init = init.map_or(String::new(), |d| format!("[init]\nhf = \"{}\"\n", d.display()));
    let cfg = dir.join("pretrain-from-hf.toml");
    std::fs::write(&cfg, format!("{head}{init}{}", &rest[rest.find("[objective]").unwrap()..]).replace("data/sotu", &root().join("data/sotu").display().to_string())).unwrap();
    cfg
}

/// A spam sequence-classification config (`ft_config`'s) starting from the Hugging Face folder
/// `init`, with its sizes and tokenizer.
fn spam_config_from_hf(dir: &Path, init: &Path) -> std::path::PathBuf {
    let spam = root().join("data/spam");
    let cfg = ft_config(dir, "sequence_classification", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let (head, rest) = text.split_once("[tokenizer]").unwrap();
    std::fs::write(&cfg, format!("{head}[init]\nhf = \"{}\"\n{}", init.display(), &rest[rest.find("[train]").unwrap()..])).unwrap();
    cfg
}

/// Exports the run in `dir/run` into `dir/hf`, checks its `config.json`'s `model_type` and
/// architecture, and that `transformers` computes the logits of `rows` that our model of the
/// best checkpoint does (rows right-padded with `pad`), for a sequence classifier.
fn export_matches_transformers(dir: &Path, s: &RunSummary, model_type: &str, architecture: &str, rows: &[Vec<i64>], pad: i64) -> serde_json::Value {
    export_head_matches_transformers(dir, s, model_type, architecture, HeadKind::SequenceClassification, rows, pad)
}

/// [`export_matches_transformers`] for any head (`AutoModelFor...` from `kind`).
fn export_head_matches_transformers(dir: &Path, s: &RunSummary, model_type: &str, architecture: &str, kind: HeadKind, rows: &[Vec<i64>], pad: i64) -> serde_json::Value {
    let out = dir.join("hf");
    let _ = std::fs::remove_dir_all(&out);
    let (code, _, err) = run_cli(&["export", "--hf", out.to_str().unwrap(), "--checkpoint", s.best_checkpoint.clone().unwrap().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let hf_config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!((hf_config["model_type"].as_str(), hf_config["architectures"][0].as_str()), (Some(model_type), Some(architecture)));
    let auto = match kind {
        HeadKind::SequenceClassification => "AutoModelForSequenceClassification",
        HeadKind::TokenClassification => "AutoModelForTokenClassification",
        HeadKind::QuestionAnswering => "AutoModelForQuestionAnswering",
    };
    let (theirs, tokens) = hf_logits_and_tokens(&out, auto, rows, &probe_texts());
    tokenizer_matches_transformers(&out, &hf_config, &tokens);
    let ck = s.best_checkpoint.clone().unwrap();
    let state = pretune::checkpoint::CheckpointStore::verify(&ck).unwrap();
    let spec: pretune::finetune::task::TaskSpec = serde_json::from_value(state.model).unwrap();
    assert_eq!(spec.encoder().model_type(), model_type);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let labels = if kind == HeadKind::QuestionAnswering { 2 } else { spec.labels.len().max(1) as i64 };
    let encoder = pretune::finetune::tasks::classification::head_encoder(&spec.encoder()).unwrap();
    let model = pretune::model::heads::EncoderForTask::new(&vs.root(), &encoder, kind, labels);
    vs.load(ck.join("model.safetensors")).unwrap();
    let _g = tch::no_grad_guard();
    let longest = rows.iter().map(Vec::len).max().unwrap();
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat(pad)).take(longest)).collect();
    let input = Tensor::from_slice(&flat).view([rows.len() as i64, longest as i64]);
    let lengths: Vec<i64> = rows.iter().map(|r| r.len() as i64).collect();
    let ours = model.forward(&input, &input.zeros_like(), &Tensor::from_slice(&lengths), false);
    let width = ours.size().last().copied().unwrap() as usize;
    let ours: Vec<f64> = Vec::<f64>::try_from(&ours.to_kind(Kind::Double).view([-1])).unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        // Per-token heads: padding's logits are nobody's (ours are computed unpadded).
        let (row, pos) = (i / width / longest.max(1), i / width % longest.max(1));
        if kind != HeadKind::SequenceClassification && pos >= rows[row].len() {
            continue;
        }
        assert!((a - b).abs() < 1e-4, "{architecture}: ours {ours:?} vs transformers {theirs:?}");
    }
    hf_config
}

/// Texts a user would send through `pipeline`: cased words, accents, CJK, emoji, a pair, and
/// single texts and pairs longer than any model here holds (truncation, longest first).
fn probe_texts() -> Vec<(String, Option<String>)> {
    let long = "Free money! Claim your PRIZE now, naïve Café owner 北京. ".repeat(100);
    let half: String = long.chars().take(long.chars().count() / 2).collect();
    vec![
        ("Hello World, FREE money".into(), None),
        ("naïve café — résumé; 北京欢迎你 🤖  spaced\tout".into(), None),
        ("Is this spam?".into(), Some("WIN a prize".into())),
        (long.clone(), None),
        (long.clone(), Some("a short second text".into())),
        ("a short first text".into(), Some(long.clone())),
        (half, Some(long)),
    ]
}

/// [`hf_logits`] plus `transformers`' `AutoTokenizer` of the folder on `texts`.
fn hf_logits_and_tokens(model_dir: &Path, auto_class: &str, ids: &[Vec<i64>], texts: &[(String, Option<String>)]) -> (Vec<f64>, serde_json::Value) {
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts/hf_logits.py"))
        .args([model_dir.to_str().unwrap(), auto_class, &serde_json::to_string(ids).unwrap(), &serde_json::to_string(texts).unwrap()])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (serde_json::from_value(v["logits"].clone()).unwrap(), v)
}

/// `AutoTokenizer` on the exported folder (`tokens`: `hf_logits.py`'s answer on
/// [`probe_texts`]) gives the ids pretune's tasks give the model, B's token types where the
/// model reads them, and truncates at the longest input the position table holds.
fn tokenizer_matches_transformers(out: &Path, hf_config: &serde_json::Value, tokens: &serde_json::Value) {
    let model_type = hf_config["model_type"].as_str().unwrap();
    let positions = hf_config["max_position_embeddings"].as_i64().unwrap();
    let limit = if model_type.contains("roberta") { positions - hf_config["pad_token_id"].as_i64().unwrap() - 1 } else { positions };
    assert_eq!(tokens["model_max_length"].as_i64(), Some(limit), "{model_type}: {tokens}");
    let tok = pretune::data::tokenize::TextTokenizer::load(&out.join("tokenizer.json"), None).unwrap();
    for ((text, pair), theirs) in probe_texts().iter().zip(tokens["tokens"].as_array().unwrap()) {
        let record = pretune::finetune::data::ClsRecord { text: text.clone(), pair: pair.clone(), label: String::new(), path: "probe".into(), line: 1 };
        let ours = pretune::finetune::data::encode_classification(&tok, &record, None, 0.0, limit as usize).unwrap();
        let ids: Vec<u32> = serde_json::from_value(theirs["input_ids"].clone()).unwrap();
        let shown: String = text.chars().take(40).collect();
        assert_eq!(ids, ours.ids, "{model_type}: ids of {shown:?} / {pair:?}", pair = pair.as_ref().map(|p| p.chars().take(40).collect::<String>()));
        if hf_config["type_vocab_size"].as_i64().unwrap_or(1) > 1 {
            let types: Vec<u8> = serde_json::from_value(theirs["token_type_ids"].clone()).unwrap();
            assert_eq!(types, ours.types, "{model_type}: token types of {shown:?}");
        }
    }
}

/// The first `n` SQuAD dev questions as `datasets`-style JSONL, into `dir`.
fn squad_rows(dir: &Path, n: usize) -> std::path::PathBuf {
    let dev: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root().join(".cache/squad/dev-v1.1.json")).unwrap()).unwrap();
    let mut out = String::new();
    let mut count = 0;
    'all: for article in dev["data"].as_array().unwrap() {
        for para in article["paragraphs"].as_array().unwrap() {
            for qa in para["qas"].as_array().unwrap() {
                let answers = qa["answers"].as_array().unwrap();
                let row = serde_json::json!({"id": qa["id"], "question": qa["question"], "context": para["context"],
                    "answers": {"text": answers.iter().map(|a| a["text"].clone()).collect::<Vec<_>>(), "answer_start": answers.iter().map(|a| a["answer_start"].clone()).collect::<Vec<_>>()}});
                out.push_str(&format!("{row}\n"));
                count += 1;
                if count == n {
                    break 'all;
                }
            }
        }
    }
    let path = dir.join("squad.jsonl");
    std::fs::write(&path, out).unwrap();
    path
}

/// Token classification (WNUT's tags, words pre-split) and question answering (SQuAD windows)
/// from a RoBERTa, an ELECTRA and a ModernBERT folder: a few updates each, exported as
/// `RobertaFor{Token,QuestionAnswering}...` / `ElectraFor...` / `ModernBertFor...`, which
/// `transformers` loads with our logits at every real token.
#[test]
fn roberta_electra_and_modernbert_tagging_and_qa_checkpoints_export_with_transformers_logits() {
    let (roberta, electra, modernbert) = (fixture("roberta").join("plain"), fixture("electra").join("discriminator"), fixture("modernbert").join("plain"));
    let wnut = root().join(".cache/wnut");
    let dir = tempfile::tempdir().unwrap();
    let squad = squad_rows(dir.path(), 16);
    for (init, model_type, family, rows, pad) in [(&roberta, "roberta", "Roberta", vec![vec![0i64, 100, 200, 300, 2], vec![0, 40, 41, 2]], 1), (&electra, "electra", "Electra", vec![vec![2i64, 500, 600, 700, 3], vec![2, 40, 41, 3]], 0), (&modernbert, "modernbert", "ModernBert", vec![vec![2i64, 100, 200, 300, 3], vec![2, 40, 41, 3]], 0)] {
        for (kind, task, train, head) in [
            (HeadKind::TokenClassification, "token_classification", wnut.join("train.txt"), "TokenClassification"),
            (HeadKind::QuestionAnswering, "question_answering", squad.clone(), "QuestionAnswering"),
        ] {
            let run = dir.path().join(format!("{model_type}-{task}"));
            std::fs::create_dir_all(&run).unwrap();
            let cfg = ft_config(&run, task, &train.display().to_string(), &train.display().to_string(), "");
            let text = std::fs::read_to_string(&cfg).unwrap();
            let (head_text, rest) = text.split_once("[tokenizer]").unwrap();
            let text = format!("{head_text}[init]\nhf = \"{}\"\n{}", init.display(), &rest[rest.find("[train]").unwrap()..]).replace("eval = [", "eval = [] # [");
            std::fs::write(&cfg, text).unwrap();
            let s = finetune(&cfg, &["train.epochs=0", "train.max_steps=3", "train.max_seq_len=128", if kind == HeadKind::QuestionAnswering { "task.doc_stride=32" } else { "train.log_every=1" }]);
            export_head_matches_transformers(&run, &s, model_type, &format!("{family}For{head}"), kind, &rows, pad);
        }
    }
}

/// A RoBERTa folder and an XLM-R folder start fine-tuning: `transformers`' `RobertaForMaskedLM`
/// (its own random initialisation, a byte-level BPE `tokenizer.json` beside it) and
/// `XLMRobertaForMaskedLM` (model_type `xlm-roberta`, a SentencePiece Unigram tokenizer with
/// `▁` word starts; fixture `scripts/make_roberta_fixture.py`) as `[init] hf`, each with its own
/// tokenizer, learn sequence classification on the bundled spam set well past the majority
/// class (0.54), and the checkpoints export as `RobertaForSequenceClassification` /
/// `XLMRobertaForSequenceClassification`, which `transformers` loads with our logits.
#[test]
fn fine_tuning_from_roberta_and_xlm_roberta_folders_learns_and_exports_as_them() {
    let fix = fixture("roberta");
    for (folder, model_type, architecture, what) in [("plain", "roberta", "RobertaForSequenceClassification", "RoBERTa (random, tiny, byte-level BPE of 400)"), ("xlmr", "xlm-roberta", "XLMRobertaForSequenceClassification", "XLM-R (random, tiny, Unigram of 500)")] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = spam_config_from_hf(dir.path(), &fix.join(folder));
        let s = finetune(&cfg, &["train.epochs=0", "train.max_steps=320", "train.eval_every=160", "train.lr=5e-4", "train.max_seq_len=128"]);
        let init = s.init.clone().unwrap();
        assert!(init.missing.iter().all(|m| m.starts_with("classifier.")) && init.unused.iter().all(|u| u.starts_with("lm_head.")), "{what}: {init:?}");
        let (_, acc) = s.best.unwrap();
        eprintln!("{what} on spam after 320 updates: accuracy {acc:.4}");
        assert!(acc > 0.75, "{what}: accuracy {acc} does not beat the majority class (0.54) clearly");
        export_matches_transformers(dir.path(), &s, model_type, architecture, &[vec![0, 100, 200, 300, 150, 2], vec![0, 40, 41, 42, 2]], 1);
    }
}

/// Continued pre-training from a RoBERTa and from a ModernBERT folder (MLM alone, as both
/// pre-train, with the folder's byte-level BPE tokenizer and the dynamic masking our Masker
/// does; ModernBERT at its recipe's 30 %): the held-out MLM loss falls, a run stopped at step 3
/// and resumed ends with the weights of one that went straight to step 6, bit for bit, and the
/// checkpoint exports as `RobertaForMaskedLM` / `ModernBertForMaskedLM`, which `transformers`
/// loads with our logits. NSP on either is refused.
#[test]
fn continued_pre_training_from_roberta_and_modernbert_folders_learns_resumes_and_exports() {
    for (folder, mask_prob, architecture, ids, refusal) in [
        (fixture("roberta").join("plain"), "0.15", "RobertaForMaskedLM", vec![vec![0i64, 100, 4, 300, 2]], "RoBERTa has no next-sentence head"),
        (fixture("modernbert").join("plain"), "0.3", "ModernBertForMaskedLM", vec![vec![2i64, 100, 4, 300, 3]], "ModernBERT has no next-sentence head"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = pretrain_config_from_hf(dir.path(), Some(&folder));
        let run = |out: &Path, steps: u64, resume: bool, extra: &[&str]| {
            let mut a: Vec<String> = vec!["train".into(), cfg.display().to_string()];
            let sets = [format!("run.out_dir=\"{}\"", out.display()), format!("train.max_steps={steps}"), "train.checkpoint_every=3".into(), "train.eval_every=3".into(), "train.log_every=1".into(), "train.warmup_steps=1".into(), "train.decay=\"constant\"".into(), "train.batch_size=8".into(), "metrics.listen=\"\"".into(), "model.hidden_dropout=0.0".into(), "model.attention_dropout=0.0".into(), format!("objective.mask_prob={mask_prob}")];
            for s in sets.iter().map(String::as_str).chain(extra.iter().copied()) {
                a.extend(["--set".to_string(), s.to_string()]);
            }
            if resume {
                a.extend(["--resume".into(), "auto".into()]);
            }
            run_cli(&a)
        };
        let straight = dir.path().join("straight");
        let (code, _, err) = run(&straight, 6, false, &[]);
        assert_eq!(code, 0, "{architecture}: {err}");
        let evals = crate::util::evals(&straight);
        let loss = |i: usize| evals[i].1.get("mlm_loss").unwrap();
        assert!(loss(1) < loss(0) - 0.05, "{architecture}: held-out MLM loss did not fall: {evals:?}");
        let resumed = dir.path().join("resumed");
        assert_eq!(run(&resumed, 3, false, &[]).0, 0);
        let (code, _, err) = run(&resumed, 6, true, &[]);
        assert_eq!(code, 0, "{architecture}: {err}");
        crate::util::assert_same_weights(&straight.join("checkpoints/step-00000006"), &resumed.join("checkpoints/step-00000006"));

        let out = dir.path().join("hf");
        let (code, _, err) = run_cli(&["export", "--hf", out.to_str().unwrap(), "--checkpoint", straight.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let hf_config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(hf_config["architectures"][0], architecture);
        let theirs = hf_logits(&out, "AutoModelForMaskedLM", &ids);
        let state = pretune::checkpoint::CheckpointStore::verify(&straight.join("checkpoints/step-00000006")).unwrap();
        let spec: pretune::objective::ModelSpec = serde_json::from_value(state.model).unwrap();
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = pretune::objective::PretrainModel::new(&vs.root(), &spec);
        vs.load(straight.join("checkpoints/step-00000006/model.safetensors")).unwrap();
        let _g = tch::no_grad_guard();
        let input = Tensor::from_slice(&ids[0]).view([1, 5]);
        let lengths = Tensor::from_slice(&[5i64]);
        let ours = match model {
            pretune::objective::PretrainModel::Bert(m) => m.predict(&m.bert.forward(&input, &input.zeros_like(), &lengths, false)),
            pretune::objective::PretrainModel::ModernBert(m) => m.predict(&m.model.forward(&input, &lengths, false)),
            pretune::objective::PretrainModel::Glm(_) | pretune::objective::PretrainModel::Electra(_) => panic!("{architecture}: not an MLM"),
        };
        let ours: Vec<f64> = Vec::<f64>::try_from(&ours.to_kind(Kind::Double).view([-1])).unwrap();
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(ours.len() == theirs.len() && worst < 1e-4, "{architecture}: logits differ by {worst}");

        let (code, _, err) = run(&dir.path().join("nsp"), 2, false, &["objective.sentence_pair=\"nsp\""]);
        assert_ne!(code, 0);
        assert!(err.contains(refusal), "{err}");
    }
}

/// ModernBERT from scratch (`configs/pretrain-modernbert-tiny.toml`, `model.architecture =
/// "modernbert"`) pre-trains through the engine; what it cannot build is refused before
/// anything runs, each problem naming its key: an unknown architecture, a next-sentence task
/// (ModernBERT has no pair head), an odd head width (rotary positions rotate pairs), an odd
/// window, and a BERT-family start asked to become a ModernBERT.
#[test]
fn modernbert_from_scratch_pre_trains_and_refuses_what_it_cannot_build() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = root().join("configs/pretrain-modernbert-tiny.toml");
    let base = |out: &str| vec!["train".to_string(), cfg.display().to_string(), "--set".into(), format!("run.out_dir=\"{}\"", dir.path().join(out).display()), "--set".into(), "metrics.listen=\"\"".into(), "--set".into(), "data.train=[\"{}\"]".replace("{}", &root().join("data/sotu/train.txt").display().to_string()), "--set".into(), "data.eval=[\"{}\"]".replace("{}", &root().join("data/sotu/valid.txt").display().to_string()), "--set".into(), format!("tokenizer.path=\"{}\"", root().join("data/sotu/tokenizer.json").display())];
    let mut ok = base("run");
    for s in ["train.max_steps=4", "train.eval_every=4", "train.log_every=1", "train.batch_size=8", "train.max_seq_len=96"] {
        ok.extend(["--set".into(), s.into()]);
    }
    let (code, _, err) = run_cli(&ok.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let evals = crate::util::evals(&dir.path().join("run"));
    assert!(evals.last().is_some_and(|(_, m)| m.get("mlm_loss").is_some_and(|l| l.is_finite())), "{evals:?}");
    let state = pretune::checkpoint::CheckpointStore::verify(&dir.path().join("run/checkpoints/step-00000004")).unwrap();
    assert_eq!(state.model["architecture"], "ModernBert");
    for (sets, key) in [
        (vec!["model.architecture=\"modernbrt\""], "model.architecture: must be"),
        (vec!["objective.sentence_pair=\"nsp\""], "ModernBERT has no next-sentence head"),
        (vec!["model.hidden_size=126", "model.num_heads=2"], "model.num_heads: ModernBERT's rotary positions need an even head width"),
        (vec!["model.local_attention=33"], "model.local_attention: must be an even number"),
        (vec![&*format!("init.hf=\"{}\"", fixture("roberta").join("plain").display()), "tokenizer.path=\"\""], "model.architecture: \"modernbert\" does not fit a BERT-family starting point"),
    ] {
        let mut a = base("bad");
        for s in sets {
            a.extend(["--set".into(), s.into()]);
        }
        let (code, _, err) = run_cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 2, "{key}: {err}");
        assert!(err.contains(key), "{key}: {err}");
        assert!(!dir.path().join("bad/checkpoints").exists());
    }
}

/// A ModernBERT folder starts fine-tuning: `transformers`' `ModernBertForMaskedLM` (its own
/// random initialisation, 4 layers of width 64, a sliding window of 8 on each side, a
/// byte-level BPE `tokenizer.json` with ModernBERT's `[CLS] A [SEP]`; fixture
/// `scripts/make_modernbert_fixture.py`) as `[init] hf` learns sequence classification on the
/// bundled spam set well past the majority class (0.54) in 160 updates; the MLM prediction head's `head.*`
/// carries over as `transformers` carries it (only `classifier.*` starts fresh, the decoder's
/// bias goes unused), and the checkpoint exports as `ModernBertForSequenceClassification`,
/// which `transformers` loads with our logits.
#[test]
fn fine_tuning_from_a_modernbert_folder_learns_and_exports_as_modernbert() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spam_config_from_hf(dir.path(), &fixture("modernbert").join("plain"));
    let s = finetune(&cfg, &["train.epochs=0", "train.max_steps=160", "train.eval_every=80", "train.lr=5e-4", "train.max_seq_len=128"]);
    let init = s.init.clone().unwrap();
    assert!(init.missing.iter().all(|m| m.starts_with("classifier.")) && init.unused == ["decoder.bias"], "{init:?}");
    let (_, acc) = s.best.unwrap();
    eprintln!("ModernBERT on spam after 160 updates: accuracy {acc:.4}");
    assert!(acc > 0.75, "accuracy {acc} does not beat the majority class (0.54) clearly");
    export_matches_transformers(dir.path(), &s, "modernbert", "ModernBertForSequenceClassification", &[vec![2, 100, 200, 300, 150, 3], vec![2, 40, 41, 42, 3]], 0);
}

/// RoBERTa's and XLM-R's tokenizers through the `tokenizers` crate: a byte-level BPE and a
/// SentencePiece-style Unigram `tokenizer.json` (trained by `tokenizers` in the fixture) give,
/// on odd Unicode (accents, emoji, CJK, ligatures, full-width, combining marks, zero-width
/// space, runs of spaces), the ids of `transformers`' `RobertaTokenizerFast` /
/// `XLMRobertaTokenizerFast`; a pair, and a question-answering window, is framed as theirs
/// (`<s> A </s></s> B </s>`); pre-split
/// words (tagging) get the pieces they have in running text (for the byte-level BPE, of the
/// word after a space, as `add_prefix_space=True` gave in transformers 4); and every
/// piece that opens with `Ġ` / `▁` and text starts a word, so whole-word masking never joins
/// two words.
#[test]
fn roberta_and_xlmr_tokenizers_match_transformers_on_odd_text() {
    use pretune::data::tokenize::TextTokenizer;
    use pretune::finetune::data::{encode_classification, ClsRecord};
    let fix = fixture("roberta");
    let oracle: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fix.join("tokenizers.json")).unwrap()).unwrap();
    let strings = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let texts = strings(&oracle["texts"]);
    for (name, file) in [("bpe", "bpe.json"), ("unigram", "unigram.json")] {
        let tok = TextTokenizer::load(&fix.join(file), None).unwrap();
        assert_eq!(tok.pair_separators(), 2, "{name}");
        let want = &oracle[name];
        for (i, text) in texts.iter().enumerate() {
            let got = tok.encode(text).unwrap();
            assert_eq!(got.ids, ids(&want["texts"][i]), "{name}: {text:?}");
            for (k, (&id, &start)) in got.ids.iter().zip(&got.word_start).enumerate() {
                let piece = tok.id_to_token(id);
                // A marker and text opens a word; a bare marker may continue a run of spaces.
                let marker = |c: char| c == 'Ġ' || c == '▁';
                if piece.starts_with(marker) && !piece.chars().all(marker) {
                    assert!(start, "{name}: {text:?}: piece {k} {piece:?} starts a word but is not marked so");
                }
            }
            assert!(got.word_start.iter().filter(|&&s| s).count() > 1, "{name}: {text:?}");
        }
        for (i, pair) in oracle["pairs"].as_array().unwrap().iter().enumerate() {
            let p = strings(pair);
            let rec = ClsRecord { text: p[0].clone(), pair: Some(p[1].clone()), label: String::new(), path: "x".into(), line: 1 };
            let got = encode_classification(&tok, &rec, None, 0.0, 512).unwrap();
            assert_eq!(got.ids, ids(&want["pairs"][i]), "{name}: pair {p:?}");
        }
        // A question-answering window of a pair that fits is the same pair template.
        let mut windows = pretune::finetune::qa::QaWindows::new(&tok, 512, 128).unwrap();
        for (i, pair) in oracle["pairs"].as_array().unwrap().iter().enumerate() {
            let p = strings(pair);
            let rec = std::sync::Arc::new(pretune::data::labelled::QaRecord { id: i.to_string(), question: p[0].clone(), context: p[1].as_str().into(), answers: Vec::new() });
            let w = windows.windows(i, &rec, false).unwrap();
            assert_eq!(w.len(), 1);
            assert_eq!(w[0].ids, ids(&want["pairs"][i]), "{name}: question-answering window of {p:?}");
        }
        for (i, words) in oracle["words"].as_array().unwrap().iter().enumerate() {
            let got: Vec<u32> = strings(words).iter().flat_map(|w| tok.encode_word(w).unwrap().ids).collect();
            assert_eq!(got, ids(&want["words"][i]), "{name}: words {words}");
        }
    }
}

/// An ELECTRA discriminator folder (`transformers`' `ElectraForPreTraining`, embeddings
/// narrower than the blocks; fixture `scripts/make_electra_fixture.py`) starts fine-tuning: its
/// replaced-token head goes unused, a classification head starts fresh, the spam set is learnt
/// well past the majority class, and the checkpoint exports as
/// `ElectraForSequenceClassification` (with its `embedding_size`), which `transformers` loads
/// with our logits. MLM pre-training from it is refused (it has no MLM head).
#[test]
fn fine_tuning_from_an_electra_discriminator_learns_and_exports_as_electra() {
    let fix = fixture("electra");
    let dir = tempfile::tempdir().unwrap();
    let cfg = spam_config_from_hf(dir.path(), &fix.join("discriminator"));
    let s = finetune(&cfg, &["train.epochs=0", "train.max_steps=160", "train.eval_every=80", "train.lr=1e-3"]);
    let init = s.init.clone().unwrap();
    assert!(init.missing.iter().all(|m| m.starts_with("classifier.")) && !init.unused.is_empty() && init.unused.iter().all(|u| u.starts_with("discriminator_predictions.")), "{init:?}");
    let (_, acc) = s.best.unwrap();
    eprintln!("ELECTRA (random, tiny) on spam after 160 updates: accuracy {acc:.4}");
    assert!(acc > 0.75, "accuracy {acc} does not beat the majority class (0.54) clearly");
    let hf_config = export_matches_transformers(dir.path(), &s, "electra", "ElectraForSequenceClassification", &[vec![2, 500, 600, 700, 800, 3], vec![2, 40, 41, 42, 3]], 0);
    assert_eq!(hf_config["embedding_size"].as_i64(), Some(16));

    let pre = pretrain_config_from_hf(dir.path(), Some(&fix.join("discriminator")));
    let (code, _, err) = run_cli(&["check", pre.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("ELECTRA discriminator has no MLM head"), "{err}");
}

/// Cloze on a RoBERTa folder (a byte-level BPE, where a word's leading space is part of its
/// first token): a pattern's row with its blank replaced by a verbalizer's tokens is exactly
/// what `transformers`' tokenizer makes of the sentence with the verbalizer written in
/// (`... this message is an offer.`), odd Unicode included; and cloze fine-tuning on the
/// folder's MLM head runs, evaluates and moves its loss.
#[test]
fn roberta_cloze_writes_the_verbalizer_as_running_text_does() {
    use pretune::finetune::tasks::cloze;
    let fix = fixture("roberta");
    let tokenizer_file = fix.join("plain/tokenizer.json");
    let tok = pretune::data::tokenize::TextTokenizer::load(&tokenizer_file, None).unwrap();
    let pattern = "{text} All in all, this message is [MASK].";
    let labels = vec!["ham".to_string(), "spam".to_string()];
    let verbalizers: std::collections::BTreeMap<String, String> = [("ham", "personal"), ("spam", "an offer")].map(|(k, v)| (k.to_string(), v.to_string())).into();
    assert!(cloze::space_before(pattern) && !cloze::space_before("{text} It was:[MASK]"));
    let answers = cloze::answers(&tok, &labels, &verbalizers, cloze::space_before(pattern)).unwrap();
    let spec = cloze::ClozeSpec { pattern: pattern.into(), answers: answers.clone(), model: cloze::ClozeModel::bert(&tok) };
    let texts = ["Free entry in 2 a wkly comp to win FA Cup final tkts", "ok lar... joking wif u oni", "Café naïve — 東京 😀 prices!!", "  spaced   out  "];
    let mut ours = Vec::new();
    let mut sentences = Vec::new();
    for text in texts {
        let rec = pretune::finetune::data::ClsRecord { text: text.into(), pair: None, label: "ham".into(), path: "x".into(), line: 1 };
        let ex = cloze::encode(&tok, &rec, 0, &spec, 128).unwrap();
        let blank = ex.word_starts[0].unwrap();
        for (label, ans) in labels.iter().zip(&answers) {
            let mut ids: Vec<u32> = ex.ids.clone();
            ids.splice(blank..=blank, ans.iter().copied());
            ours.push(ids);
            sentences.push(format!("{text} All in all, this message is {}.", verbalizers[label]));
        }
    }
    let script = "import json, sys\nfrom transformers import PreTrainedTokenizerFast\nt = PreTrainedTokenizerFast(tokenizer_file=sys.argv[1])\nprint(json.dumps([t(s)['input_ids'] for s in json.loads(sys.stdin.read())]))";
    let mut child = std::process::Command::new(root().join(".venv/bin/python")).args(["-c", script, tokenizer_file.to_str().unwrap()]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), serde_json::to_string(&sentences).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let theirs: Vec<Vec<u32>> = serde_json::from_slice(&out.stdout).unwrap();
    // (The folder's tokenizer.json has no post-processor: the row's `<s>` and `</s>` are ours.)
    let ids = tok.special_ids();
    assert_eq!(ours.len(), theirs.len());
    for ((a, b), s) in ours.iter().zip(&theirs).zip(&sentences) {
        let framed: Vec<u32> = std::iter::once(ids.cls).chain(b.iter().copied()).chain([ids.sep]).collect();
        assert_eq!(a, &framed, "{s:?}");
    }

    // The task end to end: cloze on the folder's MLM head (`lm_head`), no new weights.
    let dir = tempfile::tempdir().unwrap();
    let cfg = spam_config_from_hf(dir.path(), &fix.join("plain"));
    let text = std::fs::read_to_string(&cfg).unwrap().replace("kind = \"sequence_classification\"", &format!("kind = \"cloze\"\npattern = \"{pattern}\"\nverbalizers = {{ ham = \"personal\", spam = \"an offer\" }}\nmax_eval_examples = 64"));
    std::fs::write(&cfg, text).unwrap();
    let s = finetune(&cfg, &["train.epochs=0", "train.max_steps=20", "train.eval_every=20", "train.lr=1e-3", "train.max_seq_len=96", "train.log_every=1"]);
    let init = s.init.clone().unwrap();
    assert!(init.missing.is_empty(), "cloze adds no weights: {init:?}");
    let (_, m) = s.eval.clone().unwrap();
    assert!(m.values["loss"].is_finite() && (0.0..=1.0).contains(&m.values["accuracy"]), "{m:?}");
}

/// Entity-level NER metrics against `seqeval` (fixture by `scripts/make_seqeval_fixture.py`):
/// micro and per-type precision / recall / F1 and gold counts, in IOB1, IOB2, IOBES and
/// BILOU-like tag schemes.
#[test]
fn entity_metrics_match_seqeval_in_every_tagging_scheme() {
    use pretune::finetune::metrics::EntityCounts;
    let dir = fixture("seqeval");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    assert_eq!(cases.len(), 4);
    let tags = |v: &serde_json::Value| -> Vec<Vec<String>> { serde_json::from_value(v.clone()).unwrap() };
    for case in &cases {
        let scheme = case["scheme"].as_str().unwrap();
        let mut counts = EntityCounts::default();
        for (g, p) in tags(&case["gold"]).iter().zip(&tags(&case["pred"])) {
            let (g, p): (Vec<&str>, Vec<&str>) = (g.iter().map(String::as_str).collect(), p.iter().map(String::as_str).collect());
            counts.add(&g, &p);
        }
        let close = |ours: f64, theirs: &serde_json::Value, what: &str| assert!((ours - theirs.as_f64().unwrap()).abs() < 1e-12, "{scheme} {what}: {ours} vs seqeval {theirs}");
        let m = counts.metrics();
        close(m.precision, &case["micro"]["precision"], "precision");
        close(m.recall, &case["micro"]["recall"], "recall");
        close(m.f1, &case["micro"]["f1"], "f1");
        let types = counts.by_type();
        let want = case["types"].as_object().unwrap();
        assert_eq!(types.keys().copied().collect::<Vec<_>>(), want.keys().map(String::as_str).collect::<Vec<_>>(), "{scheme}: entity types");
        for (ty, t) in &types {
            let w = &want[*ty];
            close(t.precision, &w["precision"], &format!("{ty} precision"));
            close(t.recall, &w["recall"], &format!("{ty} recall"));
            close(t.f1, &w["f1-score"], &format!("{ty} f1"));
            close(t.support as f64, &w["support"], &format!("{ty} support"));
        }
    }
}

/// NER `predict` on raw text (`{"text": ...}`): the words the tokenizer's pre-tokenizer makes,
/// their tags, and entities with character offsets and scores, equal to what `transformers`'
/// token-classification pipeline (`aggregation_strategy="first"`) finds with the exported
/// model; word lists (`{"tokens": [...]}`) get entities too.
#[test]
fn ner_predict_on_raw_text_finds_the_entities_the_transformers_pipeline_finds() {
    let dir = tempfile::tempdir().unwrap();
    let wnut = root().join(".cache/wnut");
    let cfg = ft_config(dir.path(), "token_classification", &wnut.join("train.txt").display().to_string(), &wnut.join("dev.txt").display().to_string(), "");
    let s = finetune(&cfg, &["train.epochs=0", "train.max_steps=2"]);
    let ck = s.best_checkpoint.clone().unwrap();
    let texts = [
        "Barack Obama visited Paris and Berlin last week.",
        "Zoë met José at Café de Flore in Paris!",
        "apple's iPhone is sold in New York, NY (and London).",
        "   leading spaces and   runs   of spaces  ",
        "Manchester United beat Real Madrid 3-1 at Old Trafford on Tuesday night",
    ];
    let input = dir.path().join("in.jsonl");
    let mut lines: Vec<String> = texts.iter().map(|t| serde_json::json!({ "text": t }).to_string()).collect();
    lines.push(serde_json::json!({ "tokens": ["Obama", "visited", "Paris"] }).to_string());
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let (code, out, err) = run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), texts.len() + 1);
    let ours: Vec<Vec<(String, u64, u64, f64)>> = rows[..texts.len()]
        .iter()
        .zip(texts)
        .map(|(r, text)| {
            assert_eq!(r["text"], text);
            let tokens: Vec<String> = serde_json::from_value(r["tokens"].clone()).unwrap();
            let tags: Vec<String> = serde_json::from_value(r["tags"].clone()).unwrap();
            assert_eq!(tokens.len(), tags.len(), "{r}");
            assert!(r.get("\u{0}places").is_none(), "the word places are not written out: {r}");
            r["entities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let (start, end) = (e["start"].as_u64().unwrap(), e["end"].as_u64().unwrap());
                    // The entity's text is the input's own spelling between its offsets.
                    assert_eq!(e["text"].as_str().unwrap(), text.chars().skip(start as usize).take((end - start) as usize).collect::<String>(), "{e}");
                    (e["type"].as_str().unwrap().to_owned(), start, end, e["score"].as_f64().unwrap())
                })
                .collect()
        })
        .collect();
    assert_eq!(rows[3]["tokens"], serde_json::json!(["leading", "spaces", "and", "runs", "of", "spaces"]));
    assert_eq!(rows[2]["tokens"].as_array().unwrap()[..4], serde_json::json!(["apple", "'", "s", "iPhone"]).as_array().unwrap()[..]);
    let words = &rows[texts.len()];
    assert_eq!(words["tokens"], serde_json::json!(["Obama", "visited", "Paris"]));
    assert!(words["entities"].as_array().unwrap().iter().all(|e| e["words"][0].as_u64() < e["words"][1].as_u64() && e.get("start").is_none()), "{words}");
    assert!(ours.iter().map(Vec::len).sum::<usize>() >= 3, "the model tags some entities: {ours:?}");

    let hf = dir.path().join("hf");
    let (code, _, err) = run_cli(&["export", "--hf", hf.to_str().unwrap(), "--checkpoint", ck.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let py = Command::new(root().join(".venv/bin/python")).arg(root().join("scripts/hf_ner_pipeline.py")).arg(&hf).arg(serde_json::json!(texts).to_string()).output().unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let theirs: Vec<Vec<serde_json::Value>> = serde_json::from_slice(&py.stdout).unwrap();
    for ((o, t), text) in ours.iter().zip(&theirs).zip(texts) {
        let o_spans: Vec<(&str, u64, u64)> = o.iter().map(|(ty, a, b, _)| (ty.as_str(), *a, *b)).collect();
        let t_spans: Vec<(&str, u64, u64)> = t.iter().map(|e| (e["type"].as_str().unwrap(), e["start"].as_u64().unwrap(), e["end"].as_u64().unwrap())).collect();
        assert_eq!(o_spans, t_spans, "entities of {text:?}");
        for (a, b) in o.iter().zip(t) {
            assert!((a.3 - b["score"].as_f64().unwrap()).abs() < 1e-4, "score of {a:?} vs the pipeline's {b} in {text:?}");
        }
    }

    // A line with neither field names what it needs.
    std::fs::write(&input, "{\"txt\": \"typo\"}\n").unwrap();
    let (code, _, err) = run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in.jsonl:1") && err.contains("`tokens` (a list of words) or `text` (a string)"), "{err}");
}

/// `task.kind = "multiple_choice"` against `BertForMultipleChoice` (fixture by
/// `scripts/make_heads_fixture.py`): two examples of three choices of different lengths, each
/// example's choices carried in one `TaskExample` and split into rows by the task's collate;
/// the choice scores and the loss.
#[test]
fn multiple_choice_matches_bert_for_multiple_choice() {
    use pretune::finetune::task::TaskNet;
    use pretune::finetune::tasks::{multiple_choice, TaskContext};
    use pretune::objective::ObjectiveModel;
    let dir = fixture("heads");
    let cfg: BertConfig = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let b = read(&dir.join("batch.safetensors"));
    let tokenizer = pretune::data::tokenize::TextTokenizer::load(&root().join("data/sotu/tokenizer.json"), None).unwrap();
    let task_config = pretune::config::TaskConfig { kind: Some("multiple_choice".into()), labels: vec!["0".into(), "1".into(), "2".into()], ..Default::default() };
    let encoder = pretune::objective::ModelSpec::Bert { config: cfg, pair_head: false };
    let cx = TaskContext { config: &task_config, tokenizer: std::sync::Arc::new(tokenizer), encoder: &encoder, max_seq_len: 32, generate: Default::default() };
    let task: std::sync::Arc<dyn pretune::finetune::tasks::Task> = std::sync::Arc::from((multiple_choice::KIND.build)(&cx).unwrap());
    let ids = Vec::<i64>::try_from(&b["mc_input_ids"].view([-1])).unwrap();
    let types = Vec::<i64>::try_from(&b["mc_token_type_ids"].view([-1])).unwrap();
    let lengths = Vec::<i64>::try_from(&b["mc_lengths"].view([-1])).unwrap();
    let labels = Vec::<i64>::try_from(&b["mc_labels"]).unwrap();
    let t = b["mc_input_ids"].size()[2] as usize;
    let examples: Vec<pretune::data::labelled::TaskExample> = (0..2)
        .map(|i| {
            let mut e = pretune::data::labelled::TaskExample { labels: vec![labels[i]], ..Default::default() };
            for c in 0..3 {
                let (row, n) = (i * 3 + c, lengths[i * 3 + c] as usize);
                e.word_starts.push(Some(e.ids.len()));
                e.ids.extend(ids[row * t..row * t + n].iter().map(|&x| x as u32));
                e.types.extend(types[row * t..row * t + n].iter().map(|&x| x as u8));
            }
            e
        })
        .collect();
    let hb = task.collate(&examples.iter().collect::<Vec<_>>());
    assert_eq!((hb.batch_size, hb.candidates, hb.row_labels.clone()), (6, 3, labels.clone()));
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = TaskNet::new(&vs.root(), task.clone());
    vs.load(dir.join("mc_weights.safetensors")).unwrap();
    let _g = tch::no_grad_guard();
    let db = pretune::objective::DeviceBatch::new(&hb, Device::Cpu);
    let scores = net.outputs(&db, false);
    assert_eq!(scores.size(), [2, 3]);
    let d = max_abs_diff(&scores, &b["mc_logits"]);
    assert!(d < 1e-5, "choice scores differ from transformers by {d}");
    let loss = net.losses(&db, false)[0].sum.double_value(&[]) / 2.0;
    let want = b["mc_loss"].double_value(&[0]);
    assert!((loss - want).abs() < 1e-5, "loss {loss} vs transformers {want}");
}

/// Multiple choice end to end: SQuAD questions with their answer among three others as the
/// choices; a run, `evaluate` equal to the run's evaluation, `predict` on plain and SWAG
/// records, and `export` to a folder `AutoModelForMultipleChoice` loads with the same scores.
#[test]
fn multiple_choice_trains_evaluates_predicts_and_exports() {
    use pretune::finetune::task::{TaskNet, TaskSpec};
    let dir = tempfile::tempdir().unwrap();
    let dev: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root().join(".cache/squad/dev-v1.1.json")).unwrap()).unwrap();
    let mut qas = Vec::new();
    for article in dev["data"].as_array().unwrap().iter().take(3) {
        for para in article["paragraphs"].as_array().unwrap() {
            for qa in para["qas"].as_array().unwrap() {
                qas.push((qa["question"].as_str().unwrap().to_owned(), qa["answers"][0]["text"].as_str().unwrap().to_owned()));
            }
        }
    }
    let records: Vec<serde_json::Value> = (0..64)
        .map(|i| {
            let (q, a) = &qas[i];
            let label = i % 4;
            let mut choices: Vec<String> = (1..4).map(|d| qas[(i + 7 * d) % qas.len()].1.clone()).collect();
            choices.insert(label, a.clone());
            serde_json::json!({ "text": q, "choices": choices, "label": label })
        })
        .collect();
    let write = |name: &str, rows: &[serde_json::Value]| {
        let p = dir.path().join(name);
        std::fs::write(&p, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
        p
    };
    let (train, eval) = (write("train.jsonl", &records[..48]), write("dev.jsonl", &records[48..]));
    let cfg = ft_config(dir.path(), "multiple_choice", train.to_str().unwrap(), eval.to_str().unwrap(), "");
    let s = finetune(&cfg, &["train.epochs=0", "train.max_steps=3"]);
    let (_, m) = s.eval.clone().expect("an evaluation at the end");
    let ck = s.best_checkpoint.clone().unwrap();
    let (code, out, err) = run_cli(&["evaluate", "--checkpoint", ck.to_str().unwrap(), "--data", eval.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["task"].as_str(), v["records"].as_u64()), (Some("multiple_choice"), Some(16)));
    assert!((v["accuracy"].as_f64().unwrap() - m.get("accuracy").unwrap()).abs() < 1e-12, "{v} vs {m:?}");

    let swag = serde_json::json!({"sent1": "The chef slices the onion.", "sent2": "She", "ending0": "adds it to the pan.", "ending1": "flies away.", "ending2": "reads a book.", "ending3": "swims.", "label": 0});
    let input = write("predict.jsonl", &[records[50].clone(), swag]);
    let (code, out, err) = run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let p: Vec<f64> = serde_json::from_value(l["probabilities"].clone()).unwrap();
        assert_eq!(p.len(), 4);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        let best = l["label"].as_u64().unwrap() as usize;
        assert!(p.iter().all(|&x| x <= p[best]), "{l}");
    }
    assert_eq!(lines[1]["choices"][0], "She adds it to the pan.", "SWAG's pairs are run_swag.py's");
    // Another number of choices than the task's is a bad record, named with its line.
    let three = write("three.jsonl", &[serde_json::json!({"text": "q", "choices": ["a", "b", "c"]})]);
    let (code, _, err) = run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--input", three.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("three.jsonl") && err.contains("3 choices where the task has 4"), "{err}");

    let hf = dir.path().join("hf");
    let (code, _, err) = run_cli(&["export", "--hf", hf.to_str().unwrap(), "--checkpoint", ck.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForMultipleChoice");
    let rows: Vec<Vec<i64>> = vec![vec![2, 40, 41, 3, 50, 51, 52, 3], vec![2, 40, 41, 3, 60, 3], vec![2, 40, 41, 3, 70, 71, 3], vec![2, 40, 41, 3, 80, 81, 82, 83, 3]];
    let theirs = hf_logits(&hf, "AutoModelForMultipleChoice", &rows);
    let state = pretune::checkpoint::CheckpointStore::verify(&ck).unwrap();
    let spec: TaskSpec = serde_json::from_value(state.model).unwrap();
    let task: std::sync::Arc<dyn pretune::finetune::tasks::Task> = std::sync::Arc::from(pretune::finetune::task::restore(&spec, &state.config, Default::default()).unwrap());
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = TaskNet::new(&vs.root(), task.clone());
    vs.load(ck.join("model.safetensors")).unwrap();
    let mut e = pretune::data::labelled::TaskExample { labels: vec![0], ..Default::default() };
    for r in &rows {
        e.word_starts.push(Some(e.ids.len()));
        e.ids.extend(r.iter().map(|&x| x as u32));
        e.types.extend(std::iter::repeat_n(0u8, r.len()));
    }
    let hb = task.collate(&[&e]);
    let _g = tch::no_grad_guard();
    let ours = Vec::<f64>::try_from(&net.outputs(&pretune::objective::DeviceBatch::new(&hb, Device::Cpu), false).to_kind(Kind::Double).view([-1])).unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() < 1e-4, "ours {ours:?} vs transformers {theirs:?}");
    }
}
