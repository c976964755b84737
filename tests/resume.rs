//! Resilience: exact resume, kill -9, corrupted checkpoints, signals, failed writes,
//! non-finite updates.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pretune::actors::{run, RunError};
use pretune::checkpoint::CheckpointStore;

use pretune::rng::{Rng, Purpose};

use crate::util::{assert_same_weights, bin, load_plan, losses, root, tiny_config, wait_bounded, weights};

fn sets(pairs: &[&str]) -> Vec<String> {
    pairs.iter().map(|s| s.to_string()).collect()
}


fn out_step(store: &CheckpointStore, step: u64) -> PathBuf {
    store.latest().unwrap().parent().unwrap().join(CheckpointStore::dir_name(step))
}



/// Runs `pretune train` in its own process: libtorch's generator is process-global, and other
/// tests of this binary draw from it concurrently, so bit-exact comparisons need a process each.
fn train_process(cfg: &Path, sets: &[String], resume: Option<&Path>) -> String {
    let mut args: Vec<String> = vec!["train".into(), cfg.display().to_string()];
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    if let Some(r) = resume {
        args.push("--resume".into());
        args.push(r.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, err) = crate::util::run_cli(&args);
    assert_eq!(code, 0, "{err}");
    stdout
}

#[test]
fn resume_reproduces_the_losses_bit_for_bit_at_several_points_with_1_and_3_workers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let base = sets(&["train.max_steps=16", "train.checkpoint_every=4", "train.keep_last=0", "train.log_every=1", "train.grad_accum=2", "data.eval=[]"]);
    let full_out = dir.path().join("full");
    let mut o = base.clone();
    o.push(format!("run.out_dir={}", full_out.display()));
    train_process(&cfg, &o, None);
    let full = losses(&full_out);
    assert_eq!(full.len(), 16);

    for (at, workers) in [(4u64, 1usize), (8, 3), (12, 1), (12, 3)] {
        let out = dir.path().join(format!("resumed-{at}-{workers}"));
        let mut o = base.clone();
        o.push(format!("run.out_dir={}", out.display()));
        o.push(format!("pipeline.masker_workers={workers}"));
        let from = full_out.join("checkpoints").join(CheckpointStore::dir_name(at));
        let t0 = Instant::now();
        train_process(&cfg, &o, Some(&from));
        eprintln!("resume at step {at} with {workers} workers: {:.2} s for {} steps", t0.elapsed().as_secs_f64(), 16 - at);
        let got = losses(&out);
        let want: BTreeMap<u64, f64> = full.range(at + 1..).map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, want, "losses after resuming at {at} with {workers} workers");
        assert_same_weights(&full_out.join("checkpoints/step-00000016"), &out.join("checkpoints/step-00000016"));
        let state = CheckpointStore::verify(&out.join("checkpoints/step-00000016")).unwrap();
        let full_state = CheckpointStore::verify(&full_out.join("checkpoints/step-00000016")).unwrap();
        assert_eq!((state.tokens_seen, state.samples_seen, state.batches_seen, state.cursor), (full_state.tokens_seen, full_state.samples_seen, full_state.batches_seen, full_state.cursor));
    }
}

/// `pretune train` resuming automatically into `out`, 40 steps, a checkpoint every 2.
fn train_cmd(cfg: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(["train", cfg.to_str().unwrap(), "--resume", "auto", "--set", &format!("run.out_dir={}", out.display())])
        .args(["--set", "train.max_steps=40", "--set", "train.checkpoint_every=2", "--set", "train.log_every=1", "--set", "data.eval=[]"])
        .args(extra.iter().flat_map(|e| ["--set", e]));
    c
}

/// [`train_cmd`] spawned with its output discarded (a piped stream nobody drains would block
/// the run when full; [`crate::util::Drained`] is for the tests that read it).
fn spawn_train(cfg: &Path, out: &Path, extra: &[&str]) -> Child {
    train_cmd(cfg, out, extra).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}


