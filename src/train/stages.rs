//! Where an update's time goes, by stage (`pretune_step_stage_seconds{stage}`): host-to-device
//! copy, forward, backward, optimizer (clipping, the finite check, AdamW), and the
//! communication the update waited for. On the CPU every kernel runs when it is called, so the
//! wall clock between stage boundaries is the stage's time, measured on every update at the
//! cost of a clock read. On CUDA, kernels are queued: a boundary's clock says when the launch
//! returned, not when the work finished, so the device is synchronised at each boundary, and
//! only on sampled updates (one per logging interval) to keep the queue full on the others.

use std::time::{Duration, Instant};

/// The stages, as the `stage` label writes them.
pub const STAGES: [&str; 5] = ["h2d", "forward", "backward", "optimizer", "comm_exposed"];

/// One update's time per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Copying the batch to the device.
    pub h2d: Duration,
    /// Forward passes to the loss.
    pub forward: Duration,
    /// Backward passes (communication the backward pass waited for excluded).
    pub backward: Duration,
    /// Clipping, the finite check and the optimizer step.
    pub optimizer: Duration,
    /// Communication not hidden behind compute.
    pub comm_exposed: Duration,
}

impl StageTimes {
    /// `(label, seconds)` in [`STAGES`] order.
    pub fn pairs(&self) -> [(&'static str, f64); 5] {
        [("h2d", self.h2d), ("forward", self.forward), ("backward", self.backward), ("optimizer", self.optimizer), ("comm_exposed", self.comm_exposed)].map(|(k, d)| (k, d.as_secs_f64()))
    }
}

/// A stopwatch over an update's stage boundaries.
pub struct StageClock {
    /// The CUDA device to synchronise at each boundary, `None` on the CPU.
    cuda: Option<usize>,
    /// Sample one update in this many on CUDA (the logging interval).
    every: u64,
    /// Whether the current update is timed.
    on: bool,
    last: Instant,
}

impl StageClock {
    /// For `device`, sampling one update in `every` on CUDA (every update on the CPU).
    pub fn new(device: tch::Device, every: u64) -> Self {
        let cuda = match device {
            tch::Device::Cuda(i) => Some(i),
            _ => None,
        };
        StageClock { cuda, every: every.max(1), on: false, last: Instant::now() }
    }

    /// Whether update `step` (0-based) is timed: every one on the CPU, the last of each
    /// logging interval on CUDA.
    pub fn samples(&self, step: u64) -> bool {
        self.cuda.is_none() || (step + 1).is_multiple_of(self.every)
    }

    /// Starts timing update `step` (or not, when it is not sampled).
    pub fn begin(&mut self, step: u64) {
        self.on = self.samples(step);
        if self.on {
            self.sync();
            self.last = Instant::now();
        }
    }

    /// Time since the previous boundary (zero when the update is not timed).
    pub fn lap(&mut self) -> Duration {
        if !self.on {
            return Duration::ZERO;
        }
        self.sync();
        let now = Instant::now();
        let d = now - self.last;
        self.last = now;
        d
    }

    /// Whether the current update is timed.
    pub fn is_on(&self) -> bool {
        self.on
    }

    fn sync(&self) {
        if let Some(i) = self.cuda {
            tch::Cuda::synchronize(i as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_times_every_update_and_cuda_one_per_interval() {
        let cpu = StageClock::new(tch::Device::Cpu, 10);
        assert!((0..25).all(|s| cpu.samples(s)));
        let cuda = StageClock::new(tch::Device::Cuda(0), 10);
        assert_eq!((0..25).filter(|s| cuda.samples(*s)).collect::<Vec<_>>(), vec![9, 19]);
    }

    #[test]
    fn laps_partition_the_update_and_an_untimed_update_reads_zero() {
        let mut c = StageClock::new(tch::Device::Cpu, 1);
        c.begin(0);
        let t0 = Instant::now();
        let mut sum = Duration::ZERO;
        for _ in 0..3 {
            while t0.elapsed() < Duration::from_micros(50) {}
            sum += c.lap();
        }
        assert!(sum >= Duration::from_micros(50) && sum <= t0.elapsed() + Duration::from_micros(50), "{sum:?}");
        c.on = false;
        assert_eq!(c.lap(), Duration::ZERO);
    }
}
