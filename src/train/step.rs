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
use super::groups::ParamGroups;
use crate::objective::{DeviceBatch, Objective, ObjectiveModel, Per};

/// Device results of one update. The tensors are detached scalars on the device: reading them
/// is a sync point, done only on logging steps.
pub struct StepOutput {
    /// The update's loss: token-level mean plus pair mean.
    pub loss: Tensor,
    /// Each part's mean (`mlm`, `glm`, `nsp`, `sop`, `cls`, ...), for per-objective metrics.
    pub parts: Vec<(&'static str, Tensor)>,
    /// Global gradient norm before clipping.
    pub grad_norm: Tensor,
    /// Learning rate used.
    pub lr: f64,
    /// Non-padding tokens of the update, over all ranks.
    pub tokens: u64,
    /// Sequences of the update, over all ranks.
    pub samples: u64,
}

/// A checkpoint that does not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The weights (or the moments' file) could not be read into the model.
    #[error("{}", file.display())]
    Weights {
        /// The safetensors file.
        file: std::path::PathBuf,
        /// libtorch's error.
        source: tch::TchError,
    },
    /// The moments do not fit the parameters.
    #[error("{}", file.display())]
    Optimizer {
        /// `optimizer.safetensors`.
        file: std::path::PathBuf,
        /// What does not fit.
        source: super::adamw::StateError,
    },
}

/// A data-parallel run's process group and DDP reducer.
struct DistParts {
    pg: crate::distributed::ProcessGroup,
    reducer: crate::distributed::Reducer,
    /// Seconds of communication not hidden behind compute so far: the counts' and the loss
    /// parts' all-reduces, and the gradient all-reduce the backward pass waited for after its
    /// last gradient.
    comm_s: f64,
    /// The last update's bucket times and the end of its backward pass.
    last: (crate::distributed::BucketTimes, i64),
}

impl DistParts {
    /// The backward pass of an update's last micro-batch, with the reducer's hooks armed: each
    /// gradient bucket is all-reduced as soon as it is full; returns once all are reduced.
    fn backward(&self, loss: &Tensor) -> Result<(), crate::distributed::DistError> {
        let (rank, world) = (self.pg.rank, self.pg.world);
        self.reducer.prepare(loss, rank, world)?;
        loss.f_backward().map_err(|e| crate::distributed::DistError::Collective { rank, world, op: "gradient all-reduce (backward)", message: e.to_string() })
    }

    /// A collective's result that could not be read back.
    fn collective_error(&self, op: &'static str, e: impl std::fmt::Display) -> crate::distributed::DistError {
        crate::distributed::DistError::Collective { rank: self.pg.rank, world: self.pg.world, op, message: e.to_string() }
    }
}

/// The model, its variables and its optimizer: owned by the Trainer thread alone.
///
/// Dropout masks are keyed from `(seed, step)` before every update (the CPU's counter-based
/// masks of [`crate::model::dropout`], and libtorch's global generator, which CUDA's dropout
/// draws from and whose state tch cannot save), so the masks of an update are a pure function
/// of the run seed and the step: a resumed run draws exactly what an uninterrupted one would,
/// and no generator state needs to be checkpointed.
pub struct TrainState {
    /// All variables, by HF name.
    pub vs: nn::VarStore,
    /// The objective's model: forward to its loss parts, and its parameters by name.
    pub model: Box<dyn ObjectiveModel>,
    opt: AdamW,
    schedule: LrSchedule,
    clip: f64,
    seed: u64,
    /// A learning rate set by a command, replacing the schedule.
    lr_override: Option<f64>,
    /// Updates done.
    pub step: u64,
    dist: Option<DistParts>,
    precision: crate::config::Precision,
    profile: Option<super::profile::Window>,
    /// Times the stages of the updates it samples.
    clock: super::stages::StageClock,
    /// The latest update's stage times.
    stages: super::stages::StageTimes,
}

/// What became of one update.
pub enum StepResult {
    /// The optimizer stepped.
    Applied(StepOutput),
    /// The loss or the gradient norm was not finite: gradients dropped, weights untouched.
    Skipped(StepOutput),
    /// A rank voted to stop (a signal, a stop command, early stopping): no update, so every
    /// rank stops after the same step; the batches are not consumed.
    Stopped,
}

/// Loss parts one all-reduce carries (objectives have one to three).
const MAX_PARTS: usize = 8;

