//! Prepared-corpus workloads: how fast `pretune data prepare` tokenizes, and what a resume deep
//! into a corpus costs from the text and from the prepared copy.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use super::sys::{peak_rss_mb, round4, rss_mb, CpuMonitor};
use super::{fresh_dir, pretrain_toml, scaled_corpus, write_config, BenchArgs, BenchError};
use crate::data::prepared::{prepare as prepare_data, PreparedError};
use crate::data::stream::Cursor;
use crate::files::FileError;

fn prepared_err(e: PreparedError) -> BenchError {
    BenchError::Result(crate::error_chain(&e))
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| if e.path().is_dir() { dir_bytes(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) }).sum())
        .unwrap_or(0)
}

/// The config of a workload over `corpus`, written to `dir`.
fn config(a: &BenchArgs, dir: &Path, corpus: &Path) -> Result<PathBuf, BenchError> {
    let toml = pretrain_toml(a, dir, corpus, a.objective, "bernoulli", "token")?;
    write_config(dir, "config.toml", &toml)
}

/// A generated config `toml` over `corpus`, pointed at its prepared copy instead.
pub(crate) fn on_prepared(toml: &str, corpus: &Path, prepared: &Path) -> String {
    toml.replace(&format!("train = [{:?}]", corpus.display().to_string()), &format!("train = [{:?}]", prepared.display().to_string()))
}

/// The prepared copy of `corpus` (`OUT/prepared-xSCALE`), made with `--threads` workers when
/// missing or stale; `prepare` leaves an up-to-date one alone.
pub(crate) fn prepared_copy(a: &BenchArgs, corpus: &Path) -> Result<PathBuf, BenchError> {
    let dir = a.out.join(format!("prepared-x{}", a.scale));
    let cfg = config(a, &a.out.join(format!("prepared-x{}-config", a.scale)), corpus)?;
    let input = crate::plan::prepare_input(&cfg, &[], a.threads.max(1))?;
    prepare_data(&dir, &input, |_, _, _| {}).map_err(prepared_err)?;
    Ok(dir)
}

/// `pretune data prepare` of the (scaled) corpus with `--threads` workers, from scratch:
/// tokens per second, and the peak RSS, which must not grow with the corpus.
pub fn prepare(a: &BenchArgs) -> Result<Value, BenchError> {
    let corpus = scaled_corpus(a)?;
    let corpus_mb = std::fs::metadata(&corpus).map_err(FileError::at(&corpus))?.len() as f64 / 1e6;
    let dir = a.out.join(format!("prepare-x{}-w{}", a.scale, a.threads));
    fresh_dir(&dir)?;
    let cfg = config(a, &dir, &corpus)?;
    let input = crate::plan::prepare_input(&cfg, &[], a.threads.max(1))?;
    let rss_start = rss_mb();
    let mon = CpuMonitor::start();
    let t0 = Instant::now();
    let report = prepare_data(&dir.join("prepared"), &input, |_, _, _| {}).map_err(prepared_err)?;
    let dt = t0.elapsed().as_secs_f64();
    let train = &report.manifest.splits["train"];
    Ok(json!({
        "bench": "prepare", "scale": a.scale, "corpus_mb": super::sys::round1(corpus_mb), "workers": a.threads.max(1),
        "documents": train.docs, "sentences": train.sentences, "tokens": train.tokens, "seconds": round4(dt),
        "tokens_per_s": (train.tokens as f64 / dt).round(), "mb_per_s": round4(corpus_mb / dt),
        "prepared_mb": super::sys::round1(dir_bytes(&dir.join("prepared")) as f64 / 1e6),
        "rss_start_mb": rss_start, "peak_rss_mb": peak_rss_mb(), "cpu": mon.finish(),
    }))
}

/// From the config to the first example of a resume 90 % into the corpus, from the text and
/// from the prepared copy (made first, not timed); best and first of three tries each. The
/// cursor is a real block boundary of the file, read off the prepared index, so both paths
/// start from the same place.
pub fn resume(a: &BenchArgs) -> Result<Value, BenchError> {
    let corpus = scaled_corpus(a)?;
    let prepared = prepared_copy(a, &corpus)?;
    let dir = a.out.join(format!("resume-x{}", a.scale));
    fresh_dir(&dir)?;
    let text_cfg = config(a, &dir.join("text"), &corpus)?;
    let prep_cfg = {
        let toml = std::fs::read_to_string(&text_cfg).map_err(FileError::at(&text_cfg))?;
        write_config(&dir.join("prepared"), "config.toml", &on_prepared(&toml, &corpus, &prepared))?
    };
    let (cursor, block_docs) = {
        let plan = crate::plan::load_and_resolve(&prep_cfg, &[])?;
        let split = &plan.corpus().and_then(|c| c.prepared.as_ref()).ok_or_else(|| BenchError::Result(format!("{} was not read as a prepared dataset", prepared.display())))?.train;
        let docs = split.file_docs(0);
        let n = docs.end - docs.start;
        if n < 2 {
            return Err(BenchError::Result(format!("{}: a resume needs at least 2 documents, found {n}", corpus.display())));
        }
        let before = split.doc(docs.start + (n * 9 / 10).max(1) - 1);
        (Cursor { epoch: 0, file: 0, block_offset: before.end, block_line: before.end_line, in_block: 0, example: 0 }, plan.config.data.shuffle_block_docs)
    };
    let mut out = serde_json::Map::new();
    for (name, cfg) in [("text", &text_cfg), ("prepared", &prep_cfg)] {
        let mut tries = Vec::new();
        for _ in 0..3 {
            let t0 = Instant::now();
            let plan = crate::plan::load_and_resolve(cfg, &[])?;
            let planned = t0.elapsed().as_secs_f64();
            let mut stream = plan.train_source(cursor);
            let first = stream.next_example()?.ok_or_else(|| BenchError::Result("no example after the cursor".into()))?;
            let total = t0.elapsed().as_secs_f64();
            tries.push((planned, total, first.payload.n_tokens()));
        }
        let best = tries.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
        out.insert(name.into(), json!({
            "seconds_best": round4(best), "seconds_first": round4(tries[0].1), "plan_seconds_best": round4(tries.iter().map(|t| t.0).fold(f64::INFINITY, f64::min)),
            "first_example_tokens": tries[0].2,
        }));
    }
    let corpus_mb = std::fs::metadata(&corpus).map_err(FileError::at(&corpus))?.len() as f64 / 1e6;
    Ok(json!({
        "bench": "resume", "scale": a.scale, "corpus_mb": super::sys::round1(corpus_mb), "cursor_offset": cursor.block_offset,
        "block_docs": block_docs, "text": out["text"], "prepared": out["prepared"],
    }))
}
