//! A run's folder and bookkeeping: the output folder with its resolved config, the checkpoint
//! to resume from and where the counters start, and the summary at the end.

use std::path::PathBuf;

use super::coordinator::Outcome;
use super::trainer::StartPoint;
use super::{EndedBy, RunError, RunSummary};
use super::events::Record;
use crate::checkpoint::resume::choose;
use crate::checkpoint::CheckpointStore;
use crate::distributed::reshard::{reshard, Batching};
use crate::plan::RunPlan;

/// The run's checkpoint store and the checkpoint `--resume` picks (none without it; a warning
/// when checkpoints exist and are ignored). Rank 0 first removes half-written temporaries.
pub(super) fn find_resume_point(plan: &RunPlan, run_dir: &std::path::Path, rank: usize) -> Result<(CheckpointStore, Option<crate::checkpoint::resume::ResumePoint>), RunError> {
    let ckpt_root = run_dir.join("checkpoints");
    let store = CheckpointStore::new(&ckpt_root).with_tokenizer(std::sync::Arc::new(plan.tokenizer.serialized()));
    if rank == 0 {
        // Never under rank 0's feet.
        store.clean_temporaries();
    }
    let point = match &plan.resume {
        Some(from) => choose(&store, &ckpt_root, from)?,
        None => {
            if !store.steps().is_empty() {
                tracing::warn!(dir = %ckpt_root.display(), "checkpoints exist; starting afresh (pass --resume auto to continue)");
            }
            None
        }
    };
    Ok((store, point))
}

/// An exclusive lock on a run's folder for the run's lifetime: `flock` on `FOLDER/.lock`, so
/// the kernel releases it when the process ends however it ends (a `kill -9` leaves no stale
/// lock), and a second run into a live run's folder is refused before it touches anything.
pub struct FolderLock {
    _file: std::fs::File,
}

impl FolderLock {
    /// Locks `dir` (created if needed), writing this process's id into the lock file.
    ///
    /// # Errors
    /// [`RunError::InUse`] naming the holder's pid; [`RunError::OutDir`] when the folder or
    /// its lock file cannot be made.
    pub fn acquire(dir: &std::path::Path) -> Result<Self, RunError> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let out_err = |source| RunError::OutDir { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(out_err)?;
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join(".lock")).map_err(out_err)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(out_err(err));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(RunError::InUse { dir: dir.to_owned(), pid: text.trim().parse().ok() });
        }
        file.set_len(0).and_then(|()| file.rewind()).and_then(|()| write!(file, "{}", std::process::id())).map_err(out_err)?;
        Ok(FolderLock { _file: file })
    }
}

/// Creates the run's output folder (rank 0: OUT; others: OUT/ranks/rank-N) under an exclusive
/// lock held until the returned guard drops, writes the resolved `config.toml`, starts the
/// metrics exporter and reports the records a fine-tuning plan skipped. Returns `(OUT, this
/// rank's folder, the lock)`.
pub(super) fn prepare_out_dir(plan: &RunPlan, rank: usize) -> Result<(PathBuf, PathBuf, FolderLock), RunError> {
    let c = &plan.config;
    // Rank 0 owns OUT (checkpoints, events); the others log under OUT/ranks/rank-N.
    let run_dir = c.run.out_dir.clone();
    let out_dir = if rank == 0 { run_dir.clone() } else { run_dir.join("ranks").join(format!("rank-{rank}")) };
    // Before anything is written or cleaned: another live run's files are never touched.
    let lock = FolderLock::acquire(&out_dir)?;
    write_resolved_config(plan, &out_dir)?;
    if let Some(addr) = plan.metrics_addr {
        // Every run labels its rank (0 alone), so dashboards and alerts select and group by it
        // the same way for one process and for many.
        let labels: Vec<(&str, String)> = vec![("rank", rank.to_string())];
        crate::metrics::install_with(addr, &plan.run_id, &labels)?;
        tracing::info!(%addr, "serving Prometheus metrics");
    }
    for bad in plan.workload.skipped() {
        metrics::counter!(crate::metrics::names::RECORDS_SKIPPED, "reason" => bad.reason).increment(1);
        tracing::warn!(file = %bad.path.display(), line = bad.line, reason = bad.reason, "skipped record: {}", bad.detail);
    }
    Ok((run_dir, out_dir, lock))
}

