//! Data parallelism over c10d Gloo: 2 ranks on loopback, each its own `pretune` process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use pretune::actors::control::StopFlag;
use pretune::actors::loader::Loader;
use pretune::checkpoint::CheckpointStore;

use crate::util::{bin, free_port, root, run_cli, tiny_config, weights};

/// The tiny config without dropout (each rank draws its own masks: an exact comparison with one
/// process needs none), logging every step, a constant rate.
fn sets(batch: usize, steps: u64) -> Vec<String> {
    [
        format!("train.batch_size={batch}"),
        format!("train.max_steps={steps}"),
        "train.log_every=1".into(),
        "train.checkpoint_every=3".into(),
        "train.decay=\"constant\"".into(),
        "train.warmup_steps=1".into(),
        "model.hidden_dropout=0.0".into(),
        "model.attention_dropout=0.0".into(),
        "pipeline.masker_workers=1".into(),
        "dist.timeout_s=60".into(),
    ]
    .into_iter()
    .collect()
}

fn with_sets(mut args: Vec<String>, sets: &[String]) -> Vec<String> {
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    args
}

fn latest(run: &Path) -> PathBuf {
    CheckpointStore::new(run.join("checkpoints")).latest().expect("a checkpoint")
}

/// `step -> (loss, tokens)` of a run's events.
/// `step -> (loss, tokens)` of a run folder's logged steps.
fn steps(out: &Path) -> BTreeMap<u64, (f64, u64)> {
    crate::util::steps(out).into_iter().map(|s| (s.step, (s.loss, s.tokens))).collect()
}

