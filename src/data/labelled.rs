//! Labelled examples as a Loader source: the fine-tuning counterpart of
//! [`super::stream::ExampleStream`], with the same [`Cursor`] semantics.
//!
//! A labelled set is small enough to encode once and hold in memory. Each epoch's order is a
//! pure function of `(seed, epoch)` (a seeded shuffle, or `group_by_length` batching), so the
//! cursor `(epoch, position in the epoch, example index)` is all a resume needs: it recomputes
//! the epoch's order and seeks, it never replays.

use std::sync::Arc;

use super::stream::{Cursor, Example, ExampleSource, Payload, StreamError};
use crate::rng::{Rng, Purpose};

pub use super::examples::{epoch_order, QaAnswer, QaRecord, QaWindow, TaskExample};

/// How a [`LabelledStream`] orders its examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ordering {
    /// Seeds every epoch's order.
    pub seed: u64,
    /// Shuffle each epoch (training) or keep file order (evaluation).
    pub shuffle: bool,
    /// Start a new epoch at the end (training) or stop (evaluation).
    pub repeat: bool,
    /// Examples per (global) batch: the unit of `group_by_length`.
    pub batch: usize,
    /// Batch examples of similar length.
    pub group_by_length: bool,
}

/// A labelled set as an [`ExampleSource`].
pub struct LabelledStream {
    examples: Arc<Vec<Arc<TaskExample>>>,
    ordering: Ordering,
    cursor: Cursor,
    /// `cursor.epoch`'s order (empty until first needed).
    order: Vec<usize>,
}

impl LabelledStream {
    /// A stream positioned at `cursor` (`Cursor::default()` for the start). Only `epoch`,
    /// `in_block` (position in the epoch) and `example` of the cursor are used.
    pub fn new(examples: Arc<Vec<Arc<TaskExample>>>, ordering: Ordering, cursor: Cursor) -> Self {
        LabelledStream { examples, ordering, cursor, order: Vec::new() }
    }

    fn load_order(&mut self) {
        let n = self.examples.len();
        self.order = if self.ordering.shuffle {
            let lens: Vec<usize> = self.examples.iter().map(|e| e.ids.len()).collect();
            let mut rng = Rng::keyed(self.ordering.seed, Purpose::Block, &[u64::MAX, self.cursor.epoch]);
            epoch_order(&lens, self.ordering.batch, self.ordering.group_by_length, &mut rng)
        } else {
            (0..n).collect()
        };
    }
}

impl ExampleSource for LabelledStream {
    fn next_example(&mut self) -> Result<Option<Example>, StreamError> {
        let n = self.examples.len() as u64;
        if n == 0 {
            return Err(StreamError::Empty("the labelled set".into()));
        }
        if self.cursor.in_block >= n {
            if !self.ordering.repeat {
                return Ok(None);
            }
            self.cursor.epoch += 1;
            self.cursor.in_block = 0;
            self.order.clear();
        }
        if self.order.is_empty() {
            self.load_order();
        }
        let i = self.order[self.cursor.in_block as usize];
        let ex = Example { index: self.cursor.example, epoch: self.cursor.epoch, payload: Payload::Labelled(self.examples[i].clone()), positions_from: None };
        self.cursor.in_block += 1;
        self.cursor.example += 1;
        Ok(Some(ex))
    }

    fn cursor(&self) -> Cursor {
        self.cursor
    }

    fn batch_ends_here(&self) -> bool {
        self.cursor.in_block >= self.examples.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> Arc<Vec<Arc<TaskExample>>> {
        Arc::new((0..n).map(|i| Arc::new(TaskExample { ids: vec![1; 3 + i % 7], labels: vec![i as i64], ..Default::default() })).collect())
    }

    fn label(e: &Example) -> i64 {
        match &e.payload {
            Payload::Labelled(t) => t.labels[0],
            _ => unreachable!(),
        }
    }

    #[test]
    fn grouping_by_length_keeps_every_example_once_and_cuts_padding() {
        let lens: Vec<usize> = (0..1000).map(|i| 20 + (i * 7919) % 100).collect();
        let padded = |order: &[usize]| -> usize { order.chunks(10).map(|c| c.iter().map(|&i| lens[i]).max().unwrap() * c.len()).sum() };
        let plain = epoch_order(&lens, 10, false, &mut Rng::keyed(1, Purpose::Block, &[0]));
        let grouped = epoch_order(&lens, 10, true, &mut Rng::keyed(1, Purpose::Block, &[0]));
        let mut sorted = grouped.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>(), "a permutation");
        assert!(padded(&grouped) * 10 < padded(&plain) * 8, "{} vs {}", padded(&grouped), padded(&plain));
        assert_eq!(grouped, epoch_order(&lens, 10, true, &mut Rng::keyed(1, Purpose::Block, &[0])), "seeded");
    }

    #[test]
    fn every_epoch_is_a_new_permutation_and_a_cursor_seeks_into_it() {
        for group in [false, true] {
            let ordering = Ordering { seed: 7, shuffle: true, repeat: true, batch: 4, group_by_length: group };
            let mut s = LabelledStream::new(set(10), ordering, Cursor::default());
            let mut seen = Vec::new();
            let mut ends = Vec::new();
            for k in 0..25 {
                seen.push(label(&s.next_example().unwrap().unwrap()));
                if s.batch_ends_here() {
                    ends.push(k);
                }
            }
            let mut e0 = seen[..10].to_vec();
            e0.sort_unstable();
            assert_eq!(e0, (0..10).collect::<Vec<i64>>());
            assert_ne!(seen[..10], seen[10..20], "epochs are shuffled differently");
            assert_eq!(ends, vec![9, 19], "the epoch ends a batch");
            // Seek: a stream started from the cursor after 13 examples continues identically.
            let mut a = LabelledStream::new(set(10), ordering, Cursor::default());
            for _ in 0..13 {
                a.next_example().unwrap();
            }
            let mut b = LabelledStream::new(set(10), ordering, a.cursor());
            for want in &seen[13..25] {
                let (x, y) = (a.next_example().unwrap().unwrap(), b.next_example().unwrap().unwrap());
                assert_eq!((label(&x), x.index, x.epoch), (label(&y), y.index, y.epoch));
                assert_eq!(label(&x), *want);
            }
        }
    }

    #[test]
    fn evaluation_order_is_file_order_and_ends() {
        let ordering = Ordering { seed: 7, shuffle: false, repeat: false, batch: 4, group_by_length: false };
        let mut s = LabelledStream::new(set(5), ordering, Cursor::default());
        let got: Vec<i64> = std::iter::from_fn(|| s.next_example().unwrap()).map(|e| label(&e)).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }
}
