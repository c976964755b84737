//! The data plane's messages: plain host data, no tch.
//!
//! One batch type serves every objective of both phases: pre-training fills the token-level
//! fields (masked positions, 2-D positions, pair labels), a fine-tuning task the row-level ones
//! (`row_labels`, `row_targets`) or reuses the token-level ones (token classification scores
//! the first sub-token of each word through `masked_positions`; cloze its answer tokens).

use std::sync::Arc;

use crate::data::labelled::QaWindow;
use crate::data::stream::{Cursor, Example};

/// Label of a position or row that is not scored (PyTorch's `ignore_index` default).
pub const IGNORE: i64 = -100;

/// A batch of packed, not yet corrupted examples, numbered by the Loader.
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// Batch number: the Trainer consumes batches in `seq` order.
    pub seq: u64,
    /// The examples, in stream order.
    pub examples: Vec<Example>,
    /// Stream position after the last example of this batch: resume from here.
    pub cursor: Cursor,
}

/// A collated batch ready for the device: row-major `[batch, seq_len]` buffers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostBatch {
    /// Batch number (from [`RawBatch::seq`]).
    pub seq: u64,
    /// Stream position after this batch.
    pub cursor: Cursor,
    /// Rows per batch (`train.batch_size`), the last batch of an epoch may have fewer.
    pub batch_size: usize,
    /// Padded length: the longest row rounded up to a multiple of 8.
    pub seq_len: usize,
    /// Token ids, `[PAD]` after each row's length.
    pub input_ids: Vec<i64>,
    /// Segment ids (0 for single-segment MLM).
    pub token_type_ids: Vec<i64>,
    /// Unpadded length of each row; the attention mask is built on the device from these.
    pub lengths: Vec<i64>,
    /// Original id at scored positions, -100 elsewhere.
    pub labels: Vec<i64>,
    /// Flat indices (`row * seq_len + col`) of the scored positions: the MLM decoder runs only
    /// on these.
    pub masked_positions: Vec<i64>,
    /// Labels at `masked_positions`.
    pub masked_labels: Vec<i64>,
    /// Position ids `[batch, seq_len]` (GLM's first row); empty means `0..len` per row.
    pub position_ids: Vec<i64>,
    /// GLM's block position ids `[batch, seq_len]`; empty for BERT.
    pub block_position_ids: Vec<i64>,
    /// GLM: Part A length per row (prefix-causal attention); empty means bidirectional.
    pub prefix_len: Vec<i64>,
    /// NSP / SOP label per row; empty without a pair task.
    pub pair_labels: Vec<i64>,
    /// Non-padding tokens in the batch.
    pub n_tokens: usize,
    /// Scored positions: the divisor of token-level losses, known on the host so normalising
    /// needs no sync.
    pub n_scored: usize,
    /// Examples: the divisor of row-level losses (NSP, classification, regression, cloze).
    /// Equal to `batch_size` except for cloze, where each example spans one row per candidate.
    pub n_examples: usize,
    /// Class id per example (sequence classification; cloze: the gold candidate; question
    /// answering: the start and the end token of each row, two per row); empty otherwise.
    pub row_labels: Vec<i64>,
    /// Regression target per example; empty otherwise.
    pub row_targets: Vec<f32>,
    /// Cloze: the row of each scored answer token (scores are summed per row).
    pub target_rows: Vec<i64>,
    /// ELECTRA: a uniform number in [0, 1) per masked position, the generator's sample's
    /// draw; empty otherwise.
    pub sample_uniforms: Vec<f32>,
    /// Cloze: rows (candidates) per example; 0 otherwise.
    pub candidates: usize,
    /// Token classification: per row, each word's first sub-token (`None` when truncation cut
    /// the word off). Evaluation maps predictions back to words with it.
    pub word_starts: Vec<Vec<Option<usize>>>,
    /// Question answering, held-out and prediction batches: each row's window (its offsets
    /// in the context), to turn logits into answer text.
    pub windows: Vec<Arc<QaWindow>>,
    /// Generation, held-out batches: each row's reference texts (the first one trains).
    pub references: Vec<Arc<Vec<String>>>,
}

/// Padded lengths are rounded up to a multiple of this (tensor-core and SIMD friendly).
pub const PAD_MULTIPLE: usize = 8;

impl HostBatch {
    /// `rows` rows padded to `longest` rounded up to [`PAD_MULTIPLE`]: every id `pad`, token
    /// types 0, no lengths yet; the collator fills the rest.
    pub fn padded(rows: usize, longest: usize, pad: u32) -> Self {
        let seq_len = longest.div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE;
        HostBatch {
            batch_size: rows,
            seq_len,
            input_ids: vec![pad as i64; rows * seq_len],
            token_type_ids: vec![0; rows * seq_len],
            lengths: Vec::with_capacity(rows),
            ..Default::default()
        }
    }

    /// Position ids of one row, cut at its length.
    pub fn row_positions(&self, row: usize) -> Vec<i64> {
        if self.position_ids.is_empty() {
            (0..self.lengths[row]).collect()
        } else {
            self.row(&self.position_ids, row).to_vec()
        }
    }

    /// A row of a `[batch, seq_len]` buffer, cut at the row's length.
    pub fn row<'a>(&self, buf: &'a [i64], row: usize) -> &'a [i64] {
        &buf[row * self.seq_len..row * self.seq_len + self.lengths[row] as usize]
    }
}
