//! One engine for both phases: every pipeline capability shown on a fine-tuning run (resume,
//! kill -9, signals, subscribers and commands, data parallelism), and what only fine-tuning had
//! before (early stopping, layer-wise decay, freezing) shown on pre-training. Bit-exact
//! comparisons run in their own processes (libtorch's generator is process-wide).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Context, Handler};
use pretune::actors::events::{Command as Cmd, Event};
use pretune::actors::{Controller, Pipeline};
use pretune::checkpoint::CheckpointStore;
use pretune::rng::{Rng, Purpose};

use crate::util::{assert_same_weights, bin, eventually, ft_config, losses, max_weight_diff, root, run_cli, tiny_config, wait_bounded, weights, KillOnDrop};

/// A tiny sequence-classification run on the bundled spam set (720 examples: 45 batches of 16
/// per epoch), no held-out evaluation unless asked.
fn spam_config(dir: &Path) -> PathBuf {
    let spam = root().join("data/spam");
    ft_config(dir, "sequence_classification", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "")
}

fn args(cfg: &Path, out: &Path, sets: &[&str]) -> Vec<String> {
    let mut a = vec!["train".to_string(), cfg.display().to_string(), "--set".into(), format!("run.out_dir=\"{}\"", out.display())];
    for s in sets {
        a.push("--set".into());
        a.push(s.to_string());
    }
    a
}


fn ckpt(out: &Path, step: u64) -> PathBuf {
    out.join("checkpoints").join(CheckpointStore::dir_name(step))
}

/// Resuming a fine-tuning run mid-epoch (from an explicit checkpoint, and after SIGKILLs at
/// random moments with `--resume auto`) ends with the weights of the uninterrupted run, bit for
/// bit, with `group_by_length` off and on; the checkpoint records where the weights came from.
#[test]
fn fine_tuning_resumes_bit_identically_mid_epoch_with_and_without_group_by_length() {
    let dir = tempfile::tempdir().unwrap();
    // A starting checkpoint to fine-tune from (fine-tuning records it).
    let start = dir.path().join("start");
    let cfg = spam_config(dir.path());
    let (code, _, err) = run_cli(&args(&cfg, &start, &["train.epochs=0", "train.max_steps=1", "data.eval=[]"]));
    assert_eq!(code, 0, "{err}");
    let start_ck = ckpt(&start, 1);
    for group in [false, true] {
        let base: Vec<String> = vec![
            format!("init.checkpoint=\"{}\"", start_ck.display()),
            "train.epochs=2".into(),
            "train.checkpoint_every=7".into(),
            "train.keep_last=0".into(),
            "train.log_every=1".into(),
            "data.eval=[]".into(),
            format!("train.group_by_length={group}"),
        ];
        let base: Vec<&str> = base.iter().map(String::as_str).collect();
        let full = dir.path().join(format!("full-{group}"));
        let (code, _, err) = run_cli(&args(&cfg, &full, &base));
        assert_eq!(code, 0, "{err}");
        let last = ckpt(&full, 90);
        let state = CheckpointStore::verify(&last).unwrap();
        assert_eq!(state.init.as_deref(), Some(format!("checkpoint {}", start_ck.display()).as_str()), "the checkpoint records its start");

        // Step 21 is mid-epoch 0 (45 steps per epoch), step 49 mid-epoch 1.
        for at in [21u64, 49] {
            let out = dir.path().join(format!("resumed-{group}-{at}"));
            let mut a = args(&cfg, &out, &base);
            a.extend(["--resume".into(), ckpt(&full, at).display().to_string()]);
            let (code, _, err) = run_cli(&a);
            assert_eq!(code, 0, "{err}");
            let want: BTreeMap<u64, f64> = losses(&full).range(at + 1..).map(|(k, v)| (*k, *v)).collect();
            assert_eq!(losses(&out), want, "losses after resuming at {at} (group_by_length = {group})");
            assert_same_weights(&last, &ckpt(&out, 90));
            assert_eq!(CheckpointStore::verify(&ckpt(&out, 90)).unwrap().init, state.init, "kept across a resume");
        }

        // kill -9 once the log shows a given step (checkpoints every 7: the kill lands between
        // them, mid-epoch), each time resuming with `--resume auto`; then run to the end.
        let killed = dir.path().join(format!("killed-{group}"));
        let mut rng = Rng::keyed(7, Purpose::Mask, &[group as u64]);
        let mut kills = 0;
        for target in [10 + rng.below(20), 50 + rng.below(20)] {
            let mut child = spawn(&cfg, &killed, &base, true);
            eventually(Duration::from_secs(180), format!("step {target} or the run's end"), || {
                (losses(&killed).keys().max().copied().unwrap_or(0) >= target || child.try_wait().unwrap().is_some()).then_some(())
            });
            if child.try_wait().unwrap().is_some() {
                continue;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        }
        assert!(kills >= 1, "the runs ended before they could be killed");
        let mut child = spawn(&cfg, &killed, &base, true);
        assert!(wait_bounded(&mut child, Duration::from_secs(180)).success());
        eprintln!("group_by_length = {group}: {kills} kills");
        assert_same_weights(&last, &ckpt(&killed, 90));
    }
}

fn spawn(cfg: &Path, out: &Path, sets: &[&str], resume: bool) -> Child {
    let mut a = args(cfg, out, sets);
    if resume {
        a.extend(["--resume".into(), "auto".into()]);
    }
    // Nothing reads its output: a piped stream nobody drains would block the run when full.
    Command::new(bin()).args(&a).current_dir(root()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}


/// SIGTERM on a fine-tuning run: the step finishes, a checkpoint is written at it, exit 0; a
/// second signal exits at once with 130.
#[test]
fn a_signal_checkpoints_a_fine_tuning_run_and_a_second_one_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spam_config(dir.path());
    let out = dir.path().join("term");
    let sets = ["train.epochs=1000", "train.log_every=1", "data.eval=[]"];
    let mut guard = KillOnDrop(spawn(&cfg, &out, &sets, false));
    let child = &mut guard.0;
    eventually(Duration::from_secs(180), "step 3", || (losses(&out).keys().max().copied().unwrap_or(0) >= 3).then_some(()));
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_bounded(child, Duration::from_secs(60)).code(), Some(0));
    let latest = CheckpointStore::new(out.join("checkpoints")).latest().expect("a checkpoint on SIGTERM");
    let state = CheckpointStore::verify(&latest).unwrap();
    assert_eq!(state.step, losses(&out).keys().max().copied().unwrap(), "at the last finished step");

    let out2 = dir.path().join("twice");
    let mut guard = KillOnDrop(spawn(&cfg, &out2, &sets, false));
    let child = &mut guard.0;
    eventually(Duration::from_secs(180), "a first step", || (!losses(&out2).is_empty()).then_some(()));
    // SAFETY: as above.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(wait_bounded(child, Duration::from_secs(30)).code(), Some(130));
}

