//! What a cell's run folder says: whether the run finished, and the metrics of the evaluation
//! the sweep reports, read from its `events.jsonl` (so `--table-only` needs nothing else).

use std::collections::BTreeMap;
use std::path::Path;

use crate::actors::events::{read_records, Record, RecordError};
use crate::actors::EndedBy;
use crate::workload::Phase;

use super::spec::Pick;

/// A run folder, as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunResult {
    /// It ended by its own limits (steps, epochs, early stopping), not by a signal or a failure.
    pub finished: bool,
    /// The reported metrics: the picked evaluation's, and the run's `steps`, `elapsed_s`,
    /// `tokens_per_second` and `monitored` (its monitored metric's value) once finished.
    pub metrics: BTreeMap<String, f64>,
    /// What the run was (its end record's phase), to name the cells' runs in the table.
    pub phase: Option<Phase>,
}

/// Reads `dir/events.jsonl` (a folder without one is a run not started).
///
/// # Errors
/// An unreadable file or a line that is not a record.
pub fn read(dir: &Path, pick: Pick) -> Result<RunResult, RecordError> {
    let path = dir.join("events.jsonl");
    if !path.exists() {
        return Ok(RunResult::default());
    }
    Ok(summarize(&read_records(&path)?, pick))
}

/// [`read`] on records. A resumed run repeats the evaluations after its last checkpoint: the
/// later one of a step wins.
pub fn summarize(records: &[Record], pick: Pick) -> RunResult {
    let mut evals: BTreeMap<u64, &BTreeMap<String, f64>> = BTreeMap::new();
    let mut end = None;
    for r in records {
        match r {
            Record::Eval { step, eval, .. } => {
                evals.insert(*step, &eval.values);
            }
            // An interrupted run resumed ends again: the last end is the run's.
            Record::Finished { .. } => end = Some(r),
            _ => {}
        }
    }
    let mut out = RunResult::default();
    let mut best = None;
    let mut monitored = None;
    if let Some(Record::Finished { phase, step, ended_by, elapsed_s, tokens, best_step, metric }) = end {
        monitored = Some(metric);
        out.phase = Some(*phase);
        out.finished = *ended_by != EndedBy::Interrupted;
        out.metrics.insert("steps".into(), *step as f64);
        out.metrics.insert("elapsed_s".into(), *elapsed_s);
        out.metrics.insert("tokens_per_second".into(), *tokens as f64 / elapsed_s.max(1e-9));
        best = *best_step;
    }
    let picked = match pick {
        Pick::Best => best.and_then(|s| evals.get(&s)).or_else(|| evals.values().last()),
        Pick::Last => evals.values().last(),
    };
    if let Some(m) = picked {
        out.metrics.extend(m.iter().map(|(k, v)| (k.clone(), *v)));
        // `monitored`: the run's own metric (accuracy, entity F1, SQuAD F1, ...), so one column
        // can hold tasks that are scored differently.
        if let Some(v) = monitored.and_then(|name| m.get(name)) {
            out.metrics.insert("monitored".into(), *v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objective::eval::EvalMetrics;

    fn eval(step: u64, acc: f64) -> Record {
        Record::Eval { phase: Phase::Finetune, step, eval: EvalMetrics { values: [("accuracy".to_string(), acc), ("loss".to_string(), 1.0 - acc)].into() } }
    }

    fn end(best: Option<u64>, ended_by: EndedBy) -> Record {
        Record::Finished { phase: Phase::Finetune, step: 30, ended_by, elapsed_s: 2.0, tokens: 1000, metric: "accuracy".into(), best_step: best }
    }

    #[test]
    fn the_best_evaluation_is_reported_and_a_repeated_step_counts_once() {
        let r = summarize(&[eval(10, 0.6), eval(20, 0.9), eval(20, 0.8), eval(30, 0.7), end(Some(20), EndedBy::MaxSteps)], Pick::Best);
        assert!(r.finished);
        assert_eq!(r.metrics["accuracy"], 0.8);
        assert_eq!(r.metrics["tokens_per_second"], 500.0);
        assert_eq!(r.metrics["monitored"], 0.8, "the run's own metric");
        assert_eq!(r.phase, Some(Phase::Finetune));
        let r = summarize(&[eval(10, 0.6), eval(30, 0.7), end(Some(10), EndedBy::EarlyStopping)], Pick::Last);
        assert_eq!(r.metrics["accuracy"], 0.7);
    }

    #[test]
    fn an_interrupted_or_unfinished_run_is_not_finished_but_shows_what_it_has() {
        let r = summarize(&[eval(10, 0.6), end(Some(10), EndedBy::Interrupted)], Pick::Best);
        assert!(!r.finished);
        let r = summarize(&[eval(10, 0.6)], Pick::Best);
        assert!(!r.finished && r.metrics["accuracy"] == 0.6);
        assert!(!summarize(&[], Pick::Best).finished);
        assert_eq!(summarize(&[eval(10, 0.6)], Pick::Best).phase, None, "known from the end record only");
    }
}
