//! What `evaluate` and `predict` share: a fine-tuned checkpoint located, verified and its task
//! rebuilt, with typed errors that keep their causes.

use std::path::{Path, PathBuf};

use super::task::{describe, restore, DescribeError, SavedModel};
use super::tasks::{Task, TaskError};
use crate::checkpoint::resume::locate;
use crate::checkpoint::state::CheckpointState;
use crate::checkpoint::CheckpointError;

/// Where and how wide `predict`, `evaluate` and `generate` run the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inference {
    /// The model's device.
    pub device: tch::Device,
    /// Examples per forward pass (QA: windows; generation: texts decoded together, fewer
    /// when their beams would not fit the memory left).
    pub batch_size: usize,
}

impl Default for Inference {
    fn default() -> Self {
        Inference { device: tch::Device::Cpu, batch_size: 32 }
    }
}

/// Why `evaluate` or `predict` failed.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// No checkpoint there, or it failed verification.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Its `state.json` describes no model we know.
    #[error(transparent)]
    Describe(#[from] DescribeError),
    /// A pre-training checkpoint where a fine-tuned one is needed.
    #[error("{} is a pre-training checkpoint: {verb} needs a fine-tuned one", dir.display())]
    NotATask {
        /// The checkpoint folder.
        dir: PathBuf,
        /// `evaluate` or `predict`.
        verb: &'static str,
    },
    /// A `--set generate.KEY=VALUE` that does not apply.
    #[error(transparent)]
    Settings(#[from] crate::config::ConfigError),
    /// The task could not be rebuilt, or could not read the input.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// `predict`'s input could not be read, or holds a record the task cannot read.
    #[error("{}: cannot read the input", path.display())]
    Input {
        /// The input file.
        path: PathBuf,
        /// The task's reading error (a bad record names its line).
        source: TaskError,
    },
    /// The weights could not be loaded.
    #[error("{}: cannot load the weights", dir.display())]
    Weights {
        /// The checkpoint folder.
        dir: PathBuf,
        /// libtorch's error.
        source: tch::TchError,
    },
    /// Writing the output.
    #[error("{}: cannot write the predictions", path.display())]
    Write {
        /// The output (`-` for stdout).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl DriveError {
    /// Whether the caller asked for something that cannot be (exit 2): a bad `--set` (one the
    /// task refuses too, as `generate.max_new_tokens` past the block positions), a checkpoint
    /// of the wrong kind, an input record the task cannot read (as `generate` refuses a line).
    pub fn is_usage(&self) -> bool {
        match self {
            DriveError::Settings(_) | DriveError::NotATask { .. } | DriveError::Task(TaskError::Config(_)) => true,
            DriveError::Input { source: TaskError::Data(e), .. } => !matches!(e, super::data::TaskDataError::Io(_)),
            _ => false,
        }
    }
}

/// A located fine-tuned checkpoint and its task.
pub struct Opened {
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// Its `state.json`.
    pub state: CheckpointState,
    /// The task, as the run resolved it.
    pub task: Box<dyn Task>,
}

/// Locates the checkpoint at (or under) `checkpoint` and rebuilds its task with `overrides`:
/// `generate.KEY=VALUE` over its `[generate]`, and `task.KEY=VALUE` for the keys its kind
/// lets a trained model change ([`super::tasks::TaskKind::inference_keys`]: post-processing
/// such as SQuAD v2.0's null threshold); `verb` names the command for the message when it is
/// a pre-training checkpoint.
///
/// # Errors
/// [`DriveError`].
pub fn open(checkpoint: &Path, verb: &'static str, overrides: &[String]) -> Result<Opened, DriveError> {
    let (dir, state) = locate(checkpoint)?;
    let spec = match describe(&state.model, &state.config)? {
        SavedModel::Task(s) => super::task::TaskSpec { tokenizer: super::task::own_tokenizer(&dir, s.tokenizer.clone()), ..s },
        SavedModel::Pretrain { .. } | SavedModel::Glm => return Err(DriveError::NotATask { dir, verb }),
    };
    let file = dir.join("state.json");
    let allowed = super::tasks::lookup(&spec.kind)?.inference_keys;
    let (task_sets, generate_sets): (Vec<String>, Vec<String>) = overrides.iter().cloned().partition(|o| o.starts_with("task."));
    for o in &task_sets {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k).trim().trim_start_matches("task.");
        if !allowed.contains(&key) {
            let takes = if allowed.is_empty() {
                format!("a trained task.kind = \"{}\" checkpoint takes only generate.KEY=VALUE", spec.kind)
            } else {
                format!("a trained task.kind = \"{}\" checkpoint takes generate.KEY=VALUE and task.{} (its post-processing; the rest is the trained model)", spec.kind, allowed.join(", task."))
            };
            return Err(crate::config::ConfigError::Invalid { file, problems: vec![format!("--set {o}: {takes}")] }.into());
        }
    }
    let settings = crate::config::decode_settings(&file, state.config.get("generate"), &generate_sets)?;
    let mut config = state.config.clone();
    if !task_sets.is_empty() {
        let task = crate::config::task_settings(&file, config.get("task"), &task_sets)?;
        if let Some(m) = config.as_object_mut() {
            m.insert("task".into(), task);
        }
    }
    let task = restore(&spec, &config, settings)?;
    Ok(Opened { dir, state, task })
}
