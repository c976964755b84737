//! The Trainer: one thread owns the model, optimizer and device. It takes batches in `seq`
//! order, steps, reads scalars off the device only on logging steps, and hands CPU copies of the
//! weights to the Evaluator and Checkpointer when the step policy says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, Recipient};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use metrics::{counter, gauge, histogram};

use super::checkpointer::{Checkpointer, Save};
use super::control::{Permits, StopFlag};
use super::evaluator::{EvalResult, Evaluate, Evaluator};
use super::events::{Command, Event, StepDone, StepReport, TrainerTotals};
use crate::batch::HostBatch;
use crate::checkpoint::state::{versions, CheckpointState, FORMAT_VERSION};
use crate::data::stream::Cursor;
use crate::metrics::names;
use crate::objective::Monitor;
use crate::workload::Phase;
use crate::train::policy::{Due, EarlyStopping, StepPolicy};
use crate::config::NonFinitePolicy;
use crate::train::step::{StepOutput, StepResult, TrainState};

/// Puts batches back in `seq` order. Bounded in practice by the number of Masker workers plus
/// the channel bound: a batch can only be overtaken by batches already in flight.
pub struct Reorder {
    next: u64,
    pending: BTreeMap<u64, HostBatch>,
}

impl Reorder {
    /// Expects `first` as the next `seq`.
    pub fn new(first: u64) -> Self {
        Reorder { next: first, pending: BTreeMap::new() }
    }

