//! Cloze fine-tuning: the task is put into the pre-training format, so fine-tuning reuses the
//! pre-training objective and its output layer unchanged, with no new weights.
//!
//! A pattern turns a text into a sequence with one blank (`"{text} It was [MASK]."`); each
//! label has verbalizer text, and the label's score is the summed log-probability of its
//! verbalizer's tokens in the blank. Cross-entropy over the labels' scores trains it.
//!
//! * GLM (Du et al. 2022, "GLM", §2.3 fine-tuning as blank infilling): for every candidate answer `a_1..a_m` one row holds
//!   `Part A + [sop] + a_1..a_{m-1}` with 2-D positions (the blank's position; block positions
//!   `1..m`), scored at the Part B positions: for single-token answers the logit at `[sop]`.
//! * BERT (PET, Schick & Schütze 2021): the MLM head reads the blank, written as as many
//!   `[MASK]` tokens as the verbalizer has tokens; the sequence ends with `[SEP]` as in
//!   pre-training. Candidates of the same length share a row, so single-token verbalizers
//!   cost one row per example.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use tch::{nn, Kind, Tensor};

use super::classification::{class_loss, label_maps, ClassScorer, Probabilities};
use super::{read_texts, shown_text, Encoded, HfHead, Predictor, Scorer, Split, Task, TaskContext, TaskError, TaskKind, TaskModel};
use crate::batch::{HostBatch, IGNORE};
use crate::data::labelled::TaskExample;
use crate::data::tokenize::TextTokenizer;
use crate::finetune::data::{BadRecords, ClsRecord, Fields, LabelSet, TaskDataError};
use crate::masking::glm::GlmIds;
use crate::model::bert::BertForMaskedLM;
use crate::model::modernbert::ModernBertForMaskedLM;
use crate::model::glm::Glm;
use crate::objective::{DeviceBatch, Direction, ModelSpec};

/// The pattern and verbalizers, tokenized once.
#[derive(Debug, Clone, PartialEq)]
pub struct ClozeSpec {
    /// Pattern with `{text}` and one `[MASK]`.
    pub pattern: String,
    /// Answer tokens per label id.
    pub answers: Vec<Vec<u32>>,
    /// The pre-trained model that fills the blank.
    pub model: ClozeModel,
}

/// Which pre-training objective a cloze task reuses, with the special tokens it needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClozeModel {
    /// GLM blank infilling.
    Glm(GlmIds),
    /// BERT's MLM head.
    Bert {
        /// `[CLS]`
        cls: u32,
        /// `[MASK]`
        mask: u32,
        /// `[SEP]`
        sep: u32,
    },
}

impl ClozeModel {
    /// BERT's ids from its tokenizer.
    pub fn bert(tokenizer: &TextTokenizer) -> Self {
        let ids = tokenizer.special_ids();
        ClozeModel::Bert { cls: ids.cls, mask: ids.mask, sep: ids.sep }
    }

    fn cls_mask(&self) -> (u32, u32) {
        match *self {
            ClozeModel::Glm(g) => (g.cls, g.mask),
            ClozeModel::Bert { cls, mask, .. } => (cls, mask),
        }
    }
}

/// GLM's special tokens in a BERT tokenizer: the same tokens, added in the same order as in
/// pre-training, get the same ids.
///
/// # Errors
/// The tokenizer refuses them (with the key to blame).
pub fn glm_ids(tokenizer: &mut TextTokenizer) -> Result<GlmIds, TaskError> {
    let added = tokenizer.ensure_special(&["[sop]", "[eop]", "[sMASK]", "[gMASK]"]).map_err(|e| TaskError::config(format!("tokenizer.path: {}", crate::error_chain(&e))))?;
    let ids = tokenizer.special_ids();
    Ok(GlmIds { cls: ids.cls, mask: ids.mask, sop: added[0], eop: added[1], smask: added[2], gmask: added[3] })
}

