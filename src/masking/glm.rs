//! GLM autoregressive blank infilling, the CPU half (Du et al. 2022, §2.1-2.2: Poisson(3)
//! spans, Part A / Part B, 2-D positions; THUDM/GLM `blocklm_utils.py`). Pure integer bookkeeping on token ids, seeded per example.
//!
//! Input `x` starts with `[CLS]`. Spans `(s, e)` never touch and never cover `[CLS]`.
//! * **Part A**: `x` with each span replaced by one mask token (`[MASK]`, `[sMASK]` or
//!   `[gMASK]` by mode); positions `0..|A|`, block positions 0; no loss.
//! * **Part B**: per span, in random order: inputs `[sop] + x[s..e]`, targets `x[s..e] + [eop]`;
//!   every position id is the span's mask index in Part A; block positions `1..=|span|+1`.
//! * `sep = |A|`: attention is bidirectional inside Part A, causal in Part B, and Part B sees
//!   all of Part A.

use crate::batch::IGNORE;
use crate::config::GlmObjectiveConfig;
use crate::rng::Rng;

/// Token ids GLM needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlmIds {
    /// `[CLS]`, first token of every sample.
    pub cls: u32,
    /// Token-level blank.
    pub mask: u32,
    /// Sentence-level blank.
    pub smask: u32,
    /// Document-level (generation) blank.
    pub gmask: u32,
    /// Start of a Part B span.
    pub sop: u32,
    /// End of a Part B span (a target only).
    pub eop: u32,
}

/// What the corruption needs: `[objective.glm]` as the config gives it, and the special ids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlmSettings {
    /// Span lengths and shares, the per-batch mode chances, Part B order.
    pub blanks: GlmObjectiveConfig,
    /// Special ids.
    pub ids: GlmIds,
}

/// Which blanks a batch uses (all samples of a batch share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlmMode {
    /// Poisson spans covering 15 %.
    Token,
    /// Whole sentences covering 15 %.
    Sentence,
    /// One long blank (or the prefix-LM layout).
    Document,
}

impl GlmMode {
    /// The mode for a batch: token with `bert_prob`, sentence with `gap_sentence_prob`,
    /// document otherwise.
    pub fn draw(rng: &mut Rng, bert_prob: f64, gap_sentence_prob: f64) -> Self {
        let r = rng.next_f64();
        if r < bert_prob {
            GlmMode::Token
        } else if r < bert_prob + gap_sentence_prob {
            GlmMode::Sentence
        } else {
            GlmMode::Document
        }
    }
}

/// One corrupted sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlmSample {
    /// Part A then Part B inputs.
    pub input_ids: Vec<u32>,
    /// Targets where a loss is taken (Part B), `IGNORE` elsewhere.
    pub labels: Vec<i64>,
    /// First position row.
    pub position_ids: Vec<i64>,
    /// Second (block) position row.
    pub block_position_ids: Vec<i64>,
    /// Length of Part A (the bidirectional prefix).
    pub sep: usize,
    /// The spans blanked, in Part B order, as `(start, end)` in `x`.
    pub spans: Vec<(usize, usize)>,
}

/// Poisson(λ) weights for lengths `1..max_len` (the reference's `rng.choices` weights).
fn poisson_weights(lambda: f64, max_len: usize) -> Vec<f64> {
    let mut w = Vec::with_capacity(max_len.saturating_sub(1));
    let mut p = (-lambda).exp(); // k = 0
    for k in 1..max_len {
        p *= lambda / k as f64;
        w.push(p);
    }
    w
}

fn draw_weighted(w: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = w.iter().sum();
    let mut r = rng.next_f64() * total;
    for (i, &x) in w.iter().enumerate() {
        if r < x {
            return i;
        }
        r -= x;
    }
    w.len() - 1
}

/// `sample_spans`: places spans of `lengths` uniformly among all non-touching placements in
/// `total` tokens starting at `offset`.
fn sample_spans(lengths: &[usize], total: usize, offset: usize, rng: &mut Rng) -> Vec<(usize, usize)> {
    let blank = total - lengths.iter().sum::<usize>();
    let m = blank + 1 - lengths.len();
    let mut places: Vec<usize> = lengths.iter().map(|_| rng.below(m as u64 + 1) as usize).collect();
    places.sort_unstable();
    let mut offset = offset;
    let mut spans = Vec::with_capacity(lengths.len());
    for (place, &len) in places.iter().zip(lengths) {
        spans.push((offset + place, offset + place + len));
        offset += len + 1;
    }
    spans
}

