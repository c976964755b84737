//! Shared helpers: paths, the tiny test config, fixtures made by the Python oracle, HTTP GET.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pretune"))
}

/// A tiny BERT on the bundled corpus: a few seconds on 2 cores.
pub fn tiny_config(dir: &Path) -> PathBuf {
    let r = root();
    let text = format!(
        r#"
[run]
name = "test"
seed = 7
out_dir = "{out}"
device = "cpu"
threads = 1

[data]
train = ["{r}/data/sotu/train.txt"]
eval = ["{r}/data/sotu/valid.txt"]
eval_batches = 2
shuffle_block_docs = 4

[tokenizer]
path = "{r}/data/sotu/tokenizer.json"

[model]
hidden_size = 64
num_layers = 2
num_heads = 2
intermediate_size = 128
max_position_embeddings = 64

[train]
batch_size = 16
max_seq_len = 64
max_steps = 60
lr = 3e-3
warmup_steps = 5
betas = [0.9, 0.98]
log_every = 10
eval_every = 0
checkpoint_every = 30
keep_last = 2
# Pinned: `auto` would pick bf16 on a CPU with bf16 units, and the exact comparisons (resume,
# 2 ranks = 1 process, parity with transformers) hold in fp32 on every machine.
precision = "fp32"

[pipeline]
masker_workers = 2
prefetch = 2

[metrics]
listen = ""
"#,
        out = dir.join("run").display(),
        r = r.display()
    );
    let p = dir.join("tiny.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `scripts/make_<name>_fixture.py` with the project's Python (transformers as the
/// oracle) unless its output is there, and returns the fixture folder. The script's `complete`
/// marker must match the script's current digest, so an edited script regenerates.
pub fn fixture(name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let dir = root().join("target/fixtures").join(name);
    let script_text = std::fs::read(root().join(format!("scripts/make_{name}_fixture.py"))).unwrap();
    let digest = format!("{:x}", script_text.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3)));
    if std::fs::read_to_string(dir.join("complete")).is_ok_and(|d| d == digest) {
        return dir;
    }
    let python = root().join(".venv/bin/python");
    assert!(python.exists(), "no {}: run `make setup` (installs torch and transformers)", python.display());
    let script = root().join(format!("scripts/make_{name}_fixture.py"));
    let out = Command::new(&python).arg(&script).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("complete"), digest).unwrap();
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `n` consecutive free ports (the first is returned): a data-parallel run serves rank r on
/// its base port + r.
pub fn free_port_block(n: u16) -> u16 {
    eventually(Duration::from_secs(10), format!("{n} consecutive free ports"), || {
        let base = free_port();
        (base < u16::MAX - n && (1..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())).then_some(base)
    })
}

/// GET `path` from `127.0.0.1:port`; `None` when nothing listens yet. HTTP/1.0, so the body
/// comes whole (an HTTP/1.1 server may send a large one chunked).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// Runs `pretune ARGS` in the repository root: (exit code, stdout, stderr).
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    run_cli_env(args, &[])
}

/// [`run_cli`] with environment variables set (`Some`) or removed (`None`).
pub fn run_cli_env<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, Option<&str>)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(root());
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A tiny fine-tuning config on the bundled spam set (fresh weights unless `init` is given).
pub fn ft_config(dir: &Path, kind: &str, train: &str, eval: &str, extra: &str) -> PathBuf {
    let r = root();
    let text = format!(
        r#"
[run]
name = "ft-test"
seed = 3
out_dir = "{out}"
device = "cpu"
threads = 1
[task]
kind = "{kind}"
[data]
train = ["{train}"]
eval = ["{eval}"]
[tokenizer]
path = "{r}/data/sotu/tokenizer.json"
[model]
hidden_size = 32
num_layers = 2
num_heads = 2
intermediate_size = 64
max_position_embeddings = 64
[train]
batch_size = 16
max_seq_len = 64
epochs = 1
lr = 1e-3
warmup_ratio = 0.1
log_every = 5
keep_last = 1
precision = "fp32"
{extra}
[metrics]
listen = ""
"#,
        out = dir.join("run").display(),
        r = r.display()
    );
    let p = dir.join("ft.toml");
    std::fs::write(&p, text).unwrap();
    p
}


