//! `pretune export --hf OUT --checkpoint DIR`: a folder `transformers` loads with
//! `AutoModelForMaskedLM` (pre-training, and cloze on BERT's MLM head with its pattern and
//! verbalizers under `pretune_cloze` in `config.json`) / `AutoModelForSequenceClassification` /
//! `AutoModelForTokenClassification` / `AutoModelForQuestionAnswering`: `config.json`, `model.safetensors` (with the `format: pt`
//! metadata `transformers` checks), `tokenizer.json` and `tokenizer_config.json` (so
//! `AutoTokenizer` and `pipeline` frame, case and truncate texts as the model was trained:
//! [`tokenizer`]). Only safetensors is written.

pub mod tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::checkpoint::resume::locate as find_checkpoint;
use crate::checkpoint::CheckpointError;
use crate::data::tokenize::TextTokenizer;
use crate::finetune::task::{describe, DescribeError, SavedModel};
use crate::objective::ModelSpec;

/// Errors of an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The checkpoint could not be read or verified.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// `state.json`'s model description is unreadable.
    #[error(transparent)]
    Describe(#[from] DescribeError),
    /// No Hugging Face architecture fits.
    #[error("GLM has no Hugging Face `transformers` architecture to export to")]
    Glm,
    /// Writing the folder, or reading the checkpoint's files.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The output folder could not be made (a file of that name, no permission, ...).
    #[error("cannot create the output folder {}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The weights could not be read.
    #[error("{}: cannot read the weights", path.display())]
    Weights {
        /// The safetensors file.
        path: PathBuf,
        /// libtorch's error.
        source: tch::TchError,
    },
    /// The safetensors file could not be written.
    #[error("{}: cannot write the weights", path.display())]
    Safetensors {
        /// The safetensors file.
        path: PathBuf,
        /// safetensors' error.
        source: safetensors::SafeTensorError,
    },
    /// The tokenizer could not be loaded or saved.
    #[error("{}: cannot load or save the tokenizer", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The task could not be rebuilt, or has no `transformers` architecture.
    #[error(transparent)]
    Task(#[from] crate::finetune::tasks::TaskError),
}

fn to_f32_view_bytes(t: &Tensor) -> (Vec<usize>, Vec<u8>) {
    let t = t.to_kind(Kind::Float).contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let v = Vec::<f32>::try_from(&t.view([-1])).expect("a contiguous f32 tensor converts");
    (shape, v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Writes named tensors as float32 safetensors with `{"format": "pt"}` metadata.
///
/// # Errors
/// [`ExportError::Safetensors`].
pub fn write_safetensors(tensors: &[(String, Tensor)], path: &Path) -> Result<(), ExportError> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors.iter().map(|(n, t)| {
        let (s, b) = to_f32_view_bytes(t);
        (n.clone(), s, b)
    }).collect();
    let views = data
        .iter()
        .map(|(n, s, b)| safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ExportError::Safetensors { path: path.to_owned(), source })?;
    let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|source| ExportError::Safetensors { path: path.to_owned(), source })
}

/// The `transformers` class of BERT-family head `arch` (`BertForSequenceClassification`, ...)
/// for the encoder's `model_type`: `RobertaFor...` / `XLMRobertaFor...` / `ElectraFor...` /
/// `ModernBertFor...` (the same tensor names as pretune's: `roberta.*`, `lm_head.*`,
/// `classifier.{dense, out_proj}`; ModernBERT's `model.*`, `head.*`, `classifier.*`).
fn family_architecture(model_type: &str, arch: &str) -> String {
    let family = match model_type {
        "roberta" => "Roberta",
        "xlm-roberta" => "XLMRoberta",
        "electra" => "Electra",
        "modernbert" => "ModernBert",
        _ => return arch.to_owned(),
    };
    arch.strip_prefix("Bert").map_or_else(|| arch.to_owned(), |rest| format!("{family}{rest}"))
}

/// Exports the checkpoint at (or under) `checkpoint` into `out`.
///
/// # Errors
/// [`ExportError`].
pub fn export_hf(checkpoint: &Path, out: &Path) -> Result<PathBuf, ExportError> {
    let (dir, state) = find_checkpoint(checkpoint)?;
    let described = match describe(&state.model, &state.config)? {
        SavedModel::Task(spec) => SavedModel::Task(crate::finetune::task::TaskSpec { tokenizer: crate::finetune::task::own_tokenizer(&dir, spec.tokenizer.clone()), ..spec }),
        SavedModel::Pretrain { model, tokenizer } => SavedModel::Pretrain { model, tokenizer: crate::finetune::task::own_tokenizer(&dir, tokenizer) },
        SavedModel::Glm => SavedModel::Glm,
    };
    let (model, arch, extra, tokenizer) = match described {
        SavedModel::Pretrain { model, tokenizer } => {
            let arch = match &model {
                ModelSpec::Bert { pair_head: true, .. } => "BertForPreTraining",
                ModelSpec::Electra { .. } => "ElectraForPreTraining",
                _ => "BertForMaskedLM",
            };
            (model, arch, json!({}), tokenizer)
        }
        SavedModel::Glm => return Err(ExportError::Glm),
        SavedModel::Task(spec) => {
            let head = crate::finetune::task::restore(&spec, &state.config, Default::default())?.export()?;
            (spec.encoder(), head.architecture, Value::Object(head.config), spec.tokenizer.clone())
        }
    };
    let tok = TextTokenizer::load(&tokenizer, None).map_err(|e| ExportError::Tokenizer { path: tokenizer.clone(), source: Box::new(e) })?;
    let weights = dir.join("model.safetensors");
    let tensors = Tensor::read_safetensors(&weights).map_err(|source| ExportError::Weights { path: weights.clone(), source })?;
    if let ModelSpec::Electra { pair } = &model {
        // The discriminator in OUT, the generator in OUT/generator, each with the embeddings
        // the two share.
        let (generator, discriminator): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(n, _)| n.starts_with("generator."));
        let shared: Vec<(String, Tensor)> = discriminator.iter().filter(|(n, _)| n.starts_with("electra.embeddings.")).map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        let generator: Vec<(String, Tensor)> = generator.into_iter().map(|(n, t)| (n["generator.".len()..].to_owned(), t)).chain(shared).collect();
        write_folder(out, bert_config(&pair.discriminator, "ElectraForPreTraining", &extra), &discriminator, &tok, bert_inputs(&pair.discriminator))?;
        write_folder(&out.join("generator"), bert_config(&pair.generator, "ElectraForMaskedLM", &extra), &generator, &tok, bert_inputs(&pair.generator))?;
        return Ok(dir);
    }
    let arch = family_architecture(model.model_type(), arch);
    let (config, inputs) = match &model {
        ModelSpec::Bert { config: bert, .. } => (bert_config(bert, &arch, &extra), bert_inputs(bert)),
        // Every switch is written (the thetas under both names, so transformers 4 and 5
        // read them alike).
        ModelSpec::ModernBert { config: m } => {
            let mut config = serde_json::to_value(m).expect("a ModernBERT config serializes");
            let obj = config.as_object_mut().expect("a struct serializes to an object");
            obj.insert("architectures".into(), json!([arch]));
            obj.insert("tie_word_embeddings".into(), json!(true));
            if let Some(m) = extra.as_object() {
                obj.extend(m.clone());
            }
            // Its config's special ids default to ModernBERT's own vocabulary's: say the
            // tokenizer's.
            let ids = tok.special_ids();
            for (key, id) in [("cls_token_id", ids.cls), ("bos_token_id", ids.cls), ("sep_token_id", ids.sep), ("eos_token_id", ids.sep), ("pad_token_id", ids.pad)] {
                obj.insert(key.into(), json!(id));
            }
            (config, tokenizer::Inputs { model_type: "modernbert", max_length: m.max_position_embeddings, token_types: false })
        }
        ModelSpec::Glm { .. } | ModelSpec::Electra { .. } => return Err(ExportError::Glm),
    };
    write_folder(out, config, &tensors, &tok, inputs)?;
    Ok(dir)
}

