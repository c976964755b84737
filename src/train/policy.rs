//! When to log, evaluate and checkpoint: pure functions of the step, tested without threads.

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
    /// Evaluate every N steps (0: only at the end).
    pub eval_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Whether there is a held-out split at all.
    pub can_eval: bool,
}

impl StepPolicy {
    /// What is due after update number `step` (1-based: the count of updates done).
    ///
    /// ```
    /// use pretune::train::policy::StepPolicy;
    /// let p = StepPolicy { max_steps: 10, log_every: 5, eval_every: 4, checkpoint_every: 0, can_eval: true };
    /// assert!(p.due(4).eval && !p.due(4).log && !p.due(4).checkpoint);
    /// let end = p.due(10);
    /// assert!(end.log && end.eval && end.checkpoint);
    /// ```
    pub fn due(&self, step: u64) -> Due {
        let every = |n: u64| n > 0 && step % n == 0;
        let last = step >= self.max_steps;
        Due {
            log: last || every(self.log_every) || step == 1,
            eval: self.can_eval && (last || every(self.eval_every)),
            checkpoint: last || every(self.checkpoint_every),
        }
    }

    /// What is due when the run stops early at `step` (Ctrl-C): a checkpoint, so it can resume.
    pub fn due_on_stop(&self, step: u64) -> Due {
        Due { log: true, eval: false, checkpoint: step > 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_eval_split_nothing_evaluates() {
        let p = StepPolicy { max_steps: 4, log_every: 1, eval_every: 1, checkpoint_every: 2, can_eval: false };
        assert!((1..=4).all(|s| !p.due(s).eval));
        assert_eq!((1..=4).filter(|&s| p.due(s).checkpoint).collect::<Vec<_>>(), vec![2, 4]);
    }

    #[test]
    fn first_step_is_logged_so_a_user_sees_the_starting_loss() {
        let p = StepPolicy { max_steps: 100, log_every: 50, eval_every: 0, checkpoint_every: 0, can_eval: true };
        assert_eq!((1..=100).filter(|&s| p.due(s).log).collect::<Vec<_>>(), vec![1, 50, 100]);
        assert_eq!((1..=100).filter(|&s| p.due(s).eval).collect::<Vec<_>>(), vec![100]);
    }
}