#[test]
fn two_ranks_from_one_launcher_or_two_nodes_end_with_the_weights_of_one_process_with_twice_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let two = dir.path().join("two");
    let one = dir.path().join("one");
    let mut s2 = sets(8, 6);
    s2.push(format!("run.out_dir=\"{}\"", two.display()));
    let (code, _, err) = run_cli(&with_sets(vec!["launch".into(), "--nproc".into(), "2".into(), cfg.display().to_string()], &s2));
    assert_eq!(code, 0, "{err}");
    let mut s1 = sets(16, 6);
    s1.push(format!("run.out_dir=\"{}\"", one.display()));
    let (code, _, err) = run_cli(&with_sets(vec!["train".into(), cfg.display().to_string()], &s1));
    assert_eq!(code, 0, "{err}");

    let (a, b) = (latest(&two), latest(&one));
    assert!(a.ends_with("step-00000006") && b.ends_with("step-00000006"), "{} {}", a.display(), b.display());
    let (wa, wb) = (weights(&a), weights(&b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    let mut worst = (0.0f64, String::new());
    for (k, t) in &wa {
        let d = (t - &wb[k]).abs().max().double_value(&[]);
        if d > worst.0 {
            worst = (d, k.clone());
        }
    }
    assert!(worst.0 < 1e-6, "largest difference {} in {}", worst.0, worst.1);
    // A real run, not two copies of nothing: the weights moved.
    let init_gap = weights(&two.join("checkpoints/step-00000003")).iter().map(|(k, t)| (t - &wa[k]).abs().max().double_value(&[])).fold(0.0, f64::max);
    assert!(init_gap > 1e-4, "weights did not change between steps 3 and 6");

    // The logged loss and token counts are global: the same as one process's.
    let (e2, e1) = (steps(&two), steps(&one));
    for step in 1..=6 {
        let ((l2, t2), (l1, t1)) = (e2[&step], e1[&step]);
        assert!((l2 - l1).abs() < 1e-4, "step {step}: loss {l2} vs {l1}");
        assert_eq!(t2, t1, "step {step}: tokens");
    }
    // Only rank 0 writes checkpoints; rank 1 keeps its own log.
    assert!(two.join("ranks/rank-1/events.jsonl").exists());
    assert!(!two.join("ranks/rank-1/checkpoints").exists());
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["world_size"], 2);

    // Two launchers as two nodes of one rank each (each with its own output folder, as on two
    // machines), meeting over loopback: the same weights again.
    let port = free_port().to_string();
    let metrics = free_port();
    let nodes: Vec<_> = (0..2)
        .map(|node| {
            // Two micro-batches of 4 per rank and update (the reducer reduces during the second
            // one's backward only, like DDP's no_sync), and DDP's other mode: fixed buckets in
            // reverse parameter order and a walk of the autograd graph each update (for heads
            // the loss does not use). The same sums.
            let mut s = sets(4, 6);
            s.push(format!("run.out_dir=\"{}\"", dir.path().join(format!("node{node}")).display()));
            s.extend(["train.grad_accum=2".into(), "dist.find_unused_parameters=true".into(), "dist.bucket_mb=0.05".into()]);
            if node == 1 {
                // Node 1's only rank is local rank 0 and global rank 1: it serves on the base
                // port, labelled rank 1, and stays up until the check below has read it.
                s.extend([format!("metrics.listen=\"127.0.0.1:{metrics}\""), "metrics.linger_s=120".into()]);
            }
            let args = with_sets(
                ["launch", "--nnodes", "2", "--node-rank", &node.to_string(), "--nproc", "1", "--master-addr", "127.0.0.1", "--master-port", &port, &cfg.display().to_string()].map(String::from).to_vec(),
                &s,
            );
            Command::new(bin()).args(&args).current_dir(root()).process_group(0).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let mut nodes = nodes.into_iter();
    let (node0, mut node1) = (nodes.next().unwrap(), nodes.next().unwrap());
    let out = wait_with_timeout(node0, Duration::from_secs(120));
    assert!(out.status.success(), "node 0: {}", String::from_utf8_lossy(&out.stderr));
    let served = |b: &str| crate::util::metric_value(b, "pretune_steps_total", &[("rank", "1")]) == Some(6.0);
    let body = crate::util::eventually(Duration::from_secs(30), "node 1's metrics on the base port show its 6 steps", || crate::util::http_get(metrics, "/metrics").filter(|b| served(b)));
    // SAFETY: signals the process group this test created (the launcher and its rank).
    unsafe { libc::kill(-(node1.id() as i32), libc::SIGKILL) };
    let _ = node1.wait();
    assert!(served(&body), "node 1's metrics on the base port: {body}");
    let (node0, node1) = (dir.path().join("node0"), dir.path().join("node1"));
    let wn = weights(&latest(&node0));
    let worst = wn.iter().map(|(k, t)| (t - &wb[k]).abs().max().double_value(&[])).fold(0.0, f64::max);
    assert!(worst < 1e-6, "two nodes vs one process: largest difference {worst}");
    // Global rank 1 lives on node 1: it logs there and writes no checkpoint.
    assert!(node1.join("ranks/rank-1/events.jsonl").exists() && !node1.join("checkpoints").exists());
}

/// libtorch's DDP reducer overlaps communication with the backward pass: after the first
/// update (one bucket, reduced at the end, as DDP starts) the buckets are rebuilt in the order
/// gradients become ready, and from then on the first buckets' all-reduces are launched, and
/// some complete, while later gradients are still being computed.
#[test]
fn the_reducer_launches_all_reduces_before_the_backward_pass_ends() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let run = dir.path().join("run");
    let mut s = sets(8, 6);
    s.extend(["dist.bucket_mb=0.05".to_string(), format!("run.out_dir=\"{}\"", run.display())]);
    let (code, _, err) = run_cli(&with_sets(vec!["launch".into(), "--nproc".into(), "2".into(), cfg.display().to_string()], &s));
    assert_eq!(code, 0, "{err}");
    let events: Vec<pretune::actors::events::BucketReport> = crate::util::steps(&run).into_iter().filter_map(|s| s.buckets).collect();
    assert_eq!(events.len(), 6, "every logged step reports its buckets");
    assert_eq!(events[0].launched_ms.len(), 1, "the first update reduces one bucket");
    let mut overlapped = 0;
    for e in &events[1..] {
        let (launched, done) = (e.launched_ms.clone(), e.done_ms.clone());
        assert!(launched.len() >= 3, "rebuilt buckets of 0.05 MiB: {e:?}");
        assert!(launched.iter().chain(&done).all(|t| t.is_finite() && *t <= 0.0), "every bucket launched and done before the backward returned: {e:?}");
        let last_ready = launched.iter().copied().fold(f64::MIN, f64::max);
        assert!(launched[0] < last_ready, "bucket 0 launched while gradients were still being computed: {e:?}");
        overlapped += usize::from(done.iter().any(|&d| d < last_ready));
    }
    assert!(overlapped > 0, "no bucket's all-reduce completed before the last gradient was ready: {events:?}");
}

/// The real Loader with a shard: each rank's batches are its slice of the global batch, so the
/// ranks' examples are disjoint and together are exactly one process's with the global batch.
#[test]
fn the_ranks_read_disjoint_shards_that_cover_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let plan = pretune::plan::load_and_resolve(&cfg, &["train.batch_size=4".into()]).unwrap();
    let batches = |shard: Option<(usize, usize)>, batch_size: usize| -> Vec<BTreeSet<u64>> {
        let (tx, rx) = crossbeam_channel::bounded(64);
        let loader = Loader {
            stream: plan.train_source(Default::default()),
            batch_size,
            first_seq: 0,
            tx,
            queue: pretune::actors::queue::QueueGauge::new("test", 64),
            stop: StopFlag::new(),
            events: std::sync::Arc::new(|_| {}),
            phase: pretune::workload::Phase::Pretrain,
            shard,
        };
        let h = std::thread::spawn(move || loader.run());
        let out: Vec<BTreeSet<u64>> = rx.iter().take(40).map(|b| b.examples.iter().map(|e| e.index).collect()).collect();
        drop(rx);
        h.join().unwrap();
        out
    };
    let whole = batches(None, 8);
    let (r0, r1) = (batches(Some((0, 2)), 4), batches(Some((1, 2)), 4));
    assert_eq!(whole.len(), 40);
    let mut seen = BTreeSet::new();
    for i in 0..40 {
        assert_eq!((r0[i].len(), r1[i].len()), (4, 4), "batch {i}");
        assert!(r0[i].is_disjoint(&r1[i]), "batch {i} overlaps");
        let union: BTreeSet<u64> = r0[i].union(&r1[i]).copied().collect();
        assert_eq!(union, whole[i], "batch {i}: the ranks' union is the global batch");
        assert!(union.iter().all(|x| seen.insert(*x)), "an example came twice");
    }
    // Consecutive: nothing dropped.
    assert_eq!(seen.iter().copied().collect::<Vec<_>>(), (0..320).collect::<Vec<_>>());
}

