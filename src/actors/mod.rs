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
pub mod queue;
pub mod stage;
pub mod trainer;
mod data_plane;
mod pipeline;
mod event_log;
mod run_dir;

use std::path::PathBuf;

use serde::Serialize;

use crate::metrics::MetricsError;
use crate::objective::eval::EvalMetrics;
use crate::plan::RunPlan;
use crate::init::LoadReport;
use coordinator::Coordinator;
use events::SharedError;

pub use data_plane::{eval_data, eval_data_with, DataPlane};
pub use pipeline::Pipeline;
pub use run_dir::FolderLock;

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
    /// Another live process runs in this output folder.
    #[error("{} is in use by {} (another run writes there: wait for it, stop it, or give this run another run.out_dir)", dir.display(), pid.map_or("another process".to_owned(), |p| format!("pid {p}")))]
    InUse {
        /// The folder.
        dir: PathBuf,
        /// The holder's process id, when it wrote one.
        pid: Option<u32>,
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
    /// The checkpoint to resume from does not fit the model.
    #[error("checkpoint {} does not fit this config", dir.display())]
    Load {
        /// Checkpoint folder.
        dir: PathBuf,
        /// The file and the tensor that do not fit.
        source: crate::train::step::LoadError,
    },
    /// The process group could not be formed.
    #[error(transparent)]
    Dist(#[from] crate::distributed::DistError),
    /// The starting weights (`[init]`) could not be loaded.
    #[error("cannot load the starting weights")]
    Init(#[source] crate::init::InitError),
    /// The starting weights lack what the objective needs.
    #[error(transparent)]
    IncompleteStart(crate::objective::IncompleteStart),
    /// A thread could not be started, or the run ended without a result.
    #[error("the pipeline broke down: {0}")]
    Pipeline(String),
}

/// What ended a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// `train.max_steps` updates.
    MaxSteps,
    /// `train.epochs` epochs.
    Epochs,
    /// The monitored metric stalled for `train.patience` evaluations.
    EarlyStopping,
    /// A signal or a stop command (a checkpoint was written).
    Interrupted,
}

impl std::fmt::Display for EndedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndedBy::MaxSteps => "max_steps",
            EndedBy::Epochs => "epochs",
            EndedBy::EarlyStopping => "early stopping",
            EndedBy::Interrupted => "signal or stop command",
        })
    }
}

/// What a finished run reports, in either phase.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// `pretrain` or `finetune`.
    pub phase: crate::workload::Phase,
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
    /// Model FLOPs utilisation over the whole run (this rank's model FLOPs over its elapsed
    /// time and the peak); `None` without a peak.
    pub mfu: Option<f64>,
    /// Model FLOPs of this rank's updates.
    pub model_flops: f64,
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
    /// What ended the run.
    pub ended_by: EndedBy,
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


/// libtorch intra-op threads: the configured number, else `OMP_NUM_THREADS` (as PyTorch reads
/// it), else the machine's cores shared among the ranks on it (`LOCAL_WORLD_SIZE`, else all
/// ranks), so local ranks do not oversubscribe.
pub fn torch_threads(plan: &RunPlan) -> usize {
    torch_threads_why(plan).0
}

/// [`torch_threads`] and where the number came from, for the start-up log.
pub fn torch_threads_why(plan: &RunPlan) -> (usize, &'static str) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let omp = std::env::var("OMP_NUM_THREADS").ok();
    thread_budget(plan.config.run.threads, omp.as_deref(), cores, plan.dist.as_ref().map(|d| d.local_world))
}

/// The thread-budget policy, with the source of the number: a configured count wins; then
/// `OMP_NUM_THREADS` when it is a positive number (what PyTorch and torchrun users set to
/// share a machine between processes: two processes with a team of every core each spin
/// against each other, measured 4x slower each on 2 cores); otherwise every core, divided
/// among the local ranks of a data-parallel run. The Masker workers are not subtracted:
/// measured on 2 cores they use under 1 % of a core per BERT-mini step (BENCHMARKS.md).
pub fn thread_budget(configured: usize, omp_num_threads: Option<&str>, cores: usize, local_ranks: Option<usize>) -> (usize, &'static str) {
    // "4,2" (a team per nesting level) gives the outer level's, as `omp_get_max_threads` does.
    let omp = omp_num_threads.and_then(|v| v.split(',').next()).and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n > 0);
    match (configured, omp, local_ranks) {
        (0, Some(n), _) => (n, "OMP_NUM_THREADS"),
        (0, None, Some(ranks)) if ranks > 1 => ((cores / ranks).max(1), "the cores shared among the local ranks"),
        (0, None, _) => (cores.max(1), "every core"),
        (n, _, _) => (n, "run.threads"),
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

#[cfg(test)]
mod tests {
    use super::thread_budget;

    #[test]
    fn threads_are_shared_among_local_ranks_unless_configured() {
        assert_eq!(thread_budget(0, None, 16, None), (16, "every core"));
        assert_eq!(thread_budget(0, None, 16, Some(4)), (4, "the cores shared among the local ranks"));
        assert_eq!(thread_budget(0, None, 2, Some(4)).0, 1);
        assert_eq!(thread_budget(3, None, 16, Some(4)), (3, "run.threads"));
    }

    /// `OMP_NUM_THREADS` sets the team when the config leaves it to the machine, as in PyTorch;
    /// a configured count still wins, and a value that is not a positive number is ignored.
    #[test]
    fn omp_num_threads_sets_the_team_unless_configured() {
        assert_eq!(thread_budget(0, Some("1"), 16, None), (1, "OMP_NUM_THREADS"));
        assert_eq!(thread_budget(0, Some(" 3 "), 16, Some(4)).0, 3);
        assert_eq!(thread_budget(0, Some("4,2"), 16, None).0, 4);
        assert_eq!(thread_budget(2, Some("1"), 16, None), (2, "run.threads"));
        for ignored in ["", "0", "-1", "four", ",2"] {
            assert_eq!(thread_budget(0, Some(ignored), 16, Some(2)).0, 8, "{ignored:?}");
        }
    }
}

