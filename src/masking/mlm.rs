//! BERT masked language modelling, the CPU half: which positions are scored and what the
//! model sees there. Pure and seeded; BERT's recipe (Devlin et al. 2019, §3.1 and appendix A.1:
//! 15 % of positions, 80/10/10) with whole-word masking as google-research/bert does it.
//!
//! * Candidates are the non-special tokens (or whole words, when `whole_word` is on: a word is
//!   a word-start token plus its continuations, as the tokenizer's word ids say).
//! * `exact` selection scores `min(max_predictions, max(1, round(len * mask_prob)))` positions,
//!   like Google's `create_pretraining_data.py` (Python's round: ties to even); `bernoulli`
//!   scores each candidate with probability `mask_prob`, like Hugging Face's collator.
//! * Each scored position becomes `[MASK]` with `mask_token_prob`, a uniformly random id with
//!   `random_token_prob`, and stays as it is otherwise (80 / 10 / 10 by default).

use crate::batch::IGNORE;
use crate::config::{MaskUnit, ObjectiveConfig, Selection};
use crate::rng::Rng;

/// What masking needs: `[objective]` as the config gives it (`mask_prob`, the 80/10/10 split,
/// `selection`, `max_predictions`, `unit`, SpanBERT's `span_p` / `span_max`), the tokenizer's
/// `[MASK]` id, and the vocabulary random replacements are drawn from (`0..vocab_size`).
#[derive(Debug, Clone, Copy)]
pub struct MlmSettings {
    /// The `[objective]` keys.
    pub objective: ObjectiveConfig,
    /// `[MASK]` id.
    pub mask_id: u32,
    /// Random replacements are drawn from `0..vocab_size`.
    pub vocab_size: usize,
}

impl MlmSettings {
    /// `[objective]`'s masking keys with the tokenizer's `[MASK]` id and vocabulary size.
    pub fn from_objective(objective: &ObjectiveConfig, mask_id: u32, vocab_size: usize) -> Self {
        MlmSettings { objective: *objective, mask_id, vocab_size }
    }
}

/// Buffers the masking of one sequence needs, reused from row to row so the Masker's loop
/// allocates nothing per row.
#[derive(Debug, Default)]
pub struct MaskScratch {
    groups: Vec<(usize, usize)>,
    chosen: Vec<usize>,
}

/// Groups of candidate positions (single tokens, or whole words) into `groups`.
fn candidate_groups_into(tokens: &[u32], word_start: &[bool], special: &[bool], whole_word: bool, groups: &mut Vec<(usize, usize)>) {
    groups.clear();
    let mut prev_special = true;
    for (i, &t) in tokens.iter().enumerate() {
        if special.get(t as usize).copied().unwrap_or(false) {
            prev_special = true;
            continue;
        }
        let continues = whole_word && !prev_special && !word_start[i];
        match groups.last_mut() {
            Some(g) if continues => g.1 = i + 1,
            _ => groups.push((i, i + 1)),
        }
        prev_special = false;
    }
}

fn candidate_groups(tokens: &[u32], word_start: &[bool], special: &[bool], whole_word: bool) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    candidate_groups_into(tokens, word_start, special, whole_word, &mut groups);
    groups
}

/// Masks one sequence in place and returns its labels (`IGNORE` where unscored).
///
/// `tokens` already carries its special tokens; `word_start` is parallel to it; `special`
/// flags ids that are never chosen.
pub fn mask_sequence(tokens: &mut [u32], word_start: &[bool], special: &[bool], s: &MlmSettings, rng: &mut Rng) -> Vec<i64> {
    let mut labels = vec![IGNORE; tokens.len()];
    mask_sequence_into(tokens, word_start, special, s, rng, &mut labels, &mut MaskScratch::default());
    labels
}

/// [`mask_sequence`] writing the labels into `labels` (as long as `tokens`, all `IGNORE` on
/// entry), with reusable buffers: the Masker's hot path.
pub fn mask_sequence_into(tokens: &mut [u32], word_start: &[bool], special: &[bool], s: &MlmSettings, rng: &mut Rng, labels: &mut [i64], scratch: &mut MaskScratch) {
    if s.objective.unit == MaskUnit::Span {
        labels.copy_from_slice(&mask_spans(tokens, word_start, special, s, rng));
        return;
    }
    let MaskScratch { groups, chosen } = scratch;
    candidate_groups_into(tokens, word_start, special, s.objective.unit == MaskUnit::Word, groups);
    chosen.clear();
    match s.objective.selection {
        Selection::Exact => {
            let target = budget(tokens.len(), s);
            rng.shuffle(groups);
            for &(a, b) in groups.iter() {
                if chosen.len() >= target {
                    break;
                }
                if chosen.len() + (b - a) > target {
                    continue;
                }
                chosen.extend(a..b);
            }
            chosen.sort_unstable();
        }
        Selection::Bernoulli => {
            // Groups are in position order, so `chosen` comes out sorted.
            for &(a, b) in groups.iter() {
                if rng.next_f64() < s.objective.mask_prob {
                    chosen.extend(a..b);
                }
            }
        }
    }
    for &i in chosen.iter() {
        labels[i] = tokens[i] as i64;
        match draw_replacement(s, rng) {
            Replace::Mask => tokens[i] = s.mask_id,
            Replace::Random => tokens[i] = rng.below(s.vocab_size as u64) as u32,
            Replace::Keep => {}
        }
    }
}

