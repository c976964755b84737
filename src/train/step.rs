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
use crate::model::bert::{BertConfig, BertForMaskedLM};
use crate::objective::{mlm, DeviceBatch};

/// Device results of one update. The tensors are detached scalars on the device: reading them
/// is a sync point, done only on logging steps.
pub struct StepOutput {
    /// Mean loss over the update's scored tokens.
    pub loss: Tensor,
    /// Global gradient norm before clipping.
    pub grad_norm: Tensor,
    /// Learning rate used.
    pub lr: f64,
}

/// The model, its variables and its optimizer: owned by the Trainer thread alone.
pub struct TrainState {
    /// All variables, by HF name.
    pub vs: nn::VarStore,
    /// The model.
    pub model: BertForMaskedLM,
    opt: AdamW,
    schedule: LrSchedule,
    clip: f64,
    /// Updates done.
    pub step: u64,
}

impl TrainState {
    /// Builds a freshly initialised model on `device`; `seed` fixes the initial weights.
    pub fn new(cfg: &BertConfig, device: Device, seed: u64, adamw: AdamWConfig, schedule: LrSchedule, clip: f64) -> Self {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let model = BertForMaskedLM::new(&vs.root(), cfg);
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let opt = AdamW::new(params, adamw);
        TrainState { vs, model, opt, schedule, clip, step: 0 }
    }

    /// One optimizer update over `micro` (the accumulation group).
    pub fn train_step(&mut self, micro: &[HostBatch]) -> StepOutput {
        let device = self.vs.device();
        let scored: usize = micro.iter().map(|b| b.n_scored).sum::<usize>().max(1);
        let mut loss_total = Tensor::zeros([], (Kind::Float, device));
        for hb in micro {
            let b = DeviceBatch::new(hb, device);
            // Weight each micro-batch by its share of the update's scored tokens.
            let out = mlm::forward(&self.model, &b, true);
            let loss = out.loss * (hb.n_scored.max(1) as f64 / scored as f64);
            loss.backward();
            loss_total += loss.detach();
        }
        let grad_norm = self.opt.clip_grad_norm(self.clip);
        let lr = self.schedule.at(self.step);
        self.opt.step(lr);
        self.opt.zero_grad();
        self.step += 1;
        StepOutput { loss: loss_total, grad_norm, lr }
    }

    /// Copies of the weights on the CPU, by name: what the Checkpointer and Evaluator get, so
    /// training can go on while they work.
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        let _guard = tch::no_grad_guard();
        let mut v: Vec<(String, Tensor)> =
            self.vs.variables().into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu).copy())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Copies of the optimizer moments on the CPU.
    pub fn optimizer_snapshot(&self) -> Vec<(String, Tensor)> {
        let _guard = tch::no_grad_guard();
        self.opt.state_tensors().into_iter().map(|(n, t)| (n, t.to_device(Device::Cpu).copy())).collect()
    }

    /// Updates done by the optimizer (equals `step` unless state was loaded).
    pub fn optimizer_steps(&self) -> u64 {
        self.opt.step_count()
    }
}

/// Loads named tensors into `vs` by name; every variable must be present with its shape.
///
/// # Errors
/// A tch error naming the missing tensor or the file.
pub fn load_weights(vs: &mut nn::VarStore, file: &Path) -> Result<(), tch::TchError> {
    vs.load(file)
}