#[test]
fn kill_9_at_random_points_then_resume_ends_with_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let reference = dir.path().join("reference");
    let mut c = spawn_train(&cfg, &reference, &[]);
    assert!(wait_bounded(&mut c, Duration::from_secs(120)).success());

    let out = dir.path().join("killed");
    let mut rng = Rng::keyed(2024, Purpose::Mask, &[]);
    let store = CheckpointStore::new(out.join("checkpoints"));
    let mut kills = 0;
    for round in 0..6 {
        // A random step past what is logged so far: the kill lands right after the log shows
        // it, while the next steps and checkpoint writes (every 2 steps) are under way.
        let target = losses(&out).keys().max().copied().unwrap_or(0) + 1 + rng.below(8);
        let mut child = spawn_train(&cfg, &out, &[]);
        crate::util::eventually(Duration::from_secs(120), format!("round {round}: step {target} or the run's end"), || {
            (losses(&out).keys().max().copied().unwrap_or(0) >= target || child.try_wait().unwrap().is_some()).then_some(())
        });
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap(); // SIGKILL, by PID
        child.wait().unwrap();
        kills += 1;
        if let Some(latest) = store.latest() {
            CheckpointStore::verify(&latest).unwrap_or_else(|e| panic!("round {round}: latest does not verify: {e}"));
        }
    }
    assert!(kills >= 2, "the run finished before it could be killed twice");
    let mut last = spawn_train(&cfg, &out, &[]);
    assert!(wait_bounded(&mut last, Duration::from_secs(120)).success());
    assert_same_weights(&reference.join("checkpoints/step-00000040"), &out.join("checkpoints/step-00000040"));
}

#[test]
fn a_corrupted_latest_falls_back_to_the_previous_one_and_an_explicit_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let out = dir.path().join("run");
    let mut c = spawn_train(&cfg, &out, &["train.max_steps=6"]);
    assert!(wait_bounded(&mut c, Duration::from_secs(120)).success());
    let bad = out.join("checkpoints/step-00000006");
    let model = bad.join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&model, &bytes).unwrap();

    let (status, _, err) = crate::util::Drained::spawn(&mut train_cmd(&cfg, &out, &["train.max_steps=8"])).output(Duration::from_secs(120));
    assert!(status.success(), "{err}");
    assert!(err.contains("step-00000006") && err.contains("sha256"), "no warning naming the bad checkpoint:\n{err}");
    assert!(err.contains("step=4"), "did not resume from step 4:\n{err}");
    assert_eq!(CheckpointStore::verify(&out.join("checkpoints/step-00000008")).unwrap().step, 8);

    // Truncated, and asked for by name: a clear error.
    let truncated = out.join("checkpoints/step-00000008/optimizer.safetensors");
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&truncated).unwrap().set_len(len / 3).unwrap();
    let o = Command::new(bin())
        .args(["train", cfg.to_str().unwrap(), "--resume", out.join("checkpoints/step-00000008").to_str().unwrap()])
        .args(["--set", &format!("run.out_dir={}", out.display()), "--set", "data.eval=[]"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot resume from") && err.contains("optimizer.safetensors"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child we spawned.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

fn wait_for_step(out: &Path, step: u64, limit: Duration) {
    crate::util::eventually(limit, format!("step {step}"), || losses(out).keys().any(|&s| s >= step).then_some(()));
}

#[test]
fn sigterm_finishes_the_step_checkpoints_and_exits_0_and_a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let out = dir.path().join("term");
    let mut child = spawn_train(&cfg, &out, &["train.max_steps=100000", "train.checkpoint_every=0"]);
    wait_for_step(&out, 5, Duration::from_secs(60));
    signal(child.id(), libc::SIGTERM);
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0));
    let store = CheckpointStore::new(out.join("checkpoints"));
    let latest = store.latest().expect("a checkpoint written on SIGTERM");
    let state = CheckpointStore::verify(&latest).unwrap();
    assert!(state.step >= 5, "{state:?}");
    let last_logged = losses(&out).keys().max().copied().unwrap();
    assert_eq!(state.step, last_logged, "the checkpoint is at the last finished step");

    let out2 = dir.path().join("twice");
    let mut child = spawn_train(&cfg, &out2, &["train.max_steps=100000", "train.checkpoint_every=0"]);
    wait_for_step(&out2, 2, Duration::from_secs(60));
    signal(child.id(), libc::SIGINT);
    signal(child.id(), libc::SIGTERM);
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "a second signal exits at once");
}

