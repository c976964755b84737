//! Runs a sweep's jobs (its pre-training runs, then its cells) as `pretune train` child
//! processes, `--jobs` at a time, each in its own folder: a folder whose run finished is
//! skipped, one with a checkpoint is resumed (`--resume auto`), one without is started again,
//! so a sweep killed at any point continues where it stopped and never reruns a finished cell.
//!
//! A child is a process of its own (a crash or an abort in one cell cannot take the sweep
//! down; libtorch's thread pools are per process) in its own process group: a Ctrl-C or
//! SIGTERM to the sweep reaches each running child once (a second signal would make a run
//! exit without its checkpoint), and a sweep that dies, even by SIGKILL, sends them SIGTERM.

use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::results;
use super::spec::{Keep, Pick, Setting};
use super::SweepError;

static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

/// One run of the sweep.
#[derive(Debug, Clone)]
pub struct Job {
    /// What progress lines call it.
    pub name: String,
    /// The config it starts from.
    pub base: PathBuf,
    /// Its folder (`run.out_dir`).
    pub dir: PathBuf,
    /// What it sets over the base, values interpolated, in order.
    pub set: Vec<Setting>,
    /// Which evaluation its result reports.
    pub pick: Pick,
    /// What it keeps of its checkpoints once finished (a pre-training run: all; cells start
    /// from it).
    pub keep: Keep,
}

/// How jobs run.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The `pretune` executable.
    pub exe: PathBuf,
    /// Jobs at a time.
    pub jobs: usize,
    /// libtorch threads of each job where the spec sets none (the cores shared out).
    pub threads: usize,
}

/// What became of a job.
#[derive(Debug)]
pub enum JobEnd {
    /// Finished before this sweep started.
    AlreadyDone,
    /// Ran and finished.
    Done,
    /// Ran and failed, or was stopped: what the log says.
    Failed(String),
    /// Not started: the sweep was asked to stop.
    NotStarted,
}

/// The config of a job: the base, the job's settings, its folder; the metrics endpoint off
/// and the threads shared out unless the spec sets them.
///
/// # Errors
/// The base cannot be read or a setting cannot be placed.
pub fn job_config(job: &Job, threads: usize) -> Result<toml::Table, SweepError> {
    let mut table = crate::config::read_table(&job.base, &[]).map_err(|e| SweepError::Config { job: job.name.clone(), source: Box::new(e) })?;
    let set = |t: &mut toml::Table, k: &str, v: toml::Value| crate::config::set_value(t, k, v).map_err(|e| SweepError::Config { job: job.name.clone(), source: Box::new(e) });
    set(&mut table, "metrics.listen", toml::Value::String(String::new()))?;
    set(&mut table, "run.threads", toml::Value::Integer(threads as i64))?;
    for (k, v) in &job.set {
        set(&mut table, k, v.clone())?;
    }
    set(&mut table, "run.out_dir", toml::Value::String(job.dir.display().to_string()))?;
    Ok(table)
}

