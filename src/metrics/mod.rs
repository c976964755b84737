//! Metric names, help texts and units in one list, and the Prometheus exporter.
//!
//! The Grafana dashboards (`grafana/`) and alert rules query these names, so they are a
//! contract: renaming one breaks a panel (the observability test queries every panel). Labels are bounded: `phase` (`pretrain`, `finetune`), `stage` (`loader`,
//! `masker`, `trainer`), `queue`, `objective`, `metric`, `reason`; every series also carries a
//! global `run_id`.

pub mod device;
pub mod exporter;
pub mod names;

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Histogram buckets for durations, in seconds: 1 ms to 60 s, roughly x2.5 apart.
pub const DURATION_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Errors setting up the exporter.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `metrics.listen` is not `host:port`.
    #[error("metrics.listen `{0}` is not a socket address (host:port)")]
    Address(String),
    /// The port is taken (or not ours to bind).
    #[error("cannot start the Prometheus exporter: cannot listen on {addr}")]
    Listen {
        /// `metrics.listen`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A recorder is already installed in this process.
    #[error("cannot start the Prometheus exporter")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
    /// The server thread could not start.
    #[error("cannot start the metrics server")]
    Serve(#[source] std::io::Error),
}

/// Parses `listen` ("" means off).
///
/// # Errors
/// [`MetricsError::Address`].
pub fn parse_listen(listen: &str) -> Result<Option<SocketAddr>, MetricsError> {
    if listen.trim().is_empty() {
        return Ok(None);
    }
    listen.trim().parse().map(Some).map_err(|_| MetricsError::Address(listen.to_owned()))
}

/// Installs the global recorder and starts the HTTP listener (call before the actix system, so
/// scrapes never wait on a busy actor). Registers help texts and `pretune_build_info`.
///
/// # Errors
/// [`MetricsError::Install`] when the port is taken or a recorder exists.
pub fn install(addr: SocketAddr, run_id: &str) -> Result<(), MetricsError> {
    install_with(addr, run_id, &[])
}

/// [`install`] with more global labels (`rank` in a data-parallel run).
///
/// # Errors
/// As [`install`].
pub fn install_with(addr: SocketAddr, run_id: &str, labels: &[(&str, String)]) -> Result<(), MetricsError> {
    let build = || {
        labels
            .iter()
            .fold(PrometheusBuilder::new(), |b, (k, v)| b.add_global_label(*k, v.clone()))
            .add_global_label("run_id", run_id)
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
            .and_then(|b| b.install_recorder())
    };
    exporter::start(addr, build, run_id)?;
    names::describe_all();
    names::record_build_info();
    Ok(())
}
