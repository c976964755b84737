//! Sequence-to-sequence fine-tuning of a GLM as blank infilling, the layout of THUDM/GLM's
//! `finetune_glm.py` for summarisation and question generation: Part A is `[CLS]`, the source
//! and `[gMASK]`; Part B is `[sop]` and the target at the `[gMASK]`'s position (block
//! positions 1, 2, ...); the targets are the target and `[eop]`, and only Part B is scored: the
//! pre-training objective itself, with the pre-trained output layer and no new weights.
//!
//! Held-out batches are also decoded with `[generate]` (from Part A alone) and scored by
//! ROUGE-1/2/L against the first reference (Google's `rouge-score`) and by SQuAD exact match and
//! token F1 against every reference.
//!
//! Data: JSONL with `task.source_field` and `task.target_field` (a string, or a list of
//! references whose first one trains); sources longer than `train.max_seq_len -
//! task.max_target_len - 2` tokens and targets longer than `task.max_target_len - 1` are cut
//! from the end, counted in the run's start line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use tch::{nn, Device, Kind, Reduction, Tensor};

use super::cloze::find_glm_ids;
use super::{first, to_i64s, Encoded, HfHead, Predictor, Scorer, Split, Task, TaskContext, TaskError, TaskKind, TaskModel};
use crate::batch::{HostBatch, IGNORE};
use crate::data::labelled::TaskExample;
use crate::data::tokenize::TextTokenizer;
use crate::decode::DecodeSettings;
use crate::files::FileError;
use crate::finetune::data::{jsonl_values, BadRecords, TaskDataError};
use crate::finetune::metrics::SquadScore;
use crate::finetune::rouge::RougeTotals;
use crate::masking::glm::GlmIds;
use crate::model::glm::{Glm, GlmConfig};
use crate::model::glm_fill::{check_decode_memory, fill_blanks_many, FillIds};
use crate::objective::{DeviceBatch, Direction, EvalMetrics, ModelSpec};

/// The registry entry.
pub const KIND: TaskKind = TaskKind {
    name: "generation",
    reuses_pretraining_head: true,
    on_glm: true,
    metrics: &[("rougeL", Direction::Higher), ("rouge1", Direction::Higher), ("rouge2", Direction::Higher), ("f1", Direction::Higher), ("exact_match", Direction::Higher)],
    own_keys: &["source_field", "target_field", "max_target_len", "label_smoothing"],
    inference_keys: &[],
    train_defaults: &[],
    build,
};

fn build(cx: &TaskContext) -> Result<Box<dyn Task>, TaskError> {
    let ModelSpec::Glm { config: glm } = cx.encoder else {
        return Err(TaskError::config("init.checkpoint: task.kind = \"generation\" generates with a GLM: start from a GLM pre-training checkpoint"));
    };
    let c = cx.config;
    let mut problems = cx.generate.problems();
    if c.max_target_len < 2 || c.max_target_len.saturating_add(3) > cx.max_seq_len {
        problems.push(format!("task.max_target_len: must be in [2, train.max_seq_len - 3 = {}] (Part A needs [CLS], a source token and [gMASK])", cx.max_seq_len.saturating_sub(3)));
    }
    if cx.generate.max_new_tokens.saturating_add(1) >= usize::try_from(glm.max_sequence_length).unwrap_or(0) {
        problems.push(format!("generate.max_new_tokens: the model has {} block positions", glm.max_sequence_length - 1));
    }
    if let Err(e) = check_decode_memory(glm, cx.max_seq_len.saturating_sub(c.max_target_len), &cx.generate) {
        problems.push(e.to_string());
    }
    let smoothing = super::label_smoothing(c);
    if let Err(e) = &smoothing {
        problems.extend(e.problems());
    }
    if !problems.is_empty() {
        return Err(TaskError::Config(problems));
    }
    Ok(Box::new(Generation {
        ids: find_glm_ids(&cx.tokenizer)?,
        tokenizer: cx.tokenizer.clone(),
        glm: glm.clone(),
        source_field: c.source_field.clone(),
        target_field: c.target_field.clone(),
        source_budget: cx.max_seq_len - c.max_target_len - 2,
        target_budget: c.max_target_len - 1,
        settings: cx.generate.clone(),
        label_smoothing: smoothing?,
    }))
}