/// Whether the pattern has whitespace right before its blank (`is [MASK].`): then the answer
/// is a word after a space.
pub fn space_before(pattern: &str) -> bool {
    pattern.split_once("[MASK]").is_some_and(|(before, _)| before.ends_with(char::is_whitespace))
}

/// The verbalizers' tokens, in label order, as they are in running text: after a space when
/// the pattern has one before its blank (`space_before`), which a byte-level BPE writes into the
/// word's first token (`Ġgreat`, as RoBERTa saw `is great` in pre-training); WordPiece and
/// SentencePiece tokenizers mark word starts themselves.
///
/// # Errors
/// A label without a verbalizer, or one with no tokens (naming the key).
pub fn answers(tokenizer: &TextTokenizer, labels: &[String], verbalizers: &std::collections::BTreeMap<String, String>, space_before: bool) -> Result<Vec<Vec<u32>>, TaskError> {
    let mut answers = Vec::new();
    for l in labels {
        let text = verbalizers.get(l).ok_or_else(|| TaskError::config(format!("task.verbalizers: no verbalizer for label `{l}`")))?;
        let encoded = if space_before { tokenizer.encode_word(text.trim_start()) } else { tokenizer.encode(text) };
        let ids = encoded.map_err(|e| TaskError::config(format!("task.verbalizers.{l}: {}", crate::error_chain(&e))))?.ids;
        if ids.is_empty() {
            return Err(TaskError::config(format!("task.verbalizers.{l}: `{text}` has no tokens")));
        }
        answers.push(ids);
    }
    Ok(answers)
}

/// Builds the pattern of one record: `[CLS]` + pattern with the text in, the blank as one
/// `[MASK]` (BERT: then `[SEP]`); the text is cut from the end so that the longest answer
/// (GLM: its Part B; BERT: its `[MASK]` slots) still fits in `max_len`.
///
/// # Errors
/// Tokenization errors.
pub fn encode(tok: &TextTokenizer, rec: &ClsRecord, label: usize, spec: &ClozeSpec, max_len: usize) -> Result<TaskExample, TaskDataError> {
    let (before, after) = spec.pattern.split_once("[MASK]").unwrap_or((&spec.pattern, ""));
    // The space before the blank belongs to the answer's first token ([`answers`]): a
    // byte-level BPE would otherwise write it as a token of its own (`Ġ`) before the blank.
    let before = before.trim_end();
    let (b0, b1) = before.split_once("{text}").unwrap_or((before, ""));
    let (a0, a1) = after.split_once("{text}").unwrap_or((after, ""));
    let has_text_before = before.contains("{text}");
    let enc = |s: &str| -> Result<Vec<u32>, TaskDataError> { Ok(if s.trim().is_empty() { vec![] } else { tok.encode(s)?.ids }) };
    let mut text = tok.encode(&rec.text)?.ids;
    let (p0, p1, p2, p3) = (enc(b0)?, enc(b1)?, enc(a0)?, enc(a1)?);
    let longest = spec.answers.iter().map(Vec::len).max().unwrap_or(1);
    let fixed = 2 + p0.len() + p1.len() + p2.len() + p3.len() + longest;
    let room = max_len.saturating_sub(fixed).max(1);
    let cut = text.len() > room;
    text.truncate(room);
    let (cls, mask) = spec.model.cls_mask();
    let mut ids = vec![cls];
    if has_text_before {
        ids.extend(p0.iter().chain(&text).chain(&p1));
        ids.push(mask);
        ids.extend(&p2);
    } else {
        ids.extend(&p0);
        ids.push(mask);
        ids.extend(p2.iter().chain(&text).chain(&p3));
    }
    let blank = ids.iter().position(|&t| t == mask).expect("the pattern's blank");
    if let ClozeModel::Bert { sep, .. } = spec.model {
        ids.push(sep);
    }
    Ok(TaskExample { types: vec![0; ids.len()], ids, labels: vec![label as i64], target: 0.0, word_starts: vec![Some(blank)], window: None, shown: None, references: None, cut })
}

