//! The Masker's work on one batch: frame, corrupt and collate into flat, padded buffers.
//! Pure: the result depends only on the batch and the settings.

use std::sync::Arc;

use super::glm::{corrupt, document_max_gen, GlmMode, GlmSample, GlmSettings};
use super::mlm::{mask_sequence_into, MaskScratch, MlmSettings};
use crate::batch::IGNORE;
use crate::batch::{HostBatch, RawBatch};
use crate::data::packing::Segment;
use crate::data::stream::Payload;
use crate::data::tokenize::SpecialIds;
use crate::rng::{Rng, Purpose};

/// The corruption an objective applies.
#[derive(Debug, Clone)]
pub enum Corruption {
    /// BERT MLM (on single segments or sentence pairs).
    Mlm(MlmSettings),
    /// GLM blank infilling; the mode is drawn per batch.
    Glm(GlmSettings),
}

/// Everything the Masker needs besides the batch.
#[derive(Debug, Clone)]
pub struct MaskContext {
    /// Run seed.
    pub seed: u64,
    /// `Purpose::Mask` for training, `Purpose::EvalMask` for the held-out split.
    pub stream: Purpose,
    /// What to do to each example.
    pub corruption: Corruption,
    /// Special-token flags per id.
    pub special: Arc<Vec<bool>>,
    /// `[CLS]`, `[SEP]`, `[PAD]` ids.
    pub ids: SpecialIds,
    /// Longest sequence allowed for BERT inputs (padding never goes past it).
    pub max_seq_len: usize,
}

pub use crate::batch::PAD_MULTIPLE;


/// Length of `[CLS] seg [SEP]` or `[CLS] a [SEP] b [SEP]`.
fn framed_len(p: &Payload) -> usize {
    match p {
        Payload::Single(seg) => seg.ids.len() + 2,
        Payload::Pair(pair) => pair.a.ids.len() + pair.b.ids.len() + 3,
        // Already framed by its encoder.
        Payload::Labelled(e) => e.ids.len(),
    }
}

/// Frames a BERT input into `t` (ids) and `w` (word starts), both cleared first; returns where
/// segment B starts (the length for a single segment) and the pair label.
pub(crate) fn frame_bert_into(p: &Payload, ids: &SpecialIds, t: &mut Vec<u32>, w: &mut Vec<bool>) -> (usize, Option<i64>) {
    t.clear();
    w.clear();
    t.push(ids.cls);
    w.push(true);
    let push = |seg: &Segment, t: &mut Vec<u32>, w: &mut Vec<bool>| {
        t.extend_from_slice(&seg.ids);
        w.extend_from_slice(&seg.word_start);
        t.push(ids.sep);
        w.push(true);
    };
    match p {
        Payload::Single(seg) => {
            push(seg, t, w);
            (t.len(), None)
        }
        Payload::Pair(pair) => {
            push(&pair.a, t, w);
            let a_len = t.len();
            push(&pair.b, t, w);
            (a_len, Some(pair.label as i64))
        }
        // Masked language modelling over task text: framed already, every token a word start.
        Payload::Labelled(e) => {
            t.clear();
            w.clear();
            t.extend_from_slice(&e.ids);
            w.resize(t.len(), true);
            let b_start = e.types.iter().position(|&ty| ty == 1).unwrap_or(t.len());
            (b_start, None)
        }
    }
}

/// Masks and collates one batch. Each example's RNG is keyed by `(seed, epoch, index)` and a
/// GLM batch's mode by `(seed, batch seq)`, so the result is the same whichever worker runs it.
pub fn mask_and_collate(raw: &RawBatch, ctx: &MaskContext) -> HostBatch {
    let rows: Vec<GlmSample> = match &ctx.corruption {
        Corruption::Mlm(mlm) => return collate_mlm(raw, ctx, mlm),
        Corruption::Glm(settings) => {
            let first = raw.examples.first().map_or(0, |e| e.epoch);
            let mut batch_rng = Rng::keyed(ctx.seed, Purpose::GlmBatch, &[ctx.stream as u64, first, raw.seq]);
            let mode = GlmMode::draw(&mut batch_rng, settings.blanks.bert_prob, settings.blanks.gap_sentence_prob);
            let xs: Vec<(Vec<u32>, Vec<usize>)> = raw
                .examples
                .iter()
                .map(|ex| {
                    let seg = match &ex.payload {
                        Payload::Single(s) => s,
                        Payload::Pair(p) => &p.a,
                        // GLM over task text: its tokens after `[CLS]`, one sentence.
                        Payload::Labelled(e) => {
                            let body: Vec<u32> = e.ids.iter().skip(1).copied().collect();
                            let mut x = Vec::with_capacity(body.len() + 1);
                            x.push(ctx.ids.cls);
                            x.extend_from_slice(&body);
                            return (x, vec![body.len() + 1]);
                        }
                    };
                    let mut x = Vec::with_capacity(seg.ids.len() + 1);
                    x.push(ctx.ids.cls);
                    x.extend_from_slice(&seg.ids);
                    (x, seg.sentence_ends.iter().map(|&e| e as usize + 1).collect())
                })
                .collect();
            let lens: Vec<usize> = xs.iter().map(|x| x.0.len()).collect();
            let max_gen = document_max_gen(&lens, settings, &mut batch_rng);
            raw.examples
                .iter()
                .zip(&xs)
                .map(|(ex, (x, ends))| {
                    let mut rng = Rng::keyed(ctx.seed, ctx.stream, &[ex.epoch, ex.index]);
                    corrupt(x, ends, mode, max_gen, settings, &mut rng)
                })
                .collect()
        }
    };
    collate_glm(rows, raw, ctx)
}

