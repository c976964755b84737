//! The Coordinator: an actix actor that receives every stage's events, logs them, shows
//! progress, writes `events.jsonl`, and ends the run: at the end (once the last evaluation and
//! checkpoint are in), on Ctrl-C (graceful: the Trainer checkpoints first; a second Ctrl-C
//! exits at once), or on the first failure.

use std::path::{Path, PathBuf};

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Recipient};
use tokio::sync::oneshot;

use super::checkpointer::{Checkpointer, Flush, Verdict};
use super::control::StopFlag;
use crate::checkpoint::state::Best;
use super::events::{Command, Event, Record, SharedError, TrainerTotals};
use super::progress::Progress;
use crate::objective::eval::EvalMetrics;
use crate::objective::Monitor;

/// How the run ended, as the Coordinator saw it.
#[derive(Debug)]
pub struct Outcome {
    /// Trainer totals (absent if the Trainer never reported).
    pub totals: Option<TrainerTotals>,
    /// The last evaluation.
    pub last_eval: Option<(u64, EvalMetrics)>,
    /// The last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
    /// The best evaluation: step and the monitored metric's value.
    pub best: Option<(u64, f64)>,
    /// Longest Trainer stall for a checkpoint hand-over, in seconds.
    pub max_checkpoint_stall_s: f64,
    /// First failure, if any.
    pub failure: Option<(&'static str, SharedError)>,
}

/// The actor that every stage reports to: logs and `events.jsonl`, the best checkpoint and
/// early stopping by the monitored metric, commands to the Trainer, signals, the run's end.
pub struct Coordinator {
    stop: StopFlag,
    /// `OUT/events.jsonl`, a whole line or nothing per record.
    events: super::event_log::EventLog,
    progress: Progress,
    outcome: Option<Outcome>,
    /// Results still owed by the Evaluator and Checkpointer once the Trainer is done.
    owed: Option<(u64, u64)>,
    evals_seen: u64,
    /// Evaluations since the monitored metric improved (exported as a gauge).
    evals_since_best: u64,
    saves_seen: u64,
    done: Option<oneshot::Sender<Outcome>>,
    checkpointer: Option<Addr<Checkpointer>>,
    /// Best monitored score so far (lower is better): the policy behind `best`.
    best: Option<Best>,
    /// The metric that decides `best`.
    monitor: Monitor,
    /// Custom actors that see every event but `Step` (they get `StepDone`). Sent with
    /// `try_send`: a subscriber whose mailbox is full misses the event (counted in
    /// `pretune_events_dropped_total`), so a slow subscriber never slows training.
    subscribers: Vec<Recipient<Event>>,
    /// To the Trainer, read at step boundaries.
    control: Option<crossbeam_channel::Sender<Command>>,
}

/// Adds a subscriber.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<Event>);

impl Handler<Subscribe> for Coordinator {
    type Result = ();

    fn handle(&mut self, s: Subscribe, _: &mut Context<Self>) {
        self.subscribers.push(s.0);
    }
}

/// Connects the Coordinator to the Trainer's command channel.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct ControlChannel(pub crossbeam_channel::Sender<Command>);

impl Handler<ControlChannel> for Coordinator {
    type Result = ();

    fn handle(&mut self, c: ControlChannel, _: &mut Context<Self>) {
        self.control = Some(c.0);
    }
}

impl Handler<Command> for Coordinator {
    type Result = ();

