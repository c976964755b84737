//! Writing and reading checkpoint folders on a local disk.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::policy;
use super::state::{Best, CheckpointState};
use crate::files::{sha256_file, FileError};

/// Errors of the checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file system operation failed.
    #[error("checkpoint I/O failed")]
    Io(#[from] FileError),
    /// Writing or reading tensors failed.
    #[error("checkpoint tensors in {path}")]
    Tensors {
        /// File involved.
        path: PathBuf,
        /// libtorch's error reading or writing the safetensors file.
        #[source]
        source: tch::TchError,
    },
    /// `state.json` is unreadable.
    #[error("bad state.json in {path}")]
    State {
        /// Folder involved.
        path: PathBuf,
        /// The JSON error in `state.json`.
        #[source]
        source: serde_json::Error,
    },
    /// A path that is neither a checkpoint nor a run or `checkpoints/` folder holding one.
    #[error("no checkpoint at {0}: not a checkpoint folder (no state.json), nor a run or checkpoints/ folder that holds one (a run with train.save_checkpoints = false writes none)")]
    NotFound(PathBuf),
    /// A file does not match the checksum recorded in `state.json`.
    #[error("checkpoint {dir} is corrupt: {file} does not match its sha256")]
    Checksum {
        /// Checkpoint folder.
        dir: PathBuf,
        /// File that failed.
        file: String,
    },
}

fn fsync(path: &Path) -> Result<(), CheckpointError> {
    Ok(File::open(path).and_then(|f| f.sync_all()).map_err(FileError::at(path))?)
}

/// The `checkpoints/` folder of a run.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: PathBuf,
    /// The run's `tokenizer.json`, copied into every checkpoint it writes.
    tokenizer: Option<std::sync::Arc<String>>,
}