/// The padded length: the longest row rounded up to a multiple of 8, but (for BERT, whose
/// position table ends there) not past `max_seq_len` unless a row is longer.
fn padded_len(longest: usize, ctx: &MaskContext, glm: bool) -> usize {
    let seq_len = longest.max(1).div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE;
    if glm {
        // GLM's Part B reuses Part A positions.
        seq_len
    } else {
        seq_len.min(ctx.max_seq_len.max(longest))
    }
}

fn empty_batch(raw: &RawBatch, seq_len: usize, ctx: &MaskContext, glm: bool) -> HostBatch {
    let (b, n) = (raw.examples.len(), raw.examples.len() * seq_len);
    HostBatch {
        seq: raw.seq,
        cursor: raw.cursor,
        batch_size: b,
        seq_len,
        input_ids: vec![ctx.ids.pad as i64; n],
        token_type_ids: vec![0; n],
        lengths: Vec::with_capacity(b),
        labels: vec![IGNORE; n],
        masked_positions: Vec::with_capacity(n / 5),
        masked_labels: Vec::with_capacity(n / 5),
        position_ids: if glm { vec![0; n] } else { Vec::new() },
        block_position_ids: if glm { vec![0; n] } else { Vec::new() },
        prefix_len: Vec::new(),
        pair_labels: Vec::new(),
        n_tokens: 0,
        n_scored: 0,
        n_examples: b,
        ..Default::default()
    }
}

/// BERT MLM straight into the batch buffers: one set of scratch buffers for the whole batch,
/// nothing allocated per row or per token.
fn collate_mlm(raw: &RawBatch, ctx: &MaskContext, mlm: &MlmSettings) -> HostBatch {
    let longest = raw.examples.iter().map(|e| framed_len(&e.payload)).max().unwrap_or(1);
    let seq_len = padded_len(longest, ctx, false);
    let mut batch = empty_batch(raw, seq_len, ctx, false);
    let (mut t, mut w) = (Vec::with_capacity(longest), Vec::with_capacity(longest));
    let mut scratch = MaskScratch::default();
    for (r, ex) in raw.examples.iter().enumerate() {
        let (b_start, pair) = frame_bert_into(&ex.payload, &ctx.ids, &mut t, &mut w);
        let (n, base) = (t.len(), r * seq_len);
        let mut rng = Rng::keyed(ctx.seed, ctx.stream, &[ex.epoch, ex.index]);
        let labels = &mut batch.labels[base..base + n];
        mask_sequence_into(&mut t, &w, &ctx.special, mlm, &mut rng, labels, &mut scratch);
        for (j, &l) in labels.iter().enumerate() {
            if l != IGNORE {
                batch.masked_positions.push((base + j) as i64);
                batch.masked_labels.push(l);
            }
        }
        for (dst, &id) in batch.input_ids[base..base + n].iter_mut().zip(&t) {
            *dst = id as i64;
        }
        batch.token_type_ids[base + b_start..base + n].fill(1);
        if let Some(p) = pair {
            batch.pair_labels.push(p);
        }
        batch.lengths.push(n as i64);
        batch.n_tokens += n;
    }
    batch.n_scored = batch.masked_positions.len();
    batch
}