/// Sends scripted commands after given steps and records what it saw.
struct Script {
    ctl: Controller,
    seen: Arc<Mutex<Vec<Event>>>,
    at: BTreeMap<u64, Vec<Cmd>>,
}

impl Actor for Script {
    type Context = Context<Self>;
}

impl Handler<Event> for Script {
    type Result = ();
    fn handle(&mut self, e: Event, _: &mut Context<Self>) {
        if let Event::StepDone(s) = &e {
            for c in self.at.remove(&s.step).unwrap_or_default() {
                self.ctl.send(c);
            }
        }
        self.seen.lock().unwrap().push(e);
    }
}

/// A fine-tuning run takes subscribers and commands like pre-training: evaluate now,
/// checkpoint now, a new learning rate, stop (with a checkpoint).
#[test]
fn fine_tuning_takes_subscribers_and_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spam_config(dir.path());
    let o: Vec<String> = ["train.epochs=1000", "train.log_every=1", "train.keep_last=0", "train.eval_every=100000"].iter().map(|s| s.to_string()).collect();
    let plan = pretune::plan::load_and_resolve(&cfg, &o).unwrap();
    assert_eq!(plan.phase(), pretune::workload::Phase::Finetune);
    let seen: Arc<Mutex<Vec<Event>>> = Default::default();
    let s2 = seen.clone();
    let at: BTreeMap<u64, Vec<Cmd>> = [(2, vec![Cmd::EvaluateNow, Cmd::CheckpointNow]), (4, vec![Cmd::SetLearningRate { lr: 1e-9 }]), (8, vec![Cmd::Stop])].into_iter().collect();
    let summary = Pipeline::new(plan).subscribe(move |ctl| Script { ctl, seen: s2, at }.start().recipient()).run().unwrap();
    assert_eq!(summary.ended_by, pretune::actors::EndedBy::Interrupted, "{}", summary.ended_by);
    assert!((8..50).contains(&summary.steps), "stopped soon after the command: {}", summary.steps);
    let seen = seen.lock().unwrap();
    let evals: Vec<u64> = seen.iter().filter_map(|e| if let Event::Eval { step, phase, .. } = e { assert_eq!(*phase, pretune::workload::Phase::Finetune); Some(*step) } else { None }).collect();
    assert_eq!(evals.len(), 1, "one commanded evaluation: {evals:?}");
    let (eval_step, m) = summary.eval.clone().unwrap();
    assert!(m.get("accuracy").is_some() && m.get("macro_f1").is_some(), "{m:?}");
    assert!(ckpt(&summary.out_dir, eval_step).join("state.json").exists(), "the evaluated weights are checkpointed");
    let lrs: Vec<(u64, f64)> = seen.iter().filter_map(|e| if let Event::StepDone(s) = e { Some((s.step, s.lr)) } else { None }).collect();
    let first_set = lrs.iter().find(|(_, lr)| *lr == 1e-9).expect("the new rate was used").0;
    assert!(first_set > 4 && lrs.iter().filter(|(s, _)| *s >= first_set).all(|(_, lr)| *lr == 1e-9), "{lrs:?}");
    let latest = CheckpointStore::new(summary.out_dir.join("checkpoints")).latest().unwrap();
    assert_eq!(CheckpointStore::verify(&latest).unwrap().step, summary.steps, "a stop checkpoints the last step");
}

