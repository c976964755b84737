//! Observability against real tools: `promtool check metrics` on live scrapes, a real
//! Prometheus scraping a pre-training then a fine-tuning run, every Grafana dashboard panel
//! answered by it, and `pretune report`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, free_port, ft_config, http_get, root, tiny_config};

/// Kills the child by PID when dropped, so no test leaves a process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn train(cfg: &Path, port: u16, linger_s: u32, extra: &[&str]) -> Guard {
    let mut c = Command::new(bin());
    c.args(["train", cfg.to_str().unwrap(), "--set", &format!("metrics.listen=127.0.0.1:{port}"), "--set", &format!("metrics.linger_s={linger_s}")]);
    for e in extra {
        c.args(["--set", e]);
    }
    Guard(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
}

fn wait(g: &mut Guard, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(s) = g.0.try_wait().unwrap() {
            assert!(s.success(), "run failed: {s}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("run did not finish within {limit:?}");
}

/// Polls `/metrics` until the trainer has counted tokens, then returns the page.
fn scrape_when_training(port: u16, phase: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let body = http_get(port, "/metrics").unwrap_or_default();
        if body.lines().any(|l| l.starts_with("pretune_tokens_total{") && l.contains(&format!("phase=\"{phase}\"")) && l.contains("stage=\"trainer\"") && !l.ends_with(" 0")) {
            return body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no {phase} trainer tokens on :{port}");
}

fn promtool_check(body: &str) {
    let mut p = Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("promtool (Debian package prometheus; `make setup` installs it)");
    std::io::Write::write_all(p.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool check metrics:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn prom_query(port: u16, expr: &str) -> serde_json::Value {
    let q: String = expr.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
    let body = http_get(port, &format!("/api/v1/query?query={q}")).unwrap_or_default();
    serde_json::from_str(&body).unwrap_or_default()
}

fn by_phase(v: &serde_json::Value) -> std::collections::BTreeMap<String, f64> {
    v["data"]["result"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| Some((r["metric"]["phase"].as_str()?.to_owned(), r["value"][1].as_str()?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn prometheus_scrapes_both_phases_lints_clean_and_answers_every_dashboard_panel() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prom_port = free_port();
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(&conf, format!("global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: pretune\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")).unwrap();
    let prom = Command::new("prometheus")
        .args([
            &format!("--config.file={}", conf.display()),
            &format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            &format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package; `make setup` installs it)");
    let _prom = Guard(prom);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(prom_port, "/-/ready").is_none_or(|b| !b.contains("Ready")) {
        assert!(Instant::now() < deadline, "prometheus did not get ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The scrape loop runs before training starts (`up` exists, 0 while nothing listens).
    let deadline = Instant::now() + Duration::from_secs(30);
    while prom_query(prom_port, "up")["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
        assert!(Instant::now() < deadline, "prometheus never scraped");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Phase 1: pre-training, with evaluations and checkpoints; long enough for several scrapes.
    let cfg = tiny_config(dir.path());
    let mut run = train(&cfg, port, 4, &["train.max_steps=240", "train.eval_every=80", "train.checkpoint_every=80", &format!("run.out_dir={}", dir.path().join("pre").display())]);
    promtool_check(&scrape_when_training(port, "pretrain"));
    // Bounds, not timings: generous for a loaded 2-core CI machine.
    wait(&mut run, Duration::from_secs(400));
    // Phase 2: fine-tuning on the spam set, evaluated twice.
    let spam = root().join("data/spam");
    let ft = ft_config(dir.path(), "sequence_classification", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "");
    // It lingers while the queries run: once a target is gone, Prometheus marks its gauges
    // stale and instant queries of them return nothing.
    let _run = train(&ft, port, 120, &["train.epochs=0", "train.max_steps=60", "train.eval_every=20", &format!("run.out_dir={}", dir.path().join("ft").display())]);
    promtool_check(&scrape_when_training(port, "finetune"));
    let deadline = Instant::now() + Duration::from_secs(400);
    while !http_get(port, "/metrics").unwrap_or_default().lines().any(|l| l.starts_with("pretune_steps_total{") && l.contains("finetune") && l.ends_with(" 60")) {
        assert!(Instant::now() < deadline, "fine-tuning did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(2500)); // two more scrapes of the final values

    let rate = by_phase(&prom_query(prom_port, "sum by (phase) (rate(pretune_tokens_total{stage=\"trainer\"}[1m]))"));
    assert!(rate.get("pretrain").is_some_and(|&r| r > 0.0), "pretrain throughput: {rate:?}");
    assert!(rate.get("finetune").is_some_and(|&r| r > 0.0), "finetune throughput: {rate:?}");
    let wait_share = by_phase(&prom_query(prom_port, "sum by (phase) (rate(pretune_data_wait_seconds_total[1m]))"));
    assert!(wait_share.len() == 2 && wait_share.values().all(|v| v.is_finite() && *v >= 0.0), "data-wait share: {wait_share:?}");

    let dashboards: Vec<String> = std::fs::read_dir(root().join("grafana/dashboards")).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts/check_dashboards.py"))
        .arg(format!("http://127.0.0.1:{prom_port}"))
        .args(&dashboards)
        .output()
        .unwrap();
    assert!(out.status.success(), "dashboards:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // The run report from the same runs.
    for run_dir in ["pre", "ft"] {
        let (code, stdout, err) = crate::util::run_cli(&["report", dir.path().join(run_dir).to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let html = std::fs::read_to_string(dir.path().join(run_dir).join("report/index.html")).unwrap();
        assert!(html.matches("<svg").count() >= 4, "{stdout}");
        assert!(html.contains("learning rate") && html.contains("eval accuracy"));
    }
}
