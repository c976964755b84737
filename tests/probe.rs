//! `[[probe]]`: a pre-training run scores a labelled set zero-shot (cloze on its own output
//! layer) at each evaluation, on BERT and on GLM; the numbers are the cloze task's on the same
//! weights, and probing changes nothing the Trainer does.

use std::path::{Path, PathBuf};

use pretune::finetune::task::TaskNet;
use pretune::objective::ObjectiveModel;

use crate::util::{assert_same_weights, evals, ft_config, load_plan, root, run_cli, tiny_config, weights};

const PATTERN: &str = "{text} All in all, this message is [MASK].";

fn probe_section(pattern: &str) -> String {
    format!(
        "\n[[probe]]\nname = \"spam\"\ndata = \"{}\"\npattern = \"{pattern}\"\nverbalizers = {{ ham = \"personal\", spam = \"an offer\" }}\nmax_examples = 48\n",
        root().join("data/spam/dev.jsonl").display()
    )
}

/// The tiny pre-training config of the tests, with a probe (or not), into `dir/run`.
fn config(dir: &Path, probe: bool) -> PathBuf {
    let cfg = tiny_config(dir);
    if probe {
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text += &probe_section(PATTERN);
        std::fs::write(&cfg, text).unwrap();
    }
    cfg
}

const SETS: [&str; 5] = ["train.max_steps=20", "train.eval_every=10", "train.checkpoint_every=10", "train.keep_last=0", "data.eval_batches=1"];

#[test]
fn a_bert_probe_is_the_cloze_accuracy_of_the_same_weights_and_changes_no_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let (with, without) = (tmp.path().join("with"), tmp.path().join("without"));
    for (dir, probe) in [(&with, true), (&without, false)] {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = config(dir, probe);
        let args: Vec<String> = ["train".to_string(), cfg.display().to_string()].into_iter().chain(SETS.iter().flat_map(|s| ["--set".to_string(), s.to_string()])).collect();
        let (code, out, err) = run_cli(&args);
        assert_eq!(code, 0, "{out}\n{err}");
    }
    // Probing runs on the Evaluator's copy: the Trainer's weights are bit-identical.
    assert_same_weights(&with.join("run/checkpoints/step-00000020"), &without.join("run/checkpoints/step-00000020"));
    let probed = evals(&with.join("run"));
    assert_eq!(probed.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![10, 20]);
    assert!(evals(&without.join("run")).iter().all(|(_, m)| !m.values.keys().any(|k| k.starts_with("probe."))));

    // The oracle: the cloze fine-tuning task built from the step-10 checkpoint, scored on
    // the same 48 records with that checkpoint's weights.
    for step in [10u64, 20] {
        let ckpt = with.join(format!("run/checkpoints/step-{step:08}"));
        let dev = root().join("data/spam/dev.jsonl").display().to_string();
        let dir = tmp.path().join(format!("oracle-{step}"));
        std::fs::create_dir_all(&dir).unwrap();
        let ft = dir.join("cloze.toml");
        std::fs::write(
            &ft,
            format!(
                "[run]\nout_dir = \"{out}\"\ndevice = \"cpu\"\n[init]\ncheckpoint = \"{ckpt}\"\n[task]\nkind = \"cloze\"\npattern = \"{PATTERN}\"\nverbalizers = {{ ham = \"personal\", spam = \"an offer\" }}\nmax_eval_examples = 48\n[data]\ntrain = [\"{dev}\"]\neval = [\"{dev}\"]\n[train]\nmax_seq_len = 64\n[metrics]\nlisten = \"\"\n",
                out = dir.join("run").display(),
                ckpt = ckpt.display()
            ),
        )
        .unwrap();
        let plan = load_plan(&ft, &[] as &[&str]);
        let task = plan.task().unwrap();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let net = TaskNet::new(&vs.root(), task.task.clone());
        let w = weights(&ckpt);
        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                v.copy_(w.get(&name).unwrap_or_else(|| panic!("{name} not in the checkpoint")));
            }
        });
        let examples: Vec<&pretune::data::labelled::TaskExample> = task.eval.iter().map(|e| e.as_ref()).collect();
        assert_eq!(examples.len(), 48);
        let batches: Vec<_> = examples.chunks(7).map(|c| task.task.collate(c)).collect();
        let want = net.evaluate(&batches, tch::Device::Cpu);
        let got = &probed.iter().find(|(s, _)| *s == step).unwrap().1;
        assert_eq!(got.values["probe.spam.accuracy"], want.values["accuracy"], "step {step}");
        assert!((got.values["probe.spam.loss"] - want.values["loss"]).abs() < 1e-5, "step {step}: {} vs {}", got.values["probe.spam.loss"], want.values["loss"]);
    }
}

