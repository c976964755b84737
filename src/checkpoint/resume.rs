//! Choosing the checkpoint to resume from.
//!
//! `--resume auto` takes `latest` if it verifies, else the newest older checkpoint that does,
//! warning about every bad one it passes; no checkpoint at all means a fresh start. An explicit
//! `--resume PATH` must verify, or the run stops with the reason.

use std::path::{Path, PathBuf};

use super::state::CheckpointState;
use super::store::{CheckpointError, CheckpointStore};

/// What `--resume` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeFrom {
    /// The newest valid checkpoint of the run's own `checkpoints/`, if any.
    Auto,
    /// This checkpoint folder.
    Path(PathBuf),
}

impl std::str::FromStr for ResumeFrom {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "auto" { ResumeFrom::Auto } else { ResumeFrom::Path(PathBuf::from(s)) })
    }
}

/// A verified checkpoint to continue from.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    /// The checkpoint folder (`checkpoints/step-N`).
    pub dir: PathBuf,
    /// Its `state.json`: step, counters, stream cursor, config and checksums.
    pub state: CheckpointState,
}

/// Errors choosing a resume point.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The requested checkpoint does not verify.
    #[error("cannot resume from {dir}")]
    Bad {
        /// The checkpoint folder that cannot be resumed from.
        dir: PathBuf,
        /// Why it was rejected (missing file, checksum mismatch, unreadable state).
        #[source]
        source: CheckpointError,
    },
    /// Checkpoints exist but none verifies.
    #[error("no usable checkpoint in {0}: every one failed verification (see the warnings)")]
    NoneUsable(PathBuf),
}

/// Picks the resume point (see the module doc).
///
/// # Errors
/// [`ResumeError`].
pub fn choose(store: &CheckpointStore, root: &Path, from: &ResumeFrom) -> Result<Option<ResumePoint>, ResumeError> {
    match from {
        ResumeFrom::Path(path) => {
            let (dir, state) = locate(path).map_err(|source| ResumeError::Bad { dir: path.clone(), source })?;
            Ok(Some(ResumePoint { dir, state }))
        }
        ResumeFrom::Auto => {
            let mut candidates: Vec<PathBuf> = store.latest().into_iter().collect();
            let mut steps = store.steps();
            steps.sort_unstable_by(|a, b| b.cmp(a));
            for s in steps {
                let dir = root.join(CheckpointStore::dir_name(s));
                if !candidates.contains(&dir) {
                    candidates.push(dir);
                }
            }
            if candidates.is_empty() {
                return Ok(None);
            }
            for dir in candidates {
                match CheckpointStore::verify(&dir) {
                    Ok(state) => return Ok(Some(ResumePoint { dir, state })),
                    Err(e) => tracing::warn!(checkpoint = %dir.display(), error = %crate::error_chain(&e), "skipping an unusable checkpoint"),
                }
            }
            Err(ResumeError::NoneUsable(root.to_owned()))
        }
    }
}

/// The checkpoint folder meant by `path`, verified: a checkpoint folder itself, or a run's
/// folder or its `checkpoints/` folder, where the best checkpoint wins over the latest. The one
/// way `--resume PATH`, `[init] checkpoint`, `export` and `predict` find a checkpoint.
///
/// # Errors
/// When nothing there verifies.
pub fn locate(path: &Path) -> Result<(PathBuf, CheckpointState), CheckpointError> {
    let dir = if path.join("state.json").exists() {
        path.to_owned()
    } else {
        let root = if path.join("checkpoints").is_dir() { path.join("checkpoints") } else { path.to_owned() };
        let store = CheckpointStore::new(&root);
        store.best().filter(|b| b.join("state.json").exists()).or_else(|| store.latest()).unwrap_or(root)
    };
    if !dir.join("state.json").exists() {
        return Err(CheckpointError::NotFound(path.to_owned()));
    }
    let state = CheckpointStore::verify(&dir)?;
    Ok((dir, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_without_a_checkpoint_says_so_and_names_the_path() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("checkpoints")).unwrap();
        for path in [d.path().to_owned(), d.path().join("checkpoints"), d.path().join("absent")] {
            match locate(&path) {
                Err(CheckpointError::NotFound(p)) => assert_eq!(p, path),
                other => panic!("{}: {other:?}", path.display()),
            }
        }
        let e = locate(d.path()).unwrap_err().to_string();
        assert!(e.contains(&d.path().display().to_string()) && e.contains("train.save_checkpoints = false"), "{e}");
    }
}
