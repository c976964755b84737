//! The Evaluator: an actix actor on its own thread (`SyncArbiter`) with its own copy of the
//! model. It receives CPU weight snapshots, so training goes on while it evaluates.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Handler, Message, Recipient, SyncContext};
use tch::{nn, Device, Tensor};

use super::control::Permits;
use super::events::Event;
use crate::batch::HostBatch;
use crate::data::stream::StreamError;
use crate::metrics::names;
use crate::objective::{EvalMetrics, Objective, ObjectiveModel};
use crate::workload::probe::{ProbeError, ProbeRunner};
use crate::workload::retention::RetentionRunner;

/// Evaluate these weights (taken after `step`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evaluate {
    /// Step the weights are from.
    pub step: u64,
    /// Phase label.
    pub phase: crate::workload::Phase,
    /// CPU copies of every variable, by name.
    pub weights: Vec<(String, Tensor)>,
    /// libtorch threads for this evaluation.
    pub threads: usize,
}

pub use crate::data::stream::OpenSource;
pub use crate::workload::held_out::HeldOut;

/// What the Evaluator scores: the held-out batches (built once, on first use, on its thread)
/// and what each evaluation adds to the objective's metrics.
pub struct EvalData {
    /// The held-out batches of the run's objective.
    pub held_out: HeldOut,
    /// Zero-shot probes scored after each evaluation (`[[probe]]`).
    pub probes: Vec<crate::workload::probe::Probe>,
    /// Where a fine-tuning run's encoder started (`[init]`): each evaluation reports
    /// `encoder_drift`, ‖θ − θ₀‖ / ‖θ₀‖ over the encoder's weights, what fine-tuning moved.
    pub start: Option<crate::init::InitSource>,
    /// The starting checkpoint's pre-training loss on held-out text (`[retention]`).
    pub retention: Option<Arc<crate::workload::retention::Retention>>,
}

impl EvalData {
    /// The held-out batches ([`HeldOut::build`]).
    ///
    /// # Errors
    /// As the training stream.
    pub fn build(&self) -> Result<Vec<HostBatch>, StreamError> {
        self.held_out.build()
    }
}

/// An evaluation's result, for the Trainer's early-stopping policy.
pub type EvalResult = (u64, EvalMetrics);

/// The actor that evaluates CPU copies of the weights on its own thread and model, so a long
/// evaluation never blocks a training step.
pub struct Evaluator {
    vs: nn::VarStore,
    model: Box<dyn ObjectiveModel>,
    /// Variables by name, to copy snapshots in.
    vars: HashMap<String, Tensor>,
    data: EvalData,
    batches: Option<Vec<HostBatch>>,
    events: Recipient<Event>,
    permits: Permits,
    /// Results back to the Trainer (early stopping waits on them).
    results: crossbeam_channel::Sender<EvalResult>,
    /// The probes, on this model's weights.
    probes: Vec<ProbeRunner>,
    /// θ₀ of the encoder's variables, by name (`EvalData::start`).
    start: Vec<(String, Tensor)>,
    /// ‖θ₀‖², the fixed denominator of `encoder_drift` (computed once).
    start_norm2: f64,
    /// `[retention]`, on this model's encoder.
    retention: Option<RetentionRunner>,
}

impl Evaluator {
    /// Builds the evaluation model. Call this *before* the Trainer seeds and initialises its
    /// own model: variable initialisation draws from libtorch's global generator.
    ///
    /// # Errors
    /// A probe whose network the model cannot feed ([`ProbeError`]), or starting weights that
    /// cannot be read.
    pub fn new(objective: &dyn Objective, device: Device, data: EvalData, events: Recipient<Event>, permits: Permits, results: crossbeam_channel::Sender<EvalResult>) -> Result<Self, super::RunError> {
        let vs = nn::VarStore::new(device);
        let model = objective.build(&vs.root());
        let vars = vs.variables();
        let probes = data.probes.iter().map(|p| ProbeRunner::new(p, device, data.held_out.batch_size, &vars)).collect::<Result<_, ProbeError>>().map_err(|e| super::RunError::Pipeline(e.to_string()))?;
        // θ₀ read the way the Trainer reads it (also after a resume: drift is from the start).
        let mut start = Vec::new();
        if let Some(source) = &data.start {
            crate::init::load_start(&vs, source).map_err(super::RunError::Init)?;
            start = tch::no_grad(|| vars.iter().filter(|(k, _)| crate::init::is_encoder_variable(k)).map(|(k, v)| (k.clone(), v.copy())).collect());
        }
        let start_norm2 = tch::no_grad(|| start.iter().map(|(_, t0): &(String, Tensor)| t0.to_kind(tch::Kind::Double).square().sum(tch::Kind::Double).double_value(&[])).sum());
        // Built while the model holds θ₀: its loss now is the one `loss_increase` is from.
        let retention = match &data.retention {
            Some(r) => Some(crate::guard::guarded(|| RetentionRunner::new(r, device, &vars)).map_err(|f| super::RunError::Pipeline(format!("retention: {}", f.message)))?.map_err(|e| super::RunError::Pipeline(crate::error_chain(&e)))?),
            None => None,
        };
        Ok(Evaluator { vs, model, vars, data, batches: None, events, permits, results, probes, start, start_norm2, retention })
    }