/// The rows of a batch: GLM's [`collate_glm`] or BERT's [`collate_bert`].
pub fn collate(examples: &[&TaskExample], spec: &ClozeSpec, pad: u32) -> HostBatch {
    match spec.model {
        ClozeModel::Glm(ids) => collate_glm(examples, spec, ids, pad),
        ClozeModel::Bert { mask, .. } => collate_bert(examples, spec, mask, pad),
    }
}

/// One row per (example, distinct answer length): the blank written as that many `[MASK]`s.
/// `masked_positions` / `masked_labels` hold every answer token's `[MASK]` and token,
/// `target_rows` its candidate (`example * candidates + label`), `row_labels` the gold label.
pub fn collate_bert(examples: &[&TaskExample], spec: &ClozeSpec, mask: u32, pad: u32) -> HostBatch {
    let k = spec.answers.len();
    let mut lens: Vec<usize> = spec.answers.iter().map(Vec::len).collect();
    lens.sort_unstable();
    lens.dedup();
    let rows = examples.len() * lens.len();
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1) + lens.last().copied().unwrap_or(1) - 1;
    let mut b = HostBatch {
        row_labels: examples.iter().map(|e| e.labels.first().copied().unwrap_or(IGNORE)).collect(),
        n_examples: examples.len(),
        candidates: k,
        ..HostBatch::padded(rows, longest, pad)
    };
    let t = b.seq_len;
    for (i, e) in examples.iter().enumerate() {
        let blank = e.word_starts.first().copied().flatten().unwrap_or(0);
        for (li, &m) in lens.iter().enumerate() {
            let r = i * lens.len() + li;
            let row = e.ids[..blank].iter().copied().chain(std::iter::repeat_n(mask, m)).chain(e.ids[blank + 1..].iter().copied());
            let mut n = 0;
            for (j, id) in row.enumerate() {
                b.input_ids[r * t + j] = id as i64;
                n += 1;
            }
            b.lengths.push(n as i64);
            b.n_tokens += n;
            for (c, answer) in spec.answers.iter().enumerate().filter(|(_, a)| a.len() == m) {
                for (j, &target) in answer.iter().enumerate() {
                    b.masked_positions.push((r * t + blank + j) as i64);
                    b.masked_labels.push(target as i64);
                    b.target_rows.push((i * k + c) as i64);
                }
            }
        }
    }
    b.n_scored = b.masked_positions.len();
    b
}

/// One row per (example, candidate), padded, with GLM's 2-D positions and Part A lengths;
/// `masked_positions` / `masked_labels` hold every answer token's prediction place and token,
/// `target_rows` its row, `row_labels` the gold candidate per example.
pub fn collate_glm(examples: &[&TaskExample], spec: &ClozeSpec, ids: GlmIds, pad: u32) -> HostBatch {
    let k = spec.answers.len();
    let rows = examples.len() * k;
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1) + spec.answers.iter().map(Vec::len).max().unwrap_or(1);
    let padded = HostBatch::padded(rows, longest, pad);
    let t = padded.seq_len;
    let mut b = HostBatch {
        position_ids: vec![0; rows * t],
        block_position_ids: vec![0; rows * t],
        row_labels: examples.iter().map(|e| e.labels.first().copied().unwrap_or(IGNORE)).collect(),
        n_examples: examples.len(),
        candidates: k,
        ..padded
    };
    for (i, e) in examples.iter().enumerate() {
        let blank = e.word_starts.first().copied().flatten().unwrap_or(0) as i64;
        for (c, answer) in spec.answers.iter().enumerate() {
            let r = i * k + c;
            let base = r * t;
            let a = e.ids.len();
            for (j, &id) in e.ids.iter().enumerate() {
                b.input_ids[base + j] = id as i64;
                b.position_ids[base + j] = j as i64;
            }
            // Part B: [sop] a_1 .. a_{m-1}; the prediction at each place is the next answer token.
            for (j, &target) in answer.iter().enumerate() {
                let col = a + j;
                b.input_ids[base + col] = if j == 0 { ids.sop as i64 } else { answer[j - 1] as i64 };
                b.position_ids[base + col] = blank;
                b.block_position_ids[base + col] = j as i64 + 1;
                b.masked_positions.push((base + col) as i64);
                b.masked_labels.push(target as i64);
                b.target_rows.push(r as i64);
            }
            b.prefix_len.push(a as i64);
            b.lengths.push((a + answer.len()) as i64);
            b.n_tokens += a + answer.len();
        }
    }
    b.n_scored = b.masked_positions.len();
    b
}

