//! libtorch's profiler (the engine under `torch.profiler`) over a window of training steps, and
//! where the step's time goes: self time per op, grouped as the baseline's `bench_profile.py`
//! groups PyTorch's (GEMM, attention, softmax + loss, dropout RNG, LayerNorm, GELU, embedding,
//! optimizer, element-wise / copies / reductions), so the two breakdowns read side by side.
//!
//! Our optimizer and gradient clipping run inside named scopes (`pretune::optimizer`,
//! `pretune::clip_grad_norm`): their element-wise ops count as optimizer time, which the
//! baseline's fused / foreach AdamW shows under its own kernel names.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::files::FileError;

use crate::ffi;

/// A named scope in the trace (`torch.profiler.record_function`); free when no profiler runs.
pub struct Scope(*mut ffi::ScopeHandle);

impl Scope {
    /// Opens `name` until the value is dropped.
    pub fn enter(name: &str) -> Scope {
        let name = CString::new(name).unwrap_or_default();
        // SAFETY: the shim copies the name into a RecordFunction it owns; we free it in `drop`
        // (null when opening it threw: nothing to free).
        let scope = unsafe { ffi::pt_scope_enter(name.as_ptr()) };
        if scope.is_null() {
            tracing::warn!(error = %ffi::last_error(), scope = ?name, "profiler scope");
        }
        Scope(scope)
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.0.is_null() {
            return;
        }
        // SAFETY: the pointer came from `pt_scope_enter` and is freed once.
        if unsafe { ffi::pt_scope_exit(self.0) } != 0 {
            // A profiler callback threw while closing the scope: the trace loses this scope's
            // end, training goes on.
            tracing::warn!(error = %ffi::last_error(), "profiler scope");
        }
    }
}

/// Profiles updates `start .. start + steps` (counted from the run's first) into `out`.
#[derive(Debug)]
pub struct Window {
    start: u64,
    steps: u64,
    out: PathBuf,
    running: bool,
    t0: Option<std::time::Instant>,
}

impl Window {
    /// A window; `steps = 0` profiles nothing.
    pub fn new(start: u64, steps: u64, out: PathBuf) -> Window {
        Window { start, steps, out, running: false, t0: None }
    }

    /// Call before update `step` (0-based).
    pub fn before(&mut self, step: u64) {
        if self.steps > 0 && step == self.start && !self.running {
            // SAFETY: thread-local profiler state of the Trainer thread.
            if unsafe { ffi::pt_profiler_start() } == 0 {
                self.running = true;
                self.t0 = Some(std::time::Instant::now());
            } else {
                tracing::warn!(error = %ffi::last_error(), "the profiler did not start");
            }
        }
    }

    /// Call after update `step`: at the window's end, stops, writes `trace.json` and
    /// `breakdown.json` into the folder and logs the groups.
    pub fn after(&mut self, step: u64) {
        if !self.running || step + 1 < self.start + self.steps {
            return;
        }
        self.running = false;
        let wall_s = self.t0.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
        if let Err(e) = self.finish(wall_s) {
            tracing::warn!(error = %crate::error_chain(&e), "profile not written");
        }
    }

    fn finish(&self, wall_s: f64) -> Result<(), ProfileError> {
        std::fs::create_dir_all(&self.out).map_err(FileError::at(&self.out))?;
        let trace = self.out.join("trace.json");
        let path = CString::new(trace.to_string_lossy().as_bytes()).map_err(|_| ProfileError::Path(trace.clone()))?;
        // SAFETY: a NUL-terminated path; the shim writes the file.
        if unsafe { ffi::pt_profiler_stop(path.as_ptr()) } != 0 {
            return Err(ProfileError::Libtorch(ffi::last_error()));
        }
        let text = std::fs::read_to_string(&trace).map_err(FileError::at(&trace))?;
        let mut b = breakdown(&text, self.steps).map_err(|source| ProfileError::Trace { path: trace.clone(), source })?;
        b.wall_ms_per_step = 1000.0 * wall_s / self.steps as f64;
        let json = serde_json::to_string_pretty(&b).expect("a breakdown serializes");
        let file = self.out.join("breakdown.json");
        std::fs::write(&file, json).map_err(FileError::at(&file))?;
        tracing::info!(path = %file.display(), wall_ms_per_step = b.wall_ms_per_step, groups = ?b.groups_ms_per_step, "profile written");
        Ok(())
    }
}

