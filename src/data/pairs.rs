//! Sentence-pair instances for next sentence prediction (NSP) and sentence-order prediction
//! (SOP), built as Google's `create_instances_from_document` (google-research/bert,
//! `create_pretraining_data.py`) does.
//!
//! * Target length `max_num_tokens` (= `max_seq_len - 3`), or with `short_seq_prob` a random
//!   shorter one in `[2, max_num_tokens]`, drawn once per document.
//! * Whole sentences accumulate into a chunk until the target; the chunk is split at a random
//!   sentence boundary into A and B.
//! * NSP: with probability 0.5 (always, for a one-sentence chunk) B comes from a random *other*
//!   document of the shuffle block (label 1, "NotNext"), and the chunk's unused sentences are
//!   put back; otherwise B is the true continuation (label 0, "IsNext").
//! * SOP: B is always the continuation; with probability 0.5 A and B are swapped (label 1).
//!   A one-sentence chunk is split inside the sentence.
//! * `truncate_seq_pair` trims the longer side one token at a time, from the front or the back
//!   at random, until the pair fits.
//!
//! Where Google's script draws the random document from the whole corpus, we draw it from the
//! shuffle block (the documents in memory), which keeps the stream seekable. A block with a
//! single document has no other document: its chunks are then all true continuations.

use super::packing::Segment;
use super::tokenize::TokSentence;
use crate::rng::Rng;

/// Which sentence-pair task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairTask {
    /// Next sentence prediction.
    Nsp,
    /// Sentence-order prediction.
    Sop,
}

/// Two segments and the pair label (NSP: 1 = B is random; SOP: 1 = swapped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairInstance {
    /// Segment A (token type 0).
    pub a: Segment,
    /// Segment B (token type 1).
    pub b: Segment,
    /// 0: B follows A in the document (NSP) or the pair is in order (SOP); 1: B is random
    /// (NSP) or swapped (SOP).
    pub label: u8,
}

fn concat(sentences: &[&TokSentence]) -> Segment {
    let mut s = Segment::default();
    for t in sentences {
        s.push(t, 0..t.ids.len());
    }
    s
}

/// Google's `truncate_seq_pair`.
pub fn truncate_seq_pair(a: &mut Segment, b: &mut Segment, max_num_tokens: usize, rng: &mut Rng) {
    while a.ids.len() + b.ids.len() > max_num_tokens {
        let t = if a.ids.len() > b.ids.len() { &mut *a } else { &mut *b };
        if rng.next_f64() < 0.5 {
            t.pop_front();
        } else {
            t.pop_back();
        }
    }
}

/// Uniform integer in `[lo, hi]` (Python's `randint`).
fn randint(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + rng.below((hi - lo + 1) as u64) as usize
}

