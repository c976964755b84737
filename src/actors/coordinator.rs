//! The Coordinator: an actix actor that receives every stage's events, logs them, shows
//! progress, writes `events.jsonl`, and ends the run: at the end (once the last evaluation and
//! checkpoint are in), on Ctrl-C (graceful: the Trainer checkpoints first; a second Ctrl-C
//! exits at once), or on the first failure.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use actix::{Actor, AsyncContext, Context, Handler};
use serde_json::json;
use tokio::sync::oneshot;

use super::control::StopFlag;
use super::events::{Event, SharedError, TrainerTotals};
use super::progress::Progress;
use crate::objective::mlm::EvalMetrics;

/// How the run ended, as the Coordinator saw it.
#[derive(Debug)]
pub struct Outcome {
    /// Trainer totals (absent if the Trainer never reported).
    pub totals: Option<TrainerTotals>,
    /// The last evaluation.
    pub last_eval: Option<(u64, EvalMetrics)>,
    /// The last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
    /// Longest Trainer stall for a checkpoint hand-over, in seconds.
    pub max_checkpoint_stall_s: f64,
    /// First failure, if any.
    pub failure: Option<(&'static str, SharedError)>,
}

/// The actor.
pub struct Coordinator {
    stop: StopFlag,
    /// `OUT/events.jsonl`; flushed on every event so a crash loses at most one line.
    events: BufWriter<File>,
    progress: Progress,
    outcome: Option<Outcome>,
    /// Results still owed by the Evaluator and Checkpointer once the Trainer is done.
    owed: Option<(u64, u64)>,
    evals_seen: u64,
    saves_seen: u64,
    done: Option<oneshot::Sender<Outcome>>,
}

impl Coordinator {
    /// A Coordinator writing `events.jsonl` into `out_dir`.
    ///
    /// # Errors
    /// When `events.jsonl` cannot be created.
    pub fn new(out_dir: &Path, stop: StopFlag, progress: Progress, done: oneshot::Sender<Outcome>) -> std::io::Result<Self> {
        let events = BufWriter::new(File::create(out_dir.join("events.jsonl"))?);
        Ok(Coordinator {
            stop,
            events,
            progress,
            outcome: Some(Outcome { totals: None, last_eval: None, last_checkpoint: None, max_checkpoint_stall_s: 0.0, failure: None }),
            owed: None,
            evals_seen: 0,
            saves_seen: 0,
            done: Some(done),
        })
    }

    fn log_event(&mut self, v: serde_json::Value) {
        let _ = writeln!(self.events, "{v}").and_then(|_| self.events.flush());
    }

    fn finish_if_settled(&mut self) {
        let settled = match self.owed {
            Some((evals, saves)) => self.evals_seen >= evals && self.saves_seen >= saves,
            None => false,
        };
        let failed = self.outcome.as_ref().is_some_and(|o| o.failure.is_some());
        if settled || failed {
            self.finish();
        }
    }

    fn finish(&mut self) {
        let Some(outcome) = self.outcome.take() else { return };
        self.progress.finish();
        let _ = self.events.flush();
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let stop = self.stop.clone();
        let progress = self.progress.clone();
        ctx.spawn(actix::fut::wrap_future(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                progress.println("interrupt: finishing the current step and writing a checkpoint (Ctrl-C again to quit now)");
                stop.request_graceful();
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }));
    }
}

impl Handler<Event> for Coordinator {
    type Result = ();

    fn handle(&mut self, event: Event, _: &mut Context<Self>) {
        match event {
            Event::Step(r) => {
                self.progress.step(&r);
                self.log_event(serde_json::to_value(&r).unwrap_or_default());
            }
            Event::Eval { phase, step, metrics } => {
                self.evals_seen += 1;
                self.progress.println(&format!(
                    "eval  step {step}: mlm loss {:.4}, perplexity {:.2}, accuracy {:.4} ({} tokens)",
                    metrics.loss, metrics.perplexity, metrics.accuracy, metrics.scored_tokens
                ));
                let eval: serde_json::Map<String, serde_json::Value> =
                    metrics.pairs().iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
                self.log_event(json!({ "phase": phase, "step": step, "eval": eval }));
                if let Some(o) = self.outcome.as_mut() {
                    o.last_eval = Some((step, metrics));
                }
                self.finish_if_settled();
            }
            Event::Saved { step, path, write_s, stall_s } => {
                self.saves_seen += 1;
                tracing::info!(step, path = %path.display(), write_s, stall_s, "checkpoint saved");
                self.log_event(json!({ "step": step, "checkpoint": path, "write_s": write_s, "stall_s": stall_s }));
                if let Some(o) = self.outcome.as_mut() {
                    o.last_checkpoint = Some(path);
                    o.max_checkpoint_stall_s = o.max_checkpoint_stall_s.max(stall_s);
                }
                self.finish_if_settled();
            }
            Event::TrainerDone(t) => {
                self.owed = Some((t.evals_requested, t.checkpoints_requested));
                if let Some(o) = self.outcome.as_mut() {
                    o.totals = Some(t);
                }
                self.finish_if_settled();
            }
            Event::Failed { stage, error } => {
                self.stop.abort();
                tracing::error!(stage, error = %error, "stage failed");
                self.log_event(json!({ "failed": stage, "error": error.to_string() }));
                if let Some(o) = self.outcome.as_mut() {
                    o.failure.get_or_insert((stage, error));
                }
                self.finish_if_settled();
            }
        }
    }
}
