//! `pretune evaluate --checkpoint PATH --data FILE [--json]`: a table of the task's headline
//! metrics (per-class details after), or one JSON object of every metric.

use std::path::PathBuf;
use std::process::ExitCode;

use pretune::finetune::evaluate::{evaluate, Evaluation};

use super::{Failure, GenerateArgs, InferenceArgs};

#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint folder, or a run's `checkpoints/` folder (its best, else its latest).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The labelled file.
    #[arg(long)]
    data: PathBuf,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    decoding: GenerateArgs,
    #[command(flatten)]
    run: InferenceArgs,
}

pub fn run(a: Args) -> Result<ExitCode, Failure> {
    let ev = evaluate(&a.checkpoint, &a.data, &a.decoding.overrides(), a.run.resolve()?).map_err(|e| Failure::either(e.is_usage(), e))?;
    if a.json {
        pretune::outln!("{}", as_json(&ev));
    } else {
        print_table(&ev);
    }
    Ok(ExitCode::SUCCESS)
}

fn as_json(ev: &Evaluation) -> serde_json::Value {
    let mut obj: serde_json::Map<String, serde_json::Value> = ev.metrics.values.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
    obj.insert("checkpoint".into(), serde_json::json!(ev.checkpoint));
    obj.insert("task".into(), serde_json::json!(ev.kind));
    obj.insert("records".into(), serde_json::json!(ev.records));
    obj.insert("skipped".into(), serde_json::json!(ev.skipped.len()));
    obj.insert("notes".into(), serde_json::json!(ev.notes));
    serde_json::Value::Object(obj)
}

fn print_table(ev: &Evaluation) {
    let m = &ev.metrics.values;
    pretune::outln!("{} on {} records ({} skipped)", ev.checkpoint.display(), ev.records, ev.skipped.len());
    for note in &ev.notes {
        pretune::outln!("  note: {note}");
    }
    let head = ev.headline;
    let rest = m.keys().filter(|k| !head.contains(&k.as_str()));
    // The names' column as wide as the longest (SQuAD v2.0's `best_exact_match_threshold`).
    let width = m.keys().map(String::len).max().unwrap_or(0).max(24);
    for k in head.iter().map(|k| k.to_string()).chain(rest.cloned()) {
        if let Some(v) = m.get(&k) {
            pretune::outln!("  {k:<width$} {v:>12.4}");
        }
    }
}