/// One source with its references.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRecord {
    /// The source text.
    pub source: String,
    /// Reference targets (the first trains; empty when predicting without them).
    pub targets: Vec<String>,
    /// What an output line names it by: the record's `id`, else its line number.
    pub id: Value,
}

/// The sources and targets of a JSONL file; a record without a source (or, unless
/// predicting, without a non-empty target) is bad.
///
/// # Errors
/// An unreadable file, a file without records, or a bad record under `fail`.
pub fn read_pairs(path: &Path, source: &str, target: &str, need_target: bool, bad: &mut BadRecords) -> Result<Vec<PairRecord>, TaskDataError> {
    let bytes = std::fs::read(path).map_err(FileError::at(path))?;
    let mut out = Vec::new();
    for (line, v) in jsonl_values(path, &bytes, bad)? {
        let Some(src) = v.get(source).and_then(Value::as_str) else {
            bad.judge(path, line, "missing_field", format!("no source field `{source}` (a string)"))?;
            continue;
        };
        let targets: Option<Vec<String>> = match v.get(target) {
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Array(a)) => a.iter().map(|x| x.as_str().map(str::to_owned)).collect(),
            None if !need_target => Some(Vec::new()),
            _ => None,
        };
        let targets = match targets {
            Some(t) if !need_target || t.first().is_some_and(|s| !s.trim().is_empty()) => t,
            _ => {
                bad.judge(path, line, "missing_field", format!("no target field `{target}` (a non-empty string, or a list of strings)"))?;
                continue;
            }
        };
        let id = v.get("id").cloned().unwrap_or_else(|| json!(line));
        out.push(PairRecord { source: src.to_owned(), targets, id });
    }
    if out.is_empty() {
        return Err(bad.empty(path));
    }
    Ok(out)
}

/// Sequence-to-sequence generation with a GLM.
pub struct Generation {
    ids: GlmIds,
    tokenizer: Arc<TextTokenizer>,
    glm: GlmConfig,
    source_field: String,
    target_field: String,
    source_budget: usize,
    target_budget: usize,
    settings: DecodeSettings,
    /// `task.label_smoothing`.
    label_smoothing: f64,
}

/// How many sources and targets were cut.
#[derive(Debug, Default)]
struct Cuts {
    sources: usize,
    targets: usize,
}

impl Generation {
    /// Part A `[CLS] source [gMASK]` with the target's tokens as labels.
    fn encode(&self, r: &PairRecord, cuts: &mut Cuts) -> Result<TaskExample, TaskDataError> {
        let mut src = self.tokenizer.encode(&r.source)?.ids;
        if src.len() > self.source_budget {
            src.truncate(self.source_budget);
            cuts.sources += 1;
        }
        let mut tgt = match r.targets.first() {
            Some(t) => self.tokenizer.encode(t)?.ids,
            None => Vec::new(),
        };
        if tgt.len() > self.target_budget {
            tgt.truncate(self.target_budget);
            cuts.targets += 1;
        }
        let ids: Vec<u32> = std::iter::once(self.ids.cls).chain(src).chain([self.ids.gmask]).collect();
        let blank = ids.len() - 1;
        Ok(TaskExample { types: vec![0; ids.len()], ids, labels: tgt.into_iter().map(i64::from).collect(), word_starts: vec![Some(blank)], ..Default::default() })
    }

    fn text(&self, tokens: &[i64]) -> String {
        self.text_of().row(tokens)
    }

    fn text_of(&self) -> TextOf {
        TextOf { tokenizer: self.tokenizer.clone() }
    }
}

