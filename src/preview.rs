//! `pretune preview`: what the Masker produces for the first examples, exactly as training
//! would see them (same stream, same seed, same masks).

use serde::Serialize;

use crate::actors::{mask_context, train_stream};
use crate::batch::RawBatch;
use crate::config::RunPlan;
use crate::data::stream::StreamError;
use crate::masking::collate::mask_and_collate;
use crate::rng::Stream;

/// One example as the model sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewRow {
    /// Global example index.
    pub example: u64,
    /// Tokens as strings (after corruption).
    pub tokens: Vec<String>,
    /// Ids (after corruption).
    pub input_ids: Vec<i64>,
    /// Original id where scored, -100 elsewhere.
    pub labels: Vec<i64>,
    /// Segment ids.
    pub token_type_ids: Vec<i64>,
    /// Position ids.
    pub position_ids: Vec<i64>,
}

/// The first `n` examples of the training stream, masked.
///
/// # Errors
/// As the training stream.
pub fn preview(plan: &RunPlan, n: usize) -> Result<Vec<PreviewRow>, StreamError> {
    let mut stream = train_stream(plan, Default::default());
    let ctx = mask_context(plan, Stream::Mask);
    let mut rows = Vec::with_capacity(n);
    while rows.len() < n {
        let Some(ex) = stream.next_example()? else { break };
        let index = ex.index;
        // Masks are keyed per example, so a batch of one masks exactly as training does.
        let b = mask_and_collate(RawBatch { seq: 0, examples: vec![ex], cursor: stream.cursor() }, &ctx);
        let input_ids = b.row(&b.input_ids, 0).to_vec();
        rows.push(PreviewRow {
            example: index,
            tokens: input_ids.iter().map(|&i| plan.tokenizer.id_to_token(i as u32)).collect(),
            labels: b.row(&b.labels, 0).to_vec(),
            token_type_ids: b.row(&b.token_type_ids, 0).to_vec(),
            position_ids: b.position_ids(0)[..input_ids.len()].to_vec(),
            input_ids,
        });
    }
    Ok(rows)
}

/// Human-readable rendering: one token per column, `[MASK]→original` where scored.
pub fn render_text(rows: &[PreviewRow], plan: &RunPlan) -> String {
    let mut out = String::new();
    for r in rows {
        let scored = r.labels.iter().filter(|&&l| l != -100).count();
        out.push_str(&format!("example {} ({} tokens, {} scored)\n", r.example, r.tokens.len(), scored));
        let shown: Vec<String> = r
            .tokens
            .iter()
            .zip(&r.labels)
            .map(|(t, &l)| if l == -100 { t.clone() } else { format!("{t}→{}", plan.tokenizer.id_to_token(l as u32)) })
            .collect();
        out.push_str(&format!("  tokens:         {}\n", shown.join(" ")));
        out.push_str(&format!("  input_ids:      {:?}\n", r.input_ids));
        out.push_str(&format!("  labels:         {:?}\n", r.labels));
        out.push_str(&format!("  token_type_ids: {:?}\n", r.token_type_ids));
        out.push_str(&format!("  position_ids:   {:?}\n\n", r.position_ids));
    }
    out
}