/// BERT's candidate scores `[examples, candidates]`: the MLM head's summed log-probability of
/// each verbalizer's tokens at its `[MASK]` slots.
pub fn bert_scores(mlm: &BertForMaskedLM, b: &DeviceBatch, train: bool) -> Tensor {
    let h = mlm.bert.forward(&b.input_ids, &b.token_type_ids, &b.lengths, train);
    mask_scores(|hs| mlm.predict(hs), &h, b)
}

/// [`bert_scores`] through ModernBERT's MLM head.
pub fn modernbert_scores(mlm: &ModernBertForMaskedLM, b: &DeviceBatch, train: bool) -> Tensor {
    let h = mlm.model.forward(&b.input_ids, &b.lengths, train);
    mask_scores(|hs| mlm.predict(hs), &h, b)
}

/// Candidate scores from the last hidden states `h` and an MLM head `predict`.
fn mask_scores(predict: impl Fn(&Tensor) -> Tensor, h: &Tensor, b: &DeviceBatch) -> Tensor {
    let device = b.input_ids.device();
    let k = b.candidates.max(1) as i64;
    let hs = h.view([-1, h.size()[2]]).index_select(0, &b.masked_positions);
    let lp = predict(&hs).log_softmax(-1, Kind::Float).gather(1, &b.masked_labels.unsqueeze(1), false).squeeze_dim(1);
    let scores = Tensor::zeros([b.n_examples as i64 * k], (Kind::Float, device));
    let scores = match &b.target_rows {
        Some(r) => scores.index_add(0, r, &lp),
        None => scores,
    };
    scores.view([-1, k])
}

/// GLM's candidate scores `[examples, candidates]`: the summed log-probability of each answer.
pub fn scores(glm: &Glm, b: &DeviceBatch, train: bool) -> Tensor {
    let device = b.input_ids.device();
    let Some((pos, block, prefix)) = &b.glm else {
        return Tensor::zeros([b.n_examples as i64, b.candidates.max(1) as i64], (Kind::Float, device));
    };
    let h = glm.forward(&b.input_ids, pos, block, prefix, train);
    let hs = h.view([-1, h.size()[2]]).index_select(0, &b.masked_positions);
    let lp = glm.logits(&hs).log_softmax(-1, Kind::Float).gather(1, &b.masked_labels.unsqueeze(1), false).squeeze_dim(1);
    let rows = Tensor::zeros([b.rows as i64], (Kind::Float, device));
    let rows = match &b.target_rows {
        Some(r) => rows.index_add(0, r, &lp),
        None => rows,
    };
    rows.view([-1, b.candidates.max(1) as i64])
}

/// The registry entry.
pub const KIND: TaskKind = TaskKind { name: "cloze", reuses_pretraining_head: true, on_glm: true, metrics: &[("accuracy", Direction::Higher)], own_keys: &["pattern", "verbalizers", "label_smoothing"], inference_keys: &[], train_defaults: &[], build };