/// Why a profile was not written (the run goes on).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Writing the folder or reading the trace.
    #[error(transparent)]
    File(#[from] FileError),
    /// A path the shim cannot take (a NUL byte in it).
    #[error("{}: not a C path", .0.display())]
    Path(PathBuf),
    /// libtorch's profiler threw.
    #[error("libtorch's profiler: {0}")]
    Libtorch(String),
    /// The trace is not what libtorch writes.
    #[error("{}", path.display())]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// What is wrong with it.
        source: TraceError,
    },
}

/// A text that is not a Chrome trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Not JSON.
    #[error("not a Chrome trace")]
    Json(#[from] serde_json::Error),
    /// JSON without `traceEvents`.
    #[error("no traceEvents")]
    NoEvents,
}

/// Where the time of the profiled steps went.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Breakdown {
    /// Wall time per profiled step (with the profiler's own overhead).
    pub wall_ms_per_step: f64,
    /// Sum of the `aten::` ops' self times per step.
    pub profiled_self_ms_per_step: f64,
    /// Self time per group, per step, largest first.
    pub groups_ms_per_step: Vec<(String, f64)>,
    /// The 20 ops with the most self time: name, ms per step, calls per step.
    pub top_ops: Vec<(String, f64, f64)>,
    /// The most tensor memory allocated inside the window and alive at once, MB: activations
    /// kept for the backward pass, gradients, temporaries. libtorch's memory reporting counts
    /// only what is allocated while it profiles, so weights and optimizer moments made before
    /// the window are not in it.
    pub peak_tensor_mb: f64,
}

/// The group of an `aten::` op, as `bench_profile.py` assigns it; ops inside our optimizer's
/// scopes are `optimizer` whatever their name.
pub fn group_of(name: &str, in_optimizer: bool) -> &'static str {
    const GROUPS: &[(&str, &[&str])] = &[
        ("gemm", &["aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul"]),
        ("attention_sdpa", &["scaled_dot_product", "_flash_attention", "aten::_softmax"]),
        ("log_softmax_loss", &["log_softmax", "nll_loss", "cross_entropy"]),
        ("dropout_rng", &["bernoulli", "dropout", "native_dropout"]),
        ("layernorm", &["layer_norm"]),
        ("gelu", &["gelu"]),
        ("embedding", &["embedding"]),
        ("optimizer", &["_fused_adamw", "addcdiv", "addcmul", "lerp", "aten::sqrt", "_foreach"]),
    ];
    if in_optimizer {
        return "optimizer";
    }
    for (g, keys) in GROUPS {
        if keys.iter().any(|k| name.contains(k)) {
            return g;
        }
    }
    const ELEMENTWISE: &[&str] =
        &["copy_", "fill_", "zero_", "add", "mul", "div", "sum", "where", "clone", "contiguous", "cat", "index", "masked"];
    if ELEMENTWISE.iter().any(|k| name.contains(k)) {
        "elementwise_copy_reduce"
    } else {
        "other"
    }
}

/// The named scopes whose ops count as optimizer time (set in `train::step`).
const OPTIMIZER_SCOPES: [&str; 2] = ["pretune::optimizer", "pretune::clip_grad_norm"];

/// One complete event of a Chrome trace.
struct Span<'a> {
    name: &'a str,
    user: bool,
    ts: f64,
    dur: f64,
}