impl Task for Generation {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    /// GLM's output layer on Part B's positions.
    fn head_flops(&self, b: &HostBatch, d: &crate::objective::flops::Dims) -> f64 {
        d.lm_head(b.masked_positions.len())
    }
    fn loss_name(&self) -> &'static str {
        "gen"
    }
    fn labels(&self) -> &[String] {
        &[]
    }

    fn read(&mut self, files: &[PathBuf], split: Split, limit: usize, bad: &mut BadRecords) -> Result<Encoded, TaskError> {
        let mut records = Vec::new();
        for f in files {
            records.extend(read_pairs(f, &self.source_field, &self.target_field, split != Split::Predict, bad)?);
        }
        let records = first(records, limit);
        let mut cuts = Cuts::default();
        let mut examples = Vec::with_capacity(records.len());
        for r in &records {
            let mut e = self.encode(r, &mut cuts)?;
            match split {
                Split::Eval => e.references = Some(Arc::new(r.targets.clone())),
                Split::Predict => e.shown = Some(Arc::new(json!({ "id": r.id }))),
                Split::Train => {}
            }
            examples.push(e);
        }
        let name = split.noun();
        let mut notes = Vec::new();
        if cuts.sources > 0 {
            notes.push(format!("{} of {} {name} sources cut to {} tokens", cuts.sources, records.len(), self.source_budget));
        }
        if cuts.targets > 0 {
            notes.push(format!("{} of {} {name} targets cut to {} tokens", cuts.targets, records.len(), self.target_budget));
        }
        Ok(Encoded { examples, records: records.len(), notes })
    }

    /// Rows `Part A + [sop] + target`, positions and block positions as GLM's; the scored
    /// places are Part B's, their labels the target and `[eop]`.
    fn collate(&self, examples: &[&TaskExample]) -> HostBatch {
        let longest = examples.iter().map(|e| e.ids.len() + 1 + e.labels.len()).max().unwrap_or(1);
        let padded = HostBatch::padded(examples.len(), longest, self.tokenizer.special_ids().pad);
        let t = padded.seq_len;
        let rows = examples.len();
        let mut b = HostBatch { position_ids: vec![0; rows * t], block_position_ids: vec![0; rows * t], n_examples: rows, ..padded };
        for (r, e) in examples.iter().enumerate() {
            let (base, a) = (r * t, e.ids.len());
            for (j, &id) in e.ids.iter().enumerate() {
                b.input_ids[base + j] = id as i64;
                b.position_ids[base + j] = j as i64;
            }
            let inputs = std::iter::once(self.ids.sop as i64).chain(e.labels.iter().copied());
            let targets = e.labels.iter().copied().chain([self.ids.eop as i64]);
            for (j, (input, target)) in inputs.zip(targets).enumerate() {
                b.input_ids[base + a + j] = input;
                b.position_ids[base + a + j] = a as i64 - 1;
                b.block_position_ids[base + a + j] = j as i64 + 1;
                b.masked_positions.push((base + a + j) as i64);
                b.masked_labels.push(target);
            }
            let len = a + 1 + e.labels.len();
            b.prefix_len.push(a as i64);
            b.lengths.push(len as i64);
            b.n_tokens += len;
            if let Some(refs) = &e.references {
                b.references.push(refs.clone());
            }
        }
        b.n_scored = b.masked_positions.len();
        b
    }

    fn build(&self, root: &nn::Path) -> Box<dyn TaskModel> {
        let ids = FillIds { sop: self.ids.sop, eop: self.ids.eop, pad: self.tokenizer.special_ids().pad };
        Box::new(GlmGenerator { glm: Glm::new(root, &self.glm), ids, settings: self.settings.clone() })
    }

    fn loss(&self, outputs: &Tensor, batch: &DeviceBatch) -> Tensor {
        outputs.cross_entropy_loss::<Tensor>(&batch.masked_labels, None, Reduction::Sum, IGNORE, self.label_smoothing)
    }

    fn per(&self) -> crate::objective::Per {
        crate::objective::Per::Target
    }

    fn scorer(&self) -> Box<dyn Scorer> {
        Box::new(GenerationScorer { task: self.text_of(), rouge: RougeTotals::default(), squad: SquadScore::default() })
    }

    fn headline(&self) -> &'static [&'static str] {
        &["rouge1", "rouge2", "rougeL", "exact_match", "f1", "loss"]
    }

    fn predictor(&self) -> Box<dyn Predictor> {
        Box::new(Outputs(self.text_of()))
    }

    fn explain(&self, batch: &HostBatch, row: usize) -> String {
        let target: Vec<i64> = super::scored_in_row(batch, row).into_iter().map(|(_, l)| l).filter(|&l| l != self.ids.eop as i64).collect();
        format!("Part B generates `{}` then [eop]", self.text(&target))
    }

    fn export(&self) -> Result<HfHead, TaskError> {
        Err(TaskError::NoExport("a GLM generation model has no Hugging Face `transformers` architecture to export to".into()))
    }

    /// Generation adds no weights: the pre-trained GLM's output layer generates.
    fn check_start(&self, missing: &[String]) -> Result<(), crate::objective::IncompleteStart> {
        super::all_weights_from_start(missing, "generation reuses the pre-trained GLM's output layer", "start from a GLM pre-training checkpoint")
    }
}

