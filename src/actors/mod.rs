//! Every actor and thread of a run, and [`run`], which wires them together.
//!
//! | stage | runs on | talks through |
//! |---|---|---|
//! | Loader | its own thread | bounded crossbeam channel (prefetch) to the Maskers |
//! | Masker × N | their own threads | bounded crossbeam channel (prefetch) to the Trainer |
//! | Trainer | its own thread (owns model, optimizer, device) | `do_send` of snapshots (bounded by permits) and events |
//! | Evaluator, Checkpointer | actix `SyncArbiter`, one thread each | events to the Coordinator |
//! | Coordinator | the actix system thread | a oneshot back to [`run`] |
//!
//! Batches never travel through actix mailboxes (unbounded under `do_send`): only the bounded
//! channels carry data, so a slow Trainer stalls the producers and memory stays bounded.

pub mod checkpointer;
pub mod control;
pub mod control_http;
pub mod coordinator;
pub mod evaluator;
pub mod events;
pub mod loader;
pub mod masker;
pub mod progress;
pub mod stage;
pub mod trainer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use actix::{Actor, AsyncContext, SyncArbiter};
use crossbeam_channel::{bounded, Receiver};
use serde::Serialize;

use crate::batch::HostBatch;
use crate::checkpoint::resume::choose;
use crate::checkpoint::CheckpointStore;
use crate::config::{ObjectiveKind, SentencePair};
use crate::data::labelled::{LabelledStream, Ordering};
use crate::data::pairs::PairTask;
use crate::data::stream::{Corpus, Cursor, ExampleSource, ExampleStream, Layout, StreamSettings};
use crate::finetune::init::LoadReport;
use crate::finetune::task::{TaskCollator, TaskObjective};
use crate::masking::collate::{Corruption, MaskContext};
use crate::masking::glm::GlmSettings;
use crate::masking::mlm::MlmSettings;
use crate::metrics::MetricsError;
use crate::objective::eval::EvalMetrics;
use crate::objective::{BuiltinCollator, Collator, Objective, Pretraining};
use crate::plan::RunPlan;
use crate::rng::Purpose;
use crate::train::groups::ParamGroups;
use crate::train::policy::EarlyStopping;
use crate::train::adamw::AdamWConfig;
use crate::train::policy::StepPolicy;
use crate::train::schedule::LrSchedule;
use crate::train::step::TrainState;
use control::{Permits, StopFlag};
use coordinator::{Coordinator, Outcome};
use events::SharedError;
use trainer::StartPoint;