/// What the passes of an update give the optimizer step: the global counts, each loss part's
/// mean, and the communication the step waited for.
type Passes = (Counts, Vec<(&'static str, Tensor, f64)>, std::time::Duration);

/// The divisors of an update, summed over the ranks: scored tokens, examples, tokens.
#[derive(Debug, Clone, Copy)]
struct Counts {
    scored: f64,
    examples: f64,
    tokens: f64,
}

impl Counts {
    fn of(micro: &[HostBatch]) -> Self {
        let sum = |f: fn(&HostBatch) -> usize| micro.iter().map(f).sum::<usize>() as f64;
        Counts { scored: sum(|b| b.n_scored), examples: sum(|b| b.n_examples), tokens: sum(|b| b.n_tokens) }
    }

    /// What a rank sends to be summed: its counts and its vote to stop (any rank's stops all).
    fn with_vote(&self, stop: bool) -> [f64; 4] {
        [self.scored, self.examples, self.tokens, f64::from(u8::from(stop))]
    }

    fn divisor(&self, per: Per) -> f64 {
        match per {
            Per::Target => self.scored.max(1.0),
            Per::Example => self.examples.max(1.0),
            Per::Token => self.tokens.max(1.0),
        }
    }
}

/// CPU copies of every variable of `vs`, sorted by name: what checkpoints and the Evaluator get.
pub fn cpu_copies(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let _guard = tch::no_grad_guard();
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu).copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn step_seed(seed: u64, step: u64) -> i64 {
    let mut r = crate::rng::Rng::keyed(seed, crate::rng::Purpose::Dropout, &[step]);
    (r.next_u64() >> 1) as i64
}

impl TrainState {
    /// Builds a freshly initialised model on `device`; `seed` fixes the initial weights.
    /// `groups` freezes parameters (they never reach the optimizer) and scales learning rates
    /// per layer.
    pub fn new(objective: &dyn Objective, device: Device, seed: u64, adamw: AdamWConfig, schedule: LrSchedule, clip: f64, groups: ParamGroups) -> Self {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let model = objective.build(&vs.root());
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let layers = super::groups::count_layers(vars.iter().map(|(n, _)| n.as_str()));
        let mut params = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            if groups.frozen(&name, layers) {
                let _ = var.set_requires_grad(false);
                continue;
            }
            let scale = groups.lr_scale(&name, layers);
            params.push((name, var, scale));
        }
        let opt = AdamW::with_lr_scales(params, adamw);
        let clock = super::stages::StageClock::new(device, 1);
        TrainState { vs, model, opt, schedule, clip, seed, lr_override: None, step: 0, dist: None, precision: Default::default(), profile: None, clock, stages: Default::default() }
    }

    /// Forward and backward in `precision`, already resolved (`fp32` or `bf16`; see
    /// [`super::precision::resolve`]).
    pub fn set_precision(&mut self, precision: crate::config::Precision) {
        self.precision = precision;
    }

    /// AdamW through the fused kernel (`true`, the default) or tensor by tensor.
    pub fn set_fused_adamw(&mut self, fused: bool) {
        self.opt.set_fused(fused);
    }

    /// The arithmetic precision of the forward and backward passes.
    pub fn precision(&self) -> crate::config::Precision {
        self.precision
    }

    /// On CUDA, times the stages of one update in `every` (the logging interval), with a
    /// device synchronisation at each stage boundary; on the CPU every update is timed.
    pub fn set_stage_sampling(&mut self, every: u64) {
        self.clock = super::stages::StageClock::new(self.vs.device(), every);
    }

    /// The latest update's time per stage, when it was timed.
    pub fn stage_times(&self) -> Option<super::stages::StageTimes> {
        self.clock.is_on().then_some(self.stages)
    }

    /// Profiles a window of updates (see [`super::profile`]).
    pub fn set_profile(&mut self, window: super::profile::Window) {
        self.profile = Some(window);
    }

    /// Joins a data-parallel run: every rank takes rank 0's weights (after a resume too, so
    /// they start identical), and libtorch's DDP reducer sums the gradients over the ranks in
    /// buckets of `bucket_bytes`, overlapping the backward pass.
    ///
    /// # Errors
    /// [`crate::distributed::DistError`] when the broadcast fails.
    pub fn attach_dist(&mut self, pg: crate::distributed::ProcessGroup, bucket_bytes: usize, find_unused: bool) -> Result<(), crate::distributed::DistError> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
        pg.broadcast_vars(&tensors)?;
        // Moments too: a resumed run's are equal anyway, this makes it certain.
        let moments: Vec<Tensor> = self.opt.state_tensors().into_iter().map(|(_, t)| t.shallow_clone()).collect();
        if !moments.is_empty() {
            pg.broadcast_vars(&moments)?;
        }
        let trainable: Vec<Tensor> = tensors.into_iter().filter(Tensor::requires_grad).collect();
        let reducer = crate::distributed::Reducer::new(&pg, &trainable, bucket_bytes, find_unused)?;
        tracing::info!(rank = pg.rank, world = pg.world, parameters = trainable.len(), bucket_bytes, find_unused, "joined the process group (c10d reducer)");
        self.dist = Some(DistParts { pg, reducer, comm_s: 0.0, last: Default::default() });
        Ok(())
    }

    /// Seconds of communication not hidden behind compute so far (0 without a process group).
    pub fn comm_seconds(&self) -> f64 {
        self.dist.as_ref().map_or(0.0, |d| d.comm_s)
    }

    /// The last update's gradient buckets: when each all-reduce was launched and completed,
    /// and when the backward pass returned (the shim's steady clock, ns). `None` without a
    /// process group.
    pub fn last_bucket_times(&self) -> Option<(&crate::distributed::BucketTimes, i64)> {
        self.dist.as_ref().map(|d| (&d.last.0, d.last.1))
    }

    /// Rank and world size (0 and 1 without a process group).
    pub fn rank_world(&self) -> (usize, usize) {
        self.dist.as_ref().map_or((0, 1), |d| (d.pg.rank, d.pg.world))
    }

    /// One optimizer update over `micro` (the accumulation group), unless a rank votes to stop
    /// (`stop` is this rank's vote) or the loss or the gradient norm is not finite. That check
    /// reads one flag off the device (a sync point per update, accepted so that a bad update
    /// never reaches the weights or the moments).
    ///
    /// In a data-parallel run the divisors are the global counts, the gradients are summed over
    /// the ranks before clipping, and the reported loss is global. Without accumulation one small
    /// all-reduce carries the stop vote, the counts and the loss parts (between the forward and
    /// the backward pass); with accumulation the vote and the counts go before the first
    /// micro-batch and the loss parts after the last (the divisors are needed before any
    /// backward pass, and holding every micro-batch's activations to wait would undo what
    /// accumulation is for).
    ///
    /// # Errors
    /// [`crate::distributed::DistError`] when a collective fails.
    /// `accumulating` says the run accumulates micro-batches (`train.grad_accum` > 1): every
    /// rank must pick the same collectives, a stopping rank that brings no batch included.
    pub fn train_step(&mut self, micro: &[HostBatch], stop: bool, accumulating: bool) -> Result<StepResult, crate::distributed::DistError> {
        let step = self.step;
        if let Some(p) = &mut self.profile {
            p.before(step);
        }
        let result = self.update(micro, stop, accumulating);
        if let Some(p) = &mut self.profile {
            p.after(step);
        }
        result
    }

    fn update(&mut self, micro: &[HostBatch], stop: bool, accumulating: bool) -> Result<StepResult, crate::distributed::DistError> {
        self.clock.begin(self.step);
        self.stages = Default::default();
        let key = step_seed(self.seed, self.step);
        tch::manual_seed(key);
        crate::model::dropout::reseed(key as u64);
        let local = Counts::of(micro);
        let passes = match (self.dist.is_some(), accumulating) {
            (true, false) => self.fused_pass(micro.first(), local, stop)?,
            _ => self.accumulated_passes(micro, local, stop)?,
        };
        let Some((counts, parts, comm)) = passes else { return Ok(StepResult::Stopped) };
        self.stages.comm_exposed = comm;
        if let Some(d) = &mut self.dist {
            d.comm_s += comm.as_secs_f64();
            metrics::histogram!(crate::metrics::names::ALLREDUCE).record(comm.as_secs_f64());
        }
        Ok(self.apply(counts, parts))
    }

    /// One micro-batch on a data-parallel run: forward, one all-reduce of the stop vote, the
    /// counts and the loss parts' sums, then the backward pass with the global divisors (the
    /// reducer's bucket all-reduces overlap it). A stopping rank brings no batch and votes
    /// with zeros; `None` when any rank voted to stop.
    fn fused_pass(&mut self, hb: Option<&HostBatch>, local: Counts, stop: bool) -> Result<Option<Passes>, crate::distributed::DistError> {
        let device = self.vs.device();
        let autocast = super::precision::Autocast::enter(self.precision, device);
        let batch = hb.map(|hb| DeviceBatch::new(hb, device));
        self.stages.h2d += self.clock.lap();
        let losses = match &batch {
            Some(b) => self.model.losses(b, true),
            None => Vec::new(),
        };
        self.stages.forward += self.clock.lap();
        let d = self.dist.as_ref().expect("a data-parallel run");
        if losses.len() > MAX_PARTS {
            return Err(d.collective_error("the update's all-reduce", format!("{} loss parts; at most {MAX_PARTS} travel in one all-reduce", losses.len())));
        }
        let t0 = std::time::Instant::now();
        // A fixed size, so that a rank that brings no batch joins with zeros.
        let mut head = local.with_vote(stop || hb.is_none()).to_vec();
        head.resize(4 + MAX_PARTS, 0.0);
        let mut all = Tensor::from_slice(&head).to_device(device);
        for (i, p) in losses.iter().enumerate() {
            all.get(4 + i as i64).copy_(&p.sum.detach().to_kind(Kind::Double));
        }
        d.pg.all_reduce_sum(&mut all)?;
        let host = Vec::<f64>::try_from(all.narrow(0, 0, 4).to_device(Device::Cpu)).map_err(|e| d.collective_error("stop vote and counts", e))?;
        let mut comm = t0.elapsed();
        if host[3] > 0.0 {
            return Ok(None);
        }
        let counts = Counts { scored: host[0], examples: host[1], tokens: host[2] };
        let mut parts = Vec::with_capacity(losses.len());
        let mut loss: Option<Tensor> = None;
        for (i, part) in losses.into_iter().enumerate() {
            let n = counts.divisor(part.per);
            parts.push((part.name, all.get(4 + i as i64).to_kind(Kind::Float) / n, part.weight));
            let l = part.sum / n * part.weight;
            loss = Some(match loss {
                Some(total) => total + l,
                None => l,
            });
        }
        let _scope = super::profile::Scope::enter("pretune::backward");
        let loss = loss.unwrap_or_else(|| self.zero_loss());
        self.clock.lap();
        d.backward(&loss)?;
        drop(autocast);
        let exposed = self.record_buckets();
        // The backward pass's wait for the last buckets is communication, not compute.
        self.stages.backward += self.clock.lap().saturating_sub(exposed);
        comm += exposed;
        Ok(Some((counts, parts, comm)))
    }

    /// Forward and backward per micro-batch, the divisors all-reduced (with the stop vote)
    /// before the first and the loss parts after the last. `None` when a rank voted to stop.
    fn accumulated_passes(&mut self, micro: &[HostBatch], local: Counts, stop: bool) -> Result<Option<Passes>, crate::distributed::DistError> {
        let device = self.vs.device();
        let mut comm = std::time::Duration::ZERO;
        let counts = match &self.dist {
            None if stop => return Ok(None),
            None => local,
            Some(d) => {
                let t0 = std::time::Instant::now();
                let mut t = Tensor::from_slice(&local.with_vote(stop)).to_device(device);
                d.pg.all_reduce_sum(&mut t)?;
                let v = Vec::<f64>::try_from(t.to_device(Device::Cpu)).map_err(|e| d.collective_error("stop vote and counts", e))?;
                comm += t0.elapsed();
                if v[3] > 0.0 {
                    return Ok(None);
                }
                Counts { scored: v[0], examples: v[1], tokens: v[2] }
            }
        };
        let autocast = super::precision::Autocast::enter(self.precision, device);
        // Each part's mean over the update, in the order the objective reports them.
        let mut parts: Vec<(&'static str, Tensor, f64)> = Vec::new();
        self.clock.lap();
        for (i, hb) in micro.iter().enumerate() {
            let b = DeviceBatch::new(hb, device);
            self.stages.h2d += self.clock.lap();
            let mut loss: Option<Tensor> = None;
            for part in self.model.losses(&b, true) {
                let l = part.sum / counts.divisor(part.per);
                match parts.iter_mut().find(|(n, _, _)| *n == part.name) {
                    Some((_, acc, _)) => *acc += l.detach(),
                    None => parts.push((part.name, l.detach(), part.weight)),
                }
                let l = l * part.weight;
                loss = Some(match loss {
                    Some(total) => total + l,
                    None => l,
                });
            }
            self.stages.forward += self.clock.lap();
            self.backward(loss, i + 1 == micro.len())?;
            self.stages.backward += self.clock.lap();
        }
        drop(autocast);
        if self.dist.is_some() {
            let buckets = self.record_buckets();
            self.stages.backward = self.stages.backward.saturating_sub(buckets);
            let d = self.dist.as_ref().expect("checked");
            let t0 = std::time::Instant::now();
            // The loss parts are sums over this rank's share of the global divisors.
            if !parts.is_empty() {
                let views: Vec<&Tensor> = parts.iter().map(|(_, t, _)| t).collect();
                let mut all = Tensor::stack(&views, 0).to_kind(Kind::Float);
                d.pg.all_reduce_sum(&mut all)?;
                for (i, (_, t, _)) in parts.iter_mut().enumerate() {
                    *t = all.get(i as i64);
                }
            }
            comm += buckets + t0.elapsed();
        }
        Ok(Some((counts, parts, comm)))
    }

    /// One micro-batch's backward pass. The reducer's hooks reduce during the last
    /// micro-batch's backward only; earlier ones accumulate locally (DDP's no_sync). A rank
    /// whose last micro-batch scored nothing still joins the reduction, with zero gradients,
    /// so the others do not wait for its buckets.
    fn backward(&self, loss: Option<Tensor>, last: bool) -> Result<(), crate::distributed::DistError> {
        let _scope = super::profile::Scope::enter("pretune::backward");
        match (loss, &self.dist) {
            (Some(loss), Some(d)) if last => d.backward(&loss)?,
            (Some(loss), _) => loss.backward(),
            (None, Some(d)) if last => d.backward(&self.zero_loss())?,
            (None, _) => {}
        }
        Ok(())
    }

    /// A zero that depends on every trainable variable (their gradients become zeros).
    fn zero_loss(&self) -> Tensor {
        let device = self.vs.device();
        self.vs.trainable_variables().iter().fold(Tensor::zeros([], (Kind::Float, device)), |acc, v| acc + v.sum(Kind::Float) * 0.0)
    }

    /// Keeps the reducer's bucket times of this update; returns the communication the
    /// backward pass waited for after its last gradient was ready.
    fn record_buckets(&mut self) -> std::time::Duration {
        let Some(d) = &mut self.dist else { return std::time::Duration::ZERO };
        let end = crate::distributed::now_ns();
        let times = d.reducer.times();
        let exposed = std::time::Duration::from_nanos(times.exposed_ns(end) as u64);
        d.last = (times, end);
        exposed
    }

    /// Clips, checks the loss and the gradient norm are finite, and steps the optimizer.
    fn apply(&mut self, counts: Counts, parts: Vec<(&'static str, Tensor, f64)>) -> StepResult {
        let device = self.vs.device();
        self.clock.lap();
        // The loss minimised: each part's mean times its weight (1 but for ELECTRA's λ).
        let loss_total = parts.iter().fold(Tensor::zeros([], (Kind::Float, device)), |acc, (_, t, w)| acc + t.to_kind(Kind::Float) * *w);
        let parts: Vec<(&'static str, Tensor)> = parts.into_iter().map(|(n, t, _)| (n, t)).collect();
        let grad_norm = {
            let _scope = super::profile::Scope::enter("pretune::clip_grad_norm");
            self.opt.clip_grad_norm(self.clip)
        };
        let lr = self.lr_override.unwrap_or_else(|| self.schedule.at(self.step));
        // Sync point: one boolean per update (a failed read counts as not finite).
        let finite = bool::try_from(loss_total.isfinite().logical_and(&grad_norm.isfinite())).unwrap_or(false);
        let out = StepOutput { loss: loss_total, parts, grad_norm, lr, tokens: counts.tokens as u64, samples: counts.examples as u64 };
        if !finite {
            self.opt.zero_grad();
            return StepResult::Skipped(out);
        }
        {
            let _scope = super::profile::Scope::enter("pretune::optimizer");
            self.opt.step(lr);
            self.opt.zero_grad();
        }
        self.stages.optimizer += self.clock.lap();
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
    /// [`LoadError`] naming the file and the missing or mis-shaped tensor.
    pub fn load_checkpoint(&mut self, dir: &Path, step: u64) -> Result<(), LoadError> {
        let model = dir.join("model.safetensors");
        self.vs.load(&model).map_err(|source| LoadError::Weights { file: model.clone(), source })?;
        let opt = dir.join("optimizer.safetensors");
        let named: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(&opt).map_err(|source| LoadError::Weights { file: opt.clone(), source })?.into_iter().collect();
        let device = self.vs.device();
        let named = named.into_iter().map(|(k, v)| (k, v.to_device(device))).collect();
        self.opt.load_state(&named, step).map_err(|source| LoadError::Optimizer { file: opt.clone(), source })?;
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