#[test]
fn a_glm_run_probes_through_blank_infilling_and_bad_probes_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let glm = root().join("configs/pretrain-glm-tiny.toml");
    let mut text = std::fs::read_to_string(&glm).unwrap();
    text += &probe_section(PATTERN);
    let cfg = tmp.path().join("glm.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = tmp.path().join("run");
    let (code, stdout, err) = run_cli(&[
        "train".to_string(),
        cfg.display().to_string(),
        "--set".into(),
        format!("run.out_dir=\"{}\"", out.display()),
        "--set".into(),
        "metrics.listen=\"\"".into(),
        "--set".into(),
        "train.max_steps=4".into(),
        "--set".into(),
        "train.eval_every=4".into(),
        "--set".into(),
        "data.eval_batches=1".into(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let e = evals(&out);
    let acc = e.last().unwrap().1.values["probe.spam.accuracy"];
    assert!((0.0..=1.0).contains(&acc) && e.last().unwrap().1.values["probe.spam.loss"].is_finite());

    // A probe without a blank, or on a fine-tuning run, is refused with its key.
    std::fs::write(&cfg, text.replace(PATTERN, "{text} no blank here")).unwrap();
    let (code, _, err) = run_cli(&["check".to_string(), cfg.display().to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("probe[0].pattern: needs `{text}` and exactly one `[MASK]`"), "{err}");
    let dev = root().join("data/spam/dev.jsonl").display().to_string();
    let ft = ft_config(tmp.path(), "sequence_classification", &dev, &dev, &probe_section(PATTERN));
    let (code, _, err) = run_cli(&["check".to_string(), ft.display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("probe: [[probe]] scores a pre-training run"), "{err}");
}

/// The forgetting measures of the learning-rate table: `encoder_drift`, ‖θ − θ₀‖ / ‖θ₀‖ over
/// the encoder's weights, θ₀ the `[init]` weights, recomputed here from the checkpoints; and
/// `[retention]`, the checkpoint's MLM loss on held-out pre-training text through its own,
/// unchanged MLM head on the fine-tuned encoder, recomputed from a checkpoint that merges the
/// two; and `task.eval_train`'s `train.*` metrics.
#[test]
fn encoder_drift_is_the_relative_distance_of_the_encoder_from_its_start() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = config(tmp.path(), false);
    let (code, out, err) = run_cli(&["train".to_string(), pre.display().to_string(), "--set".into(), "train.max_steps=4".into(), "--set".into(), "train.checkpoint_every=4".into()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let start = tmp.path().join("run/checkpoints/step-00000004");
    let dev = root().join("data/spam/dev.jsonl").display().to_string();
    for (lr, name) in [(1e-12, "still"), (3e-3, "moving")] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ft = dir.join("ft.toml");
        std::fs::write(
            &ft,
            format!(
                "[run]\nout_dir = \"{out}\"\ndevice = \"cpu\"\n[init]\ncheckpoint = \"{start}\"\n[retention]\ndata = [\"{held_out}\"]\nmax_sequences = 64\n[task]\nkind = \"sequence_classification\"\nmax_eval_examples = 16\neval_train = 16\n[data]\ntrain = [\"{dev}\"]\neval = [\"{dev}\"]\n[train]\nmax_seq_len = 64\nbatch_size = 8\nepochs = 0\nmax_steps = 3\neval_every = 3\nlr = {lr}\nwarmup_steps = 0\nprecision = \"fp32\"\n[metrics]\nlisten = \"\"\n",
                out = dir.join("run").display(),
                start = start.display(),
                held_out = root().join("data/sotu/valid.txt").display()
            ),
        )
        .unwrap();
        let (code, out, err) = run_cli(&["train".to_string(), ft.display().to_string()]);
        assert_eq!(code, 0, "{out}\n{err}");
        let last = evals(&dir.join("run")).last().unwrap().1.clone();
        let drift = last.values["encoder_drift"];
        // task.eval_train: here the training file is the held-out one, so the first 16
        // training examples are the 16 held-out ones, scored on the same weights.
        assert_eq!(last.values["train.accuracy"], last.values["accuracy"]);
        assert!((last.values["train.loss"] - last.values["loss"]).abs() < 1e-6, "{last:?}");
        let (w0, w) = (weights(&start), weights(&dir.join("run/checkpoints/step-00000003")));
        let (mut num, mut den) = (0.0, 0.0);
        for (k, t0) in w0.iter().filter(|(k, _)| pretune::init::is_encoder_variable(k)) {
            let d = (&w[k].to_kind(tch::Kind::Double) - t0.to_kind(tch::Kind::Double)).square().sum(tch::Kind::Double).double_value(&[]);
            num += d;
            den += t0.to_kind(tch::Kind::Double).square().sum(tch::Kind::Double).double_value(&[]);
        }
        let want = (num / den).sqrt();
        assert!((drift - want).abs() <= 1e-9 * want.max(1e-12), "{name}: {drift} vs {want}");
        if lr < 1e-9 {
            assert!(drift < 1e-9, "{drift}");
        } else {
            assert!(drift > 1e-4, "{drift}");
        }

        // Retention's oracle: the pre-training model with the checkpoint's MLM head and the
        // fine-tuned encoder, merged in one file, evaluated as the pre-training run evaluates
        // (its config, 64 held-out sequences in batches of 32, the evaluation masks).
        let mut merged: std::collections::BTreeMap<String, tch::Tensor> = w0.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
        for (k, t) in w.iter().filter(|(k, _)| pretune::init::is_encoder_variable(k)) {
            merged.insert(k.clone(), t.shallow_clone());
        }
        let file = dir.join("merged.safetensors");
        tch::Tensor::write_safetensors(&merged.iter().map(|(k, v)| (k.as_str(), v.shallow_clone())).collect::<Vec<_>>(), &file).unwrap();
        let mlm = |weights: &Path| {
            let plan = load_plan(&pre, &["train.batch_size=32", "data.eval_batches=2"]);
            let mut data = pretune::actors::eval_data(&plan).unwrap();
            data.held_out.max_batches = 2;
            let batches = data.build().unwrap();
            assert_eq!(batches.iter().map(|b| b.batch_size).sum::<usize>(), 64);
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let model = plan.objective().build(&vs.root());
            pretune::init::load_into(&vs, weights).unwrap();
            model.evaluate(&batches, tch::Device::Cpu).values["mlm_loss"]
        };
        let (now, then) = (mlm(&file), mlm(&start.join("model.safetensors")));
        let got = last.values["retention.mlm_loss"];
        assert!((got - now).abs() < 1e-6, "{name}: retention.mlm_loss {got} vs {now}");
        assert!((last.values["retention.loss_increase"] - (now - then)).abs() < 1e-6, "{name}: {last:?} vs {then}");
        if lr < 1e-9 {
            assert!(last.values["retention.loss_increase"].abs() < 1e-6, "{last:?}");
        } else {
            assert!(last.values["retention.loss_increase"].abs() > 1e-4, "{last:?}");
        }
    }

    // A start without a pre-training head, and [retention] on a pre-training run, are refused.
    let ft = ft_config(tmp.path(), "sequence_classification", &dev, &dev, "\n[retention]\ndata = [\"data/sotu/valid.txt\"]\n");
    let (code, _, err) = run_cli(&["check".to_string(), ft.display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("retention: needs init.checkpoint"), "{err}");
    let mut text = std::fs::read_to_string(&pre).unwrap();
    text += "\n[retention]\ndata = [\"data/sotu/valid.txt\"]\n";
    std::fs::write(&pre, text).unwrap();
    let (code, _, err) = run_cli(&["check".to_string(), pre.display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("retention: [retention] measures what fine-tuning erased"), "{err}");
}