pub use crate::plan::{FINETUNE, PRETRAIN};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The output folder could not be prepared.
    #[error("cannot prepare the output folder {path}")]
    OutDir {
        /// The folder that could not be created or written.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A stage failed.
    #[error("the {stage} failed")]
    Stage {
        /// The stage that failed (`loader`, `masker`, `trainer`, `evaluator`, `checkpointer`).
        stage: &'static str,
        /// Why, with causes.
        #[source]
        source: SharedError,
    },
    /// The checkpoint to resume from is unusable.
    #[error(transparent)]
    Resume(#[from] crate::checkpoint::resume::ResumeError),
    /// The checkpoint does not fit this config.
    #[error("checkpoint {dir} does not fit this config: {reason}")]
    Incompatible {
        /// Checkpoint folder.
        dir: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The process group could not be formed.
    #[error(transparent)]
    Dist(#[from] crate::distributed::DistError),
    /// The starting weights (`[init]`) could not be loaded.
    #[error("cannot load the starting weights: {0}")]
    Init(String),
    /// A thread could not be started, or the run ended without a result.
    #[error("the pipeline broke down: {0}")]
    Pipeline(String),
}

/// What a finished run reports, in either phase.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// `pretrain` or `finetune`.
    pub phase: &'static str,
    /// Updates done.
    pub steps: u64,
    /// Tokens trained on.
    pub tokens: u64,
    /// Sequences trained on.
    pub samples: u64,
    /// Seconds of training.
    pub elapsed_s: f64,
    /// Tokens per second over the whole run.
    pub tokens_per_second: f64,
    /// Share of the run the Trainer waited for data.
    pub data_wait_share: f64,
    /// Loss of the last logged update.
    pub final_loss: f64,
    /// Last held-out evaluation `(step, metrics)`.
    pub eval: Option<(u64, EvalMetrics)>,
    /// The monitored metric (best checkpoint, early stopping).
    pub metric: String,
    /// Best evaluation: step and the monitored metric's value.
    pub best: Option<(u64, f64)>,
    /// Last checkpoint folder.
    pub checkpoint: Option<PathBuf>,
    /// The best checkpoint (else the latest): what `export` and `predict` use by default.
    pub best_checkpoint: Option<PathBuf>,
    /// Epochs done, when the run counts epochs.
    pub epochs: Option<f64>,
    /// What ended the run: `max_steps`, `epochs`, `early stopping`, `signal or stop command`.
    pub ended_by: &'static str,
    /// Stopped by early stopping.
    pub stopped_early: bool,
    /// What loading `[init]` did (`None` on a resume or a fresh start).
    pub init: Option<LoadReport>,
    /// Longest Trainer stall for a checkpoint hand-over, seconds.
    pub max_checkpoint_stall_s: f64,
    /// Stopped early by a signal (a checkpoint was written).
    pub interrupted: bool,
    /// Output folder.
    pub out_dir: PathBuf,
}

/// Settings of the training stream (`train`) or of the held-out stream.
pub fn stream_settings(plan: &RunPlan, train: bool) -> StreamSettings {
    let c = &plan.config;
    let o = &c.objective;
    let layout = match (o.kind, o.sentence_pair) {
        (ObjectiveKind::Glm, _) => Layout::Segments { max_tokens: c.train.max_seq_len - 1 },
        (ObjectiveKind::Mlm, SentencePair::None) => Layout::Segments { max_tokens: c.train.max_seq_len - 2 },
        (ObjectiveKind::Mlm, pair) => Layout::Pairs {
            max_num_tokens: c.train.max_seq_len - 3,
            short_seq_prob: o.short_seq_prob,
            task: if pair == SentencePair::Sop { PairTask::Sop } else { PairTask::Nsp },
        },
    };
    StreamSettings {
        seed: c.run.seed,
        block_docs: c.data.shuffle_block_docs,
        layout,
        read: crate::plan::read_settings(&c.data),
        shuffle: train,
        repeat: train,
        group_batch: if train && c.train.group_by_length { c.train.batch_size.saturating_mul(plan.dist.as_ref().map_or(1, |d| d.world)) } else { 0 },
        whole_words: o.kind == ObjectiveKind::Mlm && o.unit != crate::config::MaskUnit::Token,
    }
}

/// The Masker's context for the training (`Purpose::Mask`) or held-out (`Purpose::EvalMask`) data.
pub fn mask_context(plan: &RunPlan, stream: Purpose) -> MaskContext {
    let o = &plan.config.objective;
    let ids = plan.tokenizer.special_ids();
    let corruption = match plan.glm_ids {
        Some(glm_ids) => Corruption::Glm(GlmSettings { blanks: o.glm, ids: glm_ids }),
        None => Corruption::Mlm(MlmSettings::from_objective(o, ids.mask, plan.tokenizer.vocab_size())),
    };
    MaskContext {
        seed: plan.config.run.seed,
        stream,
        corruption,
        special: Arc::new(plan.tokenizer.special_mask().to_vec()),
        ids,
        max_seq_len: plan.config.train.max_seq_len,
    }
}

/// Where the Evaluator's held-out batches come from.
pub fn eval_data(plan: &RunPlan) -> evaluator::EvalData {
    eval_data_with(plan, builtin_cpu(plan))
}

/// Whether the plan has held-out data to evaluate on.
pub fn has_eval(plan: &RunPlan) -> bool {
    match &plan.task {
        Some(t) => !t.eval.is_empty(),
        None => !plan.eval_spans.is_empty(),
    }
}

/// The held-out batches as a given collator makes them: the whole labelled dev set, or up to
/// `data.eval_batches` batches of the held-out corpus.
pub fn eval_data_with(plan: &RunPlan, cpu: Arc<dyn Collator>) -> evaluator::EvalData {
    let source: evaluator::OpenSource = match &plan.task {
        Some(t) => {
            let (examples, ordering) = (t.eval.clone(), Ordering { seed: plan.config.run.seed, shuffle: false, repeat: false, batch: plan.config.train.batch_size, group_by_length: false });
            Box::new(move || Box::new(LabelledStream::new(examples.clone(), ordering, Cursor::default())) as Box<dyn ExampleSource>)
        }
        None => {
            let (spans, corpus, settings) = (plan.eval_spans.clone(), corpus(plan, false), stream_settings(plan, false));
            Box::new(move || Box::new(ExampleStream::new(spans.clone(), corpus.clone(), settings.clone(), Cursor::default())) as Box<dyn ExampleSource>)
        }
    };
    evaluator::EvalData {
        source,
        cpu,
        batch_size: plan.config.train.batch_size,
        max_batches: if plan.task.is_some() { usize::MAX } else { plan.config.data.eval_batches },
    }
}

/// The built-in collator of the plan's objective: the task's, or MLM / GLM corruption.
pub fn builtin_cpu(plan: &RunPlan) -> Arc<dyn Collator> {
    match &plan.task {
        Some(t) => Arc::new(TaskCollator { kind: t.spec.kind, cloze: t.cloze.clone(), pad: plan.tokenizer.special_ids().pad }),
        None => Arc::new(BuiltinCollator { train: mask_context(plan, Purpose::Mask), eval: mask_context(plan, Purpose::EvalMask) }),
    }
}

/// The built-in objective of the plan: the task, or pre-training.
pub fn builtin_objective(plan: &RunPlan) -> Arc<dyn Objective> {
    match &plan.task {
        Some(t) => Arc::new(TaskObjective { spec: t.spec.clone(), monitor: t.monitor.clone() }),
        None => Arc::new(Pretraining { spec: plan.model.clone(), names: plan.names }),
    }
}

/// The training example source, from `cursor` (`Cursor::default()` for the start): the
/// streamed corpus, or the labelled set in seeded epochs.
pub fn train_stream(plan: &RunPlan, cursor: Cursor) -> Box<dyn ExampleSource> {
    match &plan.task {
        Some(t) => {
            let world = plan.dist.as_ref().map_or(1, |d| d.world);
            let t_cfg = &plan.config.train;
            let ordering = Ordering { seed: plan.config.run.seed, shuffle: true, repeat: true, batch: t_cfg.batch_size.saturating_mul(world), group_by_length: t_cfg.group_by_length };
            Box::new(LabelledStream::new(t.train.clone(), ordering, cursor))
        }
        None => Box::new(ExampleStream::new(plan.train_spans.clone(), corpus(plan, true), stream_settings(plan, true), cursor)),
    }
}

/// Where the training (`train`) or held-out documents come from: the prepared dataset's split
/// (the held-out documents cut from the training files live in its train split), else the
/// text files through the tokenizer.
pub fn corpus(plan: &RunPlan, train: bool) -> Corpus {
    match &plan.prepared {
        Some(p) if !train && plan.config.data.eval_holdout_docs == 0 => Corpus::Prepared(p.eval.clone().unwrap_or_else(|| p.train.clone())),
        Some(p) => Corpus::Prepared(p.train.clone()),
        None => Corpus::Text(plan.tokenizer.clone()),
    }
}

fn spawn(name: String, f: Box<dyn FnOnce() + Send>) -> Result<JoinHandle<()>, RunError> {
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
            collator: builtin_cpu(plan),
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
        let loader = loader::Loader {
            stream: train_stream(plan, start.cursor),
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
            handles.push(spawn(name, Box::new(move || stage::run(st, input, tx)))?);
        }
        for i in 0..workers {
            let (rx, tx, cpu, stop) = (raw_rx.clone(), host_tx.clone(), cpu.clone(), stop.clone());
            handles.push(spawn(format!("masker-{i}"), Box::new(move || masker::run(rx, tx, cpu, stop, phase)))?);
        }
        Ok((host_rx, handles))
    }
}

/// libtorch intra-op threads: the configured number, or the machine's cores shared among the
/// ranks on it (`LOCAL_WORLD_SIZE`, else all ranks), so local ranks do not oversubscribe.
fn torch_threads(plan: &RunPlan) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    thread_budget(plan.config.run.threads, cores, plan.dist.as_ref().map(|d| d.local_world))
}

