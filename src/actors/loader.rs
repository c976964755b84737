//! The Loader: streams examples, groups them into numbered raw batches, and sends them down
//! the bounded channel to the Masker workers. A full channel blocks it (back-pressure).

use std::sync::Arc;

use crossbeam_channel::Sender;
use metrics::counter;

use super::control::StopFlag;
use super::events::{Event, EventSink};
use crate::batch::RawBatch;
use crate::data::stream::{ExampleSource, StreamError};
use crate::metrics::names;

/// Everything the Loader thread owns.
pub struct Loader {
    /// The example source (corpus or labelled set), positioned at the resume cursor.
    pub stream: Box<dyn ExampleSource>,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Number of the first batch to send.
    pub first_seq: u64,
    /// To the Masker workers; dropping it tells them the data is over.
    pub tx: Sender<RawBatch>,
    /// The depth gauge of `tx`'s queue.
    pub queue: super::queue::QueueGauge,
    /// Run-wide stop.
    pub stop: StopFlag,
    /// Where failures go.
    pub events: EventSink,
    /// `pretrain` or `finetune`.
    pub phase: crate::workload::Phase,
    /// `(rank, world)` of a distributed run: the Loader reads global batches of
    /// `batch_size × world` examples and keeps this rank's slice ([`crate::distributed::shard_range`]).
    pub shard: Option<(usize, usize)>,
}

impl Loader {
    /// Runs until stopped, the Maskers hang up, or an error (reported to the Coordinator).
    pub fn run(mut self) {
        if let Err(e) = self.pump() {
            self.stop.abort();
            (self.events)(Event::Failed { stage: "loader", error: Arc::new(e) });
        }
        let read = self.stream.token_bytes_read();
        if read > 0 {
            let (rank, world) = self.shard.unwrap_or((0, 1));
            tracing::info!(rank, world, token_bytes_read = read, "the Loader read {:.1} MB of token ids from the prepared corpus", read as f64 / 1e6);
        }
    }

    fn pump(&mut self) -> Result<(), StreamError> {
        let tokens = counter!(names::TOKENS, "phase" => self.phase, "stage" => "loader");
        let samples = counter!(names::SAMPLES, "phase" => self.phase, "stage" => "loader");
        let mut seq = self.first_seq;
        let (rank, world) = self.shard.unwrap_or((0, 1));
        let global = self.batch_size * world;
        // A rank of a data-parallel run reads the ids of the examples it keeps only (a
        // prepared corpus hands out positions until then).
        let deferred = world > 1 && self.stream.defer_reads();
        let bytes_read = counter!(names::PREPARED_BYTES_READ, "phase" => self.phase);
        let mut reported = 0;
        while !self.stop.is_stopping() {
            let mut examples = Vec::with_capacity(global);
            while examples.len() < global {
                match self.stream.next_example()? {
                    Some(e) => examples.push(e),
                    None => break,
                }
                if self.stream.batch_ends_here() {
                    break;
                }
            }
            for bad in self.stream.take_skipped() {
                counter!(names::RECORDS_SKIPPED, "reason" => bad.reason).increment(1);
                tracing::warn!(file = %bad.path.display(), line = bad.line, reason = bad.reason, "skipped record: {}", bad.detail);
            }
            if examples.is_empty() {
                return Ok(());
            }
            if world > 1 && examples.len() < world {
                // A tail too short to give every rank an example: every rank drops it alike,
                // so the ranks keep taking the same steps.
                tracing::warn!(examples = examples.len(), world, "dropping an epoch's last batch: fewer examples than ranks");
                continue;
            }
            if world > 1 {
                let keep = crate::distributed::shard_range(examples.len(), rank, world);
                examples.truncate(keep.end);
                examples.drain(..keep.start);
            }
            if deferred {
                for e in &mut examples {
                    self.stream.resolve(e);
                }
            }
            let read = self.stream.token_bytes_read();
            bytes_read.increment(read - reported);
            reported = read;
            tokens.increment(examples.iter().map(|e| e.payload.n_tokens() as u64).sum());
            samples.increment(examples.len() as u64);
            let batch = RawBatch { seq, examples, cursor: self.stream.cursor() };
            if self.tx.send(batch).is_err() {
                return Ok(());
            }
            self.queue.observe(self.tx.len());
            seq += 1;
        }
        Ok(())
    }
}