/// Instances from document `doc` of `docs` (each a list of non-empty tokenized sentences).
pub fn create_instances_from_document(
    docs: &[Vec<TokSentence>],
    doc: usize,
    max_num_tokens: usize,
    short_seq_prob: f64,
    task: PairTask,
    rng: &mut Rng,
) -> Vec<PairInstance> {
    let document: Vec<&TokSentence> = docs[doc].iter().filter(|s| !s.ids.is_empty()).collect();
    let mut target = max_num_tokens;
    if rng.next_f64() < short_seq_prob {
        target = randint(rng, 2.min(max_num_tokens), max_num_tokens);
    }
    let others: Vec<usize> = (0..docs.len()).filter(|&d| d != doc && docs[d].iter().any(|s| !s.ids.is_empty())).collect();
    let mut out = Vec::new();
    let mut chunk: Vec<&TokSentence> = Vec::new();
    let mut chunk_len = 0;
    let mut i = 0;
    while i < document.len() {
        chunk.push(document[i]);
        chunk_len += document[i].ids.len();
        if i == document.len() - 1 || chunk_len >= target {
            if let Some(inst) = make_instance(&chunk, docs, &others, target, max_num_tokens, task, rng, &mut i) {
                out.push(inst);
            }
            chunk.clear();
            chunk_len = 0;
        }
        i += 1;
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn make_instance(
    chunk: &[&TokSentence],
    docs: &[Vec<TokSentence>],
    others: &[usize],
    target: usize,
    max_num_tokens: usize,
    task: PairTask,
    rng: &mut Rng,
    i: &mut usize,
) -> Option<PairInstance> {
    let a_end = if chunk.len() >= 2 { randint(rng, 1, chunk.len() - 1) } else { 1 };
    let (mut a, mut b, label) = match task {
        PairTask::Nsp => {
            let mut a = concat(&chunk[..a_end]);
            let random_next = (chunk.len() == 1 || rng.next_f64() < 0.5) && !others.is_empty();
            if random_next {
                let target_b = target.saturating_sub(a.ids.len()).max(1);
                let other: Vec<&TokSentence> = docs[others[rng.below(others.len() as u64) as usize]].iter().filter(|s| !s.ids.is_empty()).collect();
                let start = rng.below(other.len() as u64) as usize;
                let mut b = Segment::default();
                for s in &other[start..] {
                    b.push(s, 0..s.ids.len());
                    if b.ids.len() >= target_b {
                        break;
                    }
                }
                // The unused sentences of the chunk go back to the document.
                *i -= chunk.len() - a_end;
                (a, b, 1)
            } else if chunk.len() == 1 {
                // No other document and a single sentence: split the sentence itself.
                let s = chunk[0];
                if s.ids.len() < 2 {
                    return None;
                }
                let cut = randint(rng, 1, s.ids.len() - 1);
                a = Segment::default();
                a.push(s, 0..cut);
                let mut b = Segment::default();
                b.push(s, cut..s.ids.len());
                (a, b, 0)
            } else {
                (a, concat(&chunk[a_end..]), 0)
            }
        }
        PairTask::Sop => {
            let (a, b) = if chunk.len() >= 2 {
                (concat(&chunk[..a_end]), concat(&chunk[a_end..]))
            } else {
                let s = chunk[0];
                if s.ids.len() < 2 {
                    return None;
                }
                let cut = randint(rng, 1, s.ids.len() - 1);
                let (mut a, mut b) = (Segment::default(), Segment::default());
                a.push(s, 0..cut);
                b.push(s, cut..s.ids.len());
                (a, b)
            };
            if rng.next_f64() < 0.5 {
                (b, a, 1)
            } else {
                (a, b, 0)
            }
        }
    };
    truncate_seq_pair(&mut a, &mut b, max_num_tokens, rng);
    (!a.ids.is_empty() && !b.ids.is_empty()).then_some(PairInstance { a, b, label })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Purpose;

    /// Document `d`'s sentence `s` holds ids `d*1000 + s*10 + k`, so provenance is visible.
    fn corpus(n_docs: usize, rng: &mut Rng) -> Vec<Vec<TokSentence>> {
        (0..n_docs)
            .map(|d| {
                (0..1 + rng.below(12) as usize)
                    .map(|s| {
                        let n = 1 + rng.below(9) as usize;
                        TokSentence { ids: (0..n).map(|k| (d * 1000 + s * 10 + k) as u32).collect(), word_start: vec![true; n] }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn nsp_labels_balance_near_half_negatives_come_from_other_documents_and_pairs_fit() {
        let (mut pos, mut neg) = (0usize, 0usize);
        for seed in 0..400 {
            let mut rng = Rng::keyed(seed, Purpose::Block, &[]);
            let docs = corpus(6, &mut rng);
            for d in 0..docs.len() {
                for inst in create_instances_from_document(&docs, d, 29, 0.1, PairTask::Nsp, &mut rng) {
                    assert!(inst.a.ids.len() + inst.b.ids.len() <= 29);
                    assert!(!inst.a.ids.is_empty() && !inst.b.ids.is_empty());
                    assert!(inst.a.ids.iter().all(|&t| t as usize / 1000 == d), "A is from its own document");
                    let b_doc = inst.b.ids[0] as usize / 1000;
                    assert!(inst.b.ids.iter().all(|&t| t as usize / 1000 == b_doc), "B is from one document");
                    if inst.label == 1 {
                        neg += 1;
                        assert_ne!(b_doc, d, "a negative comes from another document");
                    } else {
                        pos += 1;
                        assert_eq!(b_doc, d);
                        assert!(inst.a.ids.last() < inst.b.ids.first(), "B continues A");
                    }
                }
            }
        }
        let share = neg as f64 / (pos + neg) as f64;
        // One-sentence chunks are always negatives, so the share sits a little above one half.
        assert!((0.45..0.65).contains(&share), "negatives {share} of {}", pos + neg);
    }

    #[test]
    fn sop_swaps_half_the_pairs_and_keeps_both_from_the_same_document() {
        let (mut swapped, mut total) = (0usize, 0usize);
        for seed in 0..300 {
            let mut rng = Rng::keyed(seed, Purpose::Block, &[]);
            let docs = corpus(4, &mut rng);
            for d in 0..docs.len() {
                for inst in create_instances_from_document(&docs, d, 40, 0.0, PairTask::Sop, &mut rng) {
                    total += 1;
                    let (first, second) = if inst.label == 1 { (&inst.b, &inst.a) } else { (&inst.a, &inst.b) };
                    assert!(first.ids.last() < second.ids.first(), "order encodes the label");
                    assert!(inst.a.ids.iter().chain(&inst.b.ids).all(|&t| t as usize / 1000 == d));
                    swapped += inst.label as usize;
                }
            }
        }
        let share = swapped as f64 / total as f64;
        assert!((share - 0.5).abs() < 0.04, "{share} of {total}");
    }

    #[test]
    fn truncation_trims_the_longer_side_from_either_end() {
        let mut rng = Rng::keyed(1, Purpose::Block, &[]);
        let s = |n: u32, base: u32| TokSentence { ids: (base..base + n).collect(), word_start: vec![true; n as usize] };
        let (mut fronts, mut backs) = (0, 0);
        for _ in 0..200 {
            let (mut a, mut b) = (concat(&[&s(10, 0)]), concat(&[&s(3, 100)]));
            truncate_seq_pair(&mut a, &mut b, 9, &mut rng);
            assert_eq!((a.ids.len(), b.ids.len()), (6, 3));
            assert_eq!(a.sentence_ends.last(), Some(&6));
            fronts += (a.ids[0] > 0) as u32;
            backs += (*a.ids.last().unwrap() < 9) as u32;
        }
        assert!(fronts > 0 && backs > 0);
    }
}
