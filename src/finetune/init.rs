//! Where fine-tuning weights come from: one of our checkpoints, a Hugging Face BERT folder, or
//! nothing (fresh). Weights are copied by name; what the task needs but the source lacks is
//! initialised fresh and listed, and what the source has but the task does not use is listed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{nn, Tensor};

use crate::checkpoint::state::CheckpointState;
use crate::checkpoint::{CheckpointError, CheckpointStore};

/// The starting point.
#[derive(Debug, Clone, PartialEq)]
pub enum InitSource {
    /// Fresh weights.
    Fresh,
    /// One of our checkpoint folders (verified).
    Checkpoint(PathBuf),
    /// A Hugging Face folder.
    Hf(PathBuf),
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Variables copied from the source.
    pub loaded: usize,
    /// Variables the source lacks (initialised fresh).
    pub missing: Vec<String>,
    /// Source tensors nothing used.
    pub unused: Vec<String>,
}

/// Finds the checkpoint folder meant by `path`: a checkpoint folder itself, or a run's
/// `checkpoints/` (or run) folder, where the best checkpoint wins over the latest.
///
/// # Errors
/// When nothing there verifies.
pub fn find_checkpoint(path: &Path) -> Result<(PathBuf, CheckpointState), CheckpointError> {
    let dir = if path.join("state.json").exists() {
        path.to_owned()
    } else {
        let root = if path.join("checkpoints").is_dir() { path.join("checkpoints") } else { path.to_owned() };
        let store = CheckpointStore::new(&root);
        store.best().filter(|b| b.join("state.json").exists()).or_else(|| store.latest()).unwrap_or(root)
    };
    let state = CheckpointStore::verify(&dir)?;
    Ok((dir, state))
}

/// Hugging Face `BertModel` files name tensors without the `bert.` prefix.
fn hf_name(name: &str) -> String {
    if ["embeddings.", "encoder.", "pooler."].iter().any(|p| name.starts_with(p)) {
        format!("bert.{name}")
    } else {
        name.to_owned()
    }
}

/// Copies tensors from a safetensors file into `vs` by name (with the HF prefix fix).
///
/// # Errors
/// A message naming the file, or a tensor whose shape differs.
pub fn load_into(vs: &nn::VarStore, file: &Path) -> Result<LoadReport, String> {
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .into_iter()
        .filter(|(k, _)| !k.ends_with("position_ids"))
        .map(|(k, v)| (hf_name(&k), v))
        .collect();
    let mut report = LoadReport::default();
    let mut used = std::collections::HashSet::new();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| -> Result<(), String> {
        for (name, mut var) in vars {
            match tensors.get(&name) {
                Some(t) if t.size() == var.size() => {
                    var.copy_(&t.to_device(var.device()).to_kind(var.kind()));
                    used.insert(name);
                    report.loaded += 1;
                }
                Some(t) => return Err(format!("{}: `{name}` has shape {:?}, the model needs {:?}", file.display(), t.size(), var.size())),
                None => report.missing.push(name),
            }
        }
        Ok(())
    })?;
    report.unused = tensors.keys().filter(|k| !used.contains(*k)).cloned().collect();
    report.unused.sort();
    Ok(report)
}
