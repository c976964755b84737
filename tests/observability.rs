//! Observability against real tools: `promtool check metrics` on live scrapes, a real
//! Prometheus scraping a pre-training then a fine-tuning run, every Grafana dashboard panel
//! answered by it, and `pretune report`.

use std::path::Path;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{bin, eventually, KillOnDrop, free_port, free_port_block, ft_config, http_get, metric_value, root, scrape, tiny_config};


/// Kills a child's whole process group (a launcher and its ranks) when dropped.
struct GroupGuard(Child);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: signals a process group this test created.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn train(cfg: &Path, port: u16, linger_s: u32, extra: &[&str]) -> KillOnDrop {
    let mut c = Command::new(bin());
    c.args(["train", cfg.to_str().unwrap(), "--set", &format!("metrics.listen=127.0.0.1:{port}"), "--set", &format!("metrics.linger_s={linger_s}")]);
    for e in extra {
        c.args(["--set", e]);
    }
    KillOnDrop(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
}

/// Polls `/metrics` until the trainer has counted tokens, then returns the page.
fn scrape_when_training(port: u16, phase: &str) -> String {
    eventually(Duration::from_secs(300), format!("{phase} trainer tokens on :{port}"), || {
        let page = http_get(port, "/metrics")?;
        (metric_value(&page, "pretune_tokens_total", &[("phase", phase), ("stage", "trainer")])? > 0.0).then_some(page)
    })
}

fn promtool_check(body: &str) {
    let mut p = Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("promtool (Debian package prometheus; `make setup` installs it)");
    std::io::Write::write_all(p.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool check metrics:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn prom_query(port: u16, expr: &str) -> serde_json::Value {
    prom_query_path(port, &format!("/api/v1/query?query={}", url_encode(expr)))
}

/// An instant query evaluated at `at` (a rate over a window that ended then): a phase that
/// finished minutes ago still shows the throughput it had while it ran.
fn prom_query_at(port: u16, expr: &str, at: std::time::SystemTime) -> serde_json::Value {
    let t = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    prom_query_path(port, &format!("/api/v1/query?query={}&time={t:.3}", url_encode(expr)))
}

fn url_encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A Prometheus API answer as JSON (`Null` when it does not answer).
fn prom_query_path(port: u16, path: &str) -> serde_json::Value {
    http_get(port, path).and_then(|b| serde_json::from_str(&b).ok()).unwrap_or_default()
}

/// Polls `/metrics` on `port` until `phase` has counted `steps` updates.
fn wait_for_steps(port: u16, phase: &str, steps: u64, limit: Duration) {
    eventually(limit, format!("{phase} reached {steps} updates"), || (scrape(port, "pretune_steps_total", &[("phase", phase)])? == steps as f64).then_some(()));
}

/// Polls Prometheus until the instant query `expr` returns `want`.
fn wait_for_prometheus(prom_port: u16, expr: &str, want: f64, limit: Duration) {
    eventually(limit, format!("Prometheus saw {expr} = {want}"), || {
        let v = prom_query(prom_port, expr);
        (v["data"]["result"][0]["value"][1].as_str().and_then(|x| x.parse::<f64>().ok()) == Some(want)).then_some(())
    });
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
    // A 2-rank pre-training serves on `port` and `port + 1`, the fine-tuning on `port + 2`.
    let port = free_port_block(3);
    let prom_port = free_port();
    let conf = dir.path().join("prometheus.yml");
    let rules = root().join("grafana/alerts.yml");
    std::fs::write(
        &conf,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: ['{}']\nscrape_configs:\n  - job_name: pretune\n    static_configs: [{{targets: ['127.0.0.1:{port}', '127.0.0.1:{}', '127.0.0.1:{}']}}]\n",
            rules.display(),
            port + 1,
            port + 2
        ),
    )
    .unwrap();
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
    let _prom = KillOnDrop(prom);
    eventually(Duration::from_secs(30), "prometheus got ready", || http_get(prom_port, "/-/ready").filter(|b| b.contains("Ready")));
    // The alert rules load and evaluate.
    let groups = prom_query_path(prom_port, "/api/v1/rules");
    let loaded: Vec<&str> = groups["data"]["groups"][0]["rules"].as_array().map(|r| r.iter().filter_map(|x| x["name"].as_str()).collect()).unwrap_or_default();
    assert_eq!(loaded.len(), 8, "alert rules: {groups}");

    // The scrape loop runs before training starts (`up` exists, 0 while nothing listens).
    eventually(Duration::from_secs(30), "prometheus scraped", || prom_query(prom_port, "up")["data"]["result"].as_array().is_some_and(|r| !r.is_empty()).then_some(()));
    // Phase 1: pre-training on 2 ranks, with evaluations and checkpoints; long enough for
    // several scrapes; both ranks linger so their series stay fresh while the queries run.
    let cfg = tiny_config(dir.path());
    // With a zero-shot probe: its series feeds the dashboard's probe panel.
    let probe = format!(
        "\n[[probe]]\nname = \"spam\"\ndata = \"{}\"\npattern = \"{{text}} All in all, this message is [MASK].\"\nverbalizers = {{ ham = \"personal\", spam = \"an offer\" }}\nmax_examples = 32\n",
        root().join("data/spam/dev.jsonl").display()
    );
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap() + &probe).unwrap();
    let mut launch = Command::new(bin());
    launch.args(["launch", "--nproc", "2", cfg.to_str().unwrap()]);
    for e in [
        format!("metrics.listen=127.0.0.1:{port}"),
        "metrics.linger_s=600".into(),
        "metrics.run_id=pre-2ranks".into(),
        "train.max_steps=200".into(),
        "train.eval_every=50".into(),
        "train.checkpoint_every=50".into(),
        "pipeline.masker_workers=1".into(),
        format!("run.out_dir={}", dir.path().join("pre").display()),
    ] {
        launch.args(["--set", &e]);
    }
    // Its own process group, so the guard takes the ranks down with the launcher.
    let _pre = GroupGuard(launch.process_group(0).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    promtool_check(&scrape_when_training(port, "pretrain"));
    promtool_check(&scrape_when_training(port + 1, "pretrain"));
    // Bounds, not timings: generous for a loaded 2-core CI machine.
    wait_for_steps(port, "pretrain", 200, Duration::from_secs(400));
    // Prometheus has scraped the final count (polled, not slept on).
    wait_for_prometheus(prom_port, "max(pretune_steps_total{phase=\"pretrain\"})", 200.0, Duration::from_secs(60));
    let pretrain_done = std::time::SystemTime::now();
    // Phase 2: fine-tuning on the spam set, evaluated three times; long enough for several
    // scrapes to see it count (the tiny model takes a few ms per update).
    let spam = root().join("data/spam");
    let ft = ft_config(dir.path(), "sequence_classification", &spam.join("train.jsonl").display().to_string(), &spam.join("dev.jsonl").display().to_string(), "");
    // It lingers while the queries run: once a target is gone, Prometheus marks its gauges
    // stale and instant queries of them return nothing.
    let _run = train(&ft, port + 2, 120, &["train.epochs=0", "train.max_steps=300", "train.eval_every=100", "metrics.run_id=ft-1rank", &format!("run.out_dir={}", dir.path().join("ft").display())]);
    promtool_check(&scrape_when_training(port + 2, "finetune"));
    wait_for_steps(port + 2, "finetune", 300, Duration::from_secs(400));
    // Prometheus has scraped the final count (polled, not slept on).
    wait_for_prometheus(prom_port, "max(pretune_steps_total{phase=\"finetune\"})", 300.0, Duration::from_secs(60));
    let finetune_done = std::time::SystemTime::now();

    // Both runs and both ranks are told apart by their labels.
    let runs = prom_query(prom_port, "count by (run_id, rank) (pretune_build_info)");
    let mut seen: Vec<(String, String)> = runs["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"]["run_id"].as_str().unwrap_or("").to_string(), r["metric"]["rank"].as_str().unwrap_or("").to_string()))
        .collect();
    seen.sort();
    assert_eq!(seen, [("ft-1rank", "0"), ("pre-2ranks", "0"), ("pre-2ranks", "1")].map(|(a, b)| (a.to_string(), b.to_string())), "{runs}");
    // Healthy runs raise no alert (a rank-missing or stalled rule that fires here is wrong).
    let alerts = prom_query_path(prom_port, "/api/v1/alerts");
    let firing: Vec<&str> = alerts["data"]["alerts"].as_array().map(|a| a.iter().filter_map(|x| x["labels"]["alertname"].as_str()).collect()).unwrap_or_default();
    assert!(firing.is_empty(), "alerts on healthy runs: {alerts}");