/// GLM samples into the batch buffers (segment ids stay 0: GLM has none).
fn collate_glm(rows: Vec<GlmSample>, raw: &RawBatch, ctx: &MaskContext) -> HostBatch {
    let longest = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(1);
    let seq_len = padded_len(longest, ctx, true);
    let mut batch = empty_batch(raw, seq_len, ctx, true);
    for (r, row) in rows.into_iter().enumerate() {
        let (base, n) = (r * seq_len, row.input_ids.len());
        for (j, (&t, &l)) in row.input_ids.iter().zip(&row.labels).enumerate() {
            batch.input_ids[base + j] = t as i64;
            batch.labels[base + j] = l;
            if l != IGNORE {
                batch.masked_positions.push((base + j) as i64);
                batch.masked_labels.push(l);
            }
        }
        batch.position_ids[base..base + row.position_ids.len()].copy_from_slice(&row.position_ids);
        batch.block_position_ids[base..base + row.block_position_ids.len()].copy_from_slice(&row.block_position_ids);
        batch.prefix_len.push(row.sep as i64);
        batch.lengths.push(n as i64);
        batch.n_tokens += n;
    }
    batch.n_scored = batch.masked_positions.len();
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MaskUnit, Selection};
    use crate::data::pairs::PairInstance;
    use crate::data::stream::{Cursor, Example};

    pub(crate) fn ctx() -> MaskContext {
        let ids = SpecialIds { cls: 1, sep: 2, pad: 0, mask: 3, unk: 4 };
        let mut special = vec![false; 100];
        for t in [0, 1, 2, 3] {
            special[t] = true;
        }
        MaskContext {
            seed: 5,
            stream: Purpose::Mask,
            corruption: Corruption::Mlm(MlmSettings::from_objective(&crate::config::ObjectiveConfig::default(), 3, 100)),
            special: Arc::new(special),
            ids,
            max_seq_len: 32,
        }
    }

    fn seg(n: usize) -> Segment {
        Segment { ids: (0..n as u32).map(|k| 10 + k % 80).collect(), word_start: vec![true; n], sentence_ends: vec![n as u32] }
    }

    fn raw(lens: &[usize]) -> RawBatch {
        let examples = lens.iter().enumerate().map(|(i, &n)| Example { index: i as u64, epoch: 0, payload: Payload::Single(seg(n)), positions_from: None }).collect();
        RawBatch { seq: 7, examples, cursor: Cursor::default() }
    }

    #[test]
    fn rows_are_framed_padded_to_a_multiple_of_8_and_counted() {
        let b = mask_and_collate(&raw(&[5, 11]), &ctx());
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
        let b = mask_and_collate(&raw(&[29]), &ctx());
        assert_eq!(b.seq_len, 32);
        let mut c = ctx();
        c.max_seq_len = 31;
        let b = mask_and_collate(&raw(&[29]), &c);
        assert_eq!(b.seq_len, 31);
    }

    #[test]
    fn pairs_get_two_separators_segment_ids_and_their_label() {
        let pair = PairInstance { a: seg(3), b: seg(4), label: 1 };
        let r = RawBatch { seq: 0, examples: vec![Example { index: 0, epoch: 0, payload: Payload::Pair(pair), positions_from: None }], cursor: Cursor::default() };
        let b = mask_and_collate(&r, &ctx());
        assert_eq!(b.lengths, vec![10]);
        assert_eq!((b.input_ids[0], b.input_ids[4], b.input_ids[9]), (1, 2, 2));
        assert_eq!(b.row(&b.token_type_ids, 0), &[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
        assert_eq!(b.pair_labels, vec![1]);
    }

    /// The batch path (scratch buffers, straight into the batch) masks every row exactly as
    /// `mask_sequence` does on that row alone, for each selection and unit.
    #[test]
    fn batch_masking_equals_row_by_row_masking() {
        use crate::masking::mlm::mask_sequence;
        for (selection, unit) in [(Selection::Exact, MaskUnit::Token), (Selection::Bernoulli, MaskUnit::Token), (Selection::Bernoulli, MaskUnit::Word), (Selection::Exact, MaskUnit::Span)] {
            let mut c = ctx();
            c.max_seq_len = 64;
            if let Corruption::Mlm(m) = &mut c.corruption {
                m.objective.selection = selection;
                m.objective.unit = unit;
            }
            let Corruption::Mlm(m) = c.corruption.clone() else { unreachable!() };
            let mut examples = Vec::new();
            for i in 0..12u64 {
                let mut a = seg(5 + i as usize * 3);
                a.word_start.iter_mut().enumerate().for_each(|(k, w)| *w = k % 3 != 1);
                let payload = if i % 2 == 0 { Payload::Single(a) } else { Payload::Pair(PairInstance { a, b: seg(7), label: (i % 4 == 1) as u8 as _ }) };
                examples.push(Example { index: 100 + i, epoch: 2, payload, positions_from: None });
            }
            let raw = RawBatch { seq: 3, examples, cursor: Cursor::default() };
            let b = mask_and_collate(&raw, &c);
            for (r, ex) in raw.examples.iter().enumerate() {
                let (mut t, mut w) = (Vec::new(), Vec::new());
                frame_bert_into(&ex.payload, &c.ids, &mut t, &mut w);
                let mut rng = Rng::keyed(c.seed, c.stream, &[ex.epoch, ex.index]);
                let labels = mask_sequence(&mut t, &w, &c.special, &m, &mut rng);
                let ids: Vec<i64> = t.iter().map(|&x| x as i64).collect();
                assert_eq!(b.row(&b.input_ids, r), &ids[..], "{selection:?} {unit:?} row {r}");
                assert_eq!(b.row(&b.labels, r), &labels[..], "{selection:?} {unit:?} row {r}");
            }
            assert!(b.n_scored > 0);
        }
    }
}