/// The thread-budget policy: a configured count wins; otherwise every core, divided among the
/// local ranks of a data-parallel run. The Masker workers are not subtracted: measured on 2
/// cores they use under 1 % of a core per BERT-mini step (BENCHMARKS.md).
pub fn thread_budget(configured: usize, cores: usize, local_ranks: Option<usize>) -> usize {
    match configured {
        0 => (cores / local_ranks.unwrap_or(1).max(1)).max(1),
        n => n,
    }
}

/// Runs pre-training as [`RunPlan`] says, to the end, a signal, or the first error.
///
/// # Errors
/// [`RunError`] naming the failed stage with its causes.
pub fn run(plan: RunPlan) -> Result<RunSummary, RunError> {
    Pipeline::new(plan).run()
}

/// Sends commands to a running job (stop, evaluate, checkpoint, set lr, pause, resume); given to
/// subscriber factories. Cheap to clone.
#[derive(Clone)]
pub struct Controller(actix::Addr<Coordinator>);

impl Controller {
    /// Queues a command; the Trainer applies it at the next step boundary.
    pub fn send(&self, cmd: events::Command) {
        self.0.do_send(cmd);
    }
}

/// Builds a subscriber inside the run's actix system.
pub type SubscriberFactory = Box<dyn FnOnce(Controller) -> actix::Recipient<events::Event>>;