    // Each phase's throughput over the minute before it finished: on a slow machine the
    // fine-tuning alone can outlast the window, and a finished phase's rate is 0 now.
    let throughput = "sum by (phase) (rate(pretune_tokens_total{stage=\"trainer\"}[1m]))";
    for (phase, at) in [("pretrain", pretrain_done), ("finetune", finetune_done)] {
        let rate = by_phase(&prom_query_at(prom_port, throughput, at));
        assert!(rate.get(phase).is_some_and(|&r| r > 0.0), "{phase} throughput: {rate:?}");
    }
    let wait_share = by_phase(&prom_query(prom_port, "sum by (phase) (rate(pretune_data_wait_seconds_total[1m]))"));
    assert!(wait_share.len() == 2 && wait_share.values().all(|v| v.is_finite() && *v >= 0.0), "data-wait share: {wait_share:?}");

    // MFU, per-stage time and every queue with its capacity, in both phases.
    let mfu = by_phase(&prom_query(prom_port, "max by (phase) (pretune_mfu_ratio)"));
    assert!(mfu.len() == 2 && mfu.values().all(|v| v.is_finite() && *v > 0.0), "MFU: {mfu:?}");
    let stages = prom_query(prom_port, "count by (phase, stage) (pretune_step_stage_seconds_count)");
    let mut seen: Vec<String> = stages["data"]["result"].as_array().unwrap().iter().map(|r| format!("{} {}", r["metric"]["phase"].as_str().unwrap_or(""), r["metric"]["stage"].as_str().unwrap_or(""))).collect();
    seen.sort();
    let want: Vec<String> = ["finetune", "pretrain"].iter().flat_map(|p| ["backward", "comm_exposed", "data_wait", "forward", "h2d", "optimizer"].map(|s| format!("{p} {s}"))).collect();
    assert_eq!(seen, want, "{stages}");
    let queues = prom_query(prom_port, "count by (queue) (pretune_queue_capacity)");
    let mut names: Vec<&str> = queues["data"]["result"].as_array().unwrap().iter().filter_map(|r| r["metric"]["queue"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["checkpointer", "evaluator", "loader_to_masker", "masker_to_trainer"], "{queues}");
    // A queue never holds more than its bound, at any scrape of either phase.
    let over = prom_query(prom_port, "max_over_time((pretune_queue_depth - on (job, instance, run_id, rank, queue) pretune_queue_capacity)[10m:1s])");
    let worst: f64 = over["data"]["result"].as_array().unwrap().iter().filter_map(|r| r["value"][1].as_str()?.parse().ok()).fold(f64::NEG_INFINITY, f64::max);
    assert!(worst <= 0.0 && worst.is_finite(), "depth above capacity: {over}");

    let probe = prom_query(prom_port, "pretune_probe_accuracy");
    let probed: Vec<(&str, f64)> = probe["data"]["result"].as_array().map(|r| r.iter().filter_map(|x| Some((x["metric"]["probe"].as_str()?, x["value"][1].as_str()?.parse().ok()?))).collect()).unwrap_or_default();
    assert!(probed.len() == 1 && probed[0].0 == "spam" && (0.0..=1.0).contains(&probed[0].1), "the probe's series (rank 0 evaluates): {probe}");

    let dashboards: Vec<String> = std::fs::read_dir(root().join("grafana/dashboards")).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts/check_dashboards.py"))
        .arg(format!("http://127.0.0.1:{prom_port}"))
        .args(&dashboards)
        .args(["--min-values", "rank=2", "--min-values", "run_id=2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "dashboards:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // The run report from the same runs, checked the way a user sees it: in a browser.
    for run_dir in ["pre", "ft"] {
        let (code, stdout, err) = crate::util::run_cli(&["report", dir.path().join(run_dir).to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let index = dir.path().join(run_dir).join("report/index.html");
        let html = std::fs::read_to_string(&index).unwrap();
        assert!(html.matches("<svg").count() >= 4, "{stdout}");
        assert!(html.contains("learning rate") && html.contains("eval accuracy") && html.contains("median tokens/s"));
        if run_dir == "ft" {
            assert!(html.contains("fine-tuning: training vs held-out loss"), "the over-fitting curve");
        }
        browser_check(&index, &root().join(format!("target/report-{run_dir}.png")));
    }
    // Two runs overlaid, with a legend naming both.
    let both = dir.path().join("both");
    let (code, _, err) = crate::util::run_cli(&["report", dir.path().join("pre").to_str().unwrap(), dir.path().join("ft").to_str().unwrap(), "--out", both.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(both.join("index.html")).unwrap();
    assert!(html.contains("pre · pretrain") && html.contains("ft · finetune"), "legend names both runs");
    browser_check(&both.join("index.html"), &root().join("target/report-overlay.png"));
}

/// Renders a report in headless Chromium (Debian's `chromium`, installed by the set-up): its
/// DOM after the page's own layout check must show every chart drawn and none cut off, and a
/// screenshot goes to `png` for a person to look at.
fn browser_check(index: &Path, png: &Path) {
    let url = format!("file://{}", index.display());
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=800,1200", "--virtual-time-budget=5000"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium (Debian package; `make setup` installs it)")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let charts = std::fs::read_to_string(index).unwrap().matches("<svg").count();
    assert!(dom.contains(&format!("data-charts=\"{charts}\"")), "the browser did not lay out {charts} charts:\n{}", &dom[..dom.len().min(600)]);
    assert!(dom.contains("data-empty=\"0\"") && dom.contains("data-clipped=\"0\""), "empty or clipped charts:\n{}", &dom[..dom.len().min(600)]);
    let _ = std::fs::remove_file(png);
    let shot = chromium(&[&format!("--screenshot={}", png.display())]);
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    assert!(std::fs::metadata(png).map(|m| m.len()).unwrap_or(0) > 10_000, "no screenshot at {}", png.display());
}

/// The alert rules and the shipped Prometheus config, tested like code: syntax, then the unit
/// tests in `grafana/alerts.test.yml` (synthetic series; which alerts fire and which stay
/// silent).
#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let grafana = root().join("grafana");
    for args in [&["check", "config", "prometheus.yml"][..], &["check", "rules", "alerts.yml"], &["test", "rules", "alerts.test.yml"]] {
        let out = Command::new("promtool").args(args).current_dir(&grafana).output().expect("promtool (Debian package prometheus)");
        assert!(out.status.success(), "promtool {args:?}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}