/// Masking budget of a sequence: `round(len * mask_prob)` (ties to even), at least 1, capped.
fn budget(len: usize, s: &MlmSettings) -> usize {
    let target = ((len as f64) * s.objective.mask_prob).round_ties_even().max(1.0) as usize;
    if s.objective.max_predictions > 0 {
        target.min(s.objective.max_predictions)
    } else {
        target
    }
}

/// One replacement draw: `[MASK]`, a random id, or the token itself.
enum Replace {
    Mask,
    Random,
    Keep,
}

fn draw_replacement(s: &MlmSettings, rng: &mut Rng) -> Replace {
    let r = rng.next_f64();
    if r < s.objective.mask_token_prob {
        Replace::Mask
    } else if r < s.objective.mask_token_prob + s.objective.random_token_prob {
        Replace::Random
    } else {
        Replace::Keep
    }
}

/// SpanBERT masking: spans of whole words with lengths ~ Geometric(p) clipped at `span_max`,
/// at uniformly random starting words, until the budget is spent; spans never overlap and
/// never exceed the budget. The 80/10/10 replacement is decided per span, as in SpanBERT.
fn mask_spans(tokens: &mut [u32], word_start: &[bool], special: &[bool], s: &MlmSettings, rng: &mut Rng) -> Vec<i64> {
    let mut labels = vec![IGNORE; tokens.len()];
    let words = candidate_groups(tokens, word_start, special, true);
    if words.is_empty() {
        return labels;
    }
    let target = budget(tokens.len(), s);
    let mut taken = vec![false; words.len()];
    let mut covered = 0;
    let ln_q = (1.0 - s.objective.span_p).ln();
    for _ in 0..20 * words.len() {
        if covered >= target {
            break;
        }
        // Geometric on {1, 2, ...} by inversion.
        let u = 1.0 - rng.next_f64();
        let len = ((u.ln() / ln_q).ceil().max(1.0) as usize).min(s.objective.span_max.max(1));
        let w0 = rng.below(words.len() as u64) as usize;
        let w1 = (w0 + len).min(words.len());
        let n_tok: usize = words[w0..w1].iter().map(|(a, b)| b - a).sum();
        if taken[w0..w1].iter().any(|&t| t) || covered + n_tok > target {
            continue;
        }
        let how = draw_replacement(s, rng);
        for w in w0..w1 {
            taken[w] = true;
            let (a, b) = words[w];
            for i in a..b {
                labels[i] = tokens[i] as i64;
                match how {
                    Replace::Mask => tokens[i] = s.mask_id,
                    Replace::Random => tokens[i] = rng.below(s.vocab_size as u64) as u32,
                    Replace::Keep => {}
                }
            }
        }
        covered += n_tok;
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Purpose;

    const CLS: u32 = 1;
    const SEP: u32 = 2;
    const MASK: u32 = 3;
    const V: usize = 1000;

    fn settings(selection: Selection, whole_word: bool) -> MlmSettings {
        let objective = ObjectiveConfig { selection, unit: if whole_word { MaskUnit::Word } else { MaskUnit::Token }, ..ObjectiveConfig::default() };
        MlmSettings { objective, mask_id: MASK, vocab_size: V }
    }

    fn special() -> Vec<bool> {
        let mut s = vec![false; V];
        for t in [0, CLS, SEP, MASK] {
            s[t as usize] = true;
        }
        s
    }

    /// `[CLS] 10 11 .. [SEP]` with `n` text tokens; every third token continues a word.
    fn seq(n: usize) -> (Vec<u32>, Vec<bool>) {
        let mut t = vec![CLS];
        t.extend((0..n as u32).map(|i| 10 + i));
        t.push(SEP);
        let ws = (0..t.len()).map(|i| i % 3 != 2).collect();
        (t, ws)
    }

    #[test]
    fn special_tokens_are_never_chosen_and_labels_hold_the_originals() {
        let sp = special();
        for seed in 0..500 {
            let (orig, ws) = seq(60);
            let mut t = orig.clone();
            let labels = mask_sequence(&mut t, &ws, &sp, &settings(Selection::Bernoulli, seed % 2 == 0), &mut Rng::keyed(seed, Purpose::Mask, &[]));
            assert_eq!(labels[0], IGNORE);
            assert_eq!(*labels.last().unwrap(), IGNORE);
            assert_eq!((t[0], *t.last().unwrap()), (CLS, SEP));
            for (i, &l) in labels.iter().enumerate() {
                if l == IGNORE {
                    assert_eq!(t[i], orig[i], "unscored positions are unchanged");
                } else {
                    assert_eq!(l, orig[i] as i64);
                }
            }
        }
    }

    #[test]
    fn exact_selection_scores_round_of_fifteen_percent() {
        let sp = special();
        for (n, want) in [(18usize, 3usize), (98, 15), (126, 19), (1, 1)] {
            let (mut t, ws) = seq(n);
            let labels = mask_sequence(&mut t, &ws, &sp, &settings(Selection::Exact, false), &mut Rng::keyed(n as u64, Purpose::Mask, &[]));
            let got = labels.iter().filter(|&&l| l != IGNORE).count();
            // len includes [CLS] and [SEP], as in Google's script.
            let expect = (((n + 2) as f64) * 0.15).round_ties_even().max(1.0) as usize;
            assert_eq!(got, expect.min(n), "n={n}");
            assert!(want > 0);
        }
    }

    #[test]
    fn bernoulli_rate_and_80_10_10_split_hold_over_many_seeds() {
        let sp = special();
        let (mut scored, mut total, mut masked, mut random, mut kept) = (0usize, 0usize, 0usize, 0usize, 0usize);
        for seed in 0..3000 {
            let (orig, ws) = seq(126);
            let mut t = orig.clone();
            let labels = mask_sequence(&mut t, &ws, &sp, &settings(Selection::Bernoulli, false), &mut Rng::keyed(seed, Purpose::Mask, &[seed]));
            total += 126;
            for (i, &l) in labels.iter().enumerate() {
                if l == IGNORE {
                    continue;
                }
                scored += 1;
                if t[i] == MASK {
                    masked += 1;
                } else if t[i] == orig[i] {
                    kept += 1;
                } else {
                    random += 1;
                }
            }
        }
        let rate = scored as f64 / total as f64;
        assert!((rate - 0.15).abs() < 0.003, "rate {rate}");
        let f = |x: usize| x as f64 / scored as f64;
        // A random draw can hit the original id (1 / V): it then counts as kept.
        assert!((f(masked) - 0.8).abs() < 0.01, "mask {}", f(masked));
        assert!((f(random) - 0.1).abs() < 0.01, "random {}", f(random));
        assert!((f(kept) - 0.1).abs() < 0.01, "kept {}", f(kept));
    }

    #[test]
    fn whole_word_masking_scores_all_pieces_of_a_word_together() {
        let sp = special();
        for seed in 0..300 {
            let (mut t, ws) = seq(90);
            let labels = mask_sequence(&mut t, &ws, &sp, &settings(Selection::Exact, true), &mut Rng::keyed(seed, Purpose::Mask, &[]));
            let groups = candidate_groups(&seq(90).0, &ws, &sp, true);
            for (a, b) in groups {
                let n = (a..b).filter(|&i| labels[i] != IGNORE).count();
                assert!(n == 0 || n == b - a, "word {a}..{b} partly scored");
            }
        }
    }

    #[test]
    fn span_masking_covers_the_budget_with_whole_word_spans() {
        let sp = special();
        let mut s = settings(Selection::Exact, true);
        s.objective.unit = MaskUnit::Span;
        let (mut scored, mut total, mut spans, mut span_words) = (0usize, 0usize, 0usize, 0usize);
        for seed in 0..500 {
            let (orig, ws) = seq(120);
            let mut t = orig.clone();
            let labels = mask_sequence(&mut t, &ws, &sp, &s, &mut Rng::keyed(seed, Purpose::Mask, &[]));
            let n = labels.iter().filter(|&&l| l != IGNORE).count();
            assert!(n <= budget(t.len(), &s), "never over budget");
            scored += n;
            total += t.len();
            let words = candidate_groups(&orig, &ws, &sp, true);
            let chosen: Vec<bool> = words.iter().map(|&(a, b)| {
                let k = (a..b).filter(|&i| labels[i] != IGNORE).count();
                assert!(k == 0 || k == b - a, "a word is partly masked");
                k > 0
            }).collect();
            // Runs of chosen words are spans (adjacent spans merge here, so this undercounts).
            let mut i = 0;
            while i < chosen.len() {
                if chosen[i] {
                    let j = (i..chosen.len()).find(|&j| !chosen[j]).unwrap_or(chosen.len());
                    spans += 1;
                    span_words += j - i;
                    i = j;
                } else {
                    i += 1;
                }
            }
        }
        let rate = scored as f64 / total as f64;
        assert!((rate - 0.15).abs() < 0.01, "rate {rate}");
        let mean = span_words as f64 / spans as f64;
        assert!(mean > 2.0, "spans are multi-word on average: {mean}");
    }

    #[test]
    fn same_key_gives_the_same_masks() {
        let sp = special();
        let run = |k: u64| {
            let (mut t, ws) = seq(100);
            let l = mask_sequence(&mut t, &ws, &sp, &settings(Selection::Exact, false), &mut Rng::keyed(9, Purpose::Mask, &[0, k]));
            (t, l)
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
