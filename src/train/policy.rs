//! When to log, evaluate and checkpoint: pure functions of the step, tested without threads.

use crate::objective::Direction;

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
    /// use pretune::objective::Direction;
    /// use pretune::train::policy::EarlyStopping;
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

/// What is due after an update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    /// Read scalars off the device and report them.
    pub log: bool,
    /// Evaluate on the held-out split.
    pub eval: bool,
    /// Write a checkpoint.
    pub checkpoint: bool,
}

/// The step-based schedule of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPolicy {
    /// Last step of the run.
    pub max_steps: u64,
    /// Log every N steps (>= 1).
    pub log_every: u64,
    /// Evaluate every N steps (0: at the end of every epoch when the run counts epochs, else
    /// only at the end).
    pub eval_every: u64,
    /// Updates per epoch when the run counts epochs (`train.epochs`); 0 otherwise.
    pub epoch_steps: u64,
    /// Checkpoint every N steps (0: only at the end).
    pub checkpoint_every: u64,
    /// `false`: no checkpoint is ever due (`train.save_checkpoints`; a benchmark or a
    /// throw-away run), only the ones a user asks for on the control endpoint.
    pub save_checkpoints: bool,
    /// Whether there is a held-out split at all.
    pub can_eval: bool,
}

impl StepPolicy {
    /// What is due after update number `step` (1-based: the count of updates done).
    ///
    /// ```
    /// use pretune::train::policy::StepPolicy;
    /// let p = StepPolicy { max_steps: 10, log_every: 5, eval_every: 4, checkpoint_every: 0, save_checkpoints: true, can_eval: true, epoch_steps: 0 };
    /// assert!(p.due(4).eval && !p.due(4).log && p.due(4).checkpoint, "an evaluation checkpoints too");
    /// assert!(!p.due(5).eval && p.due(5).log && !p.due(5).checkpoint);
    /// let end = p.due(10);
    /// assert!(end.log && end.eval && end.checkpoint);
    /// ```
    pub fn due(&self, step: u64) -> Due {
        let every = |n: u64| n > 0 && step.is_multiple_of(n);
        let last = step >= self.max_steps;
        let eval = self.can_eval && (last || every(self.eval_every) || (self.eval_every == 0 && every(self.epoch_steps)));
        // Every evaluation checkpoints too, so the best evaluation always has its weights.
        Due { log: last || every(self.log_every) || step == 1, eval, checkpoint: self.save_checkpoints && (last || eval || every(self.checkpoint_every)) }
    }

    /// What is due when the run stops early at `step` (Ctrl-C): a checkpoint, so it can resume.
    pub fn due_on_stop(&self, step: u64) -> Due {
        Due { log: true, eval: false, checkpoint: self.save_checkpoints && step > 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_eval_split_nothing_evaluates() {
        let p = StepPolicy { max_steps: 4, log_every: 1, eval_every: 1, checkpoint_every: 2, save_checkpoints: true, can_eval: false, epoch_steps: 0 };
        assert!((1..=4).all(|s| !p.due(s).eval));
        assert_eq!((1..=4).filter(|&s| p.due(s).checkpoint).collect::<Vec<_>>(), vec![2, 4]);
    }

    #[test]
    fn without_checkpoints_none_is_ever_due_not_even_at_the_end_or_an_evaluation() {
        let p = StepPolicy { max_steps: 6, log_every: 1, eval_every: 2, checkpoint_every: 3, save_checkpoints: false, can_eval: true, epoch_steps: 0 };
        assert!((1..=6).all(|s| !p.due(s).checkpoint) && !p.due_on_stop(4).checkpoint);
        assert_eq!((1..=6).filter(|&s| p.due(s).eval).collect::<Vec<_>>(), vec![2, 4, 6], "evaluations go on");
    }

    #[test]
    fn first_step_is_logged_so_a_user_sees_the_starting_loss() {
        let p = StepPolicy { max_steps: 100, log_every: 50, eval_every: 0, checkpoint_every: 0, save_checkpoints: true, can_eval: true, epoch_steps: 0 };
        assert_eq!((1..=100).filter(|&s| p.due(s).log).collect::<Vec<_>>(), vec![1, 50, 100]);
        assert_eq!((1..=100).filter(|&s| p.due(s).eval).collect::<Vec<_>>(), vec![100]);
    }
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
    fn eval_every_zero_means_every_epoch_when_counting_epochs() {
        let p = StepPolicy { max_steps: 10, log_every: 5, eval_every: 0, checkpoint_every: 0, save_checkpoints: true, can_eval: true, epoch_steps: 4 };
        assert_eq!((1..=10).filter(|&s| p.due(s).eval).collect::<Vec<_>>(), vec![4, 8, 10]);
        let p = StepPolicy { eval_every: 3, ..p };
        assert_eq!((1..=10).filter(|&s| p.due(s).eval).collect::<Vec<_>>(), vec![3, 6, 9, 10]);
    }
}
