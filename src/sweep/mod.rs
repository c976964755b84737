//! `pretune sweep SPEC.toml`: a grid over config keys, every cell a run of the engine in its
//! own folder, and the table of each metric's mean ± standard deviation over seeds (Markdown,
//! JSON, and an SVG per metric with error bars), optionally written into a doc between the
//! sweep's markers. What users of `transformers` write a script for, with resume built in.
//!
//! - [`spec`]: the spec and its cells (pure).
//! - [`runner`]: the runs, as child processes, `--jobs` at a time, resumable.
//! - [`results`]: what a run folder's `events.jsonl` says.
//! - [`table`] and [`plot`]: the results, rendered (pure).

pub mod plot;
pub mod results;
pub mod runner;
pub mod spec;
pub mod table;

use std::path::{Path, PathBuf};

pub use spec::{Spec, SpecError};

use runner::{Job, JobEnd, Runner};
use crate::workload::Phase;

/// Why a sweep could not run or render.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The spec is wrong.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A cell's config is wrong (every problem of every cell, checked before anything runs).
    #[error("{}: the cells' configs are invalid:\n  - {}", spec.display(), problems.join("\n  - "))]
    Cells {
        /// The spec.
        spec: PathBuf,
        /// `cell: key: problem` lines.
        problems: Vec<String>,
    },
    /// A job's config could not be made.
    #[error("{job}: cannot make its config")]
    Config {
        /// The job.
        job: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A job's folder holds a run of another config.
    #[error("{} was run with another config (the spec or its base changed); delete the folder to run it again, or give the sweep another out_dir", dir.display())]
    Changed {
        /// Its folder.
        dir: PathBuf,
    },
    /// The sweep's folder is in use by another sweep.
    #[error("the sweep's folder")]
    Lock(#[source] crate::actors::RunError),
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// A run's events could not be read.
    #[error(transparent)]
    Records(#[from] crate::actors::events::RecordError),
    /// A child could not be started or waited for.
    #[error("cannot run {}", exe.display())]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A plot could not be drawn.
    #[error("cannot draw the plot of {0}")]
    Draw(String),
}

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct Options {
    /// Runs at a time (each gets the cores divided among them unless the spec sets
    /// `run.threads`).
    pub jobs: usize,
    /// Render from the runs on disk without running anything.
    pub table_only: bool,
    /// Rewrite the spec's `doc` (never under `--smoke`).
    pub write_doc: bool,
    /// The `pretune` executable the runs use (default: this one).
    pub exe: Option<PathBuf>,
}

/// What a sweep did.
#[derive(Debug)]
pub struct SweepReport {
    /// `OUT/results.md`.
    pub results: PathBuf,
    /// The tables.
    pub markdown: String,
    /// Jobs that failed: name and why.
    pub failed: Vec<(String, String)>,
    /// Cells not run because the sweep was asked to stop.
    pub not_started: usize,
    /// Cells finished, of all.
    pub finished: (usize, usize),
}

/// The jobs: the pre-training runs, then the cells (`all`: every cell of the grid, also under
/// `--smoke`).
fn jobs(spec: &Spec, all: bool) -> (Vec<Job>, Vec<Job>) {
    let interp = |set: &[spec::Setting]| set.iter().map(|(k, v)| (k.clone(), spec.interpolate(v).expect("checked when the spec was read"))).collect::<Vec<_>>();
    let pre = spec.pretrain.iter().map(|p| Job { name: format!("pretrain {}", p.name), base: p.config.clone(), dir: spec.pretrain_dir(&p.name), set: interp(&p.set), pick: spec::Pick::Last, keep: spec::Keep::All }).collect();
    let cells = if all { spec.all_cells() } else { spec.cells() };
    let cells = cells
        .into_iter()
        .map(|c| {
            let mut name: Vec<String> = spec.axes.iter().zip(&c.labels).map(|(a, l)| format!("{}={l}", a.name)).collect();
            name.push(format!("seed={}", c.seed));
            Job { name: name.join(" "), base: spec.base.clone(), dir: spec.cell_dir(&c), set: interp(&c.set), pick: c.pick, keep: spec.keep }
        })
        .collect();
    (pre, cells)
}

/// Every job's config checked the way `pretune train` reads it (unknown keys, wrong types),
/// so a typo in a spec fails in a second, not after an hour of cells.
fn check(spec: &Spec, jobs: &[Job], threads: usize) -> Result<(), SweepError> {
    // A problem of the shared settings shows in every cell: said once, with how many.
    let mut found: Vec<(String, Vec<&str>)> = Vec::new();
    for job in jobs {
        let here = match runner::job_config(job, threads) {
            Ok(table) => crate::config::from_table_lenient(table).1,
            // Without the job's name, so a base that cannot be read is one line for all.
            Err(SweepError::Config { source, .. }) => vec![crate::error_chain(&*source)],
            Err(e) => vec![crate::error_chain(&e)],
        };
        for p in here {
            match found.iter_mut().find(|(q, _)| *q == p) {
                Some((_, at)) => at.push(&job.name),
                None => found.push((p, vec![&job.name])),
            }
        }
    }
    let problems: Vec<String> = found
        .into_iter()
        .map(|(p, at)| match at.len() {
            1 => format!("{}: {p}", at[0]),
            n => format!("{p} (in {n} runs, the first: {})", at[0]),
        })
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(SweepError::Cells { spec: spec.file.clone(), problems }) }
}

/// Runs (unless `table_only`) and renders a sweep.
///
/// # Errors
/// [`SweepError`]: a bad spec or cell config before anything runs, a folder in use, or a
/// file that cannot be written. Failed cells are not errors: they are listed in the report.
pub fn run(spec: &Spec, opts: &Options) -> Result<SweepReport, SweepError> {
    let (pre, cells) = jobs(spec, false);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs_n = opts.jobs.max(1);
    let threads = (cores / jobs_n).max(1);
    let mut failed = Vec::new();
    let mut not_started = 0;
    let _lock;
    if !opts.table_only {
        // Under --smoke too: the smoke run checks every cell's config, and runs one.
        let (_, every) = jobs(spec, true);
        check(spec, &pre.iter().chain(&every).cloned().collect::<Vec<_>>(), threads)?;
        _lock = crate::actors::FolderLock::acquire(&spec.out_dir).map_err(SweepError::Lock)?;
        let copy = spec.out_dir.join("spec.toml");
        let text = std::fs::read_to_string(&spec.file).map_err(crate::files::FileError::at(&spec.file))?;
        std::fs::write(&copy, text).map_err(crate::files::FileError::at(&copy))?;
        let meta = spec.out_dir.join("sweep.json");
        let m = serde_json::json!({ "jobs": jobs_n, "threads": threads, "cpu": cpu(), "cores": cores, "date": today() });
        std::fs::write(&meta, m.to_string()).map_err(crate::files::FileError::at(&meta))?;
        let exe = match &opts.exe {
            Some(e) => e.clone(),
            None => std::env::current_exe().map_err(|source| SweepError::Spawn { exe: "pretune".into(), source })?,
        };
        let runner = Runner { exe, jobs: jobs_n, threads };
        tracing::info!(cells = cells.len(), pretrain = pre.len(), jobs = jobs_n, threads, out = %spec.out_dir.display(), "sweep {}", spec.name);
        let pre_ends = runner.run_all(&pre);
        let mut pre_ok = true;
        for (job, end) in pre.iter().zip(pre_ends) {
            match end {
                JobEnd::Failed(why) => {
                    pre_ok = false;
                    failed.push((job.name.clone(), why));
                }
                JobEnd::NotStarted => pre_ok = false,
                JobEnd::AlreadyDone | JobEnd::Done => {}
            }
        }
        if pre_ok && !Runner::stopped() {
            for (job, end) in cells.iter().zip(runner.run_all(&cells)) {
                match end {
                    JobEnd::Failed(why) => failed.push((job.name.clone(), why)),
                    JobEnd::NotStarted => not_started += 1,
                    JobEnd::AlreadyDone | JobEnd::Done => {}
                }
            }
        } else {
            not_started = cells.len();
        }
    }
    let (markdown, finished) = render(spec, &pre, &cells)?;
    let results = spec.out_dir.join("results.md");
    if opts.write_doc && !spec.smoke {
        if let Some(doc) = &spec.doc {
            write_doc(spec, doc, &markdown)?;
        }
    }
    Ok(SweepReport { results, markdown, failed, not_started, finished })
}

/// Writes `OUT/results.md`, `results.json` and a plot per metric; returns the Markdown (plots
/// linked by file name) and the cells finished of all.
fn render(spec: &Spec, pre: &[Job], cells: &[Job]) -> Result<(String, (usize, usize)), SweepError> {
    std::fs::create_dir_all(&spec.out_dir).map_err(crate::files::FileError::at(&spec.out_dir))?;
    let outcomes: Vec<table::Outcome> = spec
        .cells()
        .into_iter()
        .zip(cells)
        .map(|(c, job)| {
            let result = results::read(&job.dir, job.pick).unwrap_or_else(|e| {
                tracing::warn!("{}: {}", job.name, crate::error_chain(&e));
                results::RunResult::default()
            });
            table::Outcome { labels: c.labels, seed: c.seed, result }
        })
        .collect();
    let groups = table::aggregate(spec, &outcomes);
    let finished = outcomes.iter().filter(|o| o.result.finished).count();
    let pre_wall: f64 = pre.iter().map(|j| runner::wall_time(&j.dir)).sum();
    let wall: f64 = cells.iter().map(|j| runner::wall_time(&j.dir)).sum();
    let saved: serde_json::Value = std::fs::read_to_string(spec.out_dir.join("sweep.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let cpu = saved["cpu"].as_str().map_or_else(cpu, str::to_owned);
    let cores = saved["cores"].as_u64().unwrap_or(0);
    let meta = serde_json::json!({ "cpu": cpu, "cores": cores, "date": saved["date"].as_str().map_or_else(today, str::to_owned), "jobs": saved["jobs"], "wall_s": wall.round(), "pretrain_wall_s": pre_wall.round(), "finished": finished, "cells": outcomes.len(), "smoke": spec.smoke });
    // The cells of a spec on a pre-training config are pre-training runs.
    let what = if outcomes.iter().any(|o| o.result.phase == Some(Phase::Finetune)) || outcomes.iter().all(|o| o.result.phase.is_none()) { "fine-tuning" } else { "pre-training" };
    let mut md = String::new();
    if !spec.title.is_empty() {
        md += &format!("{}\n\n", spec.title);
    }
    md += &format!(
        "Sweep `{}`: {finished} of {} cells finished, {} seed(s) each; {} on {cpu} ({cores} cores), {}, {:.0} s of {what} runs ({} at a time){}{}.\n\n",
        spec.file.display(),
        outcomes.len(),
        spec.seeds.len(),
        spec.base.display(),
        meta["date"].as_str().unwrap_or(""),
        wall,
        saved["jobs"].as_u64().unwrap_or(1),
        if pre.is_empty() { String::new() } else { format!(" and {pre_wall:.0} s of the pre-training runs they start from (shared with other specs that name them)") },
        if spec.smoke { " — SMOKE RUN" } else { "" }
    );
    md += &table::markdown(spec, &groups);
    for m in &spec.metrics {
        let svg = plot::draw(spec, m, &groups).map_err(|e| SweepError::Draw(format!("{}: {e}", m.name)))?;
        let file = format!("{}-{}.svg", spec.name, slug(&m.name));
        let path = spec.out_dir.join(&file);
        std::fs::write(&path, svg).map_err(crate::files::FileError::at(&path))?;
        md += &format!("![{}]({file})\n\n", m.label);
    }
    let results = spec.out_dir.join("results.md");
    std::fs::write(&results, &md).map_err(crate::files::FileError::at(&results))?;
    let json = spec.out_dir.join("results.json");
    let body = serde_json::to_string_pretty(&table::json(spec, &outcomes, &groups, meta)).expect("JSON of plain values");
    std::fs::write(&json, body).map_err(crate::files::FileError::at(&json))?;
    Ok((md, (finished, outcomes.len())))
}

fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect()
}

/// The markers of a sweep's table in a doc.
fn markers(name: &str) -> (String, String) {
    (format!("<!-- sweep:{name}:start -->"), format!("<!-- sweep:{name}:end -->"))
}

/// Puts `markdown` between the sweep's markers in `doc` (appended with them when absent; text
/// outside them is kept) and copies the plots beside it.
fn write_doc(spec: &Spec, doc: &Path, markdown: &str) -> Result<(), SweepError> {
    let dir = doc.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(crate::files::FileError::at(dir))?;
    for m in &spec.metrics {
        let file = format!("{}-{}.svg", spec.name, slug(&m.name));
        let (from, to) = (spec.out_dir.join(&file), dir.join(&file));
        std::fs::copy(&from, &to).map_err(crate::files::FileError::at(&to))?;
    }
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    Ok(std::fs::write(doc, splice(&text, &spec.name, markdown)).map_err(crate::files::FileError::at(doc))?)
}

/// `text` with the sweep's block replaced by `markdown`, or appended when it has none.
pub fn splice(text: &str, name: &str, markdown: &str) -> String {
    let (start, end) = markers(name);
    let block = format!("{start}\n\n{}\n{end}", markdown.trim_end());
    match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{block}{}", &text[..a], &text[b + end.len()..]),
        _ => format!("{}{}{block}\n", text, if text.is_empty() || text.ends_with("\n\n") { "" } else if text.ends_with('\n') { "\n" } else { "\n\n" }),
    }
}

/// The CPU as tables name it: its model name, family and model (`AMD EPYC, family 25 model
/// 17`: a VM's model name alone does not say which generation ran the numbers).
fn cpu() -> String {
    let field = |k: &str| crate::train::precision::cpuinfo_field(k).unwrap_or_default();
    match (field("cpu family"), field("model")) {
        (f, m) if !f.is_empty() && !m.is_empty() => format!("{}, family {f} model {m}", crate::bench::sys::cpu_model()),
        _ => crate::bench::sys::cpu_model(),
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doc_keeps_its_text_and_gets_the_block_once() {
        let once = splice("# Title\n\nprose\n", "lr", "| a |\n");
        assert_eq!(once, "# Title\n\nprose\n\n<!-- sweep:lr:start -->\n\n| a |\n<!-- sweep:lr:end -->\n");
        let twice = splice(&format!("{once}\nmore prose\n"), "lr", "| b |\n");
        assert_eq!(twice, "# Title\n\nprose\n\n<!-- sweep:lr:start -->\n\n| b |\n<!-- sweep:lr:end -->\n\nmore prose\n");
        assert!(splice(&twice, "other", "x").contains("| b |") && splice(&twice, "other", "x").contains("sweep:other:start"));
    }

    #[test]
    fn dates_from_day_counts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_428), (2025, 12, 6));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