/// Where the data plane and the counters start: a resume point's, after checking it was
/// written by a run of the same model (`want`) and tokenizer, or the beginning. A checkpoint of
/// another world size continues at the same global batch: the plan's `train.batch_size` /
/// `train.grad_accum` are re-split ([`crate::distributed::reshard`]) and the change is logged.
pub(super) fn start_point(resume_point: Option<&crate::checkpoint::resume::ResumePoint>, world: usize, want: &serde_json::Value, plan: &mut RunPlan) -> Result<StartPoint, RunError> {
    let Some(rp) = resume_point else { return Ok(StartPoint::default()) };
    if let Some(reason) = crate::plan::tokenizer_mismatch(rp.state.tokenizer_sha256.as_deref(), &plan.tokenizer, &rp.dir, &plan.config.tokenizer) {
        return Err(RunError::Incompatible { dir: rp.dir.clone(), reason });
    }
    if rp.state.model != *want {
        let differences = model_differences(&rp.state.model, want).join(", ");
        return Err(RunError::Incompatible { dir: rp.dir.clone(), reason: format!("its model differs from the one the config builds ({differences}); resume with the checkpoint's [model], or give the run another run.out_dir") });
    }
    let mut batches = rp.state.batches_seen;
    let mut resplit = false;
    if rp.state.world_size != world {
        let incompatible = |reason: String| RunError::Incompatible { dir: rp.dir.clone(), reason: format!("it was written by a run of {} rank(s) and this run has {world}: {reason}", rp.state.world_size) };
        let saved = saved_batching(&rp.state).ok_or_else(|| incompatible(format!("its state.json does not record the batch it used; resume with WORLD_SIZE={}", rp.state.world_size)))?;
        let t = &plan.config.train;
        let now = Batching { world, batch: t.batch_size, accum: t.grad_accum };
        let split = reshard(saved, now, t.group_by_length).map_err(|e| incompatible(e.to_string()))?;
        tracing::warn!(
            checkpoint = %rp.dir.display(),
            "resuming a {}-rank run on {world} rank(s) at its global batch of {} sequences: {saved} -> {split}{}",
            saved.world,
            saved.global(),
            if (split.batch, split.accum) == (now.batch, now.accum) { String::new() } else { format!(" (the config said batch_size {} × grad_accum {})", now.batch, now.accum) }
        );
        batches = split.seq_after(&saved, rp.state.batches_seen, rp.state.step);
        plan.config.train.batch_size = split.batch;
        plan.config.train.grad_accum = split.accum;
        if let Some(max_steps) = plan.workload.rebatched(&plan.config, world) {
            plan.config.train.max_steps = max_steps;
        }
        resplit = true;
    }
    tracing::info!(checkpoint = %rp.dir.display(), step = rp.state.step, "resuming");
    let now = serde_json::to_value(&plan.config).unwrap_or_default();
    for change in changed_settings(&rp.state.config, &now) {
        if resplit && (change.starts_with("train.batch_size:") || change.starts_with("train.grad_accum:")) {
            continue;
        }
        tracing::warn!("resuming with a changed setting: {change}");
    }
    Ok(StartPoint { tokens: rp.state.tokens_seen, samples: rp.state.samples_seen, batches, cursor: rp.state.cursor })
}

/// `config.toml` in the rank's folder: the configuration the run really uses (rewritten once a
/// resume on another world size has re-split the batch).
pub(super) fn write_resolved_config(plan: &RunPlan, out_dir: &std::path::Path) -> Result<(), RunError> {
    let resolved = toml::to_string(&plan.config).map_err(|e| RunError::Pipeline(format!("cannot write the resolved config: {e}")))?;
    std::fs::write(out_dir.join("config.toml"), resolved).map_err(|source| RunError::OutDir { path: out_dir.to_owned(), source })
}

/// How the checkpoint's run split its updates, from its `state.json`.
fn saved_batching(state: &crate::checkpoint::state::CheckpointState) -> Option<Batching> {
    let train = state.config.get("train")?;
    let num = |k: &str| train.get(k).and_then(serde_json::Value::as_u64).map(|v| v as usize).filter(|&v| v > 0);
    Some(Batching { world: state.world_size, batch: num("batch_size")?, accum: num("grad_accum")? })
}

/// The training settings a resume changes, one line per key (`train.lr: 0.001 -> 0.0005`), as
/// `transformers` warns key by key: `[train]`, `[objective]`, `[model]` and `[data]`, the step
/// budget aside (extending a run is what resuming is for).
pub fn changed_settings(before: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for section in ["train", "objective", "model", "data"] {
        let (Some(a), Some(b)) = (before.get(section).and_then(|v| v.as_object()), now.get(section).and_then(|v| v.as_object())) else { continue };
        for (key, new) in b {
            if matches!((section, key.as_str()), ("train", "max_steps" | "epochs")) {
                continue;
            }
            match a.get(key) {
                Some(old) if old != new => out.push(format!("{section}.{key}: {old} -> {new}")),
                _ => {}
            }
        }
    }
    out
}

/// What differs between a checkpoint's model and the config's, one `key: checkpoint X, config
/// Y` per leaf (nested keys dotted: an ELECTRA pair's `generator.hidden_size`), so a resume
/// refused for one key says which, not two JSON objects to compare by eye.
fn model_differences(saved: &serde_json::Value, want: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a.as_object(), b.as_object()) {
            (Some(a), Some(b)) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    let none = serde_json::Value::Null;
                    walk(&here, a.get(k).unwrap_or(&none), b.get(k).unwrap_or(&none), out);
                }
            }
            _ if a != b => out.push(format!("{}: checkpoint {a}, config {b}", if path.is_empty() { "model" } else { path })),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", saved, want, &mut out);
    out
}