    fn handle(&mut self, cmd: Command, _: &mut Context<Self>) {
        self.log(&Record::Command(cmd.clone()));
        match &self.control {
            Some(tx) => {
                if tx.try_send(cmd).is_err() {
                    tracing::warn!("the Trainer's command queue is full or closed; command dropped");
                }
            }
            None => tracing::warn!("no Trainer to command yet"),
        }
    }
}

/// `Some(new best)` when `score` at `step` beats `best` (lower wins: a [`Monitor`] score).
pub fn improves(best: Option<Best>, step: u64, score: f64) -> Option<Best> {
    match best {
        // Not strictly lower (NaN included) is no improvement.
        Some(b) if score.partial_cmp(&b.score) != Some(std::cmp::Ordering::Less) => None,
        _ if score.is_finite() => Some(Best { step, score }),
        _ => None,
    }
}

impl Coordinator {
    /// A Coordinator writing `events.jsonl` into `out_dir`.
    ///
    /// # Errors
    /// When `events.jsonl` cannot be created.
    pub fn new(out_dir: &Path, stop: StopFlag, progress: Progress, done: oneshot::Sender<Outcome>, monitor: Monitor) -> std::io::Result<Self> {
        // Appended to, so a resumed run continues the same log.
        let events = super::event_log::EventLog::open(&out_dir.join("events.jsonl"))?;
        Ok(Coordinator {
            stop,
            events,
            progress,
            outcome: Some(Outcome { totals: None, last_eval: None, last_checkpoint: None, best: None, max_checkpoint_stall_s: 0.0, failure: None }),
            owed: None,
            evals_seen: 0,
            evals_since_best: 0,
            saves_seen: 0,
            done: Some(done),
            checkpointer: None,
            best: None,
            monitor,
            subscribers: Vec::new(),
            control: None,
        })
    }

    /// Sends verdicts on evaluations to `checkpointer` (it marks the best checkpoint and spares
    /// unjudged ones from retention); `best` is the resumed run's best so far. The Checkpointer
    /// reports back through a `Recipient<Event>` of this actor's `Context`, made before either
    /// starts, so neither holds the other's concrete address.
    pub fn with_checkpointer(mut self, checkpointer: Addr<Checkpointer>, best: Option<Best>) -> Self {
        self.checkpointer = Some(checkpointer);
        self.best = best;
        if let (Some(b), Some(o)) = (best, self.outcome.as_mut()) {
            o.best = Some((b.step, self.monitor.value(b.score)));
        }
        self
    }

    /// Records that this process is the launcher's `restart`-th restart of the run, continuing
    /// from `step`: a line in `events.jsonl` and `pretune_restarts_total`.
    pub fn restarted(mut self, restart: u32, max_restarts: u32, step: u64) -> Self {
        metrics::counter!(crate::metrics::names::RESTARTS).absolute(u64::from(restart));
        self.log(&Record::Restarted { restart, max_restarts, step });
        self
    }

    /// Appends a record to `events.jsonl` (a full disk loses the line, never the run: the
    /// checkpoints are what a resume needs).
    fn log(&mut self, r: &Record) {
        match serde_json::to_string(r) {
            Ok(line) => {
                if let Err(e) = self.events.append(&line) {
                    tracing::warn!(error = %e, failures = self.events.failures, "cannot append to events.jsonl (the record is lost, the log stays whole)");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize an event record"),
        }
    }

    fn finish_if_settled(&mut self, ctx: &mut Context<Self>) {
        let settled = match self.owed {
            Some((evals, saves)) => self.evals_seen >= evals && self.saves_seen >= saves,
            None => false,
        };
        let failed = self.outcome.as_ref().is_some_and(|o| o.failure.is_some());
        if failed {
            self.finish();
        } else if settled {
            // Let the Checkpointer handle any best-checkpoint mark sent just before.
            match self.checkpointer.clone() {
                Some(ck) => {
                    ctx.spawn(actix::fut::wrap_future::<_, Self>(async move { ck.send(Flush).await }).map(|_, act, _| act.finish()));
                }
                None => self.finish(),
            }
        }
    }

    fn finish(&mut self) {
        let Some(outcome) = self.outcome.take() else { return };
        self.progress.finish();
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
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                tracing::warn!("cannot install signal handlers: Ctrl-C will kill the run without a checkpoint");
                return;
            };
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            progress.println("signal: finishing the current step and writing a checkpoint (signal again to quit now)");
            stop.request_graceful();
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            // At once, under a Trainer still in the middle of a step.
            crate::exit_now(130)
        }));
    }
}

