//! The pipeline builder and the wiring of a run: subscribers, stages and an objective a
//! program adds to the config's; the Coordinator, the Evaluator, the Checkpointer, the data
//! plane and the Trainer started in order, each with what it needs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use actix::{Actor, AsyncContext, SyncArbiter};
use crossbeam_channel::bounded;

use super::control::{Permits, StopFlag};
use super::coordinator::{self, Coordinator, Outcome};
use super::data_plane::{eval_data_with, spawn, DataPlane};
use super::events::{self, SharedError};
use super::run_dir::{find_resume_point, prepare_out_dir, start_point, summarize, write_resolved_config};
use super::trainer::{self, StartPoint};
use super::{checkpointer, control_http, evaluator, progress, stage, torch_threads, Controller, RunError, RunSummary, SubscriberFactory};
use crate::init::LoadReport;
use crate::objective::{Collator, Objective};
use crate::plan::RunPlan;
use crate::train::adamw::AdamWConfig;
use crate::train::groups::ParamGroups;
use crate::train::policy::{EarlyStopping, StepPolicy};
use crate::train::schedule::LrSchedule;
use crate::train::step::TrainState;

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
            None => (self.plan.collator(), self.plan.objective()),
        };
        run_pipeline(self.plan, self.subscribers, self.stages, cpu, device)
    }
}

/// What a run's actors are started from, once the folder, the process group and the resume
/// point are settled.
struct Launch {
    plan: Arc<RunPlan>,
    subscribers: Vec<SubscriberFactory>,
    stages: Vec<Box<dyn stage::DataStage>>,
    cpu: Arc<dyn Collator>,
    rank: usize,
    stop: StopFlag,
    store: crate::checkpoint::CheckpointStore,
    trainer: TrainerStart,
}

/// What the Trainer starts from.
struct TrainerStart {
    objective: Arc<dyn Objective>,
    resume_point: Option<crate::checkpoint::resume::ResumePoint>,
    process_group: Option<crate::distributed::ProcessGroup>,
    profile_dir: PathBuf,
    start: StartPoint,
    threads: usize,
}

fn run_pipeline(mut plan: RunPlan, subscribers: Vec<SubscriberFactory>, stages: Vec<Box<dyn stage::DataStage>>, cpu: Arc<dyn Collator>, objective: Arc<dyn Objective>) -> Result<RunSummary, RunError> {
    let monitor = objective.monitor();
    let (rank, world) = plan.dist.as_ref().map_or((0, 1), |d| (d.rank, d.world));
    // Held to the end of the run (the summary and any metrics linger included).
    let (run_dir, out_dir, _lock) = prepare_out_dir(&plan, rank)?;
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
    let batching = (plan.config.train.batch_size, plan.config.train.grad_accum);
    let start = start_point(resume_point.as_ref(), world, &objective.describe(), &mut plan)?;
    if batching != (plan.config.train.batch_size, plan.config.train.grad_accum) {
        write_resolved_config(&plan, &out_dir)?;
    }
    let stop = StopFlag::new();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Outcome>();
    let progress = progress::Progress::new(plan.config.train.max_steps, plan.phase().as_str());
    let mut coordinator = Coordinator::new(&out_dir, stop.clone(), progress, done_tx, monitor.clone()).map_err(|source| RunError::OutDir { path: out_dir.clone(), source })?;
    if let Some((restart, max_restarts)) = crate::distributed::launch::restarted() {
        let step = resume_point.as_ref().map_or(0, |r| r.state.step);
        tracing::warn!(restart, max_restarts, step, "this run was restarted by its launcher after a failure");
        coordinator = coordinator.restarted(restart, max_restarts, step);
    }
    let plan = Arc::new(plan);
    let profile_dir = crate::train::profile::dir_of(&out_dir);
    let trainer = TrainerStart { objective, resume_point, process_group, profile_dir, start, threads };
    let launch = Launch { plan: plan.clone(), subscribers, stages, cpu, rank, stop: stop.clone(), store, trainer };
    let system = actix::System::new();
    let (outcome, handles) = system.block_on(async move {
        let handles = launch.start(coordinator)?;
        let outcome = done_rx.await.map_err(|_| RunError::Pipeline("the coordinator stopped without a result".into()));
        stop.abort();
        actix::System::current().stop();
        Ok::<_, RunError>((outcome?, handles))
    })?;
    for h in handles {
        let _ = h.join();
    }
    summarize(&plan, outcome, &run_dir, out_dir, monitor.metric)
}