#[test]
fn killing_one_rank_ends_the_other_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let run = dir.path().join("run");
    let port = free_port().to_string();
    // Rank r serves its metrics on metrics + r.
    let metrics = crate::util::free_port_block(2);
    let mut args = with_sets(vec!["train".into(), cfg.display().to_string()], &sets(8, 100_000));
    for s in ["train.checkpoint_every=0".to_string(), format!("metrics.listen=\"127.0.0.1:{metrics}\"")] {
        args.push("--set".into());
        args.push(s);
    }
    let spawn = |rank: &str| {
        let child = Command::new(bin())
            .args(&args)
            .current_dir(root())
            .env("RANK", rank)
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        crate::util::Drained::adopt(child)
    };
    let mut rank0 = spawn("0");
    let mut rank1 = spawn("1");
    // A rank that ends before the group trained, or a group that does not train in time, fails
    // with both ranks' own words (and leaves no rank behind).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let problem = crate::util::eventually(Duration::from_secs(130), "the ranks trained 3 steps or failed", || {
        if steps_logged(&run) >= 3 {
            return Some(None);
        }
        if let Some(rank) = [&mut rank0, &mut rank1].iter_mut().position(|r| r.child.try_wait().ok().flatten().is_some()) {
            return Some(Some(format!("rank {rank} ended before the group trained 3 steps")));
        }
        (std::time::Instant::now() > deadline).then(|| Some("the ranks did not train 3 steps within 120 s".to_owned()))
    });
    if let Some(problem) = problem {
        let _ = (rank0.child.kill(), rank1.child.kill());
        let (e0, e1) = (rank0.output(Duration::from_secs(30)).2, rank1.output(Duration::from_secs(30)).2);
        panic!("{problem}\nrank 0: {e0}\nrank 1: {e1}");
    }
    // Each rank serves its metrics on the base port + its rank, labelled with it.
    for rank in 0..2u16 {
        let body = crate::util::http_get(metrics + rank, "/metrics").unwrap_or_default();
        assert!(body.contains(&format!("rank=\"{rank}\"")) && body.contains("pretune_steps_total"), "rank {rank}: {body}");
    }
    rank1.child.kill().unwrap();
    let (status, _, err) = rank0.output(Duration::from_secs(90));
    assert!(!status.success(), "rank 0 should fail: {err}");
    assert!(err.contains("rank 0 of 2") && err.contains("failed"), "unclear error: {err}");
    let _ = rank1.output(Duration::from_secs(30));
}

