//! The Masker's work on one batch: add `[CLS]` / `[SEP]`, corrupt, and collate into flat,
//! padded buffers. Pure: the result depends only on the batch and the settings.

use std::sync::Arc;

use super::mlm::{mask_sequence, MlmSettings, IGNORE};
use crate::batch::{HostBatch, RawBatch};
use crate::data::tokenize::SpecialIds;
use crate::rng::{Rng, Stream};

/// Everything the Masker needs besides the batch.
#[derive(Debug, Clone)]
pub struct MaskContext {
    /// Run seed.
    pub seed: u64,
    /// `Stream::Mask` for training, `Stream::EvalMask` for the held-out split.
    pub stream: Stream,
    /// MLM knobs.
    pub mlm: MlmSettings,
    /// Special-token flags per id.
    pub special: Arc<Vec<bool>>,
    /// `[CLS]`, `[SEP]`, `[PAD]` ids.
    pub ids: SpecialIds,
    /// Longest sequence allowed (padding never goes past it).
    pub max_seq_len: usize,
}

/// Rounds the padded length up to a multiple of this (tensor-core and SIMD friendly).
pub const PAD_MULTIPLE: usize = 8;

/// Masks and collates one batch. Each example's RNG is keyed by `(seed, epoch, index)`, so the
/// result is the same whichever worker runs it.
pub fn mask_and_collate(raw: RawBatch, ctx: &MaskContext) -> HostBatch {
    let b = raw.examples.len();
    let longest = raw.examples.iter().map(|e| e.segment.ids.len() + 2).max().unwrap_or(2);
    let seq_len = longest.div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE;
    let seq_len = seq_len.min(ctx.max_seq_len.max(longest));
    let mut batch = HostBatch {
        seq: raw.seq,
        cursor: raw.cursor,
        batch_size: b,
        seq_len,
        input_ids: vec![ctx.ids.pad as i64; b * seq_len],
        token_type_ids: vec![0; b * seq_len],
        lengths: Vec::with_capacity(b),
        labels: vec![IGNORE; b * seq_len],
        masked_positions: Vec::new(),
        masked_labels: Vec::new(),
        n_tokens: 0,
        n_scored: 0,
    };
    // Scratch buffers reused across rows: no per-token allocation.
    let mut tokens: Vec<u32> = Vec::with_capacity(longest);
    let mut word_start: Vec<bool> = Vec::with_capacity(longest);
    for (row, ex) in raw.examples.iter().enumerate() {
        tokens.clear();
        word_start.clear();
        tokens.push(ctx.ids.cls);
        tokens.extend_from_slice(&ex.segment.ids);
        tokens.push(ctx.ids.sep);
        word_start.push(true);
        word_start.extend_from_slice(&ex.segment.word_start);
        word_start.push(true);
        let mut rng = Rng::keyed(ctx.seed, ctx.stream, &[ex.epoch, ex.index]);
        let labels = mask_sequence(&mut tokens, &word_start, &ctx.special, &ctx.mlm, &mut rng);
        let base = row * seq_len;
        for (j, (&t, &l)) in tokens.iter().zip(&labels).enumerate() {
            batch.input_ids[base + j] = t as i64;
            batch.labels[base + j] = l;
            if l != IGNORE {
                batch.masked_positions.push((base + j) as i64);
                batch.masked_labels.push(l);
            }
        }
        batch.lengths.push(tokens.len() as i64);
        batch.n_tokens += tokens.len();
    }
    batch.n_scored = batch.masked_positions.len();
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Selection;
    use crate::data::packing::Segment;
    use crate::data::stream::{Cursor, Example};

    pub(crate) fn ctx() -> MaskContext {
        let ids = SpecialIds { cls: 1, sep: 2, pad: 0, mask: 3, unk: 4 };
        let mut special = vec![false; 100];
        for t in [0, 1, 2, 3] {
            special[t] = true;
        }
        MaskContext {
            seed: 5,
            stream: Stream::Mask,
            mlm: MlmSettings {
                mask_prob: 0.15,
                mask_token_prob: 0.8,
                random_token_prob: 0.1,
                selection: Selection::Exact,
                max_predictions: 0,
                whole_word: false,
                mask_id: 3,
                vocab_size: 100,
            },
            special: Arc::new(special),
            ids,
            max_seq_len: 32,
        }
    }

    fn raw(lens: &[usize]) -> RawBatch {
        let examples = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| Example {
                index: i as u64,
                epoch: 0,
                segment: Segment { ids: (0..n as u32).map(|k| 10 + k % 80).collect(), word_start: vec![true; n] },
            })
            .collect();
        RawBatch { seq: 7, examples, cursor: Cursor::default() }
    }

    #[test]
    fn rows_are_framed_padded_to_a_multiple_of_8_and_counted() {
        let b = mask_and_collate(raw(&[5, 11]), &ctx());
        assert_eq!((b.batch_size, b.seq_len), (2, 16));
        assert_eq!(b.lengths, vec![7, 13]);
        assert_eq!(b.input_ids[0], 1);
        assert_eq!(b.input_ids[6], 2);
        assert!(b.input_ids[7..16].iter().all(|&t| t == 0), "padding");
        assert_eq!(b.n_tokens, 20);
        assert_eq!(b.n_scored, b.labels.iter().filter(|&&l| l != IGNORE).count());
        for (&p, &l) in b.masked_positions.iter().zip(&b.masked_labels) {
            assert_eq!(b.labels[p as usize], l);
        }
    }

    #[test]
    fn padding_never_exceeds_max_seq_len() {
        let b = mask_and_collate(raw(&[29]), &ctx());
        assert_eq!(b.seq_len, 32);
        let mut c = ctx();
        c.max_seq_len = 31;
        let b = mask_and_collate(raw(&[29]), &c);
        assert_eq!(b.seq_len, 31);
    }
}
