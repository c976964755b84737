//! The held-out batches of a workload: its held-out examples, packed and masked once by its
//! collator with the evaluation stream, so every evaluation scores the same tokens. The
//! Evaluator builds them for the run's objective, `[retention]` for the starting checkpoint's.

use std::sync::Arc;

use crate::batch::{HostBatch, RawBatch};
use crate::data::stream::{OpenSource, StreamError};
use crate::objective::Collator;
use crate::rng::Purpose;

/// Where held-out batches come from and how many.
pub struct HeldOut {
    /// The held-out examples.
    pub source: OpenSource,
    /// The objective's collator, run with the evaluation stream so the masks never change
    /// between evaluations.
    pub cpu: Arc<dyn Collator>,
    /// Sequences per batch.
    pub batch_size: usize,
    /// At most this many batches.
    pub max_batches: usize,
}

impl HeldOut {
    /// Reads, packs and masks the held-out batches.
    ///
    /// # Errors
    /// As the training stream.
    pub fn build(&self) -> Result<Vec<HostBatch>, StreamError> {
        let mut stream = (self.source)();
        let mut out = Vec::new();
        while out.len() < self.max_batches {
            let mut examples = Vec::with_capacity(self.batch_size);
            while examples.len() < self.batch_size {
                match stream.next_example()? {
                    Some(e) => examples.push(e),
                    None => break,
                }
            }
            if examples.is_empty() {
                break;
            }
            let raw = RawBatch { seq: out.len() as u64, examples, cursor: stream.cursor() };
            out.push(self.cpu.collate(raw, Purpose::EvalMask));
        }
        Ok(out)
    }
}
