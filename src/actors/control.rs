//! Shared run controls: the stop flag and the hand-over permits.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

const RUNNING: u8 = 0;
const GRACEFUL: u8 = 1;
const ABORT: u8 = 2;

/// Cloned into every stage. `graceful`: finish the step, checkpoint, stop (a signal).
/// `abort`: stop now (another stage failed).
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicU8>);

impl StopFlag {
    /// A flag in the running state.
    pub fn new() -> Self {
        StopFlag::default()
    }
    /// Ask for a clean stop after the current step.
    pub fn request_graceful(&self) {
        let _ = self.0.compare_exchange(RUNNING, GRACEFUL, Ordering::SeqCst, Ordering::SeqCst);
    }
    /// Stop everything now.
    pub fn abort(&self) {
        self.0.store(ABORT, Ordering::SeqCst);
    }
    /// Any stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.0.load(Ordering::SeqCst) != RUNNING
    }
    /// An abort was requested.
    pub fn is_abort(&self) -> bool {
        self.0.load(Ordering::SeqCst) == ABORT
    }
}

/// A counting semaphore over a bounded channel: the Trainer takes a permit before handing a
/// weight snapshot to the Evaluator or Checkpointer, which give it back when done. It bounds
/// the snapshots in flight (memory) and the wait shows up as the checkpoint stall.
#[derive(Clone)]
pub struct Permits {
    give: Sender<()>,
    take: Receiver<()>,
    /// The mailbox's depth gauge (snapshots handed over, not yet done) and its bound.
    queue: Option<(super::queue::QueueGauge, usize)>,
}

impl std::fmt::Debug for Permits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permits").field("free", &self.take.len()).finish_non_exhaustive()
    }
}

impl Permits {
    /// `n` permits.
    pub fn new(n: usize) -> Self {
        let (give, take) = bounded(n);
        for _ in 0..n {
            give.send(()).expect("the channel has room for n permits");
        }
        Permits { give, take, queue: None }
    }

    /// `n` permits of the mailbox `name`: `pretune_queue_depth{queue=name}` counts the ones
    /// taken (work handed over, not yet done), `pretune_queue_capacity` is `n`.
    pub fn mailbox(name: &str, n: usize) -> Self {
        let gauge = super::queue::QueueGauge::new(name, n);
        gauge.observe(0);
        Permits { queue: Some((gauge, n)), ..Permits::new(n) }
    }

    fn observe(&self) {
        if let Some((g, n)) = &self.queue {
            g.observe(n.saturating_sub(self.take.len()));
        }
    }
    /// Blocks until a permit is free, or returns `false` when `stop` aborts meanwhile.
    pub fn acquire(&self, stop: &StopFlag) -> bool {
        loop {
            if self.take.recv_timeout(std::time::Duration::from_millis(50)).is_ok() {
                self.observe();
                return true;
            }
            if stop.is_abort() {
                return false;
            }
        }
    }
    /// Returns a permit.
    pub fn release(&self) {
        let _ = self.give.try_send(());
        self.observe();
    }
}