fn steps_logged(out: &Path) -> usize {
    crate::util::steps(out).len()
}

/// Waits at most `limit` for `child`, draining its piped streams meanwhile (a rank blocked
/// on a full stderr pipe would never finish).
fn wait_with_timeout(child: std::process::Child, limit: Duration) -> std::process::Output {
    let (status, stdout, stderr) = crate::util::Drained::adopt(child).output(limit);
    std::process::Output { status, stdout: stdout.into_bytes(), stderr: stderr.into_bytes() }
}

/// `pretune launch --nproc N` (N > 1) or `pretune train` (N = 1) of the tiny config at
/// `batch` per rank, into `out`; `extra` after the shared settings. Returns stderr.
fn run_ranks(cfg: &Path, out: &Path, nproc: usize, batch: usize, steps: u64, resume: bool, extra: &[&str]) -> String {
    let mut s = sets(batch, steps);
    s.push(format!("run.out_dir=\"{}\"", out.display()));
    s.extend(extra.iter().map(|x| x.to_string()));
    let head = if nproc > 1 { vec!["launch".into(), "--nproc".into(), nproc.to_string(), cfg.display().to_string()] } else { vec!["train".into(), cfg.display().to_string()] };
    let mut args = with_sets(head, &s);
    if resume {
        args.extend(["--resume".into(), "auto".into()]);
    }
    let (code, _, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    err
}

#[test]
fn a_two_rank_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let straight = dir.path().join("straight");
    run_ranks(&cfg, &straight, 2, 8, 6, false, &[]);
    let resumed = dir.path().join("resumed");
    run_ranks(&cfg, &resumed, 2, 8, 3, false, &[]);
    run_ranks(&cfg, &resumed, 2, 8, 6, true, &[]);
    let (a, b) = (weights(&latest(&straight)), weights(&latest(&resumed)));
    for (k, t) in &a {
        assert!(t.equal(&b[k]), "{k} differs after the resume");
    }
    let (ea, eb) = (steps(&straight), steps(&resumed));
    for step in 4..=6 {
        assert_eq!(ea[&step], eb[&step], "step {step}");
    }

    // Rank 1 dies by SIGKILL right after update 4 (the failpoint fires in the first start
    // only); `--max-restarts 1` brings the group back from step 3's checkpoint, and the run
    // ends with the uninterrupted run's weights, bit for bit. The port is fixed, as on several
    // machines: the restarted store binds it again.
    let restarted = dir.path().join("restarted");
    let mut s = sets(8, 6);
    s.push(format!("run.out_dir=\"{}\"", restarted.display()));
    let port = free_port().to_string();
    let args = with_sets(vec!["launch".into(), "--max-restarts".into(), "1".into(), "--master-port".into(), port, "--nproc".into(), "2".into(), cfg.display().to_string()], &s);
    let (code, _, err) = crate::util::run_cli_env(&args, &[("PRETUNE_FAILPOINT", Some("trainer.step=4 rank=1 attempt=0"))]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("restarting every rank from the last checkpoint"), "{err}");
    let c = weights(&latest(&restarted));
    for (k, t) in &a {
        assert!(t.equal(&c[k]), "{k} differs after the restart");
    }
    let restarts: Vec<(u32, u64)> = crate::util::records(&restarted)
        .into_iter()
        .filter_map(|r| match r {
            pretune::actors::events::Record::Restarted { restart, step, .. } => Some((restart, step)),
            _ => None,
        })
        .collect();
    assert_eq!(restarts, vec![(1, 3)], "one restart, from step 3's checkpoint");
}

