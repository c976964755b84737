//! `pretune preview`: what the Masker produces for the first examples, exactly as training
//! sees them (same stream, same batches, same seed, same masks), through the workload's own
//! collator, in both phases: pre-training's corruption, and a task's rows (the cloze pattern
//! and its candidates, QA windows with their answer span, tags on first sub-tokens).

use serde::Serialize;
use serde_json::{json, Value};

use crate::batch::{HostBatch, RawBatch, IGNORE};
use crate::data::stream::StreamError;
use crate::plan::RunPlan;
use crate::rng::Purpose;

/// One example as the model sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewRow {
    /// `mlm`, `mlm+nsp`, `mlm+sop` or `glm`; fine-tuning: the task kind.
    pub objective: String,
    /// Tokens as strings (after corruption).
    pub tokens: Vec<String>,
    /// Ids (after corruption).
    pub input_ids: Vec<i64>,
    /// Target where scored, -100 elsewhere.
    pub labels: Vec<i64>,
    /// Segment ids.
    pub token_type_ids: Vec<i64>,
    /// Position ids (GLM: the first row).
    pub position_ids: Vec<i64>,
    /// GLM's block position ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_position_ids: Option<Vec<i64>>,
    /// `{"kind": "bidirectional"}` or `{"kind": "prefix_causal", "prefix_len": N}`.
    pub attention: Value,
    /// NSP label (1 = B is from another document).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nsp_label: Option<i64>,
    /// SOP label (1 = swapped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sop_label: Option<i64>,
    /// BERT inputs: the word each token belongs to (`null` for `[CLS]` / `[SEP]`), counted
    /// from 0 per row; whole-word masking masks a word's tokens together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub word_ids: Option<Vec<Option<usize>>>,
    /// Fine-tuning: what the row is scored on, in words (the class, the regression target,
    /// the answer span of a QA window, the cloze candidate and the gold label, each tagged
    /// word's tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The word of each token of a framed BERT input (`None` for special tokens).
fn word_ids(raw: &crate::data::stream::Payload, ctx: &crate::masking::collate::MaskContext) -> Vec<Option<usize>> {
    let (mut t, mut w) = (Vec::new(), Vec::new());
    crate::masking::collate::frame_bert_into(raw, &ctx.ids, &mut t, &mut w);
    let mut word = None;
    t.iter()
        .zip(&w)
        .map(|(&id, &start)| {
            if ctx.special.get(id as usize).copied().unwrap_or(false) {
                return None;
            }
            word = Some(match word {
                Some(k) if !start => k,
                Some(k) => k + 1,
                None => 0,
            });
            word
        })
        .collect()
}

fn row(plan: &RunPlan, b: &HostBatch, r: usize) -> PreviewRow {
    let input_ids = b.row(&b.input_ids, r).to_vec();
    let glm = !b.prefix_len.is_empty();
    let names = plan.corpus().map(|c| c.names);
    let pair = names.and_then(|n| n.pair);
    let label = b.pair_labels.get(r).copied();
    PreviewRow {
        objective: match (names, pair) {
            (Some(n), Some(p)) => format!("{}+{p}", n.lm),
            (Some(n), None) => n.lm.to_owned(),
            (None, _) => plan.task().map_or_else(String::new, |t| t.task.kind().to_owned()),
        },
        tokens: input_ids.iter().map(|&i| plan.tokenizer.id_to_token(i as u32)).collect(),
        labels: row_labels(b, r),
        token_type_ids: b.row(&b.token_type_ids, r).to_vec(),
        position_ids: b.row_positions(r),
        block_position_ids: glm.then(|| b.row(&b.block_position_ids, r).to_vec()),
        attention: if glm { json!({"kind": "prefix_causal", "prefix_len": b.prefix_len[r]}) } else { json!({"kind": "bidirectional"}) },
        nsp_label: label.filter(|_| pair == Some("nsp")),
        sop_label: label.filter(|_| pair == Some("sop")),
        word_ids: None,
        target: plan.task().map(|t| t.task.explain(b, r)),
        input_ids,
    }
}

/// A row's per-token targets: pre-training's `labels`, or a task's scored positions (tags on
/// first sub-tokens, cloze answer tokens), -100 elsewhere.
fn row_labels(b: &HostBatch, r: usize) -> Vec<i64> {
    if !b.labels.is_empty() {
        return b.row(&b.labels, r).to_vec();
    }
    let (t, n) = (b.seq_len, b.lengths[r] as usize);
    let mut out = vec![IGNORE; n];
    for (&p, &l) in b.masked_positions.iter().zip(&b.masked_labels) {
        let p = p as usize;
        if p / t == r && p % t < n {
            out[p % t] = l;
        }
    }
    out
}