/// The pre-training pipeline from a plan, plus what a program adds: subscribers to the event
/// stream and custom data stages. See `docs/extending.md`.
pub struct Pipeline {
    plan: RunPlan,
    subscribers: Vec<SubscriberFactory>,
    stages: Vec<Box<dyn stage::DataStage>>,
    objective: Option<(Arc<dyn Collator>, Arc<dyn Objective>)>,
}

impl Pipeline {
    /// The stages the config describes.
    pub fn new(plan: RunPlan) -> Self {
        Pipeline { plan, subscribers: Vec::new(), stages: Vec::new(), objective: None }
    }

    /// Adds an actor that receives every event (`StepDone` each step, `Eval`, `Saved`,
    /// `TrainerDone`, `Failed`). The factory runs inside the run's actix system, so it can
    /// `start()` an actor; it gets a [`Controller`] to send commands with.
    pub fn subscribe(mut self, factory: impl FnOnce(Controller) -> actix::Recipient<events::Event> + 'static) -> Self {
        self.subscribers.push(Box::new(factory));
        self
    }

    /// Adds a data stage between the Loader and the Masker workers (in the order added).
    pub fn stage(mut self, stage: impl stage::DataStage) -> Self {
        self.stages.push(Box::new(stage));
        self
    }

    /// Replaces the config's objective (or task) with a custom one: its collator runs in the
    /// Masker workers (and builds the held-out batches), its objective builds the model the
    /// Trainer and the Evaluator use. The built-in objectives and tasks go through the same
    /// traits.
    pub fn objective(mut self, cpu: impl Collator, device: impl Objective) -> Self {
        self.objective = Some((Arc::new(cpu), Arc::new(device)));
        self
    }

    /// Runs to the end, a stop, or the first error.
    ///
    /// # Errors
    /// [`RunError`].
    pub fn run(self) -> Result<RunSummary, RunError> {
        let (cpu, device) = match self.objective {
            Some(o) => o,
            None => (builtin_cpu(&self.plan), builtin_objective(&self.plan)),
        };
        run_pipeline(self.plan, self.subscribers, self.stages, cpu, device)
    }
}