/// What turns generated ids into text (shared by the scorer and the predictor).
struct TextOf {
    tokenizer: Arc<TextTokenizer>,
}

impl TextOf {
    /// The text of one row's tokens (-1: none); a decoder failure leaves the tokens visible
    /// rather than losing the line.
    fn row(&self, generated: &[i64]) -> String {
        let ids: Vec<u32> = generated.iter().filter(|&&t| t >= 0).map(|&t| t as u32).collect();
        self.tokenizer.decode(&ids).unwrap_or_else(|_| ids.iter().map(|&i| self.tokenizer.id_to_token(i)).collect::<Vec<_>>().join(" "))
    }

    /// Each row's outputs, best (or first) first: `[rows, longest]`, or `[rows, outputs,
    /// longest]` with `generate.num_return_sequences` > 1 (an output with no token is empty).
    fn rows(&self, generated: &Tensor) -> Vec<Vec<String>> {
        let size = generated.size();
        let (rows, each, l) = match size[..] {
            [r, l] => (r as usize, 1, l as usize),
            [r, n, l] => (r as usize, n as usize, l as usize),
            _ => unreachable!("generated ids are [rows, longest] or [rows, outputs, longest]"),
        };
        let flat = to_i64s(generated);
        (0..rows).map(|r| (0..each).map(|c| self.row(&flat[(r * each + c) * l..(r * each + c + 1) * l])).collect()).collect()
    }
}

struct GenerationScorer {
    task: TextOf,
    rouge: RougeTotals,
    squad: SquadScore,
}