/// Keeps the process (and its `/metrics`) up for a last scrape, `seconds` at most: SIGTERM or
/// SIGINT ends the wait at once (an operator stopping a finished run, a launcher stopping its
/// ranks).
fn linger(seconds: f64) {
    let limit = std::time::Duration::from_secs_f64(seconds);
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        std::thread::sleep(limit);
        return;
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let sleep = tokio::time::sleep(limit);
        // Listening before saying so: a signal sent on seeing the line is never missed.
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tracing::info!(seconds, "lingering for a last scrape (SIGTERM or SIGINT ends it)");
                tokio::select! { _ = sleep => {}, _ = int.recv() => {}, _ = term.recv() => {} }
            }
            _ => sleep.await,
        }
    });
}

/// The run's summary from the Coordinator's outcome (a stage's failure becomes the error).
pub(super) fn summarize(plan: &RunPlan, outcome: Outcome, run_dir: &std::path::Path, out_dir: PathBuf, metric: String) -> Result<RunSummary, RunError> {
    if let Some((stage, source)) = outcome.failure {
        return Err(RunError::Stage { stage, source });
    }
    let c = &plan.config;
    let phase = plan.phase();
    let t = outcome.totals.ok_or_else(|| RunError::Pipeline("the trainer never reported".into()))?;
    let linger_s = c.metrics.linger_s;
    if plan.metrics_addr.is_some() && linger_s > 0.0 {
        linger(linger_s);
    }
    let epoch_steps = plan.workload.epoch_steps();
    let ended_by = if t.stopped_early {
        EndedBy::EarlyStopping
    } else if t.interrupted {
        EndedBy::Interrupted
    } else if epoch_steps > 0 {
        EndedBy::Epochs
    } else {
        EndedBy::MaxSteps
    };
    let store = CheckpointStore::new(run_dir.join("checkpoints"));
    let finished = Record::Finished { phase, step: t.steps, ended_by, elapsed_s: t.elapsed_s, tokens: t.tokens, metric: metric.clone(), best_step: outcome.best.map(|(s, _)| s) };
    let appended = super::event_log::EventLog::open(&out_dir.join("events.jsonl")).and_then(|mut log| log.append(&serde_json::to_string(&finished).expect("a record serialises")));
    if let Err(error) = appended {
        tracing::warn!(%error, "could not append the run's end to events.jsonl");
    }
    Ok(RunSummary {
        phase,
        metric,
        best: outcome.best,
        best_checkpoint: store.best().filter(|d| d.join("state.json").exists()).or_else(|| store.latest()),
        epochs: (epoch_steps > 0).then(|| t.steps as f64 / epoch_steps as f64),
        ended_by,
        stopped_early: t.stopped_early,
        init: t.init.clone(),
        steps: t.steps,
        tokens: t.tokens,
        samples: t.samples,
        elapsed_s: t.elapsed_s,
        tokens_per_second: t.tokens as f64 / t.elapsed_s.max(1e-9),
        data_wait_share: t.data_wait_s / t.elapsed_s.max(1e-9),
        mfu: (t.peak_flops > 0.0 && t.model_flops > 0.0 && t.elapsed_s > 0.0).then(|| t.model_flops / t.elapsed_s / t.peak_flops),
        model_flops: t.model_flops,
        final_loss: t.final_loss,
        eval: outcome.last_eval,
        checkpoint: outcome.last_checkpoint,
        max_checkpoint_stall_s: outcome.max_checkpoint_stall_s,
        interrupted: t.interrupted,
        out_dir,
    })
}


#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_resume_names_each_changed_setting_but_not_the_step_budget() {
        let before = json!({"train": {"lr": 0.001, "batch_size": 32, "max_steps": 100}, "model": {"hidden_size": 128}, "run": {"seed": 1}});
        let now = json!({"train": {"lr": 0.0005, "batch_size": 32, "max_steps": 400}, "model": {"hidden_size": 128}, "run": {"seed": 2}});
        assert_eq!(super::changed_settings(&before, &now), vec!["train.lr: 0.001 -> 0.0005".to_owned()]);
    }

    #[test]
    fn a_model_that_does_not_fit_names_each_differing_key() {
        let saved = json!({"architecture": "Electra", "discriminator": {"hidden_size": 128, "num_hidden_layers": 2}, "generator": {"hidden_size": 32}});
        let want = json!({"architecture": "Electra", "discriminator": {"hidden_size": 64, "num_hidden_layers": 2}, "generator": {"hidden_size": 32, "embedding_size": 16}});
        assert_eq!(super::model_differences(&saved, &want), ["discriminator.hidden_size: checkpoint 128, config 64", "generator.embedding_size: checkpoint null, config 16"]);
        assert_eq!(super::model_differences(&json!("Glm"), &json!({"architecture": "Bert"})), [r#"model: checkpoint "Glm", config {"architecture":"Bert"}"#]);
    }
}