#[test]
fn a_failed_checkpoint_write_stops_the_run_and_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let out = dir.path().join("run");
    let mut c = spawn_train(&cfg, &out, &["train.max_steps=4"]);
    assert!(wait_bounded(&mut c, Duration::from_secs(120)).success());
    let store = CheckpointStore::new(out.join("checkpoints"));
    let before = store.latest().unwrap();
    assert!(before.ends_with("step-00000004"));

    // Resume with a 64 KiB file-size limit: writing model.safetensors fails with EFBIG, a real
    // write error like a full disk (SIGXFSZ ignored so write(2) reports it instead of killing).
    let mut cmd = Command::new(bin());
    cmd.args(["train", cfg.to_str().unwrap(), "--resume", "auto", "--set", &format!("run.out_dir={}", out.display())])
        .args(["--set", "train.max_steps=8", "--set", "train.checkpoint_every=2", "--set", "data.eval=[]"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 64 * 1024, rlim_max: 64 * 1024 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the checkpointer failed") && err.contains("model.safetensors"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(store.latest().unwrap(), before, "latest still points at the previous checkpoint");
    CheckpointStore::verify(&before).unwrap();
    let leftovers: Vec<PathBuf> = std::fs::read_dir(out.join("checkpoints")).unwrap().flatten().map(|e| e.path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-00000006")).collect();
    assert!(leftovers.is_empty(), "no half-written checkpoint under a real name: {leftovers:?}");
    let partial: Vec<PathBuf> = std::fs::read_dir(out.join("checkpoints")).unwrap().flatten().map(|e| e.path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp-")).collect();
    assert!(partial.is_empty(), "the failed write's partial folder is removed at once: {partial:?}");
}

#[test]
fn non_finite_updates_are_skipped_counted_and_abort_after_n_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let blow_up = ["train.lr=1e30", "train.warmup_steps=0", "train.clip_grad_norm=0", "train.checkpoint_every=1", "data.eval=[]"];

    let mut o = sets(&blow_up);
    o.extend(sets(&["train.nonfinite=\"skip\"", "train.max_nonfinite_in_a_row=3"]));
    o.push(format!("run.out_dir={}", dir.path().join("skip").display()));
    let failed_at: u64 = match run(load_plan(&cfg, &o)) {
        Err(RunError::Stage { stage: "trainer", source }) => {
            let msg = source.to_string();
            assert!(msg.contains("non-finite") && msg.contains("3 such update(s) in a row"), "{msg}");
            msg.split("at step ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap()
        }
        other => panic!("expected a trainer failure, got {other:?}"),
    };
    // Every checkpoint predates the failing update (skipped updates never reach the weights)
    // and holds finite weights.
    let store = CheckpointStore::new(dir.path().join("skip/checkpoints"));
    assert_eq!(store.steps().into_iter().max(), Some(failed_at - 1));
    for step in store.steps() {
        for (name, t) in weights(&out_step(&store, step)) {
            assert!(bool::try_from(t.isfinite().all()).unwrap(), "{name} at step {step} is not finite");
        }
    }

    let mut o = sets(&blow_up);
    o.push("train.nonfinite=\"abort\"".into());
    o.push(format!("run.out_dir={}", dir.path().join("abort").display()));
    match run(load_plan(&cfg, &o)) {
        Err(RunError::Stage { stage: "trainer", source }) => assert!(source.to_string().contains("1 such update(s)"), "{source}"),
        other => panic!("expected a trainer failure, got {other:?}"),
    }
}

#[test]
fn retention_keeps_the_last_k_and_the_best_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let out = dir.path().join("best");
    let mut o = sets(&["train.max_steps=12", "train.checkpoint_every=3", "train.eval_every=3", "train.keep_last=1", "train.lr=2e-2"]);
    o.push(format!("run.out_dir={}", out.display()));
    run(load_plan(&cfg, &o)).unwrap();
    let evals: Vec<(u64, f64)> = crate::util::evals(&out).into_iter().filter_map(|(step, m)| Some((step, m.get("mlm_loss")?))).collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 6, 9, 12]);
    let best_step = evals.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
    let store = CheckpointStore::new(out.join("checkpoints"));
    assert_eq!(store.best().unwrap(), out.join("checkpoints").join(CheckpointStore::dir_name(best_step)));
    let mut kept = store.steps();
    kept.sort();
    let mut want = vec![best_step, 12];
    want.dedup();
    assert_eq!(kept, want, "evals {evals:?}");
    let record = store.best_record().unwrap();
    assert_eq!(record.step, best_step);
    assert_eq!(record.score, evals.iter().find(|e| e.0 == best_step).unwrap().1);
}

/// A second run into a live run's folder (a re-submit, a `--resume auto` while the first
/// still runs) is refused before it touches anything, naming the first run's pid; the first
/// runs on to its end with a log of its own records only; after a `kill -9` the folder is free
/// at once (the kernel drops the lock with the process).
#[test]
fn one_run_per_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let out = dir.path().join("out");
    let mut first = crate::util::KillOnDrop(spawn_train(&cfg, &out, &["train.max_steps=20"]));
    wait_for_step(&out, 2, Duration::from_secs(120));
    let (status, _, err) = crate::util::Drained::spawn(&mut train_cmd(&cfg, &out, &[])).output(Duration::from_secs(120));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("is in use by pid {}", first.0.id())), "{err}");
    assert!(wait_bounded(&mut first.0, Duration::from_secs(120)).success());
    let steps: Vec<u64> = crate::util::steps(&out).iter().map(|s| s.step).collect();
    assert_eq!(steps, (1..=20).collect::<Vec<_>>(), "one run's records, once each");
    CheckpointStore::verify(&out.join("checkpoints/step-00000020")).unwrap();

    let again = dir.path().join("again");
    let mut killed = spawn_train(&cfg, &again, &["train.max_steps=400"]);
    wait_for_step(&again, 1, Duration::from_secs(120));
    killed.kill().unwrap();
    killed.wait().unwrap();
    let (status, _, err) = crate::util::Drained::spawn(&mut train_cmd(&cfg, &again, &["train.max_steps=3"])).output(Duration::from_secs(120));
    assert!(status.success(), "the lock died with its process: {err}");
}

