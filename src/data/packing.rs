//! Packing a document's sentences into sequences of at most `max_tokens` tokens.
//!
//! Sentences are accumulated whole until the next one would not fit; a sentence longer than
//! the budget is cut into budget-sized pieces. A sequence never mixes two documents (RoBERTa's
//! DOC-SENTENCES), so document boundaries survive packing. `max_tokens` is the budget for
//! text only: the Masker adds `[CLS]` and `[SEP]` around each segment.

use super::tokenize::TokSentence;

/// Tokens of one future sequence (without special tokens).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segment {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Word-start flags, parallel to `ids`.
    pub word_start: Vec<bool>,
    /// Exclusive end index of every sentence (or sentence piece) in `ids`, ascending; the last
    /// is `ids.len()`. GLM's sentence-level blanks use them.
    pub sentence_ends: Vec<u32>,
}

impl Segment {
    /// Appends `s[range]` as one sentence (piece).
    pub fn push(&mut self, s: &TokSentence, range: std::ops::Range<usize>) {
        self.ids.extend_from_slice(&s.ids[range.clone()]);
        self.word_start.extend_from_slice(&s.word_start[range]);
        self.sentence_ends.push(self.ids.len() as u32);
    }

    /// Appends another segment.
    pub fn extend(&mut self, other: &Segment) {
        let base = self.ids.len() as u32;
        self.ids.extend_from_slice(&other.ids);
        self.word_start.extend_from_slice(&other.word_start);
        self.sentence_ends.extend(other.sentence_ends.iter().map(|e| e + base));
    }

    /// Drops the first token (for `truncate_seq_pair`).
    pub fn pop_front(&mut self) {
        self.ids.remove(0);
        self.word_start.remove(0);
        self.sentence_ends.retain_mut(|e| {
            *e -= 1;
            *e > 0
        });
    }

    /// Drops the last token.
    pub fn pop_back(&mut self) {
        self.ids.pop();
        self.word_start.pop();
        let n = self.ids.len() as u32;
        self.sentence_ends.retain(|&e| e < n);
        if n > 0 {
            self.sentence_ends.push(n);
        }
        self.sentence_ends.dedup();
    }
}

/// Packs `sentences` (one document) into segments of at most `max_tokens` tokens each.
///
/// ```
/// use pretune::data::packing::pack_document;
/// use pretune::data::tokenize::TokSentence;
/// let s = |n: usize| TokSentence { ids: vec![7; n], word_start: vec![true; n] };
/// let segs = pack_document(&[s(3), s(3), s(5)], 6);
/// assert_eq!(segs.iter().map(|g| g.ids.len()).collect::<Vec<_>>(), vec![6, 5]);
/// ```
pub fn pack_document(sentences: &[TokSentence], max_tokens: usize) -> Vec<Segment> {
    assert!(max_tokens > 0, "packing budget must be positive");
    let mut out = Vec::new();
    let mut cur = Segment::default();
    for s in sentences.iter().filter(|s| !s.ids.is_empty()) {
        if cur.ids.len() + s.ids.len() > max_tokens && !cur.ids.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if s.ids.len() <= max_tokens {
            cur.push(s, 0..s.ids.len());
            continue;
        }
        // An over-long sentence: full pieces go out on their own, the remainder stays open.
        let mut start = 0;
        while s.ids.len() - start > max_tokens {
            let mut piece = Segment::default();
            piece.push(s, start..start + max_tokens);
            out.push(piece);
            start += max_tokens;
        }
        cur.push(s, start..s.ids.len());
    }
    if !cur.ids.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Rng, Purpose};

    fn sent(first: u32, n: usize) -> TokSentence {
        TokSentence { ids: (first..first + n as u32).collect(), word_start: vec![true; n] }
    }

    #[test]
    fn packing_never_exceeds_budget_and_keeps_every_token_in_order() {
        for seed in 0..200 {
            let mut r = Rng::keyed(seed, Purpose::Mask, &[]);
            let budget = 1 + r.below(40) as usize;
            let mut next = 0;
            let doc: Vec<TokSentence> = (0..r.below(12))
                .map(|_| {
                    let n = r.below(60) as usize;
                    let s = sent(next, n);
                    next += n as u32;
                    s
                })
                .collect();
            let segs = pack_document(&doc, budget);
            assert!(segs.iter().all(|s| !s.ids.is_empty() && s.ids.len() <= budget));
            let flat: Vec<u32> = segs.iter().flat_map(|s| s.ids.iter().copied()).collect();
            assert_eq!(flat, (0..next).collect::<Vec<_>>(), "seed {seed}");
        }
    }

    #[test]
    fn sentences_stay_whole_when_they_fit() {
        let segs = pack_document(&[sent(0, 4), sent(4, 4), sent(8, 4)], 9);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].ids, (0..8).collect::<Vec<_>>());
        assert_eq!(segs[1].ids, (8..12).collect::<Vec<_>>());
    }
}