    /// The next batch in order; `None` when the channel closed or `stop` aborted.
    pub fn next(&mut self, rx: &Receiver<HostBatch>, stop: &StopFlag) -> Option<HostBatch> {
        loop {
            if let Some(b) = self.pending.remove(&self.next) {
                self.next += 1;
                return Some(b);
            }
            if stop.is_abort() {
                return None;
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(b) => {
                    self.pending.insert(b.seq, b);
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// Everything the Trainer thread owns or talks to, in named parts.
pub struct Trainer {
    /// Model, optimizer, schedule.
    pub state: TrainState,
    /// Its channels: batches in, commands and evaluation results in, events out, the stop flag.
    pub links: Links,
    /// The actors it hands weight snapshots to.
    pub peers: Peers,
    /// When to log, evaluate, checkpoint and stop, and what to do about bad updates.
    pub rules: Rules,
    /// What every `state.json` records besides the weights.
    pub provenance: Provenance,
    /// Pre-training or fine-tuning.
    pub phase: Phase,
    /// Where the run starts (zero, or a checkpoint's counters).
    pub start: StartPoint,
    /// What loading `[init]` did (reported with the totals).
    pub init: Option<crate::init::LoadReport>,
    /// libtorch threads of the run (the Evaluator gets them for the evaluation after the last
    /// step, one thread before that).
    pub threads: usize,
    /// Counts model FLOPs for MFU.
    pub mfu: crate::mfu::Meter,
}

/// The Trainer's channels.
pub struct Links {
    /// Host batches from the Maskers.
    pub rx: Receiver<HostBatch>,
    /// Commands from the Coordinator (subscribers, the control endpoint), read between steps.
    pub control: Receiver<Command>,
    /// Evaluation results from the Evaluator, for early stopping.
    pub results: Receiver<EvalResult>,
    /// Where steps, results and failures go (the Coordinator).
    pub events: Recipient<Event>,
    /// Run-wide stop.
    pub stop: StopFlag,
}

/// The actors the Trainer hands weight snapshots to, each with its permits.
pub struct Peers {
    /// Held-out evaluation, if there is a split (and this is rank 0).
    pub evaluator: Option<(Addr<Evaluator>, Permits)>,
    /// Checkpoint writer.
    pub checkpointer: (Addr<Checkpointer>, Permits),
}

/// The Trainer's policies.
pub struct Rules {
    /// When to log, evaluate, checkpoint.
    pub policy: StepPolicy,
    /// Micro-batches per update.
    pub grad_accum: usize,
    /// `skip` or `abort` on a non-finite update.
    pub nonfinite: NonFinitePolicy,
    /// Under `skip`: abort after this many in a row.
    pub max_nonfinite_in_a_row: u32,
    /// The monitored metric and the patience policy on it. With patience, the Trainer waits
    /// for each evaluation's verdict before the next step, so a run stops after the same step
    /// whatever the timing (as `transformers`' Trainer, which evaluates in line).
    pub early: (Monitor, EarlyStopping),
}

/// What every `state.json` records besides the weights.
pub struct Provenance {
    /// The run seed.
    pub seed: u64,
    /// Resolved run config, as JSON.
    pub config_json: serde_json::Value,
    /// Model description (HF names).
    pub model_json: serde_json::Value,
    /// Where the starting weights came from.
    pub init_from: Option<String>,
    /// The run's tokenizer's fingerprint.
    pub tokenizer_sha256: String,
}

/// What the training loop carries from one update to the next.
struct LoopState {
    m: TrainerMetrics,
    reorder: Reorder,
    p: Consumed,
    micro: Vec<HostBatch>,
    nonfinite_in_a_row: u32,
    totals: TrainerTotals,
    start: Instant,
    since_log: LogMark,
    requests: Requests,
    last_checkpoint: Option<u64>,
    interrupted: bool,
    stopped_early: bool,
}

/// Whether the loop goes on after an update.
enum Next {
    Go,
    Stop,
}

/// What the commands received so far ask of the next steps.
#[derive(Debug, Default)]
struct Requests {
    evaluate: bool,
    checkpoint: bool,
    lr: Option<f64>,
    paused: bool,
}

/// Counters a run starts from: zero, or those of the checkpoint it resumes.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartPoint {
    /// Tokens trained on.
    pub tokens: u64,
    /// Sequences trained on.
    pub samples: u64,
    /// Batches consumed (the next batch's `seq`).
    pub batches: u64,
    /// Stream position after the last consumed batch.
    pub cursor: Cursor,
}

/// Why the Trainer stopped the run.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A collective failed: another rank died, stopped or timed out.
    #[error(transparent)]
    Dist(#[from] crate::distributed::DistError),
    /// Too many non-finite updates (or one, under `abort`).
    #[error("non-finite loss or gradient norm at step {step} (loss {loss}, gradient norm {grad_norm}); {count} such update(s) in a row (train.nonfinite = {policy})")]
    NonFinite {
        /// Update index that failed.
        step: u64,
        /// The loss of that update.
        loss: f64,
        /// The global gradient norm of that update, before clipping.
        grad_norm: f64,
        /// Non-finite updates in a row.
        count: u32,
        /// Policy in force.
        policy: &'static str,
    },
    /// A step could not allocate: what ran out, and what to change.
    #[error("out of memory at step {step} (a batch of {rows} rows × {seq_len} tokens on {device}): lower train.batch_size (raise train.grad_accum to keep the global batch) or train.max_seq_len; the last checkpoint is intact ({message})")]
    OutOfMemory {
        /// The update that failed.
        step: u64,
        /// Rows of its largest micro-batch.
        rows: usize,
        /// Their padded length.
        seq_len: usize,
        /// `cpu`, `cuda:0`, ...
        device: String,
        /// libtorch's message.
        message: String,
    },
    /// libtorch failed inside a step for another reason.
    #[error("libtorch failed at step {step}: {message}")]
    Libtorch {
        /// The update that failed.
        step: u64,
        /// libtorch's message.
        message: String,
    },
    /// The weights went non-finite: no checkpoint is written with them.
    #[error("weights are not finite at step {0}: refusing to write a checkpoint")]
    NonFiniteWeights(u64),
}

/// What the Trainer has consumed so far: counts for the report and the stream position a
/// checkpoint resumes from.
struct Consumed {
    tokens: u64,
    samples: u64,
    batches: u64,
    cursor: Cursor,
    data_wait: Duration,
    last_lr: f64,
    /// The wait for the latest update's batches.
    last_wait: Duration,
}

impl Consumed {
    /// Counts an applied update whose last micro-batch was `last`.
    fn consume(&mut self, out: &StepOutput, last: &HostBatch) {
        // Over all ranks.
        self.tokens += out.tokens;
        self.samples += out.samples;
        self.last_lr = out.lr;
        self.through(last);
    }

    /// Batches up to and including `last` are consumed (trained on, skipped as non-finite, or
    /// emptied by a stage): a resume starts after it.
    fn through(&mut self, last: &HostBatch) {
        (self.batches, self.cursor) = (last.seq + 1, last.cursor);
    }
}

/// Where the last logged step left the counters, for per-interval throughput and data wait.
struct LogMark {
    at: Instant,
    tokens: u64,
    data_wait: Duration,
}

/// The Trainer's metric handles, registered once per run (labelled by phase).
struct TrainerMetrics {
    tokens: metrics::Counter,
    samples: metrics::Counter,
    steps: metrics::Counter,
    nonfinite: metrics::Counter,
    data_wait: crate::metrics::exporter::FloatCounter,
    step_seconds: metrics::Histogram,
    queue_depth: metrics::Gauge,
    /// `pretune_step_stage_seconds` by stage, in [`crate::train::stages::STAGES`] order.
    stages: Vec<metrics::Histogram>,
    stage_data_wait: metrics::Histogram,
    mfu: metrics::Gauge,
    lr: metrics::Gauge,
    grad_norm: metrics::Gauge,
    last_step_time: metrics::Gauge,
    step: metrics::Gauge,
    device_memory: crate::metrics::device::DeviceMemory,
}

impl TrainerMetrics {
    fn register(phase: Phase, state: &TrainState, max_steps: u64) -> Self {
        let phase = phase.as_str();
        let m = TrainerMetrics {
            tokens: counter!(names::TOKENS, "phase" => phase, "stage" => "trainer"),
            samples: counter!(names::SAMPLES, "phase" => phase, "stage" => "trainer"),
            steps: counter!(names::STEPS, "phase" => phase),
            nonfinite: counter!(names::NONFINITE_STEPS, "phase" => phase),
            data_wait: names::data_wait(phase),
            step_seconds: histogram!(names::STEP_DURATION, "phase" => phase),
            queue_depth: gauge!(names::QUEUE_DEPTH, "queue" => "masker_to_trainer"),
            // (its capacity is set where the channel is made)
            stages: crate::train::stages::STAGES.iter().map(|s| histogram!(names::STEP_STAGE, "phase" => phase, "stage" => *s)).collect(),
            stage_data_wait: histogram!(names::STEP_STAGE, "phase" => phase, "stage" => "data_wait"),
            mfu: gauge!(names::MFU, "phase" => phase),
            lr: gauge!(names::LEARNING_RATE, "phase" => phase),
            grad_norm: gauge!(names::GRAD_NORM, "phase" => phase),
            last_step_time: gauge!(names::LAST_STEP_TIME, "phase" => phase),
            step: gauge!(names::STEP, "phase" => phase),
            device_memory: crate::metrics::device::DeviceMemory::new(state.vs.device()),
        };
        m.step.set(state.step as f64);
        m.last_step_time.set(unix_now());
        gauge!(names::MAX_STEPS, "phase" => phase).set(max_steps as f64);
        gauge!(names::WORLD_SIZE).set(state.rank_world().1 as f64);
        m
    }

    fn after_update(&self, out: &StepOutput, step: u64) {
        self.tokens.increment(out.tokens);
        self.samples.increment(out.samples);
        self.steps.increment(1);
        self.last_step_time.set(unix_now());
        self.step.set(step as f64);
        self.lr.set(out.lr);
    }
}

impl Trainer {
    /// Runs to `max_steps`, a graceful stop, or an abort; reports the outcome to the Coordinator.
    pub fn run(mut self) {
        match self.train() {
            Ok(totals) => self.links.events.do_send(Event::TrainerDone(totals)),
            Err(e) => {
                self.links.stop.abort();
                self.links.events.do_send(Event::Failed { stage: "trainer", error: Arc::new(e) });
            }
        }
    }

    fn train(&mut self) -> Result<TrainerTotals, TrainerError> {
        let first_step = self.state.step;
        let mut lp = self.loop_state();
        while self.state.step < self.rules.policy.max_steps {
            if let Next::Stop = self.update(&mut lp)? {
                break;
            }
        }
        if lp.interrupted || lp.stopped_early {
            let due = self.rules.policy.due_on_stop(self.state.step);
            self.hand_over(due, &lp.p, &mut lp.totals, &mut lp.last_checkpoint)?;
        }
        let (rank, world) = self.state.rank_world();
        if world > 1 {
            let done = (self.state.step - first_step).max(1) as f64;
            tracing::info!(rank, world, allreduce_ms_per_step = 1e3 * self.state.comm_seconds() / done, "all-reduce time");
        }
        let mut totals = std::mem::take(&mut lp.totals);
        totals.steps = self.state.step;
        totals.tokens = lp.p.tokens - self.start.tokens;
        totals.samples = lp.p.samples;
        totals.elapsed_s = lp.start.elapsed().as_secs_f64();
        totals.data_wait_s = lp.p.data_wait.as_secs_f64();
        totals.interrupted = lp.interrupted;
        totals.stopped_early = lp.stopped_early;
        totals.init = self.init.take();
        totals.model_flops = self.mfu.total();
        totals.peak_flops = self.mfu.peak.flops;
        Ok(totals)
    }

    /// The loop's state at the run's start point.
    fn loop_state(&self) -> LoopState {
        let sp = self.start;
        let start = Instant::now();
        LoopState {
            m: TrainerMetrics::register(self.phase, &self.state, self.rules.policy.max_steps),
            reorder: Reorder::new(sp.batches),
            p: Consumed { tokens: sp.tokens, samples: sp.samples, batches: sp.batches, cursor: sp.cursor, data_wait: Duration::ZERO, last_lr: 0.0, last_wait: Duration::ZERO },
            micro: Vec::with_capacity(self.rules.grad_accum),
            nonfinite_in_a_row: 0,
            totals: TrainerTotals::default(),
            start,
            since_log: LogMark { at: start, tokens: sp.tokens, data_wait: Duration::ZERO },
            requests: Requests::default(),
            last_checkpoint: None,
            interrupted: false,
            stopped_early: false,
        }
    }

    /// One update: commands, batches, the step itself (or the vote to stop), then what is due.
    fn update(&mut self, lp: &mut LoopState) -> Result<Next, TrainerError> {
        self.take_commands(&mut lp.requests);
        if let Some(lr) = lp.requests.lr {
            self.state.set_lr_override(Some(lr));
        }
        // A stopping rank brings no batch (its Loader has stopped) and votes to stop in the
        // update's all-reduce, so every rank of a data-parallel run stops after the same step.
        let stopping = self.links.stop.is_stopping();
        if stopping {
            lp.micro.clear();
        } else if !self.gather(&mut lp.reorder, &mut lp.micro, &mut lp.p, &lp.m) {
            // Abort, or the data plane ended (its stage reports why).
            return Ok(Next::Stop);
        }
        let t0 = Instant::now();
        let accumulating = self.rules.grad_accum > 1;
        let result = match crate::guard::guarded(|| self.state.train_step(&lp.micro, stopping, accumulating)) {
            Ok(r) => r?,
            Err(failed) => return Err(self.step_failure(&lp.micro, failed)),
        };
        lp.m.step_seconds.record(t0.elapsed().as_secs_f64());
        let out = match result {
            StepResult::Stopped => {
                if !self.links.stop.is_stopping() {
                    self.links.stop.request_graceful();
                }
                lp.interrupted = !self.links.stop.is_abort() && !lp.stopped_early;
                return Ok(Next::Stop);
            }
            StepResult::Applied(out) => {
                lp.nonfinite_in_a_row = 0;
                out
            }
            StepResult::Skipped(out) => {
                lp.nonfinite_in_a_row += 1;
                lp.m.nonfinite.increment(1);
                self.skip_nonfinite(&out, lp.nonfinite_in_a_row)?;
                // The batches are consumed: a resume must not see them again.
                lp.p.through(lp.micro.last().expect("micro holds grad_accum >= 1 batches"));
                return Ok(Next::Go);
            }
        };
        lp.p.consume(&out, lp.micro.last().expect("micro holds grad_accum >= 1 batches"));
        lp.m.after_update(&out, self.state.step);
        self.mfu.update(&lp.micro);
        // The stages of the updates the clock times (every one on the CPU), with the wait for
        // their batches, so the shares add up over the same updates.
        if let Some(t) = self.state.stage_times() {
            for ((_, secs), h) in t.pairs().iter().zip(&lp.m.stages) {
                h.record(*secs);
            }
            lp.m.stage_data_wait.record(lp.p.last_wait.as_secs_f64());
        }
        self.after_update(lp, &out)
    }

    /// What is due after an applied update: the log line, the step event, snapshots for the
    /// Evaluator and the Checkpointer, and the early-stopping verdict.
    fn after_update(&mut self, lp: &mut LoopState, out: &StepOutput) -> Result<Next, TrainerError> {
        let step = self.state.step;
        crate::failpoint::hit_at("trainer.step", step);
        let mut due = self.rules.policy.due(step);
        due.eval |= std::mem::take(&mut lp.requests.evaluate) && self.peers.evaluator.is_some();
        due.checkpoint |= std::mem::take(&mut lp.requests.checkpoint) || (due.eval && self.rules.policy.save_checkpoints);
        let logged_loss = due.log.then(|| self.report_step(out, &lp.p, &lp.m, lp.start, &mut lp.since_log));
        if let Some(loss) = logged_loss {
            lp.totals.final_loss = loss;
        }
        self.links.events.do_send(Event::StepDone(StepDone { phase: self.phase, step, lr: out.lr, tokens: lp.p.tokens, loss: logged_loss }));
        if !self.hand_over(due, &lp.p, &mut lp.totals, &mut lp.last_checkpoint)? {
            return Ok(Next::Stop);
        }
        if due.eval && self.peers.evaluator.is_some() && self.rules.early.1.patience > 0 && self.state.rank_world().0 == 0 && step < self.rules.policy.max_steps {
            match self.verdict(step) {
                Some(true) => {
                    tracing::info!(step, metric = %self.rules.early.0.metric, patience = self.rules.early.1.patience, "early stop: no better metric in `patience` evaluations");
                    lp.stopped_early = true;
                    self.links.stop.request_graceful();
                }
                Some(false) => {}
                None => return Ok(Next::Stop),
            }
        }
        Ok(Next::Go)
    }

    /// Takes the next `grad_accum` batches, in `seq` order, into `micro`, counting the wait;
    /// `false` when the data plane ended or the run aborts first.
    fn gather(&mut self, reorder: &mut Reorder, micro: &mut Vec<HostBatch>, p: &mut Consumed, m: &TrainerMetrics) -> bool {
        micro.clear();
        let wait_start = Instant::now();
        while micro.len() < self.rules.grad_accum {
            match reorder.next(&self.links.rx, &self.links.stop) {
                // A custom stage may empty a batch: nothing to train on, but it is consumed.
                Some(b) if b.batch_size == 0 => p.through(&b),
                Some(b) => micro.push(b),
                None => break,
            }
        }
        let waited = wait_start.elapsed();
        p.data_wait += waited;
        m.data_wait.increment(waited.as_secs_f64());
        p.last_wait = waited;
        m.queue_depth.set(self.links.rx.len() as f64);
        micro.len() == self.rules.grad_accum
    }

    /// A non-finite update was dropped: an error under `nonfinite = "abort"` or after
    /// `max_nonfinite_in_a_row` of them, a warning otherwise.
    fn skip_nonfinite(&self, out: &StepOutput, in_a_row: u32) -> Result<(), TrainerError> {
        let (loss, grad_norm) = (out.loss.double_value(&[]), out.grad_norm.double_value(&[]));
        // 1-based index of the update that failed.
        let step = self.state.step + 1;
        let policy = match self.rules.nonfinite {
            NonFinitePolicy::Abort => "abort",
            NonFinitePolicy::Skip => "skip",
        };
        if self.rules.nonfinite == NonFinitePolicy::Abort || in_a_row >= self.rules.max_nonfinite_in_a_row {
            return Err(TrainerError::NonFinite { step, loss, grad_norm, count: in_a_row, policy });
        }
        tracing::warn!(step, loss, grad_norm, in_a_row, "non-finite update skipped");
        Ok(())
    }

    /// Reads the loss and gradient norm off the device (the only host sync of a step) and
    /// reports the step; returns the loss.
    fn report_step(&mut self, out: &StepOutput, p: &Consumed, m: &TrainerMetrics, start: Instant, since: &mut LogMark) -> f64 {
        let phase = self.phase;
        let loss = out.loss.double_value(&[]);
        let grad_norm = out.grad_norm.double_value(&[]);
        let mut losses: BTreeMap<String, f64> = BTreeMap::new();
        for (objective, t) in &out.parts {
            let v = t.double_value(&[]);
            gauge!(names::LOSS, "phase" => phase, "objective" => *objective).set(v);
            losses.insert((*objective).to_owned(), v);
        }
        m.device_memory.record();
        m.grad_norm.set(grad_norm);
        let now = Instant::now();
        let dt = now.duration_since(since.at).as_secs_f64().max(1e-9);
        let mfu = self.mfu.interval(dt);
        if let Some(v) = mfu {
            m.mfu.set(v);
        }
        let report = StepReport {
            phase,
            step: self.state.step,
            loss,
            losses,
            lr: out.lr,
            grad_norm,
            tokens: p.tokens,
            tokens_per_second: (p.tokens - since.tokens) as f64 / dt,
            elapsed_s: now.duration_since(start).as_secs_f64(),
            data_wait_share: (p.data_wait - since.data_wait).as_secs_f64() / dt,
            buckets: self.state.last_bucket_times().map(|(t, end)| crate::actors::events::BucketReport::new(t, end)),
            mfu,
        };
        *since = LogMark { at: now, tokens: p.tokens, data_wait: p.data_wait };
        self.links.events.do_send(Event::Step(report));
        loss
    }

    /// Waits for the evaluation of `step` and applies the early-stopping policy: `Some(stop?)`,
    /// or `None` when the run aborted while waiting.
    fn verdict(&mut self, step: u64) -> Option<bool> {
        loop {
            if self.links.stop.is_abort() {
                return None;
            }
            match self.links.results.recv_timeout(Duration::from_millis(100)) {
                Ok((s, metrics)) => {
                    let value = metrics.get(&self.rules.early.0.metric).unwrap_or(f64::NAN);
                    let verdict = self.rules.early.1.update(value);
                    if s >= step {
                        return Some(verdict.stop);
                    }
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Applies the commands waiting in the control channel; while paused, blocks on it (the
    /// data plane stalls behind the full channel, as back-pressure wants).
    fn take_commands(&mut self, r: &mut Requests) {
        if self.take_commands_until_unpaused(r) {
            // `Paused` went out when the pause began; the update waits until here.
            self.links.events.do_send(Event::Resumed { phase: self.phase, step: self.state.step });
            r.paused = false;
        }
    }

    /// The loop behind [`Trainer::take_commands`]; whether it paused.
    fn take_commands_until_unpaused(&mut self, r: &mut Requests) -> bool {
        let mut paused = false;
        loop {
            let next = if r.paused && !self.links.stop.is_stopping() {
                match self.links.control.recv_timeout(Duration::from_millis(100)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            } else {
                self.links.control.try_recv().ok()
            };
            let Some(cmd) = next else { return paused };
            tracing::info!(?cmd, step = self.state.step, "command");
            if self.state.rank_world().1 > 1 && matches!(cmd, Command::SetLearningRate { .. } | Command::Pause) {
                // Only rank 0 hears commands: these would make the ranks diverge or time out.
                tracing::warn!(?cmd, "not supported in a data-parallel run: ignored");
                continue;
            }
            match cmd {
                Command::Stop => self.links.stop.request_graceful(),
                Command::EvaluateNow => r.evaluate = true,
                Command::CheckpointNow => r.checkpoint = true,
                Command::SetLearningRate { lr } => r.lr = Some(lr),
                Command::Pause if !r.paused => {
                    (r.paused, paused) = (true, true);
                    self.links.events.do_send(Event::Paused { phase: self.phase, step: self.state.step });
                }
                Command::Pause => {}
                Command::Resume => r.paused = false,
            }
        }
    }

    /// Sends snapshots for what is due. `Ok(false)` when the run aborted while waiting.
    fn hand_over(&mut self, due: Due, p: &Consumed, totals: &mut TrainerTotals, last_checkpoint: &mut Option<u64>) -> Result<bool, TrainerError> {
        let step = self.state.step;
        if due.eval {
            if let Some((addr, permits)) = &self.peers.evaluator {
                if !permits.acquire(&self.links.stop) {
                    return Ok(false);
                }
                // Mid-run the Evaluator shares the cores with training: one thread (see
                // `actors::run_pipeline`); after the last step it has them all.
                let threads = if step >= self.rules.policy.max_steps || self.links.stop.is_stopping() { self.threads } else { 1 };
                addr.do_send(Evaluate { step, phase: self.phase, weights: self.state.snapshot(), threads });
                totals.evals_requested += 1;
            }
        }
        // Only rank 0 writes checkpoints (every rank holds the same weights).
        if due.checkpoint && self.state.rank_world().0 == 0 && *last_checkpoint != Some(step) {
            *last_checkpoint = Some(step);
            let t0 = Instant::now();
            if !self.state.weights_finite() {
                return Err(TrainerError::NonFiniteWeights(step));
            }
            let (addr, permits) = &self.peers.checkpointer;
            if !permits.acquire(&self.links.stop) {
                return Ok(false);
            }
            let state = CheckpointState {
                format_version: FORMAT_VERSION,
                step,
                tokens_seen: p.tokens,
                samples_seen: p.samples,
                batches_seen: p.batches,
                cursor: p.cursor,
                seed: self.provenance.seed,
                lr: p.last_lr,
                model: self.provenance.model_json.clone(),
                config: self.provenance.config_json.clone(),
                versions: versions(),
                best: None,
                files: BTreeMap::new(),
                world_size: self.state.rank_world().1,
                init: self.provenance.init_from.clone(),
                tokenizer_sha256: Some(self.provenance.tokenizer_sha256.clone()),
            };
            let model = self.state.snapshot();
            let optimizer = self.state.optimizer_snapshot();
            let stall_s = t0.elapsed().as_secs_f64();
            histogram!(names::CHECKPOINT_STALL).record(stall_s);
            addr.do_send(Save { model, optimizer, state, stall_s, evaluated: due.eval && self.peers.evaluator.is_some() });
            totals.checkpoints_requested += 1;
        }
        Ok(true)
    }
}

impl Trainer {
    /// The typed error of a step libtorch failed in.
    fn step_failure(&self, micro: &[HostBatch], failed: crate::guard::Failed) -> TrainerError {
        let step = self.state.step + 1;
        let out_of_memory = failed.is_out_of_memory();
        let message = failed.message;
        if !out_of_memory {
            return TrainerError::Libtorch { step, message };
        }
        let largest = micro.iter().max_by_key(|b| b.batch_size * b.seq_len);
        TrainerError::OutOfMemory {
            step,
            rows: largest.map_or(0, |b| b.batch_size),
            seq_len: largest.map_or(0, |b| b.seq_len),
            device: format!("{:?}", self.state.vs.device()).to_lowercase(),
            message,
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