/// A checkpoint carries its tokenizer: the copy and its hash are in the checkpoint; a resume
/// or a fine-tuning start with another tokenizer (here: the same file with one token renamed,
/// so the same size) is refused naming both hashes unless `tokenizer.allow_mismatch`; export
/// and predict use the checkpoint's copy even after the configured file changed.
#[test]
fn checkpoints_are_tied_to_their_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tokenizer.json");
    let original = std::fs::read_to_string(root().join("data/sotu/tokenizer.json")).unwrap();
    std::fs::write(&tok, &original).unwrap();
    let cfg = tiny_config(dir.path());
    let text = std::fs::read_to_string(&cfg).unwrap().replace(&format!("{}/data/sotu/tokenizer.json", root().display()), tok.to_str().unwrap());
    std::fs::write(&cfg, text).unwrap();
    let out = dir.path().join("run");
    let mut c = spawn_train(&cfg, &out, &["train.max_steps=4"]);
    assert!(wait_bounded(&mut c, Duration::from_secs(120)).success());
    let ck = out.join("checkpoints/step-00000004");
    let state = CheckpointStore::verify(&ck).unwrap();
    assert!(state.files.contains_key("tokenizer.json") && state.tokenizer_sha256.is_some());
    assert_eq!(std::fs::read_to_string(ck.join("tokenizer.json")).unwrap().len(), pretune::data::tokenize::TextTokenizer::load(&tok, None).unwrap().serialized().len());

    // The configured file changes under the run: one token renamed ("\"the\":" -> "\"thx\":").
    assert!(original.contains("\"the\":"));
    std::fs::write(&tok, original.replacen("\"the\":", "\"thx\":", 1)).unwrap();
    let (status, _, err) = crate::util::Drained::spawn(&mut train_cmd(&cfg, &out, &["train.max_steps=6"])).output(Duration::from_secs(120));
    assert_eq!(status.code(), Some(1), "{err}");
    let recorded = state.tokenizer_sha256.clone().unwrap();
    assert!(err.contains("does not fit this config") && err.contains(&recorded) && err.contains("tokenizer.allow_mismatch"), "{err}");
    let (status, _, err) = crate::util::Drained::spawn(&mut train_cmd(&cfg, &out, &["train.max_steps=6", "tokenizer.allow_mismatch=true"])).output(Duration::from_secs(120));
    assert!(status.success(), "{err}");

    // Fine-tuning from it with the changed file is refused at resolve time; its own copy works.
    let spam = root().join("data/spam");
    let ft = crate::util::ft_config(dir.path(), "sequence_classification", spam.join("train.jsonl").to_str().unwrap(), spam.join("dev.jsonl").to_str().unwrap(), "");
    let text = std::fs::read_to_string(&ft).unwrap();
    let (head, tail) = text.split_once("[model]").unwrap();
    let text = format!("{head}[init]\ncheckpoint = \"{}\"\n{}", ck.display(), &tail[tail.find("[train]").unwrap()..]).replace(&format!("{}/data/sotu/tokenizer.json", root().display()), tok.to_str().unwrap());
    std::fs::write(&ft, &text).unwrap();
    let e = pretune::plan::load_and_resolve(&ft, &[]).err().unwrap().to_string();
    assert!(e.contains("tokenizer.path:") && e.contains(&recorded), "{e}");
    let own = format!("tokenizer.path=\"{}\"", ck.join("tokenizer.json").display());
    pretune::plan::load_and_resolve(&ft, &[own]).unwrap();

    // Export ships the checkpoint's own copy, not the changed file.
    let hf = dir.path().join("hf");
    let (code, _, err) = crate::util::run_cli(&["export", "--hf", hf.to_str().unwrap(), "--checkpoint", ck.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let exported = std::fs::read_to_string(hf.join("tokenizer.json")).unwrap();
    assert!(exported.contains("\"the\":") && !exported.contains("\"thx\":"));
}