/// Token-level spans: Poisson lengths until `mask_ratio` is covered, as many as fit.
pub fn token_spans(x_len: usize, s: &GlmSettings, rng: &mut Rng) -> Vec<(usize, usize)> {
    let avail = x_len.saturating_sub(1); // everything after [CLS]
    if avail < 2 {
        return Vec::new();
    }
    let weights = poisson_weights(s.blanks.avg_block_length, s.blanks.max_block_length);
    let floor = ((s.blanks.mask_ratio * x_len as f64) as usize).max(1);
    let mut lengths = Vec::new();
    while lengths.iter().sum::<usize>() < floor {
        lengths.push(1 + draw_weighted(&weights, rng));
    }
    rng.shuffle(&mut lengths);
    // Greedy fit, each span needing one gap token (`sample_span_in_document`).
    let (mut used, mut n) = (0, 0);
    while n < lengths.len() && lengths[n] + used + n <= avail {
        used += lengths[n];
        n += 1;
    }
    sample_spans(&lengths[..n], avail, 1, rng)
}

/// Sentence-level spans: whole sentences (without their final token, the punctuation the
/// reference splits on, so spans never touch) until `gap_sentence_ratio` is covered.
/// `sentence_ends` are exclusive ends in `x` coordinates.
pub fn sentence_spans(x_len: usize, sentence_ends: &[usize], s: &GlmSettings, rng: &mut Rng) -> Vec<(usize, usize)> {
    let mut sentences = Vec::new();
    let mut start = 1;
    for &end in sentence_ends {
        if end > start + 1 {
            sentences.push((start, end - 1));
        }
        start = end;
    }
    rng.shuffle(&mut sentences);
    let want = (s.blanks.gap_sentence_ratio * x_len as f64) as usize;
    let (mut spans, mut covered) = (Vec::new(), 0);
    for (a, b) in sentences {
        spans.push((a, b));
        covered += b - a;
        if covered >= want {
            break;
        }
    }
    spans
}

/// Builds Part A / Part B from `x` and non-touching `spans` (any order).
pub fn make_block_data(x: &[u32], spans: &[(usize, usize)], mask: u32, s: &GlmSettings, rng: &mut Rng) -> GlmSample {
    let mut sorted = spans.to_vec();
    sorted.sort_unstable();
    let mut out = GlmSample::default();
    let mut mask_pos = Vec::with_capacity(sorted.len());
    let mut i = 0;
    for &(a, b) in &sorted {
        out.input_ids.extend_from_slice(&x[i..a]);
        mask_pos.push(out.input_ids.len());
        out.input_ids.push(mask);
        i = b;
    }
    out.input_ids.extend_from_slice(&x[i..]);
    out.sep = out.input_ids.len();
    out.labels = vec![IGNORE; out.sep];
    out.position_ids = (0..out.sep as i64).collect();
    out.block_position_ids = vec![0; out.sep];
    let mut order: Vec<usize> = (0..sorted.len()).collect();
    if s.blanks.shuffle_blocks {
        rng.shuffle(&mut order);
    }
    for k in order {
        let (a, b) = sorted[k];
        out.input_ids.push(s.ids.sop);
        out.input_ids.extend_from_slice(&x[a..b]);
        out.labels.extend(x[a..b].iter().map(|&t| t as i64));
        out.labels.push(s.ids.eop as i64);
        for j in 0..=(b - a) {
            out.position_ids.push(mask_pos[k] as i64);
            out.block_position_ids.push(j as i64 + 1);
        }
        out.spans.push((a, b));
    }
    out
}

/// The prefix-LM layout of document mode: `src + [gMASK, sop] + tgt[..-1]`, loss on `tgt`.
pub fn prefix_lm(x: &[u32], generate: usize, s: &GlmSettings) -> GlmSample {
    let division = x.len() - generate;
    let (src, tgt) = x.split_at(division);
    let mut out = GlmSample { sep: division + 1, spans: vec![(division, x.len())], ..Default::default() };
    out.input_ids.extend_from_slice(src);
    out.input_ids.extend_from_slice(&[s.ids.gmask, s.ids.sop]);
    out.input_ids.extend_from_slice(&tgt[..tgt.len() - 1]);
    out.labels = vec![IGNORE; division + 1];
    out.labels.extend(tgt.iter().map(|&t| t as i64));
    out.position_ids = (0..division as i64).chain(std::iter::repeat_n(division as i64, tgt.len() + 1)).collect();
    out.block_position_ids = std::iter::repeat_n(0, division).chain(0..=tgt.len() as i64).collect();
    out
}

