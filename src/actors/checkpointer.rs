//! The Checkpointer: an actix actor on its own thread (`SyncArbiter`) that writes CPU copies
//! of the weights and optimizer state, so a step never waits on the disk.

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Handler, Message, Recipient, SyncContext};
use tch::Tensor;

use super::control::Permits;
use super::events::Event;
use crate::checkpoint::state::Best;
use crate::checkpoint::{CheckpointState, CheckpointStore};
use crate::metrics::names;

/// Write a checkpoint.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Save {
    /// CPU copies of the model variables.
    pub model: Vec<(String, Tensor)>,
    /// CPU copies of the optimizer moments.
    pub optimizer: Vec<(String, Tensor)>,
    /// Everything else (`state.json`).
    pub state: CheckpointState,
    /// How long the Trainer stalled to hand this over.
    pub stall_s: f64,
    /// An evaluation of these weights is under way: keep the checkpoint until its verdict.
    pub evaluated: bool,
}

/// The verdict on the evaluation at `step`: `best` when it is the best so far (keep its
/// checkpoint, now or once written); otherwise retention may delete it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Verdict {
    /// Step evaluated.
    pub step: u64,
    /// The new best, when this evaluation is it.
    pub best: Option<Best>,
}

/// Answered once every earlier message is handled (the mailbox is processed in order).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

/// The actor that writes checkpoints on its own thread, so a slow disk stalls the Trainer only
/// when the previous checkpoint is still being written.
pub struct Checkpointer {
    /// Where checkpoints go.
    pub store: CheckpointStore,
    /// Checkpoints kept besides the best and those awaiting a verdict (`train.keep_last`).
    pub keep_last: usize,
    /// Where results and failures go (the Coordinator).
    pub events: Recipient<Event>,
    /// Given back after every write, success or not.
    pub permits: Permits,
    /// Best checkpoint by the monitored metric (from the Coordinator, or the resumed
    /// checkpoint).
    pub best: Option<Best>,
    /// Checkpoints whose evaluation has no verdict yet (spared by retention).
    pub awaiting: std::collections::BTreeSet<u64>,
    /// Verdicts that came before their checkpoint was written.
    pub judged: std::collections::BTreeSet<u64>,
}

impl Checkpointer {
    fn point_best(&self) {
        if let Some(b) = self.best {
            match self.store.set_best(b) {
                Ok(true) => self.retain(),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not mark the best checkpoint"),
            }
        }
    }
}

impl Handler<Flush> for Checkpointer {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut SyncContext<Self>) {}
}

impl Checkpointer {
    fn retain(&self) {
        let spare: Vec<u64> = self.awaiting.iter().copied().collect();
        self.store.retain(self.keep_last, &spare);
    }
}

impl Handler<Verdict> for Checkpointer {
    type Result = ();

    fn handle(&mut self, msg: Verdict, _: &mut SyncContext<Self>) {
        if !self.awaiting.remove(&msg.step) {
            self.judged.insert(msg.step);
        }
        match msg.best {
            Some(b) => {
                self.best = Some(b);
                self.point_best();
            }
            None => self.retain(),
        }
    }
}

impl Actor for Checkpointer {
    type Context = SyncContext<Self>;
}

impl Handler<Save> for Checkpointer {
    type Result = ();

    fn handle(&mut self, msg: Save, _: &mut SyncContext<Self>) {
        let t0 = Instant::now();
        let step = msg.state.step;
        let mut state = msg.state;
        state.best = self.best;
        if msg.evaluated && !self.judged.remove(&step) {
            self.awaiting.insert(step);
        }
        let spare: Vec<u64> = self.awaiting.iter().copied().collect();
        let result = self.store.save(&msg.model, &msg.optimizer, state, self.keep_last, &spare);
        if result.is_ok() && self.best.is_some_and(|b| b.step == step) {
            self.point_best();
        }
        let write_s = t0.elapsed().as_secs_f64();
        self.permits.release();
        match result {
            Ok(path) => {
                metrics::histogram!(names::CHECKPOINT_DURATION).record(write_s);
                self.events.do_send(Event::Saved { step, path, write_s, stall_s: msg.stall_s });
            }
            Err(e) => {
                metrics::counter!(names::CHECKPOINT_FAILURES).increment(1);
                self.events.do_send(Event::Failed { stage: "checkpointer", error: Arc::new(e) })
            }
        }
    }
}
