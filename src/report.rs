//! `pretune report RUN_DIR`: plots from a run's `events.jsonl` (loss per objective, learning
//! rate, throughput, evaluation metrics over steps), drawn with `plotters` as SVG files plus a
//! self-contained `index.html` that inlines them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// Errors of a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading events or writing files.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Nothing to plot.
    #[error("{0}: no logged steps or evaluations")]
    Empty(PathBuf),
    /// Drawing failed.
    #[error("drawing {0} failed: {1}")]
    Draw(String, String),
}

/// Named series of `(step, value)` points, by chart.
type Charts = BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>;

fn collect(events: &str) -> Charts {
    let mut charts: Charts = BTreeMap::new();
    let mut push = |chart: &str, series: String, step: f64, v: f64| {
        if v.is_finite() {
            charts.entry(chart.to_owned()).or_default().entry(series).or_default().push((step, v));
        }
    };
    for line in events.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(step), phase) = (v.get("step").and_then(|s| s.as_f64()), v.get("phase").and_then(|p| p.as_str()).unwrap_or("run")) else { continue };
        if let Some(losses) = v.get("losses").and_then(|l| l.as_object()) {
            for (obj, x) in losses {
                push("loss", format!("{phase} {obj}"), step, x.as_f64().unwrap_or(f64::NAN));
            }
        } else if let Some(x) = v.get("loss").and_then(|x| x.as_f64()) {
            push("loss", phase.to_owned(), step, x);
        }
        if let Some(x) = v.get("lr").and_then(|x| x.as_f64()) {
            push("learning rate", phase.to_owned(), step, x);
        }
        if let Some(x) = v.get("tokens_per_second").and_then(|x| x.as_f64()) {
            push("throughput (tokens/s)", phase.to_owned(), step, x);
        }
        if let Some(eval) = v.get("eval").and_then(|e| e.as_object()) {
            for (k, x) in eval.iter().filter(|(k, _)| !k.contains('.')) {
                push(&format!("eval {k}"), phase.to_owned(), step, x.as_f64().unwrap_or(f64::NAN));
            }
        }
    }
    charts
}

fn draw(title: &str, series: &BTreeMap<String, Vec<(f64, f64)>>) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let points = series.values().flatten();
        let (x0, x1) = points.clone().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = points.fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let pad = ((y1 - y0).abs() * 0.05).max(1e-9);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("step").draw().map_err(|e| e.to_string())?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Writes `RUN_DIR/report/*.svg` and `index.html`; returns the HTML path.
///
/// # Errors
/// [`ReportError`].
pub fn report(run_dir: &Path) -> Result<PathBuf, ReportError> {
    let events_path = run_dir.join("events.jsonl");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ReportError::Io { path, source }
    };
    let events = std::fs::read_to_string(&events_path).map_err(io(&events_path))?;
    let charts = collect(&events);
    if charts.is_empty() {
        return Err(ReportError::Empty(events_path));
    }
    let out = run_dir.join("report");
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pretune report: {0}</title></head><body style=\"font-family:sans-serif\"><h1>pretune report</h1><p>{0}</p>\n",
        run_dir.display()
    );
    for (title, series) in &charts {
        let svg = draw(title, series).map_err(|e| ReportError::Draw(title.clone(), e))?;
        let file: String = title.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let path = out.join(format!("{file}.svg"));
        std::fs::write(&path, &svg).map_err(io(&path))?;
        html.push_str(&format!("<h2>{title}</h2>\n{svg}\n"));
    }
    html.push_str("</body></html>\n");
    let index = out.join("index.html");
    std::fs::write(&index, html).map_err(io(&index))?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_charts_per_phase_and_objective() {
        let ev = r#"{"phase":"pretrain","step":1,"loss":9.0,"losses":{"mlm":8.3,"nsp":0.7},"lr":0.0,"tokens_per_second":100.0}
{"phase":"pretrain","step":2,"loss":8.0,"losses":{"mlm":7.4,"nsp":0.6},"lr":0.1,"tokens_per_second":120.0}
{"phase":"pretrain","step":2,"eval":{"mlm_loss":7.9,"accuracy":0.1}}
{"phase":"finetune","step":5,"loss":0.6,"lr":0.01,"tokens_per_second":90.0}
{"phase":"finetune","step":5,"eval":{"accuracy":0.8,"precision.ham":0.7}}"#;
        let c = collect(ev);
        assert_eq!(c["loss"].keys().collect::<Vec<_>>(), vec!["finetune", "pretrain mlm", "pretrain nsp"]);
        assert_eq!(c["eval accuracy"]["pretrain"], vec![(2.0, 0.1)]);
        assert_eq!(c["eval accuracy"]["finetune"], vec![(5.0, 0.8)]);
        assert!(!c.contains_key("eval precision.ham"), "per-class numbers stay in the tables");
        let svg = draw("loss", &c["loss"]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("pretrain mlm"));
    }
}
