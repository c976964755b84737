//! The sweep's results: every metric's mean ± standard deviation over seeds per group of the
//! grid (rows × columns as the spec places the axes), as Markdown and JSON. Pure: the cells'
//! results in, text out.

use serde::Serialize;

use super::results::RunResult;
use super::spec::{Metric, Spec};

/// A cell's labels, seed and what its run folder says.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The label of each axis, in axis order.
    pub labels: Vec<String>,
    /// Its seed.
    pub seed: u64,
    /// Its run's result.
    pub result: RunResult,
}

/// One entry of the table: a row, a column and a metric over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The row's labels (of the row axes, in order).
    pub row: Vec<String>,
    /// The column's labels.
    pub column: Vec<String>,
    /// The metric's name.
    pub metric: String,
    /// Excluded by the spec.
    pub excluded: bool,
    /// `(seed, value)` of every finished cell that has the metric.
    pub values: Vec<(u64, f64)>,
    /// Their mean (unscaled).
    pub mean: Option<f64>,
    /// Their sample standard deviation (0 for one value).
    pub sd: Option<f64>,
}

/// Mean and sample standard deviation.
pub fn mean_sd(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 { (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    Some((m, sd))
}

/// Every combination of the levels of `axes` (by name), in level order, the last fastest.
fn combos(spec: &Spec, axes: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![vec![]];
    for name in axes {
        let a = spec.axes.iter().find(|a| &a.name == name).expect("checked when the spec was read");
        out = out.into_iter().flat_map(|c| a.levels.iter().map(move |l| [c.clone(), vec![l.label.clone()]].concat())).collect();
    }
    out
}

/// The full labels (axis order) of a row and a column.
fn labels_of(spec: &Spec, row: &[String], column: &[String]) -> Vec<String> {
    spec.axes
        .iter()
        .map(|a| {
            let at = |names: &[String], labels: &[String]| names.iter().position(|n| n == &a.name).map(|i| labels[i].clone());
            at(&spec.rows, row).or_else(|| at(&spec.columns, column)).expect("every axis is a row or a column")
        })
        .collect()
}

/// The groups of every metric, rows then columns in order.
pub fn aggregate(spec: &Spec, outcomes: &[Outcome]) -> Vec<Group> {
    let mut out = Vec::new();
    for m in &spec.metrics {
        for row in combos(spec, &spec.rows) {
            for column in combos(spec, &spec.columns) {
                let labels = labels_of(spec, &row, &column);
                let values: Vec<(u64, f64)> = outcomes.iter().filter(|o| o.labels == labels && o.result.finished).filter_map(|o| o.result.metrics.get(&m.name).map(|v| (o.seed, *v))).filter(|(_, v)| v.is_finite()).collect();
                let ms = mean_sd(&values.iter().map(|(_, v)| *v).collect::<Vec<_>>());
                out.push(Group { excluded: spec.excluded(&labels), row: row.clone(), column, metric: m.name.clone(), values, mean: ms.map(|x| x.0), sd: ms.map(|x| x.1) });
            }
        }
    }
    out
}

/// A group as a table cell: `91.2 ± 1.3`, `(n=2)` when fewer seeds than planned finished.
fn cell(g: &Group, m: &Metric, seeds: usize) -> String {
    if g.excluded {
        return "n/a".into();
    }
    match (g.mean, g.sd) {
        (Some(mean), Some(sd)) => {
            let d = m.digits;
            let short = if g.values.len() < seeds { format!(" (n={})", g.values.len()) } else { String::new() };
            format!("{:.d$} ± {:.d$}{short}", mean * m.scale, sd * m.scale)
        }
        _ => "–".into(),
    }
}

/// The Markdown tables: one per metric, or, when no axis is a column, one with a column per
/// metric.
pub fn markdown(spec: &Spec, groups: &[Group]) -> String {
    let seeds = spec.seeds.len();
    let columns = combos(spec, &spec.columns);
    let mut s = String::new();
    if spec.columns.is_empty() && spec.metrics.len() > 1 {
        let names: Vec<String> = spec.metrics.iter().map(|m| format!("{}{}", m.label, if m.scale == 100.0 { " (%)" } else { "" })).collect();
        s += &format!("Mean ± standard deviation over {seeds} seed(s):\n\n");
        s += &format!("| {} | {} |\n", spec.rows.join(" | "), names.join(" | "));
        s += &format!("|{}\n", "---|".repeat(spec.rows.len() + names.len()));
        for row in combos(spec, &spec.rows) {
            let cells: Vec<String> = spec.metrics.iter().map(|m| groups.iter().find(|g| g.metric == m.name && g.row == row).map_or("–".into(), |g| cell(g, m, seeds))).collect();
            s += &format!("| {} | {} |\n", row.join(" | "), cells.join(" | "));
        }
        s += "\n";
        return s;
    }
    for m in &spec.metrics {
        let scaled = if m.scale == 100.0 { " in percent" } else { "" };
        s += &format!("**{}**{scaled}, mean ± standard deviation over {seeds} seed(s):\n\n", m.label);
        let row_head: Vec<String> = if spec.rows.is_empty() { vec![String::new()] } else { spec.rows.clone() };
        let col_head: Vec<String> = columns.iter().map(|c| if c.is_empty() { m.label.clone() } else { spec.columns.iter().zip(c).map(|(a, l)| format!("{a} = {l}")).collect::<Vec<_>>().join(", ") }).collect();
        s += &format!("| {} | {} |\n", row_head.join(" | "), col_head.join(" | "));
        s += &format!("|{}\n", "---|".repeat(row_head.len() + col_head.len()));
        for row in combos(spec, &spec.rows) {
            let row_cells: Vec<String> = if row.is_empty() { vec![m.label.clone()] } else { row.clone() };
            let cells: Vec<String> = columns.iter().map(|c| groups.iter().find(|g| g.metric == m.name && g.row == row && &g.column == c).map_or("–".into(), |g| cell(g, m, seeds))).collect();
            s += &format!("| {} | {} |\n", row_cells.join(" | "), cells.join(" | "));
        }
        s += "\n";
    }
    s
}

/// The JSON of a sweep's results: its cells and its groups.
pub fn json(spec: &Spec, outcomes: &[Outcome], groups: &[Group], meta: serde_json::Value) -> serde_json::Value {
    let axes: Vec<&str> = spec.axes.iter().map(|a| a.name.as_str()).collect();
    let cells: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            let labels: serde_json::Map<String, serde_json::Value> = axes.iter().zip(&o.labels).map(|(a, l)| (a.to_string(), l.clone().into())).collect();
            serde_json::json!({ "labels": labels, "seed": o.seed, "finished": o.result.finished, "metrics": o.result.metrics })
        })
        .collect();
    serde_json::json!({ "sweep": spec.name, "title": spec.title, "seeds": spec.seeds, "rows": spec.rows, "columns": spec.columns, "metrics": spec.metrics, "meta": meta, "cells": cells, "groups": groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SPEC: &str = r#"
[sweep]
base = "b.toml"
seeds = [1, 2, 3]
metrics = [{ name = "accuracy", scale = 100 }]
[[axis]]
name = "start"
level = [{ label = "random" }, { label = "MiniLM" }]
[[axis]]
name = "lr"
key = "train.lr"
values = [1e-4, 1e-3]
[[exclude]]
start = "MiniLM"
lr = "1e-3"
"#;

    fn outcome(start: &str, lr: &str, seed: u64, acc: Option<f64>, finished: bool) -> Outcome {
        let mut result = RunResult { finished, ..Default::default() };
        if let Some(a) = acc {
            result.metrics.insert("accuracy".into(), a);
        }
        Outcome { labels: vec![start.into(), lr.into()], seed, result }
    }

    #[test]
    fn groups_take_mean_and_sample_sd_of_finished_seeds_and_say_when_some_are_missing() {
        let spec = Spec::parse(Path::new("s.toml"), SPEC, false).unwrap();
        let o = vec![
            outcome("random", "1e-4", 1, Some(0.5), true),
            outcome("random", "1e-4", 2, Some(0.6), true),
            outcome("random", "1e-4", 3, Some(0.7), true),
            outcome("random", "1e-3", 1, Some(0.9), true),
            outcome("random", "1e-3", 2, Some(0.1), false),
            outcome("MiniLM", "1e-4", 1, None, true),
        ];
        let g = aggregate(&spec, &o);
        assert_eq!(g.len(), 4);
        assert_eq!((g[0].row.clone(), g[0].column.clone()), (vec!["random".to_string()], vec!["1e-4".to_string()]));
        assert!((g[0].mean.unwrap() - 0.6).abs() < 1e-12 && (g[0].sd.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(g[1].values, vec![(1, 0.9)], "an unfinished run does not count");
        assert!(g[3].excluded);
        let md = markdown(&spec, &g);
        assert!(md.contains("**accuracy** in percent, mean ± standard deviation over 3 seed(s)"), "{md}");
        assert!(md.contains("| start | lr = 1e-4 | lr = 1e-3 |"), "{md}");
        assert!(md.contains("| random | 60.0 ± 10.0 | 90.0 ± 0.0 (n=1) |"), "{md}");
        assert!(md.contains("| MiniLM | – | n/a |"), "{md}");
        let j = json(&spec, &o, &g, serde_json::json!({}));
        assert_eq!(j["cells"][0]["labels"]["lr"], "1e-4");
        assert_eq!(j["groups"][0]["values"][2][1], 0.7);
    }

    #[test]
    fn with_no_column_axis_the_metrics_are_the_columns() {
        let text = SPEC.replace("metrics = [{ name = \"accuracy\", scale = 100 }]", "metrics = [{ name = \"accuracy\", scale = 100 }, \"loss\"]\nrows = [\"start\", \"lr\"]\ncolumns = []");
        let spec = Spec::parse(Path::new("s.toml"), &text, false).unwrap();
        let mut o = outcome("random", "1e-4", 1, Some(0.5), true);
        o.result.metrics.insert("loss".into(), 0.25);
        let md = markdown(&spec, &aggregate(&spec, &[o]));
        assert!(md.contains("| start | lr | accuracy (%) | loss |") && md.contains("| random | 1e-4 | 50.0 ± 0.0 (n=1) | 0.250 ± 0.000 (n=1) |") && md.contains("| MiniLM | 1e-3 | n/a | n/a |"), "{md}");
    }

    #[test]
    fn mean_sd_matches_a_hand_count() {
        assert_eq!(mean_sd(&[]), None);
        assert_eq!(mean_sd(&[2.0]), Some((2.0, 0.0)));
        let (m, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(m, 5.0);
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }
}