fn run_pipeline(
    plan: RunPlan,
    subscribers: Vec<SubscriberFactory>,
    stages: Vec<Box<dyn stage::DataStage>>,
    cpu: Arc<dyn Collator>,
    device_half: Arc<dyn Objective>,
) -> Result<RunSummary, RunError> {
    let config = plan.config.clone();
    let phase = plan.phase();
    let monitor = device_half.monitor();
    let (rank, world) = plan.dist.as_ref().map_or((0, 1), |d| (d.rank, d.world));
    let (run_dir, out_dir) = prepare_out_dir(&plan, rank)?;
    let out_err = |source| RunError::OutDir { path: out_dir.clone(), source };
    // Before anything heavy, so a bad rendezvous fails fast.
    let process_group = join_process_group(&plan)?;
    // libtorch's intra-op pool is OpenMP, one team per calling thread, and libgomp stops
    // spin-waiting (its workers sleep on a futex between parallel regions, measured ~12 %
    // slower steps on 2 cores) as soon as the process holds more team threads than cores. So
    // only the Trainer gets a team of the whole budget; this thread (which builds the
    // Evaluator's model) and the Evaluator between steps run single-threaded.
    let threads = torch_threads(&plan);
    tch::set_num_threads(1);

    let (store, resume_point) = find_resume_point(&plan, &run_dir, rank)?;
    let start = start_point(resume_point.as_ref(), world, &device_half.describe())?;

    // `best.json` is the authority (a state.json only knows the best at its writing time).
    let resumed_best = resume_point.as_ref().and_then(|r| store.best_record().or(r.state.best));
    let stop = StopFlag::new();
    let eval_permits = Permits::new(1);
    let ckpt_permits = Permits::new(1);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Outcome>();
    let progress = progress::Progress::new(config.train.max_steps, phase);
    let coordinator_value = Coordinator::new(&out_dir, stop.clone(), progress, done_tx, monitor.clone()).map_err(out_err)?;
    let (results_tx, results_rx) = crossbeam_channel::unbounded();

    let metric = monitor.metric.clone();
    let system = actix::System::new();
    let plan = Arc::new(plan);
    let profile_dir = crate::train::profile::dir_of(&out_dir);
    let result = system.block_on({
        let plan = plan.clone();
        let stop = stop.clone();
        let config = config.clone();
        async move {
            // The Coordinator's address exists before it runs, so the Checkpointer (which reports
            // to it) can be started first and handed to it.
            let coordinator_ctx = actix::Context::<Coordinator>::new();
            let coordinator = coordinator_ctx.address();
            let mut handles = Vec::new();
            for factory in subscribers {
                coordinator.do_send(coordinator::Subscribe(factory(Controller(coordinator.clone()))));
            }
            let (control_tx, control_rx) = bounded::<events::Command>(64);
            coordinator.do_send(coordinator::ControlChannel(control_tx));
            if rank == 0 {
                serve_control(&plan, &coordinator)?;
            }
            // The Evaluator's model is built before the Trainer seeds libtorch's generator.
            let evaluator = if !has_eval(&plan) || rank != 0 {
                None
            } else {
                let ev = evaluator::Evaluator::new(device_half.as_ref(), plan.device, eval_data_with(&plan, cpu.clone()), coordinator.clone().recipient(), eval_permits.clone(), results_tx);
                Some((start_on_own_thread(ev), eval_permits))
            };
            let checkpointer = start_on_own_thread(checkpointer::Checkpointer {
                store,
                keep_last: config.train.keep_last,
                events: coordinator.clone().recipient(),
                permits: ckpt_permits.clone(),
                best: resumed_best,
                awaiting: Default::default(),
                judged: Default::default(),
            });
            coordinator_ctx.run(coordinator_value.with_checkpointer(checkpointer.clone(), resumed_best));

            let sink: events::EventSink = {
                let addr = coordinator.clone();
                Arc::new(move |e| addr.do_send(e))
            };
            let (host_rx, data_handles) = DataPlane::new(&plan, stop.clone(), sink).from(start).stages(stages).collator(cpu).spawn()?;
            handles.extend(data_handles);

            let policy = step_policy(&plan, evaluator.is_some());
            let setup = trainer_setup(&plan, device_half.clone(), resume_point.as_ref(), process_group, profile_dir.clone());
            let train = &config.train;
            let trainer_events = coordinator.clone().recipient::<events::Event>();
            let trainer_stop = stop.clone();
            let (config_json, model_json) = (serde_json::to_value(&config).unwrap_or_default(), device_half.describe());
            let init_from = match &resume_point {
                Some(rp) => rp.state.init.clone(),
                None => plan.init.describe(),
            };
            let (seed, grad_accum, nonfinite, max_nonfinite_in_a_row) = (config.run.seed, train.grad_accum, train.nonfinite, train.max_nonfinite_in_a_row);
            let early = (monitor.clone(), EarlyStopping::new(train.patience, monitor.direction));
            handles.push(spawn(
                "trainer".into(),
                Box::new(move || {
                    tch::set_num_threads(threads as i32);
                    let (state, init) = match setup.build() {
                        Ok(built) => built,
                        Err(error) => {
                            trainer_stop.abort();
                            trainer_events.do_send(events::Event::Failed { stage: "trainer", error });
                            return;
                        }
                    };
                    trainer::Trainer {
                        state,
                        rx: host_rx,
                        policy,
                        grad_accum,
                        stop: trainer_stop,
                        events: trainer_events,
                        evaluator,
                        checkpointer: (checkpointer, ckpt_permits),
                        seed,
                        config_json,
                        model_json,
                        phase,
                        start,
                        nonfinite,
                        max_nonfinite_in_a_row,
                        control: control_rx,
                        results: results_rx,
                        early,
                        init,
                        init_from,
                        threads,
                    }
                    .run()
                }),
            )?);
            let outcome = done_rx.await.map_err(|_| RunError::Pipeline("the coordinator stopped without a result".into()));
            stop.abort();
            actix::System::current().stop();
            Ok::<_, RunError>((outcome?, handles))
        }
    });
    let (outcome, handles) = result?;
    for h in handles {
        let _ = h.join();
    }
    summarize(&plan, outcome, &run_dir, out_dir, metric)
}

