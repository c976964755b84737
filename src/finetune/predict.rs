//! `pretune predict --checkpoint DIR --input FILE [--output FILE]`: JSONL predictions from a
//! fine-tuned checkpoint (a run's best by default), in batches, whatever the task: the task's
//! predictor writes each line (label and probabilities for classification and cloze, a score
//! for regression, word-level tags for NER, `{"id", "answer", "score", "start"}` per question
//! for QA).

use std::io::Write;
use std::path::{Path, PathBuf};

use tch::{nn, Device};

use super::data::BadRecords;
use super::drive::{open, DriveError, Inference, Opened};
use super::task::{TaskNet, Throughput};
use super::tasks::Split;
use crate::config::BadRecordPolicy;
use crate::objective::DeviceBatch;

/// What `predict` wrote.
#[derive(Debug, Clone)]
pub struct Predicted {
    /// The checkpoint used (a run's best when given a run).
    pub checkpoint: PathBuf,
    /// Lines written.
    pub lines: usize,
    /// A generating task's new tokens and the time they took.
    pub throughput: Throughput,
    /// What reading the input changed (`3 of 40 input texts cut to 128 tokens`).
    pub notes: Vec<String>,
}

/// Writes predictions for `input` to `output` (stdout when `None`) with the model where `run`
/// says; `generate` overrides the run's `[generate]` (`generate.KEY=VALUE`) for a generating
/// task.
///
/// # Errors
/// [`DriveError`]: no task checkpoint, an unreadable input, a bad record, an unwritable
/// output, a bad override.
pub fn predict(checkpoint: &Path, input: &Path, output: Option<&Path>, generate: &[String], run: Inference) -> Result<Predicted, DriveError> {
    let device = run.device;
    let Opened { dir, mut task, .. } = open(checkpoint, "predict", generate)?;
    let encoded = task.read(&[input.to_owned()], Split::Predict, 0, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).map_err(|source| DriveError::Input { path: input.to_owned(), source })?;
    let task: std::sync::Arc<dyn super::tasks::Task> = std::sync::Arc::from(task);
    let mut vs = nn::VarStore::new(device);
    let model = TaskNet::new(&vs.root(), task.clone());
    vs.load(dir.join("model.safetensors")).map_err(|e| DriveError::Weights { dir: dir.clone(), source: e })?;
    let out_path = output.map_or_else(|| PathBuf::from("-"), Path::to_owned);
    let write_err = |e: std::io::Error| DriveError::Write { path: out_path.clone(), source: e };
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(write_err)?)),
        None => Box::new(std::io::stdout().lock()),
    };
    let _guard = tch::no_grad_guard();
    let mut predictor = task.predictor();
    let mut n = 0;
    let mut throughput = Throughput::default();
    for chunk in encoded.examples.chunks(run.batch_size.max(1)) {
        let examples: Vec<_> = chunk.iter().collect();
        let b = task.collate(&examples);
        let db = DeviceBatch::new(&b, device);
        let outputs = match throughput.generate(model.model(), &db) {
            Some(generated) => generated,
            None => model.outputs(&db, false),
        }
        .to_device(Device::Cpu);
        for line in predictor.add(&outputs, &b, &examples) {
            writeln!(out, "{line}").map_err(write_err)?;
            n += 1;
        }
    }
    for line in predictor.finish() {
        writeln!(out, "{line}").map_err(write_err)?;
        n += 1;
    }
    out.flush().map_err(write_err)?;
    Ok(Predicted { checkpoint: dir, lines: n, throughput, notes: encoded.notes })
}