/// The document-mode blank length of a batch: `randint(int(gpt_min_ratio * min_len), max_len - 2)`.
pub fn document_max_gen(lens: &[usize], s: &GlmSettings, rng: &mut Rng) -> usize {
    let (min, max) = (lens.iter().copied().min().unwrap_or(0), lens.iter().copied().max().unwrap_or(0));
    let lo = ((s.blanks.gpt_min_ratio * min as f64) as usize).max(1);
    let hi = max.saturating_sub(2).max(lo);
    lo + rng.below((hi - lo + 1) as u64) as usize
}

/// Corrupts one sample `x` (starting with `[CLS]`) in `mode`. `sentence_ends` are exclusive
/// sentence ends in `x` coordinates; `max_gen` is the batch's document-mode length.
pub fn corrupt(x: &[u32], sentence_ends: &[usize], mode: GlmMode, max_gen: usize, s: &GlmSettings, rng: &mut Rng) -> GlmSample {
    match mode {
        GlmMode::Token => {
            let spans = token_spans(x.len(), s, rng);
            make_block_data(x, &spans, s.ids.mask, s, rng)
        }
        GlmMode::Sentence => {
            let spans = sentence_spans(x.len(), sentence_ends, s, rng);
            make_block_data(x, &spans, s.ids.smask, s, rng)
        }
        GlmMode::Document => {
            if x.len() < 3 {
                return make_block_data(x, &[], s.ids.gmask, s, rng);
            }
            let generate = max_gen.min(x.len() - 2).max(1);
            if rng.next_f64() < s.blanks.gpt_infill_prob {
                prefix_lm(x, generate, s)
            } else {
                let spans = sample_spans(&[generate], x.len() - 1, 1, rng);
                make_block_data(x, &spans, s.ids.gmask, s, rng)
            }
        }
    }
}

