//! GLM cloze fine-tuning (OBJECTIVES.md G7): the task is put into the pre-training format, so
//! fine-tuning reuses the blank-infilling objective and the pre-trained output layer unchanged.
//!
//! A pattern turns a text into Part A with one `[MASK]` blank (`"{text} It was [MASK]."`); each
//! label has verbalizer text. For every candidate answer `a_1..a_m` one row holds
//! `Part A + [sop] + a_1..a_{m-1}` with 2-D positions (the blank's position; block positions
//! `1..m`), and its score is `sum_t log p(a_t)` read at the Part B positions: for single-token
//! answers that is the logit at `[sop]`. Cross-entropy over the candidates' scores trains it.

use tch::{Kind, Tensor};

use super::data::{ClsRecord, TaskDataError};
use crate::batch::{HostBatch, IGNORE};
use crate::data::labelled::TaskExample;
use crate::objective::DeviceBatch;
use crate::data::tokenize::TextTokenizer;
use crate::masking::glm::GlmIds;
use crate::model::glm::Glm;

/// The pattern and verbalizers, tokenized once.
#[derive(Debug, Clone, PartialEq)]
pub struct ClozeSpec {
    /// Pattern with `{text}` and one `[MASK]`.
    pub pattern: String,
    /// Answer tokens per label id.
    pub answers: Vec<Vec<u32>>,
    /// GLM's ids.
    pub ids: GlmIds,
}

/// GLM's special tokens in a BERT tokenizer: the same tokens, added in the same order as in
/// pre-training, get the same ids.
///
/// # Errors
/// The tokenizer refuses them (with the key to blame).
pub fn glm_ids(tokenizer: &mut TextTokenizer) -> Result<GlmIds, String> {
    let added = tokenizer.ensure_special(&["[sop]", "[eop]", "[sMASK]", "[gMASK]"]).map_err(|e| format!("tokenizer.path: {}", crate::error_chain(&e)))?;
    let ids = tokenizer.special_ids();
    Ok(GlmIds { cls: ids.cls, mask: ids.mask, sop: added[0], eop: added[1], smask: added[2], gmask: added[3] })
}

/// The verbalizers' tokens, in label order.
///
/// # Errors
/// A label without a verbalizer, or one with no tokens (naming the key).
pub fn answers(tokenizer: &TextTokenizer, labels: &[String], verbalizers: &std::collections::BTreeMap<String, String>) -> Result<Vec<Vec<u32>>, String> {
    let mut answers = Vec::new();
    for l in labels {
        let text = verbalizers.get(l).ok_or_else(|| format!("task.verbalizers: no verbalizer for label `{l}`"))?;
        let ids = tokenizer.encode(text).map_err(|e| format!("task.verbalizers.{l}: {}", crate::error_chain(&e)))?.ids;
        if ids.is_empty() {
            return Err(format!("task.verbalizers.{l}: `{text}` has no tokens"));
        }
        answers.push(ids);
    }
    Ok(answers)
}

/// Builds Part A of one record: `[CLS]` + pattern with the text in, the blank as `[MASK]`; the
/// text is cut from the end so that the longest answer still fits in `max_len`.
///
/// # Errors
/// Tokenization errors.
pub fn encode(tok: &TextTokenizer, rec: &ClsRecord, label: usize, spec: &ClozeSpec, max_len: usize) -> Result<TaskExample, TaskDataError> {
    let (before, after) = spec.pattern.split_once("[MASK]").unwrap_or((&spec.pattern, ""));
    let (b0, b1) = before.split_once("{text}").unwrap_or((before, ""));
    let (a0, a1) = after.split_once("{text}").unwrap_or((after, ""));
    let has_text_before = before.contains("{text}");
    let enc = |s: &str| -> Result<Vec<u32>, TaskDataError> { Ok(if s.trim().is_empty() { vec![] } else { tok.encode(s)?.ids }) };
    let mut text = tok.encode(&rec.text)?.ids;
    let (p0, p1, p2, p3) = (enc(b0)?, enc(b1)?, enc(a0)?, enc(a1)?);
    let longest = spec.answers.iter().map(Vec::len).max().unwrap_or(1);
    let fixed = 2 + p0.len() + p1.len() + p2.len() + p3.len() + longest;
    text.truncate(max_len.saturating_sub(fixed).max(1));
    let mut ids = vec![spec.ids.cls];
    if has_text_before {
        ids.extend(p0.iter().chain(&text).chain(&p1));
        ids.push(spec.ids.mask);
        ids.extend(&p2);
    } else {
        ids.extend(&p0);
        ids.push(spec.ids.mask);
        ids.extend(p2.iter().chain(&text).chain(&p3));
    }
    let blank = ids.iter().position(|&t| t == spec.ids.mask).expect("the pattern's blank");
    Ok(TaskExample { types: vec![0; ids.len()], ids, labels: vec![label as i64], target: 0.0, word_starts: vec![Some(blank)], window: None })
}

/// One row per (example, candidate), padded, with GLM's 2-D positions and Part A lengths;
/// `masked_positions` / `masked_labels` hold every answer token's prediction place and token,
/// `target_rows` its row, `row_labels` the gold candidate per example.
pub fn collate(examples: &[&TaskExample], spec: &ClozeSpec, pad: u32) -> HostBatch {
    let k = spec.answers.len();
    let rows = examples.len() * k;
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1) + spec.answers.iter().map(Vec::len).max().unwrap_or(1);
    let t = longest.div_ceil(8) * 8;
    let mut b = HostBatch {
        batch_size: rows,
        seq_len: t,
        input_ids: vec![pad as i64; rows * t],
        token_type_ids: vec![0; rows * t],
        lengths: Vec::with_capacity(rows),
        position_ids: vec![0; rows * t],
        block_position_ids: vec![0; rows * t],
        row_labels: examples.iter().map(|e| e.labels.first().copied().unwrap_or(IGNORE)).collect(),
        n_examples: examples.len(),
        candidates: k,
        ..Default::default()
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
                b.input_ids[base + col] = if j == 0 { spec.ids.sop as i64 } else { answer[j - 1] as i64 };
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

/// Candidate scores `[examples, candidates]`: the summed log-probability of each answer.
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