/// Serves control commands over HTTP when the config asks for it.
fn serve_control(plan: &RunPlan, coordinator: &actix::Addr<Coordinator>) -> Result<(), RunError> {
    if let Some(addr) = plan.control_addr {
        control_http::start(addr, plan.config.control.token.clone(), coordinator.clone())
            .map_err(|e| RunError::Pipeline(format!("cannot serve control on {addr}: {e}")))?;
        tracing::info!(%addr, "serving control commands");
    }
    Ok(())
}

/// When the Trainer logs, evaluates, checkpoints and stops, from `[train]`.
fn step_policy(plan: &RunPlan, can_eval: bool) -> StepPolicy {
    let train = &plan.config.train;
    StepPolicy {
        max_steps: train.max_steps,
        log_every: train.log_every,
        eval_every: train.eval_every,
        epoch_steps: plan.epoch_steps,
        checkpoint_every: train.checkpoint_every,
        can_eval,
    }
}

/// Everything the Trainer's thread needs to build its model and optimizer, from the plan;
/// logs the arithmetic precision chosen and why.
fn trainer_setup(
    plan: &RunPlan,
    objective: Arc<dyn Objective>,
    resume: Option<&crate::checkpoint::resume::ResumePoint>,
    process_group: Option<crate::distributed::ProcessGroup>,
    profile_dir: std::path::PathBuf,
) -> TrainerSetup {
    let (config, train) = (&plan.config, &plan.config.train);
    let choice = crate::train::precision::resolve(train.precision, plan.device);
    tracing::info!(precision = ?choice.precision, why = %choice.why, cuda = %crate::cuda::load(), malloc = %crate::malloc::describe(), "arithmetic");
    TrainerSetup {
        objective,
        device: plan.device,
        seed: config.run.seed,
        adamw: AdamWConfig { beta1: train.betas[0], beta2: train.betas[1], eps: train.eps, weight_decay: train.weight_decay },
        schedule: LrSchedule { lr: train.lr, warmup: plan.warmup_steps, total: train.max_steps, decay: train.decay, min_lr_ratio: train.min_lr_ratio },
        clip: train.clip_grad_norm,
        groups: ParamGroups { freeze_embeddings: train.freeze_embeddings, freeze_layers: train.freeze_layers, layerwise_lr_decay: train.layerwise_lr_decay },
        precision: choice.precision,
        profile: crate::train::profile::Window::new(train.profile_start, train.profile_steps, profile_dir),
        fused_adamw: train.fused_adamw,
        resume_from: resume.map(|r| (r.dir.clone(), r.state.step)),
        init_source: plan.init.clone(),
        cloze: plan.task.as_ref().is_some_and(|task| task.spec.kind == crate::model::heads::HeadKind::Cloze),
        process_group,
        bucket_bytes: (config.dist.bucket_mb * 1024.0 * 1024.0) as usize,
        find_unused: config.dist.find_unused_parameters,
    }
}

/// Joins the process group of a data-parallel run (`None` for one process).
fn join_process_group(plan: &RunPlan) -> Result<Option<crate::distributed::ProcessGroup>, RunError> {
    let Some(env) = &plan.dist else { return Ok(None) };
    let timeout = std::time::Duration::from_secs_f64(plan.config.dist.timeout_s);
    tracing::info!(rank = env.rank, world = env.world, addr = %format!("{}:{}", env.master_addr, env.master_port), "joining the process group");
    Ok(Some(crate::distributed::ProcessGroup::connect(env, crate::distributed::Backend::for_device(plan.device), timeout)?))
}