/// The attention mask of a sample as the spec states it: `M = tril(ones(T, T)); M[:, :sep] = 1`
/// (row = query). For tests and `preview`; the model builds the same thing on the device.
pub fn attention_mask(t: usize, sep: usize) -> Vec<Vec<bool>> {
    (0..t).map(|q| (0..t).map(|k| k <= q || k < sep).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Purpose;

    const IDS: GlmIds = GlmIds { cls: 1, mask: 2, smask: 3, gmask: 4, sop: 5, eop: 6 };

    fn settings() -> GlmSettings {
        GlmSettings { blanks: GlmObjectiveConfig::default(), ids: IDS }
    }

    /// `[CLS]` then distinct text ids from 100, with sentence ends every few tokens.
    fn sample(rng: &mut Rng) -> (Vec<u32>, Vec<usize>) {
        let n = 20 + rng.below(200) as usize;
        let mut x = vec![IDS.cls];
        x.extend((0..n as u32).map(|i| 100 + i));
        let mut ends = Vec::new();
        let mut e = 1;
        while e < x.len() {
            e = (e + 3 + rng.below(15) as usize).min(x.len());
            ends.push(e);
        }
        (x, ends)
    }

    /// Rebuilds the original from Part A and Part B: each mask in A is replaced by its span.
    fn reconstruct(g: &GlmSample) -> Vec<u32> {
        let a = &g.input_ids[..g.sep];
        // Part B spans in order, each starting at a [sop] (prefix-LM: after [gMASK]).
        let mut spans: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut i = g.sep;
        while i < g.input_ids.len() {
            let pos = g.position_ids[i];
            let mut toks = Vec::new();
            let mut j = i;
            while j < g.input_ids.len() && g.position_ids[j] == pos && (j == i || g.block_position_ids[j] != 1) {
                if g.labels[j] != IDS.eop as i64 && g.labels[j] != IGNORE {
                    toks.push(g.labels[j] as u32);
                }
                j += 1;
            }
            spans.insert(pos, toks);
            i = j;
        }
        let mut out = Vec::new();
        for (p, &t) in a.iter().enumerate() {
            match spans.get(&(p as i64)) {
                Some(span) if [IDS.mask, IDS.smask, IDS.gmask].contains(&t) => out.extend(span),
                _ => out.push(t),
            }
        }
        out
    }
    use std::collections::BTreeMap;

    fn check_layout(g: &GlmSample) {
        let n = g.input_ids.len();
        assert_eq!((g.labels.len(), g.position_ids.len(), g.block_position_ids.len()), (n, n, n));
        assert!(g.labels[..g.sep].iter().all(|&l| l == IGNORE), "no loss on Part A");
        assert_eq!(g.position_ids[..g.sep].to_vec(), (0..g.sep as i64).collect::<Vec<_>>(), "Part A positions are 0..|A|");
        assert!(g.block_position_ids[..g.sep].iter().all(|&b| b == 0));
    }

    #[test]
    fn token_mode_reconstructs_covers_fifteen_percent_and_spans_never_touch() {
        let s = settings();
        let mut covered_total = (0usize, 0usize);
        for seed in 0..2000 {
            let mut rng = Rng::keyed(seed, Purpose::Mask, &[]);
            let (x, ends) = sample(&mut rng);
            let g = corrupt(&x, &ends, GlmMode::Token, 0, &s, &mut rng);
            check_layout(&g);
            assert_eq!(reconstruct(&g), x, "seed {seed}");
            let mut spans = g.spans.clone();
            spans.sort_unstable();
            assert!(spans.iter().all(|&(a, b)| a >= 1 && b > a && b - a < s.blanks.max_block_length));
            assert!(spans.windows(2).all(|w| w[0].1 < w[1].0), "spans touch: {spans:?}");
            let covered: usize = spans.iter().map(|(a, b)| b - a).sum();
            // The floor is int(0.15 * len); spans that did not fit are dropped, so allow a
            // short fall only when the greedy fit dropped one.
            covered_total.0 += covered;
            covered_total.1 += x.len();
            assert!(covered <= x.len() - 1 - spans.len() + 1);
            assert_eq!(g.input_ids.len(), x.len() + 2 * spans.len(), "|seq| = len(x) + 2 n_spans");
            // Part B: position = the span's mask index in Part A; block positions 1..=len+1.
            let mut i = g.sep;
            for &(a, b) in &g.spans {
                let p = g.position_ids[i] as usize;
                assert!([IDS.mask].contains(&g.input_ids[p]));
                assert_eq!(g.input_ids[i], IDS.sop);
                assert_eq!(g.block_position_ids[i..i + b - a + 1].to_vec(), (1..=(b - a + 1) as i64).collect::<Vec<_>>());
                assert!(g.position_ids[i..i + b - a + 1].iter().all(|&q| q as usize == p));
                assert_eq!(g.labels[i + b - a], IDS.eop as i64);
                i += b - a + 1;
            }
        }
        let share = covered_total.0 as f64 / covered_total.1 as f64;
        assert!((0.15..0.22).contains(&share), "covered share {share}");
    }

    #[test]
    fn sentence_mode_blanks_whole_sentences_only() {
        let s = settings();
        for seed in 0..500 {
            let mut rng = Rng::keyed(seed, Purpose::Mask, &[1]);
            let (x, ends) = sample(&mut rng);
            let g = corrupt(&x, &ends, GlmMode::Sentence, 0, &s, &mut rng);
            check_layout(&g);
            assert_eq!(reconstruct(&g), x);
            let starts: Vec<usize> = std::iter::once(1).chain(ends.iter().copied()).collect();
            for &(a, b) in &g.spans {
                assert!(starts.contains(&a), "span starts a sentence");
                assert!(ends.contains(&(b + 1)), "span ends one token before a sentence end");
            }
            let covered: usize = g.spans.iter().map(|(a, b)| b - a).sum();
            let want = (0.15 * x.len() as f64) as usize;
            let all: usize = starts.iter().zip(&ends).map(|(&a, &e)| e.saturating_sub(a + 1)).sum();
            assert!(covered >= want.min(all), "covered {covered} < {want}");
            assert!(g.input_ids[..g.sep].iter().filter(|&&t| t == IDS.smask).count() == g.spans.len());
        }
    }

    #[test]
    fn document_mode_lengths_stay_within_the_ratio_and_prefix_lm_follows_the_spec() {
        let s = settings();
        for seed in 0..500 {
            let mut rng = Rng::keyed(seed, Purpose::Mask, &[2]);
            let batch: Vec<(Vec<u32>, Vec<usize>)> = (0..4).map(|_| sample(&mut rng)).collect();
            let lens: Vec<usize> = batch.iter().map(|b| b.0.len()).collect();
            let max_gen = document_max_gen(&lens, &s, &mut rng);
            let min = *lens.iter().min().unwrap();
            assert!(max_gen >= (0.5 * min as f64) as usize && max_gen <= lens.iter().max().unwrap() - 2);
            for (x, ends) in &batch {
                let g = corrupt(x, ends, GlmMode::Document, max_gen, &s, &mut rng);
                assert_eq!(reconstruct(&g), *x);
                let generated = g.labels.iter().filter(|&&l| l != IGNORE && l != IDS.eop as i64).count();
                assert_eq!(generated, max_gen.min(x.len() - 2));
                assert_eq!(g.spans.len(), 1);
            }
        }
        // Hand-worked prefix-LM example: x = [CLS] a b c d, generate 2.
        let g = prefix_lm(&[1, 10, 11, 12, 13], 2, &s);
        assert_eq!(g.input_ids, vec![1, 10, 11, 4, 5, 12]);
        assert_eq!(g.labels, vec![IGNORE, IGNORE, IGNORE, IGNORE, 12, 13]);
        assert_eq!(g.position_ids, vec![0, 1, 2, 3, 3, 3]);
        assert_eq!(g.block_position_ids, vec![0, 0, 0, 0, 1, 2]);
        assert_eq!(g.sep, 4);
    }

    #[test]
    fn hand_worked_block_data_and_attention_mask() {
        // x = [CLS] a b c d e f, spans (2,4) = "b c" and (5,6) = "e", Part B in text order.
        let s = GlmSettings { blanks: GlmObjectiveConfig { shuffle_blocks: false, ..GlmObjectiveConfig::default() }, ..settings() };
        let x = [1, 10, 11, 12, 13, 14, 15];
        let g = make_block_data(&x, &[(5, 6), (2, 4)], IDS.mask, &s, &mut Rng::keyed(0, Purpose::Mask, &[]));
        assert_eq!(g.input_ids, vec![1, 10, 2, 13, 2, 15, 5, 11, 12, 5, 14]);
        assert_eq!(g.labels, vec![IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, 11, 12, 6, 14, 6]);
        assert_eq!(g.position_ids, vec![0, 1, 2, 3, 4, 5, 2, 2, 2, 4, 4]);
        assert_eq!(g.block_position_ids, vec![0, 0, 0, 0, 0, 0, 1, 2, 3, 1, 2]);
        assert_eq!(g.sep, 6);
        let m = attention_mask(g.input_ids.len(), g.sep);
        // Part A rows see exactly Part A; Part B rows see Part A and earlier Part B.
        assert_eq!(m[0].iter().filter(|&&v| v).count(), 6);
        assert_eq!(m[5].iter().filter(|&&v| v).count(), 6);
        assert_eq!(m[6].iter().filter(|&&v| v).count(), 7);
        assert_eq!(m[10].iter().filter(|&&v| v).count(), 11);
        assert!(!m[2][6], "Part A never sees Part B");
        assert!(m[9][8] && !m[8][9], "causal inside Part B");
    }

    #[test]
    fn poisson_weights_follow_the_pmf() {
        let w = poisson_weights(3.0, 40);
        assert_eq!(w.len(), 39);
        assert!((w[0] - 3.0 * (-3.0f64).exp()).abs() < 1e-12);
        assert!((w[2] - 27.0 / 6.0 * (-3.0f64).exp()).abs() < 1e-12);
        let mut rng = Rng::keyed(3, Purpose::Mask, &[]);
        let mean = (0..20000).map(|_| 1 + draw_weighted(&w, &mut rng)).sum::<usize>() as f64 / 20000.0;
        // Mean of Poisson(3) conditioned on k >= 1: 3 / (1 - e^-3).
        assert!((mean - 3.0 / (1.0 - (-3.0f64).exp())).abs() < 0.05, "{mean}");
    }
}