impl Runner {
    /// Runs `jobs`, `self.jobs` at a time, and returns each one's end in order. Progress goes
    /// to the log.
    pub fn run_all(&self, jobs: &[Job]) -> Vec<JobEnd> {
        // SAFETY: installing a handler that only stores an integer.
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as usize);
            libc::signal(libc::SIGTERM, on_signal as *const () as usize);
        }
        let queue = Mutex::new(jobs.iter().enumerate().collect::<VecDeque<_>>());
        let ends: Mutex<Vec<Option<JobEnd>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
        let total = jobs.len();
        std::thread::scope(|s| {
            for _ in 0..self.jobs.clamp(1, total.max(1)) {
                s.spawn(|| loop {
                    let Some((i, job)) = queue.lock().expect("queue").pop_front() else { return };
                    let end = if SIGNALLED.load(Ordering::SeqCst) != 0 { JobEnd::NotStarted } else { self.run_one(job, i + 1, total) };
                    ends.lock().expect("ends")[i] = Some(end);
                });
            }
        });
        ends.into_inner().expect("ends").into_iter().map(|e| e.unwrap_or(JobEnd::NotStarted)).collect()
    }

    /// Whether the sweep was asked to stop.
    pub fn stopped() -> bool {
        SIGNALLED.load(Ordering::SeqCst) != 0
    }

    fn run_one(&self, job: &Job, n: usize, total: usize) -> JobEnd {
        match self.start(job, n, total) {
            Ok(end) => end,
            Err(e) => {
                let e = crate::error_chain(&e);
                tracing::error!("[{n}/{total}] {}: {e}", job.name);
                JobEnd::Failed(e)
            }
        }
    }

    fn start(&self, job: &Job, n: usize, total: usize) -> Result<JobEnd, SweepError> {
        let table = job_config(job, self.threads)?;
        let text = toml::to_string(&table).map_err(|e| SweepError::Config { job: job.name.clone(), source: Box::new(e) })?;
        let config = job.dir.join("sweep-config.toml");
        let file = |source| SweepError::File(crate::files::FileError { path: config.clone(), source });
        if let Ok(old) = std::fs::read_to_string(&config) {
            // The threads are how the cores were shared (`--jobs`), not what the run computes.
            let settled = |t: &str| {
                let mut t: toml::Table = toml::from_str(t).unwrap_or_default();
                if let Some(run) = t.get_mut("run").and_then(toml::Value::as_table_mut) {
                    run.remove("threads");
                }
                t
            };
            if settled(&old) != settled(&text) {
                return Err(SweepError::Changed { dir: job.dir.clone() });
            }
        }
        if results::read(&job.dir, job.pick)?.finished {
            // A sweep killed between a cell's end and its pruning prunes it now.
            prune_checkpoints(job);
            return Ok(JobEnd::AlreadyDone);
        }
        let resume = crate::checkpoint::CheckpointStore::new(job.dir.join("checkpoints")).latest().is_some();
        if !resume && job.dir.exists() {
            // Stopped before its first checkpoint: what it logged would be repeated.
            for name in ["events.jsonl", "sweep.log"] {
                let _ = std::fs::remove_file(job.dir.join(name));
            }
        }
        std::fs::create_dir_all(&job.dir).map_err(file)?;
        std::fs::write(&config, &text).map_err(file)?;
        let log_path = job.dir.join("sweep.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|source| SweepError::File(crate::files::FileError { path: log_path.clone(), source }))?;
        let err_log = log.try_clone().map_err(|source| SweepError::File(crate::files::FileError { path: log_path.clone(), source }))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("train").arg(&config).stdin(Stdio::null()).stdout(log).stderr(err_log).process_group(0);
        if resume {
            cmd.args(["--resume", "auto"]);
        }
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; see the module's doc.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 || libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        tracing::info!("[{n}/{total}] {} {}", if resume { "resuming" } else { "starting" }, job.name);
        let t0 = Instant::now();
        let mut child = cmd.spawn().map_err(|source| SweepError::Spawn { exe: self.exe.clone(), source })?;
        let mut forwarded = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(source) => return Err(SweepError::Spawn { exe: self.exe.clone(), source }),
            }
            let sig = SIGNALLED.load(Ordering::SeqCst);
            if sig != 0 && !forwarded {
                // SAFETY: kill with a pid this process spawned and has not reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, sig) };
                forwarded = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let wall = t0.elapsed().as_secs_f64();
        add_wall_time(&job.dir, wall);
        let r = results::read(&job.dir, job.pick).unwrap_or_default();
        if status.success() && r.finished {
            let headline: Vec<String> = r.metrics.iter().filter(|(k, _)| !matches!(k.as_str(), "steps" | "elapsed_s" | "tokens_per_second")).take(3).map(|(k, v)| format!("{k} {v:.4}")).collect();
            tracing::info!("[{n}/{total}] done {} in {wall:.0} s {}", job.name, headline.join(", "));
            prune_checkpoints(job);
            Ok(JobEnd::Done)
        } else {
            let tail = log_tail(&log_path, 12);
            let why = if forwarded { "stopped (the sweep was asked to stop; it resumes from its checkpoint)".to_owned() } else { format!("exit status {status}") };
            tracing::error!("[{n}/{total}] {} {why}; its log ({}) ends:\n{tail}", job.name, log_path.display());
            Ok(JobEnd::Failed(format!("{why}: {}", tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(""))))
        }
    }
}

/// Applies `job.keep` to a finished job's checkpoints. A failure costs disk, not the result: a
/// warning.
fn prune_checkpoints(job: &Job) {
    let root = job.dir.join("checkpoints");
    let store = crate::checkpoint::CheckpointStore::new(&root);
    let kept = match job.keep {
        Keep::All => return,
        Keep::None => std::fs::remove_dir_all(&root).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e.to_string()) }),
        Keep::Picked => {
            let latest = store.latest_step();
            let step = match job.pick {
                Pick::Best => store.best_record().map(|b| b.step).or(latest),
                Pick::Last => latest,
            };
            match step {
                Some(step) => store.keep_only(step).map(|_| ()).map_err(|e| crate::error_chain(&e)),
                None => Ok(()),
            }
        }
    };
    if let Err(e) = kept {
        tracing::warn!(dir = %root.display(), error = %e, "could not prune a finished cell's checkpoints");
    }
}

/// Adds `seconds` to the job's `sweep-time.json` (the wall time of all its attempts).
fn add_wall_time(dir: &Path, seconds: f64) {
    let path = dir.join("sweep-time.json");
    let before = wall_time(dir);
    let _ = std::fs::write(&path, serde_json::json!({ "wall_s": before + seconds }).to_string());
}

/// The wall time of a job's attempts so far, seconds.
pub fn wall_time(dir: &Path) -> f64 {
    std::fs::read_to_string(dir.join("sweep-time.json")).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()).and_then(|v| v["wall_s"].as_f64()).unwrap_or(0.0)
}

/// The last `n` lines of a log.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
