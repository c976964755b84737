//! The `/metrics` endpoint: the exporter's rendering plus floating-point counters, served by
//! [`crate::http`] on its own thread (with `/health`).
//!
//! Why not the exporter's own listener: `metrics` counters are integers, and the metrics
//! contract has a counter in seconds (`pretune_data_wait_seconds_total`). Prometheus counters
//! are floats; recording milliseconds or a gauge would break the base-unit and `_total` lint
//! rules. So the float counters live here and are appended to the exporter's text.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics_exporter_prometheus::PrometheusHandle;

/// A monotonically increasing f64 counter (stored as bits, updated by compare-and-swap).
#[derive(Clone, Debug, Default)]
pub struct FloatCounter(Arc<AtomicU64>);

impl FloatCounter {
    /// Adds `v` (negative values are ignored: counters only go up).
    pub fn increment(&self, v: f64) {
        if v.is_nan() || v <= 0.0 {
            return;
        }
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + v).to_bits()));
    }
    /// Current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

struct FloatFamily {
    help: &'static str,
    series: BTreeMap<Vec<(&'static str, String)>, FloatCounter>,
}

#[derive(Default)]
struct Registry {
    families: BTreeMap<&'static str, FloatFamily>,
    global: Vec<(String, String)>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The float counter `name{labels}`, registered on first use (a handle: keep it, don't look it
/// up per step).
pub fn float_counter(name: &'static str, help: &'static str, labels: &[(&'static str, &str)]) -> FloatCounter {
    let mut r = registry().lock().expect("metrics registry poisoned");
    let fam = r.families.entry(name).or_insert_with(|| FloatFamily { help, series: BTreeMap::new() });
    let key: Vec<(&'static str, String)> = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    fam.series.entry(key).or_default().clone()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn render_floats(out: &mut String) {
    let r = registry().lock().expect("metrics registry poisoned");
    for (name, fam) in &r.families {
        out.push_str(&format!("# HELP {name} {}\n# TYPE {name} counter\n", fam.help));
        for (labels, c) in &fam.series {
            let all: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .chain(r.global.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))))
                .collect();
            out.push_str(&format!("{name}{{{}}} {}\n", all.join(","), c.get()));
        }
    }
}

/// Everything `/metrics` returns.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    let mut s = handle.render();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    render_floats(&mut s);
    s
}

/// Binds `addr`, installs the global recorder (with `run_id` as a global label) and serves
/// scrapes from a dedicated thread until the process exits.
pub(crate) fn start(addr: SocketAddr, handle_builder: impl FnOnce() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError>, run_id: &str) -> Result<(), super::MetricsError> {
    let listener = TcpListener::bind(addr).map_err(|source| super::MetricsError::Listen { addr, source })?;
    let handle = handle_builder()?;
    registry().lock().expect("metrics registry poisoned").global = vec![("run_id".into(), run_id.into())];
    let handler: crate::http::Handler = Arc::new(move |req: &crate::http::Request| match req.target.split('?').next().unwrap_or("/") {
        "/health" => crate::http::Response::new(200, "text/plain", "OK\n"),
        "/" | "/metrics" => crate::http::Response::new(200, "text/plain; version=0.0.4", render(&handle)),
        _ => crate::http::Response::new(404, "text/plain", "not found: /metrics or /health\n"),
    });
    crate::http::serve(listener, "metrics-http", handler).map_err(super::MetricsError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_counters_only_go_up_and_render_with_help_and_type() {
        let c = float_counter("pretune_test_seconds_total", "A test counter.", &[("phase", "pretrain")]);
        c.increment(0.25);
        c.increment(-1.0);
        c.increment(0.5);
        assert_eq!(c.get(), 0.75);
        let mut s = String::new();
        render_floats(&mut s);
        assert!(s.contains("# TYPE pretune_test_seconds_total counter"), "{s}");
        assert!(s.contains("pretune_test_seconds_total{phase=\"pretrain\"} 0.75"), "{s}");
    }
}