/// `pretune launch --nproc 2` on a fine-tuning config trains one model (only rank 0 writes),
/// and with dropout off two ranks with half the batch end within 1e-5 of one process with the
/// whole batch. The dropout override works when fine-tuning from a checkpoint.
#[test]
fn two_ranks_fine_tune_one_model_equal_to_one_process_with_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spam_config(dir.path());
    let start = dir.path().join("start");
    let (code, _, err) = run_cli(&args(&cfg, &start, &["train.epochs=0", "train.max_steps=1", "data.eval=[]"]));
    assert_eq!(code, 0, "{err}");
    let common: Vec<String> = vec![
        format!("init.checkpoint=\"{}\"", ckpt(&start, 1).display()),
        "model.hidden_dropout=0.0".into(),
        "model.attention_dropout=0.0".into(),
        "train.epochs=0".into(),
        "train.max_steps=8".into(),
        "train.eval_every=4".into(),
        "train.log_every=1".into(),
        "pipeline.masker_workers=1".into(),
        "dist.timeout_s=60".into(),
    ];
    let run = |name: &str, batch: usize, launch: bool| -> PathBuf {
        let out = dir.path().join(name);
        let mut sets = common.clone();
        sets.push(format!("train.batch_size={batch}"));
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut a = args(&cfg, &out, &sets);
        if launch {
            a.splice(0..1, ["launch".to_string(), "--nproc".into(), "2".into()]);
        }
        let (code, _, err) = run_cli(&a);
        assert_eq!(code, 0, "{err}");
        out
    };
    let two = run("two", 8, true);
    let one = run("one", 16, false);
    let (d, name) = max_weight_diff(&ckpt(&two, 8), &ckpt(&one, 8));
    assert!(d < 1e-5, "largest difference {d} in {name}");
    let moved = max_weight_diff(&ckpt(&two, 4), &ckpt(&two, 8)).0;
    assert!(moved > 1e-4, "the weights moved between steps 4 and 8");
    assert!(two.join("ranks/rank-1/events.jsonl").exists() && !two.join("ranks/rank-1/checkpoints").exists(), "only rank 0 writes");
    let state = CheckpointStore::verify(&ckpt(&two, 8)).unwrap();
    assert_eq!(state.world_size, 2);
    assert_eq!(state.model["config"]["hidden_dropout_prob"], 0.0, "the dropout override reached the model");
    // Evaluations on rank 0 only, with the task's metrics.
    let evals = crate::util::evals(&two);
    assert_eq!(evals.len(), 2);
    assert!(evals.iter().all(|(_, m)| m.get("accuracy").is_some()), "{evals:?}");
}

/// Early stopping on the monitored metric, layer-wise learning-rate decay and freezing work in
/// pre-training too.
#[test]
fn pre_training_stops_early_and_freezes_like_fine_tuning() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let start = dir.path().join("start");
    let (code, _, err) = run_cli(&args(&cfg, &start, &["train.max_steps=2", "data.eval=[]"]));
    assert_eq!(code, 0, "{err}");
    let from = ckpt(&start, 2);
    // The architecture comes from [init]: restating a size is fine, changing one is an error.
    let mut a = vec!["check".to_string(), cfg.display().to_string()];
    for s in [format!("init.checkpoint=\"{}\"", from.display()), "model.hidden_size=48".into(), "model.hidden_dropout=0.0".into()] {
        a.extend(["--set".to_string(), s]);
    }
    let (code, _, err) = run_cli(&a);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("model.hidden_size: 48 differs from the starting point's 64"), "{err}");
    let out = dir.path().join("frozen");
    // lr 1e-30 after warm-up: the held-out loss cannot improve, so patience 2 stops after the
    // third evaluation; embeddings and layer 0 frozen, continued from the checkpoint.
    let sets = [
        format!("init.checkpoint=\"{}\"", from.display()),
        "train.max_steps=40".into(),
        "train.lr=1e-30".into(),
        "train.eval_every=3".into(),
        "train.patience=2".into(),
        "train.freeze_embeddings=true".into(),
        "train.freeze_layers=1".into(),
        "train.layerwise_lr_decay=0.5".into(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let (code, stdout, err) = run_cli(&args(&cfg, &out, &sets));
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("stopped early"), "{stdout}");
    let store = CheckpointStore::new(out.join("checkpoints"));
    let latest = CheckpointStore::verify(&store.latest().unwrap()).unwrap();
    assert_eq!(latest.step, 9, "evaluations at 3, 6, 9; the last two no better");
    assert_eq!(store.best_record().unwrap().step, 3);
    assert_eq!(latest.init.as_deref(), Some(format!("checkpoint {}", from.display()).as_str()));
    let (before, after) = (weights(&from), weights(&ckpt(&out, 9)));
    for (name, t) in &before {
        let frozen = name.starts_with("bert.embeddings.") || name.starts_with("bert.encoder.layer.0.");
        if frozen {
            assert!(t.equal(&after[name]), "{name} is frozen but changed");
        }
    }
}