/// The global ranks of a run's `pretune train` processes: the launcher's children.
fn ranks_of(launcher: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(launcher) {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` still runs (a zombie waiting for its reaper does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().chars().next())).flatten().is_some_and(|c| c != 'Z' && c != 'X')
}

fn restart_records(out: &Path) -> usize {
    crate::util::records(out).iter().filter(|r| matches!(r, pretune::actors::events::Record::Restarted { .. })).count()
}

/// A rank that fails at its first step at every start: after `--max-restarts 2` the launcher
/// gives up with the rank's error, and rank 0's log holds the two restarts.
#[test]
fn a_rank_that_keeps_failing_stops_the_run_after_the_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let run = dir.path().join("run");
    let mut s = sets(8, 6);
    s.extend([format!("run.out_dir=\"{}\"", run.display()), "dist.timeout_s=20".into()]);
    let args = with_sets(vec!["launch".into(), "--max-restarts".into(), "2".into(), "--nproc".into(), "2".into(), cfg.display().to_string()], &s);
    let (code, _, err) = crate::util::run_cli_env(&args, &[("PRETUNE_FAILPOINT", Some("trainer.step=1 rank=1"))]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("giving up") && err.contains("after 2 restart(s)"), "{err}");
    assert!(err.contains("failed"), "the rank's own error is shown: {err}");
    assert_eq!(restart_records(&run), 2);
    assert!(CheckpointStore::new(run.join("checkpoints")).latest().is_none(), "no step was ever checkpointed");
}

/// SIGSTOP of rank 1: rank 0's next collective times out after `dist.timeout_s`, the launcher
/// names the stopped rank, stops it and (with `--max-restarts 1`) brings the group back, which
/// trains on until the launcher is asked to stop.
#[test]
fn a_stopped_rank_is_named_and_the_group_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let run = dir.path().join("run");
    let mut s = sets(8, 100_000);
    let metrics = crate::util::free_port_block(2);
    s.extend([format!("run.out_dir=\"{}\"", run.display()), "dist.timeout_s=8".into(), "train.checkpoint_every=2".into(), format!("metrics.listen=\"127.0.0.1:{metrics}\"")]);
    let args = with_sets(vec!["launch".into(), "--max-restarts".into(), "1".into(), "--nproc".into(), "2".into(), cfg.display().to_string()], &s);
    let launcher = Command::new(bin()).args(&args).current_dir(root()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let launcher_pid = launcher.id();
    let launcher = crate::util::Drained::adopt(launcher);
    crate::util::eventually(Duration::from_secs(120), "the ranks trained 3 steps", || (steps_logged(&run) >= 3).then_some(()));
    let rank1 = crate::util::eventually(Duration::from_secs(10), "rank 1's process", || {
        ranks_of(launcher_pid).into_iter().find(|&pid| std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| e.split(|&b| b == 0).any(|v| v == b"RANK=1")))
    });
    // SAFETY: a process this test's launcher started.
    unsafe { libc::kill(rank1 as i32, libc::SIGSTOP) };
    let before = steps(&run).keys().last().copied().unwrap();
    crate::util::eventually(Duration::from_secs(90), "the restarted group trained past the stop", || (restart_records(&run) == 1 && steps(&run).keys().last().copied().unwrap_or(0) > before + 1).then_some(()));
    // The restart is a series on every rank's scrape.
    for rank in 0..2u16 {
        crate::util::eventually(Duration::from_secs(30), format!("rank {rank}'s pretune_restarts_total is 1"), || (crate::util::scrape(metrics + rank, "pretune_restarts_total", &[("rank", &rank.to_string())]) == Some(1.0)).then_some(()));
    }
    // SAFETY: the launcher this test spawned.
    unsafe { libc::kill(launcher_pid as i32, libc::SIGTERM) };
    let (status, _, err) = launcher.output(Duration::from_secs(90));
    assert!(status.success(), "{err}");
    assert!(err.contains("rank(s) 1 were stopped"), "the stuck rank is named: {err}");
    assert!(err.contains("rank 0 of 2") && err.contains("failed"), "rank 0's collective failed: {err}");
}

/// `kill -9` of the launcher: its ranks get SIGTERM from the kernel (a parent-death signal),
/// stop at the same step with a checkpoint and exit, leaving no orphans; `--resume auto`
/// continues from there.
#[test]
fn killing_the_launcher_leaves_no_orphan_ranks_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let run = dir.path().join("run");
    let mut s = sets(8, 100_000);
    s.extend([format!("run.out_dir=\"{}\"", run.display()), "train.checkpoint_every=0".into()]);
    let args = with_sets(vec!["launch".into(), "--nproc".into(), "2".into(), cfg.display().to_string()], &s);
    let mut launcher = Command::new(bin()).args(&args).current_dir(root()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    crate::util::eventually(Duration::from_secs(120), "the ranks trained 3 steps", || (steps_logged(&run) >= 3).then_some(()));
    let ranks = ranks_of(launcher.id());
    assert_eq!(ranks.len(), 2, "two ranks under the launcher");
    launcher.kill().unwrap();
    let _ = launcher.wait();
    crate::util::eventually(Duration::from_secs(60), "the ranks exited with their launcher", || ranks.iter().all(|&p| !alive(p)).then_some(()));
    let stopped_at = *steps(&run).keys().last().unwrap();
    assert!(latest(&run).ends_with(format!("step-{stopped_at:08}")), "a checkpoint at the stop: {}", latest(&run).display());
    let mut s = sets(8, stopped_at + 2);
    s.push(format!("run.out_dir=\"{}\"", run.display()));
    let mut args = with_sets(vec!["launch".into(), "--nproc".into(), "2".into(), cfg.display().to_string()], &s);
    args.extend(["--resume".into(), "auto".into()]);
    let (code, _, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    assert!(latest(&run).ends_with(format!("step-{:08}", stopped_at + 2)), "{}", latest(&run).display());
}

/// A checkpoint of 2 ranks × 8 continues on one process as 1 × 16, and one of 1 × 16 on two
/// ranks as 2 × 8 (the global micro-batch kept, the config's batch_size re-split and said so):
/// the steps after the resume equal an uninterrupted run's at the new world size, token for
/// token, and the loss within 1e-5 (the sums over ranks are added in another order). A global
/// batch that does not split over the new ranks is refused, naming the keys.
#[test]
fn a_checkpoint_resumes_on_another_world_size_at_the_same_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let (two, one) = (dir.path().join("two"), dir.path().join("one"));
    run_ranks(&cfg, &two, 2, 8, 6, false, &[]);
    run_ranks(&cfg, &one, 1, 16, 6, false, &[]);
    let close = |reference: &Path, resumed: &Path, what: &str| {
        let (ea, eb) = (steps(reference), steps(resumed));
        for step in 4..=6 {
            let ((la, ta), (lb, tb)) = (ea[&step], eb[&step]);
            assert_eq!(ta, tb, "{what}: step {step} trained on other tokens");
            assert!((la - lb).abs() < 1e-5, "{what}: step {step}: loss {la} vs {lb}");
        }
        let (wa, wb) = (weights(&latest(reference)), weights(&latest(resumed)));
        let worst = wa.iter().map(|(k, t)| (t - &wb[k]).abs().max().double_value(&[])).fold(0.0, f64::max);
        assert!(worst < 1e-5, "{what}: weights differ by {worst}");
    };

    let down = dir.path().join("down");
    run_ranks(&cfg, &down, 2, 8, 3, false, &[]);
    let err = run_ranks(&cfg, &down, 1, 8, 6, true, &[]);
    assert!(err.contains("resuming a 2-rank run on 1 rank(s) at its global batch of 16") && err.contains("-> 1 rank(s) × batch_size 16 × grad_accum 1"), "{err}");
    let config = std::fs::read_to_string(down.join("config.toml")).unwrap();
    assert!(config.contains("batch_size = 16"), "config.toml keeps the batch really used: {config}");
    close(&one, &down, "2 ranks -> 1");

    let up = dir.path().join("up");
    run_ranks(&cfg, &up, 1, 16, 3, false, &[]);
    run_ranks(&cfg, &up, 2, 16, 6, true, &[]);
    close(&two, &up, "1 rank -> 2");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(latest(&up).join("state.json")).unwrap()).unwrap();
    assert_eq!((state["world_size"].as_u64(), state["config"]["train"]["batch_size"].as_u64()), (Some(2), Some(8)));

    // 1 × 5 cannot be split over two ranks.
    let odd = dir.path().join("odd");
    run_ranks(&cfg, &odd, 1, 5, 1, false, &["train.checkpoint_every=1"]);
    let mut s = sets(5, 2);
    s.push(format!("run.out_dir=\"{}\"", odd.display()));
    let mut args = with_sets(vec!["launch".into(), "--nproc".into(), "2".into(), cfg.display().to_string()], &s);
    args.extend(["--resume".into(), "auto".into()]);
    let (code, _, err) = run_cli(&args);
    assert_ne!(code, 0);
    assert!(err.contains("global batch of 5") && err.contains("train.grad_accum"), "{err}");
}

/// SIGTERM to the launcher reaches every rank once; the ranks agree to stop after the same
/// step, rank 0 writes the final checkpoint, and everything exits 0.
#[test]
fn a_signal_to_the_launcher_stops_every_rank_at_the_same_step_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let run = dir.path().join("run");
    let mut args = with_sets(vec!["launch".into(), "--nproc".into(), "2".into(), cfg.display().to_string()], &sets(8, 100_000));
    args.extend(["--set".into(), "train.checkpoint_every=0".into()]);
    let launcher = Command::new(bin()).args(&args).current_dir(root()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    crate::util::eventually(Duration::from_secs(120), "the ranks trained 3 steps", || (steps_logged(&run) >= 3).then_some(()));
    // SAFETY: a pid we spawned.
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    let out = wait_with_timeout(launcher, Duration::from_secs(90));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let last = |out: &Path| *steps(out).keys().last().unwrap();
    let (s0, s1) = (last(&run), last(&run.join("ranks/rank-1")));
    assert_eq!(s0, s1, "the ranks stopped after different steps");
    assert!(latest(&run).ends_with(format!("step-{s0:08}")), "{}", latest(&run).display());
}

/// Two network namespaces joined by a veth pair, each with its own address: two machines as
/// far as the ranks can tell (their loopbacks are separate; the only path between them is the
/// veth link). Removed on drop. `None` with the reason where namespaces cannot be made (not
/// root, no `ip`).
struct TwoHosts {
    names: [String; 2],
    addrs: [String; 2],
    ifname: [String; 2],
}

impl TwoHosts {
    fn ip(args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip`: {e} (install iproute2)"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    fn create(rate: Option<&str>) -> Result<Self, String> {
        let id = std::process::id() % 10_000;
        let names = [format!("pt{id}a"), format!("pt{id}b")];
        let ifname = [format!("pv{id}a"), format!("pv{id}b")];
        // A private /24 per test process.
        let net = format!("10.{}.{}", 200 + id % 50, id % 250);
        let addrs = [format!("{net}.1"), format!("{net}.2")];
        let hosts = TwoHosts { names, addrs, ifname };
        for n in &hosts.names {
            Self::ip(&["netns", "add", n])?;
        }
        Self::ip(&["link", "add", &hosts.ifname[0], "type", "veth", "peer", "name", &hosts.ifname[1]])?;
        for i in 0..2 {
            let (ns, dev) = (&hosts.names[i], &hosts.ifname[i]);
            Self::ip(&["link", "set", dev, "netns", ns])?;
            Self::ip(&["-n", ns, "addr", "add", &format!("{}/24", hosts.addrs[i]), "dev", dev])?;
            Self::ip(&["-n", ns, "link", "set", dev, "up"])?;
            Self::ip(&["-n", ns, "link", "set", "lo", "up"])?;
            if let Some(rate) = rate {
                let out = Command::new("tc").args(["-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms"]).output().map_err(|e| format!("cannot run `tc`: {e}"))?;
                if !out.status.success() {
                    return Err(format!("tc tbf failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
                }
            }
        }
        Ok(hosts)
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and the pair with it.
        for n in &self.names {
            let _ = Self::ip(&["netns", "delete", n]);
        }
    }
}

/// Two nodes on two "machines": one launcher per network namespace, the master on the first
/// namespace's routable address (not loopback), node 1 reaching it over the veth link capped
/// at 1 Gbit/s by `tc tbf`, node 0's Gloo pinned to its interface with `GLOO_SOCKET_IFNAME`
/// and node 1's found by the route to the master. The run ends with the weights of one process
/// with the whole batch (1e-6), as the loopback test does. Needs root: skipped, saying why,
/// where namespaces cannot be made. `docs/distributed.md`'s "Two machines" walk-through is
/// these commands.
#[test]
fn two_nodes_in_two_network_namespaces_end_with_the_weights_of_one_process() {
    let hosts = match TwoHosts::create(Some("1gbit")) {
        Ok(h) => h,
        Err(why) => {
            eprintln!("skipped: two network namespaces cannot be made here: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let one = dir.path().join("one");
    run_ranks(&cfg, &one, 1, 16, 6, false, &[]);
    let port = free_port().to_string();
    let nodes: Vec<_> = (0..2)
        .map(|node| {
            let mut s = sets(8, 6);
            s.push(format!("run.out_dir=\"{}\"", dir.path().join(format!("node{node}")).display()));
            let mut args: Vec<String> = ["netns", "exec", &hosts.names[node]].map(String::from).to_vec();
            args.push(bin().display().to_string());
            args.extend(with_sets(
                ["launch", "--nnodes", "2", "--node-rank", &node.to_string(), "--nproc", "1", "--master-addr", &hosts.addrs[0], "--master-port", &port, &cfg.display().to_string()].map(String::from).to_vec(),
                &s,
            ));
            let mut cmd = Command::new("ip");
            cmd.args(&args).current_dir(root()).process_group(0).stdout(Stdio::null()).stderr(Stdio::piped());
            if node == 0 {
                cmd.env("GLOO_SOCKET_IFNAME", &hosts.ifname[0]);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    let outs: Vec<_> = nodes.into_iter().map(|n| wait_with_timeout(n, Duration::from_secs(180))).collect();
    for (node, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "node {node}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let node0 = dir.path().join("node0");
    let (wn, wb) = (weights(&latest(&node0)), weights(&latest(&one)));
    let worst = wn.iter().map(|(k, t)| (t - &wb[k]).abs().max().double_value(&[])).fold(0.0, f64::max);
    assert!(worst < 1e-6, "two namespaced nodes vs one process: largest difference {worst}");
    // Node 1 really went over the link: its rank joined at the master's routable address.
    let err1 = String::from_utf8_lossy(&outs[1].stderr);
    assert!(err1.contains(&format!("{}:{port}", hosts.addrs[0])), "{err1}");
}