/// Polls `condition` (every 50 ms) until it gives a value, at most `limit`, and fails the test
/// naming `what` otherwise. Every wait in the tests goes through here: no fixed sleeps, no
/// loop without a deadline.
pub fn eventually<T>(limit: Duration, what: impl std::fmt::Display, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = condition() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` at most `limit` (then kills it and fails the test).
pub fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let id = child.id();
    let deadline = std::time::Instant::now() + limit;
    eventually(limit + Duration::from_secs(1), format!("process {id} finished"), || match child.try_wait().unwrap() {
        Some(status) => Some(status),
        None if std::time::Instant::now() > deadline => {
            let _ = child.kill();
            panic!("process {id} did not finish within {limit:?}");
        }
        None => None,
    })
}

/// The value of the first sample of `metric` in a Prometheus text page whose labels include
/// every `name="value"` pair of `labels`.
pub fn metric_value(page: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (name, rest) = series.split_once('{').unwrap_or((series, ""));
        (name == metric && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))).then(|| value.parse().ok()).flatten()
    })
}

/// Scrapes `/metrics` on `port` for one series ([`metric_value`]); `None` while nothing
/// answers or the series is not there yet.
pub fn scrape(port: u16, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric_value(&http_get(port, "/metrics")?, metric, labels)
}

/// Spawns `cmd` with its stdout and stderr drained on threads (a child blocked on a full pipe
/// would stall the test); the drained text comes back from [`Drained::output`].
pub struct Drained {
    /// The child.
    pub child: std::process::Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Drained {
    /// Spawns `cmd` with both streams piped and drained.
    pub fn spawn(cmd: &mut Command) -> Self {
        Self::adopt(cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap())
    }

    /// Drains whichever of a spawned child's streams are piped.
    pub fn adopt(mut child: std::process::Child) -> Self {
        fn drain(r: Option<impl Read + Send + 'static>) -> Option<std::thread::JoinHandle<String>> {
            let mut r = r?;
            Some(std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            }))
        }
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        Drained { child, out, err }
    }

    /// Waits at most `limit` for the child; its status, stdout and stderr.
    pub fn output(mut self, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let status = wait_bounded(&mut self.child, limit);
        let join = |h: Option<std::thread::JoinHandle<String>>| h.map(|h| h.join().unwrap()).unwrap_or_default();
        (status, join(self.out.take()), join(self.err.take()))
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An example binary built by `cargo test`, found next to this test binary (so `--release` or
/// another target folder finds its own build, never a stale one).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/tests-HASH -> target/<profile>/examples/NAME
    let profile = exe.parent().and_then(Path::parent).unwrap();
    profile.join("examples").join(name)
}

/// The weights of a checkpoint folder, by name.
pub fn weights(dir: &Path) -> std::collections::BTreeMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap().into_iter().collect()
}

/// The largest absolute difference between two tensors.
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The largest absolute weight difference between two checkpoints, and the tensor it is in
/// (NaN wins, so a diverged tensor is never hidden).
pub fn max_weight_diff(a: &Path, b: &Path) -> (f64, String) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    let mut worst = (0.0f64, String::new());
    for (k, t) in &wa {
        let d = max_abs_diff(t, &wb[k]);
        if d > worst.0 || (d.is_nan() && !worst.0.is_nan()) {
            worst = (d, k.clone());
        }
    }
    worst
}

/// A config resolved into a plan with `--set` overrides; panics with the error's whole chain.
pub fn load_plan<S: AsRef<str>>(cfg: &Path, overrides: &[S]) -> pretune::plan::RunPlan {
    let overrides: Vec<String> = overrides.iter().map(|s| s.as_ref().to_owned()).collect();
    pretune::plan::load_and_resolve(cfg, &overrides).unwrap_or_else(|e| panic!("{}", pretune::error_chain(&e)))
}

/// Fails unless two checkpoints hold bit-identical weights.
pub fn assert_same_weights(a: &Path, b: &Path) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (k, t) in &wa {
        assert!(t.equal(&wb[k]), "{k} differs between {} and {}", a.display(), b.display());
    }
}

/// The training process, killed if the test fails before it ends (it would train on for
/// 100,000 steps and load the machine).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}


/// The records of a run folder's `events.jsonl`, read as the report reads them; empty while
/// the file does not exist yet.
pub fn records(out: &Path) -> Vec<pretune::actors::events::Record> {
    let path = out.join("events.jsonl");
    if !path.exists() {
        return Vec::new();
    }
    pretune::actors::events::read_records(&path).unwrap_or_else(|e| panic!("{}", pretune::error_chain(&e)))
}

/// The logged steps of a run folder's `events.jsonl`.
pub fn steps(out: &Path) -> Vec<pretune::actors::events::StepReport> {
    records(out)
        .into_iter()
        .filter_map(|r| match r {
            pretune::actors::events::Record::Step(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// `(step, metrics)` of every evaluation in a run folder's `events.jsonl`.
pub fn evals(out: &Path) -> Vec<(u64, pretune::objective::EvalMetrics)> {
    records(out)
        .into_iter()
        .filter_map(|r| match r {
            pretune::actors::events::Record::Eval { step, eval, .. } => Some((step, eval)),
            _ => None,
        })
        .collect()
}

/// `step -> loss` of every logged step in a run's `events.jsonl` (bit-exact: serde_json
/// round-trips f64); empty while the file does not exist yet.
pub fn losses(out: &Path) -> std::collections::BTreeMap<u64, f64> {
    steps(out).into_iter().map(|s| (s.step, s.loss)).collect()
}