impl CheckpointStore {
    /// A store rooted at `root` (created on first save).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CheckpointStore { root: root.into(), tokenizer: None }
    }

    /// Every checkpoint this store writes carries `tokenizer_json` as `tokenizer.json` (the
    /// tokenizer travels with the weights, as `save_pretrained` does).
    pub fn with_tokenizer(mut self, tokenizer_json: std::sync::Arc<String>) -> Self {
        self.tokenizer = Some(tokenizer_json);
        self
    }

    /// The folder name of a step.
    pub fn dir_name(step: u64) -> String {
        format!("step-{step:08}")
    }

    /// The step of a checkpoint folder's name ([`Self::dir_name`]'s inverse).
    fn step_of(dir: &Path) -> Option<u64> {
        dir.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()
    }

    /// The step `latest` points at, if any.
    pub fn latest_step(&self) -> Option<u64> {
        Self::step_of(&self.latest()?)
    }

    /// Writes a checkpoint for `state.step` crash-safely, moves `latest`, and applies retention
    /// (`keep_last`). Returns the new folder.
    ///
    /// # Errors
    /// Any I/O or tensor error; the previous `latest` is untouched then.
    pub fn save(
        &self,
        model: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        state: CheckpointState,
        keep_last: usize,
        spare: &[u64],
    ) -> Result<PathBuf, CheckpointError> {
        let name = Self::dir_name(state.step);
        fs::create_dir_all(&self.root).map_err(FileError::at(&self.root))?;
        let tmp = self.root.join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(FileError::at(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(FileError::at(&tmp))?;
        let written = self.write_into(&tmp, model, optimizer, state);
        if written.is_err() {
            // A failed write (a full disk) leaves nothing behind: the space goes back now, not
            // at the next start.
            let _ = fs::remove_dir_all(&tmp);
        }
        written?;
        let dest = self.root.join(&name);
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(FileError::at(&dest))?;
        }
        fs::rename(&tmp, &dest).map_err(FileError::at(&dest))?;
        fsync(&self.root)?;
        self.set_pointer("latest", &name)?;
        self.retain(keep_last, spare);
        Ok(dest)
    }

    /// The files of a checkpoint, written and synced into `tmp`.
    fn write_into(&self, tmp: &Path, model: &[(String, Tensor)], optimizer: &[(String, Tensor)], mut state: CheckpointState) -> Result<(), CheckpointError> {
        for (file, tensors) in [("model.safetensors", model), ("optimizer.safetensors", optimizer)] {
            let path = tmp.join(file);
            Tensor::write_safetensors(tensors, &path).map_err(|source| CheckpointError::Tensors { path: path.clone(), source })?;
            fsync(&path)?;
            state.files.insert(file.to_owned(), sha256_file(&path)?);
        }
        if let Some(json) = &self.tokenizer {
            let path = tmp.join("tokenizer.json");
            fs::write(&path, json.as_bytes()).map_err(FileError::at(&path))?;
            fsync(&path)?;
            state.files.insert("tokenizer.json".to_owned(), sha256_file(&path)?);
        }
        let state_path = tmp.join("state.json");
        let json = serde_json::to_vec_pretty(&state).map_err(|source| CheckpointError::State { path: tmp.to_owned(), source })?;
        let mut f = File::create(&state_path).map_err(FileError::at(&state_path))?;
        f.write_all(&json).and_then(|_| f.sync_all()).map_err(FileError::at(&state_path))?;
        fsync(tmp)
    }

    /// Atomically replaces the small file `pointer` (`latest`, `best.json`) with `name`.
    fn set_pointer(&self, pointer: &str, name: &str) -> Result<(), CheckpointError> {
        let tmp = self.root.join(format!(".{pointer}.tmp"));
        let mut f = File::create(&tmp).map_err(FileError::at(&tmp))?;
        f.write_all(name.as_bytes()).and_then(|_| f.sync_all()).map_err(FileError::at(&tmp))?;
        let dest = self.root.join(pointer);
        fs::rename(&tmp, &dest).map_err(FileError::at(&dest))?;
        fsync(&self.root)
    }

    /// Marks the checkpoint of `best.step` as the best one (it is then never deleted by
    /// retention) by writing `best.json` (`{"step", "score"}`) atomically. Nothing happens
    /// when that step has no checkpoint on disk.
    ///
    /// # Errors
    /// I/O errors writing `best.json`.
    pub fn set_best(&self, best: Best) -> Result<bool, CheckpointError> {
        if !self.root.join(Self::dir_name(best.step)).join("state.json").exists() {
            return Ok(false);
        }
        let json = serde_json::to_string(&best).map_err(|source| CheckpointError::State { path: self.root.clone(), source })?;
        self.set_pointer("best.json", &json)?;
        Ok(true)
    }

    /// The best checkpoint recorded in `best.json`, if any.
    pub fn best_record(&self) -> Option<Best> {
        serde_json::from_str(&fs::read_to_string(self.root.join("best.json")).ok()?).ok()
    }

    /// The folder of the best checkpoint, if any.
    pub fn best(&self) -> Option<PathBuf> {
        self.best_record().map(|b| self.root.join(Self::dir_name(b.step)))
    }

    /// Removes temporary folders a killed run left behind (never complete checkpoints).
    pub fn clean_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else { return };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    /// Steps of the complete checkpoints on disk.
    pub fn steps(&self) -> Vec<u64> {
        let Ok(entries) = fs::read_dir(&self.root) else { return Vec::new() };
        entries
            .filter_map(|e| Self::step_of(&e.ok()?.path()))
            .collect()
    }

    /// Deletes old checkpoints beyond `keep_last`, never the ones `latest` and `best` name nor
    /// the `spare` steps (evaluations without a verdict yet: one may become the best). A failed
    /// delete is a warning, not an error: it costs disk, not correctness.
    pub fn retain(&self, keep_last: usize, spare: &[u64]) {
        let keep = [self.latest(), self.best()];
        for step in policy::to_delete(&self.steps(), keep_last) {
            if spare.contains(&step) {
                continue;
            }
            let dir = self.root.join(Self::dir_name(step));
            if keep.iter().any(|k| k.as_deref() == Some(dir.as_path())) {
                continue;
            }
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not delete an old checkpoint");
            }
        }
    }

    /// Deletes every checkpoint but `step`'s and points `latest` at it (`best.json` goes too
    /// when it names another step): what a finished sweep cell keeps of its run, the model its
    /// result reports, still verifiable and exportable. Nothing happens when `step` has no
    /// complete checkpoint, so a bad step can never leave a run without one.
    ///
    /// # Errors
    /// I/O errors moving the pointers; a checkpoint that fails to delete is a warning, as in
    /// [`Self::retain`].
    pub fn keep_only(&self, step: u64) -> Result<bool, CheckpointError> {
        let name = Self::dir_name(step);
        if !self.root.join(&name).join("state.json").exists() {
            return Ok(false);
        }
        self.set_pointer("latest", &name)?;
        if self.best_record().is_some_and(|b| b.step != step) {
            let best = self.root.join("best.json");
            fs::remove_file(&best).map_err(FileError::at(&best))?;
            fsync(&self.root)?;
        }
        for s in self.steps().into_iter().filter(|&s| s != step) {
            let dir = self.root.join(Self::dir_name(s));
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not delete a checkpoint");
            }
        }
        Ok(true)
    }

    /// The folder `latest` points at, if any.
    pub fn latest(&self) -> Option<PathBuf> {
        let name = fs::read_to_string(self.root.join("latest")).ok()?;
        Some(self.root.join(name.trim()))
    }

    /// Reads `state.json` of `dir` and checks every recorded checksum.
    ///
    /// # Errors
    /// [`CheckpointError::Checksum`] naming the first bad file; I/O and JSON errors.
    pub fn verify(dir: &Path) -> Result<CheckpointState, CheckpointError> {
        let path = dir.join("state.json");
        let bytes = fs::read(&path).map_err(FileError::at(&path))?;
        let state: CheckpointState =
            serde_json::from_slice(&bytes).map_err(|source| CheckpointError::State { path: dir.to_owned(), source })?;
        for (file, sum) in &state.files {
            if &sha256_file(&dir.join(file))? != sum {
                return Err(CheckpointError::Checksum { dir: dir.to_owned(), file: file.clone() });
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(store: &CheckpointStore, step: u64) {
        let dir = store.root.join(CheckpointStore::dir_name(step));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("state.json"), "{}").unwrap();
    }

    #[test]
    fn retention_spares_latest_best_and_checkpoints_awaiting_a_verdict() {
        let d = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(d.path());
        for s in [10, 20, 30, 40, 50] {
            fake(&store, s);
        }
        store.set_pointer("latest", &CheckpointStore::dir_name(50)).unwrap();
        store.set_best(Best { step: 10, score: 1.0 }).unwrap();
        store.retain(1, &[30]);
        let mut steps = store.steps();
        steps.sort_unstable();
        assert_eq!(steps, vec![10, 30, 50], "best 10, awaiting 30, latest 50");
        store.retain(1, &[]);
        let mut steps = store.steps();
        steps.sort_unstable();
        assert_eq!(steps, vec![10, 50], "30 goes once its verdict is in");
    }

    #[test]
    fn keep_only_leaves_one_checkpoint_and_pointers_that_name_it() {
        let d = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(d.path());
        for s in [10, 20, 30] {
            fake(&store, s);
        }
        store.set_pointer("latest", &CheckpointStore::dir_name(30)).unwrap();
        store.set_best(Best { step: 20, score: 1.0 }).unwrap();
        assert!(!store.keep_only(40).unwrap(), "no checkpoint of step 40: nothing changes");
        assert_eq!(store.steps().len(), 3);
        assert!(store.keep_only(20).unwrap());
        assert_eq!(store.steps(), vec![20]);
        assert_eq!(store.latest(), Some(d.path().join("step-00000020")));
        assert_eq!(store.best_record().map(|b| b.step), Some(20), "the best is the one kept");
        fake(&store, 50);
        assert!(store.keep_only(50).unwrap());
        assert_eq!(store.steps(), vec![50]);
        assert_eq!(store.best_record(), None, "best.json named a deleted checkpoint");
        assert_eq!(store.latest(), Some(d.path().join("step-00000050")));
    }
}
