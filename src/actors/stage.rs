//! Custom data stages between the Loader and the Masker workers.
//!
//! A stage runs on its own thread between two bounded channels, so back-pressure is kept: a
//! slow stage stalls the Loader, a slow Masker stalls the stage. Batches reach it in `seq`
//! order. It maps each batch to exactly one batch (it may filter, rewrite or add examples, but
//! must keep `seq`): the Trainer consumes batches by `seq`, and a batch left empty is skipped.

use crossbeam_channel::{Receiver, Sender};

use crate::batch::RawBatch;

/// A transformation of raw batches (documents already tokenized and packed).
pub trait DataStage: Send + 'static {
    /// A name for thread names and logs.
    fn name(&self) -> &str {
        "stage"
    }
    /// Transforms one batch.
    fn process(&mut self, batch: RawBatch) -> RawBatch;
}

/// The stage's loop: until either side hangs up.
pub fn run(mut stage: Box<dyn DataStage>, rx: Receiver<RawBatch>, tx: Sender<RawBatch>, queues: (super::queue::QueueGauge, super::queue::QueueGauge)) {
    for batch in rx.iter() {
        queues.0.observe(rx.len());
        let seq = batch.seq;
        let mut out = stage.process(batch);
        out.seq = seq;
        if tx.send(out).is_err() {
            return;
        }
        queues.1.observe(tx.len());
    }
}