    /// ‖θ − θ₀‖ / ‖θ₀‖ over the encoder's variables (`None` without a start).
    fn drift(&self) -> Option<f64> {
        if self.start.is_empty() || self.start_norm2 <= 0.0 {
            return None;
        }
        let num: f64 = tch::no_grad(|| self.start.iter().map(|(name, t0)| (self.vars[name].to_kind(tch::Kind::Double) - t0.to_kind(tch::Kind::Double)).square().sum(tch::Kind::Double).double_value(&[])).sum());
        Some((num / self.start_norm2).sqrt())
    }
}

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The held-out data could not be read.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// libtorch failed evaluating (out of memory, most likely).
    #[error("evaluation at step {step} failed{}: {message}", if *out_of_memory { " for lack of memory (lower train.batch_size or data.eval_batches)" } else { "" })]
    Libtorch {
        /// The step evaluated.
        step: u64,
        /// Whether an allocation failed.
        out_of_memory: bool,
        /// libtorch's message.
        message: String,
    },
}

impl Actor for Evaluator {
    type Context = SyncContext<Self>;
}

impl Handler<Evaluate> for Evaluator {
    type Result = ();

    fn handle(&mut self, msg: Evaluate, _: &mut SyncContext<Self>) {
        tch::set_num_threads(msg.threads.max(1) as i32);
        let step = msg.step;
        let result = (|| -> Result<_, EvalError> {
            if self.batches.is_none() {
                self.batches = Some(self.data.build()?);
            }
            tch::no_grad(|| {
                for (name, t) in &msg.weights {
                    if let Some(v) = self.vars.get_mut(name) {
                        v.copy_(t);
                    }
                }
            });
            let (model, batches, device) = (&self.model, self.batches.as_deref().unwrap_or_default(), self.vs.device());
            let failed = |f: crate::guard::Failed| EvalError::Libtorch { step, out_of_memory: f.is_out_of_memory(), message: f.message };
            let mut metrics = crate::guard::guarded(|| model.evaluate(batches, device)).map_err(failed)?;
            if let Some(d) = crate::guard::guarded(|| self.drift()).map_err(failed)? {
                metrics.values.insert("encoder_drift".into(), d);
            }
            if let Some(r) = &self.retention {
                metrics.values.extend(crate::guard::guarded(|| r.score(device)).map_err(failed)?);
            }
            // The probes' networks share these weights: scored after the held-out set, on the
            // same snapshot, as `probe.NAME.METRIC`.
            for probe in &self.probes {
                let m = crate::guard::guarded(|| probe.score(device)).map_err(failed)?;
                for (k, v) in m.pairs() {
                    if !k.contains('.') {
                        metrics.values.insert(format!("{}{k}", probe.prefix()), v);
                    }
                }
                if !probe.is_probe() {
                    continue;
                }
                if let Some(acc) = m.values.get("accuracy") {
                    metrics::gauge!(names::PROBE_ACCURACY, "probe" => probe.name().to_owned()).set(*acc);
                }
                if let Some(s) = m.values.get("seconds") {
                    metrics::gauge!(names::PROBE_SECONDS, "probe" => probe.name().to_owned()).set(*s);
                }
            }
            Ok(metrics)
        })();
        if let Ok(m) = &result {
            let _ = self.results.try_send((msg.step, m.clone()));
        }
        self.permits.release();
        match result {
            Ok(metrics) => {
                for (name, value) in metrics.pairs().into_iter().filter(|(k, _)| !k.contains('.')) {
                    metrics::gauge!(names::EVAL_METRIC, "phase" => msg.phase, "metric" => name).set(value);
                }
                self.events.do_send(Event::Eval { phase: msg.phase, step: msg.step, metrics });
            }
            Err(e) => self.events.do_send(Event::Failed { stage: "evaluator", error: Arc::new(e) }),
        }
    }
}
