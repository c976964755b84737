//! `pretune export --hf OUT --checkpoint DIR`: a folder `transformers` loads with
//! `AutoModelForMaskedLM` (pre-training, and cloze on BERT's MLM head with its pattern and
//! verbalizers under `pretune_cloze` in `config.json`) / `AutoModelForSequenceClassification` /
//! `AutoModelForTokenClassification` / `AutoModelForQuestionAnswering`: `config.json`, `model.safetensors` (with the `format: pt`
//! metadata `transformers` checks) and `tokenizer.json`. Only safetensors is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::checkpoint::resume::locate as find_checkpoint;
use super::task::TaskSpec;
use crate::checkpoint::CheckpointError;
use crate::data::tokenize::TextTokenizer;
use crate::model::bert::BertConfig;
use crate::model::heads::HeadKind;
use crate::objective::ModelSpec;

/// Errors of an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The checkpoint could not be read or verified.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// No Hugging Face architecture fits.
    #[error("{0}")]
    Unsupported(String),
    /// Reading or writing.
    #[error("export failed: {0}")]
    Io(String),
}

/// What a checkpoint holds, for export and prediction.
pub enum SavedModel {
    /// A pre-training BERT.
    Pretrain {
        /// Its sizes.
        config: BertConfig,
        /// With the NSP / SOP head (`BertForPreTraining`), else `BertForMaskedLM`.
        pair_head: bool,
        /// The run's `tokenizer.json`.
        tokenizer: PathBuf,
    },
    /// A fine-tuned task model.
    Task(TaskSpec),
}

/// Reads the model description of a checkpoint's `state.json`.
///
/// # Errors
/// [`ExportError::Unsupported`] for GLM or unreadable descriptions.
pub fn describe(model: &Value, config: &Value) -> Result<SavedModel, ExportError> {
    if model.get("architecture").and_then(Value::as_str) == Some("BertForTask") {
        return serde_json::from_value(model.clone()).map(SavedModel::Task).map_err(|e| ExportError::Unsupported(e.to_string()));
    }
    let tok = config.pointer("/tokenizer/path").and_then(Value::as_str).map(PathBuf::from).unwrap_or_default();
    match serde_json::from_value::<ModelSpec>(model.clone()) {
        Ok(ModelSpec::Bert { config, pair_head }) => Ok(SavedModel::Pretrain { config, pair_head, tokenizer: tok }),
        Ok(ModelSpec::Glm { .. }) => Err(ExportError::Unsupported("GLM has no Hugging Face `transformers` architecture to export to".into())),
        Err(e) => Err(ExportError::Unsupported(format!("unreadable model description: {e}"))),
    }
}

fn to_f32_view_bytes(t: &Tensor) -> (Vec<usize>, Vec<u8>) {
    let t = t.to_kind(Kind::Float).contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let v = Vec::<f32>::try_from(&t.view([-1])).unwrap_or_default();
    (shape, v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Writes named tensors as float32 safetensors with `{"format": "pt"}` metadata.
///
/// # Errors
/// [`ExportError::Io`].
pub fn write_safetensors(tensors: &[(String, Tensor)], path: &Path) -> Result<(), ExportError> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors.iter().map(|(n, t)| {
        let (s, b) = to_f32_view_bytes(t);
        (n.clone(), s, b)
    }).collect();
    let views = data
        .iter()
        .map(|(n, s, b)| safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ExportError::Io(e.to_string()))?;
    let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| ExportError::Io(format!("{}: {e}", path.display())))
}

/// Exports the checkpoint at (or under) `checkpoint` into `out`.
///
/// # Errors
/// [`ExportError`].
pub fn export_hf(checkpoint: &Path, out: &Path) -> Result<PathBuf, ExportError> {
    let (dir, state) = find_checkpoint(checkpoint)?;
    let described = describe(&state.model, &state.config)?;
    let (bert, arch, extra, tokenizer) = match &described {
        SavedModel::Pretrain { config: cfg, pair_head: pair, tokenizer: tok } => {
            let arch = if *pair { "BertForPreTraining" } else { "BertForMaskedLM" };
            (cfg.clone(), arch, json!({}), tok.clone())
        }
        SavedModel::Task(spec) => {
            let id2label: serde_json::Map<String, Value> = spec.labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
            let label2id: serde_json::Map<String, Value> = spec.labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
            let (arch, extra) = match spec.kind {
                HeadKind::SequenceClassification => ("BertForSequenceClassification", json!({"num_labels": spec.labels.len(), "id2label": id2label, "label2id": label2id, "problem_type": "single_label_classification"})),
                HeadKind::Regression => ("BertForSequenceClassification", json!({"num_labels": 1, "problem_type": "regression"})),
                HeadKind::TokenClassification => ("BertForTokenClassification", json!({"num_labels": spec.labels.len(), "id2label": id2label, "label2id": label2id})),
                HeadKind::QuestionAnswering => ("BertForQuestionAnswering", json!({"num_labels": 2, "doc_stride": spec.qa.unwrap_or_default().doc_stride})),
                HeadKind::Cloze if spec.glm.is_some() => return Err(ExportError::Unsupported("a GLM cloze model has no Hugging Face `transformers` architecture to export to".into())),
                // The MLM head is the model: `BertForMaskedLM`, with the pattern and the
                // verbalizers a user needs to score labels the way the run did.
                HeadKind::Cloze => {
                    let task = state.config.get("task").cloned().unwrap_or_default();
                    ("BertForMaskedLM", json!({"pretune_cloze": {"pattern": task.get("pattern"), "verbalizers": task.get("verbalizers"), "labels": spec.labels}, "id2label": id2label, "label2id": label2id}))
                }
            };
            (spec.config.clone(), arch, extra, spec.tokenizer.clone())
        }
    };
    std::fs::create_dir_all(out).map_err(|e| ExportError::Io(format!("{}: {e}", out.display())))?;
    let mut config = serde_json::to_value(&bert).map_err(|e| ExportError::Io(e.to_string()))?;
    let obj = config.as_object_mut().expect("a struct serializes to an object");
    obj.insert("model_type".into(), json!("bert"));
    obj.insert("architectures".into(), json!([arch]));
    obj.insert("hidden_act".into(), json!("gelu"));
    obj.insert("position_embedding_type".into(), json!("absolute"));
    obj.insert("tie_word_embeddings".into(), json!(true));
    if let Some(m) = extra.as_object() {
        obj.extend(m.clone());
    }
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config).unwrap_or_default()).map_err(|e| ExportError::Io(e.to_string()))?;
    let tensors = Tensor::read_safetensors(dir.join("model.safetensors")).map_err(|e| ExportError::Io(e.to_string()))?;
    write_safetensors(&tensors, &out.join("model.safetensors"))?;
    let tok = TextTokenizer::load(&tokenizer, None).map_err(|e| ExportError::Io(crate::error_chain(&e)))?;
    tok.inner().save(out.join("tokenizer.json"), true).map_err(|e| ExportError::Io(e.to_string()))?;
    Ok(dir)
}
