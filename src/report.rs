//! `pretune report RUN_DIR...`: what a user asks first about a run, from its `events.jsonl` and
//! `config.toml`: the config, throughput per phase, the evaluation table, and charts (loss per
//! objective, training against held-out loss (over-fitting shows as the curves parting),
//! learning rate, throughput, each evaluation metric) drawn with `plotters` as SVG and inlined
//! into one self-contained `index.html`. Several runs overlay their curves with a legend
//! (two learning rates, two seeds).
//!
//! The page checks its own layout when a browser opens it: a small script measures every chart
//! and writes `data-charts`, `data-empty` and `data-clipped` on `<body>`, which a headless
//! browser's DOM dump shows (`tests/observability.rs` renders it in Chromium).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::actors::events::{read_records, Record, RecordError};
use crate::files::FileError;
use crate::workload::Phase;

/// Errors of a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading events or writing files.
    #[error("report I/O failed")]
    Io(#[from] FileError),
    /// `events.jsonl` holds a line that is not a record.
    #[error(transparent)]
    Events(RecordError),
    /// Nothing to plot.
    #[error("{0}: no logged steps or evaluations")]
    Empty(PathBuf),
    /// The folder is not a run's: no `events.jsonl` (a typo, a sweep's top folder, a
    /// checkpoint folder). A usage error, unlike a run whose events cannot be read.
    #[error("{0} is not a run folder: it has no events.jsonl (give the folder a run writes, its run.out_dir)")]
    NotARun(PathBuf),
    /// Drawing failed.
    #[error("drawing {0} failed")]
    Draw(String, #[source] DrawingAreaErrorKind<std::io::Error>),
}

impl From<RecordError> for ReportError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::File(f) => ReportError::Io(f),
            e => ReportError::Events(e),
        }
    }
}

/// Named series of `(step, value)` points, by chart.
type Charts = BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>;

/// One run's events, digested.
#[derive(Debug, Default)]
struct RunData {
    charts: Charts,
    /// Phase -> logged tokens/s.
    throughput: BTreeMap<String, Vec<f64>>,
    /// (phase, step) -> metric -> value.
    evals: BTreeMap<(String, u64), BTreeMap<String, f64>>,
}

fn collect(records: &[Record]) -> RunData {
    let mut run = RunData::default();
    let mut push = |chart: &str, series: String, step: f64, v: f64| {
        if v.is_finite() {
            run.charts.entry(chart.to_owned()).or_default().entry(series).or_default().push((step, v));
        }
    };
    for record in records {
        match record {
            Record::Step(r) => {
                let (phase, step) = (r.phase.as_str(), r.step as f64);
                if r.losses.is_empty() {
                    push("loss", phase.to_owned(), step, r.loss);
                }
                for (obj, x) in &r.losses {
                    push("loss", format!("{phase} {obj}"), step, *x);
                }
                if r.phase == Phase::Finetune {
                    push("fine-tuning: training vs held-out loss", "training".into(), step, r.loss);
                }
                push("learning rate", phase.to_owned(), step, r.lr);
                push("throughput", phase.to_owned(), step, r.tokens_per_second);
                if let Some(m) = r.mfu {
                    push("model FLOPs utilisation", phase.to_owned(), step, 100.0 * m);
                }
                run.throughput.entry(phase.to_owned()).or_default().push(r.tokens_per_second);
            }
            Record::Eval { phase, step, eval } => {
                // `[[probe]]`s: one curve per probe, zero-shot accuracy by pre-training step.
                for (k, &x) in &eval.values {
                    if let Some(name) = k.strip_prefix("probe.").and_then(|r| r.strip_suffix(".accuracy")) {
                        push("probe accuracy", format!("probe {name}"), *step as f64, x);
                    }
                }
                // `[retention]`: what fine-tuning erased of the checkpoint's pre-training.
                if let Some(&x) = eval.values.get("retention.loss_increase") {
                    push("retention: pre-training loss increase", phase.to_string(), *step as f64, x);
                }
                for (k, &x) in eval.values.iter().filter(|(k, _)| !k.contains('.')) {
                    push(&format!("eval {k}"), phase.to_string(), *step as f64, x);
                    run.evals.entry((phase.to_string(), *step)).or_default().insert(k.clone(), x);
                    if *phase == Phase::Finetune && k == "loss" {
                        push("fine-tuning: training vs held-out loss", "held-out".into(), *step as f64, x);
                    }
                }
            }
            _ => {}
        }
    }
    run
}