/// Self time per op from a Chrome trace (`"ph": "X"` events of categories `cpu_op` and
/// `user_annotation`), nested per thread by their intervals, over `steps` steps.
///
/// # Errors
/// When the text is not a trace.
pub fn breakdown(trace: &str, steps: u64) -> Result<Breakdown, TraceError> {
    let v: Value = serde_json::from_str(trace)?;
    let events = v.get("traceEvents").and_then(Value::as_array).ok_or(TraceError::NoEvents)?;
    let mut threads: BTreeMap<String, Vec<Span<'_>>> = BTreeMap::new();
    // `[memory]` instants carry the allocator's running total after each allocation or free.
    let peak_tensor_mb = events
        .iter()
        .filter(|e| e.get("name").and_then(Value::as_str) == Some("[memory]"))
        .filter_map(|e| e.get("args")?.get("Total Allocated")?.as_f64())
        .fold(0.0, f64::max)
        / 1e6;
    for e in events {
        let cat = e.get("cat").and_then(Value::as_str).unwrap_or("");
        if e.get("ph").and_then(Value::as_str) != Some("X") || !(cat == "cpu_op" || cat == "user_annotation") {
            continue;
        }
        let (Some(name), Some(ts), Some(dur)) =
            (e.get("name").and_then(Value::as_str), e.get("ts").and_then(Value::as_f64), e.get("dur").and_then(Value::as_f64))
        else {
            continue;
        };
        let tid = e.get("tid").map(Value::to_string).unwrap_or_default();
        threads.entry(tid).or_default().push(Span { name, user: cat == "user_annotation", ts, dur });
    }
    // name -> (self µs, calls)
    let mut ops: BTreeMap<(String, bool), (f64, u64)> = BTreeMap::new();
    for spans in threads.values_mut() {
        spans.sort_by(|a, b| a.ts.total_cmp(&b.ts).then(b.dur.total_cmp(&a.dur)));
        // Open spans: (index, end, children's time).
        let mut stack: Vec<(usize, f64, f64)> = Vec::new();
        let close = |stack: &mut Vec<(usize, f64, f64)>, spans: &[Span<'_>], ops: &mut BTreeMap<(String, bool), (f64, u64)>| {
            let (i, _, child) = stack.pop().expect("non-empty");
            let s = &spans[i];
            if let Some(parent) = stack.last_mut() {
                parent.2 += s.dur;
            }
            if !s.user && s.name.starts_with("aten::") {
                let in_opt = stack.iter().any(|&(j, _, _)| spans[j].user && OPTIMIZER_SCOPES.iter().any(|o| spans[j].name.starts_with(o)));
                let e = ops.entry((s.name.to_string(), in_opt)).or_default();
                e.0 += (s.dur - child).max(0.0);
                e.1 += 1;
            }
        };
        for i in 0..spans.len() {
            while stack.last().is_some_and(|&(_, end, _)| end <= spans[i].ts) {
                close(&mut stack, spans, &mut ops);
            }
            stack.push((i, spans[i].ts + spans[i].dur, 0.0));
        }
        while !stack.is_empty() {
            close(&mut stack, spans, &mut ops);
        }
    }
    let steps = steps.max(1) as f64;
    let mut groups: BTreeMap<&str, f64> = BTreeMap::new();
    let mut total = 0.0;
    let mut top: Vec<(String, f64, f64)> = Vec::new();
    for ((name, in_opt), (us, calls)) in &ops {
        let ms = us / 1000.0 / steps;
        total += ms;
        *groups.entry(group_of(name, *in_opt)).or_default() += ms;
        let label = if *in_opt { format!("{name} (optimizer)") } else { name.clone() };
        top.push((label, round1(ms), *calls as f64 / steps));
    }
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(20);
    let mut groups: Vec<(String, f64)> = groups.into_iter().map(|(g, ms)| (g.to_string(), round1(ms))).collect();
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Breakdown {
        wall_ms_per_step: 0.0,
        profiled_self_ms_per_step: round1(total),
        groups_ms_per_step: groups,
        top_ops: top,
        peak_tensor_mb: round1(peak_tensor_mb),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The folder a run's profile goes to.
pub fn dir_of(run_dir: &Path) -> PathBuf {
    run_dir.join("profile")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_time_subtracts_children_and_optimizer_scopes_claim_their_ops() {
        // linear (10 µs) calls addmm (7 µs); the optimizer scope holds a mul (3 µs) and an
        // add (1 µs); a second thread runs a 2 µs mul outside any scope. Two steps.
        let trace = r#"{"traceEvents": [
          {"ph":"X","cat":"cpu_op","name":"aten::linear","tid":1,"ts":0,"dur":10},
          {"ph":"X","cat":"cpu_op","name":"aten::addmm","tid":1,"ts":1,"dur":7},
          {"ph":"X","cat":"user_annotation","name":"pretune::optimizer","tid":1,"ts":20,"dur":6},
          {"ph":"X","cat":"cpu_op","name":"aten::mul_","tid":1,"ts":21,"dur":3},
          {"ph":"X","cat":"cpu_op","name":"aten::add_","tid":1,"ts":24,"dur":1},
          {"ph":"X","cat":"cpu_op","name":"aten::mul_","tid":2,"ts":0,"dur":2},
          {"ph":"i","cat":"cpu_op","name":"marker","tid":1,"ts":5},
          {"ph":"X","cat":"python_function","name":"ignored","tid":1,"ts":0,"dur":100},
          {"ph":"i","name":"[memory]","tid":1,"ts":2,"args":{"Total Allocated":3000000,"Bytes":1000000}},
          {"ph":"i","name":"[memory]","tid":1,"ts":3,"args":{"Total Allocated":9000000,"Bytes":6000000}},
          {"ph":"i","name":"[memory]","tid":1,"ts":4,"args":{"Total Allocated":2000000,"Bytes":-7000000}}
        ]}"#;
        let b = breakdown(trace, 2).unwrap();
        assert_eq!(b.peak_tensor_mb, 9.0, "the allocator's running total at its peak");
        let g: BTreeMap<_, _> = b.groups_ms_per_step.iter().cloned().collect();
        // (3 + 7) µs of gemm over 2 steps = 0.005 ms: rounds to 0.0; check the raw ops instead.
        let top: BTreeMap<_, _> = b.top_ops.iter().map(|(n, ms, c)| (n.clone(), (*ms, *c))).collect();
        assert_eq!(top.len(), 5, "{top:?}");
        assert_eq!(top["aten::mul_ (optimizer)"].1, 0.5);
        assert_eq!(top["aten::mul_"].1, 0.5);
        assert!(g.contains_key("optimizer") && g.contains_key("gemm") && g.contains_key("elementwise_copy_reduce"), "{g:?}");
        // Microsecond-scale numbers: scale up to check the arithmetic.
        let big = trace.replace("\"dur\":10", "\"dur\":10000").replace("\"dur\":7", "\"dur\":7000").replace("\"dur\":6", "\"dur\":6000")
            .replace("\"dur\":3", "\"dur\":3000").replace("\"dur\":1}", "\"dur\":1000}").replace("\"dur\":2}", "\"dur\":2000}")
            .replace("\"ts\":21", "\"ts\":21000").replace("\"ts\":24", "\"ts\":24000").replace("\"ts\":20", "\"ts\":20000")
            .replace("\"ts\":1,", "\"ts\":1000,");
        let b = breakdown(&big, 2).unwrap();
        let g: BTreeMap<_, _> = b.groups_ms_per_step.iter().cloned().collect();
        assert_eq!(g["gemm"], 5.0, "linear's 3 ms self + addmm's 7 ms, over 2 steps");
        assert_eq!(g["optimizer"], 2.0);
        assert_eq!(g["elementwise_copy_reduce"], 1.0);
        assert_eq!(b.profiled_self_ms_per_step, 8.0);
    }

    #[test]
    fn groups_follow_the_baselines_names() {
        assert_eq!(group_of("aten::addmm", false), "gemm");
        assert_eq!(group_of("aten::_scaled_dot_product_flash_attention_for_cpu", false), "attention_sdpa");
        assert_eq!(group_of("aten::_log_softmax", false), "log_softmax_loss");
        assert_eq!(group_of("aten::bernoulli_", false), "dropout_rng");
        assert_eq!(group_of("aten::native_layer_norm_backward", false), "layernorm");
        assert_eq!(group_of("aten::gelu", false), "gelu");
        assert_eq!(group_of("aten::copy_", false), "elementwise_copy_reduce");
        assert_eq!(group_of("aten::copy_", true), "optimizer");
        assert_eq!(group_of("aten::empty", false), "other");
        assert!(breakdown("{}", 1).is_err());
    }

    #[test]
    fn the_profiler_traces_a_step_on_this_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Window::new(1, 1, dir.path().join("p"));
        let a = tch::Tensor::ones([64, 64], (tch::Kind::Float, tch::Device::Cpu));
        for step in 0..3 {
            w.before(step);
            {
                let _s = Scope::enter("pretune::optimizer");
                let _ = a.matmul(&a).sum(tch::Kind::Float);
            }
            w.after(step);
        }
        let b: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("p/breakdown.json")).unwrap()).unwrap();
        let groups = b["groups_ms_per_step"].as_array().unwrap();
        assert!(groups.iter().any(|g| g[0] == "optimizer"), "{b}");
    }
}