/// What a BERT-family model reads: its type, the longest input its positions hold, whether it
/// reads token types.
fn bert_inputs(bert: &crate::model::bert::BertConfig) -> tokenizer::Inputs<'_> {
    tokenizer::Inputs { model_type: &bert.model_type, max_length: bert.max_positions(), token_types: bert.type_vocab_size > 1 }
}

/// A BERT-family `config.json` (`model_type` `bert`, `roberta`, `xlm-roberta` or `electra`)
/// for `arch`, with the task head's `extra` keys.
fn bert_config(bert: &crate::model::bert::BertConfig, arch: &str, extra: &Value) -> Value {
    let mut config = serde_json::to_value(bert).expect("a BERT config serializes");
    let obj = config.as_object_mut().expect("a struct serializes to an object");
    obj.insert("model_type".into(), json!(bert.model_type));
    if bert.is_electra() {
        // `ElectraConfig` defaults to 128: always say it.
        obj.insert("embedding_size".into(), json!(bert.embedding_width()));
    }
    obj.insert("hidden_act".into(), json!("gelu"));
    obj.insert("position_embedding_type".into(), json!("absolute"));
    obj.insert("architectures".into(), json!([arch]));
    obj.insert("tie_word_embeddings".into(), json!(true));
    if let Some(m) = extra.as_object() {
        obj.extend(m.clone());
    }
    config
}

/// Writes `config.json`, the tensors as `model.safetensors`, `tokenizer.json` and
/// `tokenizer_config.json` into `out`.
fn write_folder(out: &Path, config: Value, tensors: &[(String, Tensor)], tok: &TextTokenizer, inputs: tokenizer::Inputs<'_>) -> Result<(), ExportError> {
    if out.exists() && !out.is_dir() {
        return Err(ExportError::Folder { path: out.to_owned(), source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a file of that name exists") });
    }
    std::fs::create_dir_all(out).map_err(|source| ExportError::Folder { path: out.to_owned(), source })?;
    let write_json = |name: &str, value: &Value| {
        let path = out.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(value).expect("JSON serializes")).map_err(crate::files::FileError::at(&path))
    };
    write_json("config.json", &config)?;
    write_safetensors(tensors, &out.join("model.safetensors"))?;
    let (framed, tokenizer_config) = tokenizer::hf_tokenizer_files(tok, inputs);
    let saved = out.join("tokenizer.json");
    framed.save(&saved, true).map_err(|source| ExportError::Tokenizer { path: saved.clone(), source })?;
    write_json("tokenizer_config.json", &tokenizer_config)?;
    Ok(())
}