fn build(cx: &TaskContext) -> Result<Box<dyn Task>, TaskError> {
    let c = cx.config;
    let mut problems = Vec::new();
    if c.pattern.matches("[MASK]").count() != 1 || !c.pattern.contains("{text}") {
        problems.push("task.pattern: needs `{text}` and exactly one `[MASK]`".to_owned());
    }
    if c.verbalizers.len() < 2 {
        problems.push("task.verbalizers: give verbalizer text for at least two labels".to_owned());
    }
    let smoothing = super::label_smoothing(c);
    if let Err(e) = &smoothing {
        problems.extend(e.problems());
    }
    if !problems.is_empty() {
        return Err(TaskError::Config(problems));
    }
    let labels = if c.labels.is_empty() { LabelSet { names: c.verbalizers.keys().cloned().collect() } } else { LabelSet { names: c.labels.clone() } };
    let model = match cx.encoder {
        ModelSpec::Glm { .. } => ClozeModel::Glm(find_glm_ids(&cx.tokenizer)?),
        ModelSpec::Bert { .. } | ModelSpec::ModernBert { .. } | ModelSpec::Electra { .. } => ClozeModel::bert(&cx.tokenizer),
    };
    let spec = ClozeSpec { pattern: c.pattern.clone(), answers: answers(&cx.tokenizer, &labels.names, &c.verbalizers, space_before(&c.pattern))?, model };
    Ok(Box::new(Cloze { spec, labels, verbalizers: c.verbalizers.clone(), fields: super::fields(c), tokenizer: cx.tokenizer.clone(), encoder: cx.encoder.clone(), max_len: cx.max_seq_len, label_smoothing: smoothing? }))
}

/// GLM's special tokens in a tokenizer that has them (added when the encoder is a GLM).
///
/// # Errors
/// A tokenizer without them.
pub fn find_glm_ids(tokenizer: &TextTokenizer) -> Result<GlmIds, TaskError> {
    let id = |t: &str| tokenizer.token_id(t).ok_or_else(|| TaskError::config(format!("tokenizer.path: the tokenizer lacks GLM's `{t}`")));
    let ids = tokenizer.special_ids();
    Ok(GlmIds { cls: ids.cls, mask: ids.mask, sop: id("[sop]")?, eop: id("[eop]")?, smask: id("[sMASK]")?, gmask: id("[gMASK]")? })
}

/// Cloze: a pattern and verbalizers scored by a pre-trained GLM or BERT MLM head.
pub struct Cloze {
    spec: ClozeSpec,
    labels: LabelSet,
    verbalizers: std::collections::BTreeMap<String, String>,
    fields: Fields,
    tokenizer: Arc<TextTokenizer>,
    encoder: ModelSpec,
    max_len: usize,
    label_smoothing: f64,
}

impl Cloze {
    /// The pattern and verbalizers, tokenized.
    pub fn spec(&self) -> &ClozeSpec {
        &self.spec
    }
}

