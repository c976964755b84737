//! Fine-tuning policies, pure: early stopping, layer-wise learning-rate decay, freezing.

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Direction {
    /// Accuracy, F1.
    Higher,
    /// Loss, MSE.
    Lower,
}

/// Early stopping with patience on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    /// Evaluations without improvement before stopping (0: never stop).
    pub patience: u32,
    /// Which way is better.
    pub direction: Direction,
    best: Option<f64>,
    stale: u32,
}

/// The verdict after one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// This evaluation is the best so far (keep its checkpoint).
    pub improved: bool,
    /// Stop training now.
    pub stop: bool,
}

impl EarlyStopping {
    /// A fresh policy.
    pub fn new(patience: u32, direction: Direction) -> Self {
        EarlyStopping { patience, direction, best: None, stale: 0 }
    }

    /// Takes one evaluation's value.
    ///
    /// ```
    /// use pretune::finetune::policy::{Direction, EarlyStopping};
    /// let mut p = EarlyStopping::new(2, Direction::Higher);
    /// assert!(p.update(0.5).improved);
    /// assert!(!p.update(0.4).stop);
    /// assert!(p.update(0.5).stop, "a tie is no improvement: two stale evaluations");
    /// ```
    pub fn update(&mut self, value: f64) -> Verdict {
        let better = match (self.best, self.direction) {
            (None, _) => value.is_finite(),
            (Some(b), Direction::Higher) => value > b,
            (Some(b), Direction::Lower) => value < b,
        };
        if better {
            self.best = Some(value);
            self.stale = 0;
        } else {
            self.stale += 1;
        }
        Verdict { improved: better, stop: self.patience > 0 && self.stale >= self.patience }
    }

    /// The best value so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }
}

/// Depth of a BERT parameter: 0 for embeddings, `l + 1` for encoder layer `l`, `layers + 1`
/// for everything above the encoder (pooler, heads).
pub fn depth(name: &str, layers: i64) -> i64 {
    if name.starts_with("bert.embeddings.") {
        return 0;
    }
    if let Some(rest) = name.strip_prefix("bert.encoder.layer.") {
        if let Some(l) = rest.split('.').next().and_then(|s| s.parse::<i64>().ok()) {
            return l + 1;
        }
    }
    layers + 1
}

/// Layer-wise decay: the learning-rate scale `decay^(layers + 1 - depth)`.
pub fn lr_scale(name: &str, layers: i64, decay: f64) -> f64 {
    decay.powi((layers + 1 - depth(name, layers)) as i32)
}

/// Whether a parameter is frozen: the embeddings (if asked) and the first `layers` layers.
pub fn frozen(name: &str, freeze_embeddings: bool, freeze_layers: i64, layers: i64) -> bool {
    let d = depth(name, layers);
    (freeze_embeddings && d == 0) || (d >= 1 && d <= freeze_layers && d <= layers)
}

/// Windows of this many batches are sorted by length under `group_by_length`.
const LENGTH_WINDOW_BATCHES: usize = 50;

/// The order of one epoch's examples, to be cut into batches of `batch`: a seeded shuffle, or
/// with `group_by_length`, a shuffle, then each window of 50 batches sorted by length (longest
/// first), then the batches themselves shuffled, so batches hold similar lengths (less padding)
/// while every example still comes once and batch order stays random.
pub fn epoch_batches(lens: &[usize], batch: usize, group_by_length: bool, rng: &mut crate::rng::Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    rng.shuffle(&mut order);
    if !group_by_length || batch == 0 {
        return order;
    }
    for window in order.chunks_mut(batch * LENGTH_WINDOW_BATCHES) {
        window.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    }
    let mut batches: Vec<&[usize]> = order.chunks(batch).collect();
    rng.shuffle(&mut batches);
    batches.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patience_counts_evaluations_without_improvement() {
        let mut p = EarlyStopping::new(3, Direction::Lower);
        let v: Vec<Verdict> = [1.0, 0.8, 0.9, 0.85, 0.8, 0.7, 0.9].iter().map(|&x| p.update(x)).collect();
        assert_eq!(v.iter().map(|v| v.improved).collect::<Vec<_>>(), vec![true, true, false, false, false, true, false]);
        assert_eq!(v.iter().map(|v| v.stop).collect::<Vec<_>>(), vec![false, false, false, false, true, false, false]);
        assert_eq!(p.best(), Some(0.7));
        let mut never = EarlyStopping::new(0, Direction::Higher);
        assert!((0..10).all(|_| !never.update(0.1).stop));
    }

    #[test]
    fn layer_wise_decay_and_freezing_pick_the_intended_groups() {
        let l = 4;
        assert_eq!(lr_scale("classifier.weight", l, 0.5), 1.0);
        assert_eq!(lr_scale("bert.pooler.dense.weight", l, 0.5), 1.0);
        assert_eq!(lr_scale("bert.encoder.layer.3.output.dense.weight", l, 0.5), 0.5);
        assert_eq!(lr_scale("bert.encoder.layer.0.attention.self.query.weight", l, 0.5), 0.0625);
        assert_eq!(lr_scale("bert.embeddings.word_embeddings.weight", l, 0.5), 0.03125);
        assert!(frozen("bert.embeddings.LayerNorm.weight", true, 0, l));
        assert!(!frozen("bert.embeddings.LayerNorm.weight", false, 2, l));
        assert!(frozen("bert.encoder.layer.1.output.dense.bias", false, 2, l));
        assert!(!frozen("bert.encoder.layer.2.output.dense.bias", false, 2, l));
        assert!(!frozen("classifier.weight", true, 99, l));
    }

    #[test]
    fn grouping_by_length_keeps_every_example_once_and_cuts_padding() {
        use crate::rng::{Rng, Stream};
        let lens: Vec<usize> = (0..1000).map(|i| 20 + (i * 7919) % 100).collect();
        let padded = |order: &[usize]| -> usize { order.chunks(10).map(|c| c.iter().map(|&i| lens[i]).max().unwrap() * c.len()).sum() };
        let plain = epoch_batches(&lens, 10, false, &mut Rng::keyed(1, Stream::Block, &[0]));
        let grouped = epoch_batches(&lens, 10, true, &mut Rng::keyed(1, Stream::Block, &[0]));
        let mut sorted = grouped.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>(), "a permutation");
        assert!(padded(&grouped) * 10 < padded(&plain) * 8, "{} vs {}", padded(&grouped), padded(&plain));
        assert_eq!(grouped, epoch_batches(&lens, 10, true, &mut Rng::keyed(1, Stream::Block, &[0])), "seeded");
    }
}
