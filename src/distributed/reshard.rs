//! Resuming on another number of ranks: how a checkpoint's global batch is split over the new
//! world. A pure policy, tested without processes.
//!
//! A checkpoint is a full replica plus a global cursor (the stream position after the last
//! update), so any world size can continue it; what must be kept is the global batch, or the
//! run is another optimisation. Like Megatron's "micro-batch × data-parallel × accumulation =
//! global batch", the update's size stays `world × batch × accum`.
//!
//! The preferred split keeps the *global micro-batch* (`world × batch`) too: the Loader then
//! reads the same groups of examples in the same order, every stream setting derived from the
//! global micro-batch (`group_by_length`'s unit, an epoch's update count) is unchanged, and the
//! run continues exactly as if it had always had the new world size. Only when the old global
//! micro-batch does not divide over the new ranks is the accumulation changed instead.

/// How an update is split: ranks × sequences per rank and micro-batch × micro-batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Ranks.
    pub world: usize,
    /// `train.batch_size`: sequences per rank and micro-batch.
    pub batch: usize,
    /// `train.grad_accum`: micro-batches per update.
    pub accum: usize,
}

impl Batching {
    /// Sequences per update, over all ranks.
    pub fn global(&self) -> usize {
        self.world * self.batch * self.accum
    }

    /// Sequences per micro-batch, over all ranks (what the Loader reads at once).
    pub fn global_micro(&self) -> usize {
        self.world * self.batch
    }

    /// The next micro-batch's `seq` after `consumed` micro-batches of a run split as `from`,
    /// counted in this split's micro-batches (the Trainer expects `accum` per update).
    pub fn seq_after(&self, from: &Batching, consumed: u64, step: u64) -> u64 {
        if self.accum == from.accum {
            consumed
        } else if consumed.is_multiple_of(from.accum as u64) {
            consumed / from.accum as u64 * self.accum as u64
        } else {
            step * self.accum as u64
        }
    }
}

impl std::fmt::Display for Batching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rank(s) × batch_size {} × grad_accum {}", self.world, self.batch, self.accum)
    }
}

/// A checkpoint's global batch that cannot be kept on the new world size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReshardError {
    /// The global batch is not a multiple of the new rank count.
    #[error(
        "its global batch of {} sequences ({saved}) cannot be split evenly over {world} rank(s): resume on a number of ranks that divides {}, or start a new run from it ([init] checkpoint = \"...\") with train.batch_size and train.grad_accum of your choice",
        saved.global(), saved.global()
    )]
    Indivisible {
        /// How the checkpoint's run was split.
        saved: Batching,
        /// The new rank count.
        world: usize,
    },
    /// `group_by_length` orders each epoch in units of the global micro-batch, which the new
    /// world size would change: the rest of the epoch would repeat and skip examples.
    #[error(
        "train.group_by_length orders each epoch by global micro-batches of {} sequences ({saved}), which cannot be split over {world} rank(s): resume on a number of ranks that divides {}, or set train.group_by_length = false (the epoch's order then does not depend on the batch)",
        saved.global_micro(), saved.global_micro()
    )]
    GroupedOrder {
        /// How the checkpoint's run was split.
        saved: Batching,
        /// The new rank count.
        world: usize,
    },
}