impl Task for Cloze {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    /// The pre-trained output layer on the blanks' positions.
    fn head_flops(&self, b: &HostBatch, d: &crate::objective::flops::Dims) -> f64 {
        d.lm_head(b.masked_positions.len())
    }
    fn loss_name(&self) -> &'static str {
        "cloze"
    }
    fn labels(&self) -> &[String] {
        &self.labels.names
    }
    fn class_of(&self, example: &TaskExample) -> Option<usize> {
        example.labels.first().map(|&l| l as usize)
    }

    fn read(&mut self, files: &[PathBuf], split: Split, limit: usize, bad: &mut BadRecords) -> Result<Encoded, TaskError> {
        let records = read_texts(files, &self.fields, split, limit, bad)?;
        let mut examples = Vec::with_capacity(records.len());
        for r in &records {
            let label = if split == Split::Predict { 0 } else { self.labels.id(&r.label, &r.path, r.line)? };
            let mut e = encode(&self.tokenizer, r, label, &self.spec, self.max_len)?;
            if split == Split::Predict {
                e.shown = shown_text(&r.text);
            }
            examples.push(e);
        }
        let notes = super::cut_notes(&examples, split, "texts", self.max_len);
        Ok(Encoded { examples, records: records.len(), notes })
    }

    fn check_trained(&self) -> Result<(), TaskError> {
        super::classification::at_least_two(&self.labels)
    }

    fn collate(&self, examples: &[&TaskExample]) -> HostBatch {
        collate(examples, &self.spec, self.tokenizer.special_ids().pad)
    }

    fn build(&self, root: &nn::Path) -> Box<dyn TaskModel> {
        match &self.encoder {
            ModelSpec::Glm { config } => Box::new(GlmCloze(Glm::new(root, config))),
            ModelSpec::Bert { config, .. } => Box::new(BertCloze(BertForMaskedLM::new(root, config))),
            ModelSpec::ModernBert { config } => Box::new(ModernBertCloze(ModernBertForMaskedLM::new(root, config))),
            // The discriminator has no MLM head: the start check names what is missing.
            ModelSpec::Electra { pair } => Box::new(BertCloze(BertForMaskedLM::new(root, &pair.discriminator))),
        }
    }

    fn loss(&self, outputs: &Tensor, batch: &DeviceBatch) -> Tensor {
        class_loss(outputs, batch, self.label_smoothing)
    }

    fn scorer(&self) -> Box<dyn Scorer> {
        Box::new(ClassScorer::new(&self.labels.names))
    }

    fn headline(&self) -> &'static [&'static str] {
        &["accuracy", "macro_f1", "loss"]
    }

    /// The label scores are the verbalizers' summed log-probabilities in the blank; the
    /// probabilities their softmax, as in training.
    fn predictor(&self) -> Box<dyn Predictor> {
        Box::new(Probabilities { labels: self.labels.names.clone() })
    }

    /// The candidates the row scores (one on GLM; every one of a length at BERT's `[MASK]`
    /// slots) and the example's gold label.
    fn explain(&self, batch: &HostBatch, row: usize) -> String {
        let example = row * batch.n_examples / batch.batch_size.max(1);
        let mut answers: Vec<(i64, Vec<String>)> = Vec::new();
        let t = batch.seq_len;
        for ((&p, &l), &c) in batch.masked_positions.iter().zip(&batch.masked_labels).zip(&batch.target_rows) {
            if p as usize / t == row {
                let token = self.tokenizer.id_to_token(l as u32);
                match answers.iter_mut().find(|(k, _)| *k == c) {
                    Some((_, v)) => v.push(token),
                    None => answers.push((c, vec![token])),
                }
            }
        }
        let shown: Vec<String> = answers.iter().map(|(_, v)| format!("`{}`", v.join(" "))).collect();
        format!("candidates {}; gold label {}", shown.join(" | "), super::label_name(&self.labels.names, batch.row_labels[example]))
    }

    /// The MLM head is the model: `BertForMaskedLM`, with the pattern and the verbalizers a
    /// user needs to score labels the way the run did.
    fn export(&self) -> Result<HfHead, TaskError> {
        if matches!(self.encoder, ModelSpec::Glm { .. }) {
            return Err(TaskError::NoExport("a GLM cloze model has no Hugging Face `transformers` architecture to export to".into()));
        }
        let mut config = label_maps(&self.labels.names);
        config.insert("pretune_cloze".into(), json!({"pattern": self.spec.pattern, "verbalizers": self.verbalizers, "labels": self.labels.names}));
        // `BertForMaskedLM` is renamed for the encoder's family on export (`ModernBertForMaskedLM`, ...).
        Ok(HfHead { architecture: "BertForMaskedLM", config })
    }

    /// Cloze adds no weights: every variable must come from the starting point (a BERT
    /// without its MLM head, such as a sentence-embedding model, cannot fill blanks).
    fn check_start(&self, missing: &[String]) -> Result<(), crate::objective::IncompleteStart> {
        super::all_weights_from_start(missing, "cloze fine-tuning reuses the pre-trained output layer", "start from an MLM or GLM pre-training checkpoint, or a BertForMaskedLM / BertForPreTraining folder")
    }
}

struct GlmCloze(Glm);

impl TaskModel for GlmCloze {
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        scores(&self.0, b, train)
    }
}

struct ModernBertCloze(ModernBertForMaskedLM);

impl TaskModel for ModernBertCloze {
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        modernbert_scores(&self.0, b, train)
    }
}

struct BertCloze(BertForMaskedLM);

impl TaskModel for BertCloze {
    fn outputs(&self, b: &DeviceBatch, train: bool) -> Tensor {
        bert_scores(&self.0, b, train)
    }
}
