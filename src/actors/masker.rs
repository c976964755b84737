//! A Masker worker: raw batches in, collated host batches out. Several run in parallel; their
//! output order does not matter because every batch keeps its `seq` and its randomness is keyed
//! by example, and the Trainer reorders.

use crossbeam_channel::{Receiver, Sender};
use metrics::counter;

use super::control::StopFlag;
use crate::batch::{HostBatch, RawBatch};
use crate::objective::Collator;
use crate::rng::Purpose;
use crate::metrics::names;

/// One worker's loop. Ends when the Loader hangs up, the Trainer hangs up, or on abort.
pub fn run(rx: Receiver<RawBatch>, tx: Sender<HostBatch>, cpu: std::sync::Arc<dyn Collator>, stop: StopFlag, phase: crate::workload::Phase, queues: (super::queue::QueueGauge, super::queue::QueueGauge)) {
    let tokens = counter!(names::TOKENS, "phase" => phase, "stage" => "masker");
    let samples = counter!(names::SAMPLES, "phase" => phase, "stage" => "masker");
    for raw in rx.iter() {
        queues.0.observe(rx.len());
        if stop.is_abort() {
            return;
        }
        let batch = cpu.collate(raw, Purpose::Mask);
        tokens.increment(batch.n_tokens as u64);
        samples.increment(batch.batch_size as u64);
        if tx.send(batch).is_err() {
            return;
        }
        queues.1.observe(tx.len());
    }
}