/// The run's checkpoint store and the checkpoint `--resume` picks (none without it; a warning
/// when checkpoints exist and are ignored). Rank 0 first removes half-written temporaries.
fn find_resume_point(plan: &RunPlan, run_dir: &std::path::Path, rank: usize) -> Result<(CheckpointStore, Option<crate::checkpoint::resume::ResumePoint>), RunError> {
    let ckpt_root = run_dir.join("checkpoints");
    let store = CheckpointStore::new(&ckpt_root);
    if rank == 0 {
        // Never under rank 0's feet.
        store.clean_temporaries();
    }
    let point = match &plan.resume {
        Some(from) => choose(&store, &ckpt_root, from)?,
        None => {
            if !store.steps().is_empty() {
                tracing::warn!(dir = %ckpt_root.display(), "checkpoints exist; starting afresh (pass --resume auto to continue)");
            }
            None
        }
    };
    Ok((store, point))
}

/// Starts `actor` on a thread of its own (an actix `SyncArbiter` of one), for actors that run
/// libtorch or do blocking I/O.
fn start_on_own_thread<A: Actor<Context = actix::SyncContext<A>> + Send>(actor: A) -> actix::Addr<A> {
    let slot = Mutex::new(Some(actor));
    SyncArbiter::start(1, move || slot.lock().expect("not poisoned").take().expect("started once"))
}

/// Creates the run's output folder (rank 0: OUT; others: OUT/ranks/rank-N), writes the resolved
/// `config.toml`, starts the metrics exporter and reports the records a fine-tuning plan
/// skipped. Returns `(OUT, this rank's folder)`.
fn prepare_out_dir(plan: &RunPlan, rank: usize) -> Result<(PathBuf, PathBuf), RunError> {
    let c = &plan.config;
    // Rank 0 owns OUT (checkpoints, events); the others log under OUT/ranks/rank-N.
    let run_dir = c.run.out_dir.clone();
    let out_dir = if rank == 0 { run_dir.clone() } else { run_dir.join("ranks").join(format!("rank-{rank}")) };
    let out_err = |source| RunError::OutDir { path: out_dir.clone(), source };
    std::fs::create_dir_all(&out_dir).map_err(out_err)?;
    let resolved = toml::to_string(c).unwrap_or_default();
    std::fs::write(out_dir.join("config.toml"), resolved).map_err(out_err)?;
    if let Some(addr) = plan.metrics_addr {
        // Every run labels its rank (0 alone), so dashboards and alerts select and group by it
        // the same way for one process and for many.
        let labels: Vec<(&str, String)> = vec![("rank", rank.to_string())];
        crate::metrics::install_with(addr, &plan.run_id, &labels)?;
        tracing::info!(%addr, "serving Prometheus metrics");
    }
    if let Some(t) = &plan.task {
        for bad in &t.skipped {
            metrics::counter!(crate::metrics::names::RECORDS_SKIPPED, "reason" => bad.reason).increment(1);
            tracing::warn!(file = %bad.path.display(), line = bad.line, reason = bad.reason, "skipped record: {}", bad.detail);
        }
    }
    Ok((run_dir, out_dir))
}

/// Where the data plane and the counters start: a resume point's, after checking it was
/// written by a run of the same world size and model (`want`), or the beginning.
fn start_point(resume_point: Option<&crate::checkpoint::resume::ResumePoint>, world: usize, want: &serde_json::Value) -> Result<StartPoint, RunError> {
    let Some(rp) = resume_point else { return Ok(StartPoint::default()) };
    if rp.state.world_size != world {
        return Err(RunError::Incompatible {
            dir: rp.dir.clone(),
            reason: format!(
                "it was written by a run of {} rank(s) and this run has {world}: the data shards and the global batch depend on the world size; resume with WORLD_SIZE={} (or start afresh)",
                rp.state.world_size, rp.state.world_size
            ),
        });
    }
    if rp.state.model != *want {
        return Err(RunError::Incompatible { dir: rp.dir.clone(), reason: format!("its model is {} but the config builds {}", rp.state.model, want) });
    }
    tracing::info!(checkpoint = %rp.dir.display(), step = rp.state.step, "resuming");
    Ok(StartPoint { tokens: rp.state.tokens_seen, samples: rp.state.samples_seen, batches: rp.state.batches_seen, cursor: rp.state.cursor })
}

