//! What timing an update's stages costs on the CPU (`pretune_step_stage_seconds`): one
//! `StageClock::begin`, the six laps an update takes and the six histogram records, against a
//! live Prometheus recorder, per update. Compared with an update's time in BENCHMARKS.md.
//!
//!     cargo bench --bench stage_timing

use std::time::Instant;

use pretune::train::stages::{StageClock, STAGES};

fn main() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().expect("a recorder");
    let hists: Vec<metrics::Histogram> = STAGES.iter().chain(&["data_wait"]).map(|s| metrics::histogram!("pretune_step_stage_seconds", "phase" => "pretrain", "stage" => *s)).collect();
    let mut clock = StageClock::new(tch::Device::Cpu, 1);
    let n = 1_000_000u64;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        for step in 0..n {
            clock.begin(step);
            let mut sum = 0.0;
            for _ in 0..6 {
                sum += clock.lap().as_secs_f64();
            }
            for h in &hists {
                h.record(sum);
            }
        }
        best = best.min(t0.elapsed().as_secs_f64() / n as f64);
    }
    // The exporter renders what was recorded (and keeps the work from being optimised away).
    assert!(handle.render().contains("pretune_step_stage_seconds"));
    println!("stage timing: {:.0} ns per update (best of 5 x {n} updates)", best * 1e9);
}