/// Keys one phase does not read are errors naming the key and why; fine-tuning validates
/// everything pre-training validates; an unknown task is a usage error, not a panic.
#[test]
fn every_key_takes_effect_or_is_an_error_in_both_phases() {
    let dir = tempfile::tempdir().unwrap();
    let ft = spam_config(dir.path());
    let pre = tiny_config(dir.path());
    let out = dir.path().join("x");
    for (cfg, set, key) in [
        (&ft, "objective.mask_prob=0.2", "objective"),
        (&ft, "data.eval_holdout_docs=3", "data.eval_holdout_docs"),
        (&ft, "train.lr=-1e-3", "train.lr"),
        (&ft, "train.log_every=0", "train.log_every"),
        (&ft, "task.kind=\"summarization\"", "task.kind"),
        (&pre, "train.epochs=2", "train.epochs"),
        (&pre, "task.labels=[\"a\"]", "task.kind"),
        (&pre, "train.log_every=0", "train.log_every"),
    ] {
        let (code, _, err) = run_cli(&args(cfg, &out, &[set]));
        assert_eq!(code, 2, "{set}: {err}");
        assert!(err.contains(key) && err.contains(cfg.file_name().unwrap().to_str().unwrap()), "{set}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // max_steps overrides the epochs, and the summary says which limit ended the run.
    let (code, stdout, err) = run_cli(&args(&ft, &out, &["train.epochs=8", "train.max_steps=5", "data.eval=[]"]));
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("max_steps reached") && stdout.contains("steps             5"), "{stdout}");
}

/// The non-finite policy guards fine-tuning as it guards pre-training: updates that blow up are
/// skipped and counted, the run fails after N in a row with the reason, and every checkpoint on
/// disk holds finite weights.
#[test]
fn a_fine_tuning_run_that_blows_up_stops_with_finite_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spam_config(dir.path());
    let out = dir.path().join("nan");
    let sets = ["train.lr=1e30", "train.warmup_ratio=0", "train.clip_grad_norm=0", "train.checkpoint_every=1", "train.max_nonfinite_in_a_row=3", "data.eval=[]"];
    let (code, _, err) = run_cli(&args(&cfg, &out, &sets));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("non-finite") && err.contains("3 such update(s) in a row"), "{err}");
    let store = CheckpointStore::new(out.join("checkpoints"));
    assert!(!store.steps().is_empty());
    for step in store.steps() {
        for (name, t) in weights(&ckpt(&out, step)) {
            assert!(bool::try_from(t.isfinite().all()).unwrap(), "{name} at step {step} is not finite");
        }
    }
}

/// `pretune check` resolves what a run would, without training: a summary line when all is
/// well, every problem at once (a port in use, an unwritable output folder) with exit 2.
#[test]
fn check_resolves_a_run_without_training() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spam_config(dir.path());
    let out = dir.path().join("never");
    let (code, stdout, err) = run_cli(&[vec!["check".to_string(), cfg.display().to_string()], vec!["--set".into(), format!("run.out_dir=\"{}\"", out.display())]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("ok: finetune run, 720 training / 180 held-out examples, 2 labels, 45 updates (45 per epoch)"), "{stdout}");
    // Texts longer than the config's max_seq_len are counted, a line each split.
    assert!(stdout.lines().any(|l| l.starts_with("# note: ") && l.contains(" of 720 training texts cut to ")), "{stdout}");
    assert!(!out.exists(), "a check creates nothing");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let sets = [format!("metrics.listen=\"127.0.0.1:{port}\""), format!("run.out_dir=\"{}\"", file.join("sub").display())];
    let mut a = vec!["check".to_string(), cfg.display().to_string()];
    for s in &sets {
        a.extend(["--set".to_string(), s.clone()]);
    }
    let (code, _, err) = run_cli(&a);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("metrics.listen") && err.contains("run.out_dir"), "{err}");
}