/// The first `n` rows of the first training batches.
///
/// # Errors
/// As the training stream.
pub fn preview(plan: &RunPlan, n: usize) -> Result<Vec<PreviewRow>, StreamError> {
    let mut stream = plan.train_source(Default::default());
    let collator = plan.collator();
    let ctx = plan.corpus().map(|c| c.mask_context(&plan.context(), Purpose::Mask));
    let bs = plan.config.train.batch_size;
    let mut rows = Vec::with_capacity(n);
    let mut seq = 0;
    while rows.len() < n {
        let mut examples = Vec::with_capacity(bs);
        while examples.len() < bs {
            match stream.next_example()? {
                Some(e) => examples.push(e),
                None => break,
            }
        }
        if examples.is_empty() {
            break;
        }
        let raw = RawBatch { seq, examples, cursor: stream.cursor() };
        let b = collator.collate(raw.clone(), Purpose::Mask);
        let bert = b.prefix_len.is_empty();
        rows.extend((0..b.batch_size).take(n - rows.len()).map(|r| {
            let mut row = row(plan, &b, r);
            row.word_ids = ctx.as_ref().filter(|_| bert).map(|ctx| word_ids(&raw.examples[r].payload, ctx));
            row
        }));
        seq += 1;
    }
    Ok(rows)
}

/// Human-readable rendering: `[MASK]→original` where MLM scores, the A/B split and label for
/// NSP/SOP, Part A and the Part B spans for GLM.
pub fn render_text(rows: &[PreviewRow], plan: &RunPlan) -> String {
    let tok = |id: i64| plan.tokenizer.id_to_token(id as u32);
    let mut out = String::new();
    for (k, r) in rows.iter().enumerate() {
        let scored = r.labels.iter().filter(|&&l| l != IGNORE).count();
        out.push_str(&format!("example {k} [{}] ({} tokens, {} scored)\n", r.objective, r.tokens.len(), scored));
        if let Some(t) = &r.target {
            out.push_str(&format!("  target: {t}\n"));
        }
        if let Some(sep) = r.attention.get("prefix_len").and_then(Value::as_u64) {
            let sep = sep as usize;
            out.push_str(&format!("  part A ({sep} tokens): {}\n", r.tokens[..sep].join(" ")));
            let mut i = sep;
            while i < r.tokens.len() {
                let mut j = i + 1;
                while j < r.tokens.len() && r.block_position_ids.as_ref().is_some_and(|b| b[j] != 1) {
                    j += 1;
                }
                let targets: Vec<String> = r.labels[i..j].iter().filter(|&&l| l != IGNORE).map(|&l| tok(l)).collect();
                out.push_str(&format!("  part B at position {}: {} => {}\n", r.position_ids[i], r.tokens[i..j].join(" "), targets.join(" ")));
                i = j;
            }
            out.push_str(&format!("  attention: prefix-causal, Part A length {sep}\n"));
            out.push_str(&format!("  position_ids:       {:?}\n", r.position_ids));
            out.push_str(&format!("  block_position_ids: {:?}\n\n", r.block_position_ids.clone().unwrap_or_default()));
            continue;
        }
        // A task's targets are in its `target` line (tag ids are not tokens).
        let shown: Vec<String> =
            r.tokens.iter().zip(&r.labels).map(|(t, &l)| if l == IGNORE || r.target.is_some() { t.clone() } else { format!("{t}→{}", tok(l)) }).collect();
        match r.nsp_label.map(|l| ("nsp", l)).or(r.sop_label.map(|l| ("sop", l))) {
            Some((task, label)) => {
                let a_end = r.token_type_ids.iter().position(|&t| t == 1).unwrap_or(r.tokens.len());
                let meaning = match (task, label) {
                    ("nsp", 0) => "IsNext",
                    ("nsp", _) => "NotNext (B from another document)",
                    (_, 0) => "in order",
                    _ => "swapped",
                };
                out.push_str(&format!("  A: {}\n  B: {}\n  {task}_label: {label} ({meaning})\n", shown[..a_end].join(" "), shown[a_end..].join(" ")));
            }
            None => out.push_str(&format!("  tokens:         {}\n", shown.join(" "))),
        }
        out.push_str(&format!("  input_ids:      {:?}\n", r.input_ids));
        out.push_str(&format!("  labels:         {:?}\n", r.labels));
        out.push_str(&format!("  token_type_ids: {:?}\n", r.token_type_ids));
        out.push_str(&format!("  position_ids:   {:?}\n\n", r.position_ids));
    }
    out
}