/// A run's evaluations as a table: a row per (phase, step), a column per metric.
fn eval_table(html: &mut String, dir: &Path, data: &RunData) {
    if data.evals.is_empty() {
        return;
    }
    let names: Vec<&String> = data.evals.values().flat_map(|m| m.keys()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let _ = write!(html, "<h2>Evaluations: {}</h2>\n<table><tr><th>phase</th><th>step</th>", escape(&run_label(dir)));
    for n in &names {
        let _ = write!(html, "<th>{}</th>", escape(n));
    }
    html.push_str("</tr>\n");
    for ((phase, step), m) in &data.evals {
        let _ = write!(html, "<tr><td>{phase}</td><td>{step}</td>");
        for n in &names {
            let _ = write!(html, "<td>{}</td>", m.get(*n).map_or(String::new(), |v| format!("{v:.4}")));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
}

/// The y axis' label: what is plotted, with its unit.
fn y_label(chart: &str) -> String {
    match chart {
        "loss" | "fine-tuning: training vs held-out loss" => "cross-entropy (nats)".into(),
        "learning rate" => "learning rate (per update)".into(),
        "throughput" => "tokens / s".into(),
        "probe accuracy" => "zero-shot cloze accuracy (fraction)".into(),
        "model FLOPs utilisation" => "MFU (% of the peak)".into(),
        "retention: pre-training loss increase" => "held-out pre-training loss, now minus at the start (nats)".into(),
        c => match c.strip_prefix("eval ") {
            Some("perplexity") => "perplexity (exp of nats)".into(),
            Some(m) if m.ends_with("loss") => format!("{m} (nats)"),
            Some("scored_tokens") => "scored tokens (count)".into(),
            Some(m) => format!("{m} (fraction)"),
            None => c.into(),
        },
    }
}

fn draw(title: &str, series: &BTreeMap<String, Vec<(f64, f64)>>) -> Result<String, DrawingAreaErrorKind<std::io::Error>> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let points = series.values().flatten();
        let (x0, x1) = points.clone().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = points.fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let pad = ((y1 - y0).abs() * 0.05).max(1e-9);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            // Room for the last step label, centred on the right edge of the plot.
            .margin_right(40)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))?;
        chart
            .configure_mesh()
            .x_desc("step (optimizer updates)")
            .y_desc(y_label(title))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
    }
    Ok(svg)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The label of a run in an overlay: its folder's name.