impl Launch {
    /// Starts every actor and thread in order (inside the run's actix system): subscribers and
    /// the control channel, the Evaluator (its model built before the Trainer seeds libtorch's
    /// generator), the Checkpointer, the Coordinator, the data plane, the Trainer.
    fn start(self, coordinator_value: Coordinator) -> Result<Vec<JoinHandle<()>>, RunError> {
        let Launch { plan, subscribers, stages, cpu, rank, stop, store, trainer } = self;
        // MFU's peak, measured (on the CPU, the first time on a machine) before any other thread
        // of the run starts: a GEMM probe beside the Loader and Maskers filling their queues
        // would measure half the rate.
        let bf16 = crate::train::precision::resolve(plan.config.train.precision, plan.device).precision == crate::config::Precision::Bf16;
        let peak = crate::mfu::peak::resolve(plan.device, bf16, trainer.threads, plan.config.train.peak_tflops);
        tracing::info!(peak = %peak.describe(), "MFU is measured against this peak");
        // What was read, with what reading changed (texts cut to `max_seq_len`, sources cut):
        // `pretune check` shows it before a run; the run's log shows it too.
        tracing::info!(data = %plan.workload.describe_data(), "read");
        for note in plan.workload.notes() {
            tracing::info!("{note}");
        }
        // The Coordinator's address exists before it runs, so the Checkpointer (which reports
        // to it) can be started first and handed to it.
        let coordinator_ctx = actix::Context::<Coordinator>::new();
        let coordinator = coordinator_ctx.address();
        for factory in subscribers {
            coordinator.do_send(coordinator::Subscribe(factory(Controller(coordinator.clone()))));
        }
        let (control_tx, control_rx) = bounded::<events::Command>(64);
        coordinator.do_send(coordinator::ControlChannel(control_tx));
        if rank == 0 {
            serve_control(&plan, &coordinator)?;
        }
        let (results_tx, results_rx) = crossbeam_channel::unbounded();
        let evaluator = eval_data_with(&plan, cpu.clone())
            .filter(|_| rank == 0)
            .map(|data| {
                let permits = Permits::mailbox("evaluator", 1);
                let ev = evaluator::Evaluator::new(trainer.objective.as_ref(), plan.device, data, coordinator.clone().recipient(), permits.clone(), results_tx)?;
                Ok::<_, RunError>((start_on_own_thread(ev), permits))
            })
            .transpose()?;
        // `best.json` is the authority (a state.json only knows the best at its writing time).
        let resumed_best = trainer.resume_point.as_ref().and_then(|r| store.best_record().or(r.state.best));
        let ckpt_permits = Permits::mailbox("checkpointer", 1);
        let keep_last = plan.config.train.keep_last;
        let checkpointer = start_on_own_thread(checkpointer::Checkpointer {
            store,
            keep_last,
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
        let (host_rx, mut handles) = DataPlane::new(&plan, stop.clone(), sink).from(trainer.start).stages(stages).collator(cpu).spawn()?;
        let links = trainer::Links { rx: host_rx, control: control_rx, results: results_rx, events: coordinator.recipient(), stop };
        let peers = trainer::Peers { evaluator, checkpointer: (checkpointer, ckpt_permits) };
        handles.push(trainer.spawn(&plan, links, peers, peak)?);
        Ok(handles)
    }
}

impl TrainerStart {
    /// The Trainer on its own thread: it builds its model and optimizer there, then trains.
    fn spawn(self, plan: &RunPlan, links: trainer::Links, peers: trainer::Peers, peak: crate::mfu::Peak) -> Result<JoinHandle<()>, RunError> {
        let train = &plan.config.train;
        let monitor = self.objective.monitor();
        let rules = trainer::Rules {
            policy: step_policy(plan, peers.evaluator.is_some()),
            grad_accum: train.grad_accum,
            nonfinite: train.nonfinite,
            max_nonfinite_in_a_row: train.max_nonfinite_in_a_row,
            early: (monitor.clone(), EarlyStopping::new(train.patience, monitor.direction)),
        };
        let provenance = trainer::Provenance {
            seed: plan.config.run.seed,
            config_json: serde_json::to_value(&plan.config).map_err(|e| RunError::Pipeline(format!("cannot record the config: {e}")))?,
            model_json: self.objective.describe(),
            tokenizer_sha256: plan.tokenizer.fingerprint(),
            init_from: match &self.resume_point {
                Some(rp) => rp.state.init.clone(),
                None => plan.init.describe(),
            },
        };
        let setup = trainer_setup(plan, self.objective.clone(), self.resume_point.as_ref(), self.process_group, self.profile_dir);
        let (phase, start, threads) = (plan.phase(), self.start, self.threads);
        let (log_every, objective) = (train.log_every, self.objective.clone());
        spawn(
            "trainer".into(),
            Box::new(move || {
                tch::set_num_threads(threads as i32);
                let (mut state, init) = match setup.build() {
                    Ok(built) => built,
                    Err(error) => {
                        links.stop.abort();
                        links.events.do_send(events::Event::Failed { stage: "trainer", error });
                        return;
                    }
                };
                state.set_stage_sampling(log_every);
                let mfu = crate::mfu::Meter::new(objective, peak);
                trainer::Trainer { state, links, peers, rules, provenance, phase, start, init, threads, mfu }.run()
            }),
        )
    }
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
        epoch_steps: plan.workload.epoch_steps(),
        checkpoint_every: train.checkpoint_every,
        save_checkpoints: train.save_checkpoints,
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
    let (threads, threads_from) = super::torch_threads_why(plan);
    tracing::info!(precision = ?choice.precision, why = %choice.why, threads, threads_from, cuda = %crate::cuda::load(), malloc = %crate::malloc::describe(), "arithmetic");
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
        process_group,
        bucket_bytes: if config.dist.overlap { (config.dist.bucket_mb * 1024.0 * 1024.0) as usize } else { usize::MAX },
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

/// Starts `actor` on a thread of its own (an actix `SyncArbiter` of one), for actors that run
/// libtorch or do blocking I/O.
fn start_on_own_thread<A: Actor<Context = actix::SyncContext<A>> + Send>(actor: A) -> actix::Addr<A> {
    let slot = Mutex::new(Some(actor));
    SyncArbiter::start(1, move || slot.lock().expect("not poisoned").take().expect("started once"))
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
    init_source: crate::init::InitSource,
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
            state.load_checkpoint(&dir, step).map_err(|source| Arc::new(RunError::Load { dir, source }) as SharedError)?;
        } else if !matches!(self.init_source, crate::init::InitSource::Fresh) {
            let report = crate::init::load_start(&state.vs, &self.init_source).map_err(|e| Arc::new(RunError::Init(e)) as SharedError)?;
            report.check_encoder(&self.init_source).map_err(|e| Arc::new(RunError::Init(e)) as SharedError)?;
            self.objective.check_start(&report.missing).map_err(|e| Arc::new(RunError::IncompleteStart(e)) as SharedError)?;
            tracing::info!(loaded = report.loaded, missing = ?report.missing, unused = ?report.unused, "starting weights");
            init = Some(report);
        }
        if let Some(pg) = self.process_group {
            state.attach_dist(pg, self.bucket_bytes, self.find_unused).map_err(|e| Arc::new(e) as SharedError)?;
        }
        Ok((state, init))
    }
}