impl Scorer for GenerationScorer {
    fn add(&mut self, generated: &Tensor, batch: &HostBatch) {
        // The best (or first) output is the one scored.
        for (outputs, refs) in self.task.rows(generated).iter().zip(&batch.references) {
            let text = &outputs[0];
            self.rouge.add(refs.first().map_or("", String::as_str), text);
            self.squad.add(text, &refs.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    fn finish(self: Box<Self>) -> EvalMetrics {
        let r = self.rouge.percent();
        let (em, f1) = self.squad.percent();
        let mut m = EvalMetrics::default();
        for (k, v) in [("rouge1", r.rouge1), ("rouge2", r.rouge2), ("rougeL", r.rouge_l), ("exact_match", em), ("f1", f1), ("examples", self.squad.questions() as f64)] {
            m.values.insert(k.into(), v);
        }
        m
    }
}

/// `{"id", "output"}` per source, and `"outputs"` (every one, best first) when several.
struct Outputs(TextOf);

impl Predictor for Outputs {
    fn add(&mut self, generated: &Tensor, _batch: &HostBatch, examples: &[&TaskExample]) -> Vec<Value> {
        self.0
            .rows(generated)
            .into_iter()
            .zip(examples)
            .map(|(outputs, e)| {
                let mut line = json!({ "id": e.shown.as_ref().map_or(Value::Null, |s| s["id"].clone()), "output": outputs[0] });
                if generated.dim() == 3 {
                    line["outputs"] = json!(outputs);
                }
                line
            })
            .collect()
    }
}

/// The GLM, teacher-forced on Part B for the loss, decoding from Part A to generate.
struct GlmGenerator {
    glm: Glm,
    ids: FillIds,
    settings: DecodeSettings,
}

impl TaskModel for GlmGenerator {
    /// Logits `[scored, vocab]` at Part B's places.
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        let Some((pos, block, prefix)) = &b.glm else {
            return Tensor::zeros([0, 1], (Kind::Float, b.input_ids.device()));
        };
        let h = self.glm.forward(&b.input_ids, pos, block, prefix, train);
        self.glm.logits(&h.view([-1, h.size()[2]]).index_select(0, &b.masked_positions))
    }

    /// Each row's Part A (its `[gMASK]` last) filled with `[generate]`: the new tokens, `[eop]`
    /// included where a row ended.
    fn generate(&self, b: &DeviceBatch) -> Option<Tensor> {
        let (_, _, prefix) = b.glm.as_ref()?;
        let (rows, t) = b.input_ids.size2().expect("[rows, T]");
        let ids = to_i64s(&b.input_ids);
        let texts: Vec<(Vec<i64>, Vec<usize>)> = to_i64s(prefix).iter().enumerate().map(|(r, &a)| (ids[r * t as usize..r * t as usize + a as usize].to_vec(), vec![a as usize - 1])).collect();
        let filled = fill_blanks_many(&self.glm, &texts, self.ids, &self.settings, b.input_ids.device());
        // The end token stays in (decoding drops it as special): it was generated too.
        let new: Vec<Vec<Vec<u32>>> = filled.iter().map(|fillings| fillings.iter().map(|f| f[0].tokens.iter().copied().chain(f[0].ended.then_some(self.ids.eop)).collect()).collect()).collect();
        let longest = new.iter().flatten().map(Vec::len).max().unwrap_or(0).max(1);
        let n = self.settings.num_return_sequences.max(1);
        let mut out = vec![-1i64; rows as usize * n * longest];
        for (r, fillings) in new.iter().enumerate() {
            for (c, toks) in fillings.iter().enumerate().take(n) {
                for (j, &tok) in toks.iter().enumerate() {
                    out[(r * n + c) * longest + j] = tok as i64;
                }
            }
        }
        let shape: Vec<i64> = if n == 1 { vec![rows, longest as i64] } else { vec![rows, n as i64, longest as i64] };
        Some(Tensor::from_slice(&out).view(shape.as_slice()).to_device(Device::Cpu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BadRecordPolicy, GlmObjectiveConfig, TaskConfig};
    use crate::masking::glm::{prefix_lm, GlmSettings};

    fn task(max_seq_len: usize, max_target_len: usize) -> (Box<dyn Task>, GlmIds) {
        let mut tok = TextTokenizer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sotu/tokenizer.json"), None).unwrap();
        let ids = crate::finetune::tasks::cloze::glm_ids(&mut tok).unwrap();
        let glm = GlmConfig { vocab_size: tok.vocab_size() as i64, hidden_size: 8, num_layers: 1, num_attention_heads: 2, intermediate_size: 16, max_sequence_length: 65, hidden_dropout: 0.0, attention_dropout: 0.0, layernorm_epsilon: 1e-5, init_method_std: 0.02, explicit_attention: false };
        let config = TaskConfig { kind: Some("generation".into()), max_target_len, ..Default::default() };
        let cx = TaskContext { config: &config, tokenizer: Arc::new(tok), encoder: &ModelSpec::Glm { config: glm }, max_seq_len, generate: DecodeSettings::default() };
        ((KIND.build)(&cx).unwrap(), ids)
    }

    fn write(lines: &[&str]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, lines.join("\n").as_bytes()).unwrap();
        f
    }

    /// A collated row is exactly pre-training's prefix-LM layout (`prefix_lm`) of
    /// `[CLS] source target [eop]` generating the target and `[eop]`: the same ids, positions,
    /// block positions, Part A length and scored targets.
    #[test]
    fn a_row_is_the_pre_training_prefix_lm_layout() {
        let (mut t, ids) = task(64, 16);
        let f = write(&[r#"{"source": "the state of our union is strong", "target": ["we will win", "victory"]}"#]);
        let mut skipped = Vec::new();
        let enc = t.read(&[f.path().to_owned()], Split::Eval, 0, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut skipped }).unwrap();
        let e = &enc.examples[0];
        assert_eq!(e.references.as_deref(), Some(&vec!["we will win".to_owned(), "victory".to_owned()]));
        let b = t.collate(&[e]);
        let x: Vec<u32> = e.ids[..e.ids.len() - 1].iter().copied().chain(e.labels.iter().map(|&l| l as u32)).chain([ids.eop]).collect();
        let settings = GlmSettings { blanks: GlmObjectiveConfig::default(), ids };
        let want = prefix_lm(&x, e.labels.len() + 1, &settings);
        let n = want.input_ids.len();
        assert_eq!(b.lengths, vec![n as i64]);
        assert_eq!(b.input_ids[..n], want.input_ids.iter().map(|&i| i as i64).collect::<Vec<_>>()[..]);
        assert_eq!(b.position_ids[..n], want.position_ids[..]);
        assert_eq!(b.block_position_ids[..n], want.block_position_ids[..]);
        assert_eq!(b.prefix_len, vec![want.sep as i64]);
        let scored: Vec<i64> = want.labels.iter().copied().filter(|&l| l != IGNORE).collect();
        assert_eq!(b.masked_labels, scored);
        assert_eq!(b.masked_positions, (want.sep as i64..n as i64).collect::<Vec<_>>());
        assert_eq!(b.references.len(), 1);
    }

    /// Long sources and targets are cut from the end and counted; a record without a target
    /// is bad (with its line) unless predicting, where the line's `id` (else its line number)
    /// is kept for the output.
    #[test]
    fn sources_and_targets_are_cut_and_counted_and_bad_records_named() {
        let (mut t, _) = task(16, 6);
        let long = "one two three four five six seven eight nine ten eleven twelve thirteen";
        let f = write(&[&format!(r#"{{"source": "{long}", "target": "{long}"}}"#), r#"{"source": "short", "target": "ok"}"#, r#"{"source": "no target"}"#]);
        let mut skipped = Vec::new();
        let mut bad = BadRecords { policy: BadRecordPolicy::Skip, skipped: &mut skipped };
        let enc = t.read(&[f.path().to_owned()], Split::Train, 0, &mut bad).unwrap();
        assert_eq!(enc.records, 2);
        assert_eq!(enc.examples[0].ids.len(), 16 - 6, "[CLS] + 8 source tokens + [gMASK]");
        assert_eq!(enc.examples[0].labels.len(), 5, "target + [eop] within max_target_len");
        assert_eq!(enc.notes, vec!["1 of 2 training sources cut to 8 tokens".to_owned(), "1 of 2 training targets cut to 5 tokens".to_owned()]);
        assert_eq!((skipped.len(), skipped[0].line), (1, 3));
        let e = crate::error_chain(&t.read(&[f.path().to_owned()], Split::Eval, 0, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).unwrap_err());
        assert!(e.contains(":3: no target field `target`"), "{e}");
        let f = write(&[r#"{"source": "a", "id": "q1"}"#, r#"{"source": "b"}"#]);
        let enc = t.read(&[f.path().to_owned()], Split::Predict, 0, &mut BadRecords { policy: BadRecordPolicy::Fail, skipped: &mut Vec::new() }).unwrap();
        let ids: Vec<Value> = enc.examples.iter().map(|e| e.shown.as_ref().unwrap()["id"].clone()).collect();
        assert_eq!(ids, vec![json!("q1"), json!(2)]);
    }

    #[test]
    fn a_bert_encoder_and_impossible_budgets_are_refused() {
        let tok = Arc::new(TextTokenizer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sotu/tokenizer.json"), None).unwrap());
        let config = TaskConfig { kind: Some("generation".into()), ..Default::default() };
        let bert = ModelSpec::Bert { config: Default::default(), pair_head: false };
        let e = (KIND.build)(&TaskContext { config: &config, tokenizer: tok.clone(), encoder: &bert, max_seq_len: 64, generate: DecodeSettings::default() }).err().unwrap();
        assert!(e.to_string().contains("generates with a GLM"), "{e}");
        let glm = GlmConfig { vocab_size: 10, hidden_size: 8, num_layers: 1, num_attention_heads: 2, intermediate_size: 16, max_sequence_length: 33, hidden_dropout: 0.0, attention_dropout: 0.0, layernorm_epsilon: 1e-5, init_method_std: 0.02, explicit_attention: false };
        let config = TaskConfig { kind: Some("generation".into()), max_target_len: 40, ..Default::default() };
        let e = (KIND.build)(&TaskContext { config: &config, tokenizer: tok, encoder: &ModelSpec::Glm { config: glm }, max_seq_len: 32, generate: DecodeSettings { max_new_tokens: 40, num_beams: 0, ..Default::default() } }).err().unwrap().to_string();
        for key in ["task.max_target_len", "generate.max_new_tokens", "generate.num_beams"] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }
}