/// Everything the Trainer thread needs to build its [`TrainState`], moved into that thread
/// (libtorch state is built where it is used).
struct TrainerSetup {
    objective: Arc<dyn Objective>,
    device: tch::Device,
    seed: u64,
    adamw: AdamWConfig,
    schedule: LrSchedule,
    clip: f64,
    groups: ParamGroups,
    precision: crate::config::Precision,
    profile: crate::train::profile::Window,
    fused_adamw: bool,
    /// A checkpoint folder and its step, when resuming.
    resume_from: Option<(PathBuf, u64)>,
    /// The starting weights otherwise (`[init]`).
    init_source: crate::finetune::init::InitSource,
    cloze: bool,
    process_group: Option<crate::distributed::ProcessGroup>,
    bucket_bytes: usize,
    find_unused: bool,
}

impl TrainerSetup {
    /// The model and optimizer: fresh, resumed from a checkpoint, or started from `[init]`'s
    /// weights (with what loaded), then joined to the process group of a data-parallel run.
    fn build(self) -> Result<(TrainState, Option<LoadReport>), SharedError> {
        let mut state = TrainState::new(self.objective.as_ref(), self.device, self.seed, self.adamw, self.schedule, self.clip, self.groups);
        state.set_precision(self.precision);
        state.set_profile(self.profile);
        state.set_fused_adamw(self.fused_adamw);
        let mut init = None;
        if let Some((dir, step)) = self.resume_from {
            state.load_checkpoint(&dir, step).map_err(|reason| Arc::new(RunError::Incompatible { dir, reason }) as SharedError)?;
        } else if !matches!(self.init_source, crate::finetune::init::InitSource::Fresh) {
            let report = crate::finetune::init::load_start(&state.vs, &self.init_source)
                .and_then(|r| crate::finetune::init::complete_for_cloze(r, self.cloze))
                .map_err(|e| Arc::new(RunError::Init(e)) as SharedError)?;
            tracing::info!(loaded = report.loaded, missing = ?report.missing, unused = ?report.unused, "starting weights");
            init = Some(report);
        }
        if let Some(pg) = self.process_group {
            state.attach_dist(pg, self.bucket_bytes, self.find_unused).map_err(|e| Arc::new(e) as SharedError)?;
        }
        Ok((state, init))
    }
}

/// The run's summary from the Coordinator's outcome (a stage's failure becomes the error).
fn summarize(plan: &RunPlan, outcome: Outcome, run_dir: &std::path::Path, out_dir: PathBuf, metric: String) -> Result<RunSummary, RunError> {
    if let Some((stage, source)) = outcome.failure {
        return Err(RunError::Stage { stage, source });
    }
    let c = &plan.config;
    let phase = plan.phase();
    let t = outcome.totals.ok_or_else(|| RunError::Pipeline("the trainer never reported".into()))?;
    let linger = c.metrics.linger_s;
    if plan.metrics_addr.is_some() && linger > 0.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(linger));
    }
    let ended_by = if t.stopped_early {
        "early stopping"
    } else if t.interrupted {
        "signal or stop command"
    } else if plan.epoch_steps > 0 {
        "epochs"
    } else {
        "max_steps"
    };
    let store = CheckpointStore::new(run_dir.join("checkpoints"));
    Ok(RunSummary {
        phase,
        metric,
        best: outcome.best,
        best_checkpoint: store.best().filter(|d| d.join("state.json").exists()).or_else(|| store.latest()),
        epochs: (plan.epoch_steps > 0).then(|| t.steps as f64 / plan.epoch_steps as f64),
        ended_by,
        stopped_early: t.stopped_early,
        init: t.init.clone(),
        steps: t.steps,
        tokens: t.tokens,
        samples: t.samples,
        elapsed_s: t.elapsed_s,
        tokens_per_second: t.tokens as f64 / t.elapsed_s.max(1e-9),
        data_wait_share: t.data_wait_s / t.elapsed_s.max(1e-9),
        final_loss: t.final_loss,
        eval: outcome.last_eval,
        checkpoint: outcome.last_checkpoint,
        max_checkpoint_stall_s: outcome.max_checkpoint_stall_s,
        interrupted: t.interrupted,
        out_dir,
    })
}


#[cfg(test)]
mod tests {
    use super::thread_budget;

    #[test]
    fn threads_are_shared_among_local_ranks_unless_configured() {
        assert_eq!(thread_budget(0, 16, None), 16);
        assert_eq!(thread_budget(0, 16, Some(4)), 4);
        assert_eq!(thread_budget(0, 2, Some(4)), 1);
        assert_eq!(thread_budget(3, 16, Some(4)), 3);
    }
}