fn run_label(dir: &Path) -> String {
    dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Measures every chart in the browser and records the verdict on `<body>`.
const LAYOUT_CHECK: &str = r#"<script>
addEventListener("load", () => {
  const charts = [...document.querySelectorAll("svg")];
  const width = document.documentElement.clientWidth;
  const empty = charts.filter(s => { const r = s.getBoundingClientRect(); return r.width < 10 || r.height < 10 || s.querySelectorAll("polyline, path").length === 0; });
  // A chart is clipped when it leaves the page, or when any of its labels leaves the chart.
  const clipped = charts.filter(s => {
    const box = s.getBoundingClientRect();
    return box.right > width + 0.5 || [...s.querySelectorAll("text")].some(t => {
      const r = t.getBoundingClientRect();
      return r.width > 0 && (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5);
    });
  });
  document.body.dataset.charts = charts.length;
  document.body.dataset.empty = empty.length;
  document.body.dataset.clipped = clipped.length + (document.documentElement.scrollWidth > width ? 1 : 0);
});
</script>"#;

/// Writes the report of one run into `RUN_DIR/report/`, or of several runs overlaid into
/// `out` (default `./pretune-report`); returns the path of `index.html`.
///
/// # Errors
/// [`ReportError`].
pub fn report(run_dirs: &[PathBuf], out: Option<&Path>) -> Result<PathBuf, ReportError> {
    let mut runs = Vec::new();
    for dir in run_dirs {
        let events_path = dir.join("events.jsonl");
        if !events_path.exists() {
            return Err(ReportError::NotARun(dir.clone()));
        }
        let data = collect(&read_records(&events_path)?);
        if data.charts.is_empty() {
            return Err(ReportError::Empty(events_path));
        }
        runs.push((dir.clone(), data));
    }
    let out = match (out, run_dirs) {
        (Some(o), _) => o.to_path_buf(),
        (None, [one]) => one.join("report"),
        (None, _) => PathBuf::from("pretune-report"),
    };
    std::fs::create_dir_all(&out).map_err(FileError::at(&out))?;
    // Overlay: chart -> "run · series" -> points.
    let several = runs.len() > 1;
    let mut charts: Charts = BTreeMap::new();
    for (dir, data) in &runs {
        for (chart, series) in &data.charts {
            for (name, pts) in series {
                let name = if several { format!("{} · {name}", run_label(dir)) } else { name.clone() };
                charts.entry(chart.clone()).or_default().insert(name, pts.clone());
            }
        }
    }
    let title = runs.iter().map(|(d, _)| d.display().to_string()).collect::<Vec<_>>().join(", ");
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pretune report: {0}</title>\
         <style>body{{font-family:sans-serif;max-width:760px;margin:1em auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:8px}}</style>\
         {LAYOUT_CHECK}</head><body><h1>pretune report</h1><p>{0}</p>\n",
        escape(&title)
    );
    html.push_str("<h2>Throughput per phase</h2>\n<table><tr><th>run</th><th>phase</th><th>median tokens/s</th><th>logged steps</th></tr>\n");
    for (dir, data) in &runs {
        for (phase, xs) in &data.throughput {
            let _ = writeln!(html, "<tr><td>{}</td><td>{phase}</td><td>{:.0}</td><td>{}</td></tr>", escape(&run_label(dir)), median(xs), xs.len());
        }
    }
    html.push_str("</table>\n");
    for (dir, data) in &runs {
        eval_table(&mut html, dir, data);
    }
    // What a user reads first: losses, then over-fitting, then speed and schedule, then metrics.
    let rank = |t: &str| ["loss", "fine-tuning: training vs held-out loss", "throughput", "model FLOPs utilisation", "learning rate"].iter().position(|x| *x == t).unwrap_or(5);
    let mut ordered: Vec<_> = charts.iter().collect();
    ordered.sort_by_key(|(t, _)| rank(t));
    for (title, series) in ordered {
        let svg = draw(title, series).map_err(|e| ReportError::Draw(title.clone(), e))?;
        let file: String = title.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let path = out.join(format!("{file}.svg"));
        std::fs::write(&path, &svg).map_err(FileError::at(&path))?;
        let _ = write!(html, "<h2>{}</h2>\n{svg}\n", escape(title));
    }
    for (dir, _) in &runs {
        if let Ok(cfg) = std::fs::read_to_string(dir.join("config.toml")) {
            let _ = writeln!(html, "<details><summary>config: {}</summary><pre>{}</pre></details>", escape(&run_label(dir)), escape(&cfg));
        }
    }
    html.push_str("</body></html>\n");
    let index = out.join("index.html");
    std::fs::write(&index, html).map_err(FileError::at(&index))?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = r#"{"kind":"step","phase":"pretrain","step":1,"loss":9.0,"losses":{"mlm":8.3,"nsp":0.7},"lr":0.0,"grad_norm":1.0,"tokens":64,"tokens_per_second":100.0,"elapsed_s":0.6,"data_wait_share":0.0}
{"kind":"step","phase":"pretrain","step":2,"loss":8.0,"losses":{"mlm":7.4,"nsp":0.6},"lr":0.1,"grad_norm":1.0,"tokens":128,"tokens_per_second":120.0,"elapsed_s":1.1,"data_wait_share":0.0,"mfu":0.25}
{"kind":"eval","phase":"pretrain","step":2,"eval":{"mlm_loss":7.9,"accuracy":0.1,"probe.spam.accuracy":0.6,"probe.spam.loss":0.7}}
{"kind":"step","phase":"finetune","step":5,"loss":0.6,"losses":{},"lr":0.01,"grad_norm":1.0,"tokens":50,"tokens_per_second":90.0,"elapsed_s":0.5,"data_wait_share":0.0}
{"kind":"eval","phase":"finetune","step":5,"eval":{"accuracy":0.8,"loss":0.7,"precision.ham":0.7,"retention.loss_increase":0.05,"retention.mlm_loss":6.2}}"#;

    #[test]
    fn events_become_charts_tables_and_a_train_vs_held_out_curve() {
        let r = collect(&crate::actors::events::parse_records(EVENTS).unwrap());
        let c = &r.charts;
        assert_eq!(c["loss"].keys().collect::<Vec<_>>(), vec!["finetune", "pretrain mlm", "pretrain nsp"]);
        assert_eq!(c["eval accuracy"]["pretrain"], vec![(2.0, 0.1)]);
        assert_eq!(c["eval accuracy"]["finetune"], vec![(5.0, 0.8)]);
        assert!(!c.contains_key("eval precision.ham"), "per-class numbers stay in the tables");
        assert_eq!(c["probe accuracy"]["probe spam"], vec![(2.0, 0.6)], "a probe's accuracy is a curve of its own");
        assert_eq!(c["model FLOPs utilisation"]["pretrain"], vec![(2.0, 25.0)], "MFU in percent, where the step reports it");
        assert_eq!(c["retention: pre-training loss increase"]["finetune"], vec![(5.0, 0.05)]);
        assert!(!c.contains_key("eval retention.mlm_loss"));
        let tv = &c["fine-tuning: training vs held-out loss"];
        assert_eq!((tv["training"].clone(), tv["held-out"].clone()), (vec![(5.0, 0.6)], vec![(5.0, 0.7)]));
        assert_eq!(r.throughput["pretrain"], vec![100.0, 120.0]);
        assert_eq!(r.evals[&("finetune".to_string(), 5)]["accuracy"], 0.8);
        let svg = draw("loss", &c["loss"]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("pretrain mlm"));
        assert!(svg.contains("step (optimizer updates)") && svg.contains("cross-entropy (nats)"), "axes carry units");
    }

    #[test]
    fn several_runs_overlay_with_their_names_in_the_legend() {
        let dir = tempfile::tempdir().unwrap();
        for (name, scale) in [("lr-1e-4", 1.0), ("lr-1e-3", 0.5)] {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("events.jsonl"), EVENTS.replace("\"loss\":0.6", &format!("\"loss\":{}", 0.6 * scale))).unwrap();
            std::fs::write(d.join("config.toml"), "[train]\nlr = 1e-4\n").unwrap();
        }
        let out = dir.path().join("cmp");
        let index = report(&[dir.path().join("lr-1e-4"), dir.path().join("lr-1e-3")], Some(&out)).unwrap();
        let html = std::fs::read_to_string(index).unwrap();
        assert!(html.contains("lr-1e-4 · finetune") && html.contains("lr-1e-3 · finetune"), "legend names both runs");
        assert!(html.contains("<th>median tokens/s</th>") && html.contains("<summary>config: lr-1e-3</summary>"));
        let e = report(&[dir.path().join("lr-1e-4"), dir.path().to_path_buf()], None).unwrap_err();
        assert!(matches!(&e, ReportError::NotARun(d) if d == dir.path()), "a folder without events.jsonl is not a run: {e}");
        assert!(matches!(report(&[dir.path().join("missing")], None), Err(ReportError::NotARun(_))));
        std::fs::create_dir_all(dir.path().join("unreadable/events.jsonl")).unwrap();
        assert!(matches!(report(&[dir.path().join("unreadable")], None), Err(ReportError::Io(_))), "a run whose events cannot be read is an I/O failure");
    }
}
