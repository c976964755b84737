//! The data plane of a run: the Loader, the custom stages and the Masker workers on their own
//! threads behind bounded channels, and the held-out batches the Evaluator builds, all from the
//! plan's workload.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver};

use super::{evaluator, events, loader, masker, stage, RunError};
use super::control::StopFlag;
use super::trainer::StartPoint;
use crate::batch::HostBatch;
use crate::objective::Collator;
use crate::plan::RunPlan;

/// Where the Evaluator's held-out batches come from: the workload's, with its collator;
/// `None` when it has no held-out data.
pub fn eval_data(plan: &RunPlan) -> Option<evaluator::EvalData> {
    eval_data_with(plan, plan.collator())
}

/// The held-out batches as a given collator makes them; `None` when the workload has no
/// held-out data.
pub fn eval_data_with(plan: &RunPlan, cpu: Arc<dyn Collator>) -> Option<evaluator::EvalData> {
    let cx = plan.context();
    let source = plan.workload.eval_source(&cx)?;
    let held_out = evaluator::HeldOut { source, cpu, batch_size: plan.config.train.batch_size, max_batches: plan.workload.max_eval_batches(&cx) };
    Some(evaluator::EvalData { held_out, probes: plan.workload.probes().to_vec(), retention: plan.workload.retention(), start: plan.workload.task().map(|t| t.init.clone()).filter(|i| !matches!(i, crate::init::InitSource::Fresh)) })
}

pub(super) fn spawn(name: String, f: Box<dyn FnOnce() + Send>) -> Result<JoinHandle<()>, RunError> {
    std::thread::Builder::new().name(name).spawn(f).map_err(|e| RunError::Pipeline(format!("cannot start a thread: {e}")))
}

/// The data plane of a run: the Loader, the custom stages and the Masker workers, each on its
/// own thread behind bounded channels. Starts as the run's own (from the first batch,
/// `pipeline.masker_workers` workers, no stages, the plan's built-in collator); the builder
/// methods change one thing each, for resumes, benches and tests.
pub struct DataPlane<'a> {
    plan: &'a RunPlan,
    start: StartPoint,
    workers: usize,
    stop: StopFlag,
    events: events::EventSink,
    stages: Vec<Box<dyn stage::DataStage>>,
    collator: Arc<dyn Collator>,
}

impl<'a> DataPlane<'a> {
    /// The plan's data plane; `stop` ends it, failures go to `events`.
    pub fn new(plan: &'a RunPlan, stop: StopFlag, events: events::EventSink) -> Self {
        DataPlane {
            plan,
            start: StartPoint::default(),
            workers: plan.config.pipeline.masker_workers,
            stop,
            events,
            stages: Vec::new(),
            collator: plan.collator(),
        }
    }

    /// Starts at a resume point instead of the first batch.
    pub fn from(mut self, start: StartPoint) -> Self {
        self.start = start;
        self
    }

    /// `n` Masker workers (at least one).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Custom stages between the Loader and the Maskers, in this order.
    pub fn stages(mut self, stages: Vec<Box<dyn stage::DataStage>>) -> Self {
        self.stages = stages;
        self
    }

    /// A collator other than the plan's built-in one in the Masker workers.
    pub fn collator(mut self, collator: Arc<dyn Collator>) -> Self {
        self.collator = collator;
        self
    }

    /// Starts the threads; returns the receiving end of the Masker → Trainer channel (batches
    /// arrive out of order: use [`trainer::Reorder`]) and the thread handles. Dropping the
    /// receiver stops the threads.
    ///
    /// # Errors
    /// [`RunError::Pipeline`] when a thread cannot start.
    pub fn spawn(self) -> Result<(Receiver<HostBatch>, Vec<JoinHandle<()>>), RunError> {
        let DataPlane { plan, start, workers, stop, events, stages, collator: cpu } = self;
        let prefetch = plan.config.pipeline.prefetch;
        let phase = plan.phase();
        let (raw_tx, mut raw_rx) = bounded(prefetch);
        let (host_tx, host_rx) = bounded(prefetch);
        let names = super::queue::channel_names(&stages.iter().map(|s| s.name().to_owned()).collect::<Vec<_>>());
        let queues: Vec<super::queue::QueueGauge> = names.iter().map(|n| super::queue::QueueGauge::new(n, prefetch)).collect();
        let loader = loader::Loader {
            queue: queues[0].clone(),
            stream: plan.train_source(start.cursor),
            batch_size: plan.config.train.batch_size,
            first_seq: start.batches,
            tx: raw_tx,
            stop: stop.clone(),
            events,
            phase,
            shard: plan.dist.as_ref().map(|d| (d.rank, d.world)),
        };
        let mut handles = vec![spawn("loader".into(), Box::new(move || loader.run()))?];
        // Custom stages chain between the Loader and the Maskers, each behind a bounded channel.
        for (i, st) in stages.into_iter().enumerate() {
            let (tx, rx) = bounded(prefetch);
            let input = std::mem::replace(&mut raw_rx, rx);
            let name = format!("stage-{i}-{}", st.name());
            let q = (queues[i].clone(), queues[i + 1].clone());
            handles.push(spawn(name, Box::new(move || stage::run(st, input, tx, q)))?);
        }
        for i in 0..workers {
            let (rx, tx, cpu, stop) = (raw_rx.clone(), host_tx.clone(), cpu.clone(), stop.clone());
            let q = (queues[queues.len() - 2].clone(), queues[queues.len() - 1].clone());
            handles.push(spawn(format!("masker-{i}"), Box::new(move || masker::run(rx, tx, cpu, stop, phase, q)))?);
        }
        Ok((host_rx, handles))
    }
}