/// The split a resume at `now.world` ranks uses for a checkpoint written as `saved`: `now`
/// itself when the world size is unchanged, or when its batch and accumulation (as configured)
/// already give the checkpoint's global batch (the user chose the split: to fit memory, say);
/// else the checkpoint's global micro-batch divided over the new ranks; else the accumulation
/// changed, with the largest per-rank batch not above the checkpoint's that divides evenly.
///
/// # Errors
/// [`ReshardError`] when the global batch (or, under `group_by_length`, the global
/// micro-batch) cannot be split over `now.world` ranks.
pub fn reshard(saved: Batching, now: Batching, group_by_length: bool) -> Result<Batching, ReshardError> {
    if now.world == saved.world {
        return Ok(now);
    }
    let keeps_order = |b: &Batching| !group_by_length || b.global_micro() == saved.global_micro();
    if now.global() == saved.global() && keeps_order(&now) {
        return Ok(now);
    }
    let world = now.world;
    if saved.global_micro().is_multiple_of(world) {
        return Ok(Batching { world, batch: saved.global_micro() / world, accum: saved.accum });
    }
    if group_by_length {
        return Err(ReshardError::GroupedOrder { saved, world });
    }
    if !saved.global().is_multiple_of(world) {
        return Err(ReshardError::Indivisible { saved, world });
    }
    let per_rank = saved.global() / world;
    let batch = (1..=saved.batch.min(per_rank)).rev().find(|b| per_rank.is_multiple_of(*b)).unwrap_or(1);
    Ok(Batching { world, batch, accum: per_rank / batch })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(world: usize, batch: usize, accum: usize) -> Batching {
        Batching { world, batch, accum }
    }

    #[test]
    fn the_global_micro_batch_is_kept_when_it_divides() {
        // Losing a machine: 2 × 8 -> 1 × 16; gaining two: 2 × 8 -> 4 × 4.
        assert_eq!(reshard(b(2, 8, 1), b(1, 8, 1), false), Ok(b(1, 16, 1)));
        assert_eq!(reshard(b(2, 8, 3), b(4, 8, 1), true), Ok(b(4, 4, 3)));
        // The same world size changes nothing (the configured batch is the user's).
        assert_eq!(reshard(b(2, 8, 1), b(2, 4, 1), false), Ok(b(2, 4, 1)));
    }

    #[test]
    fn a_split_the_user_chose_is_kept_when_it_keeps_the_global_batch() {
        // 2 × 8 × 1 on one rank with grad_accum 2 to fit memory: 16 sequences per update.
        assert_eq!(reshard(b(2, 8, 1), b(1, 8, 2), false), Ok(b(1, 8, 2)));
        // Not under group_by_length, whose epoch order is in units of 16: then 1 × 16.
        assert_eq!(reshard(b(2, 8, 1), b(1, 8, 2), true), Ok(b(1, 16, 1)));
    }

    #[test]
    fn the_accumulation_changes_when_the_micro_batch_cannot_be_split() {
        // 2 × 3 × 2 = 12 over 4 ranks: the micro-batch of 6 does not divide, 12 does.
        assert_eq!(reshard(b(2, 3, 2), b(4, 3, 2), false), Ok(b(4, 3, 1)));
        // 3 × 5 × 2 = 30 over 2 ranks: 15 per rank, batch 5 kept, 3 micro-batches.
        assert_eq!(reshard(b(3, 5, 2), b(2, 5, 2), false), Ok(b(2, 5, 3)));
        // 1 × 6 × 2 = 12 over 4: micro-batch 6 doesn't divide; 3 per rank: batch 3, accum 1.
        assert_eq!(reshard(b(1, 6, 2), b(4, 6, 2), false), Ok(b(4, 3, 1)));
        for (saved, world) in [(b(2, 3, 2), 4), (b(3, 5, 2), 2), (b(5, 7, 3), 3), (b(1, 6, 2), 4)] {
            let got = reshard(saved, b(world, saved.batch, saved.accum), false).unwrap();
            assert_eq!((got.world, got.global()), (world, saved.global()), "{saved} -> {got}");
            assert!(got.batch <= saved.batch.max(saved.global_micro() / world), "{saved} -> {got}");
        }
    }

    #[test]
    fn what_cannot_be_kept_is_an_error_naming_the_keys() {
        let e = reshard(b(1, 5, 1), b(2, 5, 1), false).unwrap_err();
        assert_eq!(e, ReshardError::Indivisible { saved: b(1, 5, 1), world: 2 });
        assert!(e.to_string().contains("global batch of 5") && e.to_string().contains("train.grad_accum"), "{e}");
        let e = reshard(b(2, 3, 2), b(4, 3, 2), true).unwrap_err().to_string();
        assert!(e.contains("train.group_by_length") && e.contains("divides 6"), "{e}");
    }

    #[test]
    fn the_next_seq_counts_micro_batches_of_the_new_split() {
        let (old, new) = (b(2, 3, 2), b(4, 3, 1));
        assert_eq!(new.seq_after(&old, 10, 5), 5);
        assert_eq!(b(1, 8, 2).seq_after(&b(2, 8, 1), 7, 7), 14);
        assert_eq!(b(1, 16, 1).seq_after(&b(2, 8, 1), 7, 7), 7);
        // A consumed count that is not whole updates (a stage emptied a batch): by steps.
        assert_eq!(b(1, 8, 2).seq_after(&b(1, 8, 3), 7, 2), 4);
    }
}
