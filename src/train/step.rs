//! One optimizer update over a group of micro-batches, and the state that owns the model.
//!
//! Losses follow the sum-over-targets contract: each micro-batch contributes
//! `sum(CE over its scored tokens) / (scored tokens of the whole update)`, so gradient
//! accumulation gives exactly the gradient of one big batch, and normalising needs no sync.

use std::path::Path;

use tch::{nn, Device, Kind, Tensor};

use super::adamw::{AdamW, AdamWConfig};
use super::schedule::LrSchedule;
use crate::batch::HostBatch;
use crate::objective::{DeviceBatch, DeviceHalf, ObjectiveModel, ObjectiveNames};

/// Device results of one update. The tensors are detached scalars on the device: reading them
/// is a sync point, done only on logging steps.
pub struct StepOutput {
    /// The update's loss: token-level mean plus pair mean.
    pub loss: Tensor,
    /// Each part's mean (`mlm`, `glm`, `nsp`, `sop`), for per-objective metrics.
    pub parts: Vec<(&'static str, Tensor)>,
    /// Global gradient norm before clipping.
    pub grad_norm: Tensor,
    /// Learning rate used.
    pub lr: f64,
}

/// The model, its variables and its optimizer: owned by the Trainer thread alone.
///
/// Dropout draws from libtorch's global generator, whose state tch cannot save. Instead the
/// generator is re-seeded from `(seed, step)` before every update, so the dropout masks of an
/// update are a pure function of the run seed and the step: a resumed run draws exactly what an
/// uninterrupted one would, and no generator state needs to be checkpointed.
pub struct TrainState {
    /// All variables, by HF name.
    pub vs: nn::VarStore,
    /// The model.
    pub model: Box<dyn ObjectiveModel>,
    names: ObjectiveNames,
    opt: AdamW,
    schedule: LrSchedule,
    clip: f64,
    seed: u64,
    /// A learning rate set by a command, replacing the schedule.
    lr_override: Option<f64>,
    /// Updates done.
    pub step: u64,
}

/// What became of one update.
pub enum StepResult {
    /// The optimizer stepped.
    Applied(StepOutput),
    /// The loss or the gradient norm was not finite: gradients dropped, weights untouched.
    Skipped(StepOutput),
}

/// CPU copies of every variable of `vs`, sorted by name: what checkpoints and the Evaluator get.
pub fn cpu_copies(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let _guard = tch::no_grad_guard();
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu).copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn step_seed(seed: u64, step: u64) -> i64 {
    let mut r = crate::rng::Rng::keyed(seed, crate::rng::Stream::Dropout, &[step]);
    (r.next_u64() >> 1) as i64
}

impl TrainState {
    /// Builds a freshly initialised model on `device`; `seed` fixes the initial weights.
    pub fn new(objective: &dyn DeviceHalf, device: Device, seed: u64, adamw: AdamWConfig, schedule: LrSchedule, clip: f64) -> Self {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let model = objective.build(&vs.root());
        let names: ObjectiveNames = objective.names();
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let opt = AdamW::new(params, adamw);
        TrainState { vs, model, names, opt, schedule, clip, seed, lr_override: None, step: 0 }
    }

    /// One optimizer update over `micro` (the accumulation group), unless the loss or the
    /// gradient norm is not finite. That check reads one flag off the device (a sync point per
    /// update, accepted so that a bad update never reaches the weights or the moments).
    pub fn train_step(&mut self, micro: &[HostBatch]) -> StepResult {
        tch::manual_seed(step_seed(self.seed, self.step));
        let device = self.vs.device();
        // Divisors of the whole update, known on the host.
        let scored = micro.iter().map(|b| b.n_scored).sum::<usize>().max(1) as f64;
        let rows = micro.iter().map(|b| b.batch_size).sum::<usize>().max(1) as f64;
        let mut lm_total = Tensor::zeros([], (Kind::Float, device));
        let mut pair_total = Tensor::zeros([], (Kind::Float, device));
        for hb in micro {
            let b = DeviceBatch::new(hb, device);
            let out = self.model.sums(&b, true);
            let mut loss = &out.lm / scored;
            if let Some((pair, _)) = &out.pair {
                let p = pair / rows;
                pair_total += p.detach();
                loss = loss + p;
            }
            lm_total += (out.lm / scored).detach();
            loss.backward();
        }
        let mut parts = vec![(self.names.lm, lm_total.shallow_clone())];
        let loss_total = match self.names.pair {
            Some(task) => {
                parts.push((task, pair_total.shallow_clone()));
                &lm_total + &pair_total
            }
            None => lm_total,
        };
        let grad_norm = self.opt.clip_grad_norm(self.clip);
        let lr = self.lr_override.unwrap_or_else(|| self.schedule.at(self.step));
        // Sync point: one boolean per update.
        let finite = bool::try_from(loss_total.isfinite().logical_and(&grad_norm.isfinite())).unwrap_or(false);
        let out = StepOutput { loss: loss_total, parts, grad_norm, lr };
        if !finite {
            self.opt.zero_grad();
            return StepResult::Skipped(out);
        }
        self.opt.step(lr);
        self.opt.zero_grad();
        self.step += 1;
        StepResult::Applied(out)
    }

    /// Replaces the schedule with a fixed rate (`None`: back to the schedule).
    pub fn set_lr_override(&mut self, lr: Option<f64>) {
        self.lr_override = lr;
    }

    /// Restores weights, optimizer moments and the step from a checkpoint folder.
    ///
    /// # Errors
    /// A message naming the file and the missing or mis-shaped tensor.
    pub fn load_checkpoint(&mut self, dir: &Path, step: u64) -> Result<(), String> {
        let model = dir.join("model.safetensors");
        self.vs.load(&model).map_err(|e| format!("{}: {e}", model.display()))?;
        let opt = dir.join("optimizer.safetensors");
        let named: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(&opt).map_err(|e| format!("{}: {e}", opt.display()))?.into_iter().collect();
        let device = self.vs.device();
        let named = named.into_iter().map(|(k, v)| (k, v.to_device(device))).collect();
        self.opt.load_state(&named, step).map_err(|e| format!("{}: {e}", opt.display()))?;
        self.step = step;
        Ok(())
    }

    /// Whether every weight is finite (checked before a checkpoint is written).
    pub fn weights_finite(&self) -> bool {
        let _guard = tch::no_grad_guard();
        self.vs.trainable_variables().iter().all(|t| bool::try_from(t.isfinite().all()).unwrap_or(false))
    }

    /// Copies of the weights on the CPU, by name: what the Checkpointer and Evaluator get, so
    /// training can go on while they work.
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        cpu_copies(&self.vs)
    }

    /// Copies of the optimizer moments on the CPU.
    pub fn optimizer_snapshot(&self) -> Vec<(String, Tensor)> {
        let _guard = tch::no_grad_guard();
        self.opt.state_tensors().into_iter().map(|(n, t)| (n, t.to_device(Device::Cpu).copy())).collect()
    }
}