impl Handler<Event> for Coordinator {
    type Result = ();

    fn handle(&mut self, event: Event, ctx: &mut Context<Self>) {
        if !matches!(event, Event::Step(_)) {
            for s in &self.subscribers {
                if s.try_send(event.clone()).is_err() {
                    metrics::counter!(crate::metrics::names::EVENTS_DROPPED).increment(1);
                }
            }
        }
        match event {
            Event::StepDone(_) => {}
            Event::Paused { phase, step } => {
                self.progress.println(&format!("{phase}: paused after step {step} (`resume` continues)"));
                self.log(&Record::Paused { phase, step });
            }
            Event::Resumed { phase, step } => {
                self.progress.println(&format!("{phase}: resumed at step {step}"));
                self.log(&Record::Resumed { phase, step });
            }
            Event::Step(r) => {
                self.progress.step(&r);
                self.log(&Record::Step(r));
            }
            Event::Eval { phase, step, metrics } => {
                self.evals_seen += 1;
                self.progress.println(&format!("eval  step {step}: {}", metrics.summary()));
                self.log(&Record::Eval { phase, step, eval: metrics.clone() });
                let best = self.monitor.score(&metrics).and_then(|score| improves(self.best, step, score));
                if metrics.get(&self.monitor.metric).is_some() {
                    self.evals_since_best = if best.is_some() { 0 } else { self.evals_since_best + 1 };
                    metrics::gauge!(crate::metrics::names::EVALS_SINCE_BEST, "phase" => phase, "metric" => self.monitor.metric.clone())
                        .set(self.evals_since_best as f64);
                }
                if let Some(b) = best {
                    self.best = Some(b);
                    if let Some(o) = self.outcome.as_mut() {
                        o.best = metrics.get(&self.monitor.metric).map(|v| (step, v));
                    }
                }
                if let Some(ck) = &self.checkpointer {
                    ck.do_send(Verdict { step, best });
                }
                if let Some(o) = self.outcome.as_mut() {
                    o.last_eval = Some((step, metrics));
                }
                self.finish_if_settled(ctx);
            }
            Event::Saved { step, path, write_s, stall_s } => {
                self.saves_seen += 1;
                tracing::info!(step, path = %path.display(), write_s, stall_s, "checkpoint saved");
                self.log(&Record::Checkpoint { step, checkpoint: path.clone(), write_s, stall_s });
                if let Some(o) = self.outcome.as_mut() {
                    o.last_checkpoint = Some(path);
                    o.max_checkpoint_stall_s = o.max_checkpoint_stall_s.max(stall_s);
                }
                self.finish_if_settled(ctx);
            }
            Event::TrainerDone(t) => {
                self.owed = Some((t.evals_requested, t.checkpoints_requested));
                if let Some(o) = self.outcome.as_mut() {
                    o.totals = Some(t);
                }
                self.finish_if_settled(ctx);
            }
            Event::Failed { stage, error } => {
                self.stop.abort();
                tracing::error!(stage, error = %error, "stage failed");
                self.log(&Record::Failed { stage: stage.to_owned(), error: crate::error_chain(error.as_ref()) });
                if let Some(o) = self.outcome.as_mut() {
                    o.failure.get_or_insert((stage, error));
                }
                self.finish_if_settled(ctx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_is_the_lowest_finite_score() {
        let b = improves(None, 10, 3.0).unwrap();
        assert_eq!(b, Best { step: 10, score: 3.0 });
        assert!(improves(Some(b), 20, 3.5).is_none());
        assert!(improves(Some(b), 20, 3.0).is_none(), "ties keep the older checkpoint");
        assert!(improves(Some(b), 20, f64::NAN).is_none());
        assert_eq!(improves(Some(b), 30, 2.0).unwrap().step, 30);
    }
}
